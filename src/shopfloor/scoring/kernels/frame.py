"""Time-domain statistics of vibration frames in one pass over the samples.

A vibration analyst reads the AC part of a frame: the mean (DC) is reported on its own, and
every other statistic is of the signal with its mean removed, so a sensor's bias or a slowly
drifting offset does not move the rms or the kurtosis.

========================  ==================================================================
column                    definition over the finite samples ``x`` of a frame, ``m = mean(x)``
========================  ==================================================================
``mean``                  ``m`` (the DC level)
``rms``                   ``sqrt(mean((x - m)**2))``, the AC rms (population, divisor n)
``peak``                  ``max(|x - m|)``
``peak_to_peak``          ``max(x) - min(x)``
``crest_factor``          ``peak / rms``
``kurtosis``              Pearson's ``mean((x - m)**4) / rms**4`` (3 for a normal signal)
``skewness``              ``mean((x - m)**3) / rms**3``
========================  ==================================================================

Kurtosis and skewness are the biased (population) moments, as ``scipy.stats.kurtosis(x,
fisher=False)`` and ``scipy.stats.skew(x)`` give them.

Non-finite samples (NaN dropouts, inf) are skipped and counted per frame. A frame with fewer than
two finite samples has NaN statistics. A frame whose finite samples are all equal (a stuck
sensor) has rms, peak and peak-to-peak 0 and NaN crest factor, kurtosis and skewness: these are
ratios to the rms, which is 0, and no finite number is honest there (0 would read as "less
impulsive than a sine", which a flat line is not). The pipeline does not learn rows with NaN;
the zero rms and peak-to-peak still show the flat line to anyone who looks at the features.

The kernel reads each sample once (twice in a frame that holds NaN or inf, whose second pass
masks them out). It accumulates the power sums of ``x - x0``, where ``x0`` is
the frame's first finite sample, and turns them into central moments at the end. Shifting by a
sample of the frame keeps the cancellation in that last step small (a constant offset of 1e8 on a
unit signal costs nothing, because ``x - x0`` is exact), whereas raw power sums would lose all
digits of the kurtosis. Minimum and maximum are taken over the integer images of the float bit
patterns, an order-preserving map that, unlike float min/max without the ``nnan`` fast-math flag,
vectorises. Values beyond about 1e75 in magnitude overflow the fourth power and give NaN.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import kernel, strict_kernel

__all__ = ["FRAME_STAT_NAMES", "frame_stats"]

#: Column names of :func:`frame_stats`, in order.
FRAME_STAT_NAMES: tuple[str, ...] = (
    "mean",
    "rms",
    "peak",
    "peak_to_peak",
    "crest_factor",
    "kurtosis",
    "skewness",
)

_ABS_MASK = 0x7FFFFFFFFFFFFFFF  # all bits but the sign of a float64
_INF_BITS = 0x7FF0000000000000  # bit pattern of +inf: |x| below it as integer <=> x finite


@kernel
def _power_sums(
    frames: NDArray[np.float64], sums: NDArray[np.float64], skipped: NDArray[np.int64]
) -> None:  # pragma: no cover - compiled
    # Per frame: finite count, shift, sums of (x - shift)**1..4, min and max, in one pass
    # (two when the frame holds NaN or inf).
    n_frames, frame_len = frames.shape
    bits = frames.view(np.int64)
    abs_mask = np.int64(_ABS_MASK)
    inf_bits = np.int64(_INF_BITS)
    # A two-slot buffer seen both as int64 and as float64: numba has no scalar bit cast.
    scratch = np.empty(2, np.int64)
    scratch_f = scratch.view(np.float64)
    for i in range(n_frames):
        row = frames[i]
        row_bits = bits[i]
        shift = 0.0
        for j in range(frame_len):
            if math.isfinite(row[j]):
                shift = row[j]
                break
        # Float bits mapped so that signed integer order is float order (negative floats have
        # their magnitude bits flipped): finite keys lie in [-inf_bits, inf_bits).
        # First the common case, every sample finite, with no masks: 10 vector operations per
        # 8 samples instead of 15.
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        lo = inf_bits
        hi = -inf_bits
        for j in range(frame_len):
            b = row_bits[j]
            key = b ^ ((b >> 63) & abs_mask)
            lo = min(lo, key)
            hi = max(hi, key)
            d = row[j] - shift
            d2 = d * d
            s1 += d
            s2 += d2
            s3 += d2 * d
            s4 += d2 * d2
        count = frame_len
        if lo < -inf_bits or hi >= inf_bits:
            # Some sample is NaN or inf: again, skipping and counting them.
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            s4 = 0.0
            count = 0
            lo = inf_bits
            hi = -inf_bits
            for j in range(frame_len):
                b = row_bits[j]
                finite = (b & abs_mask) < inf_bits
                key = b ^ ((b >> 63) & abs_mask)
                lo = min(lo, key if finite else inf_bits)
                hi = max(hi, key if finite else -inf_bits)
                d = row[j] - shift if finite else 0.0
                d2 = d * d
                s1 += d
                s2 += d2
                s3 += d2 * d
                s4 += d2 * d2
                count += finite
        skipped[i] = frame_len - count
        scratch[0] = lo ^ ((lo >> 63) & abs_mask)
        scratch[1] = hi ^ ((hi >> 63) & abs_mask)
        sums[i, 0] = count
        sums[i, 1] = shift
        sums[i, 2] = s1
        sums[i, 3] = s2
        sums[i, 4] = s3
        sums[i, 5] = s4
        sums[i, 6] = scratch_f[0]
        sums[i, 7] = scratch_f[1]


# IEEE arithmetic on purpose, and called from Python rather than from the kernel above, because
# numba compiles a callee with its caller's fast-math flags. With reassociation LLVM rewrites
# (x_max - shift) - a as x_max - (shift + a), where shift + a is the mean rounded to the
# precision of the DC offset, and the peak of a small signal on a large offset loses its digits.
@strict_kernel
def _stats_from_sums(
    sums: NDArray[np.float64], out: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    for i in range(sums.shape[0]):
        count, shift, s1, s2, s3, s4, x_min, x_max = sums[i]
        if count < 2:
            out[i, :] = np.nan
            continue
        a = s1 / count  # mean of the shifted samples
        e2 = s2 / count
        e3 = s3 / count
        e4 = s4 / count
        m2 = max(e2 - a * a, 0.0)
        m3 = e3 - 3.0 * a * e2 + 2.0 * a * a * a
        m4 = e4 - 4.0 * a * e3 + 6.0 * a * a * e2 - 3.0 * a * a * a * a
        rms = math.sqrt(m2)
        # x_max - shift and x_min - shift are exact when the offset dominates (Sterbenz).
        peak = max((x_max - shift) - a, a - (x_min - shift))
        out[i, 0] = shift + a
        out[i, 1] = rms
        out[i, 2] = peak
        out[i, 3] = x_max - x_min
        if m2 > 0.0:
            out[i, 4] = peak / rms
            out[i, 5] = m4 / (m2 * m2)
            out[i, 6] = m3 / (m2 * rms)
        else:
            out[i, 4:] = np.nan


def frame_stats(frames: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Mean, AC rms, peak, peak-to-peak, crest factor, kurtosis and skewness of each frame.

    Parameters
    ----------
    frames
        Shape (n_frames, frame_len), float64; a 1-D array is one frame. May contain NaN and inf,
        which are skipped.

    Returns
    -------
    stats
        Shape (n_frames, 7), float64, columns as in :data:`FRAME_STAT_NAMES` (see the module
        docstring for the definitions). NaN where a frame has fewer than two finite samples;
        crest factor, kurtosis and skewness are NaN where the AC rms is 0.
    skipped
        Shape (n_frames,), int64: the number of non-finite samples skipped in each frame.

    Raises
    ------
    TypeError
        If ``frames`` is not a float64 array.
    ValueError
        If ``frames`` is not 1-D or 2-D.

    Examples
    --------
    >>> import numpy as np
    >>> stats, skipped = frame_stats(np.array([[1.0, -1.0, np.nan, 1.0, -1.0]]))
    >>> stats[0, :5].tolist(), skipped.tolist()
    ([0.0, 1.0, 1.0, 2.0, 1.0], [1])
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.float64:
        raise TypeError(
            "frames must be a float64 numpy array; convert it with "
            "np.asarray(frames, dtype=np.float64)"
        )
    if frames.ndim == 1:
        frames = frames.reshape(1, -1)
    elif frames.ndim != 2:
        raise ValueError(
            f"frames must have shape (n_frames, frame_len) or (frame_len,); got {frames.shape}"
        )
    frames = np.ascontiguousarray(frames)
    n_frames = frames.shape[0]
    stats = np.empty((n_frames, len(FRAME_STAT_NAMES)), dtype=np.float64)
    skipped = np.empty(n_frames, dtype=np.int64)
    if n_frames:
        sums = np.empty((n_frames, 8), dtype=np.float64)
        _power_sums(frames, sums, skipped)
        _stats_from_sums(sums, stats)
    return stats, skipped
