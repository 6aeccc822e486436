"""Pipelines per signal and per asset: the single code path of the agent and of replay.

A signal's pipeline is gate -> features -> monitor (detector, threshold, alarm). An asset's
pipeline holds the latest accepted value of each of its signals and scores the vector with the
multivariate detector, which names the signal that contributed most. A :class:`Plant` is all
pipelines of one configuration, with one state for checkpoints.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import AssetSpec, PipelineConfig, SignalSpec, StageSpec, asset_id
from shopfloor.scoring.bank import FrameBank, ScalarBank
from shopfloor.scoring.detect.alarm import sample_clock
from shopfloor.scoring.detect.base import State
from shopfloor.scoring.detect.gate import Reject, SampleGate
from shopfloor.scoring.diagnosis import DiagnosisBatch, FrameDiagnosis, split_frame_options
from shopfloor.scoring.features import FrameFeatures
from shopfloor.scoring.kernels.bank import PARAMS
from shopfloor.scoring.monitor import Monitor, MonitorBatch

__all__ = ["AssetBatch", "AssetPipeline", "BankedSignal", "Plant", "Signal", "SignalBatch",
           "SignalPipeline"]


@dataclass(frozen=True, slots=True)
class SignalBatch:
    """Per-sample (or per-frame) results of one signal's batch; rejected rows have NaN scores."""

    reason: NDArray[np.uint8]  # Reject code per row, 0 = accepted
    features: NDArray[np.float64]  # (n, d) feature rows (the value itself for scalar signals)
    result: MonitorBatch
    # Frame signals: suspected defect and ISO zone per row (none/unknown for rejected rows).
    diagnosis: DiagnosisBatch | None = None


@dataclass(frozen=True, slots=True)
class AssetBatch:
    """Per-row results of an asset's multivariate detector; ``top`` indexes ``signals``."""

    signals: tuple[str, ...]
    result: MonitorBatch
    rows: NDArray[np.float64]  # the rows as scored: held values filled in (NaN: never seen)


class SignalPipeline:
    """Gate, features and monitor for one signal."""

    def __init__(self, spec: SignalSpec, subscription: int = -1) -> None:
        self.spec = spec
        self.subscription = subscription  # index of the subscription it was found on, or -1
        self.gate = SampleGate(spec.valid_range)
        self.frames: FrameFeatures | None = None
        self.diagnosis: FrameDiagnosis | None = None
        if spec.kind == "frame":
            frame_options, diagnosis_options = split_frame_options(spec.features)
            self.frames = FrameFeatures(**frame_options)
            self.diagnosis = FrameDiagnosis(self.frames.names, **diagnosis_options)
        self.feature_names: tuple[str, ...] = self.frames.names if self.frames else ("value",)
        self.monitor = Monitor.from_spec(spec.stage, len(self.feature_names))
        self.rejected: Counter[str] = Counter()
        self.scored = 0

    def process(
        self, values: NDArray[np.float64], times: NDArray[np.float64] | None = None
    ) -> SignalBatch:
        """Score samples (n,) of a scalar signal or frames (n, frame_len) of a frame signal.

        ``times`` (n,) are the samples' signal times in seconds (epoch or any clock that moves
        with the signal); they drive the alarm's ``adapt_after`` and the ``gap_reset``. Without
        them each sample counts as one second after the previous one.
        """
        v = np.asarray(values, dtype=np.float64)
        expected = 2 if self.frames else 1
        if v.ndim != expected:
            raise ValueError(f"signal {self.spec.id}: expected {expected}-D input, got {v.ndim}-D")
        reason = self.gate.check(v)
        if self.frames is not None:
            batch = self.frames.compute(v) if len(v) else None
            features = batch.values if batch is not None else np.empty((0, len(self.feature_names)))
            if batch is not None:
                reason[(reason == 0) & batch.rejected] = Reject.MISSING_SAMPLES
            # A frame whose features are still non-finite (all samples lost) is not learned.
            bad = (reason == 0) & ~np.isfinite(features).all(axis=1)
            reason[bad] = Reject.NAN
        else:
            features = v.reshape(-1, 1)
        ok = np.flatnonzero(reason == 0)
        result = _run(self.monitor, features, ok, times)
        diagnosis = None
        if self.diagnosis is not None:  # learns what the monitor learned, nothing else
            diagnosis = self.diagnosis.process(features, result.learned)
            refused = reason != 0
            diagnosis.defect[refused], diagnosis.zone[refused] = 0, 0
            diagnosis.ratio[refused] = np.nan
        self.scored += int(ok.size)
        if ok.size < len(reason):  # the common case, all accepted, skips the counting
            for code, count in zip(*np.unique(reason[reason != 0], return_counts=True),
                                   strict=True):
                self.rejected[Reject(int(code)).label] += int(count)
        return SignalBatch(reason=reason, features=features, result=result, diagnosis=diagnosis)

    def reject(self, reason: str, count: int) -> None:
        """Count samples the worker refused before scoring (duplicate, out_of_order, ...)."""
        self.rejected[reason] += count

    @property
    def last_time(self) -> float:
        """The latest signal time scored (NaN before any)."""
        return self.monitor.alarm.last_time

    @property
    def warmup(self) -> int:
        """Samples the alarm ignores while the model is young."""
        return self.monitor.alarm.warmup

    def reset(self) -> None:
        """Forget everything learned and counted: a refused restore starts cold."""
        self.__init__(self.spec, self.subscription)  # type: ignore[misc]

    def get_state(self) -> State:
        state: State = {
            "monitor": self.monitor.get_state(),
            "scored": self.scored,
            "rejected": dict(self.rejected),
        }
        if self.diagnosis is not None:
            state["diagnosis"] = self.diagnosis.get_state()
        return state

    def set_state(self, state: State) -> None:
        if self.diagnosis is not None:
            # A checkpoint from before the diagnosis existed restores everything else; the
            # diagnosis then learns its levels afresh.
            options = split_frame_options(self.spec.features)[1]
            fresh = FrameDiagnosis(self.diagnosis.names, **options)
            if "diagnosis" in state:
                fresh.set_state(state["diagnosis"])
            self.diagnosis = fresh
        self.monitor.set_state(state["monitor"])
        self.scored = int(state["scored"])
        self.rejected = Counter({str(k): int(v) for k, v in state["rejected"].items()})


class BankedSignal:
    """A scalar signal whose state is a row of a :class:`~shopfloor.scoring.bank.ScalarBank`: the
    surface of a :class:`SignalPipeline` (process, counts, checkpoint entry) over that row, so
    replay, checkpoints and metrics need not know. The agent's worker scores the rows of a
    drain together through the bank instead (its results are the same, bit for bit)."""

    def __init__(self, bank: ScalarBank, spec: SignalSpec, subscription: int = -1) -> None:
        self.bank = bank
        self.frames: FrameFeatures | None = None
        self.feature_names: tuple[str, ...] = ("value",)
        if isinstance(bank, FrameBank):
            self.frames, self.feature_names = bank.frames, bank.names
        self.spec = spec
        self.sid = spec.id  # computed once: a spec's id is built from its parts each time
        self.subscription = subscription
        bank.add(spec)

    @property
    def row(self) -> int:
        return self.bank.row[self.sid]

    @property
    def scored(self) -> int:
        return int(self.bank.scored[self.row])

    @property
    def rejected(self) -> Counter[str]:
        """Rejections by reason (a copy: count with :meth:`reject`)."""
        return self.bank.rejected_of(self.sid)

    def reject(self, reason: str, count: int) -> None:
        self.bank.other[self.row][reason] += count

    @property
    def last_time(self) -> float:
        return float(self.bank.alarm_times[self.row, 2])

    @property
    def warmup(self) -> int:
        return int(self.bank.params[PARAMS.index("warmup")])

    def process(
        self, values: NDArray[np.float64], times: NDArray[np.float64] | None = None
    ) -> SignalBatch:
        """As :meth:`SignalPipeline.process`, through the bank."""
        v = np.asarray(values, dtype=np.float64)
        expected = 2 if self.frames else 1
        if v.ndim != expected:
            raise ValueError(f"signal {self.spec.id}: expected {expected}-D input, got "
                             f"{v.ndim}-D")
        if times is None:  # one second apart after the latest time, as the alarm's clock
            t = sample_clock(self.last_time, int(self.bank.counters[self.row, 0]), len(v))
        else:
            t = np.asarray(times, dtype=np.float64).reshape(-1)
            if t.shape[0] != len(v):
                raise ValueError(f"times must have one entry per row: {t.shape[0]} for "
                                 f"{len(v)} rows")
        batch = self.bank.process(np.full(len(v), self.row, dtype=np.int64), v, t)
        features = v.reshape(-1, 1) if batch.features is None else batch.features
        return SignalBatch(reason=batch.reason, features=features, result=batch.result,
                           diagnosis=batch.diagnosis)

    def reset(self) -> None:
        self.bank.reset(self.sid)

    def get_state(self) -> State:
        return self.bank.get_state(self.sid)

    def set_state(self, state: State) -> None:
        self.bank.set_state(self.sid, state)


#: What a signal's state lives in: its own chain of objects, or a row of a bank.
Signal = SignalPipeline | BankedSignal


class AssetPipeline:
    """The multivariate detector over the latest accepted value of each of an asset's signals."""

    def __init__(self, spec: AssetSpec, columns: tuple[int, ...]) -> None:
        self.spec = spec
        self.columns = columns  # which feature column of each signal enters the vector
        self.monitor = Monitor.from_spec(spec.stage, len(spec.signals))
        self.hold = np.full(len(spec.signals), np.nan)
        self.scored = 0

    def process(
        self, rows: NDArray[np.float64], times: NDArray[np.float64] | None = None
    ) -> AssetBatch:
        """Score rows (n, d): NaN means "no new value", so the held value is used instead.

        Rows in which some signal has never had a value are not scored.
        """
        r = np.array(rows, dtype=np.float64, copy=True).reshape(-1, len(self.spec.signals))
        for j in range(r.shape[1]):
            col = r[:, j]
            seen = np.isfinite(col)
            idx = _latest(seen)
            r[:, j] = np.where(idx >= 0, col[np.maximum(idx, 0)], self.hold[j])
            if len(col) and seen.any():
                self.hold[j] = col[np.flatnonzero(seen)[-1]]
        ok = np.flatnonzero(np.isfinite(r).all(axis=1))
        result = _run(self.monitor, r, ok, times)
        self.scored += int(ok.size)
        return AssetBatch(signals=self.spec.signals, result=result, rows=r)

    def get_state(self) -> State:
        return {
            "monitor": self.monitor.get_state(),
            "hold": self.hold.copy(),
            "scored": self.scored,
        }

    def set_state(self, state: State) -> None:
        self.monitor.set_state(state["monitor"])
        self.hold = np.array(state["hold"], dtype=np.float64, copy=True)
        self.scored = int(state["scored"])


class Plant:
    """Every signal and asset pipeline of one configuration.

    Scalar signals whose stage a :class:`~shopfloor.scoring.bank.ScalarBank` can hold live as rows
    of the bank of their stage (``banks``: one per distinct stage), unless ``banks=False`` asks for
    a pipeline each (the reference the banks are tested against).
    """

    def __init__(self, config: PipelineConfig, banks: bool = True) -> None:
        self.config = config
        self.use_banks = banks
        self.banks: dict[str, ScalarBank] = {}
        self._unbanked: set[str] = set()  # keys of stages no bank can hold
        self.signals: dict[str, Signal] = {}
        for spec in config.signals:
            self.signals[spec.id] = self._new(spec, -1)
        self._configured_assets = {s.asset for s in config.signals}
        # Gives a new run-time signal saved state (checkpoints of older versions set it).
        self.adopt: Callable[[Signal], Signal] = lambda pipe: pipe
        self.assets: dict[str, AssetPipeline] = {}
        self._members: frozenset[str] = frozenset()
        self._members_key: tuple[tuple[str, tuple[str, ...]], ...] = ()
        for a in config.assets:
            columns = []
            for name in a.signals:
                sp = self.signals[a.member(name)]
                if a.frame_feature not in sp.feature_names and sp.frames is not None:
                    raise ValueError(
                        f"asset {a.name}: frame_feature {a.frame_feature!r} is not a "
                        f"feature of {sp.spec.id}; it has {', '.join(sp.feature_names)}"
                    )
                columns.append(sp.feature_names.index(a.frame_feature) if sp.frames else 0)
            self.assets[a.id] = AssetPipeline(a, tuple(columns))

    def add_signal(self, spec: SignalSpec, subscription: int = -1,
                   asset_stage: StageSpec | None = None, asset_signals: int = 0
                   ) -> Signal:
        """Add the pipeline of a signal discovered at run time on ``subscription``.

        With an ``asset_stage``, the discovered signals of one asset (the first
        ``asset_signals`` of them, frame signals by their rms) share a multivariate detector
        once there are two: correlation breaks are what univariate charts miss. An asset whose
        detector is configured (``[[signals]]``/``[[assets]]``) is left as configured. The
        detector is built afresh when a member joins (its vector grows), so it warms up again;
        signals appear at start-up, and the cap bounds how often.
        """
        if spec.id in self.signals:
            raise ValueError(f"signal {spec.id} exists already")
        pipe = self.adopt(self._new(spec, subscription))
        self.signals[spec.id] = pipe
        self._regroup(spec.asset, spec.labels, asset_stage, asset_signals)
        return pipe

    def remove_signal(self, sid: str, asset_stage: StageSpec | None = None,
                      asset_signals: int = 0) -> None:
        """Drop the pipeline of a signal discovered at run time (evicted from a full table);
        its asset's detector is rebuilt without it, or dropped below two members."""
        pipe = self.signals.pop(sid)
        if isinstance(pipe, BankedSignal):
            pipe.bank.remove(sid)
        self._regroup(pipe.spec.asset, pipe.spec.labels, asset_stage, asset_signals)

    def asset_members(self) -> frozenset[str]:
        """Ids of the signals some asset detector takes its input from."""
        key = tuple((name, pipe.spec.signals) for name, pipe in self.assets.items())
        if key != self._members_key:
            self._members = frozenset(p.spec.member(s) for p in self.assets.values()
                                      for s in p.spec.signals)
            self._members_key = key
        return self._members

    def _new(self, spec: SignalSpec, subscription: int) -> Signal:
        """A signal's fresh state: a row of its stage's bank if one can hold it."""
        if not self.use_banks:
            return SignalPipeline(spec, subscription)
        frame = spec.kind == "frame"
        # Equal stages (and frame features), equal banks: the spec's tables are plain data.
        # Whether a stage banks is decided once per key (building its chain to see).
        key = repr((spec.stage, sorted(spec.features.items()) if frame else None))
        bank = self.banks.get(key)
        if bank is None:
            cls = FrameBank if frame else ScalarBank
            if key in self._unbanked or not cls.accepts(spec):
                self._unbanked.add(key)
                return SignalPipeline(spec, subscription)
            bank = self.banks[key] = (FrameBank(spec.stage, spec.features) if frame
                                      else ScalarBank(spec.stage))
        return BankedSignal(bank, spec, subscription)

    def _regroup(self, name: str, labels: tuple[tuple[str, str], ...],
                 asset_stage: StageSpec | None, asset_signals: int) -> None:
        # The asset detector of discovered signals: its first asset_signals members (of the
        # same asset on the same line: labels are part of an asset's identity too).
        if asset_stage is None or name in self._configured_assets:
            return
        members = [p for p in self.signals.values() if p.spec.asset == name
                   and p.spec.labels == labels and p.subscription >= 0][:asset_signals]
        names = tuple(p.spec.name for p in members)
        key = asset_id(name, labels)
        current = self.assets.get(key)
        if len(members) < 2:
            self.assets.pop(key, None)
        elif current is None or current.spec.signals != names:
            asset = AssetSpec(name, names, asset_stage, labels=labels)
            self.assets[key] = AssetPipeline(asset, tuple(
                p.feature_names.index(asset.frame_feature) if p.frames else 0
                for p in members))

    def asset_row(self, asset: str, batches: dict[str, SignalBatch]) -> NDArray[np.float64]:
        """The asset detector's input rows from its signals' batches of equal length.

        Rejected samples become NaN, i.e. "hold the last accepted value".
        """
        pipe = self.assets[asset]
        parts = []
        for name, col in zip(pipe.spec.signals, pipe.columns, strict=True):
            b = batches[pipe.spec.member(name)]
            values = b.features[:, col].copy()
            values[b.reason != 0] = np.nan
            parts.append(values)
        return np.column_stack(parts) if parts else np.empty((0, 0))

    def process(
        self, columns: Mapping[str, NDArray[np.float64]],
        times: NDArray[np.float64] | None = None,
    ) -> tuple[dict[str, SignalBatch], dict[str, AssetBatch]]:
        """Score samples taken at shared ``times`` (a table's rows): each signal its column,
        then each asset the rows its signals make (rejected samples hold the last value)."""
        signals = {sid: self.signals[sid].process(v, times) for sid, v in columns.items()}
        assets = {
            name: pipe.process(self.asset_row(name, signals), times)
            for name, pipe in self.assets.items()
        }
        return signals, assets

    def get_state(self) -> State:
        return {
            "signals": {k: p.get_state() for k, p in self.signals.items()},
            "assets": {k: p.get_state() for k, p in self.assets.items()},
        }

    def set_state(self, state: State) -> None:
        """Restore pipelines present in ``state``; new ones keep their fresh state."""
        for k, s in state.get("signals", {}).items():
            if k in self.signals:
                self.signals[k].set_state(s)
        for k, s in state.get("assets", {}).items():
            if k in self.assets:
                self.assets[k].set_state(s)


def _latest(mask: NDArray[np.bool_]) -> NDArray[np.intp]:
    """Index of the latest True at or before each position, -1 before the first."""
    idx = np.where(mask, np.arange(len(mask)), -1)
    np.maximum.accumulate(idx, out=idx)
    return idx


def _run(monitor: Monitor, rows: NDArray[np.float64], ok: NDArray[np.intp],
         times: NDArray[np.float64] | None) -> MonitorBatch:
    """Monitor the accepted rows; rows not scored report the alarm state in force at their time."""
    t = None if times is None else np.asarray(times, dtype=np.float64).reshape(-1)
    if t is not None and t.shape[0] != len(rows):
        raise ValueError(f"times must have one entry per row: {t.shape[0]} for {len(rows)} rows")
    if ok.size == len(rows):  # every row accepted: the monitor's result is the batch's
        return monitor.process(np.ascontiguousarray(rows), t)
    before = monitor.alarm.state
    result = MonitorBatch.empty(len(rows))
    if ok.size:
        result.put(ok, monitor.process(np.ascontiguousarray(rows[ok]),
                                       None if t is None else t[ok]))
    accepted = np.zeros(len(rows), dtype=np.bool_)
    accepted[ok] = True
    idx = _latest(accepted)
    result.state[:] = np.where(idx >= 0, result.state[np.maximum(idx, 0)], before)
    return result
