"""The detector contract: prequential scoring over batches and single samples.

A detector sees the rows of a feature matrix in time order. For each row it first computes a
score from what it has learned so far and then, if the row's ``learn`` flag is set, learns the
row. Higher scores mean more anomalous. A batch call must give exactly the scores that the same
rows fed one at a time would give, so that the live agent (whatever its batch sizes) and
``shopfloor replay`` agree, and so that checkpoint, restore and continue matches an
uninterrupted run bit for bit.

Rows arrive already validated: the pipeline never passes NaN or inf to a detector (see
:mod:`shopfloor.scoring.detect.gate`), because one non-finite value permanently poisons many online
models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.registry import parameters

__all__ = ["Detector", "ScoreBatch", "State", "as_feature_matrix", "as_learn_mask"]

# A detector's state: plain values and numpy arrays (copied on the way in and out), or bytes
# for models that can only be pickled. Checkpoints serialise it; tests compare it exactly.
State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """What a detector says about a batch of rows.

    Attributes
    ----------
    score
        Shape (n,), float64: higher is more anomalous.
    top
        Shape (n,), int64: the column (feature or signal) that contributed most to each
        row's score, or -1 where the detector cannot attribute it.
    rules
        Shape (n,), uint8 bitmask of control-chart rule hits (bit k-1 set = rule k fired), for
        detectors that report rules (Western Electric); ``None`` otherwise.
    """

    score: NDArray[np.float64]
    top: NDArray[np.int64]
    rules: NDArray[np.uint8] | None = None


class Detector(ABC):
    """Base class of every shopfloor detector.

    Subclasses keep ``__init__`` to storing their parameters (under the same names) and build
    runtime state lazily on the first batch, when the number of features is known.
    """

    #: Short name used in config files and metrics labels.
    kind: str = "detector"

    #: True for models that work one row at a time anyway, whose scoring leaves their state
    #: untouched and whose state is costly to copy (River's). The pipeline then scores each
    #: row, decides, and learns it, instead of speculating on batches with snapshots.
    row_model: bool = False

    @abstractmethod
    def score_learn(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> ScoreBatch:
        """Score each row of ``x`` (shape (n, d), finite float64), then learn it where ``learn``.

        Must equal feeding the rows one at a time, in order.
        """

    @abstractmethod
    def get_state(self) -> State:
        """Everything learned so far, as copies (safe to keep while the detector goes on)."""

    @abstractmethod
    def set_state(self, state: State) -> None:
        """Restore what :meth:`get_state` returned; the detector then continues bit-exactly."""

    def reset(self) -> None:
        """Forget everything learned: the state of a fresh detector with these parameters.

        The pipeline resets a detector when an alarm's shift is adopted as the new normal or
        the signal resumes after a long gap, so it re-warms on what comes next.
        """
        fresh = type(self)(**{name: getattr(self, name) for name in parameters(type(self))})
        self.set_state(fresh.get_state())

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        """The score a healthy sample exceeds with probability ``false_alarm_rate``, in theory.

        Scores of ``d`` features per row. Used by a quantile threshold until it has learned
        enough scores to calibrate itself, so alarms work from the end of warm-up on. ``None``
        when the detector's scores have no distribution known in advance.
        """
        return None

    # Convenience for single samples, built on the batch call so there is one code path.
    def score_one(self, x: NDArray[np.float64] | list[float] | float) -> float:
        """Score one sample without learning it."""
        row = as_feature_matrix(x)
        return float(self.score_learn(row, np.zeros(1, dtype=np.bool_)).score[0])

    def learn_one(self, x: NDArray[np.float64] | list[float] | float) -> None:
        """Learn one sample (its score is computed and discarded)."""
        row = as_feature_matrix(x)
        self.score_learn(row, np.ones(1, dtype=np.bool_))


def as_feature_matrix(x: Any, *, name: str = "x") -> NDArray[np.float64]:
    """Return ``x`` as a C-contiguous float64 matrix of shape (n, d).

    A scalar becomes (1, 1) and a 1-D array of length d one row of d features.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim != 2:
        raise ValueError(
            f"{name} must be a scalar, a 1-D row or a 2-D (n, d) matrix; got ndim={arr.ndim}"
        )
    return np.ascontiguousarray(arr)


def as_learn_mask(learn: Any, n: int) -> NDArray[np.bool_]:
    """Return ``learn`` as a bool vector of length ``n`` (a plain bool broadcasts)."""
    mask = np.asarray(learn, dtype=np.bool_)
    if mask.ndim == 0:
        return np.full(n, bool(mask), dtype=np.bool_)
    if mask.shape != (n,):
        raise ValueError(f"learn must be a bool or have shape ({n},); got {mask.shape}")
    return np.ascontiguousarray(mask)
