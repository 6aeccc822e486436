"""Western Electric run rules 1-4 over z-scores against a learned baseline.

Conventions as in :mod:`shopfloor.scoring.kernels.stats` (prequential, NaN skipped and counted,
state in place, bit-identical across batch splits). The rule windows are short bit histories kept in
the state as small exact integers in float64 columns, so they checkpoint with the baseline. Like the
other charts' memories they advance on every finite value, learned or not.

A rule fires on the value that completes its pattern, and only if that value is itself part of
it (beyond the limit on that side): rule 2 needs the current value beyond 2 sigma and at least
one of the two before it beyond 2 sigma on the same side; rule 3 the current value beyond
1 sigma and at least three of the four before it; rule 4 the current value and the seven before
it on the same side of the centre line (a value exactly on the line breaks the run).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import strict_kernel
from shopfloor.scoring.kernels.stats import (
    BASE,
    _check_common,
    _check_d,
    _check_stream,
    _learn,
    _result,
    _sd,
)

__all__ = ["RULE_COLUMNS", "new_rules_state", "western_electric", "worst_column"]

#: State columns after the baseline: last-2 flags beyond +2σ and -2σ, last-4 flags beyond +1σ
#: and -1σ (bit 0 = newest), signed run length on one side of the centre line.
RULE_COLUMNS = 5


@strict_kernel
def _push(history: float, flag: bool, keep: int) -> float:
    """Shift ``flag`` into a bit history kept as an exact integer in a float64."""
    return float(((int(history) << 1) | (1 if flag else 0)) & keep)


@strict_kernel
def _popcount(v: int) -> int:
    c = 0
    while v:
        c += v & 1
        v >>= 1
    return c


@strict_kernel
def _rules_kernel(
    x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
    alpha: float, min_samples: int, z_out: NDArray[np.float64], rules_out: NDArray[np.uint8],
) -> int:
    skipped = 0
    for j in range(x.shape[1]):  # column by column, state in locals (see kernels.stats)
        n, mean, s = st[j, 0], st[j, 1], st[j, 2]
        up2, dn2, up1, dn1, run = st[j, 3], st[j, 4], st[j, 5], st[j, 6], st[j, 7]
        for i in range(x.shape[0]):
            v = x[i, j]
            rules_out[i, j] = 0
            if not math.isfinite(v):
                z_out[i, j] = np.nan
                skipped += 1
                continue
            if n >= min_samples:
                z = (v - mean) / _sd(n, mean, s, alpha)
                z_out[i, j] = z
                bits = 0
                if abs(z) > 3.0:
                    bits |= 1
                if (z > 2.0 and up2 != 0.0) or (z < -2.0 and dn2 != 0.0):
                    bits |= 2
                if (z > 1.0 and _popcount(int(up1)) >= 3) or (
                    z < -1.0 and _popcount(int(dn1)) >= 3
                ):
                    bits |= 4
                up2 = _push(up2, z > 2.0, 0b11)
                dn2 = _push(dn2, z < -2.0, 0b11)
                up1 = _push(up1, z > 1.0, 0b1111)
                dn1 = _push(dn1, z < -1.0, 0b1111)
                if z > 0.0:
                    run = run + 1.0 if run > 0.0 else 1.0
                elif z < 0.0:
                    run = run - 1.0 if run < 0.0 else -1.0
                else:
                    run = 0.0
                if abs(run) >= 8.0:
                    bits |= 8
                rules_out[i, j] = bits
            else:
                z_out[i, j] = 0.0
            if learn[i]:
                n, mean, s = _learn(n, mean, s, v, alpha)
        st[j, 0], st[j, 1], st[j, 2] = n, mean, s
        st[j, 3], st[j, 4], st[j, 5], st[j, 6], st[j, 7] = up2, dn2, up1, dn1, run
    return skipped


@strict_kernel
def _severity(z: float, bits: int) -> float:
    sev = float(_popcount(bits & 0b1110))
    if bits & 1:
        sev += abs(z) / 3.0
    return sev


@strict_kernel
def _worst_column(
    z: NDArray[np.float64], bits: NDArray[np.uint8], score: NDArray[np.float64],
    top: NDArray[np.int64], rules: NDArray[np.uint8],
) -> None:
    for i in range(z.shape[0]):
        best, arg = 0.0, -1
        for j in range(z.shape[1]):
            sev = _severity(z[i, j], int(bits[i, j]))
            if sev > best:
                best, arg = sev, j
        score[i] = best
        top[i] = arg
        rules[i] = bits[i, arg] if arg >= 0 else 0


def worst_column(
    z: NDArray[np.float64], bits: NDArray[np.uint8]
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.uint8]]:
    """Per row, the severity of the most severe column, that column (-1 if no rule fired)
    and its rule bits, from the (n, d) outputs of :func:`western_electric`.

    The severity of a value is 0 if no rule fired, else the number of rules that fired, with
    rule 1 counted as ``|z| / 3`` (which exceeds 1) so that a larger outlier is more severe.
    """
    if z.dtype != np.float64 or bits.dtype != np.uint8 or z.ndim != 2 or z.shape != bits.shape:
        raise TypeError("z (float64) and bits (uint8) must be 2-D arrays of the same shape; "
                        "pass what western_electric returned")
    n = z.shape[0]
    score = np.empty(n, dtype=np.float64)
    top = np.empty(n, dtype=np.int64)
    rules = np.empty(n, dtype=np.uint8)
    _worst_column(np.ascontiguousarray(z), np.ascontiguousarray(bits), score, top, rules)
    return score, top, rules


def new_rules_state(d: int) -> NDArray[np.float64]:
    """Initial Western Electric state for ``d`` signals: baseline columns, then rule windows."""
    return np.zeros((_check_d(d), BASE + RULE_COLUMNS), dtype=np.float64)


def western_electric(
    x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64], *,
    alpha: float, min_samples: int = 2,
) -> tuple[NDArray[np.float64], NDArray[np.uint8], int]:
    """Z-scores and Western Electric rule bits for each value.

    Parameters
    ----------
    x
        Values, shape (n,) or (n, d), float64.
    learn
        Shape (n,) bool: learn row ``i`` after scoring it.
    state
        From :func:`new_rules_state`; updated in place.
    alpha
        Baseline: 0 for Welford (all-time mean and sample std), in (0, 1) for an EWMA.
    min_samples
        Values to learn before rules are evaluated (z 0.0 and no bits until then), >= 2.

    Returns
    -------
    z, rules, skipped
        Signed z-scores, uint8 rule bits (bit k-1 set = rule k fired) with the shape of ``x``,
        and the count of skipped non-finite values (their z is NaN, their bits 0).
    """
    x2 = _check_stream(x, learn, state, BASE + RULE_COLUMNS, "new_rules_state")
    _check_common(alpha, min_samples, allow_zero_alpha=True)
    z = np.empty_like(x2)
    rules = np.empty(x2.shape, dtype=np.uint8)
    skipped = _rules_kernel(x2, learn, state, float(alpha), min_samples, z, rules)
    if x.ndim == 1:
        return _result(z, x), rules.reshape(-1), int(skipped)
    return z, rules, int(skipped)
