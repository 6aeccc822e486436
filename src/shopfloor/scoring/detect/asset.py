"""Asset-level multivariate detector: several signals of one machine scored together.

Univariate charts watch each signal against its own normal range. They miss a correlation
break: two signals that always move together (spindle current and spindle temperature, inlet and
outlet pressure) decouple while each stays within its own range. :class:`AssetDetector` scores
the whole row of an asset's signals by its Mahalanobis distance (Hotelling T²) from an
exponentially forgetting mean and covariance, so such a break scores high, and it names the
signal that contributed most (``ScoreBatch.top``).

The arithmetic lives in :mod:`shopfloor.scoring.kernels.covariance`; this module holds parameters
and state.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import (
    Detector,
    ScoreBatch,
    State,
    as_feature_matrix,
    as_learn_mask,
)
from shopfloor.scoring.kernels.covariance import CovarianceState, mahalanobis_score_learn
from shopfloor.scoring.kernels.forecast import forecast_residuals, new_forecast_state

__all__ = ["AssetDetector"]


def _number(name: str, value: object) -> float:
    # Config values arrive untyped; a string must fail with the parameter's name, not a
    # comparison TypeError.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


class AssetDetector(Detector):
    """Hotelling T² of an asset's signal vector, naming the signal that contributed most.

    Each row (one value per signal) is scored by ``T² = δᵀ Ĉ⁻¹ δ`` against the mean and
    covariance of the rows learned before it, weighted by ``2^(−age/half_life)``; ``Ĉ`` carries a
    small ridge so that a constant or collinear signal does not make it singular. For
    stationary Gaussian signals T² is close to chi-square with ``d`` degrees of freedom, so a
    quantile threshold (or the chi-square quantile) applies. ``top`` is the signal whose
    reconstruction from the others lowers T² the most (reconstruction-based contribution),
    which names the faulty signal of a single-signal fault, including a correlation break.

    Parameters
    ----------
    half_life
        Age, in learned rows, at which a row's weight in the mean and covariance has halved.
        ``math.inf`` never forgets. The effective sample size is about ``2.9 × half_life``.
    min_samples
        Rows to learn before scoring (>= 2); earlier rows score 0 with top −1. The covariance of
        d signals needs well over d rows to be trusted.
    ridge
        Relative ridge (0 to 1): ``ridge × variance`` is added to each signal's variance.
    min_variance
        Absolute variance floor (> 0, in squared signal units) added to every signal, so a
        signal that has been exactly constant does not make the covariance singular.
    forecast
        Score the vector of the signals' one-step forecast residuals
        (:mod:`shopfloor.scoring.kernels.forecast`, weights chosen on the first ``min_samples // 2``
        rows, which score 0.0) instead of their values. Default true: a signal with a cycle or
        a slow wander inflates its own variance in the covariance, and a step in it then
        hides inside that variance; its residuals keep only the noise, so the step stands out.

    Notes
    -----
    Rows with a NaN or inf score NaN (top −1) and are not learned; the pipeline already holds
    the last value of a missing signal, so this only guards the state.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> common = rng.normal(size=(2000, 1))
    >>> x = np.hstack([common, common, common]) + 0.1 * rng.normal(size=(2000, 3))
    >>> det = AssetDetector(half_life=500, min_samples=100)
    >>> _ = det.score_learn(x, np.ones(2000, dtype=bool))
    >>> batch = det.score_learn(np.array([[1.0, 1.0, -1.0]]), np.zeros(1, dtype=bool))
    >>> bool(batch.score[0] > 100.0), int(batch.top[0])
    (True, 2)
    """

    kind = "mahalanobis"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        # T² of d Gaussian signals is chi-square with d degrees of freedom; Wilson-Hilferty's
        # cube-root normal approximation of its quantile is within ~1 % for d >= 2.
        z = NormalDist().inv_cdf(1.0 - false_alarm_rate)
        c = 2.0 / (9.0 * d)
        return d * (1.0 - c + z * math.sqrt(c)) ** 3

    def __init__(
        self,
        half_life: float = 1000.0,
        min_samples: int = 200,
        ridge: float = 1e-6,
        min_variance: float = 1e-12,
        forecast: bool = True,
    ) -> None:
        half_life, ridge = _number("half_life", half_life), _number("ridge", ridge)
        min_variance = _number("min_variance", min_variance)
        if not (half_life > 0.0):
            raise ValueError(
                f"half_life must be > 0 samples (inf to never forget); got {half_life}"
            )
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
            raise ValueError(f"min_samples must be an integer >= 2; got {min_samples!r}")
        if not (0.0 <= ridge <= 1.0):
            raise ValueError(f"ridge must be in [0, 1]; got {ridge}")
        if not (math.isfinite(min_variance) and min_variance > 0.0):
            raise ValueError(f"min_variance must be a finite number > 0; got {min_variance}")
        self.half_life = half_life
        self.min_samples = min_samples
        self.ridge = ridge
        if not isinstance(forecast, bool):
            raise ValueError(f"forecast must be true or false; got {forecast!r}")
        self.min_variance = min_variance
        self.forecast = forecast
        self._state: CovarianceState | None = None
        self._forecast: NDArray[np.float64] | None = None

    @property
    def _select_after(self) -> int:
        return max(2, self.min_samples // 2)

    @property
    def n_nonfinite(self) -> int:
        """Rows refused so far because they held a NaN or inf."""
        return 0 if self._state is None else self._state.n_nonfinite

    def score_learn(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> ScoreBatch:
        """Score each row by T², then learn it where ``learn``; see :class:`AssetDetector`."""
        rows = as_feature_matrix(x)
        mask = as_learn_mask(learn, rows.shape[0])
        if rows.shape[1] < 1:
            raise ValueError("x must have at least one signal column")
        if self._state is None:
            self._state = CovarianceState.new(rows.shape[1])
        if self.forecast:
            if self._forecast is None:
                self._forecast = new_forecast_state(rows.shape[1])
            residuals = forecast_residuals(rows, mask, self._forecast,
                                           select_after=self._select_after)
            # While the forecasters choose, a finite row has no residual yet: it scores 0.0 (the
            # covariance has learned nothing) and is not learned.
            choosing = np.isfinite(rows).all(axis=1) & ~np.isfinite(residuals).all(axis=1)
            residuals[choosing] = 0.0
            rows, mask = residuals, mask & ~choosing
        score, top = mahalanobis_score_learn(
            rows,
            mask,
            self._state,
            half_life=self.half_life,
            ridge=self.ridge,
            min_variance=self.min_variance,
            min_samples=self.min_samples,
        )
        return ScoreBatch(score=score, top=top)

    def get_state(self) -> State:
        """Copies of the running arrays (``{"kind": ...}`` only before the first batch)."""
        state: dict[str, Any] = {"kind": self.kind}
        if self._state is not None:
            state.update(self._state.to_dict())
        if self._forecast is not None:
            state["forecast"] = self._forecast.copy()
        return state

    def set_state(self, state: State) -> None:
        """Restore :meth:`get_state` output; raises ValueError on a state of another kind."""
        if state.get("kind") != self.kind:
            raise ValueError(f"state is of kind {state.get('kind')!r}, not {self.kind!r}")
        arrays = {k: v for k, v in state.items() if k not in ("kind", "forecast")}
        if self.forecast and arrays and "forecast" not in state:
            raise ValueError("mahalanobis state was learned on raw values; this detector scores "
                             "forecast residuals: relearn")
        saved = state.get("forecast")
        self._forecast = None if saved is None else np.array(saved, dtype=np.float64, order="C")
        self._state = CovarianceState.from_dict(arrays) if arrays else None
