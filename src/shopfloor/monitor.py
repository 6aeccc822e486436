"""Detector, threshold and alarm run together, exactly as if one sample at a time.

Per sample the chain is: score (before learning), threshold in force, exceedance, alarm step,
and then learning only if the alarm allows it (learning pauses during an alarm, so a fault is
not learned as the new normal). That feedback makes the chain sequential, yet the kernels are
fast only on batches. So a batch is run speculatively with every sample learned; if the alarm
says a sample should not have been learned, the batch is rolled back to a snapshot, the exact
prefix is replayed, and the chain steps sample by sample while the alarm is active. Healthy
streams stay on the batch path; the result never depends on how samples were batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import StageSpec
from shopfloor.detect.alarm import Alarm
from shopfloor.detect.base import Detector, ScoreBatch, State
from shopfloor.detect.registry import DETECTORS, THRESHOLDS, build
from shopfloor.detect.threshold import Threshold

__all__ = ["Monitor", "MonitorBatch"]


@dataclass(frozen=True, slots=True)
class MonitorBatch:
    """Per-sample results of one batch (all arrays of length n)."""

    score: NDArray[np.float64]
    threshold: NDArray[np.float64]
    top: NDArray[np.int64]
    rules: NDArray[np.uint8]
    state: NDArray[np.uint8]
    raised: NDArray[np.bool_]
    cleared: NDArray[np.bool_]
    learned: NDArray[np.bool_]
    # The sample ended an alarm by adopting the shifted level as the new baseline.
    adopted: NDArray[np.bool_]
    # Signal time at which the alarm in force (ACTIVE) started: its first exceedance; NaN else.
    onset: NDArray[np.float64]
    # How improbable the recent scores are against the signal's long-run scores, in [0, 1].
    likelihood: NDArray[np.float64]

    @classmethod
    def empty(cls, n: int) -> MonitorBatch:
        return cls(
            score=np.full(n, np.nan),
            threshold=np.full(n, np.nan),
            top=np.full(n, -1, dtype=np.int64),
            rules=np.zeros(n, dtype=np.uint8),
            state=np.zeros(n, dtype=np.uint8),
            raised=np.zeros(n, dtype=np.bool_),
            cleared=np.zeros(n, dtype=np.bool_),
            learned=np.zeros(n, dtype=np.bool_),
            adopted=np.zeros(n, dtype=np.bool_),
            onset=np.full(n, np.nan),
            likelihood=np.full(n, np.nan),
        )

    def put(self, at: slice | NDArray[np.intp], other: MonitorBatch) -> None:
        """Write ``other`` into positions ``at`` of this batch."""
        for name in self.__slots__:
            getattr(self, name)[at] = getattr(other, name)


class Monitor:
    """Detector -> threshold -> alarm for one signal or asset."""

    def __init__(self, detector: Detector, threshold: Threshold, alarm: Alarm) -> None:
        self.detector = detector
        self.threshold = threshold
        self.alarm = alarm

    @classmethod
    def from_spec(cls, spec: StageSpec, features: int) -> Monitor:
        """Build from a validated :class:`~shopfloor.config.StageSpec` for rows of ``features``.

        A quantile threshold without an ``initial`` value starts from the detector's nominal
        threshold for its false-alarm rate, until it has learned enough scores to calibrate.
        """
        detector = build(DETECTORS, spec.detector)
        threshold_spec = dict(spec.threshold)
        if threshold_spec.get("kind") == "quantile" and "initial" not in threshold_spec:
            rate = build(THRESHOLDS, threshold_spec).false_alarm_rate
            threshold_spec["initial"] = detector.nominal_threshold(rate, features)
        return cls(detector, build(THRESHOLDS, threshold_spec), Alarm(**spec.alarm))

    def process(
        self, x: NDArray[np.float64], times: NDArray[np.float64] | None = None
    ) -> MonitorBatch:
        """Run the chain over validated rows ``x`` (n, d) at signal ``times`` (n,) seconds."""
        n = x.shape[0]
        out = MonitorBatch.empty(n)
        pos = 0
        while pos < n:
            if self.alarm.pause_learning and (self.alarm.active or self.detector.row_model):
                out.put(slice(pos, pos + 1), self._step(x[pos : pos + 1]))
                pos += 1
                continue
            rest = x[pos:]
            if not self.alarm.pause_learning:
                out.put(slice(pos, n), self._batch(rest, np.ones(len(rest), dtype=np.bool_)))
                break
            snapshot = self.get_state()
            trial = self._batch(rest, np.ones(len(rest), dtype=np.bool_))
            refused = np.flatnonzero(~trial.learned)
            if refused.size == 0:
                out.put(slice(pos, n), trial)
                break
            # Everything before the first refused sample was computed exactly; replay just that
            # prefix from the snapshot, then let the refused sample take the per-sample path.
            self.set_state(snapshot)
            first = int(refused[0])
            if first:
                out.put(
                    slice(pos, pos + first),
                    self._batch(x[pos : pos + first], np.ones(first, dtype=np.bool_)),
                )
            out.put(
                slice(pos + first, pos + first + 1), self._step(x[pos + first : pos + first + 1])
            )
            pos += first + 1
        return out

    def _batch(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> MonitorBatch:
        scored = self.detector.score_learn(x, learn)
        threshold = self.threshold.apply(scored.score, learn)
        alarm = self.alarm.update(_exceeds(scored.score, threshold))
        return _result(scored, threshold, alarm.state, alarm.raised, alarm.cleared, alarm.learn)

    def _step(self, row: NDArray[np.float64]) -> MonitorBatch:
        # Score without committing to learning; learn only if the alarm allows it. Detectors may
        # keep observation state (CUSUM sums, rule windows) that moves even when they do not
        # learn, so "score then learn" is done as "learn, and roll back if refused" - except
        # for row models, whose scoring moves nothing and whose snapshots are expensive.
        if self.detector.row_model:
            scored = self.detector.score_learn(row, np.zeros(1, dtype=np.bool_))
            threshold = self.threshold.apply(scored.score, np.zeros(1, dtype=np.bool_))
            alarm = self.alarm.update(_exceeds(scored.score, threshold))
            self.threshold.apply(scored.score, alarm.learn, alarm.withheld)
            if alarm.learn[0]:
                self.detector.learn_one(row)
            return _result(scored, threshold, alarm.state, alarm.raised, alarm.cleared, alarm.learn)
        before = self.detector.get_state()
        scored = self.detector.score_learn(row, np.ones(1, dtype=np.bool_))
        threshold = self.threshold.apply(scored.score, np.zeros(1, dtype=np.bool_))
        alarm = self.alarm.update(_exceeds(scored.score, threshold))
        # The threshold counts withheld exceedances (capped) so it does not drift down by
        # only ever learning scores below itself.
        self.threshold.apply(scored.score, alarm.learn, alarm.withheld)
        if not alarm.learn[0]:
            self.detector.set_state(before)
            scored = self.detector.score_learn(row, np.zeros(1, dtype=np.bool_))
        return _result(scored, threshold, alarm.state, alarm.raised, alarm.cleared, alarm.learn)

    def get_state(self) -> State:
        """Detector, threshold and alarm state together."""
        return {
            "detector": self.detector.get_state(),
            "threshold": self.threshold.get_state(),
            "alarm": self.alarm.get_state(),
        }

    def set_state(self, state: State) -> None:
        """Restore what :meth:`get_state` returned."""
        self.detector.set_state(state["detector"])
        self.threshold.set_state(state["threshold"])
        self.alarm.set_state(state["alarm"])


def _exceeds(score: NDArray[np.float64], threshold: NDArray[np.float64]) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        return np.asarray(score > threshold, dtype=np.bool_)  # NaN never exceeds


def _result(scored: ScoreBatch, threshold: NDArray[np.float64], *alarm: Any) -> MonitorBatch:
    n = len(scored.score)
    rules = scored.rules if scored.rules is not None else np.zeros(n, dtype=np.uint8)
    state, raised, cleared, learned = alarm
    return MonitorBatch(
        score=scored.score,
        threshold=threshold,
        top=scored.top,
        rules=rules,
        state=np.asarray(state, dtype=np.uint8),
        raised=raised,
        cleared=cleared,
        learned=learned,
        adopted=np.zeros(n, dtype=np.bool_),
        onset=np.full(n, np.nan),
        likelihood=np.full(n, np.nan),
    )
