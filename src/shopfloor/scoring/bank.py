"""Signal banks: scalar signals that share a stage configuration, scored as rows of one state.

A :class:`SignalPipeline` is a chain of Python objects per signal, and with one sample per
signal per drain that fixed cost, not the arithmetic, decides how many signals a device can
watch. A :class:`ScalarBank` keeps every signal of one stage configuration as a row of a few
arrays and scores a drain's samples of all of them in one compiled call
(:func:`shopfloor.scoring.kernels.bank.bank_steps`), in arrival order per signal. Its results equal
the per-signal pipeline's bit for bit, for any batching and interleaving, and its checkpoint
entries are the pipeline's own (:meth:`ScalarBank.get_state` returns what
:meth:`SignalPipeline.get_state` would), so a signal moves between a bank and a pipeline with
its state.

A bank holds the default chain: the z-score detector on raw values (EWMA or Welford baseline,
with or without the stuck-value watch), the peaks-over-threshold or a fixed threshold, any alarm
settings, the likelihood. Other configurations (forecast residuals, other detectors, River)
stay per-signal pipelines: :meth:`ScalarBank.accepts` says which.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import SignalSpec, StageSpec
from shopfloor.scoring.detect.base import State
from shopfloor.scoring.detect.charts import ZScoreDetector
from shopfloor.scoring.detect.gate import MAX_MAGNITUDE, Reject
from shopfloor.scoring.detect.tail import TailThreshold
from shopfloor.scoring.detect.threshold import FixedThreshold
from shopfloor.scoring.diagnosis import DiagnosisBatch, FrameDiagnosis, split_frame_options
from shopfloor.scoring.features import FrameFeatures
from shopfloor.scoring.kernels import alarm as _alarm
from shopfloor.scoring.kernels import likelihood as _likelihood
from shopfloor.scoring.kernels import robust, stats
from shopfloor.scoring.kernels import tail as _tail
from shopfloor.scoring.kernels.bank import PARAMS, bank_steps
from shopfloor.scoring.monitor import Monitor, MonitorBatch

__all__ = ["BankBatch", "FrameBank", "ScalarBank"]

_REJECT_CODES = len(Reject)


@dataclass(frozen=True, slots=True)
class BankBatch:
    """Per-sample results of one call, in the order the samples were given (for frames:
    their feature rows and diagnosis too)."""

    rows: NDArray[np.int64]
    values: NDArray[np.float64]
    times: NDArray[np.float64]
    reason: NDArray[np.uint8]
    result: MonitorBatch
    features: NDArray[np.float64] | None = None
    diagnosis: DiagnosisBatch | None = None


def _chain(stage: StageSpec, features: int = 1) -> Monitor | None:
    """The per-signal chain this stage builds for rows of ``features`` columns, if a bank can
    hold it (None if not)."""
    monitor = Monitor.from_spec(stage, features)
    d, t = monitor.detector, monitor.threshold
    if type(d) is not ZScoreDetector or d.forecast or type(t) not in (TailThreshold,
                                                                       FixedThreshold):
        return None
    return monitor


class ScalarBank:
    """Scalar signals of one stage configuration as rows of state arrays (see module doc)."""

    def __init__(self, stage: StageSpec, capacity: int = 16, features: int = 1) -> None:
        self.d = features  # columns a row's detector charts: 1, or a frame's features
        monitor = _chain(stage, features)
        if monitor is None:
            raise ValueError(f"a bank holds the z-score with a pot or fixed threshold; this "
                             f"stage has "
                             f"{dict(stage.detector)} and {dict(stage.threshold)}")
        self.stage = stage
        d, t, a = monitor.detector, monitor.threshold, monitor.alarm
        assert isinstance(d, ZScoreDetector)
        # A fixed threshold has no state: its rows keep an empty tail (the kernel skips it).
        fixed = t.value if isinstance(t, FixedThreshold) else math.nan
        tail = t if isinstance(t, TailThreshold) else TailThreshold()
        memory = tail._memory()
        values = {
            "alpha": d.alpha, "z_alpha": d._alpha, "min_samples": d.min_samples,
            "stuck": float(d.stuck), "calibration": tail.calibration,
            "rate": tail.false_alarm_rate, "level": tail.level, "keep": 0.5 ** (1.0 / memory),
            "skip": tail.skip, "rise": 2.0 ** (1.0 / memory),
            "initial": math.nan if tail.initial is None else tail.initial,
            "floor": math.nan if tail.floor is None else tail.floor, "fixed": fixed,
            "warmup": a.warmup, "raise_after": a.raise_after, "clear_after": a.clear_after,
            "cooldown": a.cooldown, "pause_learning": float(a.pause_learning),
            "max_pause": a.max_pause, "adapt_after": a.adapt_after, "gap_reset": a.gap_reset,
            "like_alpha": 1.0 / Monitor.LIKELIHOOD_WINDOW,
        }
        self.params = np.array([float(values[name]) for name in PARAMS])
        self.stuck = d.stuck
        self.fixed = not math.isnan(fixed)
        self.calibration = 0 if self.fixed else tail.calibration
        self.ids: list[str] = []
        self.specs: list[SignalSpec] = []
        self.row: dict[str, int] = {}
        # Rejections the worker counts itself (duplicate, out_of_order, ...), per row.
        self.other: list[Counter[str]] = []
        self._allocate(max(capacity, 1))

    #: The kind of signal a bank of this class holds.
    kind = "scalar"

    @classmethod
    def accepts(cls, spec: SignalSpec) -> bool:
        """Whether a bank of this class can hold this signal (its kind, the default chain)."""
        return spec.kind == cls.kind and _chain(spec.stage) is not None

    def __len__(self) -> int:
        return len(self.ids)

    # --- rows -------------------------------------------------------------------------------

    def _fresh(self, n: int) -> tuple[NDArray[Any], ...]:
        """State arrays of ``n`` rows that have learned nothing (see kernels.bank)."""
        flat = np.zeros((n, self.d, 4))
        flat[:, :, 1] = np.nan
        return (np.zeros((n, self.d, 3)), flat,
                np.tile(_tail.new_tail_state(self.calibration), (n, 1)),
                np.tile(_alarm.new_alarm_state(), (n, 1)),
                np.tile(_alarm.new_alarm_times(), (n, 1)),
                np.tile(_likelihood.new_state(), (n, 1)),
                np.ones(n, dtype=np.bool_), np.full(n, -np.inf), np.full(n, np.inf),
                np.zeros(n, dtype=np.int64), np.zeros((n, _REJECT_CODES), dtype=np.int64),
                np.full(n, np.nan))

    def _allocate(self, capacity: int) -> None:
        arrays = self._fresh(capacity)
        if hasattr(self, "z"):
            for new, old in zip(arrays, self._arrays(), strict=True):
                new[: len(self.ids)] = old[: len(self.ids)]
        (self.z, self.flat, self.tail, self.counters, self.alarm_times, self.like, self.fresh,
         self.low, self.high, self.scored, self.rejected, self.last_value) = arrays

    def _arrays(self) -> tuple[NDArray[Any], ...]:
        return (self.z, self.flat, self.tail, self.counters, self.alarm_times, self.like,
                self.fresh, self.low, self.high, self.scored, self.rejected, self.last_value)

    def _clear(self, r: int) -> None:
        for mine, new in zip(self._arrays(), self._fresh(1), strict=True):
            mine[r] = new[0]
        self.other[r] = Counter()

    def add(self, spec: SignalSpec) -> int:
        """A new row for ``spec`` (a fresh state); returns its index."""
        if spec.id in self.row:
            raise ValueError(f"signal {spec.id} is in the bank already")
        # The bank's own stage was checked when it was built: no need to build its chain again.
        if spec.kind != self.kind or spec.stage != self.stage:
            raise ValueError(f"signal {spec.id}: its kind or stage is not this bank's")
        if len(self.ids) == self.z.shape[0]:
            self._allocate(2 * self.z.shape[0])
        r = len(self.ids)
        self.other.append(Counter())
        self._clear(r)
        if spec.valid_range is not None:
            self.low[r], self.high[r] = (float(v) for v in spec.valid_range)
        self.ids.append(spec.id)
        self.specs.append(spec)
        self.row[spec.id] = r
        return r

    def remove(self, sid: str) -> None:
        """Drop a signal's row; the last row moves into its place."""
        r = self.row.pop(sid)
        last = len(self.ids) - 1
        if r != last:
            for arr in self._arrays():
                arr[r] = arr[last]
            self.ids[r], self.specs[r] = self.ids[last], self.specs[last]
            self.other[r] = self.other[last]
            self.row[self.ids[r]] = r
        self.ids.pop()
        self.specs.pop()
        self.other.pop()

    # --- scoring ----------------------------------------------------------------------------

    def process(self, rows: NDArray[np.int64], values: NDArray[np.float64],
                times: NDArray[np.float64]) -> BankBatch:
        """Score ``values[i]`` of row ``rows[i]`` at signal time ``times[i]`` (seconds), in
        the order given: each row's samples in its own time order, rows interleaved freely."""
        r = np.ascontiguousarray(rows, dtype=np.int64)
        v = np.ascontiguousarray(values, dtype=np.float64)
        t = np.ascontiguousarray(times, dtype=np.float64)
        n = r.shape[0]
        if v.shape != (n,) or t.shape != (n,):
            raise ValueError(f"rows, values and times must have one shape (n,); got "
                             f"{r.shape}, {v.shape}, {t.shape}")
        if n and (r.min() < 0 or r.max() >= len(self.ids)):
            raise ValueError(f"rows must index the bank's {len(self.ids)} signals")
        out = MonitorBatch.empty(n)
        reason = np.zeros(n, dtype=np.uint8)
        self._steps(r, v.reshape(n, 1), t, reason, out, gate=True)
        return BankBatch(r, v, t, reason, out)

    def _steps(self, rows: NDArray[np.int64], rows_of_features: NDArray[np.float64],
               times: NDArray[np.float64], reason: NDArray[np.uint8], out: MonitorBatch,
               gate: bool) -> None:
        bank_steps(rows, rows_of_features, times, self.z, self.flat, self.tail, self.counters,
                   self.alarm_times, self.like, self.fresh, self.low, self.high, self.scored,
                   self.rejected, self.last_value, self.params, reason, out.score,
                   out.threshold, out.top, out.state, out.raised, out.cleared, out.adopted,
                   out.learned, out.onset, out.likelihood,
                   np.empty(len(rows), dtype=np.bool_), gate)

    # --- per-signal views (checkpoints, metrics) --------------------------------------------

    def rejected_of(self, sid: str) -> Counter[str]:
        """A signal's rejections by reason label (the gate's and the worker's)."""
        r = self.row[sid]
        counts = Counter({Reject(code).label: int(c)
                          for code, c in enumerate(self.rejected[r]) if c})
        counts.update(self.other[r])
        return counts

    def get_state(self, sid: str) -> State:
        """What :meth:`SignalPipeline.get_state` returns for this signal."""
        r = self.row[sid]
        fresh = bool(self.fresh[r])
        detector: State = {
            "kind": ZScoreDetector.kind,
            "baseline": "welford" if self.params[PARAMS.index("z_alpha")] == 0.0 else "ewma",
            "stats": None if fresh else self.z[r].copy(),
            "forecast": None,
            "stuck": None if fresh or not self.stuck else self.flat[r].copy(),
        }
        return {
            "monitor": {
                "detector": detector,
                "threshold": {} if self.fixed else {"tail": self.tail[r].copy()},
                "alarm": {"counters": self.counters[r].copy(),
                          "times": self.alarm_times[r].copy()},
                "likelihood": self.like[r].copy(),
            },
            "scored": int(self.scored[r]),
            "rejected": dict(self.rejected_of(sid)),
        }

    def set_state(self, sid: str, state: State) -> None:
        """Restore a signal's checkpoint entry (a pipeline's or a bank's: they are the same).

        The entry is validated by the per-signal chain first, so a bad entry raises
        ValueError as a pipeline's restore does, and leaves the row as it was.
        """
        r = self.row[sid]
        monitor = _chain(self.stage, self.d)
        assert monitor is not None
        monitor.set_state(state["monitor"])
        scored = int(state["scored"])
        rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})
        st = monitor.get_state()
        det = st["detector"]
        fresh = det["stats"] is None
        z = stats.new_ewma_state(self.d) if fresh \
            else np.asarray(det["stats"], dtype=np.float64)
        flat = robust.new_flatline_state(self.d) if det.get("stuck") is None \
            else np.asarray(det["stuck"], dtype=np.float64)
        if z.shape != (self.d, 3) or flat.shape != (self.d, 4):
            raise ValueError(f"signal {sid}: the detector has {self.d} column(s) here; the "
                             f"entry has {z.shape} and {flat.shape}")
        self.z[r] = z
        self.flat[r] = flat
        self.fresh[r] = fresh
        if not self.fixed:
            self.tail[r] = st["threshold"]["tail"]
        self.counters[r] = st["alarm"]["counters"]
        self.alarm_times[r] = st["alarm"]["times"]
        self.like[r] = st["likelihood"]
        self.scored[r] = scored
        self.rejected[r] = 0
        self.other[r] = Counter()
        gate = {c.label: int(c) for c in Reject}
        for label, count in rejected.items():
            if label in gate:
                self.rejected[r, gate[label]] = count
            else:  # the worker's own reasons (duplicate, out_of_order, ...)
                self.other[r][label] = count

    def reset(self, sid: str) -> None:
        """The signal's row as new (its valid range kept): a refused restore starts cold."""
        r = self.row[sid]
        low, high = self.low[r], self.high[r]
        self._clear(r)
        self.low[r], self.high[r] = low, high


class FrameBank(ScalarBank):
    """Frame signals of one stage and one feature configuration as rows of state arrays.

    A call's frames - of every signal, equal in length - go through one feature pass (one
    batched FFT), then the bank kernel charts each row's features as the per-signal chain
    does (the z-score of every feature, the largest one scored); each signal's diagnosis (its
    learned spectral levels) stays an object of its own. Results equal the per-signal
    pipeline's bit for bit.
    """

    def __init__(self, stage: StageSpec, features: Mapping[str, Any], capacity: int = 16
                 ) -> None:
        frame_options, self.diagnosis_options = split_frame_options(features)
        self.frames = FrameFeatures(**frame_options)
        self.names = self.frames.names
        self.feature_options = dict(features)
        self.diagnoses: list[FrameDiagnosis] = []
        super().__init__(stage, capacity, features=len(self.names))

    kind = "frame"

    def add(self, spec: SignalSpec) -> int:
        if dict(spec.features) != self.feature_options:
            raise ValueError(f"signal {spec.id}: its features are not this bank's")
        self.diagnoses.append(FrameDiagnosis(self.names, **self.diagnosis_options))
        try:
            return super().add(spec)
        except ValueError:
            self.diagnoses.pop()
            raise

    def remove(self, sid: str) -> None:
        r, last = self.row[sid], len(self.ids) - 1
        self.diagnoses[r] = self.diagnoses[last]
        self.diagnoses.pop()
        super().remove(sid)

    def reset(self, sid: str) -> None:
        super().reset(sid)
        self.diagnoses[self.row[sid]] = FrameDiagnosis(self.names, **self.diagnosis_options)

    def process(self, rows: NDArray[np.int64], values: NDArray[np.float64],
                times: NDArray[np.float64]) -> BankBatch:
        """Score frames ``values`` (n, frame_len) of rows ``rows`` at ``times`` (see
        :meth:`ScalarBank.process`)."""
        r = np.ascontiguousarray(rows, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        t = np.ascontiguousarray(times, dtype=np.float64)
        n = r.shape[0]
        if v.ndim != 2 or v.shape[0] != n or t.shape != (n,):
            raise ValueError(f"frames must be (n, frame_len) with rows and times (n,); got "
                             f"{v.shape}, {r.shape}, {t.shape}")
        if n and (r.min() < 0 or r.max() >= len(self.ids)):
            raise ValueError(f"rows must index the bank's {len(self.ids)} signals")
        # The gate of frames (SampleGate.check, with each row's own valid range).
        reason = np.zeros(n, dtype=np.uint8)
        if v.size:
            with np.errstate(invalid="ignore"):
                huge = (np.isfinite(v) & (np.abs(v) > MAX_MAGNITUDE)).any(axis=1)
                out_of_range = ((v < self.low[r][:, None]) | (v > self.high[r][:, None])).any(
                    axis=1)
            reason[huge] = Reject.IMPLAUSIBLE
            reason[out_of_range & (reason == 0)] = Reject.OUT_OF_RANGE
        if n:
            batch = self.frames.compute(v)
            features = batch.values
            reason[(reason == 0) & batch.rejected] = Reject.MISSING_SAMPLES
        else:
            features = np.empty((0, self.d))
        # A frame whose features are still non-finite (all samples lost) is not learned.
        reason[(reason == 0) & ~np.isfinite(features).all(axis=1)] = Reject.NAN
        out = MonitorBatch.empty(n)
        self._steps(r, np.ascontiguousarray(features), t, reason, out, gate=False)
        diagnosis = DiagnosisBatch.empty(n)
        for row in np.unique(r).tolist():  # each signal's diagnosis, its frames in order
            mine = np.flatnonzero(r == row)
            part = self.diagnoses[row].process(features[mine], out.learned[mine])
            diagnosis.defect[mine], diagnosis.zone[mine] = part.defect, part.zone
            diagnosis.ratio[mine] = part.ratio
        refused = reason != 0
        diagnosis.defect[refused], diagnosis.zone[refused] = 0, 0
        diagnosis.ratio[refused] = np.nan
        return BankBatch(r, features[:, 0] if n else np.empty(0), t, reason, out, features,
                         diagnosis)

    def get_state(self, sid: str) -> State:
        state = super().get_state(sid)
        state["diagnosis"] = self.diagnoses[self.row[sid]].get_state()
        return state

    def set_state(self, sid: str, state: State) -> None:
        # As SignalPipeline.set_state: an entry from before the diagnosis existed restores
        # the rest, and the diagnosis learns its levels afresh.
        fresh = FrameDiagnosis(self.names, **self.diagnosis_options)
        if "diagnosis" in state:
            fresh.set_state(state["diagnosis"])
        super().set_state(sid, state)
        self.diagnoses[self.row[sid]] = fresh
