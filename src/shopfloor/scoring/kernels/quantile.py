"""Streaming upper-tail quantile: a forgetting, log-spaced histogram with a tail pointer.

The estimate of the ``1 - tail`` quantile of a score stream is kept in a fixed histogram whose
bins are spaced evenly in a signed logarithmic coordinate

    u(x) = x / X_MIN                                    for |x| <= X_MIN
    u(x) = sign(x) (1 + BINS_PER_E ln(|x| / X_MIN))     otherwise,

so every bin is 1/BINS_PER_E (about 3 %) wide in relative terms from 1e-9 to 1e9 in magnitude,
for positive and negative scores alike; scores within 1e-9 of zero share one linear bin, scores
beyond 1e9 in magnitude the outermost bins. Relative resolution is the right one for a tail
quantile: its error matters in proportion to its size, whatever the score's units.

Forgetting is exponential with a half-life counted in learned scores: the n-th score is added
with weight ``growth**n`` (``growth = 2**(1/half_life)``) instead of multiplying every bin by
``1/growth``, so a score costs O(1); the weights are rescaled by an exact power of two when
they grow large. A pointer to the bin holding the quantile, with the mass above that bin, is
moved by at most a few bins per score (the walk is bounded by the bin count in the worst case,
for a tail with long empty stretches). Within the pointer's bin the quantile is interpolated
linearly in ``u`` between the smallest and the largest score learned into that bin rather than
between the bin's edges. That makes ties exact (a stream of equal scores ``c`` gives the
threshold ``c``, so ``c > threshold`` is never true: no exceedance storm from a detector that
reports 0.0 while it warms up) and keeps a bounded score (HST's [0, 1], or any score whose
quantile sits near its largest value) from getting a threshold above everything it can reach.
A bin forgets its extremes when its weight has decayed to exactly zero (checked when the
weights are rescaled).

State is three small arrays (see :class:`QuantileState`), updated in place, and everything is
compiled with :func:`~shopfloor.scoring.kernels._jit.strict_kernel`, so any batch split gives
bit-identical thresholds and state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import strict_kernel

__all__ = [
    "BINS_PER_E",
    "N_BINS",
    "WINSOR_BINS",
    "X_MAX",
    "X_MIN",
    "QuantileState",
    "new_quantile_state",
    "tail_quantile",
]

#: Bins per e-fold of |score|: 3.2 % relative width, fine enough that linear interpolation
#: inside a bin costs well under 1 % of the false-alarm rate on smooth tails (see tests).
BINS_PER_E = 32.0
#: Magnitudes up to X_MIN share the linear zero bin; magnitudes above X_MAX the outer bins.
X_MIN = 1e-9
X_MAX = 1e9
#: Bins on each side of the zero bin.
SIDE = math.ceil(BINS_PER_E * math.log(X_MAX / X_MIN)) + 1
N_BINS = 2 * SIDE + 1

# Scalars: weight of the next learned score, total weight, weight above the pointer's bin,
# u of the quantile, the quantile, the threshold in force.
_W, _TOTAL, _ABOVE, _UQ, _Q, _THR = range(6)
N_SCALARS = 6
# Counts: pointer bin, scores learned, non-finite scores skipped, withheld exceedances counted.
_K, _LEARNED, _SKIPPED, _WITHHELD = range(4)
N_COUNTS = 4

#: A withheld exceedance (see :func:`tail_quantile`) is counted at most this many bins above
#: the quantile. One bin keeps an intermittent fault from being absorbed quickly: each alarm
#: adds its leading samples, and a stack of them lifts the threshold a bin at a time.
WINSOR_BINS = 1.0

# Rescale the weights by an exact power of two once the next weight passes 2**512, long before
# anything can overflow (the total is at most ~1.5 half-lives of weights, < 2**560).
_RENORM_AT = 2.0**512
_RENORM_BY = 2.0**-512


class QuantileState(NamedTuple):
    """The estimator's state, three arrays updated in place by :func:`tail_quantile`.

    Attributes
    ----------
    table
        Shape (3, N_BINS), float64: row 0 the forgetting weight in each bin, rows 1 and 2 the
        smallest and largest score learned into each bin (+inf and -inf while empty).
    scalars
        Shape (6,), float64: next weight, total weight, weight above the pointer's bin, ``u``
        of the quantile, the quantile, the threshold in force.
    counts
        Shape (4,), int64: pointer bin, scores learned, non-finite scores skipped, withheld
        exceedances counted.
    """

    table: NDArray[np.float64]
    scalars: NDArray[np.float64]
    counts: NDArray[np.int64]


def new_quantile_state() -> QuantileState:
    """State of an estimator that has learned nothing (threshold +inf)."""
    table = np.zeros((3, N_BINS), dtype=np.float64)
    table[1, :] = np.inf
    table[2, :] = -np.inf
    scalars = np.array([1.0, 0.0, 0.0, np.nan, np.nan, np.inf], dtype=np.float64)
    counts = np.array([SIDE, 0, 0, 0], dtype=np.int64)
    return QuantileState(table, scalars, counts)


# ---------------------------------------------------------------- kernels


@strict_kernel
def _u_of(x: float) -> float:
    ax = abs(x)
    if ax <= X_MIN:
        return x / X_MIN
    u = 1.0 + BINS_PER_E * math.log(ax / X_MIN)
    return u if x > 0.0 else -u


@strict_kernel
def _x_of(u: float) -> float:
    au = abs(u)
    if au <= 1.0:
        return u * X_MIN
    x = X_MIN * math.exp((au - 1.0) / BINS_PER_E)
    return x if u > 0.0 else -x


@strict_kernel
def _bin_of(u: float, side: int) -> int:
    if u >= 1.0:
        return min(side + math.floor(u), 2 * side)
    if u <= -1.0:
        return max(side - math.floor(-u), 0)
    return side


@strict_kernel
def _bin_edges(b: int, side: int) -> tuple[float, float]:
    if b > side:
        return float(b - side), float(b - side + 1)
    if b < side:
        return float(b - side - 1), float(b - side)
    return -1.0, 1.0


@strict_kernel
def _walk(hist: NDArray[np.float64], k: int, above: float, target: float) -> tuple[int, float]:
    # Up first, then down, never alternating: each loop's exit condition is computed with the
    # same rounding as its update, so the pair cannot cycle on a near-tie.
    last = hist.shape[0] - 1
    while above >= target and k < last:
        k += 1
        above -= hist[k]
    while above + hist[k] < target and k > 0:
        above += hist[k]
        k -= 1
    return k, above


@strict_kernel
def _renormalise(
    table: NDArray[np.float64], scal: NDArray[np.float64], cnt: NDArray[np.int64], tail: float
) -> None:
    hist = table[0]
    k = cnt[_K]
    total = 0.0
    above = 0.0
    for i in range(hist.shape[0]):
        h = hist[i] * _RENORM_BY
        hist[i] = h
        if h == 0.0:
            table[1, i] = np.inf  # the bin's weight is gone, and with it its extremes
            table[2, i] = -np.inf
        total += h
        if i > k:
            above += h
    scal[_W] *= _RENORM_BY
    scal[_TOTAL] = total
    cnt[_K], scal[_ABOVE] = _walk(hist, k, above, tail * total)


@strict_kernel
def _add(
    x: float, u: float, table: NDArray[np.float64], scal: NDArray[np.float64],
    cnt: NDArray[np.int64], tail: float, growth: float,
) -> None:
    side = (table.shape[1] - 1) // 2
    b = _bin_of(u, side)
    w = scal[_W]
    table[0, b] += w
    if x < table[1, b]:
        table[1, b] = x
    if x > table[2, b]:
        table[2, b] = x
    scal[_TOTAL] += w
    k = cnt[_K]
    above = scal[_ABOVE]
    if b > k:
        above += w
    cnt[_K], scal[_ABOVE] = _walk(table[0], k, above, tail * scal[_TOTAL])
    cnt[_LEARNED] += 1
    scal[_W] = w * growth
    if scal[_W] > _RENORM_AT:
        _renormalise(table, scal, cnt, tail)


@strict_kernel
def _locate(
    table: NDArray[np.float64], scal: NDArray[np.float64], cnt: NDArray[np.int64],
    tail: float, min_samples: int, margin: float,
) -> None:
    side = (table.shape[1] - 1) // 2
    k = cnt[_K]
    h = table[0, k]
    frac = (tail * scal[_TOTAL] - scal[_ABOVE]) / h if h > 0.0 else 1.0
    frac = min(max(frac, 0.0), 1.0)
    lo, hi = _bin_edges(k, side)
    smallest = table[1, k]
    largest = table[2, k]
    lo = min(max(lo, _u_of(smallest)), hi)  # h > 0, so the bin has extremes
    hi = max(min(hi, _u_of(largest)), lo)
    uq = hi - frac * (hi - lo)
    # Clamped in x as well: the round trip through u may be an ulp off, and for equal scores
    # the threshold must be the score itself.
    q = min(max(_x_of(uq), smallest), largest)
    scal[_UQ] = uq
    scal[_Q] = q
    if cnt[_LEARNED] < min_samples or k == table.shape[1] - 1:
        scal[_THR] = np.inf  # too few scores yet, or the tail is beyond the grid
    else:
        scal[_THR] = q + margin * abs(q)


@strict_kernel
def _tail_kernel(
    score: NDArray[np.float64], learn: NDArray[np.bool_], withheld: NDArray[np.bool_],
    table: NDArray[np.float64], scal: NDArray[np.float64], cnt: NDArray[np.int64],
    tail: float, growth: float, min_samples: int, margin: float, cap: float,
    out: NDArray[np.float64],
) -> None:
    for i in range(score.shape[0]):
        s = score[i]
        if not math.isfinite(s):
            out[i] = np.inf  # so that ``score > threshold`` is False for NaN and +inf alike
            if learn[i]:
                cnt[_SKIPPED] += 1
            continue
        thr = scal[_THR]
        out[i] = thr
        if learn[i]:
            x = s
            u = _u_of(s)
        elif withheld[i] and s > thr:
            # A withheld exceedance still says "the tail was reached": count it, winsorised
            # to one bin above the quantile, which leaves the quantile itself unbiased while
            # a fault's magnitude is not learned.
            u = _u_of(s)
            cap_u = scal[_UQ] + cap
            if u > cap_u:
                u = cap_u
                x = _x_of(cap_u)
            else:
                x = s
            cnt[_WITHHELD] += 1
        else:
            continue
        _add(x, u, table, scal, cnt, tail, growth)
        _locate(table, scal, cnt, tail, min_samples, margin)


# ---------------------------------------------------------------- public wrapper


def tail_quantile(
    score: NDArray[np.float64], learn: NDArray[np.bool_], withheld: NDArray[np.bool_] | None,
    state: QuantileState, *, tail: float, half_life: float, min_samples: int, margin: float = 0.0,
) -> NDArray[np.float64]:
    """Threshold in force before each score, then learn the score where ``learn``.

    Parameters
    ----------
    score
        Shape (n,), float64. Non-finite scores are never learned (they are counted in
        ``state.counts[2]`` where ``learn`` is set) and get a threshold of +inf.
    learn
        Shape (n,), bool: learn score ``i`` after reporting its threshold.
    withheld
        Shape (n,), bool, or None: where set (and ``learn`` is not), a score above its
        threshold is counted in the tail, winsorised to one bin above the quantile, instead of
        being ignored. See :class:`shopfloor.scoring.detect.threshold.QuantileThreshold`.
    state
        From :func:`new_quantile_state`; updated in place.
    tail
        Target exceedance probability, in (0, 0.5]: the ``1 - tail`` quantile is estimated.
    half_life
        Forgetting half-life in learned scores, at least ``1 / tail``.
    min_samples
        Scores to learn before the threshold becomes finite, >= 1.
    margin
        The threshold is ``q + margin * |q|`` for the quantile estimate ``q``; >= 0.

    Returns
    -------
    threshold
        Shape (n,), float64: the threshold in force before each score was learned.
    """
    s = _check_vector(score, np.float64, "score", "np.asarray(score, dtype=np.float64)")
    n = s.shape[0]
    lrn = _check_vector(learn, np.bool_, "learn", "np.ones(n, dtype=bool)", n)
    held = (
        np.zeros(n, dtype=np.bool_) if withheld is None
        else _check_vector(withheld, np.bool_, "withheld", "np.zeros(n, dtype=bool)", n)
    )
    _check_state(state)
    if not (0.0 < tail <= 0.5):
        raise ValueError(f"tail (exceedance probability) must be in (0, 0.5]; got {tail}")
    if not (math.isfinite(half_life) and half_life * tail >= 1.0):
        raise ValueError(
            f"half_life must be finite and >= 1/tail = {1.0 / tail:g}; got {half_life}"
        )
    if isinstance(min_samples, bool) or not isinstance(min_samples, int | np.integer) or (
        min_samples < 1
    ):
        raise ValueError(f"min_samples must be an integer >= 1; got {min_samples!r}")
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be finite and >= 0; got {margin}")
    out = np.empty(n, dtype=np.float64)
    growth = 2.0 ** (1.0 / float(half_life))
    _tail_kernel(s, lrn, held, state.table, state.scalars, state.counts, float(tail), growth,
                 int(min_samples), float(margin), WINSOR_BINS, out)
    return out


def _check_vector(
    v: object, dtype: type[np.generic], name: str, remedy: str, n: int | None = None
) -> NDArray[Any]:
    if not isinstance(v, np.ndarray) or v.dtype != dtype:
        raise TypeError(f"{name} must be a {np.dtype(dtype).name} numpy array; use {remedy}")
    if v.ndim != 1 or (n is not None and v.shape[0] != n):
        want = "(n,)" if n is None else f"({n},)"
        raise ValueError(f"{name} must have shape {want}; got {v.shape}")
    return np.ascontiguousarray(v)


def _check_state(state: QuantileState) -> None:
    shapes = (((3, N_BINS), np.float64), ((N_SCALARS,), np.float64), ((N_COUNTS,), np.int64))
    for arr, (shape, dtype), name in zip(state, shapes, QuantileState._fields, strict=True):
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
            raise ValueError(f"state.{name} must be a {np.dtype(dtype).name} array of shape "
                             f"{shape}; create the state with new_quantile_state()")
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            raise ValueError(f"state.{name} is updated in place: it must be C-contiguous and "
                             "writeable; create the state with new_quantile_state()")
