"""Western Electric run rules 1-4 as a detector, and the rule hits named for events and logs.

The rules (Western Electric Statistical Quality Control Handbook, 1956), against the learned
centre line and sigma of each column:

1. one value beyond 3 sigma;
2. two of three successive values beyond 2 sigma on the same side;
3. four of five successive values beyond 1 sigma on the same side;
4. eight successive values on the same side of the centre line.

See :mod:`shopfloor.scoring.kernels.rules` for exactly when a rule fires. Under stationary Gaussian
data each rule fires on about 0.27 %, 0.20 %, 0.45 % and 0.78 % of values respectively (about 1.5 %
for any rule), which is the classic price of the extra sensitivity: pair the detector with an alarm
that asks for persistence, or use the rule bits as diagnosis next to another score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import ScoreBatch, as_feature_matrix, as_learn_mask
from shopfloor.scoring.detect.charts import ChartDetector, check_params
from shopfloor.scoring.kernels import rules as rule_kernels

__all__ = ["RULES", "RuleHit", "WesternElectricDetector", "rule_hits", "severity"]


@dataclass(frozen=True, slots=True)
class RuleHit:
    """One control-chart rule, as reported in an event or a log line."""

    rule: int
    name: str
    description: str

    @property
    def bit(self) -> int:
        """This rule's bit in a ``ScoreBatch.rules`` mask."""
        return 1 << (self.rule - 1)


RULES: tuple[RuleHit, ...] = (
    RuleHit(1, "beyond_3_sigma", "one value beyond 3 sigma from the centre line"),
    RuleHit(2, "two_of_three_beyond_2_sigma",
            "two of three successive values beyond 2 sigma on the same side"),
    RuleHit(3, "four_of_five_beyond_1_sigma",
            "four of five successive values beyond 1 sigma on the same side"),
    RuleHit(4, "eight_on_one_side", "eight successive values on the same side of the centre line"),
)


def rule_hits(mask: int) -> list[RuleHit]:
    """The rules set in ``mask`` (bit k-1 = rule k), in rule order.

    >>> [hit.rule for hit in rule_hits(0b1001)]
    [1, 4]
    """
    mask = int(mask)
    if not 0 <= mask < 256:
        raise ValueError(f"mask must be a uint8 rule bitmask in [0, 255]; got {mask}")
    return [hit for hit in RULES if mask & hit.bit]


def severity(z: NDArray[np.float64], bits: NDArray[np.uint8]) -> NDArray[np.float64]:
    """Score of each value: 0 if no rule fired, else the number of rules fired, with rule 1
    counted as ``|z| / 3`` (> 1) so that a larger outlier is more severe.

    Any fired rule scores at least 1, so a fixed threshold of 0.5 means "any rule fired".
    """
    z2 = np.ascontiguousarray(z, dtype=np.float64).reshape(-1, 1)
    bits2 = np.ascontiguousarray(bits, dtype=np.uint8).reshape(-1, 1)
    return rule_kernels.worst_column(z2, bits2)[0].reshape(np.shape(z))


class WesternElectricDetector(ChartDetector):
    """Western Electric rules 1-4 per column against an EWMA or Welford baseline.

    Parameters
    ----------
    baseline
        ``"ewma"`` (default, memory ~``1/alpha`` values) or ``"welford"``; see
        :mod:`shopfloor.scoring.detect.charts` for the drift trade-off.
    alpha
        Baseline weight, in (0, 1); 0.001 by default.
    min_samples
        Values learned before any rule is evaluated (score 0.0 until then); 100 by default.

    The score is :func:`severity` of the ``top`` column (the most severe one) and
    ``ScoreBatch.rules`` carries that column's rule bits; decode them with :func:`rule_hits`.
    """

    kind = "western_electric"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        # The rules are the decision: any hit scores >= 1, so 0.5 reads "a rule fired". Their
        # own in-control rate (about 1.5 % of samples) is the price of the extra sensitivity.
        return 0.5

    def __init__(
        self, baseline: str = "ewma", alpha: float = 0.001, min_samples: int = 100,
        forecast: bool = True,
    ) -> None:
        check_params(alpha, min_samples, baseline, forecast)
        self.forecast = forecast
        self.baseline = baseline
        self.alpha = alpha
        self.min_samples = min_samples

    def _new_state(self, d: int) -> NDArray[np.float64]:
        return rule_kernels.new_rules_state(d)

    def score_learn(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> ScoreBatch:
        rows = as_feature_matrix(x)
        mask = as_learn_mask(learn, rows.shape[0])
        chart = self._chartable(rows, mask)
        state = self._state_for(rows.shape[1])
        z, bits, _ = rule_kernels.western_electric(
            chart, mask, state, alpha=self._alpha, min_samples=self.min_samples
        )
        score, top, rules = rule_kernels.worst_column(z, bits)
        return ScoreBatch(score=score, top=top, rules=rules)
