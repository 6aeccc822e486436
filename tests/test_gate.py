"""The input gate: what is never scored or learned, counted by reason."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.scoring.detect.gate import MAX_MAGNITUDE, Reject, SampleGate, count_rejects


def test_scalar_reasons() -> None:
    gate = SampleGate((0.0, 10.0))
    v = np.array([0.0, 10.0, np.nan, -np.inf, np.inf, -0.1, 10.1, 5.0])
    reason = gate.check(v)
    assert reason.tolist() == [0, 0, 1, 2, 2, 3, 3, 0]
    assert count_rejects(reason) == {"nan": 1, "inf": 2, "out_of_range": 2}


def test_no_range_accepts_any_plausible_finite_value_and_counts_the_rest() -> None:
    reason = SampleGate().check(np.array([-1e15, 0.0, 1e15, np.nan, 1e300, -1.7e308, 1e16]))
    assert reason.tolist() == [0, 0, 0, Reject.NAN, *[Reject.IMPLAUSIBLE] * 3]
    assert MAX_MAGNITUDE == 1e15
    frames = np.zeros((2, 4))
    frames[1, 3] = 1e300
    assert SampleGate().check(frames).tolist() == [0, Reject.IMPLAUSIBLE]
    # Implausible wins over out of range: it says more about the sensor.
    assert SampleGate((0.0, 1.0)).check(np.array([1e300, 2.0])).tolist() == [
        Reject.IMPLAUSIBLE, Reject.OUT_OF_RANGE]


def test_frames_are_rejected_when_clipped_only() -> None:
    frames = np.zeros((3, 4))
    frames[1, 2] = np.nan  # a dropout is the feature stage's business
    frames[2, 0] = 60.0  # clipped accelerometer
    assert SampleGate((-50.0, 50.0)).check(frames).tolist() == [0, 0, Reject.OUT_OF_RANGE]


@pytest.mark.parametrize("bad", [(1.0, 0.0), (np.nan, 1.0), (0.0, np.inf)])
def test_bad_range_is_refused(bad: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="valid_range"):
        SampleGate(bad)


def test_labels_are_stable() -> None:
    # Metric labels and checkpoint counters use these names: renaming one is a breaking change.
    assert [r.label for r in Reject] == ["ok", "nan", "inf", "out_of_range", "missing_samples",
                                         "implausible"]
