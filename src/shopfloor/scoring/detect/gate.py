"""Input validation in front of every detector: what is never learned.

One NaN or inf permanently poisons running means, scalers and River models, and a sensor that
reports a physically impossible value (a disconnected 4-20 mA loop reading -9999, an
accelerometer clipping) is not telling us about the machine. Such samples are rejected before
any scoring or learning, and counted by reason so an operator sees a sick sensor.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_MAGNITUDE", "Reject", "SampleGate", "count_rejects"]

#: Finite values beyond this magnitude are rejected (counted as ``implausible``) whatever the
#: valid range: no transmitter reads 1e15 of anything on a shop floor, and the detectors square
#: what they learn - 1e300 squared is inf, which poisons a baseline for good (or, in the
#: covariance update, divides by zero). Ordinary finite extremes below it are the detectors'
#: business (they clip what they learn).
MAX_MAGNITUDE = 1e15


class Reject(IntEnum):
    """Why a sample was not scored or learned (0 means it was accepted)."""

    OK = 0
    NAN = 1
    INF = 2
    OUT_OF_RANGE = 3
    MISSING_SAMPLES = 4  # a frame had more dropouts than the feature stage tolerates
    IMPLAUSIBLE = 5  # beyond MAX_MAGNITUDE: no sensor reads it, and its square overflows

    @property
    def label(self) -> str:
        """The lower-case name used in metrics labels and logs."""
        return self.name.lower()


class SampleGate:
    """Classify samples as accepted or rejected-with-reason.

    Parameters
    ----------
    valid_range
        Inclusive ``(low, high)`` of physically possible values, or ``None`` for no range check.
        For frame signals every sample of the frame must lie inside it (a clipped frame is
        rejected).

    Examples
    --------
    >>> import numpy as np
    >>> gate = SampleGate(valid_range=(0.0, 10.0))
    >>> gate.check(np.array([1.0, np.nan, np.inf, 11.0])).tolist()
    [0, 1, 2, 3]
    """

    def __init__(self, valid_range: tuple[float, float] | None = None) -> None:
        if valid_range is not None:
            low, high = (float(v) for v in valid_range)
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(
                    f"valid_range must be two finite numbers [low, high] with low <= high; "
                    f"got {list(valid_range)}"
                )
            valid_range = (low, high)
        self.valid_range = valid_range

    def check(self, values: NDArray[np.float64]) -> NDArray[np.uint8]:
        """Reason code per sample (shape (n,)) or per frame (shape (n, frame_len))."""
        v = np.asarray(values, dtype=np.float64)
        reason = np.zeros(v.shape[0], dtype=np.uint8)
        if v.ndim == 1:
            nan, inf = np.isnan(v), np.isinf(v)
            reason[nan] = Reject.NAN
            reason[inf] = Reject.INF
            with np.errstate(invalid="ignore"):
                reason[~inf & (np.abs(v) > MAX_MAGNITUDE)] = Reject.IMPLAUSIBLE
            if self.valid_range is not None:
                low, high = self.valid_range
                with np.errstate(invalid="ignore"):
                    out = ~(nan | inf) & ((v < low) | (v > high)) & (reason == 0)
                reason[out] = Reject.OUT_OF_RANGE
            return reason
        if v.ndim != 2:
            raise ValueError(f"values must be 1-D samples or 2-D frames; got ndim={v.ndim}")
        # Frames: dropouts inside a frame are the feature stage's business (it skips and counts
        # them); here only a clipped, out-of-range or implausible frame is rejected outright.
        if v.size:
            with np.errstate(invalid="ignore"):
                huge = (np.isfinite(v) & (np.abs(v) > MAX_MAGNITUDE)).any(axis=1)
            reason[huge] = Reject.IMPLAUSIBLE
        if self.valid_range is not None and v.size:
            low, high = self.valid_range
            with np.errstate(invalid="ignore"):
                out = np.asarray(((v < low) | (v > high)).any(axis=1), dtype=np.bool_)
            reason[out & (reason == 0)] = Reject.OUT_OF_RANGE
        return reason


def count_rejects(reason: NDArray[np.uint8]) -> dict[str, int]:
    """Count rejected samples by reason label (accepted ones are not listed)."""
    counts = np.bincount(reason, minlength=len(Reject))
    return {Reject(i).label: int(c) for i, c in enumerate(counts) if i and c}
