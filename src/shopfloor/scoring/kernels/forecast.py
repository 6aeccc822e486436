"""One-step-ahead forecast residuals: what control charts chart on autocorrelated process data.

Shewhart, EWMA and CUSUM limits assume independent samples. One-second process data (a
pressure, a temperature, a motor current) wanders: in SKAB's healthy training rows an EWMA
chart of the raw values sat over its limit in 41-46 % of rows. The textbook remedy (Montgomery,
*Introduction to Statistical Quality Control*, on autocorrelated data; Alwan and Roberts 1988)
is to chart the errors of a simple forecaster, which are close to independent.

The forecaster is an EWMA level ``L += lam (x - L)``, the optimal one-step predictor for an
ARIMA(0,1,1) process, which covers white noise around a mean (small ``lam``) through a random
walk (``lam = 1``). ``lam`` is chosen per column on the first ``select_after`` learned values
by the smallest sum of squared one-step errors over :data:`GRID`, in parallel, then fixed
(a choice that kept changing would move the residuals' scale under the chart's baseline). Ties
go to the smaller ``lam``, the one closer to a plain mean.

Prequential like every kernel: the residual of row ``i`` is ``x_i`` minus the forecast made
before it; the level learns the row only where ``learn[i]``. While learning is paused (an alarm)
the forecast follows at a tenth of its weight (:data:`HELD_WEIGHT`): a step stays visible
for about ten memories of the forecaster (a few dozen samples for a wandering signal, hundreds
for one that varies around a mean) - long enough to raise an alarm on it - instead of being
tracked away at once, while an alarm whose process settles at any level, the old one or a new
one, still ends: a forecast held still would compare a wandering process with a stale value
for ever (measured: an asset alarm raised as a temperature excursion cooled down stayed on for
the 3,000 rows left of the file). A fault that lasts is the business of the memoryless charts
of raw values (the default z-score), which keep it visible while it lasts. Before
the choice the residual is NaN (the chart skips it, the detector reports 0.0); a non-finite
value gives NaN and changes nothing.

State, shape (d, 2 + 2 G) float64 per column: values learned, the chosen grid index (-1 while
choosing), the G levels, the G sums of squared errors.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import strict_kernel

__all__ = ["GRID", "HELD_WEIGHT", "forecast_residuals", "new_forecast_state"]

#: Candidate level weights: from a near-mean (a memory of ~50 values) to the last value.
GRID = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
_G = len(GRID)
_GRID = np.array(GRID)
_WIDTH = 2 + 2 * _G
#: While learning is paused the chosen level follows at this fraction of its weight.
HELD_WEIGHT = 0.1
#: What the levels learn is clipped to CLIP_SIGMA root-mean-square errors (see ``_clip``).
CLIP_SIGMA = 6.0
CLIP_AFTER = 10.0


def new_forecast_state(d: int) -> NDArray[np.float64]:
    """State of ``d`` forecasters that have learned nothing."""
    st = np.zeros((d, _WIDTH), dtype=np.float64)
    st[:, 1] = -1.0
    return st


@strict_kernel
def _clip(e: float, sse: float, n: float) -> float:
    """A forecast error as learned: clipped to CLIP_SIGMA of the errors so far (from
    CLIP_AFTER of them on), so one wild value cannot throw the level, or the choice of the
    weight, off for hundreds of values. ``sse`` sums the learned errors (clipped) over the
    ``n`` values, so the bound is their root mean square."""
    if n < CLIP_AFTER or sse <= 0.0:
        return e
    reach = CLIP_SIGMA * math.sqrt(sse / n)
    return min(max(e, -reach), reach)


@strict_kernel
def _kernel(x: NDArray[np.float64], learn: NDArray[np.bool_], st: NDArray[np.float64],
            grid: NDArray[np.float64], select_after: int, out: NDArray[np.float64]) -> None:
    g_n = grid.shape[0]
    for j in range(x.shape[1]):
        for i in range(x.shape[0]):
            v = x[i, j]
            chosen = int(st[j, 1])
            if not math.isfinite(v):
                out[i, j] = np.nan
                continue
            out[i, j] = v - st[j, 2 + chosen] if chosen >= 0 else np.nan
            n = st[j, 0]
            if not learn[i]:
                if chosen >= 0:
                    # Paused: the forecast follows at a tenth of its weight (see above).
                    st[j, 2 + chosen] += HELD_WEIGHT * grid[chosen] * _clip(
                        v - st[j, 2 + chosen], st[j, 2 + g_n + chosen], n)
                continue
            if chosen >= 0:
                e = _clip(v - st[j, 2 + chosen], st[j, 2 + g_n + chosen], n)
                st[j, 2 + g_n + chosen] += e * e  # keeps the clipping bound a mean square
                st[j, 2 + chosen] += grid[chosen] * e
            elif n == 0.0:
                for g in range(g_n):
                    st[j, 2 + g] = v
            else:
                for g in range(g_n):
                    e = _clip(v - st[j, 2 + g], st[j, 2 + g_n + g], n)
                    st[j, 2 + g_n + g] += e * e
                    st[j, 2 + g] += grid[g] * e
            st[j, 0] = n + 1.0
            if chosen < 0 and n + 1.0 >= select_after:
                best = 0
                for g in range(1, g_n):
                    if st[j, 2 + g_n + g] < st[j, 2 + g_n + best]:
                        best = g
                st[j, 1] = best


def forecast_residuals(x: NDArray[np.float64], learn: NDArray[np.bool_],
                       state: NDArray[np.float64], *, select_after: int) -> NDArray[np.float64]:
    """Residuals (n, d) of each row against the forecast before it; ``state`` in place."""
    if state.shape != (x.shape[1], _WIDTH) or state.dtype != np.float64:
        raise ValueError(f"forecast state must be float64 of shape ({x.shape[1]}, {_WIDTH}); "
                         f"got {state.dtype} {state.shape}; create it with new_forecast_state(d)")
    if not (state.flags.c_contiguous and state.flags.writeable):
        raise ValueError("forecast state is updated in place: it must be C-contiguous, writeable")
    if select_after < 2:
        raise ValueError(f"select_after must be >= 2; got {select_after}")
    out = np.empty_like(x)
    _kernel(np.ascontiguousarray(x), np.ascontiguousarray(learn), state, _GRID,
            int(select_after), out)
    return out
