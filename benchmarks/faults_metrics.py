"""Readings of the agent: its /metrics with their labels, scraped once, until it settles, or
every few milliseconds in a thread (the last answer before a kill -9 is the best lower bound of
what it did), and its resident memory over time."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from benchmarks.agent_procs import BenchError, rss_bytes

if TYPE_CHECKING:
    from benchmarks.faults_procs import Agent

__all__ = ["Poller", "RssSampler", "Scrape", "scrape", "settle"]

# --- /metrics ------------------------------------------------------------------------------------

_SERIES = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One /metrics answer, series with their labels (``AgentProcess.counters`` sums labels
    away; faults need them: rejects by reason, one signal's scored samples)."""

    def __init__(self, text: str, at: float, started: float | None = None) -> None:
        self.at = at  # time.monotonic() when the answer was complete
        self.started = at if started is None else started  # ... and when it was asked for
        self.series: dict[str, list[tuple[dict[str, str], float]]] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            found = _SERIES.match(line)
            if found is None:
                continue
            name, labels, value = found.groups()
            self.series.setdefault(name, []).append(
                (dict(_LABEL.findall(labels or "")), float(value)))

    def value(self, name: str, **labels: str) -> float:
        """The sum over the series of ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(v for have, v in self.series.get(name, ())
                   if all(have.get(k) == want for k, want in labels.items()))

    def by(self, name: str, label: str) -> dict[str, float]:
        """``name`` summed per value of ``label``, zeros left out."""
        out: dict[str, float] = {}
        for have, v in self.series.get(name, ()):
            key = have.get(label, "")
            out[key] = out.get(key, 0.0) + v
        return {k: v for k, v in sorted(out.items()) if v}

    def scored(self, signal: str | None = None) -> float:
        """Samples scored, of one ``asset/signal`` or of all."""
        if signal is None:
            return self.value("shopfloor_signal_samples_scored_total")
        asset, name = signal.split("/", 1)
        return self.value("shopfloor_signal_samples_scored_total", asset=asset, signal=name)

    def rejected(self) -> dict[str, float]:
        """Every reject by reason: refused before a pipeline (messages) or by a signal's gate
        (samples) - the two are told apart by a ``sample:`` prefix."""
        out = self.by("shopfloor_messages_rejected_total", "reason")
        for reason, n in self.by("shopfloor_signal_samples_rejected_total", "reason").items():
            out[f"sample:{reason}"] = n
        return out

    def dropped(self) -> float:
        return self.value("shopfloor_messages_dropped_total")


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """GET /metrics; OSError (URLError included) when it does not answer in ``timeout``."""
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return Scrape(text, time.monotonic(), started)



def settle(agent: Agent, timeout: float, quiet: float = 0.6,
           until: Callable[[Scrape], bool] | None = None) -> Scrape:
    """Scrape until the agent's queue is empty, its counters (received, scored, rejected,
    dropped) have not moved for ``quiet`` seconds and ``until`` (if given) holds - or until
    ``timeout``. The last scrape either way; BenchError if the agent died."""
    deadline = time.monotonic() + timeout
    last = agent.metrics()
    still_since = time.monotonic()

    def key(s: Scrape) -> tuple[float, ...]:
        return (s.value("shopfloor_messages_received_total"), s.scored(),
                sum(s.rejected().values()), s.dropped())

    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = agent.metrics()
        if key(now) != key(last) or now.value("shopfloor_queue_depth"):
            still_since = time.monotonic()
        last = now
        if time.monotonic() - still_since >= quiet and (until is None or until(now)):
            break
    return last



class RssSampler(threading.Thread):
    """The agent's VmRSS every ``period`` seconds, until :meth:`finish`."""

    def __init__(self, pid: int, period: float = 0.05) -> None:
        super().__init__(name="faults-rss", daemon=True)
        self.pid = pid
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append((time.monotonic(), rss_bytes(self.pid)))
            except (OSError, BenchError):
                return  # the process is gone
            self._halt.wait(self.period)

    def finish(self) -> int:
        """Stop; the largest RSS seen (bytes)."""
        self._halt.set()
        self.join(5.0)
        return max((rss for _, rss in self.samples), default=0)


class Poller(threading.Thread):
    """Scrapes an agent every ``period`` seconds and keeps the recent answers: the last one
    before a kill -9 is the best lower bound of what the agent had done."""

    def __init__(self, url: str, period: float = 0.05, keep: int = 4000) -> None:
        super().__init__(name="faults-poller", daemon=True)
        self.url = url
        self.period = period
        self.history: deque[Scrape] = deque(maxlen=keep)
        self._halt = threading.Event()

    @property
    def last(self) -> Scrape | None:
        return self.history[-1] if self.history else None

    def run(self) -> None:
        while not self._halt.is_set():
            # Not listening yet, or killed: the history keeps what was answered.
            with contextlib.suppress(OSError, ValueError):
                self.history.append(scrape(self.url, timeout=2.0))
            self._halt.wait(self.period)

    def finish(self) -> None:
        self._halt.set()
        self.join(5.0)

