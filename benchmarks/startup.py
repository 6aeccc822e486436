"""Startup area: from process start to ``READY=1``, and the memory the agent holds then.

Each start is ``python -m shopfloor run --config F`` as systemd runs it, with ``$NOTIFY_SOCKET``
pointing at a unix datagram socket bound here (:class:`shopfloor.agent.systemd.NotifyListener`) and
a real Mosquitto on loopback. The time is from just before the process is spawned to the arrival of
``READY=1``, which the agent sends once the config is valid, every kernel of its pipelines is
compiled or loaded (:mod:`shopfloor.agent.warmup`) and /metrics listens. The memory is read from
``/proc/PID/status`` the moment ``READY`` arrives: VmRSS, and in the notes its private (RssAnon) and
file-backed (RssFile: shared library pages, mostly LLVM's) parts.

Each round starts the agent three times: with an empty ``NUMBA_CACHE_DIR`` (everything is
compiled), again on the cache that start filled, and on the same cache with a River detector
configured.

=================================================  =================================  ========
subject                                            reference                          target
=================================================  =================================  ========
READY, warm Numba cache                            READY, empty Numba cache           reported
READY, warm Numba cache                            target, 1.5 s                      >= 1
VmRSS at READY, no River detector                  target, 120 MB                     >= 1
VmRSS at READY, River detector (hst)               VmRSS at READY, no River detector  reported
=================================================  =================================  ========

A target is a fixed reference, so its ratio (target / measured) is >= 1 exactly when the
figure is within it. The configuration is the simulated plant's (vibration frames and quality
scalars, :func:`shopfloor.tools.simulate.agent_config_toml`); ``--quick`` uses one scalar
subscription instead, which compiles in a few seconds, and two rounds. Whole-process starts
are slow (a cold one compiles for 15 s or more), so this area runs 2 rounds quick and 5 full,
whatever ``--repeats`` says.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import Bench, Target, add_rounds
from shopfloor.agent.systemd import NotifyListener
from shopfloor.tools.broker import Mosquitto, find_mosquitto

__all__ = ["Start", "run", "start_agent"]

READY_TARGET_S = 1.5
RSS_TARGET_MB = 120.0
READY_TIMEOUT = 600.0  # a cold start on a loaded machine; far beyond any healthy one
# /metrics on port 0: the kernel picks a free port, so no other process can take it first.
MB = 1024.0 * 1024.0


@dataclass(frozen=True, slots=True)
class Start:
    """One agent start: seconds to READY, memory then (bytes), and what the warm-up said."""

    seconds: float
    rss: float
    anon: float
    file: float
    status: str


def start_agent(config: Path, cache: Path, workdir: Path) -> Start:
    """Start the agent on ``config`` with ``NUMBA_CACHE_DIR=cache``; measure, then stop it."""
    name = f"@shopfloor-bench/{os.getpid()}/{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=name, NUMBA_CACHE_DIR=str(cache))
    log = workdir / "agent.log"
    with NotifyListener(name) as listener, log.open("ab") as out:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopfloor", "run", "--config", str(config)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        try:
            deadline = started + READY_TIMEOUT
            ready = None
            while ready is None and proc.poll() is None and time.monotonic() < deadline:
                ready = listener.wait_for("READY", "1", timeout=0.5)
            if ready is None:
                raise RuntimeError(f"no READY (exit code {proc.poll()}); the agent's log:\n"
                                   + log.read_text(errors="replace")[-3000:])
            memory = _memory(proc.pid)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            if code != 0:
                raise RuntimeError(f"the agent exited with {code} after SIGTERM")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return Start(ready.time - started, *memory, status=ready.fields.get("STATUS", ""))


def _memory(pid: int) -> tuple[float, float, float]:
    text = Path(f"/proc/{pid}/status").read_text()

    def kib(key: str) -> float:
        found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
        return float(found.group(1)) * 1024.0 if found else float("nan")

    return kib("VmRSS"), kib("RssAnon"), kib("RssFile")


def _configs(broker: Mosquitto, workdir: Path, quick: bool) -> tuple[Path, Path]:
    """(without River, with River): the same agent, the scalar detector swapped for hst."""
    if quick:
        base = f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "sfbench-startup"

[metrics]
port = 0

[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"
detector = {{ kind = "zscore" }}
"""
        river = base.replace('kind = "zscore"', 'kind = "hst"')
    else:
        from shopfloor.tools.simulate import Plant, agent_config_toml

        base = agent_config_toml(Plant(), broker.host, broker.port,
                                 client_id="sfbench-startup", metrics_port=0)
        scalar = base.index('codec = "json"')  # the quality scalars' subscription
        river = base[:scalar] + base[scalar:].replace('kind = "zscore"', 'kind = "hst"', 1)
    assert river != base, "the River configuration must differ from the base one"
    paths = workdir / "agent.toml", workdir / "agent-river.toml"
    for path, text in zip(paths, (base, river), strict=True):
        path.write_text(text)
    return paths


def run(bench: Bench) -> None:
    """Rounds of cold, warm and River starts; four figures."""
    binary = find_mosquitto()
    if binary is None:
        bench.skip("startup", "mosquitto is not installed (Debian package mosquitto)")
        return
    rounds = bench.size(2, 5)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="sfbench-startup-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(binary, workdir / "broker")
        broker.start()
        try:
            base, river = _configs(broker, workdir, bench.mode.quick)
            cold: list[Start] = []
            warm: list[Start] = []
            with_river: list[Start] = []
            for i in range(rounds):
                cache = workdir / f"numba-cache-{i}"  # empty: this round's cold start fills it
                cold.append(start_agent(base, cache, workdir))
                warm.append(start_agent(base, cache, workdir))
                with_river.append(start_agent(river, cache, workdir))
                bench.progress(f"[startup] round {i + 1}/{rounds}: READY after "
                               f"{cold[-1].seconds:.2f} s cold, {warm[-1].seconds:.2f} s warm, "
                               f"{with_river[-1].seconds:.2f} s with River")
        finally:
            broker.stop()
    load.append(os.getloadavg()[0])
    config = ("one scalar JSON subscription (z-score)" if bench.mode.quick
              else "the simulated plant's config (frames and scalars, z-score)")
    machine = f"1-min load average {load[0]:.2f} at the start, {load[1]:.2f} at the end"
    warm_status = warm[-1].status
    add_rounds(bench, "READY, warm Numba cache", "s", [s.seconds for s in warm],
         "READY, empty Numba cache", [s.seconds for s in cold], None,
         f"{config}; warm: {warm_status!r}; {machine}", lower=True)
    add_rounds(bench, "READY, warm Numba cache", "s", [s.seconds for s in warm],
         f"target ({READY_TARGET_S:g} s)", [READY_TARGET_S] * rounds,
         Target(1.0, f"READY within {READY_TARGET_S:g} s on a warm Numba cache"),
         f"{config}; the reference is the target itself: ratio >= 1 means within it", lower=True)
    add_rounds(bench, "VmRSS at READY, no River detector", "MB", [s.rss / MB for s in warm],
         f"target ({RSS_TARGET_MB:g} MB)", [RSS_TARGET_MB] * rounds,
         Target(1.0, f"RSS at READY within {RSS_TARGET_MB:g} MB without River"),
         f"{config}, warm cache; private (RssAnon) {_median_mb(warm, 'anon')} MB, "
         f"file-backed (RssFile, shared library pages) {_median_mb(warm, 'file')} MB; "
         f"after a cold start VmRSS is {_median_mb(cold, 'rss')} MB (the compiler's memory)",
         lower=True)
    add_rounds(bench, "VmRSS at READY, River detector (hst)", "MB",
         [s.rss / MB for s in with_river], "VmRSS at READY, no River detector",
         [s.rss / MB for s in warm], None,
         f"{config}, but hst in place of the scalars' z-score, warm cache; RssAnon "
         f"{_median_mb(with_river, 'anon')} MB; READY after "
         f"{statistics.median(s.seconds for s in with_river):.2f} s", lower=True)


def _median_mb(starts: list[Start], field: str) -> str:
    return f"{statistics.median(getattr(s, field) for s in starts) / MB:.0f}"
