"""The fault suite's processes: the agent at log level info, Mosquitto on the shipped
configuration or logging every packet, and what their files say afterwards (the broker's
delivery ledger, the agent's checkpoint).

The agent and the broker are those of the agent benchmark (:mod:`benchmarks.agent_procs`), with
the differences faults need: the agent logs at ``info`` (the checkpoint restore and the stop
line are info lines), each run writes its own log (so a restart's lines are told apart), and
the broker can run the shipped ``deploy/mosquitto/mosquitto.conf`` or log every packet. Every
wait is bounded; every process is stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.agent_procs import ROOT, AgentProcess, Broker
from benchmarks.faults_metrics import Scrape, scrape
from benchmarks.faults_rig import BAD_CHECKPOINT_LINES, SHIPPED_BROKER, Env
from shopfloor.tools.broker import HOST

__all__ = ["Agent", "FaultBroker", "Ledger", "Saved", "broker_ledger", "read_saved",
           "start_agent", "start_broker"]

class Agent(AgentProcess):
    """``python -m shopfloor run --config CONFIG`` at the default log level (info), its log in a
    file of its own; like :class:`AgentProcess` otherwise (whose ``wait_connected`` and
    ``close`` it keeps)."""

    def __init__(self, config: Path, log: Path, metrics_port: int) -> None:
        # Not AgentProcess.__init__: it starts the agent at --log-level warning, which hides
        # the lines faults read (checkpoint restored, agent stopped: ... left_with_broker=).
        self.log = log
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.spawned = time.monotonic()
        argv = [sys.executable, "-m", "shopfloor", "run", "--config", str(config)]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self, timeout: float = 5.0, patience: float = 0.0) -> Scrape:
        """Scrape /metrics; a 503 (all ``max_requests`` renders busy, as under a scrape storm)
        is retried for up to ``patience`` seconds."""
        deadline = time.monotonic() + patience
        while True:
            try:
                return scrape(self.url, timeout)
            except urllib.error.HTTPError as exc:
                if exc.code != 503 or time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def terminate(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM and wait: (exit code, seconds to exit); code None when it outlived
        ``timeout`` (it is then killed)."""
        if not self.alive:
            return self.proc.returncode, 0.0
        sent = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10.0)
            return None, time.monotonic() - sent
        return code, time.monotonic() - sent

    def kill9(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait(10.0)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop_line(self) -> dict[str, str]:
        """The ``key=value`` fields of the agent's last ``agent stopped:`` line (empty if
        none): what it scored, left with the broker, lost, and the final checkpoint."""
        lines = [line for line in self.text().splitlines() if "agent stopped:" in line]
        if not lines:
            return {}
        tail = lines[-1].split("agent stopped:", 1)[1]
        # Values may hold spaces ("checkpoint=none configured"): a value runs to the next key.
        pairs = re.findall(r"(\w+)=(.*?)(?=\s+\w+=|$)", tail.strip())
        return {k: v.strip() for k, v in pairs}

    def bad_checkpoint_lines(self) -> list[str]:
        return [line for line in self.text().splitlines()
                if any(marker in line for marker in BAD_CHECKPOINT_LINES)]

    def restored_line(self) -> str | None:
        """The log line of a restore (``restored N pipeline(s) from ...``), if any."""
        for line in self.text().splitlines():
            if "restored " in line and " pipeline(s) from " in line:
                return line
        return None


def start_agent(workdir: Path, name: str, text: str, metrics_port: int,
                stack: contextlib.ExitStack, connect: float = 90.0) -> Agent:
    """Write the config ``name``.toml, start the agent (stopped with ``stack``, SIGTERM then
    kill) and wait until it is connected to the broker."""
    config = workdir / f"{name}.toml"
    config.write_text(text, encoding="utf-8")
    agent = Agent(config, workdir / f"{name}.log", metrics_port)
    stack.callback(agent.close)
    agent.wait_connected(connect)
    return agent



def start_broker(env: Env, name: str, stack: contextlib.ExitStack, *, shipped: bool = False,
                 extra: tuple[str, ...] = (), persistence: bool = False) -> FaultBroker:
    """A running broker in ``env``'s directory ``name``, stopped with ``stack``."""
    broker = FaultBroker(env.mosquitto, env.dir(name) / "broker", persistence=persistence)
    broker.shipped = shipped
    broker.extra = extra
    broker.start()
    stack.callback(broker.stop)
    return broker


class FaultBroker(Broker):
    """The rig's Mosquitto, optionally on the shipped ``deploy/mosquitto/mosquitto.conf``
    (:attr:`shipped`) and with extra lines (:attr:`extra`, e.g. ``log_type all``).

    The shipped file is used as it is except for what cannot work here: its listener (all
    interfaces, port 1883) becomes loopback on this broker's port, its persistence directory
    (the container's volume) becomes this broker's directory, and the log goes to a file.
    Everything else - persistence, ``autosave_interval``, queue and in-flight bounds, Nagle -
    is the plant's.
    """

    shipped = False
    extra: tuple[str, ...] = ()

    def _write_config(self) -> Path:
        if not self.shipped:
            path = super()._write_config()
            path.write_text(path.read_text() + "".join(f"{line}\n" for line in self.extra))
            return path
        lines = []
        for line in SHIPPED_BROKER.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            key = words[0] if words else ""
            if key == "listener":
                line = f"listener {self.port} {HOST}"
            elif key == "persistence_location":
                line = f"persistence_location {self.workdir}/"
            elif key == "log_dest":
                line = f"log_dest file {self.log_file}"
            lines.append(line)
        # Started as root, mosquitto switches to the 'mosquitto' user, which cannot write here.
        lines += [f"user {pwd.getpwuid(os.getuid()).pw_name}", *self.extra]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def setting(self, key: str) -> str | None:
        """A setting of the shipped file (its first value), e.g. ``autosave_interval``."""
        for line in SHIPPED_BROKER.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words and words[0] == key:
                return " ".join(words[1:])
        return None


@dataclass(frozen=True, slots=True)
class Ledger:
    """QoS 1 deliveries to one client, from a broker log at ``log_type all``."""

    first_sends: int  # PUBLISH sent with the DUP flag clear: each message once
    resends: int  # PUBLISH sent again with DUP set (after a reconnect)
    pubacks: int  # PUBACKs received from the client
    open: int  # messages whose last PUBLISH was never PUBACKed
    dropped_notices: int  # "Outgoing messages are being dropped" lines for the client
    received_from: int  # QoS 1 PUBLISHes received from the publisher(s) named


def broker_ledger(log: str, client: str, publishers: Iterable[str], topics: str = "") -> Ledger:
    """Count what Mosquitto 2.0 logs at ``log_type all`` (its wording, checked on 2.0.11):
    ``Sending PUBLISH to C (d0, q1, r0, m12, 'topic', ... (N bytes))`` and
    ``Received PUBACK from C (Mid: 12, RC:0)``. A message id is open from its PUBLISH to its
    PUBACK; ids are reused only after that, so an id left open at the end is a message the
    client never acknowledged. Deliveries count only on topics starting with ``topics``: the
    agent also receives other agents' retained statuses (its fleet watch), at each connect."""
    send = re.compile(rf"Sending PUBLISH to {re.escape(client)} \(d(\d), q1, r\d, m(\d+), "
                      rf"'{re.escape(topics)}")
    ack = re.compile(rf"Received PUBACK from {re.escape(client)} \(Mid: (\d+)")
    names = "|".join(re.escape(p) for p in publishers)
    got = re.compile(rf"Received PUBLISH from (?:{names}) \(d\d, q1,") if names else None
    first = again = acks = drops = received = 0
    open_ids: set[int] = set()
    dropped = f"Outgoing messages are being dropped for client {client}"
    for line in log.splitlines():
        if (m := send.search(line)) is not None:
            if m.group(1) == "0":
                first += 1
            else:
                again += 1
            open_ids.add(int(m.group(2)))
        elif (m := ack.search(line)) is not None:
            acks += 1
            open_ids.discard(int(m.group(1)))
        elif got is not None and got.search(line):
            received += 1
        elif dropped in line:
            drops += 1
    return Ledger(first, again, acks, len(open_ids), drops, received)


@dataclass(frozen=True, slots=True)
class Saved:
    """What a checkpoint file holds for the signals asked about."""

    status: str  # "none" (no file), "ok", or why it cannot be read
    scored: float  # samples scored, summed over the signals
    rejected: dict[str, float]  # samples refused by the signals' gates, by reason
    mtime: float  # the file's modification time (0 when there is none)

    @property
    def readable(self) -> bool:
        return self.status in ("none", "ok")


def read_saved(directory: Path, prefix: str = "") -> Saved:
    """Read ``directory``'s checkpoint as the agent would (checksums, structure) and sum the
    counters of the signals whose ``asset/signal`` starts with ``prefix``."""
    from shopfloor.agent.checkpoints import FILE_NAME, malformed
    from shopfloor.agent.state import CheckpointError, read_checkpoint

    path = directory / FILE_NAME
    if not path.exists():
        return Saved("none", 0.0, {}, 0.0)
    mtime = path.stat().st_mtime
    try:
        tree = read_checkpoint(path).state
    except CheckpointError as exc:
        return Saved(f"unreadable: {exc}", 0.0, {}, mtime)
    problem = malformed(tree)
    if problem:
        return Saved(f"malformed: {problem}", 0.0, {}, mtime)
    scored = 0.0
    rejected: dict[str, float] = {}
    for sid, entry in tree["signals"].items():
        if sid.startswith(prefix):
            scored += float(entry["state"].get("scored", 0))
            for reason, n in entry["state"].get("rejected", {}).items():
                rejected[reason] = rejected.get(reason, 0.0) + float(n)
    return Saved("ok", scored, rejected, mtime)

