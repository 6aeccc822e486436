"""The peaks-over-threshold tail (SPOT with a PWM fit) against scipy's generalised Pareto on
known distributions, and as a threshold: rates, exactness across batch splits, restore."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]  # tests only; no stubs in the venv

from shopfloor.scoring.detect.tail import TailThreshold
from shopfloor.scoring.kernels import tail


@pytest.mark.parametrize(("sigma", "gamma", "rel"), [
    (1.0, 0.0, 0.1), (2.0, 0.2, 0.1), (0.5, -0.2, 0.1),
    # The heaviest shape pays for the winsorising at 50 median excesses (one wild score must
    # not take the fit over): gamma 0.37 for 0.4, the 1e-3 quantile 12 % low.
    (1.0, 0.4, 0.15),
])
def test_pwm_fit_recovers_a_known_pareto_tail(sigma: float, gamma: float, rel: float) -> None:
    # Large samples, so the shrinkage towards 0 (m / (m + 20)) is negligible: compare the far
    # quantile the fit implies with scipy's for the true distribution.
    y = stats.genpareto.rvs(gamma, scale=sigma, size=20_000, random_state=1)
    s_hat, g_hat = tail.gpd_pwm(y)
    assert g_hat == pytest.approx(gamma, abs=0.04)
    assert s_hat == pytest.approx(sigma, rel=0.05)
    p = 1e-3
    fitted = stats.genpareto.ppf(1 - p, g_hat, scale=s_hat)
    assert fitted == pytest.approx(stats.genpareto.ppf(1 - p, gamma, scale=sigma), rel=rel)


def test_one_wild_score_does_not_take_the_fit_over() -> None:
    rng = np.random.default_rng(8)
    excess = rng.exponential(size=40)
    tame = tail.gpd_pwm(excess)
    excess[7] = 1e14
    wild = tail.gpd_pwm(excess)
    assert wild[0] < 3.0 * tame[0]


def test_pwm_fit_of_equal_excesses_is_exponential() -> None:
    assert tail.gpd_pwm(np.full(30, 2.0)) == (2.0, 0.0)


@pytest.mark.parametrize(("name", "draw"), [
    ("exponential", lambda r, n: r.exponential(size=n)),
    ("|N(0,1)|", lambda r, n: np.abs(r.standard_normal(n))),
    ("|t(5)|", lambda r, n: np.abs(r.standard_t(5, size=n))),
    ("chi2(3)", lambda r, n: r.chisquare(3, size=n)),
])
def test_online_rate_is_near_the_target(name: str, draw: Callable[..., np.ndarray]) -> None:
    rates = []
    for seed in range(5):
        scores = draw(np.random.default_rng(seed), 60_000)
        thresholds = TailThreshold(false_alarm_rate=1e-3).apply(scores, True)
        rates.append(np.mean(scores[200:] > thresholds[200:]))
    ratio = float(np.mean(rates)) / 1e-3
    assert 0.7 < ratio < 1.6, f"{name}: {ratio:.2f} x the target"


def test_threshold_from_a_few_hundred_scores_is_usable() -> None:
    # After 200 |N(0,1)| scores the median threshold is within 25 % of the true 1e-3 quantile.
    true = stats.norm.ppf(1 - 1e-3 / 2)
    values = []
    for seed in range(40):
        t = TailThreshold(false_alarm_rate=1e-3)
        t.apply(np.abs(np.random.default_rng(seed).standard_normal(200)), True)
        assert t.calibrated
        values.append(t.value)
    assert np.median(values) == pytest.approx(true, rel=0.25)
    assert np.isfinite(values).all()


def test_skip_ignores_the_detector_warmup_and_constant_scores_recalibrate() -> None:
    t = TailThreshold(false_alarm_rate=1e-3, skip=100)
    out = t.apply(np.r_[np.zeros(100), np.zeros(200)], True)
    assert np.isinf(out).all()
    assert not t.calibrated  # 200 equal scores have no tail: calibration starts again
    t.apply(np.random.default_rng(0).exponential(size=200), True)
    assert t.calibrated


def test_batch_splits_and_restore_change_nothing() -> None:
    rng = np.random.default_rng(3)
    scores = rng.exponential(size=5000)
    learn = rng.random(5000) > 0.05
    held = ~learn & (rng.random(5000) > 0.5)
    whole = TailThreshold(false_alarm_rate=1e-3, skip=10).apply(scores, learn, held)
    t = TailThreshold(false_alarm_rate=1e-3, skip=10)
    parts = []
    for chunk in np.split(np.arange(5000), [1, 7, 150, 211, 2000, 4999]):
        if chunk.size == 0:
            continue
        restored = TailThreshold(false_alarm_rate=1e-3, skip=10)
        restored.set_state(t.get_state())
        t = restored
        parts.append(t.apply(scores[chunk], learn[chunk], held[chunk]))
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_state_is_small_and_validated() -> None:
    t = TailThreshold()
    assert t.get_state()["tail"].nbytes <= 2048
    with pytest.raises(ValueError, match="shape"):
        t.set_state({"tail": np.zeros(5)})
    for bad in ({"false_alarm_rate": 0.5}, {"calibration": 10}, {"level": 0.999},
                {"calibration": 60, "level": 0.9}, {"memory": 10.0}, {"skip": -1}):
        with pytest.raises(ValueError):
            TailThreshold(**bad)


def test_a_slowly_developing_fault_does_not_drag_the_threshold_up_after_it() -> None:
    # 400 healthy |N(0,1)| scores, then a ramp from 1 to 10 over 200 scores that the alarm
    # would only withhold once it exceeds: the threshold may rise at most by a factor two per
    # `memory` learned scores, so the ramp crosses it instead of being learned.
    rng = np.random.default_rng(11)
    healthy = np.abs(rng.standard_normal(400))
    ramp = np.linspace(1.0, 10.0, 200) + 0.1 * rng.standard_normal(200)
    t = TailThreshold(false_alarm_rate=1e-3)
    before = t.apply(healthy, True)[-1]
    during = t.apply(ramp, ramp < t.value)  # learned while under the threshold in force
    assert during.max() <= before * 2.0
    assert (ramp > during).any()
    # A genuine change of scale is still learned, at most a doubling per `memory` (10,000)
    # learned scores: scores three times larger for 15,000 samples.
    t.apply(3.0 * np.abs(rng.standard_normal(15_000)), True)
    assert t.value > 2.0 * before
