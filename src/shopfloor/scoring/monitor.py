"""Detector, threshold and alarm run together, exactly as if one sample at a time.

Per sample the chain is: score (before learning), threshold in force, exceedance, alarm step,
and then learning only if the alarm allows it (learning pauses during an alarm, so a fault is
not learned as the new normal). That feedback makes the chain sequential, yet the kernels are
fast only on batches. So a batch is run speculatively with every sample learned; if the alarm
says a sample should not have been learned, the batch is rolled back to a snapshot, the exact
prefix is replayed, and the chain steps sample by sample while the alarm is active. Healthy
streams stay on the batch path; the result never depends on how samples were batched.

The alarm's lifecycle (see :mod:`shopfloor.scoring.detect.alarm`) ends every alarm: it clears, or
its shift is adopted as the new normal after ``adapt_after`` seconds of signal time, or a gap longer
than ``gap_reset`` re-warms the signal. An adoption or a gap resets the detector, which then
re-warms; the threshold keeps its calibration. After the chain, each score also gets its anomaly
likelihood (:mod:`shopfloor.scoring.kernels.likelihood`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import StageSpec
from shopfloor.scoring.detect.alarm import Alarm, AlarmBatch
from shopfloor.scoring.detect.base import Detector, ScoreBatch, State
from shopfloor.scoring.detect.registry import DETECTORS, THRESHOLDS, build
from shopfloor.scoring.detect.threshold import CALIBRATED, Threshold
from shopfloor.scoring.kernels import likelihood as _likelihood

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
    """Detector -> threshold -> alarm -> likelihood for one signal or asset.

    The alarm's lifecycle reaches back into the detector: when an alarm is adopted (its shift
    has lasted ``adapt_after``) or the signal resumes after a gap longer than ``gap_reset``,
    the detector is reset and re-warms on what comes next (its scores are 0.0 for its own
    ``min_samples``), while the threshold, whose scores are in the detector's units, keeps its
    calibration.
    """

    #: Long-run memory of the likelihood, in samples.
    LIKELIHOOD_WINDOW = 2000.0

    def __init__(self, detector: Detector, threshold: Threshold, alarm: Alarm) -> None:
        self.detector = detector
        self.threshold = threshold
        self.alarm = alarm
        self._likelihood = _likelihood.new_state()

    @classmethod
    def from_spec(cls, spec: StageSpec, features: int) -> Monitor:
        """Build from a validated :class:`~shopfloor.config.StageSpec` for rows of ``features``.

        A calibrated threshold (quantile, pot) without an ``initial`` value starts from the
        detector's nominal threshold for its false-alarm rate, until it has learned enough
        scores to calibrate.
        """
        detector = build(DETECTORS, spec.detector)
        threshold_spec = dict(spec.threshold)
        if threshold_spec.get("kind") in CALIBRATED and "initial" not in threshold_spec:
            rate = build(THRESHOLDS, threshold_spec).false_alarm_rate
            threshold_spec["initial"] = detector.nominal_threshold(rate, features)
        return cls(detector, build(THRESHOLDS, threshold_spec), Alarm(**spec.alarm))

    def process(
        self, x: NDArray[np.float64], times: NDArray[np.float64] | None = None
    ) -> MonitorBatch:
        """Run the chain over validated rows ``x`` (n, d) at signal ``times`` (n,) seconds."""
        n = x.shape[0]
        t = self.alarm.sample_clock(n) if times is None else np.asarray(times, dtype=np.float64)
        out = MonitorBatch.empty(n)
        start = 0
        for gap in [*self._gaps(t), n]:
            if gap > start:
                out.put(slice(start, gap), self._segment(x[start:gap], t[start:gap]))
            if gap < n:  # the signal resumes after a gap: re-warm, end an alarm in force
                ended = self.alarm.resume(float(t[gap]))
                self.detector.reset()
                seg = self._segment(x[gap : gap + 1], t[gap : gap + 1])
                seg.cleared[0] |= ended
                out.put(slice(gap, gap + 1), seg)
                start = gap + 1
        out.likelihood[:] = _likelihood.likelihood(
            out.score, out.threshold, self._likelihood, window=self.LIKELIHOOD_WINDOW)
        return out

    def _gaps(self, t: NDArray[np.float64]) -> list[int]:
        """Positions of samples that come more than ``gap_reset`` after all before them."""
        if not np.isfinite(self.alarm.gap_reset) or not len(t):
            return []
        before = np.fmax.accumulate(np.r_[self.alarm.last_time, t])[:-1]
        with np.errstate(invalid="ignore"):
            return [int(i) for i in np.flatnonzero(t - before > self.alarm.gap_reset)]

    def _segment(self, x: NDArray[np.float64], t: NDArray[np.float64]) -> MonitorBatch:
        n = x.shape[0]
        out = MonitorBatch.empty(n)
        pos = 0
        while pos < n:
            if (self.alarm.pause_learning and self.alarm.active) or self.detector.row_model:
                out.put(slice(pos, pos + 1), self._step(x[pos : pos + 1], t[pos : pos + 1]))
                pos += 1
                continue
            rest = x[pos:]
            snapshot = self.get_state()
            trial = self._batch(rest, t[pos:])
            # The batch path is exact up to the first sample the alarm would not learn, or
            # whose alarm is adopted (the detector must be reset right after it).
            stop = np.flatnonzero(~trial.learned | trial.adopted)
            if stop.size == 0:
                out.put(slice(pos, n), trial)
                break
            self.set_state(snapshot)
            first = int(stop[0])
            if first:
                out.put(slice(pos, pos + first),
                        self._batch(x[pos : pos + first], t[pos : pos + first]))
            out.put(slice(pos + first, pos + first + 1),
                    self._step(x[pos + first : pos + first + 1], t[pos + first : pos + first + 1]))
            pos += first + 1
        return out

    def _batch(self, x: NDArray[np.float64], t: NDArray[np.float64]) -> MonitorBatch:
        learn = np.ones(len(x), dtype=np.bool_)
        scored = self.detector.score_learn(x, learn)
        threshold = self.threshold.apply(scored.score, learn)
        return _result(scored, threshold, self.alarm.update(_exceeds(scored.score, threshold), t))

    def _step(self, row: NDArray[np.float64], t: NDArray[np.float64]) -> MonitorBatch:
        # Score without committing to learning; learn only if the alarm allows it. Detectors may
        # keep observation state (CUSUM sums, rule windows) that moves even when they do not
        # learn, so "score then learn" is done as "learn, and roll back if refused" - except
        # for row models, whose scoring moves nothing and whose snapshots are expensive.
        if self.detector.row_model:
            scored = self.detector.score_learn(row, np.zeros(1, dtype=np.bool_))
            threshold = self.threshold.apply(scored.score, np.zeros(1, dtype=np.bool_))
            alarm = self.alarm.update(_exceeds(scored.score, threshold), t)
            learn = alarm.learn & ~alarm.adopted
            self.threshold.apply(scored.score, learn, alarm.withheld)
            if learn[0]:
                self.detector.learn_one(row)
        else:
            before = self.detector.get_state()
            scored = self.detector.score_learn(row, np.ones(1, dtype=np.bool_))
            threshold = self.threshold.apply(scored.score, np.zeros(1, dtype=np.bool_))
            alarm = self.alarm.update(_exceeds(scored.score, threshold), t)
            # The threshold counts withheld exceedances (capped) so it does not drift down by
            # only ever learning scores below itself.
            self.threshold.apply(scored.score, alarm.learn & ~alarm.adopted, alarm.withheld)
            if not alarm.learn[0]:
                self.detector.set_state(before)
                scored = self.detector.score_learn(row, np.zeros(1, dtype=np.bool_))
        if alarm.adopted[0]:
            # The shift is the new normal: the detector re-warms on what follows.
            self.detector.reset()
        return _result(scored, threshold, alarm)

    def get_state(self) -> State:
        """Detector, threshold, alarm and likelihood state together."""
        return {
            "detector": self.detector.get_state(),
            "threshold": self.threshold.get_state(),
            "alarm": self.alarm.get_state(),
            "likelihood": self._likelihood.copy(),
        }

    def set_state(self, state: State) -> None:
        """Restore what :meth:`get_state` returned (a state without a likelihood, from an
        older checkpoint, starts the likelihood afresh)."""
        self.detector.set_state(state["detector"])
        self.threshold.set_state(state["threshold"])
        self.alarm.set_state(state["alarm"])
        fresh = _likelihood.new_state()
        saved = np.asarray(state.get("likelihood", fresh), dtype=np.float64)
        if saved.shape != fresh.shape:
            raise ValueError(f"likelihood state must have shape {fresh.shape}; got {saved.shape}")
        self._likelihood = np.array(saved, copy=True)


def _exceeds(score: NDArray[np.float64], threshold: NDArray[np.float64]) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        return np.asarray(score > threshold, dtype=np.bool_)  # NaN never exceeds


def _result(scored: ScoreBatch, threshold: NDArray[np.float64], alarm: AlarmBatch
            ) -> MonitorBatch:
    n = len(scored.score)
    rules = scored.rules if scored.rules is not None else np.zeros(n, dtype=np.uint8)
    return MonitorBatch(
        score=scored.score,
        threshold=threshold,
        top=scored.top,
        rules=rules,
        state=np.asarray(alarm.state, dtype=np.uint8),
        raised=alarm.raised,
        cleared=alarm.cleared,
        learned=alarm.learn,
        adopted=alarm.adopted,
        onset=alarm.onset,
        likelihood=np.full(n, np.nan),  # filled once per process() call, in time order
    )
