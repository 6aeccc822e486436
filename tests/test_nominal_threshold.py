"""Each detector's nominal threshold (used until the quantile threshold has calibrated) keeps
its promise on healthy data: the exceedance rate is near the target, or below it where the
theory gives a bound."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.scoring.detect.registry import DETECTORS, build, parameters, resolve

RATE = 1e-3
N = 120_000

# (kind, columns, lowest and highest accepted ratio of measured rate to target). Exact limits
# get 0.6-1.5: over ~120 expected exceedances the Poisson 4-sigma band is about +-0.37, plus a
# little for learned baselines. Bounds (Kingman for CUSUM/Page-Hinkley) only need to hold.
CASES = [
    ("zscore", 1, 0.6, 1.5),
    ("zscore", 4, 0.6, 1.5),
    ("ewma", 1, 0.6, 1.5),
    ("robust_z", 1, 0.6, 1.5),
    ("zscore-residuals", 1, 0.6, 1.5),  # forecast residuals of white noise are Gaussian too
    ("cusum", 1, 0.0, 1.0),
    ("page_hinkley", 1, 0.0, 1.0),
    ("mahalanobis", 4, 0.6, 1.6),  # estimated covariance inflates T² a little
    ("gaussian", 1, 0.6, 1.5),
]


@pytest.mark.parametrize(
    ("kind", "d", "low", "high"), CASES, ids=[f"{c[0]}-d{c[1]}" for c in CASES]
)
def test_nominal_threshold_rate_on_gaussian_noise(
    kind: str, d: int, low: float, high: float
) -> None:
    n = 20_000 if kind == "gaussian" else N  # River scores a row at a time
    rng = np.random.default_rng(42)
    x = rng.normal(5.0, 2.0, (n, d))
    # The limits are exact for charts of raw values; a residual chart (the default for process
    # signals) gets its threshold calibrated on its own scores.
    name, _, residuals = kind.partition("-")
    spec: dict[str, object] = {"kind": name}
    if "forecast" in parameters(resolve(DETECTORS, name)):
        spec["forecast"] = bool(residuals)
    detector = build(DETECTORS, spec)
    limit = detector.nominal_threshold(RATE, d)
    assert limit is not None
    assert np.isfinite(limit)
    score = detector.score_learn(x, np.ones(n, dtype=bool)).score[1000:]
    ratio = float(np.mean(score > limit)) / RATE
    if kind == "gaussian":  # 20,000 rows: ~19 expected exceedances, a wider band
        low, high = 0.2, 2.2
    assert low <= ratio <= high, f"{kind}: rate {ratio:.2f} x target"


def test_models_without_a_known_score_distribution_say_so() -> None:
    for kind in ("hst", "oneclass_svm"):
        assert build(DETECTORS, {"kind": kind}).nominal_threshold(RATE, 3) is None


def test_rules_mean_any_rule_fired() -> None:
    assert build(DETECTORS, {"kind": "western_electric"}).nominal_threshold(RATE, 1) == 0.5
