"""Thresholds: the score above which a sample counts as an exceedance.

Per sample the pipeline asks for the threshold in force *before* the score is learned, compares
(``exceed = score > threshold``), lets the alarm decide whether the sample may be learned, and
then lets the threshold learn the score. :meth:`Threshold.apply` does this for a batch and gives
exactly what the per-sample loop gives; ``apply(score, learn=False)`` never changes anything, so
it doubles as a look-up. Non-finite scores are never learned and get a threshold of +inf, so
``score > threshold`` is False for them (NaN and +inf alike).

Choosing the quantile estimator
-------------------------------
:class:`QuantileThreshold` calibrates the threshold to a false-alarm rate ``p``: it estimates
the ``1 - p`` quantile of the learned scores. The requirements were accuracy in the far tail
(``p`` = 1e-3 or 1e-4), forgetting, O(1) cost per score, determinism and a small checkpoint.

* P-square (Jain & Chlamtac) keeps five markers and costs O(1), but has no forgetting, and in
  the far tail its parabolic interpolation between markers 0.999 and 1.0 (the running maximum)
  is poor on heavy tails.
* Stochastic approximation (``q += eta (1{x > q} - p)``) is one number of state and pins the
  long-run exceedance rate, but it needs a scale for ``eta``, reaches the 1e-4 quantile only
  after ~100/p samples from a cold start, and its threshold saw-tooths after every exceedance.
* A histogram with exponential forgetting estimates the quantile from all the evidence in its
  memory, forgets smoothly, and is exact to replay. Its costs are range and memory.

So: a histogram (:mod:`shopfloor.scoring.kernels.quantile`) whose bins are 3.2 % wide in a signed
log coordinate from 1e-9 to 1e9 in magnitude (2,657 bins, each with its weight and its smallest
and largest learned score: 64 KB of state per signal), with exponential forgetting by growing
weights and a pointer to the quantile's bin, so a score costs one ``log``, one ``exp`` and a
pointer step or two (~100 ns). Interpolating inside the quantile's bin between the extremes
learned there makes the bin width nearly irrelevant on smooth tails, makes equal scores (a
detector reporting 0.0 while it warms up, a discrete score) their own threshold instead of an
exceedance storm, and keeps a bounded score's threshold below its bound. Resolution is relative:
a score that carries a large offset (1e8 plus noise of 1) gets a coarse, conservative threshold;
detector scores measure deviations, so they do not.

Measured (20 seeds of 500,000 scores, rate counted after ``min_samples``, defaults otherwise):
mean exceedance rate / target 1.00-1.01 at ``p`` = 1e-3 for |N(0,1)|, chi-square(3),
exponential, |t(3)| and |t(5)| scores (seed-to-seed spread ±3 %), and 1.00-1.02 at ``p`` = 1e-4
over 2,000,000 scores (±6-8 %). A grid of 16 bins per e-fold costs 11 % on Gaussian tails at
1e-4; hence 32. tests/test_threshold.py checks one seed of each against 4-sigma bounds.

Forgetting. Weights halve every ``half_life`` learned scores (default ``100 / p``: about 290
tail scores in memory). After a step in the score's scale the threshold is within 5 % of the new
quantile after about 2 half-lives for a step up and 7-11 for a step down by 2-10× (old large
scores must be forgotten before the threshold may fall: slow, but on the side of fewer false
alarms).

Pausing learning biases a quantile. The alarm withholds exceedances from learning (so the
samples leading up to a raise are not learned), and a threshold that learns only what is below
itself drifts down: the ``1 - p`` quantile of a tail cut at the threshold lies below it.
Measured with |N(0,1)| scores at ``p`` = 1e-3 through the alarm's defaults: the false-alarm
rate is 4.8× the target over the first two half-lives and 15× by the twentieth. So
:meth:`apply` takes the alarm's ``withheld`` mask (exceedances withheld *outside* an active
alarm) and counts those scores, winsorised to one bin (3 %) above the quantile. Moving values
that lie above a quantile does not move it, so the estimate stays unbiased (the same run stays
within 0.94-1.10× the target), and a fault contributes at most its ``raise_after`` leading
samples per alarm, each at most a bin above the quantile.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import State, as_learn_mask
from shopfloor.scoring.kernels import quantile as _q

__all__ = ["CALIBRATED", "FixedThreshold", "QuantileThreshold", "Threshold"]

#: Threshold kinds that calibrate on the signal's own scores: until they have, the pipeline
#: gives them the detector's nominal threshold as their ``initial`` value.
CALIBRATED = frozenset({"quantile", "pot"})


class Threshold(ABC):
    """Base class of thresholds: the threshold in force for each score, then learn the score."""

    #: Short name used in config files and metrics labels.
    kind: str = "threshold"

    @abstractmethod
    def apply(
        self, score: Any, learn: Any, withheld: Any = None
    ) -> NDArray[np.float64]:
        """Threshold in force before each score (shape (n,)), then learn the scores where
        ``learn`` (a bool or shape (n,)). ``withheld`` (shape (n,) bool, optional) marks
        exceedances that the alarm withheld from learning; thresholds that calibrate on the
        score's tail count them. Must equal feeding the scores one at a time."""

    @property
    @abstractmethod
    def value(self) -> float:
        """The threshold in force now (before the next score)."""

    @abstractmethod
    def get_state(self) -> State:
        """Everything learned so far, as copies."""

    @abstractmethod
    def set_state(self, state: State) -> None:
        """Restore what :meth:`get_state` returned; the threshold then continues exactly."""


class FixedThreshold(Threshold):
    """A constant threshold, e.g. a normal quantile for scores in sigma units.

    Parameters
    ----------
    value
        The threshold, finite.

    Examples
    --------
    >>> FixedThreshold(3.5).apply([1.0, 4.0, float("nan")], True).tolist()
    [3.5, 3.5, inf]
    """

    kind = "fixed"

    def __init__(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
            raise ValueError(f"value must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"value must be finite; got {value}")
        # Stored privately: ``value`` is the read-only property every threshold has.
        self._value = float(value)

    def apply(self, score: Any, learn: Any, withheld: Any = None) -> NDArray[np.float64]:
        s = as_scores(score)
        as_learn_mask(learn, s.shape[0])  # validated for symmetry with learning thresholds
        return np.where(np.isfinite(s), self._value, np.inf)

    @property
    def value(self) -> float:
        return self._value

    def get_state(self) -> State:
        return {}

    def set_state(self, state: State) -> None:
        if state:
            raise ValueError(f"a fixed threshold has no state; got keys {sorted(state)}")


class QuantileThreshold(Threshold):
    """Threshold at the streaming ``1 - false_alarm_rate`` quantile of the learned scores.

    Parameters
    ----------
    false_alarm_rate
        Target probability that a normal score exceeds the threshold, in (0, 0.5].
    min_samples
        Scores to learn before the threshold becomes finite (it is +inf until then, so
        nothing exceeds). Default ``ceil(1 / false_alarm_rate)``: by then the largest score
        learned is itself an estimate of the quantile, noisy but unbiased (measured over the
        next ``10 / false_alarm_rate`` scores: 1.04-1.12 × the target rate), and the blind
        period is short (17 minutes of 1 Hz scores at 1e-3). At least 1.
    half_life
        Learned scores after which a score's weight has halved. Default
        ``100 / false_alarm_rate``; at least ``1 / false_alarm_rate``.
    margin
        Safety margin: the threshold is ``q + margin * |q|`` for the quantile ``q``. Default
        0.0, so the false-alarm rate is what it says; >= 0.
    initial
        The threshold before ``min_samples`` scores are learned (instead of +inf). The pipeline
        sets it from the detector's nominal threshold for the same rate, so alarms work from
        the end of warm-up while the empirical quantile calibrates.

    Examples
    --------
    >>> import numpy as np
    >>> t = QuantileThreshold(false_alarm_rate=0.01, min_samples=1000)
    >>> scores = np.abs(np.random.default_rng(0).standard_normal(20_000))
    >>> thresholds = t.apply(scores, True)
    >>> bool(np.isinf(thresholds[:1000]).all()), round(t.value, 1)  # 99 % of |N(0,1)|: 2.58
    (True, 2.6)
    """

    kind = "quantile"

    def __init__(
        self,
        false_alarm_rate: float = 1e-3,
        min_samples: int | None = None,
        half_life: float | None = None,
        margin: float = 0.0,
        initial: float | None = None,
    ) -> None:
        if not isinstance(false_alarm_rate, float | int) or not 0.0 < false_alarm_rate <= 0.5:
            raise ValueError(f"false_alarm_rate must be in (0, 0.5]; got {false_alarm_rate!r}")
        if min_samples is not None and (
            isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1
        ):
            raise ValueError(f"min_samples must be an integer >= 1; got {min_samples!r}")
        if half_life is not None and (
            isinstance(half_life, bool) or not isinstance(half_life, float | int)
            or not math.isfinite(half_life) or half_life * false_alarm_rate < 1.0
        ):
            raise ValueError(f"half_life must be a number >= 1/false_alarm_rate = "
                             f"{1.0 / false_alarm_rate:g} learned scores; got {half_life!r}")
        if isinstance(margin, bool) or not isinstance(margin, float | int) or not (
            math.isfinite(margin) and margin >= 0.0
        ):
            raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")
        self.false_alarm_rate = float(false_alarm_rate)
        self.min_samples = min_samples
        self.half_life = half_life
        self.margin = float(margin)
        self.initial = optional_number("initial", initial)
        self._state: _q.QuantileState | None = None

    def apply(self, score: Any, learn: Any, withheld: Any = None) -> NDArray[np.float64]:
        s = as_scores(score)
        n = s.shape[0]
        lrn = as_learn_mask(learn, n)
        held = None if withheld is None else as_mask(withheld, n)
        if self._state is None:
            self._state = _q.new_quantile_state()
        thresholds = _q.tail_quantile(
            s, lrn, held, self._state, tail=self.false_alarm_rate,
            half_life=self._half_life(), min_samples=self._min_samples(), margin=self.margin,
        )
        if self.initial is not None:
            # +inf for a finite score means "not calibrated yet": the prior stands in.
            thresholds[np.isinf(thresholds) & np.isfinite(s)] = self.initial
        return thresholds

    @property
    def value(self) -> float:
        value = math.inf if self._state is None else float(self._state.scalars[5])
        return self.initial if math.isinf(value) and self.initial is not None else value

    @property
    def n_learned(self) -> int:
        """Scores learned so far (withheld exceedances counted in the tail included)."""
        return 0 if self._state is None else int(self._state.counts[1])

    @property
    def n_skipped(self) -> int:
        """Non-finite scores that were to be learned and were skipped."""
        return 0 if self._state is None else int(self._state.counts[2])

    def get_state(self) -> State:
        st = self._state if self._state is not None else _q.new_quantile_state()
        return {name: arr.copy() for name, arr in st._asdict().items()}

    def set_state(self, state: State) -> None:
        fields = _q.QuantileState._fields
        if set(state) != set(fields):
            raise ValueError(f"quantile threshold state must have keys {list(fields)}; "
                             f"got {sorted(state)}")
        new = _q.QuantileState(*(np.array(state[f], copy=True) for f in fields))
        _q.tail_quantile(  # validates shapes and dtypes; an empty batch changes nothing
            np.empty(0), np.empty(0, dtype=np.bool_), None, new, tail=self.false_alarm_rate,
            half_life=self._half_life(), min_samples=self._min_samples(), margin=self.margin,
        )
        self._state = new

    def _min_samples(self) -> int:
        if self.min_samples is not None:
            return self.min_samples
        return math.ceil(1.0 / self.false_alarm_rate)

    def _half_life(self) -> float:
        if self.half_life is not None:
            return float(self.half_life)
        return 100.0 / self.false_alarm_rate

    def __repr__(self) -> str:
        return (f"QuantileThreshold(false_alarm_rate={self.false_alarm_rate}, "
                f"min_samples={self.min_samples}, half_life={self.half_life}, "
                f"margin={self.margin})")


def optional_number(name: str, value: Any) -> float | None:
    """A threshold parameter that is a number (not NaN) or None; ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, float | int) or math.isnan(value):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


def as_scores(score: Any) -> NDArray[np.float64]:
    try:
        arr = np.asarray(score, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("score must be numbers (an array of float64 scores)") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"score must have shape (n,); got {arr.shape}")
    return np.ascontiguousarray(arr)


def as_mask(mask: Any, n: int) -> NDArray[np.bool_]:
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ or arr.shape != (n,):
        raise ValueError(f"withheld must be a bool array of shape ({n},); got {arr.dtype} "
                         f"{arr.shape}")
    return np.ascontiguousarray(arr)
