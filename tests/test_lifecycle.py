"""The alarm lifecycle through the monitor: every alarm ends (clear, adopt, gap), a constant
warm-up gives no absurd scores, and the likelihood against a plain-Python reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shopfloor.config import StageSpec
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.kernels import likelihood as lk
from shopfloor.scoring.monitor import Monitor


def monitor(**alarm: object) -> Monitor:
    return Monitor.from_spec(StageSpec(
        detector={"kind": "zscore"},
        threshold={"kind": "quantile", "false_alarm_rate": 0.001},
        alarm={"warmup": 200, **alarm},
    ), 1)


def test_alarm_clears_when_the_process_is_back() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10.0, 1.0, 3000)
    x[1500:1700] += 6.0  # a fault of 200 samples
    out = monitor().process(x.reshape(-1, 1), np.arange(3000.0))
    active = out.state == AlarmState.ACTIVE
    assert out.raised[1500:1510].any()
    assert out.cleared[1700:1720].any()
    assert not active[1720:].any()
    assert not out.adopted.any()


def test_sustained_step_is_adopted_then_learned_and_quiet() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 1.0, 8000)
    x[2000:] += 5.0  # a new normal
    out = monitor(adapt_after=600.0).process(x.reshape(-1, 1), np.arange(8000.0))
    raised = np.flatnonzero(out.raised)
    assert raised.size
    assert 2000 <= raised[0] < 2010
    adopted = np.flatnonzero(out.adopted)
    assert adopted.size == 1
    onset = out.onset[adopted[0]]
    assert 2000 <= onset <= raised[0]
    assert adopted[0] - onset == 600  # seconds of signal time since the onset
    # The detector re-warmed on the new level: no alarm after it, and scores in sigma units.
    assert not (out.state[adopted[0] + 1:] == AlarmState.ACTIVE).any()
    assert np.max(out.score[adopted[0] + 200:]) < 6.0


def test_gap_ends_the_alarm_and_rewarms() -> None:
    rng = np.random.default_rng(2)
    before = rng.normal(10.0, 1.0, 1000)
    before[900:] += 8.0  # an alarm in force when the recording stops
    after = rng.normal(18.0, 1.0, 1000)  # six days later, at a new level
    x = np.r_[before, after].reshape(-1, 1)
    t = np.r_[np.arange(1000.0), 6 * 86400.0 + np.arange(1000.0)]
    m = monitor(gap_reset=3600.0)
    out = m.process(x, t)
    assert out.state[950] == AlarmState.ACTIVE
    assert out.cleared[1000]  # the first sample after the gap ends it
    assert not (out.state[1000:] == AlarmState.ACTIVE).any()
    # The same stream in two batches split at the gap, and sample by sample: identical.
    for cuts in ([1000], [999], list(range(1, 2000, 7))):
        m2 = monitor(gap_reset=3600.0)
        parts = [m2.process(xc, tc) for xc, tc in zip(np.split(x, cuts), np.split(t, cuts),
                                                      strict=True)]
        for name in ("score", "state", "cleared", "adopted", "likelihood"):
            np.testing.assert_array_equal(
                np.concatenate([getattr(p, name) for p in parts]), getattr(out, name), name)


def test_constant_warmup_gives_no_absurd_score_and_learns_the_noise() -> None:
    rng = np.random.default_rng(3)
    x = np.r_[np.full(300, 5.0), 5.0 + 0.1 * rng.standard_normal(3000)]
    out = monitor().process(x.reshape(-1, 1), np.arange(x.size, dtype=float))
    assert np.nanmax(out.score) < 10.0
    assert not (out.state == AlarmState.ACTIVE).any()


def test_checkpoint_mid_alarm_restores_exactly() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 1.0, 4000).reshape(-1, 1)
    x[1000:] += 7.0
    t = np.arange(4000.0)
    whole = monitor(adapt_after=500.0).process(x, t)
    first = monitor(adapt_after=500.0)
    head = first.process(x[:1200], t[:1200])
    second = monitor(adapt_after=500.0)
    second.set_state(first.get_state())
    tail = second.process(x[1200:], t[1200:])
    for name in ("score", "state", "adopted", "onset", "likelihood"):
        np.testing.assert_array_equal(np.r_[getattr(head, name), getattr(tail, name)],
                                      getattr(whole, name), name)


def reference_likelihood(score: np.ndarray, threshold: np.ndarray, window: float) -> np.ndarray:
    """Numenta's anomaly likelihood written out: the short mean of the last 10 inputs against
    the running (then exponentially weighted) mean and variance of that short mean."""
    ring: list[float] = []
    n, mean, var = 0, 0.0, 0.0
    out = []
    for s, h in zip(score, threshold, strict=True):
        if not math.isfinite(s):
            out.append(math.nan)
            continue
        u = min(max(s / h, 0.0), lk.U_MAX) if math.isfinite(h) and h > 0 else 0.0
        ring = [*ring, u][-lk.SHORT:]
        n += 1
        short = sum(ring) / len(ring)
        if n > lk.MIN_COUNT:
            sd = max(math.sqrt(var), lk.SIGMA_MIN)
            out.append(0.5 * math.erfc(-(short - mean) / (sd * math.sqrt(2))))
        else:
            out.append(0.5)
        a = max(1.0 / window, 1.0 / n)
        diff = short - mean
        mean += a * diff
        var = (1 - a) * (var + diff * a * diff)
    return np.array(out)


def test_likelihood_matches_plain_python_reference() -> None:
    rng = np.random.default_rng(5)
    score = np.abs(rng.standard_normal(3000))
    score[2000:2050] += 6.0
    score[100] = np.nan
    score[200] = 1e300
    threshold = np.full(3000, 3.3)
    threshold[:50] = np.inf
    got = lk.likelihood(score, threshold, lk.new_state(), window=500.0)
    want = reference_likelihood(score, threshold, 500.0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # High at the onset, falling back while the anomaly persists in a long one.
    assert got[2015] > 0.999
    long = np.abs(rng.standard_normal(6000))
    long[2000:] += 6.0
    lik = lk.likelihood(long, np.full(6000, 3.3), lk.new_state(), window=500.0)
    assert lik[2020] > 0.999
    assert np.median(lik[5000:]) < 0.9


def test_likelihood_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        lk.likelihood(np.zeros(3), np.zeros(2), lk.new_state(), window=100.0)
    with pytest.raises(ValueError, match="window"):
        lk.likelihood(np.zeros(3), np.zeros(3), lk.new_state(), window=5.0)
