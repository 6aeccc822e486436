"""The demo's closing summary: a fault that had not begun, or had barely begun, is no miss."""

from __future__ import annotations

import doctest
import math
import time

import pytest

from shopfloor.tools import demo_summary
from shopfloor.tools.demo_summary import DemoClock, SignalSeen, judge, report_text
from shopfloor.tools.liveview import LOG_TIME_FORMAT

T0 = 1_700_000_000.0
SPEED = 10.0
CLOCK = DemoClock(T0, SPEED)
FAULT = T0 + 300.0  # the demo's faults: 300 simulated seconds in, 30 s on the wall clock
SIGNALS = ("motor-1/accel", "motor-2/accel", "station-1/diameter_mm", "station-1/torque_nm",
           "station-2/diameter_mm", "station-2/torque_nm")
TRUTH = {"motor-1/accel": FAULT, "station-2/diameter_mm": FAULT, "station-2/torque_nm": FAULT}


def seen(signal: str = "station-2/torque_nm", *, wall: float, alarms: int = 0,
         onset: float = math.nan) -> SignalSeen:
    """The signal as the agent saw it when the demo stopped ``wall`` seconds in."""
    return SignalSeen(signal, alarms, onset, last_time=CLOCK.stamp(T0 + wall), rate=2.0,
                      warmup=100)


def stopped_at(wall: float, onsets: dict[str, float] | None = None) -> str:
    """The summary of a demo stopped ``wall`` seconds in; ``onsets``: signal -> wall seconds
    into the run its one alarm began."""
    onsets = onsets or {}
    signals = [seen(s, wall=wall, alarms=int(s in onsets),
                    onset=CLOCK.stamp(T0 + onsets[s]) if s in onsets else math.nan)
               for s in SIGNALS]
    return report_text(signals, TRUTH, CLOCK, end=CLOCK.stamp(T0 + wall))


@pytest.mark.parametrize("wall", [10.0, 25.0, 29.9])
def test_a_demo_stopped_before_the_faults_reports_no_miss(wall: float) -> None:
    text = stopped_at(wall)
    assert text.splitlines()[-1] == (
        "faulty signals without an alarm: none; healthy signals with an alarm: none; "
        "faults not judged: motor-1/accel (not started), station-2/diameter_mm (not started), "
        "station-2/torque_nm (not started)")
    row = next(line for line in text.splitlines() if line.startswith("motor-1/accel"))
    assert row.endswith(f"0  not started: the demo stopped {30.0 - wall:.1f} s before it")


def test_a_fault_shorter_than_the_warm_up_is_too_short_to_judge() -> None:
    # 100 samples at 2 a second: 50 simulated seconds, 5 s on the wall clock at x10.
    text = stopped_at(33.0)
    assert "faulty signals without an alarm: none;" in text
    row = next(line for line in text.splitlines() if line.startswith("station-2/torque_nm"))
    assert row.endswith("too short to judge: it ran 3.0 s of the 5.0 s needed")
    assert "station-2/torque_nm (too short to judge)" in text


def test_a_fault_long_enough_without_an_alarm_is_a_miss() -> None:
    text = stopped_at(36.0, {"motor-1/accel": 31.0})
    assert text.splitlines()[-1] == (
        "faulty signals without an alarm: station-2/diameter_mm, station-2/torque_nm; "
        "healthy signals with an alarm: none; faults not judged: none")
    row = next(line for line in text.splitlines() if line.startswith("motor-1/accel"))
    assert row.endswith("1  detected: alarm 1.0 s after the fault began")


def test_a_fault_during_the_warm_up_is_judged_after_the_warm_up() -> None:
    # The alarm ignores its first 100 samples (50 simulated seconds): a fault from 10
    # simulated seconds on cannot raise before 50 and gets 50 more from there.
    start = T0 + 10.0
    assert judge(seen(wall=9.0), start, CLOCK).outcome == "too short to judge"
    assert judge(seen(wall=10.1), start, CLOCK).outcome == "missed"


def test_an_alarm_before_the_fault_is_a_false_alarm_not_a_detection() -> None:
    text = stopped_at(40.0, {"station-2/torque_nm": 20.0, "motor-2/accel": 12.0})
    row = next(line for line in text.splitlines() if line.startswith("station-2/torque_nm"))
    assert row.endswith("1  missed: its alarm began 10.0 s before the fault")
    assert "healthy signals with an alarm: motor-2/accel, station-2/torque_nm;" in text
    # A fault that never began leaves a healthy signal: its alarm is a false one too.
    early = stopped_at(25.0, {"station-2/torque_nm": 20.0})
    assert "healthy signals with an alarm: station-2/torque_nm;" in early
    assert "faulty signals without an alarm: none;" in early


def test_an_alarm_without_a_known_onset_counts_for_the_fault() -> None:
    verdict = judge(seen(wall=40.0, alarms=1), FAULT, CLOCK)
    assert (verdict.outcome, verdict.detail) == ("detected", "")


def test_a_faulty_signal_the_agent_never_saw() -> None:
    assert judge(None, FAULT, CLOCK, signal="m/a", end=CLOCK.stamp(T0 + 20)).outcome == (
        "not started")
    missed = judge(None, FAULT, CLOCK, signal="m/a", end=CLOCK.stamp(T0 + 40))
    assert (missed.signal, missed.outcome, missed.detail) == (
        "m/a", "missed", "no data from the signal")
    assert judge(None, FAULT, CLOCK, signal="m/a").outcome == "not started"  # end unknown
    text = report_text([], TRUTH, CLOCK, end=CLOCK.stamp(T0 + 40))
    assert "faulty signals without an alarm: motor-1/accel, station-2/diameter_mm, " \
        "station-2/torque_nm;" in text


def test_times_are_on_the_wall_clock_in_the_log_lines_format() -> None:
    text = stopped_at(25.0)
    fault_wall = T0 + 30.0  # not T0 + 300: the simulated clock runs ten times faster
    stamp = time.strftime(LOG_TIME_FORMAT, time.localtime(fault_wall))
    row = next(line for line in text.splitlines() if line.startswith("motor-1/accel"))
    assert row.split()[1] == stamp
    assert "times on the wall clock, as in the log lines (the simulation ran at x10)" in text
    assert next(line for line in text.splitlines()
                if line.startswith("motor-2/accel")).split()[1:3] == ["-", "0"]


def test_ids_with_labels_are_matched_to_the_simulators_ids() -> None:
    labelled = SignalSeen("motor-1/accel{line=l1}", 0, math.nan, CLOCK.stamp(T0 + 20), 2.0, 100)
    text = report_text([labelled], {"motor-1/accel": FAULT}, CLOCK,
                       key={"motor-1/accel{line=l1}": "motor-1/accel"})
    assert "motor-1/accel{line=l1} (not started)" in text
    assert "faulty signals without an alarm: none;" in text


def test_docstring_examples_run() -> None:
    result = doctest.testmod(demo_summary, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
