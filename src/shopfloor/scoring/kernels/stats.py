"""Streaming statistics for control charts: Welford and EWMA baselines, CUSUM, EWMA chart.

Every kernel walks the rows of ``x`` (shape (n, d), d independent signals) in time order and is
prequential: the value written for row ``i`` uses the baseline learned *before* row ``i``; the
baseline then learns the row if ``learn[i]`` is set and the value is finite. Non-finite values
are skipped (output NaN, nothing updated) and counted. Before ``min_samples`` values have been
learned a column's output is 0.0, and values that do not vary (a spread at or below the floor)
do not count towards them (see :data:`SD_FLOOR_REL`).

State lives in one float64 array per kernel, shape (d, k), updated in place, so a pipeline can
checkpoint it. Columns 0..2 are always the baseline: count, mean, and the spread term (Welford's
sum of squared deviations M2 when ``alpha == 0``, the exponentially weighted variance otherwise).
Chart columns (CUSUM sums, the EWMA statistic) follow. The chart columns advance on every finite
value whether or not it is learned: they are the chart's memory of recent evidence, and a chart
frozen while the pipeline pauses learning during an alarm could never see the process recover.

All loops are compiled with :func:`~shopfloor.scoring.kernels._jit.strict_kernel`: the operations
run in the same order whatever the batch split, so results are bit-identical across splits.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import step_kernel, strict_kernel

__all__ = [
    "SD_FLOOR_ABS",
    "SD_FLOOR_REL",
    "cusum",
    "ewma_chart",
    "ewma_z",
    "max_abs_column",
    "new_cusum_state",
    "new_ewma_chart_state",
    "new_ewma_state",
    "new_page_hinkley_state",
    "new_welford_state",
    "page_hinkley",
    "welford_z",
    "z_step",
]

#: The spread is floored at ``max(SD_FLOOR_REL * |mean|, SD_FLOOR_ABS)``; a baseline whose
#: learned spread is at or below the floor has seen no variation and restarts its count at the
#: latest value (so a constant warm-up scores 0.0, not 1e10, once the values start to vary).
#: 1e-10 relative is far above float64 rounding and far below any real sensor's resolution.
SD_FLOOR_REL = 1e-10
SD_FLOOR_ABS = 1e-100

BASE = 3  # baseline columns: count, mean, M2 or variance

#: Learned values are clipped to the baseline's mean +- CLIP_SIGMA standard deviations once it
#: has CLIP_AFTER values: far enough out that a Gaussian signal loses nothing (2e-9 of its
#: values), close enough that one extreme value moves the mean by at most CLIP_SIGMA / n sigma.
CLIP_SIGMA = 6.0
CLIP_AFTER = 10.0


@strict_kernel
def _learn(n: float, mean: float, s: float, v: float, alpha: float) -> tuple[float, float, float]:
    """One baseline update; returns the new (count, mean, spread)."""
    n0, mean0, s0 = n, mean, s
    if n >= CLIP_AFTER:
        # What is learned is clipped to CLIP_SIGMA of the baseline: one extreme value (a 1e12
        # from a glitching gateway, during the warm-up when everything is learned) would
        # otherwise drag the mean and inflate the spread so far that nothing after it scores.
        var0 = s if alpha > 0.0 else s / (n - 1.0)
        if var0 > 0.0:
            reach = CLIP_SIGMA * math.sqrt(var0)
            v = min(max(v, mean - reach), mean + reach)
    n += 1.0
    diff = v - mean
    if alpha <= 0.0:
        mean += diff / n
        s += diff * (v - mean)
    else:
        # max(alpha, 1/n): an exact running mean/variance until n reaches 1/alpha, so the EWMA
        # is not biased towards its first sample during warm-up.
        a = max(alpha, 1.0 / n)
        incr = a * diff
        mean += incr
        s = (1.0 - a) * (s + diff * incr)
    # Values that have not varied beyond the spread floor teach nothing about the spread: a
    # constant warm-up (a setpoint, a stuck transmitter) would leave a spread of ~0 that turns
    # the first real noise into z-scores of 1e10, and an alarm that pauses the very learning
    # that would fix it. So the count restarts at the latest value until the values vary; the
    # column reports 0.0 until it has seen ``min_samples`` values that do.
    if not (math.isfinite(mean) and math.isfinite(s)):
        return n0, mean0, s0  # an update that overflows is not learned
    var = s if alpha > 0.0 else (s / (n - 1.0) if n > 1.0 else 0.0)
    floor = max(SD_FLOOR_REL * abs(mean), SD_FLOOR_ABS)
    if var <= floor * floor:
        return 1.0, v, 0.0
    return n, mean, s


@strict_kernel
def _sd(n: float, mean: float, s: float, alpha: float) -> float:
    var = s
    if alpha <= 0.0:
        var = s / (n - 1.0) if n > 1.0 else 0.0
    sd: float = max(math.sqrt(max(var, 0.0)), SD_FLOOR_REL * abs(mean), SD_FLOOR_ABS)
    return sd


# The loops run column by column with the state in local variables: columns are independent,
# so the order of operations per column (and the result) is the same as row by row, and the
# compiler keeps the recurrences in registers instead of reloading them from the state array.


@step_kernel
def z_step(n: float, mean: float, s: float, v: float, learn: bool, alpha: float,
           min_samples: int) -> tuple[float, float, float, float]:
    """The z of one finite value against the baseline (n, mean, s), then learned if ``learn``:
    returns (z, n, mean, s). The one step of the z kernel and of the signal banks."""
    z = (v - mean) / _sd(n, mean, s, alpha) if n >= min_samples else 0.0
    if learn:
        n, mean, s = _learn(n, mean, s, v, alpha)
    return z, n, mean, s


@strict_kernel
def _z_kernel(
    x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
    alpha: float, min_samples: int, out: NDArray[np.float64],
) -> int:
    skipped = 0
    for j in range(x.shape[1]):
        n, mean, s = st[j, 0], st[j, 1], st[j, 2]
        for i in range(x.shape[0]):
            v = x[i, j]
            if not math.isfinite(v):
                out[i, j] = np.nan
                skipped += 1
                continue
            out[i, j], n, mean, s = z_step(n, mean, s, v, learn[i], alpha, min_samples)
        st[j, 0], st[j, 1], st[j, 2] = n, mean, s
    return skipped


@strict_kernel
def _cusum_kernel(
    x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
    k: float, limit: float, alpha: float, min_samples: int, out: NDArray[np.float64],
) -> int:
    skipped = 0
    for j in range(x.shape[1]):
        n, mean, s, up, down = st[j, 0], st[j, 1], st[j, 2], st[j, 3], st[j, 4]
        for i in range(x.shape[0]):
            v = x[i, j]
            if not math.isfinite(v):
                out[i, j] = np.nan
                skipped += 1
                continue
            if n >= min_samples:
                z = (v - mean) / _sd(n, mean, s, alpha)
                up = max(0.0, up + z - k)
                down = max(0.0, down - z - k)
                out[i, j] = up if up >= down else -down
                # Stored clipped, reported before the ceiling: a fault that goes on still
                # scores above a threshold that sits at the limit.
                up = min(limit, up)
                down = min(limit, down)
            else:
                out[i, j] = 0.0
            if learn[i]:
                n, mean, s = _learn(n, mean, s, v, alpha)
        st[j, 0], st[j, 1], st[j, 2], st[j, 3], st[j, 4] = n, mean, s, up, down
    return skipped


@strict_kernel
def _ewma_chart_kernel(
    x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
    lam: float, alpha: float, min_samples: int, out: NDArray[np.float64],
) -> int:
    skipped = 0
    keep = 1.0 - lam
    steady = math.sqrt(lam / (2.0 - lam))  # the sigma once (1 - lam)^(2t) has underflowed
    for j in range(x.shape[1]):
        n, mean, s, e, w = st[j, 0], st[j, 1], st[j, 2], st[j, 3], st[j, 4]
        for i in range(x.shape[0]):
            v = x[i, j]
            if not math.isfinite(v):
                out[i, j] = np.nan
                skipped += 1
                continue
            if n >= min_samples:
                z = (v - mean) / _sd(n, mean, s, alpha)
                e = lam * z + keep * e
                # Below 1e-20, 1 - w rounds to 1: flush w to 0 rather than let it sink into
                # the (slow) subnormal range, where it would stick at the smallest subnormal.
                w = w * keep * keep if w > 1e-20 else 0.0
                # Exact (time-varying) sigma of the EWMA of unit-variance values (Montgomery).
                out[i, j] = e / (steady if w == 0.0 else math.sqrt(lam / (2.0 - lam) * (1.0 - w)))
            else:
                out[i, j] = 0.0
            if learn[i]:
                n, mean, s = _learn(n, mean, s, v, alpha)
        st[j, 0], st[j, 1], st[j, 2], st[j, 3], st[j, 4] = n, mean, s, e, w
    return skipped


@strict_kernel
def _max_abs_column(
    stat: NDArray[np.float64], score: NDArray[np.float64], top: NDArray[np.int64]
) -> None:
    for i in range(stat.shape[0]):
        best, arg = 0.0, -1
        for j in range(stat.shape[1]):
            v = abs(stat[i, j])
            if v > best:  # NaN compares False: a skipped value carries no evidence
                best, arg = v, j
        score[i] = best
        top[i] = arg


# ---------------------------------------------------------------- public wrappers


def max_abs_column(stat: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per row of ``stat`` (n, d), the largest ``|value|`` and its column.

    The column is the first one reaching the maximum, or -1 where every value is 0 or NaN
    (the score is then 0.0).
    """
    if not isinstance(stat, np.ndarray) or stat.dtype != np.float64 or stat.ndim != 2:
        raise TypeError("stat must be a 2-D float64 numpy array (rows, signals)")
    score = np.empty(stat.shape[0], dtype=np.float64)
    top = np.empty(stat.shape[0], dtype=np.int64)
    _max_abs_column(stat, score, top)
    return score, top


def _check_stream(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64],
    width: int, maker: str,
) -> NDArray[np.float64]:
    """Validate a kernel call; return ``x`` as a C-contiguous (n, d) view."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError(
            "x must be a float64 numpy array; convert it with np.asarray(x, dtype=np.float64)"
        )
    if x.ndim not in (1, 2):
        raise ValueError(f"x must have shape (n,) or (n, d); got shape {x.shape}")
    x2 = np.ascontiguousarray(x.reshape(x.shape[0], -1) if x.ndim == 1 else x)
    if not isinstance(learn, np.ndarray) or learn.dtype != np.bool_:
        raise TypeError(
            "learn must be a bool numpy array; use np.ones(n, dtype=bool) to learn every row"
        )
    if learn.shape != (x2.shape[0],):
        raise ValueError(f"learn must have shape ({x2.shape[0]},) like x's rows; got {learn.shape}")
    if not isinstance(state, np.ndarray) or state.dtype != np.float64:
        raise TypeError(f"state must be a float64 numpy array; create it with {maker}(d)")
    if state.shape != (x2.shape[1], width):
        raise ValueError(f"state must have shape ({x2.shape[1]}, {width}) for d={x2.shape[1]}; "
                         f"got {state.shape}; create it with {maker}(d)")
    if not (state.flags.c_contiguous and state.flags.writeable):
        raise ValueError(f"state is updated in place: it must be C-contiguous and writeable; "
                         f"create it with {maker}(d)")
    return x2


def _check_common(alpha: float, min_samples: int, *, allow_zero_alpha: bool) -> None:
    low_ok = alpha >= 0.0 if allow_zero_alpha else alpha > 0.0
    if not (low_ok and alpha < 1.0):
        allowed = "[0, 1) (0 = Welford)" if allow_zero_alpha else "(0, 1)"
        raise ValueError(f"alpha must be in {allowed}; got {alpha}")
    if not _is_int(min_samples) or min_samples < 2:
        raise ValueError(f"min_samples must be an integer >= 2; got {min_samples!r}")


def _check_limit(limit: float) -> None:
    if not limit > 0.0:
        raise ValueError(f"limit (largest sum kept, sigma; inf = none) must be > 0; got {limit}")


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _result(out: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    return out.reshape(-1) if x.ndim == 1 else out


def new_welford_state(d: int) -> NDArray[np.float64]:
    """Initial Welford baseline state for ``d`` signals: columns count, mean, M2."""
    return np.zeros((_check_d(d), BASE), dtype=np.float64)


def new_ewma_state(d: int) -> NDArray[np.float64]:
    """Initial EWMA baseline state for ``d`` signals: columns count, mean, variance."""
    return np.zeros((_check_d(d), BASE), dtype=np.float64)


def new_cusum_state(d: int) -> NDArray[np.float64]:
    """Initial CUSUM (or Page-Hinkley) state: baseline columns, then S+ and S-."""
    return np.zeros((_check_d(d), BASE + 2), dtype=np.float64)


new_page_hinkley_state = new_cusum_state


def new_ewma_chart_state(d: int) -> NDArray[np.float64]:
    """Initial EWMA-chart state: baseline columns, the EWMA statistic, (1 - lam)^(2t)."""
    st = np.zeros((_check_d(d), BASE + 2), dtype=np.float64)
    st[:, BASE + 1] = 1.0
    return st


def _check_d(d: int) -> int:
    if not _is_int(d) or d < 1:
        raise ValueError(f"d (number of signals) must be an integer >= 1; got {d!r}")
    return int(d)


def welford_z(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    min_samples: int = 2,
) -> tuple[NDArray[np.float64], int]:
    """Signed z-score of each value against the Welford (all-time) mean and sample std.

    Parameters
    ----------
    x
        Values, shape (n,) or (n, d), float64.
    learn
        Shape (n,) bool: learn row ``i`` after scoring it.
    state
        From :func:`new_welford_state`; updated in place.
    min_samples
        Values to learn before the z-score is reported (0.0 until then), at least 2.

    Returns
    -------
    z, skipped
        z with the shape of ``x`` (NaN where ``x`` is not finite) and the count of skipped
        non-finite values.
    """
    x2 = _check_stream(x, learn, state, BASE, "new_welford_state")
    _check_common(0.0, min_samples, allow_zero_alpha=True)
    out = np.empty_like(x2)
    skipped = _z_kernel(x2, learn, state, 0.0, min_samples, out)
    return _result(out, x), int(skipped)


def ewma_z(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    alpha: float, min_samples: int = 2,
) -> tuple[NDArray[np.float64], int]:
    """Signed z-score against an exponentially weighted mean and variance (weight ``alpha``).

    The weight is ``max(alpha, 1/n)`` for the n-th learned value, so the first ``1/alpha``
    values give the exact (population) mean and variance. Otherwise as :func:`welford_z`.
    """
    x2 = _check_stream(x, learn, state, BASE, "new_ewma_state")
    _check_common(alpha, min_samples, allow_zero_alpha=False)
    out = np.empty_like(x2)
    skipped = _z_kernel(x2, learn, state, float(alpha), min_samples, out)
    return _result(out, x), int(skipped)


def cusum(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    k: float, alpha: float, min_samples: int = 2, limit: float = math.inf,
) -> tuple[NDArray[np.float64], int]:
    """Two-sided tabular CUSUM of z-scores against a learned baseline.

    ``S+ = max(0, S+ + z - k)`` and ``S- = max(0, S- - z - k)`` in sigma units, where ``z`` is
    the value standardised by the baseline before it (self-starting CUSUM). ``alpha == 0`` uses a
    Welford baseline, ``0 < alpha < 1`` an EWMA one. The output is ``S+`` where ``S+ >= S-`` and
    ``-S-`` otherwise, so its sign says the direction of the shift. The sums are kept at most
    ``limit`` (after the row's output), which bounds how long they take to fall back (about
    ``limit / k`` values) once a long fault is over; the output itself can exceed ``limit`` by
    the row's own ``z - k``. This recursion is also Page-Hinkley's ``m_t - min m_t``.
    """
    x2 = _check_stream(x, learn, state, BASE + 2, "new_cusum_state")
    _check_common(alpha, min_samples, allow_zero_alpha=True)
    if not (math.isfinite(k) and k >= 0.0):
        raise ValueError(f"k (slack, sigma units) must be finite and >= 0; got {k}")
    _check_limit(limit)
    out = np.empty_like(x2)
    skipped = _cusum_kernel(x2, learn, state, float(k), float(limit), float(alpha), min_samples,
                            out)
    return _result(out, x), int(skipped)


def ewma_chart(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    lam: float, alpha: float, min_samples: int = 2,
) -> tuple[NDArray[np.float64], int]:
    """EWMA control statistic in units of its own sigma (Montgomery's exact limits).

    ``E_t = lam z_t + (1 - lam) E_{t-1}`` over the z-scores against the learned baseline
    (``alpha`` as in :func:`cusum`), reported as ``E_t / sqrt(lam/(2-lam) (1-(1-lam)^(2t)))``,
    where t counts values since the baseline reached ``min_samples``.
    """
    x2 = _check_stream(x, learn, state, BASE + 2, "new_ewma_chart_state")
    _check_common(alpha, min_samples, allow_zero_alpha=True)
    if not (0.0 < lam <= 1.0):
        raise ValueError(f"lam (EWMA weight of the chart) must be in (0, 1]; got {lam}")
    out = np.empty_like(x2)
    skipped = _ewma_chart_kernel(x2, learn, state, float(lam), float(alpha), min_samples, out)
    return _result(out, x), int(skipped)


def page_hinkley(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    delta: float, alpha: float = 0.0, min_samples: int = 2, limit: float = math.inf,
) -> tuple[NDArray[np.float64], int]:
    """Two-sided Page-Hinkley statistic of z-scores against a learned baseline.

    Page-Hinkley accumulates ``m_t = sum(z_s - delta)`` and reports ``m_t - min_{s<=t} m_s``
    (and the mirror image for decreases). That difference obeys exactly the CUSUM recursion
    ``P_t = max(0, P_{t-1} + z_t - delta)``, which is what is stored: it keeps the state bounded
    instead of letting ``m_t`` drift by ``-delta`` per value until it loses precision; ``limit``
    clips it as in :func:`cusum` (the running extreme follows ``m_t`` within ``limit``). Defaults
    to the classic all-time (Welford, ``alpha = 0``) reference mean. State from
    :func:`new_page_hinkley_state`; output signed as in :func:`cusum`.
    """
    if not (math.isfinite(delta) and delta >= 0.0):
        raise ValueError(f"delta (tolerated drift, sigma units) must be finite, >= 0; got {delta}")
    x2 = _check_stream(x, learn, state, BASE + 2, "new_page_hinkley_state")
    _check_common(alpha, min_samples, allow_zero_alpha=True)
    _check_limit(limit)
    out = np.empty_like(x2)
    skipped = _cusum_kernel(x2, learn, state, float(delta), float(limit), float(alpha),
                            min_samples, out)
    return _result(out, x), int(skipped)
