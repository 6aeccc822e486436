"""The closing summary of ``shopfloor demo``: which faults the agent found, judged fairly.

The simulator knows when each faulty signal's fault starts (its ground truth); the agent knows
what it scored of each signal and when its alarms began. A faulty signal gets one verdict:

``not started``
    The agent's latest sample of the signal is older than the fault's start: the demo stopped
    (``--duration``, Ctrl-C) before the fault began, so the signal was healthy all along and
    an alarm on it is a false alarm.
``too short to judge``
    The fault ran, but for fewer samples than the alarm's warm-up after both the fault's start
    and the end of that warm-up. The warm-up (100 samples in the demo's configuration) is the
    agent's own measure of what a detector needs to tell a change from noise; a missing alarm
    on a shorter stretch says nothing about the detector.
``detected``
    An alarm began (its first exceedance, the status's ``onset``) at or after the fault's
    start. The onset kept is the latest alarm's, so one at or after the start means at least
    one alarm answered the fault; an onset before it was a false alarm.
``missed``
    None of the above: the fault ran long enough and no alarm answered it.

Clocks: the simulator stamps its messages ``t0 + offset`` in simulated seconds, while it runs
``speed`` times faster than the wall clock, so simulated stamps drift away from the log lines'
times by minutes. Every time printed here is on the wall clock (``t0 + offset / speed``), in
the log lines' format; durations are wall seconds. The mapping is nominal: the publisher starts
pacing once it has connected, a few milliseconds after ``t0`` on loopback.

Examples
--------
>>> clock = DemoClock(t0=1000.0, speed=10.0)
>>> seen = SignalSeen("station-2/torque_nm", alarms=0, onset=math.nan, last_time=1250.0,
...                   rate=2.0, warmup=100)
>>> judge(seen, fault_start=1300.0, clock=clock).outcome
'not started'
>>> judge(seen, fault_start=1220.0, clock=clock).outcome
'too short to judge'
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shopfloor.tools.liveview_table import LOG_TIME_FORMAT

__all__ = ["DemoClock", "SignalSeen", "Verdict", "judge", "report_text"]

NOT_STARTED = "not started"
TOO_SHORT = "too short to judge"
DETECTED = "detected"
MISSED = "missed"
HEALTHY = "healthy"
FALSE_ALARM = "false alarm"


@dataclass(frozen=True, slots=True)
class DemoClock:
    """Maps the simulator's stamps (epoch ``t0`` + simulated seconds) to the wall clock."""

    t0: float
    speed: float

    def wall(self, stamp: float) -> float:
        """Wall-clock epoch seconds at which the simulator sent ``stamp``."""
        return self.t0 + (stamp - self.t0) / self.speed

    def stamp(self, wall: float) -> float:
        """The simulated stamp the simulator had reached at wall-clock ``wall``."""
        return self.t0 + (wall - self.t0) * self.speed

    def format(self, stamp: float) -> str:
        """``stamp`` on the wall clock, as the log lines print their times."""
        return time.strftime(LOG_TIME_FORMAT, time.localtime(self.wall(stamp)))


@dataclass(frozen=True, slots=True)
class SignalSeen:
    """What the agent made of one signal by the end of the demo.

    Attributes
    ----------
    signal
        The agent's signal id, as its logs and metrics print it.
    onset, last_time
        Simulated stamps of the latest alarm's first exceedance (NaN: none known) and of the
        latest sample scored (NaN: none).
    rate
        Samples per simulated second (the simulator's rate for the signal; > 0).
    warmup
        The signal's alarm warm-up, in samples.
    """

    signal: str
    alarms: int
    onset: float
    last_time: float
    rate: float
    warmup: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """One line of the summary: a signal, when its fault started, and what became of it."""

    signal: str
    fault_start: float | None  # simulated stamp; None for a healthy signal
    alarms: int
    outcome: str  # one of the module's verdicts, or "healthy" / "false alarm"
    detail: str = ""  # wall-clock seconds behind the outcome, for a person

    @property
    def judged(self) -> bool:
        return self.outcome not in (NOT_STARTED, TOO_SHORT)


def judge(
    seen: SignalSeen | None,
    fault_start: float | None,
    clock: DemoClock,
    *,
    signal: str = "",
    end: float = math.nan,
) -> Verdict:
    """The verdict on one signal.

    ``seen`` is ``None`` for a faulty signal the agent never scored; ``end`` (simulated
    stamp) is then how far the simulator got, to tell a fault that had not begun from one the
    agent had no data for (a miss). ``signal`` names it in that case.
    """
    name = seen.signal if seen is not None else signal
    alarms = seen.alarms if seen is not None else 0
    if fault_start is None:
        return Verdict(name, None, alarms, FALSE_ALARM if alarms else HEALTHY)
    if seen is None or math.isnan(seen.last_time):
        if not end >= fault_start:  # NaN end: nothing known of the run, so nothing to judge
            return Verdict(name, fault_start, alarms, NOT_STARTED)
        return Verdict(name, fault_start, alarms, MISSED, "no data from the signal")
    if seen.last_time < fault_start:
        ahead = (fault_start - seen.last_time) / clock.speed
        return Verdict(name, fault_start, alarms, NOT_STARTED,
                       f"the demo stopped {ahead:.1f} s before it")
    if seen.alarms and not seen.onset < fault_start:  # a NaN onset: trust the alarm count
        after = (seen.onset - fault_start) / clock.speed
        detail = f"alarm {after:.1f} s after the fault began" if math.isfinite(after) else ""
        return Verdict(name, fault_start, alarms, DETECTED, detail)
    early = (f"; its alarm began {(fault_start - seen.onset) / clock.speed:.1f} s before the "
             "fault" if seen.alarms else "")
    # Samples before the end of the alarm's warm-up cannot raise: judge from whichever of the
    # fault's start and the warm-up's end comes later.
    warm_end = clock.t0 + seen.warmup / seen.rate
    judged_at = max(fault_start, warm_end) + seen.warmup / seen.rate
    if seen.last_time < judged_at:
        ran = (seen.last_time - fault_start) / clock.speed
        need = (judged_at - fault_start) / clock.speed
        return Verdict(name, fault_start, alarms, TOO_SHORT,
                       f"it ran {ran:.1f} s of the {need:.1f} s needed{early}")
    return Verdict(name, fault_start, alarms, MISSED, early.removeprefix("; "))


def report_text(
    seen: Iterable[SignalSeen],
    truth: Mapping[str, float],
    clock: DemoClock,
    *,
    key: Mapping[str, str] | None = None,
    end: float = math.nan,
) -> str:
    """The summary table and its closing line.

    ``truth`` maps ``asset/signal`` to the simulated stamp its fault starts; ``key`` maps a
    seen signal's id to that ``asset/signal`` form where they differ (ids with labels).
    """
    key = key or {}
    rows: list[Verdict] = []
    found: set[str] = set()
    for s in sorted(seen, key=lambda s: s.signal):
        plain = key.get(s.signal, s.signal)
        found.add(plain)
        rows.append(judge(s, truth.get(plain), clock))
    rows += [judge(None, start, clock, signal=plain, end=end)
             for plain, start in sorted(truth.items()) if plain not in found]
    width = max([6, *(len(v.signal) for v in rows)])
    stamp_width = len(clock.format(clock.t0))
    lines = ["", f"demo summary - times on the wall clock, as in the log lines "
             f"(the simulation ran at x{clock.speed:g})",
             f"{'signal':{width}}  {'fault from':{stamp_width}}  alarms  verdict"]
    for v in rows:
        start = "-" if v.fault_start is None else clock.format(v.fault_start)
        verdict = f"{v.outcome}: {v.detail}" if v.detail else v.outcome
        lines.append(f"{v.signal:{width}}  {start:{stamp_width}}  {v.alarms:>6}  {verdict}")
    missed = [v.signal for v in rows if v.outcome == MISSED]
    # Alarms that answered no fault are false ones, on a faulty signal too: before its fault
    # began (or when it never did), the signal was healthy.
    false = [v.signal for v in rows if v.alarms and v.outcome != DETECTED]
    unjudged = [f"{v.signal} ({v.outcome})" for v in rows if not v.judged]
    lines.append(f"faulty signals without an alarm: {', '.join(missed) or 'none'}; "
                 f"healthy signals with an alarm: {', '.join(false) or 'none'}; "
                 f"faults not judged: {', '.join(unjudged) or 'none'}")
    return "\n".join(lines)
