"""Control-chart detectors: the detector contract, checkpoints, what each one catches and how
often each one cries wolf on in-control data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np
import pytest

from shopfloor.scoring.detect.base import Detector
from shopfloor.scoring.detect.charts import (
    ChartDetector,
    CusumDetector,
    EwmaChart,
    FlatlineDetector,
    PageHinkleyDetector,
    RobustZDetector,
    ZScoreDetector,
    sigma_of_surprise,
)

# Thresholds for a per-sample false-alarm rate p, as documented in shopfloor.scoring.detect.charts.
Threshold = Callable[[float], float]


def normal_q(p: float) -> float:
    """Two-sided normal quantile: P(|Z| > q) = p."""
    return NormalDist().inv_cdf(1.0 - p / 2.0)


def t3_cdf(t: float) -> float:
    """Student t with 3 degrees of freedom, in closed form."""
    u = t / math.sqrt(3.0)
    return 0.5 + (u / (1.0 + u * u) + math.atan(u)) / math.pi


def t3_quantile(q: float) -> float:
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t3_cdf(mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


# The charts of raw values (forecast residuals are tested on their own below).
FACTORIES: dict[str, tuple[Callable[[], ChartDetector], Threshold]] = {
    "zscore": (lambda: ZScoreDetector(stuck=False), normal_q),
    "zscore_welford": (lambda: ZScoreDetector(baseline="welford", stuck=False), normal_q),
    "ewma": (lambda: EwmaChart(forecast=False), normal_q),
    "cusum": (lambda: CusumDetector(forecast=False), lambda p: math.log(2 / p) / (2 * 0.5)),
    "page_hinkley": (PageHinkleyDetector, lambda p: math.log(2 / p) / (2 * 0.25)),
    "robust_z": (lambda: RobustZDetector(forecast=False), normal_q),
    "flatline": (FlatlineDetector, lambda p: math.log(1 / p)),
}
NAMES = sorted(FACTORIES)


def stream(seed: int, n: int = 3000, d: int = 3) -> np.ndarray:
    """In-control signals with arbitrary units: the detectors must not care."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.01, 100.0, size=d) + rng.normal(size=d) * 1e3


# ------------------------------------------------------------------ the detector contract


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_zero_until_min_samples(name: str) -> None:
    det = FACTORIES[name][0]()
    x = stream(0, n=300)
    x[:, 2] = np.round(x[:, 2], -3)  # something for the flat-line detector to score
    out = det.score_learn(x, np.ones(300, dtype=bool))
    assert out.score.dtype == np.float64
    assert out.score.shape == (300,)
    assert out.top.dtype == np.int64
    assert out.top.shape == (300,)
    assert out.rules is None
    np.testing.assert_array_equal(out.score[:100], 0.0)
    np.testing.assert_array_equal(out.top[:100], -1)
    assert (out.score[100:] > 0).any()
    assert ((out.top == -1) == (out.score == 0)).all()


@pytest.mark.parametrize("name", NAMES)
def test_batch_splits_and_checkpoints_are_bit_exact(name: str) -> None:
    x = stream(1, n=1200)
    x[700:, 1] = x[700, 1]  # a stuck column, so every chart has something to say
    x[900:, 0] += 5 * x[:, 0].std()
    learn = np.random.default_rng(1).random(1200) < 0.9
    whole = FACTORIES[name][0]()
    expected = whole.score_learn(x, learn)

    split = FACTORIES[name][0]()
    cuts = [0, 1, 57, 99, 100, 101, 640, 641, 1199, 1200]
    scores, tops = [], []
    for a, b in itertools.pairwise(cuts):
        out = split.score_learn(x[a:b], learn[a:b])
        scores.append(out.score)
        tops.append(out.top)
        if b == 640:  # checkpoint mid-stream, continue in a fresh object
            saved = split.get_state()
            split = FACTORIES[name][0]()
            split.set_state(saved)
    np.testing.assert_array_equal(np.concatenate(scores), expected.score)
    np.testing.assert_array_equal(np.concatenate(tops), expected.top)
    np.testing.assert_array_equal(split.get_state()["stats"], whole.get_state()["stats"])


@pytest.mark.parametrize("name", NAMES)
def test_state_is_copied_both_ways(name: str) -> None:
    det = FACTORIES[name][0]()
    assert det.get_state()["stats"] is None
    det.score_learn(stream(2, n=200), np.ones(200, dtype=bool))
    saved = det.get_state()
    saved["stats"][:] = 123.0
    assert not np.any(det.get_state()["stats"] == 123.0)
    fresh = FACTORIES[name][0]()
    good = det.get_state()
    fresh.set_state(good)
    good["stats"][:] = 0.0
    np.testing.assert_array_equal(fresh.get_state()["stats"], det.get_state()["stats"])


@pytest.mark.parametrize("name", NAMES)
def test_bad_state_and_shape_changes_are_refused(name: str) -> None:
    det = FACTORIES[name][0]()
    det.score_learn(stream(3, n=10), np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match="columns"):
        det.score_learn(stream(3, n=10, d=2), np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match="kind"):
        det.set_state({"kind": "other", "stats": None})
    with pytest.raises(ValueError, match="shape"):
        det.set_state({"kind": det.kind, "stats": np.zeros((3, 11))})


def test_state_from_another_baseline_is_refused() -> None:
    det = ZScoreDetector(baseline="welford")
    det.score_learn(stream(3, n=10), np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match="baseline"):
        ZScoreDetector(baseline="ewma").set_state(det.get_state())


@pytest.mark.parametrize("name", NAMES)
def test_single_samples_and_nan_rows(name: str) -> None:
    det = FACTORIES[name][0]()
    for v in np.random.default_rng(4).normal(size=150):
        det.learn_one(float(v))
    assert math.isfinite(det.score_one(0.3))
    # The gate never passes NaN, but a detector must not be poisoned if one slips through.
    out = det.score_learn(np.array([[np.nan]]), np.ones(1, dtype=bool))
    assert out.score[0] == 0.0
    assert out.top[0] == -1
    assert math.isfinite(det.score_one(0.3))


@pytest.mark.parametrize(("cls", "kwargs", "param"), [
    (ZScoreDetector, {"baseline": "median"}, "baseline"),
    (ZScoreDetector, {"alpha": 0.0}, "alpha"),
    (ZScoreDetector, {"min_samples": 1}, "min_samples"),
    (EwmaChart, {"lam": 1.5}, "lam"),
    (CusumDetector, {"k": -0.1}, "k"),
    (PageHinkleyDetector, {"delta": math.inf}, "delta"),
    (CusumDetector, {"limit": 0.0}, "limit"),
    (PageHinkleyDetector, {"limit": math.nan}, "limit"),
    (RobustZDetector, {"alpha": 1.0}, "alpha"),
    (FlatlineDetector, {"min_samples": 2.5}, "min_samples"),
])
def test_parameters_are_validated(
    cls: type[Detector], kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(ValueError, match=param):
        cls(**kwargs)


def test_kinds_and_parameters_round_trip() -> None:
    kinds = {FACTORIES[n][0]().kind for n in NAMES}
    assert kinds == {"zscore", "ewma", "cusum", "page_hinkley", "robust_z", "flatline"}
    det = CusumDetector(k=0.75, baseline="welford", alpha=0.01, min_samples=50)
    assert vars(det) == {"k": 0.75, "limit": 30.0, "baseline": "welford", "alpha": 0.01,
                         "min_samples": 50, "forecast": True}
    assert not ZScoreDetector().forecast
    assert not RobustZDetector().forecast


# ------------------------------------------------------------------ faults each one catches

P_ALARM = 1e-4  # thresholds for one false alarm per 10,000 samples
T0 = 3000


def fault_stream(seed: int, fault: str) -> np.ndarray:
    """Three signals; the fault goes into column 1 at T0."""
    x = np.random.default_rng(seed).normal(size=(T0 + 3000, 3))
    f = x[:, 1]
    t = np.arange(f.size - T0, dtype=np.float64)
    if fault == "step4":
        f[T0:] += 4.0
    elif fault == "step1":
        f[T0:] += 1.0
    elif fault == "spike":
        f[T0] += 8.0 * np.sign(f[T0])
    elif fault == "drift":
        f[T0:] += 0.005 * t  # one sigma every 200 samples
    elif fault == "variance":
        f[T0:] *= 3.0
    elif fault == "stuck":
        f[T0:] = f[T0]
    return x * [2.0, 0.05, 30.0] + [10.0, -3.0, 1e4]


@pytest.mark.parametrize(("name", "fault", "max_delay"), [
    ("zscore", "step4", 10),
    ("zscore", "spike", 0),
    ("zscore", "variance", 40),
    ("zscore_welford", "step4", 10),
    ("ewma", "step1", 80),
    ("ewma", "drift", 320),
    ("cusum", "step1", 80),
    ("cusum", "drift", 260),
    ("page_hinkley", "step1", 80),
    ("page_hinkley", "drift", 260),
    ("robust_z", "spike", 0),
    ("robust_z", "variance", 40),
    ("flatline", "stuck", 3),
])
def test_fault_is_detected_within_a_bounded_delay(name: str, fault: str, max_delay: int) -> None:
    make, threshold = FACTORIES[name]
    h = threshold(P_ALARM)
    for seed in range(8):
        x = fault_stream(seed, fault)
        out = make().score_learn(x, np.ones(x.shape[0], dtype=bool))  # learning never paused
        assert np.mean(out.score[:T0] > h) < 0.005, "too noisy before the fault"
        hits = np.flatnonzero(out.score[T0:] > h)
        assert hits.size, f"seed {seed}: no alarm"
        assert hits[0] <= max_delay, f"seed {seed}: first alarm after {hits[0]} values"
        assert out.top[T0 + hits[0]] == 1, "the faulty column is named"


@pytest.mark.parametrize("name", ["zscore", "ewma", "cusum", "page_hinkley", "robust_z"])
def test_stuck_sensor_is_not_seen_by_mean_charts(name: str) -> None:
    """Documents the gap the flat-line detector fills: a value frozen near the mean."""
    make, threshold = FACTORIES[name]
    x = fault_stream(0, "stuck")
    x[T0:, 1] = -3.0  # frozen exactly on the centre line
    out = make().score_learn(x, np.ones(x.shape[0], dtype=bool))
    assert not (out.score[T0:T0 + 500] > threshold(P_ALARM)).any()


@pytest.mark.parametrize("name", ["cusum", "page_hinkley", "ewma"])
def test_alarm_holds_while_learning_is_paused_and_clears_after_recovery(name: str) -> None:
    make, threshold = FACTORIES[name]
    h = threshold(P_ALARM)
    x = np.random.default_rng(5).normal(size=(5000, 1))
    x[3000:4000] += 2.0  # a long fault: 1000 values
    learn = np.ones(5000, dtype=bool)
    learn[3000:4000] = False  # what the pipeline does while the alarm is active
    score = make().score_learn(x, learn).score
    assert (score[3030:4000] > h).mean() > 0.95
    # The ceiling on the sums bounds the all-clear: (limit - h) / k values at most.
    assert (score[4000 + 200:] < h).mean() > 0.99


def test_cusum_score_passes_its_limit_while_the_fault_goes_on() -> None:
    """A threshold that learned the limit (a fault during its warm-up) must not blind the
    chart: the stored sums stop at the limit, the reported score does not."""
    x = np.random.default_rng(10).normal(size=(1300, 1))
    x[1000:1200] += 3.0
    learn = np.ones(1300, dtype=bool)
    learn[1000:1200] = False
    score = CusumDetector(limit=10.0, forecast=False).score_learn(x, learn).score
    assert (score[1020:1200] > 10.0).mean() > 0.9
    assert score.max() < 10.0 + 8.0  # the ceiling plus one value's own evidence
    assert (score[1200 + 40:] < 10.0).all()


# ------------------------------------------------------------------ false alarms in control

N_CALM = 200_000


@pytest.mark.parametrize(("name", "low", "high"), [
    # Exact-quantile charts: the learned baseline adds a few % of tail; the sample itself
    # (200 expected exceedances at p = 1e-3) varies by ~7 %.
    ("zscore", 0.7, 1.3),
    ("zscore_welford", 0.7, 1.3),
    ("ewma", 0.7, 1.3),
    ("robust_z", 0.7, 1.35),
    # Kingman's bound is an upper bound; excursions are long (tens of samples), so 200,000
    # samples hold only a few dozen independent ones and the rate is noisy.
    ("cusum", 0.2, 1.2),
    ("page_hinkley", 0.2, 1.5),
])
def test_false_alarm_rate_on_gaussian_noise(name: str, low: float, high: float) -> None:
    p = 1e-3
    make, threshold = FACTORIES[name]
    x = np.random.default_rng(6).normal(size=(N_CALM, 1)) * 0.2 + 50.0
    score = make().score_learn(x, np.ones(N_CALM, dtype=bool)).score[100:]
    rate = np.mean(score > threshold(p))
    assert low * p <= rate <= high * p, rate / p


def test_flatline_false_alarm_rate_on_quantised_noise() -> None:
    p = 1e-3
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=(N_CALM, 1)) * 1.5)  # repeats ~18 % of the time
    score = FlatlineDetector().score_learn(x, np.ones(N_CALM, dtype=bool)).score[100:]
    rate = np.mean(score > math.log(1 / p))
    assert 0.5 * p <= rate <= 1.3 * p, rate / p


def test_robust_z_false_alarm_rate_on_heavy_tails() -> None:
    """On Student t(3) noise the robust z is (x - 0) / (1.4826 × 0.7649 s): calibrated from the
    t quantile it keeps the target rate; the mean/sd z-score with a normal threshold does not."""
    p = 1e-3
    t_mad = t3_quantile(0.75)
    x = np.random.default_rng(8).standard_t(3, size=(N_CALM, 1)) * 3.0 + 20.0
    learn = np.ones(N_CALM, dtype=bool)
    robust_score = RobustZDetector(forecast=False).score_learn(x, learn).score[1000:]
    h = t3_quantile(1.0 - p / 2) / (1.482602218505602 * t_mad)
    rate = np.mean(robust_score > h)
    assert 0.7 * p <= rate <= 1.35 * p, rate / p
    z_score = ZScoreDetector().score_learn(x, learn).score[1000:]
    assert np.mean(z_score > normal_q(p)) > 1.5 * p  # heavy tails fool the Gaussian chart


# ------------------------------------------------------------ charts of forecast residuals


def ar1(seed: int, n: int, phi: float = 0.9) -> np.ndarray:
    """A wandering process signal: AR(1) with unit innovations."""
    e = np.random.default_rng(seed).normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return 20.0 + x


def test_residual_chart_holds_its_rate_on_autocorrelated_data_where_the_raw_chart_fails() -> None:
    # phi = 0.9: the raw z-score's spread is the process's long-run one, but an EWMA chart of
    # raw values sees the wander as a shift; the residuals of the chosen forecaster are the
    # innovations, so the nominal limit means what it says.
    x = ar1(0, 60_000).reshape(-1, 1)
    learn = np.ones(len(x), dtype=bool)
    limit = normal_q(1e-3)
    raw = EwmaChart(forecast=False).score_learn(x, learn).score[1000:]
    resid = EwmaChart().score_learn(x, learn).score[1000:]
    z_resid = ZScoreDetector(forecast=True).score_learn(x, learn).score[1000:]
    assert np.mean(raw > limit) > 20e-3
    assert np.mean(resid > limit) < 2e-3
    assert 0.5e-3 < np.mean(z_resid > limit) < 1.6e-3


def test_residual_chart_sees_a_step_while_learning_is_paused() -> None:
    x = ar1(1, 4000).reshape(-1, 1)
    # Ten innovation sigmas, 4.4 sigmas of the wandering signal itself: while learning is
    # paused the forecast follows at a tenth of its weight, so the step shows for a while.
    x[3000:] += 10.0
    det = ZScoreDetector(forecast=True)
    learn = np.ones(4000, dtype=bool)
    learn[3000:] = False  # as the alarm does once the step exceeds
    score = det.score_learn(x, learn).score
    # The frozen forecast shows the step at once (the alarm needs 3 exceedances in a row).
    assert np.sum(score[3000:3005] > normal_q(1e-3)) >= 3
    # ... and then fades: a wandering signal settles anywhere, so the alarm can end.
    assert np.mean(score[3200:3400] > normal_q(1e-3)) < 0.2
    assert np.mean(score[1000:3000] > normal_q(1e-3)) < 0.005


def test_forecaster_state_restores_and_old_raw_state_is_refused() -> None:
    x = ar1(2, 600).reshape(-1, 1)
    learn = np.ones(600, dtype=bool)
    whole = ZScoreDetector(forecast=True).score_learn(x, learn).score
    first = ZScoreDetector(forecast=True)
    head = first.score_learn(x[:250], learn[:250]).score
    second = ZScoreDetector(forecast=True)
    second.set_state(first.get_state())
    tail = second.score_learn(x[250:], learn[250:]).score
    np.testing.assert_array_equal(np.r_[head, tail], whole)
    raw_state = {k: v for k, v in first.get_state().items() if k != "forecast"}
    with pytest.raises(ValueError, match="raw values"):
        ZScoreDetector(forecast=True).set_state(raw_state)
    assert EwmaChart().forecast  # the accumulating charts chart residuals


def test_zscore_sees_a_sensor_frozen_at_a_normal_value() -> None:
    rng = np.random.default_rng(12)
    x = 20.0 + rng.standard_normal(3000)
    x[2000:] = x[1999]  # the transmitter freezes at its last, ordinary value
    score = ZScoreDetector().score_learn(x.reshape(-1, 1), np.ones(3000, dtype=bool)).score
    limit = normal_q(1e-3)
    assert (score[2001:2004] > limit).all()  # three repeats in a row: raised by the alarm
    assert np.mean(score[200:2000] > limit) < 2e-3
    plain = ZScoreDetector(stuck=False).score_learn(x.reshape(-1, 1), np.ones(3000, dtype=bool))
    assert not (plain.score[2001:2004] > limit).any()


def test_zscore_on_a_quantised_signal_does_not_cry_stuck() -> None:
    # A transmitter with a 0.1 step under noise of 0.3 repeats a value every few samples: the
    # repeat rate is learned, and runs as long as it predicts are not news.
    rng = np.random.default_rng(13)
    x = np.round(20.0 + 0.3 * rng.standard_normal(20_000), 1)
    score = ZScoreDetector().score_learn(x.reshape(-1, 1), np.ones(x.size, dtype=bool)).score
    assert np.mean(score[1000:] > normal_q(1e-3)) < 3e-3


def test_sigma_of_surprise_is_the_normal_quantile_in_the_tail() -> None:
    for surprise in (3.0, 7.6, 15.0, 30.0):
        p = math.exp(-surprise)
        exact = NormalDist().inv_cdf(1.0 - p / 2.0)
        assert float(sigma_of_surprise(np.array([surprise]))[0]) == pytest.approx(exact, rel=0.05)
    assert math.isnan(float(sigma_of_surprise(np.array([np.nan]))[0]))
