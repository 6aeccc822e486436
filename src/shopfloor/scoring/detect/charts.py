"""Control-chart detectors: z-score, EWMA chart, CUSUM, Page-Hinkley, robust z, flat line.

Each column of the feature matrix is an independent chart; a row's score is the largest
per-column statistic (absolute value) and ``top`` is that column (-1 while every column scores
0.0). Before ``min_samples`` values have been learned a column scores 0.0. Scores are in sigma
units, so one threshold means the same on any signal (the flat-line score is in nats instead):

==============  ===========================================  =================================
kind            score                                        threshold for a false-alarm rate p
==============  ===========================================  =================================
zscore          ``|x - mean| / std``                         normal quantile ``z(1 - p/2)``
ewma            ``|E_t| / sigma(E_t)``, E = EWMA of z        normal quantile (stationary |N|)
cusum           ``max(S+, S-)``                              at most ``ln(2/p) / (2k)``
page_hinkley    ``max(PH+, PH-)``                            at most ``ln(2/p) / (2 delta)``
robust_z        ``|x - median| / (1.4826 MAD)``              normal quantile (Gaussian data)
flatline        ``run × -ln P(repeat)``                      ``ln(1/p)``
==============  ===========================================  =================================

The CUSUM bound is Kingman's for the stationary reflected random walk of N(0, 1) z-scores;
with d columns multiply p by d. Learned baselines add a little estimation noise (see tests).

Forecast residuals. With ``forecast = true`` a chart charts each column's one-step-ahead
forecast errors instead of the raw values (:mod:`shopfloor.scoring.kernels.forecast`); the
forecaster chooses its weight on the first ``min_samples`` values, so scores start after ``2 ×
min_samples``. It is the default of the charts that *accumulate* evidence - ewma, cusum and the
Western Electric rules: one-second process data is autocorrelated, and the variance of an EWMA or a
CUSUM of dependent values is far above the limits derived for independent ones (an EWMA chart of raw
AR(1) values with phi 0.9 exceeds its 1e-3 limit in over 2 % of samples). The memoryless scores -
zscore and robust_z - chart raw values by default: dependence does not change the distribution of
one sample's score, only clusters its exceedances, and the threshold calibrated on the signal's own
scores (``pot``) already sees that distribution; the raw values keep them sensitive to a gradual
shift, which a forecaster would track away. Page-Hinkley (the slow-drift chart) and the flat-line
detector (it counts exact repeats) chart raw values too.

Baselines and drift. Every chart standardises against a learned baseline: ``"ewma"`` (weight
``max(alpha, 1/n)``, exact for the first ``1/alpha`` values, then a memory of about
``1/alpha`` values) or ``"welford"`` (the all-time mean and std). An EWMA baseline that keeps
learning absorbs a drift slower than about ``alpha × k`` sigma per value (its lag stays below
the CUSUM slack); Welford absorbs nothing for long but also never adapts to a legitimate
change. The default ``alpha = 0.001`` (a memory of ~1000 parts or frames: a shift of parts, a
quarter of an hour of 1 Hz vibration frames) keeps the mean estimate within ~0.02 sigma and
lets genuinely slow process changes in; Page-Hinkley defaults to Welford, the classic all-time
reference, as the chart meant for slow drift. The pipeline pauses learning during an alarm,
so a detected fault is not learned either way. ``min_samples = 100`` (about what a phase-I
individuals chart wants) keeps the learned std within ~7 % when scoring starts.

Chart memories (CUSUM sums, the EWMA statistic, the repeat run) advance on every row, learned or
not; only the baseline obeys ``learn``. A chart frozen while learning is paused would keep its
alarm level forever. Consequently :meth:`score_one` (``learn=False``) also advances them. For
the same reason the CUSUM and Page-Hinkley sums are kept below ``limit``: after a long fault
the score falls below a threshold h within about ``(limit - h) / k`` values instead of a time
proportional to the fault's length.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import (
    Detector,
    ScoreBatch,
    State,
    as_feature_matrix,
    as_learn_mask,
)
from shopfloor.scoring.kernels import forecast, robust, stats
from shopfloor.scoring.kernels.robust import sigma_of_surprise

__all__ = [
    "CusumDetector",
    "EwmaChart",
    "FlatlineDetector",
    "PageHinkleyDetector",
    "RobustZDetector",
    "ZScoreDetector",
    "max_column",
    "sigma_of_surprise",
]

BASELINES = ("ewma", "welford")


def normal_limit(false_alarm_rate: float, d: int) -> float:
    """Two-sided normal limit for the largest of ``d`` |z| scores at the given rate."""
    return NormalDist().inv_cdf(1.0 - false_alarm_rate / (2.0 * d))


def max_column(stat: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per row, the largest ``|stat|`` over columns and its column (-1 where it is 0 or NaN)."""
    return stats.max_abs_column(np.ascontiguousarray(stat))


def check_params(alpha: float, min_samples: int, baseline: str = "ewma",
                 forecast: bool = False) -> None:
    """Validate the baseline parameters every chart shares (ValueError naming the parameter)."""
    if not isinstance(forecast, bool):
        raise ValueError(f"forecast must be true or false; got {forecast!r}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got {baseline!r}")
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha (baseline weight, memory ~1/alpha) must be in (0, 1); got {alpha}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
        raise ValueError(f"min_samples must be an integer >= 2; got {min_samples!r}")


class ChartDetector(Detector):
    """Plumbing shared by the chart detectors: lazy state, max over columns, checkpoints."""

    kind = "chart"
    alpha: float
    min_samples: int
    baseline: str = "ewma"
    forecast: bool = False
    # Runtime state, built on the first batch (the class-level None is never mutated).
    _state: NDArray[np.float64] | None = None
    _forecast: NDArray[np.float64] | None = None

    def _chartable(self, rows: NDArray[np.float64], learn: NDArray[np.bool_]
                   ) -> NDArray[np.float64]:
        """What the chart sees: the values, or their one-step forecast residuals."""
        if not self.forecast:
            return rows
        st = self._forecast
        if st is None:
            st = self._forecast = forecast.new_forecast_state(rows.shape[1])
        elif st.shape[0] != rows.shape[1]:
            raise ValueError(f"{self.kind}: rows must keep {st.shape[0]} columns; got "
                             f"{rows.shape[1]}")
        return forecast.forecast_residuals(rows, learn, st, select_after=self.min_samples)

    @property
    def _alpha(self) -> float:
        """The kernels' baseline switch: 0.0 selects Welford."""
        return 0.0 if self.baseline == "welford" else float(self.alpha)

    def _new_state(self, d: int) -> NDArray[np.float64]:
        return stats.new_cusum_state(d)

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        raise NotImplementedError

    def _state_for(self, d: int) -> NDArray[np.float64]:
        state = self._state
        if state is None:
            state = self._new_state(d)
            self._state = state
        elif state.shape[0] != d:
            raise ValueError(f"{self.kind}: rows must keep {state.shape[0]} columns; got {d}")
        return state

    def score_learn(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> ScoreBatch:
        rows = as_feature_matrix(x)
        mask = as_learn_mask(learn, rows.shape[0])
        chart = self._chartable(rows, mask)
        stat = self._statistic(chart, mask, self._state_for(rows.shape[1]))
        score, top = max_column(stat)
        return ScoreBatch(score=score, top=top)

    def get_state(self) -> State:
        state = self._state
        return {
            "kind": self.kind,
            "baseline": self.baseline,  # the spread column means M2 (welford) or a variance
            "stats": None if state is None else state.copy(),
            "forecast": None if self._forecast is None else self._forecast.copy(),
        }

    def set_state(self, state: State) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"state is for kind {state.get('kind')!r}, not {self.kind!r}")
        if state.get("baseline", self.baseline) != self.baseline:
            raise ValueError(f"state was learned with baseline {state['baseline']!r}; this "
                             f"detector uses {self.baseline!r}: keep the baseline or relearn")
        saved = state.get("forecast")
        if self.forecast and "forecast" not in state:
            raise ValueError(f"{self.kind} state was learned on raw values; this detector "
                             f"charts forecast residuals: relearn")
        self._forecast = None if saved is None else np.array(saved, dtype=np.float64, order="C")
        if self._forecast is not None and self._forecast.shape[1:] != \
                forecast.new_forecast_state(1).shape[1:]:
            raise ValueError(f"forecast state must have shape (d, "
                             f"{forecast.new_forecast_state(1).shape[1]}); got "
                             f"{self._forecast.shape}")
        arr = state["stats"]
        if arr is None:
            self._state = None
            return
        arr = np.array(arr, dtype=np.float64, order="C")  # a private copy
        expected = self._new_state(1).shape[1]
        if arr.ndim != 2 or arr.shape[1] != expected or arr.shape[0] < 1:
            raise ValueError(f"{self.kind} stats must have shape (d, {expected}); got {arr.shape}")
        self._state = arr


class ZScoreDetector(ChartDetector):
    """``|x - mean| / std`` against a Welford or EWMA baseline (spikes and steps).

    With ``stuck`` (the default) it also watches each column for a frozen value: the surprise of
    the current run of exact repeats (the flat-line statistic, calibrated to the sensor's own
    repeat rate) is turned into sigma units - the normal quantile of the same tail probability
    - and a column scores the larger of the two. So the default detector sees a transmitter
    that froze at a normal value, which no distance from the mean can.
    """

    kind = "zscore"
    _stuck: NDArray[np.float64] | None = None

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        return normal_limit(false_alarm_rate, d)

    def __init__(
        self, baseline: str = "ewma", alpha: float = 0.001, min_samples: int = 100,
        forecast: bool = False, stuck: bool = True,
    ) -> None:
        check_params(alpha, min_samples, baseline, forecast)
        if not isinstance(stuck, bool):
            raise ValueError(f"stuck must be true or false; got {stuck!r}")
        self.forecast = forecast
        self.stuck = stuck
        self.baseline = baseline
        self.alpha = alpha
        self.min_samples = min_samples

    def _new_state(self, d: int) -> NDArray[np.float64]:
        return stats.new_welford_state(d)

    def score_learn(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> ScoreBatch:
        if not self.stuck:
            return super().score_learn(x, learn)
        rows = as_feature_matrix(x)
        mask = as_learn_mask(learn, rows.shape[0])
        z = self._statistic(self._chartable(rows, mask), mask, self._state_for(rows.shape[1]))
        st = self._stuck
        if st is None:
            st = self._stuck = robust.new_flatline_state(rows.shape[1])
        # The raw values repeat, not their residuals: the run is counted on what arrives.
        surprise = robust.flatline(rows, mask, st, alpha=self.alpha,
                                   min_samples=self.min_samples)[0]
        frozen = sigma_of_surprise(surprise)
        with np.errstate(invalid="ignore"):
            z = np.where(frozen > np.abs(z), frozen, z)
        score, top = max_column(z)
        return ScoreBatch(score=score, top=top)

    def get_state(self) -> State:
        state = super().get_state()
        state["stuck"] = None if self._stuck is None else self._stuck.copy()
        return state

    def set_state(self, state: State) -> None:
        super().set_state(state)
        saved = state.get("stuck")
        self._stuck = None if saved is None else np.array(saved, dtype=np.float64, order="C")
        if self._stuck is not None and self._stuck.shape[1:] != (4,):
            raise ValueError(f"stuck state must have shape (d, 4); got {self._stuck.shape}")

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        if self.baseline == "welford":
            return stats.welford_z(x, learn, state, min_samples=self.min_samples)[0]
        return stats.ewma_z(x, learn, state, alpha=self.alpha, min_samples=self.min_samples)[0]


class EwmaChart(ChartDetector):
    """EWMA control chart (``lam``) of z-scores, in units of its own sigma (small shifts)."""

    kind = "ewma"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        return normal_limit(false_alarm_rate, d)

    def __init__(
        self, lam: float = 0.2, baseline: str = "ewma", alpha: float = 0.001,
        min_samples: int = 100, forecast: bool = True,
    ) -> None:
        check_params(alpha, min_samples, baseline, forecast)
        self.forecast = forecast
        if not (0.0 < lam <= 1.0):
            raise ValueError(f"lam (chart weight, 0.05-0.25 is usual) must be in (0, 1]; got {lam}")
        self.lam = lam
        self.baseline = baseline
        self.alpha = alpha
        self.min_samples = min_samples

    def _new_state(self, d: int) -> NDArray[np.float64]:
        return stats.new_ewma_chart_state(d)

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return stats.ewma_chart(
            x, learn, state, lam=self.lam, alpha=self._alpha, min_samples=self.min_samples
        )[0]


class CusumDetector(ChartDetector):
    """Self-starting two-sided CUSUM with slack ``k`` sigma (steps and drifts of ~2k sigma).

    The sums are kept at most ``limit`` sigma: evidence beyond any sensible threshold adds
    nothing to the decision, but without a ceiling a fault lasting T values would hold the score
    above threshold for about ``T × (shift - k) / k`` values after it ends. The default 30 leaves
    room for thresholds up to a false-alarm rate of ``2 e^(-2 k 30)`` (2e-13 for k = 0.5) and
    clears within ``(30 - h) / k`` values (about 40 for h = 10). The score is the sum before
    the ceiling, so while a fault goes on it stays above a threshold that has learned the limit.
    """

    kind = "cusum"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        return math.log(2.0 * d / false_alarm_rate) / (2.0 * self.k)  # Kingman's bound

    def __init__(
        self, k: float = 0.5, limit: float = 30.0, baseline: str = "ewma", alpha: float = 0.001,
        min_samples: int = 100, forecast: bool = True,
    ) -> None:
        check_params(alpha, min_samples, baseline, forecast)
        self.forecast = forecast
        if not (0.0 <= k < 10.0):
            raise ValueError(f"k (slack, half the shift to find) must be in [0, 10) sigma; got {k}")
        if not limit > 0.0:
            raise ValueError(f"limit (ceiling of the sums in sigma) must be > 0; got {limit}")
        self.k = k
        self.limit = limit
        self.baseline = baseline
        self.alpha = alpha
        self.min_samples = min_samples

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return stats.cusum(
            x, learn, state, k=self.k, alpha=self._alpha, min_samples=self.min_samples,
            limit=self.limit,
        )[0]


class PageHinkleyDetector(ChartDetector):
    """Two-sided Page-Hinkley test, tolerance ``delta`` sigma, against the all-time mean.

    The statistic equals a CUSUM with ``k = delta``; the defaults make it the slow-drift chart:
    a Welford reference that a drift cannot drag along and a small ``delta`` (0.25: tuned to
    0.5 sigma shifts, and drifts of ~0.001-0.01 sigma per value). ``limit`` as in
    :class:`CusumDetector`; 60 gives the same headroom for ``delta = 0.25``.
    """

    kind = "page_hinkley"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        return math.log(2.0 * d / false_alarm_rate) / (2.0 * self.delta)

    def __init__(
        self, delta: float = 0.25, limit: float = 60.0, baseline: str = "welford",
        alpha: float = 0.001, min_samples: int = 100, forecast: bool = False,
    ) -> None:
        check_params(alpha, min_samples, baseline, forecast)
        self.forecast = forecast
        if not (0.0 <= delta < 10.0):
            raise ValueError(f"delta (tolerated change in sigma) must be in [0, 10); got {delta}")
        if not limit > 0.0:
            raise ValueError(f"limit (ceiling of the sums in sigma) must be > 0; got {limit}")
        self.delta = delta
        self.limit = limit
        self.baseline = baseline
        self.alpha = alpha
        self.min_samples = min_samples

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return stats.page_hinkley(
            x, learn, state, delta=self.delta, alpha=self._alpha, min_samples=self.min_samples,
            limit=self.limit,
        )[0]


class RobustZDetector(ChartDetector):
    """``|x - median| / (1.4826 MAD)`` from streaming estimates (spikes in heavy-tailed data)."""

    kind = "robust_z"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        return normal_limit(false_alarm_rate, d)

    def __init__(self, alpha: float = 0.001, min_samples: int = 100, forecast: bool = False
                 ) -> None:
        check_params(alpha, min_samples, forecast=forecast)
        self.forecast = forecast
        self.alpha = alpha
        self.min_samples = min_samples

    def _new_state(self, d: int) -> NDArray[np.float64]:
        return robust.new_robust_state(d)

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return robust.robust_z(x, learn, state, alpha=self.alpha, min_samples=self.min_samples)[0]


class FlatlineDetector(ChartDetector):
    """A stuck sensor: surprise (nats) of the current run of exactly repeated values.

    Shewhart-type charts only see a stuck value if it sits far from the mean (Western Electric
    rule 4 sees it within 8 values if it is off the centre line at all); this one sees any
    frozen value within a few samples, calibrated to the sensor's own repeat rate.
    """

    kind = "flatline"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        return math.log(d / false_alarm_rate)

    def __init__(self, alpha: float = 0.001, min_samples: int = 100) -> None:
        check_params(alpha, min_samples)
        self.alpha = alpha
        self.min_samples = min_samples

    def _new_state(self, d: int) -> NDArray[np.float64]:
        return robust.new_flatline_state(d)

    def _statistic(
        self, x: NDArray[np.float64], learn: NDArray[np.bool_], state: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        return robust.flatline(x, learn, state, alpha=self.alpha, min_samples=self.min_samples)[0]
