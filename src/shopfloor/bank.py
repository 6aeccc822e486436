"""Signal banks: scalar signals that share a stage configuration, scored as rows of one state.

A :class:`SignalPipeline` is a chain of Python objects per signal, and with one sample per
signal per drain that fixed cost, not the arithmetic, decides how many signals a device can
watch. A :class:`ScalarBank` keeps every signal of one stage configuration as a row of a few
arrays and scores a drain's samples of all of them in one compiled call
(:func:`shopfloor.kernels.bank.bank_steps`), in arrival order per signal. Its results equal
the per-signal pipeline's bit for bit, for any batching and interleaving, and its checkpoint
entries are the pipeline's own (:meth:`ScalarBank.get_state` returns what
:meth:`SignalPipeline.get_state` would), so a signal moves between a bank and a pipeline with
its state.

A bank holds the default chain: the z-score detector on raw values (EWMA or Welford baseline,
with or without the stuck-value watch), the peaks-over-threshold threshold, any alarm
settings, the likelihood. Other configurations (forecast residuals, other detectors, River)
stay per-signal pipelines: :meth:`ScalarBank.accepts` says which.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import SignalSpec, StageSpec
from shopfloor.detect.base import State
from shopfloor.detect.charts import ZScoreDetector
from shopfloor.detect.gate import Reject
from shopfloor.detect.tail import TailThreshold
from shopfloor.kernels import alarm as _alarm
from shopfloor.kernels import likelihood as _likelihood
from shopfloor.kernels import robust, stats
from shopfloor.kernels import tail as _tail
from shopfloor.kernels.bank import PARAMS, bank_steps
from shopfloor.monitor import Monitor, MonitorBatch

__all__ = ["BankBatch", "ScalarBank"]

_REJECT_CODES = len(Reject)


@dataclass(frozen=True, slots=True)
class BankBatch:
    """Per-sample results of one call, in the order the samples were given."""

    rows: NDArray[np.int64]
    values: NDArray[np.float64]
    times: NDArray[np.float64]
    reason: NDArray[np.uint8]
    result: MonitorBatch


def _chain(stage: StageSpec) -> Monitor | None:
    """The per-signal chain this stage builds, if a bank can hold it (None if not)."""
    monitor = Monitor.from_spec(stage, 1)
    d, t = monitor.detector, monitor.threshold
    if type(d) is not ZScoreDetector or d.forecast or type(t) is not TailThreshold:
        return None
    return monitor


class ScalarBank:
    """Scalar signals of one stage configuration as rows of state arrays (see module doc)."""

    def __init__(self, stage: StageSpec, capacity: int = 16) -> None:
        monitor = _chain(stage)
        if monitor is None:
            raise ValueError(f"a bank holds the z-score / pot chain; this stage has "
                             f"{dict(stage.detector)} and {dict(stage.threshold)}")
        self.stage = stage
        d, t, a = monitor.detector, monitor.threshold, monitor.alarm
        assert isinstance(d, ZScoreDetector)
        assert isinstance(t, TailThreshold)
        memory = t._memory()
        values = {
            "alpha": d.alpha, "z_alpha": d._alpha, "min_samples": d.min_samples,
            "stuck": float(d.stuck), "calibration": t.calibration, "rate": t.false_alarm_rate,
            "level": t.level, "keep": 0.5 ** (1.0 / memory), "skip": t.skip,
            "rise": 2.0 ** (1.0 / memory),
            "initial": math.nan if t.initial is None else t.initial,
            "floor": math.nan if t.floor is None else t.floor,
            "warmup": a.warmup, "raise_after": a.raise_after, "clear_after": a.clear_after,
            "cooldown": a.cooldown, "pause_learning": float(a.pause_learning),
            "max_pause": a.max_pause, "adapt_after": a.adapt_after, "gap_reset": a.gap_reset,
            "like_alpha": 1.0 / Monitor.LIKELIHOOD_WINDOW,
        }
        self.params = np.array([float(values[name]) for name in PARAMS])
        self.stuck = d.stuck
        self.calibration = t.calibration
        self.ids: list[str] = []
        self.specs: list[SignalSpec] = []
        self.row: dict[str, int] = {}
        # Rejections the worker counts itself (duplicate, out_of_order, ...), per row.
        self.other: list[Counter[str]] = []
        self._allocate(max(capacity, 1))

    @staticmethod
    def accepts(spec: SignalSpec) -> bool:
        """Whether a bank can hold this signal (a scalar one with the default chain)."""
        return spec.kind == "scalar" and _chain(spec.stage) is not None

    def __len__(self) -> int:
        return len(self.ids)

    # --- rows -------------------------------------------------------------------------------

    def _fresh(self, n: int) -> tuple[NDArray[Any], ...]:
        """State arrays of ``n`` rows that have learned nothing (see kernels.bank)."""
        flat = np.zeros((n, 4))
        flat[:, 1] = np.nan
        return (np.zeros((n, 3)), flat,
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
        if not self.accepts(spec) or spec.stage != self.stage:
            raise ValueError(f"signal {spec.id}: its stage is not this bank's")
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
        reason = np.empty(n, dtype=np.uint8)
        bank_steps(r, v, t, self.z, self.flat, self.tail, self.counters, self.alarm_times,
                   self.like, self.fresh, self.low, self.high, self.scored, self.rejected,
                   self.last_value, self.params, reason, out.score, out.threshold, out.top,
                   out.state, out.raised, out.cleared, out.adopted, out.learned, out.onset,
                   out.likelihood, np.empty(n, dtype=np.bool_))
        return BankBatch(r, v, t, reason, out)

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
            "stats": None if fresh else self.z[r : r + 1].copy(),
            "forecast": None,
            "stuck": None if fresh or not self.stuck else self.flat[r : r + 1].copy(),
        }
        return {
            "monitor": {
                "detector": detector,
                "threshold": {"tail": self.tail[r].copy()},
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
        monitor = _chain(self.stage)
        assert monitor is not None
        monitor.set_state(state["monitor"])
        scored = int(state["scored"])
        rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})
        st = monitor.get_state()
        det = st["detector"]
        fresh = det["stats"] is None
        z = stats.new_ewma_state(1) if fresh else np.asarray(det["stats"], dtype=np.float64)
        flat = robust.new_flatline_state(1) if det.get("stuck") is None \
            else np.asarray(det["stuck"], dtype=np.float64)
        if z.shape != (1, 3) or flat.shape != (1, 4):
            raise ValueError(f"signal {sid}: a scalar signal's detector has one column; the "
                             f"entry has {z.shape} and {flat.shape}")
        self.z[r] = z[0]
        self.flat[r] = flat[0]
        self.fresh[r] = fresh
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
