"""The streaming Mahalanobis kernel against a plain-NumPy reference.

The reference recomputes the weighted mean and covariance from scratch for every row
(``np.cov`` with the forgetting weights as ``aweights``) and solves with ``np.linalg.solve``;
it shares with the kernel only the documented ridge schedule (reset at each refresh, shrunk with
the covariance in between), which it re-implements independently.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.scoring.kernels import covariance
from shopfloor.scoring.kernels.covariance import (
    CovarianceState,
    forgetting_factor,
    mahalanobis_score_learn,
)

PARAMS: dict[str, Any] = {
    "half_life": 50.0, "ridge": 1e-6, "min_variance": 1e-12, "min_samples": 10
}


def reference(
    x: NDArray[np.float64],
    learn: NDArray[np.bool_],
    *,
    half_life: float,
    ridge: float,
    min_variance: float,
    min_samples: int,
    refresh_rows: int = 1000,
    conds: list[float] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    lam = 2.0 ** (-1.0 / half_life)
    d = x.shape[1]
    learned: list[NDArray[np.float64]] = []
    w_total, shrink, n_since, ready = 0.0, 1.0, 0, False
    ridge_diag = np.zeros(d)
    scores = np.full(x.shape[0], np.nan)
    tops = np.full(x.shape[0], -1, dtype=np.int64)

    def moments() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        rows = np.array(learned)
        weights = lam ** np.arange(len(rows) - 1, -1, -1, dtype=np.float64)
        mean = np.average(rows, axis=0, weights=weights)
        cov = np.atleast_2d(np.cov(rows.T, aweights=weights, bias=True))
        return mean, cov

    for i, row in enumerate(x):
        if not np.isfinite(row).all():
            continue
        t2 = 0.0
        if ready:
            mean, cov = moments()
            a_mat = cov + np.diag(ridge_diag)
            delta = row - mean
            u = np.linalg.solve(a_mat, delta)
            t2 = float(delta @ u)
            if conds is not None:
                conds.append(float(np.linalg.cond(a_mat)))
            rbc = u**2 / np.diag(np.linalg.inv(a_mat))
            scores[i], tops[i] = t2, int(np.argmax(rbc))
        else:
            scores[i] = 0.0
            if conds is not None:
                conds.append(1.0)
        if not learn[i]:
            continue
        clipped = False
        if len(learned) >= 10:  # what is learned is clipped to 6 sd per signal
            mean, cov = moments()
            reach = 6.0 * np.sqrt(np.maximum(np.diag(cov), 0.0))
            kept = np.clip(row, mean - reach, mean + reach)
            clipped = bool((kept != row).any())
            row = kept
        w_old, w_total = w_total, lam * w_total + 1.0
        learned.append(row)
        refresh = False
        if ready and clipped:
            refresh = True
        elif ready:
            a = lam * w_old / w_total
            ridge_diag *= a
            shrink *= a
            n_since += 1
            refresh = shrink < 0.5 or n_since >= refresh_rows or t2 > w_total
        elif len(learned) >= min_samples:
            refresh = ready = True
        if refresh:
            ridge_diag = ridge * np.diag(moments()[1]) + min_variance
            shrink, n_since = 1.0, 0
    return scores, tops


def run(x: NDArray[np.float64], learn: NDArray[np.bool_], **params: Any) -> tuple[
    NDArray[np.float64], NDArray[np.int64], CovarianceState
]:
    state = CovarianceState.new(x.shape[1])
    score, top = mahalanobis_score_learn(x, learn, state, **params)
    return score, top, state


def assert_matches_reference(
    x: NDArray[np.float64], learn: NDArray[np.bool_], rtol: float = 1e-9, **params: Any
) -> None:
    score, top, _ = run(x, learn, **params)
    ref_score, ref_top = reference(x, learn, **params)
    # atol: T² is a sum of d terms of order one that may partly cancel, so its rounding error is
    # relative to the terms, not to the (possibly near-zero) sum.
    np.testing.assert_allclose(score, ref_score, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(np.isnan(score), np.isnan(ref_score))
    # The named signal must agree wherever the reference's choice is clear-cut.
    np.testing.assert_array_equal(top == -1, ref_top == -1)
    assert np.mean(top == ref_top) > 0.99


def correlated(
    rng: np.random.Generator, n: int, d: int, offset: float = 0.0
) -> NDArray[np.float64]:
    a = rng.normal(size=(d, d))
    chol = np.linalg.cholesky(a @ a.T + 0.1 * np.eye(d))
    return rng.normal(size=(n, d)) @ chol.T + offset


# -- reference comparisons ----------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 2, 5])
def test_random_rows_match_reference(d: int) -> None:
    rng = np.random.default_rng(d)
    x = correlated(rng, 400, d)
    learn = rng.random(400) < 0.8
    assert_matches_reference(x, learn, **PARAMS)


def test_long_half_life_many_refreshes_match_reference() -> None:
    # Infinite half-life: the ridge shrinks by n/(n+1) per row, so refreshes come at doubling
    # row counts and the rank-one updates run for hundreds of rows in between.
    rng = np.random.default_rng(7)
    x = correlated(rng, 900, 3)
    assert_matches_reference(x, np.ones(900, dtype=bool), **{**PARAMS, "half_life": math.inf})


def test_refresh_row_cap_matches_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # With no forgetting the shrinkage since a refresh is n/(n+k), so a cap of 7 rows always
    # comes first and every refresh is cap-driven; the reference is told the same cap.
    monkeypatch.setattr(covariance, "_REFRESH_ROWS", 7)
    rng = np.random.default_rng(8)
    x = correlated(rng, 600, 2)
    params = {**PARAMS, "half_life": math.inf}
    score, _, state = run(x, np.ones(600, dtype=bool), **params)
    ref, _ = reference(x, np.ones(600, dtype=bool), refresh_rows=7, **params)
    np.testing.assert_allclose(score, ref, rtol=1e-9, atol=1e-9)
    assert 0 <= state.counts[1] < 7


def test_offset_1e8_matches_reference() -> None:
    rng = np.random.default_rng(3)
    x = correlated(rng, 300, 3, offset=1e8)
    # Looser: the unit-scale deviations are differences of numbers near 1e8, each carrying about
    # 1e8 × 2.2e-16 ≈ 2e-8 absolute rounding, differently in np.average and the running mean.
    assert_matches_reference(x, np.ones(300, dtype=bool), rtol=1e-6, **PARAMS)


def test_constant_signal_stays_finite_and_matches_reference() -> None:
    rng = np.random.default_rng(4)
    x = correlated(rng, 300, 3)
    x[:, 1] = 5.0
    assert_matches_reference(x, np.ones(300, dtype=bool), **PARAMS)
    score, _, _ = run(x, np.ones(300, dtype=bool), **PARAMS)
    assert np.isfinite(score).all()
    # Moving the constant signal is a large but finite surprise, attributed to it.
    state = CovarianceState.new(3)
    mahalanobis_score_learn(x, np.ones(300, dtype=bool), state, **PARAMS)
    moved = np.array([[x[-1, 0], 5.001, x[-1, 2]]])
    s, t = mahalanobis_score_learn(moved, np.zeros(1, dtype=bool), state, **PARAMS)
    assert np.isfinite(s[0])
    assert s[0] > 1e3
    assert t[0] == 1


def test_collinear_signals_stay_invertible() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=(500, 1))
    x = np.hstack([base, 2.0 * base + 3.0, rng.normal(size=(500, 1))])
    score, _, state = run(x, np.ones(500, dtype=bool), **{**PARAMS, "ridge": 1e-3})
    assert np.isfinite(score).all()
    assert np.isfinite(state.precision).all()
    assert_matches_reference(x, np.ones(500, dtype=bool), **{**PARAMS, "ridge": 1e-3})


def test_nonfinite_rows_are_skipped_and_counted() -> None:
    rng = np.random.default_rng(6)
    x = correlated(rng, 200, 2)
    x[[20, 50, 150], 0] = [np.nan, np.inf, -np.inf]
    x[151, 1] = np.nan
    learn = np.ones(200, dtype=bool)
    score, top, state = run(x, learn, **PARAMS)
    assert np.isnan(score[[20, 50, 150, 151]]).all()
    assert (top[[20, 50, 150, 151]] == -1).all()
    assert np.isfinite(np.delete(score, [20, 50, 150, 151])).all()
    assert state.n_nonfinite == 4
    assert state.n_learned == 196
    assert np.isfinite(state.mean).all()
    assert_matches_reference(x, learn, **PARAMS)


def test_empty_input_leaves_state_alone() -> None:
    state = CovarianceState.new(3)
    before = state.to_dict()
    score, top = mahalanobis_score_learn(np.empty((0, 3)), np.empty(0, dtype=bool), state, **PARAMS)
    assert score.shape == (0,)
    assert top.shape == (0,)
    for name, arr in state.to_dict().items():
        np.testing.assert_array_equal(arr, before[name])


def test_warm_up_scores_zero_then_chi_square_scale() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3000, 4))
    score, top, _ = run(x, np.ones(3000, dtype=bool), **{**PARAMS, "half_life": 500.0})
    np.testing.assert_array_equal(score[:10], 0.0)
    np.testing.assert_array_equal(top[:10], -1)
    # Mean of chi-square(4) is 4; with ~1400 effective rows the estimate inflates it slightly.
    assert 3.7 < score[1000:].mean() < 4.4


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 120),
    d=st.integers(1, 4),
    half_life=st.sampled_from([3.0, 20.0, 1e3, math.inf]),
    min_samples=st.integers(2, 30),
    ridge=st.sampled_from([0.0, 1e-6, 1e-2]),
    learn_rate=st.floats(0.3, 1.0),
    nan_rate=st.sampled_from([0.0, 0.05]),
)
def test_property_matches_reference(
    seed: int, n: int, d: int, half_life: float, min_samples: int, ridge: float,
    learn_rate: float, nan_rate: float,
) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    x = correlated(rng, n, d)
    x[rng.random((n, d)) < nan_rate] = np.nan
    learn = rng.random(n) < learn_rate
    params: dict[str, Any] = {
        "half_life": half_life, "ridge": ridge, "min_variance": 1e-9, "min_samples": min_samples
    }
    score, _, _ = run(x, learn, **params)
    conds: list[float] = []
    ref, _ = reference(x, learn, conds=conds, **params)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(score), finite)
    # 1e-9, loosened row by row by the condition number of the matrix solved: with ridge 0 and
    # fewer learned rows than signals the covariance is singular but for min_variance, and then
    # the reference's own solve is no more accurate than cond × machine epsilon.
    tol = 1e-9 + 64 * np.finfo(np.float64).eps * np.array(conds)
    err = np.abs(score[finite] - ref[finite]) / (np.abs(ref[finite]) + 1.0)
    assert (err <= tol).all(), f"max error/tolerance {np.max(err / tol):.3g}"


# -- batch invariance and checkpoints ------------------------------------------------------------


def test_batch_splits_and_restore_are_bit_exact() -> None:
    rng = np.random.default_rng(11)
    x = correlated(rng, 3000, 4)
    x[rng.random((3000, 4)) < 0.01] = np.nan
    learn = rng.random(3000) < 0.9
    whole, whole_top, whole_state = run(x, learn, **PARAMS)

    cuts = np.sort(rng.choice(np.arange(1, 3000), size=40, replace=False))
    state = CovarianceState.new(4)
    parts, tops = [], []
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, 3000], strict=True)):
        if k == 20:
            state = CovarianceState.from_dict(state.to_dict())
        s, t = mahalanobis_score_learn(x[lo:hi], learn[lo:hi], state, **PARAMS)
        parts.append(s)
        tops.append(t)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(np.concatenate(tops), whole_top)
    for name, arr in whole_state.to_dict().items():
        np.testing.assert_array_equal(getattr(state, name), arr)


def test_state_dict_is_a_copy_and_validated() -> None:
    state = CovarianceState.new(2)
    snapshot = state.to_dict()
    snapshot["mean"][0] = 99.0
    assert state.mean[0] == 0.0
    bad = state.to_dict()
    bad["scatter"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="scatter"):
        CovarianceState.from_dict(bad)
    with pytest.raises(ValueError, match="lacks"):
        CovarianceState.from_dict({"mean": np.zeros(2)})
    with pytest.raises(ValueError, match="n_signals"):
        CovarianceState.new(0)


# -- wrapper validation --------------------------------------------------------------------------


def test_wrapper_rejects_bad_inputs() -> None:
    state = CovarianceState.new(2)
    ok = np.zeros((3, 2))
    learn = np.ones(3, dtype=bool)
    with pytest.raises(TypeError, match="float64"):
        mahalanobis_score_learn(ok.astype(np.float32), learn, state, **PARAMS)
    with pytest.raises(TypeError, match="bool"):
        mahalanobis_score_learn(ok, np.ones(3), state, **PARAMS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="signals"):
        mahalanobis_score_learn(np.zeros((3, 3)), learn, state, **PARAMS)
    bad = [("half_life", 0.0), ("ridge", -1.0), ("min_variance", 0.0), ("min_samples", 1)]
    for key, value in bad:
        with pytest.raises(ValueError, match=key):
            mahalanobis_score_learn(ok, learn, state, **{**PARAMS, key: value})


def test_forgetting_factor() -> None:
    assert forgetting_factor(1.0) == 0.5
    assert forgetting_factor(math.inf) == 1.0
    assert forgetting_factor(10.0) ** 10 == pytest.approx(0.5, rel=1e-12)
