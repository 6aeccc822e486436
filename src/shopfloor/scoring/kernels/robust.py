"""Robust z-score from a streaming median and MAD, and a stuck-sensor (flat-line) statistic.

Same conventions as :mod:`shopfloor.scoring.kernels.stats`: rows in time order, prequential (score
with the state before the row, then learn it if ``learn[i]``), non-finite values skipped (NaN out)
and counted, state in a small float64 array updated in place, bit-identical across batch splits.

Why stochastic approximation for the median and MAD
---------------------------------------------------
An exact streaming median needs memory that grows with the stream (or a window buffer); on an
edge device with many signals we want O(1) per signal. The median ``m`` is the root of
``P(X > m) - P(X < m) = 0``; the Robbins-Monro recursion ``m += g_n c s sign(x - m)`` finds it,
with ``s`` the current spread (``1.4826 × MAD``, a sigma estimate) so that the step scales with
the data (the estimator is equivariant under ``x -> a x + b``) and with ``c = sqrt(pi/2)``, the
optimal Robbins-Monro constant ``1 / (2 f(m))`` for Gaussian data in sigma units. The MAD is the
median of ``|x - m|``; because quantiles commute with monotone maps it is tracked on the log
scale, ``mad *= (1 + g_n c')^{±1}``, with ``c' = 1.166`` the matching constant for ``log|Z|``
(density 0.4287 at its median). Steps multiply rather than add, so the MAD never goes negative
and needs no scale of its own.

Convergence: with gains ``g_n = 1/n`` (used while ``1/n > alpha``) the recursions satisfy the
Robbins-Monro conditions (sum g = inf, sum g² < inf) and converge to the median and MAD at the
rate of the sample median. Once ``g_n = alpha`` they become trackers with a memory of roughly
``1/alpha`` values and stationary jitter of about ``sqrt(0.63 alpha)`` sigma for the median and
``sqrt(0.58 alpha)`` (relative) for the MAD, e.g. 2.5 % for ``alpha = 0.001``. An outlier moves
either estimate by one step whatever its size (bounded influence), which is the point of a
robust baseline. Limitation: if more than half of the values equal the median (a coarsely
quantised signal) the true MAD is 0 and the robust z saturates; use the z-score there.

The flat-line statistic counts how many times in a row a value has exactly repeated and scores
the run by its surprise ``-ln P(run) = run × -ln p`` in nats, where ``p`` is the learned
probability that a value repeats its predecessor. A threshold ``h`` then means a false-alarm
rate of about ``e^-h`` per value, whatever the sensor's resolution.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import step_kernel, strict_kernel
from shopfloor.scoring.kernels.stats import (
    SD_FLOOR_ABS,
    SD_FLOOR_REL,
    _check_common,
    _check_d,
    _check_stream,
    _result,
)

__all__ = ["MAD_TO_SD", "flatline", "flatline_step", "new_flatline_state", "new_robust_state",
           "robust_z", "sigma_of_surprise", "sigma_of_surprise_one"]

#: 1 / Phi^-1(3/4): the MAD of a normal distribution times this is its sigma.
MAD_TO_SD = 1.482602218505602
_C_MEDIAN = math.sqrt(math.pi / 2.0)
_C_LOG_MAD = 1.166
_LN2 = math.log(2.0)
_LN_2PI = math.log(2.0 * math.pi)


@strict_kernel
def _robust_kernel(
    x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
    alpha: float, min_samples: int, out: NDArray[np.float64],
) -> int:
    skipped = 0
    for j in range(x.shape[1]):  # column by column, state in locals (see kernels.stats)
        n, med, mad = st[j, 0], st[j, 1], st[j, 2]
        for i in range(x.shape[0]):
            v = x[i, j]
            if not math.isfinite(v):
                out[i, j] = np.nan
                skipped += 1
                continue
            if n >= min_samples:
                sd = max(MAD_TO_SD * mad, SD_FLOOR_REL * abs(med), SD_FLOOR_ABS)
                out[i, j] = (v - med) / sd
            else:
                out[i, j] = 0.0
            if not learn[i]:
                continue
            n += 1.0
            dev = v - med
            if n == 1.0:
                med = v
            elif mad > 0.0:
                g = max(alpha, 1.0 / n)
                step = g * _C_MEDIAN * MAD_TO_SD * mad
                if dev > 0.0:
                    med += step
                elif dev < 0.0:
                    med -= step
                ratio = 1.0 + g * _C_LOG_MAD
                if abs(dev) > mad:
                    mad *= ratio
                elif abs(dev) < mad:
                    mad /= ratio
            elif dev != 0.0:
                # First spread seen (the signal was constant so far): the exact median and MAD
                # of the two distinct values, a start the recursion then refines.
                med += 0.5 * dev
                mad = 0.5 * abs(dev)
        st[j, 0], st[j, 1], st[j, 2] = n, med, mad
    return skipped


@step_kernel
def flatline_step(
    n: float, last: float, p: float, run: float, v: float, learn: bool, alpha: float,
    min_samples: int,
) -> tuple[float, float, float, float, float]:
    """The surprise of one finite value's run of repeats; returns (surprise, n, last, p, run).
    The one step of :func:`flatline` and of the signal banks."""
    repeat = v == last  # False while ``last`` still holds its initial NaN
    run = run + 1.0 if repeat else 0.0
    surprise = 0.0
    if n >= min_samples and run > 0.0:
        # A repeat never seen in the effective memory still gets probability
        # 1/(2 n_eff) rather than 0, so one repeat scores high but finite.
        p_eff = max(p, 0.5 / min(n, 1.0 / alpha))
        if p_eff < 1.0:
            surprise = -run * math.log(p_eff)
    if learn:
        n += 1.0
        p += max(alpha, 1.0 / n) * ((1.0 if repeat else 0.0) - p)
    return surprise, n, v, p, run


@step_kernel
def sigma_of_surprise_one(surprise: float) -> float:
    """The two-sided normal quantile of tail probability ``exp(-surprise)``, in sigma units
    (see :func:`sigma_of_surprise`)."""
    if math.isnan(surprise):
        return np.nan
    big = 2.0 * (surprise + _LN2)
    inner = big - math.log(max(big, 1.0)) - _LN_2PI
    return math.sqrt(max(inner, 0.0))


@strict_kernel
def _sigma_kernel(surprise: NDArray[np.float64], out: NDArray[np.float64]) -> None:
    for i in range(surprise.shape[0]):
        out[i] = sigma_of_surprise_one(surprise[i])


def sigma_of_surprise(surprise: NDArray[np.float64]) -> NDArray[np.float64]:
    """The two-sided normal quantile of tail probability ``exp(-surprise)``, in sigma units.

    The asymptotic inverse of the normal tail, ``z = sqrt(L - ln L - ln 2 pi)`` with
    ``L = -2 ln(P / 2)``, is within 1 % of the exact quantile for P below 0.05 (z above 1.9),
    where a threshold sits; smaller surprises map to 0.0 or a little below the exact value.
    NaN stays NaN. Compiled, so the per-signal path and the banks agree to the bit.
    """
    s = np.ascontiguousarray(surprise, dtype=np.float64)
    out = np.empty_like(s)
    _sigma_kernel(s.reshape(-1), out.reshape(-1))
    return out


@strict_kernel
def _flatline_kernel(
    x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
    alpha: float, min_samples: int, out: NDArray[np.float64],
) -> int:
    skipped = 0
    for j in range(x.shape[1]):
        n, last, p, run = st[j, 0], st[j, 1], st[j, 2], st[j, 3]
        for i in range(x.shape[0]):
            v = x[i, j]
            if not math.isfinite(v):
                out[i, j] = np.nan
                skipped += 1
                continue
            out[i, j], n, last, p, run = flatline_step(n, last, p, run, v, learn[i], alpha,
                                                       min_samples)
        st[j, 0], st[j, 1], st[j, 2], st[j, 3] = n, last, p, run
    return skipped


def new_robust_state(d: int) -> NDArray[np.float64]:
    """Initial robust-z state for ``d`` signals: columns count, median, MAD."""
    return np.zeros((_check_d(d), 3), dtype=np.float64)


def new_flatline_state(d: int) -> NDArray[np.float64]:
    """Initial flat-line state: columns count, last value, repeat probability, run length."""
    st = np.zeros((_check_d(d), 4), dtype=np.float64)
    st[:, 1] = np.nan
    return st


def robust_z(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    alpha: float, min_samples: int = 2,
) -> tuple[NDArray[np.float64], int]:
    """Signed robust z-score ``(x - median) / (1.4826 MAD)`` from streaming estimates.

    Parameters
    ----------
    x
        Values, shape (n,) or (n, d), float64.
    learn
        Shape (n,) bool: learn row ``i`` after scoring it.
    state
        From :func:`new_robust_state`; updated in place.
    alpha
        Floor of the step gain, in (0, 1): the memory is about ``1/alpha`` values.
    min_samples
        Values to learn before the score is reported (0.0 until then), at least 2.

    Returns
    -------
    z, skipped
        Robust z with the shape of ``x`` (NaN where ``x`` is not finite) and the count of
        skipped non-finite values.
    """
    x2 = _check_stream(x, learn, state, 3, "new_robust_state")
    _check_common(alpha, min_samples, allow_zero_alpha=False)
    out = np.empty_like(x2)
    skipped = _robust_kernel(x2, learn, state, float(alpha), min_samples, out)
    return _result(out, x), int(skipped)


def flatline(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    alpha: float, min_samples: int = 2,
) -> tuple[NDArray[np.float64], int]:
    """Surprise (nats) of the current run of exactly repeated values; 0.0 when no repeat.

    The repeat probability is an EWMA (weight ``max(alpha, 1/n)``) of "value equals its
    predecessor" over learned values. The run and last value advance on every finite value,
    learned or not, so a run that starts during an alarm still ends when the sensor recovers.
    State from :func:`new_flatline_state`; otherwise as :func:`robust_z`.
    """
    x2 = _check_stream(x, learn, state, 4, "new_flatline_state")
    _check_common(alpha, min_samples, allow_zero_alpha=False)
    out = np.empty_like(x2)
    skipped = _flatline_kernel(x2, learn, state, float(alpha), min_samples, out)
    return _result(out, x), int(skipped)
