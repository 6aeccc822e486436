"""The default threshold: peaks over threshold, calibrated on the signal's own scores.

:class:`TailThreshold` (kind ``"pot"``) fits a generalised Pareto tail to the largest of the
signal's scores (:mod:`shopfloor.scoring.kernels.tail`) and sets the threshold for the configured
false-alarm rate. Against the forgetting histogram of :class:`~shopfloor.scoring.detect.threshold.
QuantileThreshold` it trades a little accuracy on long, stationary streams for what a plant
needs first: a usable threshold for a rate of 1e-3 after a few hundred scores (the histogram
needs ~1/rate before its estimate means anything, so the detector's theoretical iid limit
stood in for most of a day of 1 Hz data, and on autocorrelated data that limit is wrong), and
about 2 KiB of state instead of 64 KiB.

Until calibrated the threshold is +inf, or ``initial`` (the pipeline sets the detector's
nominal limit there, as for the quantile threshold).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import State, as_learn_mask
from shopfloor.scoring.detect.threshold import Threshold, as_mask, as_scores, optional_number
from shopfloor.scoring.kernels import tail as _tail

__all__ = ["TailThreshold"]


class TailThreshold(Threshold):
    """Threshold from a generalised Pareto fit to the scores' upper tail (SPOT).

    Parameters
    ----------
    false_alarm_rate
        Target probability that a normal score exceeds the threshold, in (0, 0.1].
    calibration
        Learned scores that calibrate the first fit (default 200: with ``level`` 0.9, 20
        excesses, the fewest that give a stable shape).
    level
        Quantile of the calibration scores above which scores are excesses, in [0.5, 0.99].
    memory
        Learned scores over which the exceedance fraction forgets (default ``10 /
        false_alarm_rate``), >= ``calibration``.
    skip
        Learned scores ignored at the very start. Scores of exactly 0.0 (a detector's "no
        opinion" while it warms up) never enter the calibration anyway.
    initial
        The threshold before calibration (instead of +inf).
    floor
        The threshold never goes below this (default: no floor). The nominal limit of the
        detector is a natural choice where its assumptions hold; the pipeline does not set it,
        since on data whose scores have a lighter tail than the theory's (a bounded or a
        smooth signal) it hides real changes - a temperature drift peaking at 2.8 sigma
        against a fitted 2.5 and a nominal 3.3.

    Examples
    --------
    >>> import numpy as np
    >>> t = TailThreshold(false_alarm_rate=1e-3)
    >>> scores = np.random.default_rng(0).exponential(size=5000)
    >>> thresholds = t.apply(scores, True)
    >>> bool(np.isinf(thresholds[:200]).all()), round(t.value, 1)  # -ln(1e-3) = 6.9
    (True, 6.9)
    """

    kind = "pot"

    def __init__(
        self,
        false_alarm_rate: float = 1e-3,
        calibration: int = 200,
        level: float = 0.9,
        memory: float | None = None,
        skip: int = 0,
        initial: float | None = None,
        floor: float | None = None,
    ) -> None:
        if (isinstance(false_alarm_rate, bool) or not isinstance(false_alarm_rate, float | int)
                or not 0.0 < false_alarm_rate <= 0.1):
            raise ValueError(f"false_alarm_rate must be in (0, 0.1]; got {false_alarm_rate!r}")
        if isinstance(calibration, bool) or not isinstance(calibration, int) or not (
            50 <= calibration <= 100_000
        ):
            raise ValueError(f"calibration must be an integer in [50, 100000] scores; got "
                             f"{calibration!r}")
        if isinstance(level, bool) or not isinstance(level, float | int) or not (
            0.5 <= level <= 0.99
        ):
            raise ValueError(f"level must be in [0.5, 0.99]; got {level!r}")
        if (calibration * (1.0 - level)) < _tail.MIN_EXCESSES:
            raise ValueError(f"calibration x (1 - level) must leave at least "
                             f"{_tail.MIN_EXCESSES} excesses; got {calibration} x {1 - level:g}")
        if memory is not None and (isinstance(memory, bool) or not isinstance(memory, float | int)
                                   or not (math.isfinite(memory) and memory >= calibration)):
            raise ValueError(f"memory must be a number of scores >= calibration; got {memory!r}")
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
            raise ValueError(f"skip must be an integer >= 0; got {skip!r}")
        self.false_alarm_rate = float(false_alarm_rate)
        self.calibration = calibration
        self.level = float(level)
        self.memory = memory
        self.skip = skip
        self.initial = optional_number("initial", initial)
        self.floor = optional_number("floor", floor)
        self._state: NDArray[np.float64] | None = None

    def apply(self, score: Any, learn: Any, withheld: Any = None) -> NDArray[np.float64]:
        s = as_scores(score)
        n = s.shape[0]
        lrn = as_learn_mask(learn, n)
        held = None if withheld is None else as_mask(withheld, n)
        if self._state is None:
            self._state = _tail.new_tail_state(self.calibration)
        thresholds = _tail.tail_threshold(
            s, lrn, held, self._state, rate=self.false_alarm_rate, calibration=self.calibration,
            level=self.level, memory=self._memory(), skip=self.skip,
        )
        if self.initial is not None:
            thresholds[np.isinf(thresholds) & np.isfinite(s)] = self.initial
        if self.floor is not None:
            np.maximum(thresholds, self.floor, out=thresholds)
        return thresholds

    @property
    def value(self) -> float:
        value = math.inf if self._state is None else float(self._state[_tail.THRESHOLD_AT])
        value = self.initial if math.isinf(value) and self.initial is not None else value
        return value if self.floor is None else max(value, self.floor)

    @property
    def calibrated(self) -> bool:
        return self._state is not None and bool(self._state[_tail.CALIBRATED_AT])

    def get_state(self) -> State:
        st = self._state if self._state is not None else _tail.new_tail_state(self.calibration)
        return {"tail": st.copy()}

    def set_state(self, state: State) -> None:
        if set(state) != {"tail"}:
            raise ValueError(f"tail threshold state must have the key 'tail'; got {sorted(state)}")
        arr = np.array(state["tail"], dtype=np.float64, copy=True)
        expected = _tail.new_tail_state(self.calibration).shape
        if arr.shape != expected:
            raise ValueError(f"tail state must have shape {expected} for calibration "
                             f"{self.calibration}; got {arr.shape}")
        self._state = arr

    def _memory(self) -> float:
        return float(self.memory) if self.memory is not None else 10.0 / self.false_alarm_rate

    def __repr__(self) -> str:
        return (f"TailThreshold(false_alarm_rate={self.false_alarm_rate}, "
                f"calibration={self.calibration}, level={self.level}, memory={self.memory}, "
                f"skip={self.skip})")
