"""AssetDetector: the Detector contract, correlation breaks and the false-alarm rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from shopfloor.scoring.detect.asset import AssetDetector
from shopfloor.scoring.detect.base import Detector


def chi2_isf_even(alpha: float, d: int) -> float:
    """Upper ``alpha`` quantile of chi-square with an even number ``d`` of degrees of freedom.

    For even d the survival function is exp(−x/2) Σ_{j<d/2} (x/2)^j / j!; bisect on it.
    """
    assert d % 2 == 0

    def sf(x: float) -> float:
        term = total = 1.0
        for j in range(1, d // 2):
            term *= x / 2.0 / j
            total += term
        return math.exp(-x / 2.0) * total

    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sf(mid) > alpha else (lo, mid)
    return 0.5 * (lo + hi)


def correlated_gaussian(
    rng: np.random.Generator, n: int, d: int, offset: float = 10.0
) -> NDArray[np.float64]:
    a = rng.normal(size=(d, d))
    chol = np.linalg.cholesky(a @ a.T + 0.1 * np.eye(d))
    return rng.normal(size=(n, d)) @ chol.T + offset


def test_is_a_detector_with_kind() -> None:
    det = AssetDetector(forecast=False)
    assert isinstance(det, Detector)
    assert det.kind == "mahalanobis"
    params = (det.half_life, det.min_samples, det.ridge, det.min_variance)
    assert params == (1000.0, 200, 1e-6, 1e-12)


@pytest.mark.parametrize(
    ("key", "value"),
    [("half_life", 0.0), ("half_life", -5.0), ("min_samples", 1), ("min_samples", 2.5),
     ("ridge", -0.1), ("ridge", 2.0), ("min_variance", 0.0), ("min_variance", math.inf),
     ("half_life", "long"), ("ridge", True), ("min_samples", "200")],
)  # fmt: skip
def test_invalid_parameters_name_the_parameter(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        AssetDetector(**{key: value})  # type: ignore[arg-type]


def test_infinite_half_life_is_allowed() -> None:
    det = AssetDetector(forecast=False, half_life=math.inf, min_samples=5)
    rng = np.random.default_rng(0)
    batch = det.score_learn(rng.normal(size=(50, 2)), np.ones(50, dtype=bool))
    assert np.isfinite(batch.score).all()


def test_correlation_break_is_caught_and_attributed() -> None:
    # Spindle current, spindle temperature and coolant flow follow one load; after row 6000
    # the temperature sensor decouples (its own noise, its usual range). Each signal keeps its
    # own distribution, so univariate 3σ charts see nothing new.
    rng = np.random.default_rng(42)
    n, brk = 8000, 6000
    load = rng.normal(size=n)
    x = np.column_stack([
        20.0 + 2.0 * load + 0.2 * rng.normal(size=n),
        60.0 + 5.0 * load + 0.5 * rng.normal(size=n),
        8.0 - 0.5 * load + 0.05 * rng.normal(size=n),
    ])  # fmt: skip
    x[brk:, 1] = 60.0 + math.sqrt(25.25) * rng.normal(size=n - brk)
    mu, sd = x[:brk].mean(axis=0), x[:brk].std(axis=0)
    univariate = (np.abs(x - mu) / sd > 3.0).any(axis=1)
    assert univariate[brk:].mean() < 0.02

    det = AssetDetector(forecast=False, half_life=2000.0)
    learn = np.arange(n) < brk  # the pipeline stops learning once an alarm is up
    batch = det.score_learn(x, learn)
    threshold = chi2_isf_even(1e-3, 4) * 2  # generous: chi-square(3) is below chi-square(4)
    before = batch.score[500:brk] > threshold
    after = batch.score[brk:] > threshold
    assert before.mean() < 0.005
    # Rows where the free temperature happens to sit near what the load predicts cannot be
    # told apart; the rest (about 60 %) are far above the threshold, enough to raise an alarm.
    assert after.mean() > 0.5
    assert np.mean(batch.top[brk:][after] == 1) > 0.95


def test_single_signal_spike_is_named() -> None:
    rng = np.random.default_rng(3)
    x = correlated_gaussian(rng, 3000, 6)
    det = AssetDetector(forecast=False, half_life=1000.0)
    det.score_learn(x, np.ones(3000, dtype=bool))
    sd = x.std(axis=0)
    for j in range(6):
        row = x[-1].copy()
        row[j] += 8.0 * sd[j]
        batch = det.score_learn(row[None, :], np.zeros(1, dtype=bool))
        assert batch.top[0] == j


def test_false_alarm_rate_at_chi_square_quantile() -> None:
    # Stationary correlated Gaussian signals, everything learned (as the pipeline does in normal
    # operation), the chi-square(4) 0.999 quantile as threshold: over 100,000 rows after a
    # burn-in of 5 half-lives the exceedance rate stays near 1e-3. The estimate from about
    # 2900 effective rows inflates T² slightly (F rather than chi-square), hence up to 1.5×.
    rng = np.random.default_rng(2024)
    d, burn, n = 4, 5000, 100_000
    x = correlated_gaussian(rng, burn + n, d, offset=1e3)
    det = AssetDetector(forecast=False)
    batch = det.score_learn(x, np.ones(burn + n, dtype=bool))
    alpha = 1e-3
    rate = float(np.mean(batch.score[burn:] > chi2_isf_even(alpha, d)))
    assert 0.6 * alpha < rate < 1.5 * alpha, rate


def test_warm_up_scores_zero() -> None:
    det = AssetDetector(forecast=False, min_samples=50)
    rng = np.random.default_rng(1)
    batch = det.score_learn(rng.normal(size=(80, 3)), np.ones(80, dtype=bool))
    np.testing.assert_array_equal(batch.score[:50], 0.0)
    np.testing.assert_array_equal(batch.top[:50], -1)
    assert (batch.score[50:] > 0).all()
    assert batch.rules is None


def test_nonfinite_rows_score_nan_and_are_not_learned() -> None:
    rng = np.random.default_rng(5)
    x = correlated_gaussian(rng, 600, 3)
    poisoned = x.copy()
    poisoned[[300, 400], 1] = [np.nan, np.inf]
    clean_det = AssetDetector(forecast=False, min_samples=50)
    det = AssetDetector(forecast=False, min_samples=50)
    batch = det.score_learn(poisoned, np.ones(600, dtype=bool))
    keep = np.ones(600, dtype=bool)
    keep[[300, 400]] = False
    clean = clean_det.score_learn(x[keep], np.ones(598, dtype=bool))
    assert np.isnan(batch.score[[300, 400]]).all()
    np.testing.assert_array_equal(batch.top[[300, 400]], -1)
    # Refused rows leave no trace: the rest equals a run without them.
    np.testing.assert_array_equal(batch.score[keep], clean.score)
    assert det.n_nonfinite == 2


def test_batches_and_restore_are_bit_exact() -> None:
    rng = np.random.default_rng(8)
    n = 5000
    x = correlated_gaussian(rng, n, 5)
    learn = rng.random(n) < 0.95
    whole = AssetDetector(forecast=False, half_life=300.0, min_samples=40)
    ref = whole.score_learn(x, learn)

    det = AssetDetector(forecast=False, half_life=300.0, min_samples=40)
    cuts = np.sort(rng.choice(np.arange(1, n), size=60, replace=False))
    scores, tops = [], []
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, n], strict=True)):
        if k % 15 == 7:  # checkpoint and continue on a fresh detector
            fresh = AssetDetector(forecast=False, half_life=300.0, min_samples=40)
            fresh.set_state(det.get_state())
            det = fresh
        batch = det.score_learn(x[lo:hi], learn[lo:hi])
        scores.append(batch.score)
        tops.append(batch.top)
    np.testing.assert_array_equal(np.concatenate(scores), ref.score)
    np.testing.assert_array_equal(np.concatenate(tops), ref.top)

    one_by_one = AssetDetector(forecast=False, half_life=300.0, min_samples=40)
    singles = [one_by_one.score_learn(x[i : i + 1], learn[i : i + 1]).score[0] for i in range(400)]
    np.testing.assert_array_equal(np.array(singles), ref.score[:400])


def test_state_is_a_copy_and_checked() -> None:
    det = AssetDetector(forecast=False, min_samples=5)
    assert det.get_state() == {"kind": "mahalanobis"}
    det.set_state({"kind": "mahalanobis"})  # restoring an empty detector is allowed
    rng = np.random.default_rng(0)
    det.score_learn(rng.normal(size=(20, 2)), np.ones(20, dtype=bool))
    state = det.get_state()
    state["mean"][:] = 1e9
    assert det.get_state()["mean"][0] != 1e9
    with pytest.raises(ValueError, match="kind"):
        det.set_state({"kind": "hst", "model": b""})
    with pytest.raises(ValueError, match="signals"):
        det.score_learn(np.zeros((1, 3)), np.zeros(1, dtype=bool))


def test_score_one_and_learn_one_helpers() -> None:
    det = AssetDetector(forecast=False, min_samples=3)
    for row in ([1.0, 2.0], [1.5, 2.9], [0.5, 1.2], [1.2, 2.5]):
        det.learn_one(row)
    near, far = det.score_one([1.1, 2.3]), det.score_one([1.1, -5.0])
    assert 0.0 <= near < far


def test_built_from_a_config_table() -> None:
    from shopfloor.scoring.detect.registry import DETECTORS, build

    det = build(DETECTORS, {"kind": "mahalanobis", "half_life": 500, "min_samples": 50})
    assert isinstance(det, AssetDetector)
    assert (det.half_life, det.min_samples) == (500.0, 50)
    with pytest.raises(ValueError, match="ridge"):
        build(DETECTORS, {"kind": "mahalanobis", "ridge": "small"})


def test_residuals_let_a_step_in_a_periodic_signal_stand_out() -> None:
    # The case: four noisy signals of one asset, one of them 12 + 0.5 sin(2 pi t / 300)
    # + N(0, 0.2) stepping up by 1.2 at row 2000. On raw values the cycle inflates that
    # signal's variance and T² of the step stays near its threshold; on residuals the step is
    # six noise sigmas.
    rng = np.random.default_rng(7)
    n = 3000
    t = np.arange(n)
    x = rng.normal(0.0, 0.2, (n, 4)) + np.array([3.0, 5.0, 7.0, 12.0])
    x[:, 3] += 0.5 * np.sin(2 * np.pi * t / 300)
    x[2000:, 3] += 1.2
    learn = np.ones(n, dtype=bool)
    learn[2000:] = False  # as the alarm does once the step exceeds
    limit = AssetDetector().nominal_threshold(1e-3, 4)
    assert limit is not None
    raw = AssetDetector(forecast=False).score_learn(x, learn)
    res = AssetDetector().score_learn(x, learn)
    assert np.mean(res.score[2000:2010] > limit) >= 0.8
    assert (res.top[2000:2010] == 3).all()
    assert np.mean(res.score[500:2000] > limit) < 0.005
    assert np.mean(res.score[2000:2010]) > 3 * np.mean(raw.score[2000:2010])


def test_one_extreme_row_in_the_warmup_does_not_blind_the_asset() -> None:
    # A 1e12 from a glitching gateway while every row is learned: clipped to 6 sd per signal,
    # it leaves the covariance finite and a later break of the pattern still scores high.
    rng = np.random.default_rng(21)
    n = 3000
    load = rng.standard_normal(n)
    x = np.column_stack([10.0 + load, 50.0 + 2.0 * load + 0.1 * rng.standard_normal(n)])
    x[150, 0] = 1e12
    x[2500:, 1] -= 2.0 * load[2500:]  # pressure stops following force
    learn = np.ones(n, dtype=bool)
    learn[2500:] = False
    det = AssetDetector(forecast=False)
    score = det.score_learn(x, learn).score
    state = det.get_state()
    assert all(np.isfinite(v).all() for k, v in state.items() if k != "kind")
    limit = det.nominal_threshold(1e-3, 2)
    assert limit is not None
    assert np.mean(score[2500:] > limit) > 0.5
    assert np.mean(score[1000:2500] > limit) < 0.01
