"""The agent benchmark's processes seen from the parent: the agent, the peers, and /proc.

Every process here is started by the benchmark and stopped by it: :meth:`close` sends the
polite request first (SIGTERM, ``quit``), waits a bounded time, then kills. Every wait is
bounded; a process that dies or does not answer raises :class:`BenchError` with its log's tail.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shopfloor.tools.broker import Mosquitto, stop_process

__all__ = ["AgentProcess", "BenchError", "Broker", "Counters", "Peer", "agent_toml",
           "cpu_seconds", "rss_bytes"]

ROOT = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark process failed or did not answer in time."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of process ``pid``, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Broker(Mosquitto):
    """shopfloor's loopback Mosquitto, plus ``set_tcp_nodelay true`` while :attr:`nodelay` is
    set (read at each start): Mosquitto's default leaves Nagle's algorithm on for what it
    sends."""

    nodelay = False

    def _write_config(self) -> Path:
        path = super()._write_config()
        if self.nodelay:
            path.write_text(path.read_text() + "set_tcp_nodelay true\n")
        return path


class Peer:
    """A ``benchmarks.agent_peers`` process driven by one JSON line in, one JSON line out."""

    def __init__(self, role: str, port: int, log: Path, filters: tuple[str, ...] = ()) -> None:
        self.role = role
        self.log = log
        argv = [sys.executable, "-m", "benchmarks.agent_peers", role, "--port", str(port)]
        argv += [a for f in filters for a in ("--filter", f)]
        with log.open("ab") as err:
            self.proc: subprocess.Popen[str] = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True, bufsize=1)
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,),
                                        name=f"sfbench-{role}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self, out: IO[str]) -> None:
        for line in out:
            self._lines.put(line)

    def send(self, **cmd: Any) -> None:
        if self.proc.stdin is None or self.proc.poll() is not None:
            raise BenchError(f"the {self.role} exited:\n{_tail(self.log)}")
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def reply(self, timeout: float) -> dict[str, Any]:
        try:
            out: dict[str, Any] = json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            raise BenchError(f"the {self.role} did not answer within {timeout:g} s:\n"
                             f"{_tail(self.log)}") from None
        if "error" in out:
            raise BenchError(f"the {self.role} failed: {out['error']}\n{_tail(self.log)}")
        return out

    def ask(self, timeout: float = 10.0, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.reply(timeout)

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
        except OSError:
            pass
        stop_process(self.proc, signal.SIGTERM, 5.0)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@dataclass(frozen=True, slots=True)
class Counters:
    """The agent's counters from one scrape of its /metrics."""

    received: float  # MQTT messages read by the agent
    scored: float  # samples (or frames) through a pipeline, summed over signals
    dropped: float  # queue overflow
    rejected: float  # refused by ingest or by a signal's gate, every reason
    queue: float  # items waiting for the worker
    events: float  # anomaly events published


class AgentProcess:
    """``python -m shopfloor run --config CONFIG``, as systemd runs it, log to a file."""

    def __init__(self, config: Path, log: Path, metrics_port: int) -> None:
        self.log = log
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        argv = [sys.executable, "-m", "shopfloor", "--log-level", "warning", "run",
                "--config", str(config)]
        with log.open("ab") as out:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _scrape(self) -> dict[str, float]:
        if self.proc.poll() is not None:
            raise BenchError(f"the agent exited with code {self.proc.returncode}:\n"
                             f"{_tail(self.log)}")
        with urllib.request.urlopen(self.url, timeout=10.0) as response:
            text = response.read().decode()
        sums: dict[str, float] = defaultdict(float)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                sums[series.split("{", 1)[0]] += float(value)
        return sums

    def counters(self) -> Counters:
        s = self._scrape()
        return Counters(
            received=s["shopfloor_messages_received_total"],
            scored=s["shopfloor_signal_samples_scored_total"],
            dropped=s["shopfloor_messages_dropped_total"],
            rejected=s["shopfloor_messages_rejected_total"]
            + s["shopfloor_signal_samples_rejected_total"],
            queue=s["shopfloor_queue_depth"],
            events=s["shopfloor_events_published_total"],
        )

    def wait_connected(self, timeout: float) -> None:
        """Wait until /metrics answers and the agent says it is connected to the broker."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._scrape().get("shopfloor_mqtt_connected") == 1.0:
                    return
            except OSError:
                pass  # not serving yet
            time.sleep(0.05)
        raise BenchError(f"the agent was not connected within {timeout:g} s:\n{_tail(self.log)}")

    def close(self) -> None:
        stop_process(self.proc, signal.SIGTERM, 20.0)


def agent_toml(broker_port: int, metrics_port: int, events_prefix: str) -> str:
    """The agent's configuration: the defaults of ``[agent]`` (queue of 10,000, drop oldest,
    batches of up to 5,000) and default detection, plus a latency subscription whose alarms
    raise on one exceedance and clear on one normal sample."""
    from benchmarks.agent_peers import SAMPLE_RATE

    return f"""
[mqtt]
host = "127.0.0.1"
port = {broker_port}
client_id = "sfbench-agent"
clean_start = true  # nothing left over from an earlier run
session_expiry = 0
reconnect_min_delay = 0.1  # the benchmark restarts the broker once
reconnect_max_delay = 1.0

# The latency target is set with linger 0: a sample is scored as soon as the worker is free.
[agent]
batch_linger = 0.0

[events]
prefix = "{events_prefix}"

[metrics]
host = "127.0.0.1"
port = {metrics_port}

# Default detection: z-score against an EWMA baseline, quantile threshold, default alarm.
[[subscriptions]]
topic = "sfbench/agent/json/{{asset}}/{{signal}}"
codec = "json"

[[subscriptions]]
topic = "sfbench/agent/frame/{{asset}}/{{signal}}"
codec = "frame"
features = {{ sample_rate = {SAMPLE_RATE!r} }}

# A spike of 50 sigma scores about 50: a fixed threshold of 10 never fires on healthy samples.
[[subscriptions]]
topic = "sfbench/agent/lat/{{asset}}/{{signal}}"
codec = "json"
detector = {{ kind = "zscore", min_samples = 20 }}
threshold = {{ kind = "fixed", value = 10.0 }}
alarm = {{ raise_after = 1, clear_after = 1, warmup = 20 }}
"""
