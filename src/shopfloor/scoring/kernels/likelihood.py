"""Anomaly likelihood: how improbable the recent scores are against the long-run ones.

After Ahmad, Lavin, Purdy and Agha ("Unsupervised real-time anomaly detection for streaming
data", Neurocomputing 2017), the method behind Numenta's NAB entry. A score on its own says how
far a sample is from normal *now*; a score that stays high for an hour is no news after the
first minute. The likelihood compares the mean of the last :data:`SHORT` scores with the
long-run distribution of that same short mean (an exponentially weighted mean and variance with
a memory of ``window`` samples) and reports the Gaussian probability that the short mean is
*not* that high: near 1 at the onset of an anomaly, falling back as the anomaly persists (the
long run absorbs it) or is adopted.

Scores enter in units of the threshold in force (``score / threshold``, clipped to
[0, :data:`U_MAX`]), so the likelihood means the same for every detector kind, and one extreme
score cannot push the long-run statistics anywhere they cannot return from. A non-finite score
gives NaN and changes nothing; a score whose threshold is not finite yet counts as 0.

State, one float64 array of :data:`N_STATE` (updated in place, bit-exact across batch splits):
count, long-run mean, long-run variance, the ring position, then the ring of the last
:data:`SHORT` inputs. Until :data:`MIN_COUNT` inputs have been seen the output is 0.5
("no opinion").
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import step_kernel, strict_kernel

__all__ = ["MIN_COUNT", "N_STATE", "SHORT", "SIGMA_MIN", "U_MAX", "likelihood",
           "likelihood_step", "new_state"]

#: Samples in the short-term mean (Numenta's W' = 10).
SHORT = 10
#: Inputs before the first opinion: the short mean and a first long-run spread must exist.
MIN_COUNT = 100
#: Scores are clipped at ten thresholds: beyond that, more evidence changes nothing.
U_MAX = 10.0
#: Floor of the long-run spread of the short mean, in thresholds. A score stream that has been
#: near-constant (a detector that reports 0.0) would otherwise make any wiggle "certain". The
#: value gives a short window sitting at the threshold (u = 1 throughout) against a quiet long
#: run (mean near 0) the improbability Numenta alarms at, 1e-5 (z = 4.26): 1 / 4.26. A smaller
#: floor saturated the likelihood at exactly 1.0 on every onset, which then ranks nothing.
SIGMA_MIN = 1.0 / 4.26
_N, _MEAN, _VAR, _POS = range(4)
N_STATE = 4 + SHORT


def new_state() -> NDArray[np.float64]:
    """State of a likelihood that has seen nothing."""
    return np.zeros(N_STATE, dtype=np.float64)


@step_kernel
def likelihood_step(s: float, h: float, st: NDArray[np.float64], alpha: float) -> float:
    """The likelihood of one finite score ``s`` judged against threshold ``h``, learning it:
    the one step of :func:`likelihood` and of the signal banks."""
    u = 0.0
    if math.isfinite(h) and h > 0.0:
        u = min(max(s / h, 0.0), U_MAX)
    pos = int(st[_POS])
    st[4 + pos] = u
    st[_POS] = (pos + 1) % SHORT
    n = st[_N] + 1.0
    st[_N] = n
    short = 0.0
    for k in range(SHORT):
        short += st[4 + k]
    short /= min(n, SHORT)
    mean, var = st[_MEAN], st[_VAR]
    out = 0.5
    if n > MIN_COUNT:
        sd = max(math.sqrt(var), SIGMA_MIN)
        out = 0.5 * math.erfc(-(short - mean) / (sd * math.sqrt(2.0)))
    # Learn the short mean's long-run distribution after judging it (exact running mean
    # and variance until the window fills, then exponentially weighted).
    a = max(alpha, 1.0 / n)
    diff = short - mean
    incr = a * diff
    st[_MEAN] = mean + incr
    st[_VAR] = (1.0 - a) * (var + diff * incr)
    return out


@strict_kernel
def _kernel(score: NDArray[np.float64], threshold: NDArray[np.float64],
            st: NDArray[np.float64], alpha: float, out: NDArray[np.float64]) -> None:
    for i in range(score.shape[0]):
        s = score[i]
        if not math.isfinite(s):
            out[i] = np.nan
            continue
        out[i] = likelihood_step(s, threshold[i], st, alpha)


def likelihood(score: NDArray[np.float64], threshold: NDArray[np.float64],
               state: NDArray[np.float64], *, window: float) -> NDArray[np.float64]:
    """Likelihood per score (shape (n,)), updating ``state`` in place.

    ``threshold`` (n,) is the threshold each score was judged against; ``window`` the long-run
    memory in samples (> SHORT).
    """
    s = np.ascontiguousarray(score, dtype=np.float64)
    h = np.ascontiguousarray(threshold, dtype=np.float64)
    if s.ndim != 1 or h.shape != s.shape:
        raise ValueError(f"score and threshold must have one shape (n,); got {s.shape}, {h.shape}")
    if (not isinstance(state, np.ndarray) or state.dtype != np.float64
            or state.shape != (N_STATE,) or not state.flags.writeable):
        raise ValueError(f"state must be a writeable float64 array of shape ({N_STATE},); "
                         "create it with new_state()")
    if not window > SHORT:
        raise ValueError(f"window must be more than {SHORT} samples; got {window}")
    out = np.empty_like(s)
    _kernel(s, h, state, 1.0 / float(window), out)
    return out
