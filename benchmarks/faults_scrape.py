"""Fault scenario 6: storms on /metrics.

scrape
    Connections that never send (half-open), slow-loris requests a byte at a time, requests
    whose answers are never read, then all of that plus 16 scrapers in a loop - against the
    /metrics server's bounds (``max_requests``, ``max_connections``, ``read_timeout``,
    ``write_timeout``). A normal scrape, as Prometheus makes it (10 s timeout), runs every half
    second throughout, and a QoS 1 control stream is scored throughout. Must hold: every normal
    scrape gets an HTTP answer within its timeout (all of them 200 while no other scraper
    competes), the control stream keeps being scored, SIGTERM in the middle of the storm ends
    the agent within 5 s.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np

from benchmarks.agent_procs import cpu_seconds
from benchmarks.faults_metrics import Scrape
from benchmarks.faults_procs import (
    start_agent,
    start_broker,
)
from benchmarks.faults_rig import (
    STOP_TIMEOUT,
    Env,
    Outcome,
    bare_config,
)
from benchmarks.faults_traffic import SampleStream, wait_subscribed
from shopfloor.tools.broker import HOST, free_port

__all__ = ["Storm", "run_scrape"]

SCRAPE_TIMEOUT = 10.0  # Prometheus' default scrape_timeout
PROMPT_EXIT = 5.0


class Storm:
    """Hostile /metrics clients in threads of this process, until :meth:`finish`."""

    def __init__(self, port: int, half_open: int, slow: int, unread: int) -> None:
        self.port = port
        self.half_open = half_open
        self.slow = slow
        self.unread = unread
        self.scrapers = 0
        self.opened = 0
        self.scrapes = {"ok": 0, "busy": 0, "error": 0}
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for target in (self._half_open, self._slow, self._unread):
            self._spawn(target)

    def add_scrapers(self, n: int) -> None:
        self.scrapers += n
        for _ in range(n):
            self._spawn(self._scrape)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True, name="faults-storm")
        thread.start()
        self._threads.append(thread)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection((HOST, self.port), timeout=2.0)
        except OSError:
            return None
        with self._lock:
            self.opened += 1
        return sock

    def _hold(self, socks: list[socket.socket], keep: int) -> None:
        while len(socks) > keep:
            with contextlib.suppress(OSError):
                socks.pop(0).close()

    def _half_open(self) -> None:
        """Connect and never send: the server must time these out or push them out."""
        socks: list[socket.socket] = []
        while not self._halt.wait(0.005):
            sock = self._connect()
            if sock is not None:
                socks.append(sock)
                self._hold(socks, self.half_open)
        self._hold(socks, 0)

    def _slow(self) -> None:
        """Slow-loris: a request head one byte every 0.2 s per connection."""
        head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096
        socks: list[tuple[socket.socket, int]] = []
        while not self._halt.wait(0.2):
            while len(socks) < self.slow:
                sock = self._connect()
                if sock is None:
                    break
                socks.append((sock, 0))
            alive = []
            for sock, sent in socks:
                try:
                    sock.send(head[sent:sent + 1])
                    alive.append((sock, sent + 1))
                except OSError:
                    sock.close()  # timed out by the server: replaced next turn
            socks = alive
        self._hold([s for s, _ in socks], 0)

    def _unread(self) -> None:
        """Full requests whose answers are never read."""
        socks: list[socket.socket] = []
        while not self._halt.wait(0.05):
            sock = self._connect()
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(sock)
            self._hold(socks, self.unread)
        self._hold(socks, 0)

    def _scrape(self) -> None:
        url = f"http://{HOST}:{self.port}/metrics"
        while not self._halt.is_set():
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
                    response.read()
                key = "ok"
            except urllib.error.HTTPError as exc:
                key = "busy" if exc.code == 503 else "error"
            except OSError:
                key = "error"
            with self._lock:
                self.scrapes[key] += 1

    def finish(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(SCRAPE_TIMEOUT + 5.0)


def _normal_scrapes(url: str, seconds: float, results: list[dict[str, object]],
                    halt: threading.Event) -> None:
    """Prometheus: one scrape every 0.5 s with a 10 s timeout; status and latency each."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not halt.is_set():
        started = time.monotonic()
        status: object
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError as exc:
            status = f"{type(exc).__name__}: {exc}"[:120]
        results.append({"status": status, "seconds": time.monotonic() - started})
        halt.wait(max(0.0, started + 0.5 - time.monotonic()))


def run_scrape(env: Env) -> Outcome:
    out = env.outcome("scrape", "scrape storms on /metrics")
    seconds = env.size(4.0, 30.0)
    with contextlib.ExitStack() as stack:
        broker = start_broker(env, "scrape", stack)
        work = env.dir("scrape")
        port = free_port()
        agent = start_agent(work, "agent", bare_config(broker.port, port, "faults-scrape"),
                            port, stack)
        wait_subscribed(agent, broker.port, "plant/s1/l1/probe/p")
        stream = SampleStream(broker.port, ["plant/s1/l1/storm/control"], 200.0,
                              client_id="faults-scrape-pub", seed=env.seed)
        stream.start()
        stack.callback(stream.finish, 5.0)
        storm = Storm(port, half_open=400, slow=50, unread=20)
        stack.callback(storm.finish)
        cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
        phases: list[tuple[str, int]] = [("connections: half-open, slow-loris, unread", 0),
                                         ("connections + 16 scrapers in a loop", 16)]
        storm.start()
        for label, scrapers in phases:
            out.trials += 1
            storm.add_scrapers(scrapers)
            before = agent.metrics(SCRAPE_TIMEOUT, patience=30.0)
            results: list[dict[str, object]] = []
            _normal_scrapes(agent.url, seconds, results, threading.Event())
            after = agent.metrics(SCRAPE_TIMEOUT, patience=30.0)
            _scrape_phase(out, label, scrapers, results, before, after)
        cores = (cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
        last = agent.metrics(SCRAPE_TIMEOUT, patience=30.0)
        refused = last.by("shopfloor_metrics_requests_refused_total", "reason")
        # SIGTERM with the storm still on.
        code, stop_s = agent.terminate(STOP_TIMEOUT + 10.0)
        storm.finish()
        stream.finish(10.0)
    out.check("sigterm_prompt", code is not None and stop_s <= PROMPT_EXIT,
              f"SIGTERM during the storm: exit {code} after {stop_s:.1f} s")
    out.check("sigterm_exit_0", code == 0, f"SIGTERM during the storm: exit {code}")
    out.figures.update({"storm_connections_opened": storm.opened,
                        "storm_scrapes": storm.scrapes, "refused_by_reason": refused,
                        "agent_cores_during_storm": round(cores, 2), "sigterm_exit": code,
                        "sigterm_seconds": round(stop_s, 2)})
    out.lost = "n/a (no data path fault; the control stream's scoring is checked)"
    return out


def _scrape_phase(out: Outcome, label: str, scrapers: int, results: list[dict[str, object]],
                  before: Scrape, after: Scrape) -> None:
    answered = [r for r in results if isinstance(r["status"], int)]
    ok = [r for r in results if r["status"] == 200]
    latencies = sorted(float(str(r["seconds"])) for r in answered)
    scored = after.scored("storm/control") - before.scored("storm/control")
    row = {"phase": label, "normal_scrapes": len(results), "answered": len(answered),
           "ok_200": len(ok), "statuses": sorted({str(r["status"]) for r in results}),
           "latency_p50_s": round(float(np.percentile(latencies, 50)), 4) if latencies else None,
           "latency_max_s": round(latencies[-1], 4) if latencies else None,
           "control_scored": scored}
    out.rows.append(row)
    out.check("normal_scrape_answered", len(answered) == len(results) and bool(results),
              f"{label}: {len(results) - len(answered)} of {len(results)} normal scrapes got "
              f"no HTTP answer within {SCRAPE_TIMEOUT:g} s ({row['statuses']})")
    if not scrapers:
        out.check("normal_scrape_ok_without_competition", len(ok) == len(results),
                  f"{label}: {len(ok)} of {len(results)} normal scrapes answered 200")
    out.check("control_scored_during_storm", scored > 0,
              f"{label}: the control stream scored {scored:.0f} samples")


