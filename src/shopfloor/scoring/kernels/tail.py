"""Peaks over threshold: a threshold for a false-alarm rate from a generalised Pareto tail.

After Siffer, Fouque, Termier and Largouët ("Anomaly Detection in Streams with Extreme Value
Theory", KDD 2017, SPOT). The first ``calibration`` learned scores that are not exactly 0.0 (a
detector's "no opinion" while it warms up) are kept; their ``level``
quantile is the initial threshold ``t`` and the scores above it are the first excesses. A
generalised Pareto distribution (scale sigma, shape gamma) is fitted to the excesses, and the
threshold for a rate ``q`` is

    z_q = t + (sigma / gamma) ((q n / N_t)^(-gamma) - 1)       (t - sigma ln(q n / N_t) at 0)

with ``n`` scores learned, ``N_t`` of them above ``t``. The threshold in force falls at once
when the fit says so but rises by at most a factor two per ``memory`` learned scores (see
``_update``). Online, a learned score above ``t``
adds an excess (a reservoir keeps ``calibration`` of the excesses in memory, in the
calibration buffer's place) and refits; ``n`` and ``N_t`` forget
exponentially with a memory of ``memory`` learned scores, so the exceedance fraction follows the
signal. Exceedances that the alarm withholds from learning still count, winsorised at the
threshold in force: a tail that never learns its own top would fit a shorter tail each time and
drift down.

Why probability-weighted moments (Hosking and Wallis, Technometrics 1987) and not SPOT's
maximum likelihood (Grimshaw's root search): with 20-60 excesses PWM has a smaller error in the
far quantile for the shapes sensor scores have (-0.5 < gamma < 0.5), is closed-form (no root
search that can fail), and is exact to replay. The shape is clipped to [-0.5, 0.5]:
beyond it the estimate is mostly noise at these sample sizes.

The state is one float64 array of :data:`N_HEAD` scalars and the calibration buffer, which
becomes the reservoir of excesses once calibrated (``N_HEAD + calibration`` values: 1.7 KiB for the
default 200), updated in place.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import step_kernel, strict_kernel

__all__ = ["CALIBRATED_AT", "MIN_EXCESSES", "N_HEAD", "THRESHOLD_AT", "gpd_pwm",
           "new_tail_state", "tail_learn", "tail_threshold"]

#: Fewer excesses than this at the end of calibration (a score that is nearly constant):
#: calibration starts again instead of fitting noise.
MIN_EXCESSES = 10
_GAMMA_MAX = 0.5
WINSOR = 50.0
#: Calibration scores above FENCE times the level quantile are left out as glitches: real
#: tails stay far inside it (the 1e-3 quantile of |t(3)| scores is 5.5 times their 0.9
#: quantile, of exponential ones 3 times).
FENCE = 10.0
_SHRINK = 20.0
# Scalars: scores collected for calibration, t, n, N_t, sigma, gamma, z_q, the reservoir's
# random state, excesses kept, skipped scores, calibrated (0/1).
_COLLECTED, _T, _N, _NT, _SIGMA, _GAMMA, _Z, _RNG, _COUNT, _SKIPPED, _READY = range(11)
N_HEAD = 11
#: Where the threshold in force and the calibrated flag sit in the state.
THRESHOLD_AT, CALIBRATED_AT = _Z, _READY


def new_tail_state(calibration: int) -> NDArray[np.float64]:
    """State of a tail threshold that has learned nothing."""
    st = np.zeros(N_HEAD + calibration, dtype=np.float64)
    st[_Z] = np.inf
    return st


@strict_kernel
def gpd_pwm(excess: NDArray[np.float64]) -> tuple[float, float]:
    """(sigma, gamma) of a generalised Pareto fit by probability-weighted moments."""
    y = np.sort(excess)
    m = y.shape[0]
    # Winsorised at WINSOR times the median excess: one wild score (a glitch while everything
    # is learned) would otherwise make the fitted tail and the threshold as wild as itself.
    # Far out for real tails: an exponential tail never reaches it (e^-35), the heaviest shape
    # kept (gamma 0.5) on 0.1 % of its excesses, which fits 0.4 as 0.37.
    cap = WINSOR * y[m // 2]
    for i in range(m):
        y[i] = min(y[i], cap)
    a0 = 0.0
    a1 = 0.0
    for i in range(m):
        a0 += y[i]
        a1 += (1.0 - (i + 0.65) / m) * y[i]  # plotting position (i + 1 - 0.35) / m
    a0 /= m
    a1 /= m
    d = a0 - 2.0 * a1
    if not d > 0.0 or y[0] == y[m - 1]:  # equal excesses, or degenerate: exponential tail
        return max(float(a0), 1e-300), 0.0
    gamma = 2.0 - a0 / d
    # Shrunk towards the exponential tail (gamma 0) by m / (m + SHRINK): with 20 excesses the
    # shape's standard error is ~0.25, and a short-tailed fit by chance puts the threshold far
    # too low. Measured rate / target at 1e-3 from 200 scores (40 seeds, mean): |N(0,1)|
    # 3.9 without shrinkage, 2.0 with it; exponential 2.2 -> 1.6; |t(3)| 2.9 -> 3.8 (heavy
    # tails pay: the prior says lighter). Online over 60,000 scores: 1.14-1.33 for all five.
    gamma = min(max(gamma * m / (m + _SHRINK), -_GAMMA_MAX), _GAMMA_MAX)
    # The scale from the first moment given the (clipped) shape: E[Y] = sigma / (1 - gamma).
    sigma = max(float(a0 * (1.0 - gamma)), 1e-300)
    return sigma, float(gamma)


@strict_kernel
def _quantile(t: float, sigma: float, gamma: float, q: float, n: float, nt: float) -> float:
    r = q * n / nt
    if abs(gamma) < 1e-9:
        return t - sigma * math.log(r)
    return float(t + sigma / gamma * (r ** (-gamma) - 1.0))


@strict_kernel
def _refit(st: NDArray[np.float64], cal: int) -> None:
    count = int(st[_COUNT])
    sigma, gamma = gpd_pwm(st[N_HEAD : N_HEAD + count])
    st[_SIGMA] = sigma
    st[_GAMMA] = gamma


@strict_kernel
def _update(st: NDArray[np.float64], q: float, rise: float) -> None:
    """The threshold from the current fit, rising at most by the factor ``rise`` per learned
    score (it falls at once). A fault that develops slowly feeds the tail scores just under the
    threshold; refitting on each would let the threshold climb after the fault and learn it
    away - a tool wearing at 0.005 sigma a sample was, within 6,000 samples. At most a doubling
    per ``memory`` learned scores (the memory of the exceedance fraction, 10 / q) keeps a
    genuine change of the scores' scale learnable within about as long as the fraction itself
    takes to follow, while a fault developing over a few hundred samples moves it by a few per
    cent."""
    z = _quantile(st[_T], st[_SIGMA], st[_GAMMA], q, st[_N], st[_NT])
    if z > st[_Z] and st[_Z] > 0.0:
        z = min(z, st[_Z] * rise)
    st[_Z] = z


@strict_kernel
def _draw(st: NDArray[np.float64]) -> float:
    """The next number in [0, 1) of a 32-bit LCG (Numerical Recipes) kept in the state, so the
    reservoir's choices replay exactly."""
    x = (1664525 * int(st[_RNG]) + 1013904223) % 4294967296
    st[_RNG] = x
    return x / 4294967296.0


@strict_kernel
def _push(st: NDArray[np.float64], cal: int, excess: float) -> None:
    count = int(st[_COUNT])
    if count < cal:
        st[N_HEAD + count] = excess
        st[_COUNT] = count + 1.0
        return
    # A reservoir over the excesses in memory (N_t of them, forgetting as N_t does): each new
    # one replaces a random kept one with probability cal / N_t. A FIFO ring of the latest
    # excesses would let a slowly developing fault - a ramp of scores just under the
    # threshold - fill the ring within a minute and drag the threshold up after it.
    if _draw(st) * max(st[_NT], cal) < cal:
        st[N_HEAD + int(_draw(st) * cal)] = excess


@strict_kernel
def _calibrate(st: NDArray[np.float64], cal: int, level: float, q: float) -> None:
    buf = np.sort(st[N_HEAD : N_HEAD + cal])
    t = buf[min(int(level * cal), cal - 1)]
    # Scores beyond FENCE times t are glitches, not the healthy tail being calibrated (a
    # 1e14 learned in the warm-up): they are left out, from the excesses and from the count.
    fence = FENCE * t if t > 0.0 else np.inf
    kept = 0
    m = 0
    for v in buf:
        if v <= fence:
            kept += 1
            if v > t:
                m += 1
    st[_COLLECTED] = 0.0
    if m < MIN_EXCESSES:
        return  # too few distinct large scores: collect again
    st[_T] = t
    st[_N] = kept
    st[_NT] = m
    st[_COUNT] = 0.0
    # The buffer becomes the reservoir: the excesses first, in place of the scores.
    for v in buf[kept - m : kept]:
        _push(st, cal, v - t)
    st[_READY] = 1.0
    _refit(st, cal)
    st[_Z] = _quantile(t, st[_SIGMA], st[_GAMMA], q, st[_N], st[_NT])


@step_kernel
def tail_learn(st: NDArray[np.float64], s: float, learn: bool, held: bool, cal: int, q: float,
               level: float, keep: float, skip: float, rise: float) -> None:
    """Learn one finite score (``held``: a withheld exceedance that still counts): the one
    step of :func:`tail_threshold` and of the signal banks
    (:mod:`shopfloor.scoring.kernels.bank`)."""
    if not (learn or held):
        return
    if st[_SKIPPED] < skip:  # the detector's own warm-up, where it reports 0.0
        st[_SKIPPED] += 1.0
        return
    if st[_READY] == 0.0:
        # A score of exactly 0.0 is a detector's "no opinion" (its own warm-up, a re-warm
        # after an adoption, a constant warm-up): it says nothing about the tail.
        if learn and s != 0.0:
            st[N_HEAD + int(st[_COLLECTED])] = s
            st[_COLLECTED] += 1.0
            if st[_COLLECTED] >= cal:
                _calibrate(st, cal, level, q)
        return
    if held:
        s = min(s, st[_Z])  # winsorised at the threshold in force (see module docstring)
    st[_N] = st[_N] * keep + 1.0
    if s > st[_T]:
        st[_NT] = st[_NT] * keep + 1.0
        _push(st, cal, s - st[_T])
        _refit(st, cal)
    else:
        st[_NT] *= keep
    _update(st, q, rise)


@strict_kernel
def _tail_kernel(
    score: NDArray[np.float64], learn: NDArray[np.bool_], held: NDArray[np.bool_],
    st: NDArray[np.float64], cal: int, q: float, level: float, keep: float, skip: float,
    rise: float, out: NDArray[np.float64],
) -> None:
    for i in range(score.shape[0]):
        s = score[i]
        if not math.isfinite(s):
            out[i] = np.inf  # never exceeds
            continue
        out[i] = st[_Z]
        tail_learn(st, s, learn[i], held[i], cal, q, level, keep, skip, rise)


def tail_threshold(
    score: NDArray[np.float64], learn: NDArray[np.bool_], held: NDArray[np.bool_] | None,
    state: NDArray[np.float64], *, rate: float, calibration: int, level: float, memory: float,
    skip: int,
) -> NDArray[np.float64]:
    """The threshold in force before each score (n,), learning as ``learn`` says.

    ``held`` marks exceedances withheld from learning that still count in the tail. The
    threshold is +inf until calibrated.
    """
    n = score.shape[0]
    if state.shape != (N_HEAD + calibration,) or state.dtype != np.float64:
        raise ValueError(f"tail state must be float64 of shape ({N_HEAD + calibration},) "
                         f"for calibration {calibration}; got {state.dtype} {state.shape}")
    if not state.flags.writeable or not state.flags.c_contiguous:
        raise ValueError("tail state is updated in place: it must be C-contiguous, writeable")
    h = np.zeros(n, dtype=np.bool_) if held is None else held
    out = np.empty(n, dtype=np.float64)
    _tail_kernel(np.ascontiguousarray(score), np.ascontiguousarray(learn), np.ascontiguousarray(h),
                 state, int(calibration), float(rate), float(level), 0.5 ** (1.0 / memory),
                 float(skip), 2.0 ** (1.0 / memory), out)
    return out
