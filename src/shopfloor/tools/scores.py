"""Point-wise detection scores: F1, false alarm rate and missed alarm rate, as SKAB defines them.

Every row is one decision: the detector's output (alarm or not) against the true label
(anomalous or not). From the counts of true and false positives and negatives:

- ``F1 = TP / (TP + (FN + FP) / 2)``
- ``FAR = FP / (FP + TN) * 100`` (% of normal rows in alarm)
- ``MAR = FN / (FN + TP) * 100`` (% of anomalous rows not in alarm)

``shopfloor replay`` prints them against a label column of its input, and the quality benchmark
(``benchmarks/quality_metrics.py``) pools them over SKAB's files; both count with
:func:`confusion`, so the two agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["Confusion", "as_labels", "confusion"]


@dataclass(frozen=True, slots=True)
class Confusion:
    """Point-wise counts, and SKAB's scores from them."""

    tp: int
    fp: int
    tn: int
    fn: int

    def __add__(self, other: Confusion) -> Confusion:
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn,
                         self.fn + other.fn)

    @property
    def f1(self) -> float:
        """``TP / (TP + (FN + FP) / 2)``; 0.0 when there is nothing to find and nothing found."""
        den = self.tp + (self.fn + self.fp) / 2.0
        return self.tp / den if den else 0.0

    @property
    def far(self) -> float:
        """False alarm rate in %: ``FP / (FP + TN) * 100`` (0.0 without normal rows)."""
        den = self.fp + self.tn
        return 100.0 * self.fp / den if den else 0.0

    @property
    def mar(self) -> float:
        """Missed alarm rate in %: ``FN / (FN + TP) * 100`` (0.0 without anomalous rows)."""
        den = self.fn + self.tp
        return 100.0 * self.fn / den if den else 0.0


def confusion(true: ArrayLike, predicted: ArrayLike) -> Confusion:
    """Count TP, FP, TN and FN of 0/1 (or bool) labels ``predicted`` against ``true``."""
    t, p = as_labels(true, "true"), as_labels(predicted, "predicted")
    if t.shape != p.shape:
        raise ValueError(f"true and predicted must have the same length; got {t.size} and "
                         f"{p.size}")
    return Confusion(tp=int(np.sum(t & p)), fp=int(np.sum(~t & p)), tn=int(np.sum(~t & ~p)),
                     fn=int(np.sum(t & ~p)))


def as_labels(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    """``values`` as a 1-D bool array; anything but 0 and 1 (or bools) is a ``ValueError``."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D 0/1 labels; got shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return arr.astype(np.bool_)
