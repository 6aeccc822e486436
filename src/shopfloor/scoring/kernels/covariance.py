"""Streaming Mahalanobis distance (Hotelling T²) with exponential forgetting.

One asset reports several signals; each row is scored against an exponentially weighted mean
and covariance of the rows learned before it, then (if flagged) learned. The score is

    T² = δᵀ Ĉ⁻¹ δ,   δ = x − m,   Ĉ = C + diag(Λ)

where ``C`` is the weighted covariance (weights 2^(−age/half_life), normalised by their sum, as
``np.cov(..., aweights=w, bias=True)``) and ``Λ`` a small ridge that keeps a constant or
collinear signal from making ``C`` singular. For stationary Gaussian data T² follows roughly a
chi-square law with one degree of freedom per signal, so a quantile threshold works on it.

Cost. Learning a row changes ``Ĉ`` by a scalar times a rank-one term, so the precision matrix
``P = Ĉ⁻¹`` is carried along with a Sherman-Morrison update, O(d²) per row, sharing ``u = P δ``
with the score. For that to be exact the ridge has to shrink with the same factor as the
covariance between refreshes. A refresh (Cholesky factorisation and inverse, O(d³)) resets
``Λ = ridge·diag(C) + min_variance`` and ``P`` whenever the shrinkage since the last refresh
reaches one half (about once per half-life), every ``_REFRESH_ROWS`` learned rows at most (to
bound rounding drift), and after any learned row with T² above the total weight (where the
rank-one downdate would cancel digits).

Attribution. The signal named for a row is the one with the largest reconstruction-based
contribution ``u_i² / P_ii`` (Alcala and Qin, Automatica 45, 2009): how much T² drops if that
signal alone were replaced by its best estimate from the others. Unlike the complete
decomposition ``δ_i u_i`` (which sums to T² but smears a fault onto correlated signals and can
name a signal that sits at its mean), it names the faulty signal of a single-signal fault.

Rows with a NaN or inf get a NaN score and top −1, are counted, and are never learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import strict_kernel

__all__ = ["CovarianceState", "forgetting_factor", "mahalanobis_score_learn"]

#: Learned rows are clipped per signal to the mean +- CLIP_SIGMA of its learned spread once
#: CLIP_AFTER rows are learned (as the chart baselines do: shopfloor.scoring.kernels.stats).
CLIP_SIGMA = 6.0
CLIP_AFTER = 10

# Rows learned between two refreshes at most: bounds the rounding drift of the rank-one updates
# when the half-life is long (or infinite).
_REFRESH_ROWS = 1000

# Index of each slot in the small state vectors.
_W, _SHRINK = 0, 1  # stats: total weight, ridge shrinkage since the last refresh
_N_LEARNED, _N_SINCE, _N_NONFINITE, _READY = 0, 1, 2, 3  # counts


@dataclass(slots=True)
class CovarianceState:
    """Running state of :func:`mahalanobis_score_learn` for one asset of ``d`` signals.

    Attributes
    ----------
    stats
        float64 (2,): total forgetting weight, ridge shrinkage since the last refresh.
    counts
        int64 (4,): rows learned, rows learned since the last refresh, non-finite rows skipped,
        1 once the precision matrix is valid (``min_samples`` rows learned) else 0.
    mean
        float64 (d,): weighted mean of the learned rows.
    scatter
        float64 (d, d): weighted scatter; the covariance is ``scatter / stats[0]``.
    ridge_diag
        float64 (d,): the ridge ``Λ`` currently added to the covariance diagonal.
    precision
        float64 (d, d): ``(C + diag(Λ))⁻¹``, valid once ``counts[3] == 1``.
    """

    stats: NDArray[np.float64]
    counts: NDArray[np.int64]
    mean: NDArray[np.float64]
    scatter: NDArray[np.float64]
    ridge_diag: NDArray[np.float64]
    precision: NDArray[np.float64]

    @classmethod
    def new(cls, n_signals: int) -> CovarianceState:
        """Empty state for ``n_signals`` signals (nothing learned yet)."""
        if n_signals < 1:
            raise ValueError(f"n_signals must be >= 1; got {n_signals}")
        d = int(n_signals)
        return cls(
            stats=np.array([0.0, 1.0]),
            counts=np.zeros(4, dtype=np.int64),
            mean=np.zeros(d),
            scatter=np.zeros((d, d)),
            ridge_diag=np.zeros(d),
            precision=np.zeros((d, d)),
        )

    @property
    def n_signals(self) -> int:
        """Number of signals ``d``."""
        return int(self.mean.shape[0])

    @property
    def n_learned(self) -> int:
        """Rows learned so far."""
        return int(self.counts[_N_LEARNED])

    @property
    def n_nonfinite(self) -> int:
        """Rows refused because they held a NaN or inf."""
        return int(self.counts[_N_NONFINITE])

    def to_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of every array, keyed by attribute name."""
        return {f.name: getattr(self, f.name).copy() for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CovarianceState:
        """Rebuild from :meth:`to_dict` output, checking dtypes and shapes (arrays are copied)."""
        missing = {f.name for f in fields(cls)} - set(state)
        if missing:
            raise ValueError(
                f"covariance state lacks {sorted(missing)}; pass what to_dict() returned"
            )
        mean = np.array(state["mean"], dtype=np.float64)
        d = mean.shape[0] if mean.ndim == 1 else 0
        if d < 1:
            raise ValueError(
                f"covariance state: mean must be 1-D and non-empty; got shape {mean.shape}"
            )
        expected = {
            "stats": ((2,), np.float64),
            "counts": ((4,), np.int64),
            "mean": ((d,), np.float64),
            "scatter": ((d, d), np.float64),
            "ridge_diag": ((d,), np.float64),
            "precision": ((d, d), np.float64),
        }
        arrays: dict[str, NDArray[Any]] = {}
        for name, (shape, dtype) in expected.items():
            arr = np.asarray(state[name])
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(
                    f"covariance state: {name} must be {np.dtype(dtype).name} of shape {shape}; "
                    f"got {arr.dtype} of shape {arr.shape}"
                )
            arrays[name] = np.array(arr, dtype=dtype, order="C")
        return cls(**arrays)


def forgetting_factor(half_life: float) -> float:
    """Per-row weight decay ``2^(−1/half_life)`` (1.0 for an infinite half-life)."""
    if not (half_life > 0.0):
        raise ValueError(
            f"half_life must be > 0 samples (math.inf for no forgetting); got {half_life}"
        )
    return float(2.0 ** (-1.0 / half_life))


def mahalanobis_score_learn(
    x: NDArray[np.float64],
    learn: NDArray[np.bool_],
    state: CovarianceState,
    *,
    half_life: float,
    ridge: float,
    min_variance: float,
    min_samples: int,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Score each row of ``x`` by T², then learn it where ``learn``; updates ``state`` in place.

    Parameters
    ----------
    x
        float64 (n, d), C-contiguous; d must equal ``state.n_signals``.
    learn
        bool (n,): learn the row after scoring it.
    state
        Running state, from :meth:`CovarianceState.new` or a checkpoint.
    half_life
        Age in learned rows at which a row's weight has halved (> 0; ``math.inf`` to never
        forget).
    ridge
        Relative ridge (>= 0): ``ridge·C_ii`` is added to each signal's variance.
    min_variance
        Absolute floor (> 0) added to every variance, so a constant signal stays invertible.
    min_samples
        Rows to learn (>= 2) before scoring; earlier rows score 0 with top −1.

    Returns
    -------
    score, top
        float64 (n,) T² (NaN for a non-finite row) and int64 (n,) index of the signal with the
        largest reconstruction-based contribution (−1 while warming up or for a NaN row).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64 or x.ndim != 2:
        raise TypeError("x must be a 2-D float64 numpy array; use np.asarray(x, dtype=np.float64)")
    if not isinstance(learn, np.ndarray) or learn.dtype != np.bool_ or learn.shape != (x.shape[0],):
        raise TypeError(f"learn must be a bool numpy array of shape ({x.shape[0]},)")
    if x.shape[1] != state.n_signals:
        raise ValueError(
            f"x has {x.shape[1]} signals but the state was built for {state.n_signals}; "
            "keep the asset's signal list fixed or start a new state"
        )
    lam = forgetting_factor(half_life)
    if not (math.isfinite(ridge) and ridge >= 0.0):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge}")
    if not (math.isfinite(min_variance) and min_variance > 0.0):
        raise ValueError(f"min_variance must be a finite number > 0; got {min_variance}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be >= 2; got {min_samples}")
    n, d = x.shape
    score = np.empty(n)
    top = np.empty(n, dtype=np.int64)
    if n:
        _mahalanobis_kernel(
            np.ascontiguousarray(x), np.ascontiguousarray(learn), lam, float(ridge),
            float(min_variance), int(min_samples), _REFRESH_ROWS, state.stats, state.counts,
            state.mean, state.scatter, state.ridge_diag, state.precision, score, top,
            np.empty(d), np.empty(d), np.empty((d, d)),
        )  # fmt: skip
    return score, top


@strict_kernel
def _refresh(
    stats: NDArray[np.float64],
    counts: NDArray[np.int64],
    scatter: NDArray[np.float64],
    ridge_diag: NDArray[np.float64],
    precision: NDArray[np.float64],
    ridge: float,
    min_variance: float,
    chol: NDArray[np.float64],
) -> None:
    d = scatter.shape[0]
    inv_w = 1.0 / stats[_W]
    for j in range(d):
        ridge_diag[j] = ridge * (scatter[j, j] * inv_w) + min_variance
    # Cholesky factor L (lower) of C + diag(ridge_diag), in chol.
    for j in range(d):
        for k in range(j + 1):
            s = scatter[j, k] * inv_w
            if j == k:
                s += ridge_diag[j]
            for m in range(k):
                s -= chol[j, m] * chol[k, m]
            if j == k:
                # C is positive semi-definite and the ridge positive; a pivot can only fail to be
                # positive through rounding on a near-singular C, so fall back to the ridge alone.
                chol[j, j] = math.sqrt(s) if s > 0.0 else math.sqrt(ridge_diag[j])
            else:
                chol[j, k] = s / chol[k, k]
    # L⁻¹ in place (lower triangular), then P = L⁻ᵀ L⁻¹.
    for j in range(d):
        chol[j, j] = 1.0 / chol[j, j]
        for k in range(j):
            s = 0.0
            for m in range(k, j):
                s -= chol[j, m] * chol[m, k]
            chol[j, k] = s * chol[j, j]
    for j in range(d):
        for k in range(j + 1):
            s = 0.0
            for m in range(j, d):
                s += chol[m, j] * chol[m, k]
            precision[j, k] = s
            precision[k, j] = s
    stats[_SHRINK] = 1.0
    counts[_N_SINCE] = 0


@strict_kernel
def _mahalanobis_kernel(
    x: NDArray[np.float64],
    learn: NDArray[np.bool_],
    lam: float,
    ridge: float,
    min_variance: float,
    min_samples: int,
    refresh_rows: int,
    stats: NDArray[np.float64],
    counts: NDArray[np.int64],
    mean: NDArray[np.float64],
    scatter: NDArray[np.float64],
    ridge_diag: NDArray[np.float64],
    precision: NDArray[np.float64],
    score: NDArray[np.float64],
    top: NDArray[np.int64],
    delta: NDArray[np.float64],
    u: NDArray[np.float64],
    chol: NDArray[np.float64],
) -> None:
    n, d = x.shape
    for i in range(n):
        finite = True
        for j in range(d):
            if not math.isfinite(x[i, j]):
                finite = False
        if not finite:
            score[i] = np.nan
            top[i] = -1
            counts[_N_NONFINITE] += 1
            continue
        ready = counts[_READY] == 1
        for j in range(d):
            delta[j] = x[i, j] - mean[j]
        t2 = 0.0
        if ready:
            # u = P δ column by column (P is exactly symmetric): each u_j still sums its terms
            # in index order, but the inner loop is element-wise and vectorises without
            # reassociation, where a row-wise dot product would be one long dependency chain.
            for j in range(d):
                u[j] = 0.0
            for k in range(d):
                dk = delta[k]
                for j in range(d):
                    u[j] += precision[k, j] * dk
            best = -1
            best_rbc = -1.0
            for j in range(d):
                t2 += delta[j] * u[j]
                rbc = u[j] * u[j] / precision[j, j]
                if rbc > best_rbc:
                    best_rbc = rbc
                    best = j
            score[i] = t2
            top[i] = best
        else:
            score[i] = 0.0
            top[i] = -1
        if not learn[i]:
            continue

        # What is learned is clipped per signal to CLIP_SIGMA of its learned spread (after
        # CLIP_AFTER rows): one extreme row (a glitching gateway during the warm-up, when every
        # row is learned) would otherwise inflate the covariance so far that nothing after it
        # scores. A clipped row changes the update, so the precision is then recomputed.
        clipped = False
        if counts[_N_LEARNED] >= CLIP_AFTER:
            for j in range(d):
                reach = CLIP_SIGMA * math.sqrt(max(scatter[j, j] / stats[_W], 0.0))
                if delta[j] > reach:
                    delta[j] = reach
                    clipped = True
                elif delta[j] < -reach:
                    delta[j] = -reach
                    clipped = True
        # West's weighted update: old weights decay by lam, the new row weighs 1.
        w_old = stats[_W]
        w_new = lam * w_old + 1.0
        stats[_W] = w_new
        inv_w = 1.0 / w_new
        for j in range(d):
            mean[j] += delta[j] * inv_w
        g = 1.0 - inv_w
        # Full rows rather than a mirrored triangle: contiguous and vectorisable, and still
        # exactly symmetric because δ_j δ_k and δ_k δ_j are the same product.
        for j in range(d):
            dj = delta[j]
            for k in range(d):
                scatter[j, k] = lam * scatter[j, k] + g * (dj * delta[k])
        counts[_N_LEARNED] += 1

        if ready and clipped:
            _refresh(stats, counts, scatter, ridge_diag, precision, ridge, min_variance, chol)
        elif ready:
            # C_new = a (C_old + δδᵀ / w_new); with Λ shrunk by the same a, Sherman-Morrison
            # gives P_new = (P − u uᵀ / (w_new + T²)) / a exactly.
            a = lam * w_old / w_new
            inv_a = 1.0 / a
            inv_den = 1.0 / (w_new + t2)
            for j in range(d):
                uj = u[j]
                for k in range(d):
                    precision[j, k] = (precision[j, k] - (uj * u[k]) * inv_den) * inv_a
            for j in range(d):
                ridge_diag[j] *= a
            stats[_SHRINK] *= a
            counts[_N_SINCE] += 1
            if stats[_SHRINK] < 0.5 or counts[_N_SINCE] >= refresh_rows or t2 > w_new:
                _refresh(stats, counts, scatter, ridge_diag, precision, ridge, min_variance, chol)
        elif counts[_N_LEARNED] >= min_samples:
            _refresh(stats, counts, scatter, ridge_diag, precision, ridge, min_variance, chol)
            counts[_READY] = 1
