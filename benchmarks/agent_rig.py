"""One timed round of the agent benchmark: load a consumer, read it over a window, drain it.

A *side* is the consumer under test: the agent (read through its /metrics) or the reference
subscriber (read through its control pipe), each with its process id for /proc. The
:class:`Rig` drives the publisher at one of them and turns what it reads into a
:class:`Round`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from benchmarks.agent_procs import AgentProcess, BenchError, Peer, cpu_seconds, rss_bytes
from benchmarks.harness import Bench, Target, add_rounds

__all__ = ["ASSETS", "LATENCY_RATE", "OVERLOAD", "REFERENCE", "SIGNALS", "SPIKE_EVERY",
           "AgentSide", "ReferenceSide", "Rig", "Round", "Side", "Sizes", "Snap", "add_figure",
           "find_capacity", "interleaved", "mid", "saturated_rounds"]

#: Signals per load: scalar throughput, frame throughput, latency.
SIGNALS = {"json": 100, "frame": 20, "lat": 100}
ASSETS = {"json": "line", "frame": "motor", "lat": "press"}  # distinct: signal ids differ
LATENCY_RATE = 2000.0
REFERENCE = "bare paho subscriber"
OVERLOAD = 1.3  # offered over estimated capacity in a saturated round
START_RATE = {"json": 2000.0, "frame": 500.0}  # the first round, and the search's floor
SPIKE_EVERY = 21  # coprime with the 100 signals: about 95 spikes a second, on each in turn
DRAIN_POLL = 0.05  # seconds between scrapes while draining (a scrape costs the agent ~6 ms)


@dataclass(frozen=True, slots=True)
class Snap:
    """A consumer's state at one moment."""

    t: float  # monotonic, the middle of the reading
    wall: float  # time.time(), the clock of the samples' timestamps
    cpu: float
    count: float  # messages scored (agent) or counted (reference)
    received: float
    dropped: float = 0.0
    rejected: float = 0.0
    queue: float = 0.0


@dataclass(frozen=True, slots=True)
class Round:
    """One timed window of one consumer."""

    rate: float  # messages/s scored or counted in the window
    cpu: float  # CPU seconds per message over the whole round (load, window, drain)
    cores: float  # CPU seconds per second in the window
    rss: float  # MiB at the end of the window
    offered: float  # messages/s the publisher sent
    lost: float  # published but never read by the consumer (dropped by the broker)
    dropped: float  # the agent's queue overflow
    rejected: float
    backlog: float  # the agent's queue depth at the end of the window
    latencies: tuple[float, ...] = ()
    spikes: int = 0  # spikes published inside the window
    extra: int = 0  # raised events without a spike (false alarms)

    @property
    def saturated(self) -> bool:
        """The consumer could not take what was offered."""
        return self.rate < 0.95 * self.offered or self.lost > 0 or self.dropped > 0


class Side(Protocol):
    name: str
    prefix: str  # topic prefix; the load and the asset levels follow

    @property
    def pid(self) -> int: ...
    def snap(self) -> Snap: ...
    def drain(self, expected: float, timeout: float) -> Snap: ...


class AgentSide:
    def __init__(self, agent: AgentProcess, name: str = "agent",
                 prefix: str = "sfbench/agent") -> None:
        self.agent = agent
        self.name, self.prefix = name, prefix

    @property
    def pid(self) -> int:
        return self.agent.pid

    def snap(self) -> Snap:
        before, cpu = time.monotonic(), cpu_seconds(self.pid)
        c = self.agent.counters()
        return Snap((before + time.monotonic()) / 2, time.time(), cpu, c.scored, c.received,
                    c.dropped, c.rejected, c.queue)

    def drain(self, expected: float, timeout: float) -> Snap:
        """Until the queue is empty and ``expected`` messages were read, or nothing moved for
        0.15 s (what the broker dropped never comes)."""
        deadline = time.monotonic() + timeout
        last = self.snap()
        still = 0
        while not (last.queue == 0 and last.received >= expected):
            if time.monotonic() > deadline:
                raise BenchError(f"the agent did not drain within {timeout:g} s")
            time.sleep(DRAIN_POLL)
            now = self.snap()
            still = still + 1 if (now.received, now.count) == (last.received, last.count) else 0
            last = now
            if still >= 3 and now.queue == 0:
                break
        return last


class ReferenceSide:
    name = REFERENCE
    prefix = "sfbench/ref"

    def __init__(self, observer: Peer) -> None:
        self.observer = observer

    @property
    def pid(self) -> int:
        return self.observer.pid

    def snap(self) -> Snap:
        before, cpu = time.monotonic(), cpu_seconds(self.pid)
        n = float(self.observer.ask(op="count")["count"])
        return Snap((before + time.monotonic()) / 2, time.time(), cpu, n, n)

    def drain(self, expected: float, timeout: float) -> Snap:
        deadline = time.monotonic() + timeout
        last, still = self.snap(), 0
        while last.received < expected and still < 3 and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL / 2)
            now = self.snap()
            still = still + 1 if now.received == last.received else 0
            last = now
        return last


@dataclass(slots=True)
class Rig:
    """The publisher and the observer, pointed at one side per round."""

    publisher: Peer
    observer: Peer

    def throughput(self, side: Side, load: str, offered: float, warm: float,
                   window: float, signals: int | None = None) -> Round:
        """Healthy samples at ``offered`` messages/s: JSON scalars (``json``, ``lat``) or
        frames (``frame``), round-robin over ``signals`` (the load's :data:`SIGNALS`)."""
        return self._round(side, warm, window, offered, dict(
            op="flood", prefix=f"{side.prefix}/{load}/{ASSETS[load]}",
            kind="frame" if load == "frame" else "json", signals=signals or SIGNALS[load],
            rate=offered))

    def latency(self, side: Side, warm: float, window: float) -> Round:
        """Spikes among healthy samples at :data:`LATENCY_RATE`; the observer records the
        agent's raised events (agent side) or the spikes themselves (reference side)."""
        self.observer.ask(op="mode", mode="latency")
        self.observer.ask(op="take")
        try:
            return self._round(side, warm, window, LATENCY_RATE, dict(
                op="latency", prefix=f"{side.prefix}/lat/{ASSETS['lat']}",
                signals=SIGNALS["lat"], rate=LATENCY_RATE, every=SPIKE_EVERY))
        finally:
            self.observer.ask(op="mode", mode="count")

    def _round(self, side: Side, warm: float, window: float, offered: float,
               cmd: dict[str, Any]) -> Round:
        s0 = side.snap()
        self.publisher.send(seconds=warm + window + 0.05, **cmd)
        time.sleep(warm)
        s1 = side.snap()
        time.sleep(max(0.0, s1.t + window - time.monotonic()))
        s2 = side.snap()
        rss = rss_bytes(side.pid) / 2**20
        sent = self.publisher.reply(timeout=warm + window + 30.0)
        s3 = side.drain(s0.received + sent["sent"], timeout=120.0)
        n, dt = s2.count - s1.count, s2.t - s1.t
        if n <= 0 or s3.count <= s0.count:
            raise BenchError(f"{side.name} processed nothing in a window of {dt:.2f} s")
        latencies: tuple[float, ...] = ()
        spikes = extra = 0
        if cmd["op"] == "latency":
            window_spikes = {(sid, ts) for sid, ts in sent["spikes"] if s1.wall <= ts <= s2.wall}
            arrived, extra = self._arrivals({(sid, ts) for sid, ts in sent["spikes"]})
            latencies = tuple(arrived[k] - k[1] for k in window_spikes if k in arrived)
            spikes = len(window_spikes)
        return Round(
            rate=n / dt, cpu=(s3.cpu - s0.cpu) / (s3.count - s0.count),
            cores=(s2.cpu - s1.cpu) / dt, rss=rss, offered=offered,
            lost=sent["sent"] - (s3.received - s0.received), dropped=s3.dropped - s0.dropped,
            rejected=s3.rejected - s0.rejected, backlog=s2.queue, latencies=latencies,
            spikes=spikes, extra=extra)

    def _arrivals(self, spikes: set[tuple[str, float]], timeout: float = 5.0
                  ) -> tuple[dict[tuple[str, float], float], int]:
        """Arrival per spike from the observer, until all came or ``timeout``; and how many
        records matched no spike."""
        arrived: dict[tuple[str, float], float] = {}
        extra = 0
        deadline = time.monotonic() + timeout
        while True:
            for sid, ts, arrival in self.observer.ask(op="take")["records"]:
                if (sid, ts) in spikes:
                    arrived.setdefault((sid, ts), arrival)
                else:
                    extra += 1
            if spikes <= arrived.keys() or time.monotonic() > deadline:
                return arrived, extra
            time.sleep(0.02)


class Sizes:
    """Seconds per phase: ``step`` of the capacity search, then ``warm`` + ``window``."""

    def __init__(self, quick: bool) -> None:
        self.step = 0.2 if quick else 1.0
        self.warm = 0.05 if quick else 0.5
        self.window = 0.15 if quick else 3.0
        self.latency_window = 0.2 if quick else 4.0


def interleaved(bench: Bench, sides: tuple[Side, Side],
                 measure: Callable[[Side], Round]) -> tuple[list[Round], list[Round]]:
    """``bench.mode.repeats`` rounds of each side, agent first in even rounds."""
    rounds: dict[str, list[Round]] = {side.name: [] for side in sides}
    for i in range(bench.mode.repeats):
        for side in sides if i % 2 == 0 else sides[::-1]:
            rounds[side.name].append(measure(side))
    return rounds[sides[0].name], rounds[sides[1].name]


def find_capacity(rig: Rig, side: Side, load: str, sizes: Sizes, first: Round,
             signals: int | None = None) -> float:
    """What ``side`` can take: from one core's worth at the CPU per message of its first
    round, tripled until it falls behind (by 15 %, or dropping anything)."""
    rate = max(START_RATE[load], 1.0 / first.cpu)
    for _ in range(5):
        r = rig.throughput(side, load, rate, sizes.step / 2, sizes.step / 2, signals)
        if r.rate < 0.85 * rate or r.lost or r.dropped:
            return r.rate
        rate *= 3.0
    return r.rate


def mid(values: list[float]) -> float:
    return float(statistics.median(values))


def add_figure(bench: Bench, name: str, unit: str, subject: list[float],
               reference: list[float], target: Target | None, note: str, *,
               lower: bool = False, against: str = REFERENCE) -> None:
    """:func:`~benchmarks.harness.add_rounds`, against the bare subscriber unless said."""
    add_rounds(bench, name, unit, subject, against, reference, target, note, lower=lower)



def saturated_rounds(bench: Bench, rig: Rig, sides: tuple[Side, Side], sizes: Sizes,
                     load: str, label: str, signals: int | None = None
                     ) -> tuple[list[Round], list[Round]]:
    """Each side's capacity for ``load``, then interleaved rounds offered :data:`OVERLOAD`
    times it: the rounds of ``sides[0]`` and of ``sides[1]``."""
    capacity: dict[str, float] = {}
    for side in sides:
        # The first samples build the pipelines and load the numba cache.
        first: Callable[[], Round] = partial(rig.throughput, side, load, START_RATE[load] / 2,
                                             0.1, sizes.step, signals)
        r = bench.first_call(f"{side.name}: first {label}", first)
        capacity[side.name] = find_capacity(rig, side, load, sizes, r, signals)

    seen = {name: [rate] for name, rate in capacity.items()}

    def measure(side: Side) -> Round:
        r = rig.throughput(side, load, OVERLOAD * capacity[side.name], sizes.warm, sizes.window,
                           signals)
        # The median of what it took so far: one lucky round must not raise the overload for
        # all that follow (the broker would spend the shared cores dropping the excess).
        seen[side.name].append(r.rate)
        capacity[side.name] = statistics.median(seen[side.name])
        if not r.saturated:
            capacity[side.name] = max(capacity[side.name], r.rate * OVERLOAD)
        return r

    return interleaved(bench, sides, measure)
