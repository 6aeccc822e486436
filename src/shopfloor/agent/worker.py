"""The worker: drains the queue in batches, runs each signal's pipeline, reports changes.

Items are grouped per signal, keeping their order, so each pipeline sees one batch of samples
(or of equally long frames) per drain: the kernels run on arrays, not one message at a time.
Pipelines for signals first seen on a subscription are built here, never in the network thread.
Assets configured with a multivariate detector get one row per distinct timestamp of their
signals' accepted samples (signals missing at that time hold their last value).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from shopfloor.agent.config import AgentConfig
from shopfloor.agent.status import (
    AlarmChange,
    AssetStatus,
    SignalCounts,
    SignalStatus,
    SignalTable,
)
from shopfloor.agent.worker_banks import Member, score_banks
from shopfloor.logs import RateLimitedLog
from shopfloor.receiving.codecs import Frame, Samples
from shopfloor.receiving.ingest import BoundedQueue, Item, finish
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.diagnosis import DEFECTS, ZONES
from shopfloor.scoring.monitor import MonitorBatch
from shopfloor.scoring.pipeline import AssetPipeline, BankedSignal, Plant, Signal, SignalBatch

__all__ = ["Abandoned", "AlarmChange", "AssetStatus", "SignalCounts", "SignalStatus",
           "SignalTable", "Worker"]


log = logging.getLogger("shopfloor.agent.worker")


class Abandoned(Exception):
    """The agent is stopping: the batch in progress is left unfinished."""


class Flag(Protocol):
    """A stop flag: a thread's Event, or a process-shared one for a scoring process."""

    def is_set(self) -> bool: ...
    def set(self) -> None: ...


class Worker:
    """Runs pipelines over queued items; ``on_change`` and ``on_state`` receive what changed."""

    def __init__(
        self,
        config: AgentConfig,
        plant: Plant,
        queue: BoundedQueue | None,
        on_change: Callable[[AlarmChange], None] | None = None,
        on_state: Callable[[SignalStatus], None] | None = None,
        admission: SignalTable | None = None,
    ) -> None:
        self.config = config
        self.plant = plant
        self.queue = queue
        # The ingest's signal table: which signals may have a pipeline (None: all).
        self.admission = admission
        self.evicted_items = 0  # items of signals evicted between their arrival and scoring
        self.signal_errors = 0  # signal groups whose scoring raised (logged; the batch goes on)
        self._errors = RateLimitedLog(log)
        self.on_change = on_change or (lambda change: None)
        self.on_state = on_state or (lambda status: None)
        self.status: dict[str, SignalStatus] = {}
        self.asset_status: dict[str, AssetStatus] = {}
        self.processed = 0
        self.batches = 0
        # Called once per batch with its duration and the lags (now - sample timestamp) of up
        # to 64 samples per signal: the metrics layer's histograms.
        self.on_batch: Callable[[float, list[float]], None] = lambda duration, lags: None
        # Called after every chunk of pipeline work inside a batch (see CHUNK_SAMPLES): the
        # agent pings the systemd watchdog from it, so a long batch that is making progress
        # is not taken for a hung worker.
        self.heartbeat: Callable[[], None] = lambda: None
        # Set by the agent's stop once its drain deadline has passed: the batch in progress is
        # abandoned at its next chunk (the final checkpoint waits for the worker).
        self.stopping: Flag = threading.Event()
        self.abandoned = 0  # items of abandoned batches (left with the broker if QoS 1/2)

    def run_once(self, timeout: float = 0.2) -> int:
        """Process one batch (waiting up to ``timeout`` for it); returns the items handled."""
        assert self.queue is not None, "a scoring process's worker is handed its batches"
        a = self.config.agent
        items = self.queue.take(a.batch_max, timeout, a.batch_linger)
        if not items:
            return 0
        try:
            self.process(items)
        except Abandoned:
            # Stopping: the batch's messages stay unacknowledged, so the broker delivers them
            # again; the samples scored before the stop come back as duplicates and are dropped.
            self.abandoned += len(items)
        except BaseException:
            finish(items)  # counted as a worker error; never redelivered forever
            raise
        else:
            finish(items)
        finally:
            self.queue.done(len(items))
        return len(items)

    @property
    def signal_count(self) -> int:
        """Signals with a pipeline."""
        return len(self.plant.signals)

    def signal_counts(self, sid: str) -> SignalCounts | None:
        pipe = self.plant.signals.get(sid)
        if pipe is None:
            return None
        return SignalCounts(pipe.spec.unit, pipe.spec.kind, pipe.scored, dict(pipe.rejected),
                            pipe.warmup)

    def _beat(self) -> None:
        """Between two chunks of pipeline work: a sign of life, and the point where a stop
        abandons the batch (a batch may take seconds; the stop has a deadline)."""
        self.heartbeat()
        if self.stopping.is_set():
            raise Abandoned

    def process(self, items: list[Item]) -> None:
        started = time.perf_counter()
        lags: list[float] = []
        groups: dict[str, list[Item]] = {}
        for item in items:
            groups.setdefault(item.signal, []).append(item)
        self._drop_evicted()
        accepted: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        banked: list[Member] = []
        signals, status = self.plant.signals, self.status
        for sid, group in groups.items():
            try:
                pipe = signals.get(sid)
                if pipe is None or sid not in status:  # new here: built (or refused) first
                    pipe = self._pipeline(sid, group[0])
                if pipe is None:
                    self.evicted_items += len(group)
                elif isinstance(pipe, BankedSignal) and _bankable(pipe, group):
                    banked.append((sid, pipe, group))  # scored below, with its bank
                else:
                    self._signal(sid, pipe, group, accepted, lags)
            except Abandoned:
                raise
            except Exception:
                self._failed(sid, len(group), accepted)
        if banked:
            try:
                score_banks(self, banked, accepted, lags, CHUNK_SAMPLES)
            except Abandoned:
                raise
            except Exception:
                # A bank is its signals' one state: a failure there costs them this batch.
                for sid, _, group in banked:
                    self._failed(sid, len(group), accepted)
        self._assets(accepted)
        self.processed += len(items)
        self.batches += 1
        self.on_batch(time.perf_counter() - started, lags)

    def _signal_contained(self, sid: str, pipe: Signal, group: list[Item],
                          accepted: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                          lags: list[float]) -> None:
        """:meth:`_signal`, a failure costing only this signal's messages."""
        try:
            self._signal(sid, pipe, group, accepted, lags)
        except Abandoned:
            raise
        except Exception:
            self._failed(sid, len(group), accepted)

    def _failed(self, sid: str, messages: int,
                accepted: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
        # One signal's failure (a bug, a value no check foresaw) must not cost the other
        # signals of the batch: a bad valid_range once lost 116 of 200 frames.
        self.signal_errors += 1
        accepted.pop(sid, None)
        self._errors.log(logging.ERROR, sid, "signal %s: scoring failed; its %d message(s) "
                         "of this batch are skipped", sid, messages, exc_info=True)

    def _signal(self, sid: str, pipe: Signal, group: list[Item],
                accepted: dict[str, list[tuple[np.ndarray, np.ndarray]]], lags: list[float]
                ) -> None:
        """Score one signal's items of the batch; its accepted samples go to ``accepted``."""
        status = self.status[sid]
        status.messages += len(group)
        samples = [i.data for i in group if isinstance(i.data, Samples)]
        frames = [i.data for i in group if isinstance(i.data, Frame)]
        wrong = len(frames) if pipe.frames is None else len(samples)
        if wrong:  # a static scalar signal fed frames on some topic, or the reverse
            pipe.reject("kind_mismatch", wrong)
        if pipe.frames is None and samples:
            all_times, all_values = self._in_order(
                pipe, status, np.concatenate([s.timestamps for s in samples]),
                np.concatenate([s.values for s in samples]))
            for part in _chunks(len(all_values), CHUNK_SAMPLES):
                times, values = all_times[part], all_values[part]
                batch = pipe.process(values, times)
                self._report(pipe, status, batch, times, None)
                ok = batch.reason == 0
                accepted.setdefault(sid, []).append((times[ok], values[ok]))
                self._beat()
        elif pipe.frames is not None:
            rate = pipe.frames.sample_rate
            stamps = np.array([f.timestamp for f in frames])
            # A frame is its own identity: the same time twice is a redelivery.
            keep = self._in_order(pipe, status, stamps, np.arange(len(frames)))[1]
            frames = [frames[int(i)] for i in keep]
            for whole in _frame_runs(frames):
                if any(f.sample_rate != rate for f in whole):
                    pipe.reject("sample_rate_mismatch", len(whole))
                    continue
                per_chunk = max(1, CHUNK_SAMPLES // len(whole[0].samples))
                for part in _chunks(len(whole), per_chunk):
                    run = whole[part]
                    times = np.array([f.timestamp for f in run])
                    batch = pipe.process(np.vstack([f.samples for f in run]), times)
                    self._report(pipe, status, batch, times, pipe.feature_names)
                    ok = batch.reason == 0
                    column = batch.features[ok, self._asset_column(pipe)]
                    accepted.setdefault(sid, []).append((times[ok], column))
                    self._beat()
        if self.admission is not None and any(len(t) for t, _ in accepted.get(sid, ())):
            self.admission.prove(sid)  # a valid sample: no longer first to be evicted
        self._heard(pipe, status, group)
        now = time.time()
        lags.extend(now - _stamp(i) for i in group[-64:])  # bounded per signal and batch

    def _heard(self, pipe: Signal, status: SignalStatus, group: list[Item]) -> None:
        """Learn the signal's message interval from arrivals; a silent signal that speaks
        again ends its silence alarm."""
        arrival = group[-1].arrival
        if math.isfinite(status.last_arrival) and arrival > status.last_arrival:
            gap = (arrival - status.last_arrival) / len(group)
            status.interval = gap if math.isnan(status.interval) else (
                status.interval + SILENCE_WEIGHT * (gap - status.interval))
        status.last_arrival = arrival
        if status.silent:
            status.silent = False
            self.on_change(self._silence(pipe, status, "resumed", arrival))

    def watch_silence(self, now: float) -> None:
        """Raise the silence alarm of every signal that has sent nothing for
        ``agent.silence_intervals`` of its own message intervals (and at least
        ``agent.silence_min_seconds``). A dead sensor sends no sample that could clear its
        alarm, so without this its alarm just went quiet. Called by the agent's worker loop."""
        a = self.config.agent
        for sid, status in list(self.status.items()):
            if status.silent or status.messages < SILENCE_LEARN or math.isnan(status.interval):
                continue
            limit = max(a.silence_intervals * status.interval, a.silence_min_seconds)
            if now - status.last_arrival > limit:
                pipe = self.plant.signals.get(sid)
                if pipe is not None:
                    status.silent = True
                    self.on_change(self._silence(pipe, status, "silent", now))

    def _silence(self, pipe: Signal, status: SignalStatus, kind: str, now: float
                 ) -> AlarmChange:
        # Score: intervals without a message, against the configured number of them.
        quiet = (now - status.last_arrival if kind == "silent" else 0.0)
        intervals = quiet / status.interval if status.interval > 0 else 0.0
        frame = pipe.frames is not None
        return AlarmChange(
            kind=kind, scope="signal", asset=pipe.spec.asset, signal=pipe.spec.name,
            labels=status.labels, ts=now, score=intervals,
            threshold=self.config.agent.silence_intervals,
            value=None if frame else (status.value if math.isfinite(status.value) else 0.0),
            features=dict(status.features) if frame else None, top=None, rules=0,
            likelihood=math.nan, onset=status.last_arrival)

    def _in_order(self, pipe: Signal, status: SignalStatus, times: np.ndarray,
                  values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The samples that move the signal's time on; the others are counted and dropped.

        A sample older than one already scored cannot be scored in order (``out_of_order``);
        one at the same time with the same value as the sample that set that time is a
        redelivery - a QoS 1 duplicate after a broker restart was scored twice
        (``duplicate``). The reference is the monitor's latest time, which checkpoints keep.
        A sample stamped more than ``agent.max_clock_ahead`` ahead of the agent's clock is
        ``future``: one stamped in 2100 made every later sample out of order.
        """
        if not len(times):
            return times, values
        future = times > time.time() + self.config.agent.max_clock_ahead
        latest = pipe.last_time
        t = np.r_[latest if np.isfinite(latest) else -np.inf, np.where(future, -np.inf, times)]
        running = np.maximum.accumulate(t)
        before = running[:-1]
        if pipe.frames is None:
            # The value of the sample that holds the running latest time (the one before the
            # batch: the signal's last value): redelivering 5 and 6 after 6 compared 6 with 5.
            holder = np.maximum.accumulate(np.where(t >= running, np.arange(len(t)), 0))
            reference = np.r_[status.value, values][holder[:-1]]
            duplicate = (times == before) & (values == reference)
        else:
            duplicate = times == before
        late = (times < before) & ~future
        duplicate &= ~future
        if not (duplicate.any() or late.any() or future.any()):
            return times, values
        pipe.reject("duplicate", int(duplicate.sum()))
        pipe.reject("out_of_order", int(late.sum()))
        pipe.reject("future", int(future.sum()))
        keep = ~(duplicate | late | future)
        return times[keep], values[keep]

    def _drop_evicted(self) -> None:
        if self.admission is None:
            return
        for sid in self.admission.take_evicted():
            if sid in self.plant.signals:
                self.plant.remove_signal(sid, self.config.asset_stage,
                                         self.config.agent.asset_signals)
            self.status.pop(sid, None)

    def _pipeline(self, sid: str, first: Item) -> Signal | None:
        pipe = self.plant.signals.get(sid)
        if pipe is None:
            if self.admission is not None and sid not in self.admission:
                return None  # evicted after it was queued: a pipeline now would pass the cap
            asset, name = sid.split("{", 1)[0].split("/", 1)  # names hold no '{' or '/'
            spec = self.config.subscriptions[first.subscription].signal_spec(
                asset, name, first.labels)
            pipe = self.plant.add_signal(spec, first.subscription, self.config.asset_stage,
                                         self.config.agent.asset_signals)
        if sid not in self.status:
            self.status[sid] = SignalStatus(pipe.spec.asset, pipe.spec.name, dict(first.labels))
        return pipe

    def _asset_column(self, pipe: Signal) -> int:
        for a in self.plant.assets.values():
            if (a.spec.name, a.spec.labels) == (pipe.spec.asset, pipe.spec.labels) and \
                    pipe.spec.name in a.spec.signals:
                return a.columns[a.spec.signals.index(pipe.spec.name)]
        return 0

    def _report(
        self,
        pipe: Signal,
        status: SignalStatus,
        batch: SignalBatch,
        times: np.ndarray,
        feature_names: tuple[str, ...] | None,
    ) -> None:
        r = batch.result
        scored = np.flatnonzero(np.isfinite(r.score))
        if len(times):
            status.last_time = float(times[-1])
        if scored.size:
            last = scored[-1]
            status.score, status.threshold = float(r.score[last]), float(r.threshold[last])
            status.likelihood = float(r.likelihood[last])
            if batch.diagnosis is not None:
                status.defect = DEFECTS[int(batch.diagnosis.defect[last])]
                status.iso_zone = int(batch.diagnosis.zone[last])
            row = batch.features[last]
            if feature_names:
                status.features = dict(zip(feature_names, map(float, row), strict=True))
            else:
                status.value = float(row[0])
        before = status.state
        if len(r.state):
            status.state = AlarmState(int(r.state[-1]))
        changed = r.raised | r.cleared | r.adopted
        for i in np.flatnonzero(changed):
            kind = _kind(r, int(i))
            status.alarms += kind == "raised"
            status.adopted += kind == "baseline_adopted"
            onset = _onset(r.onset, int(i), status.onset)
            self.on_change(
                self._change(pipe, status, r, int(i), times[i], batch, feature_names, kind, onset)
            )
        status.onset = _onset(r.onset, len(r.onset) - 1, status.onset)
        if status.state != before or changed.any():
            self.on_state(status)

    @staticmethod
    def _change(
        pipe: Signal,
        status: SignalStatus,
        r: MonitorBatch,
        i: int,
        ts: float,
        batch: SignalBatch,
        names: tuple[str, ...] | None,
        kind: str,
        onset: float,
    ) -> AlarmChange:
        row = batch.features[i]
        top = int(r.top[i])
        d = batch.diagnosis
        return AlarmChange(
            kind=kind,
            scope="signal",
            asset=pipe.spec.asset,
            signal=pipe.spec.name,
            labels=status.labels,
            ts=float(ts),
            score=float(r.score[i]),
            threshold=float(r.threshold[i]),
            value=None if names else float(row[0]),
            features=dict(zip(names, map(float, row), strict=True)) if names else None,
            top=names[top] if names and top >= 0 else None,
            rules=int(r.rules[i]),
            likelihood=float(r.likelihood[i]),
            onset=onset,
            defect=None if d is None else DEFECTS[int(d.defect[i])],
            iso_zone=None if d is None or not d.zone[i] else ZONES[int(d.zone[i])],
        )

    def _assets(self, accepted: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> None:
        for name, pipe in self.plant.assets.items():
            members = [pipe.spec.member(s) for s in pipe.spec.signals]
            parts = {
                m: (
                    np.concatenate([t for t, _ in accepted[m]]),
                    np.concatenate([v for _, v in accepted[m]]),
                )
                for m in members
                if m in accepted
            }
            if not any(len(t) for t, _ in parts.values()):
                continue
            stamps = np.unique(np.concatenate([t for t, _ in parts.values()]))
            rows = np.full((len(stamps), len(members)), np.nan)
            for j, m in enumerate(members):
                if m in parts:
                    t, v = parts[m]
                    rows[np.searchsorted(stamps, t), j] = v
            for part in _chunks(len(stamps), CHUNK_SAMPLES // len(members) or 1):
                self._asset_rows(name, pipe, rows[part], stamps[part])
                self._beat()

    def _asset_rows(self, name: str, pipe: AssetPipeline, rows: np.ndarray, stamps: np.ndarray
                    ) -> None:
        batch = pipe.process(rows, stamps)
        r, rows = batch.result, batch.rows  # rows as scored, held values filled in
        status = self.asset_status.get(name)
        if status is None:
            status = self.asset_status[name] = AssetStatus(pipe.spec.name,
                                                           dict(pipe.spec.labels))
        scored = np.flatnonzero(np.isfinite(r.score))
        if scored.size:
            status.score = float(r.score[scored[-1]])
            status.likelihood = float(r.likelihood[scored[-1]])
        if len(r.state):
            status.state = AlarmState(int(r.state[-1]))
        for i in np.flatnonzero(r.raised | r.cleared | r.adopted):
            top = int(r.top[i])
            kind = _kind(r, int(i))
            if kind == "raised":
                status.alarms += 1
                status.top = pipe.spec.signals[top] if top >= 0 else None
            status.adopted += kind == "baseline_adopted"
            self.on_change(
                AlarmChange(
                    kind=kind,
                    scope="asset",
                    asset=pipe.spec.name,
                    signal=None,
                    labels=status.labels,
                    ts=float(stamps[i]),
                    score=float(r.score[i]),
                    threshold=float(r.threshold[i]),
                    value=None,
                    features=dict(zip(pipe.spec.signals, map(float, rows[i]), strict=True)),
                    top=pipe.spec.signals[top] if top >= 0 else None,
                    rules=0,
                    likelihood=float(r.likelihood[i]),
                    onset=_onset(r.onset, int(i), status.onset),
                )
            )
        status.onset = _onset(r.onset, len(r.onset) - 1, status.onset)


def _bankable(pipe: BankedSignal, group: list[Item]) -> bool:
    """Whether a drain's items of a banked signal can go with its bank's call: all scalar
    samples, or all frames of one length at the bank's sample rate (the others take the
    signal's own path, which refuses and counts what is wrong)."""
    if pipe.frames is None:
        for item in group:  # noqa: SIM110 - a loop, not all(genexpr): this runs per signal
            if type(item.data) is not Samples:
                return False
        return True
    first = group[0].data
    if not isinstance(first, Frame):
        return False
    length, rate = len(first.samples), pipe.frames.sample_rate
    return all(isinstance(i.data, Frame) and len(i.data.samples) == length
               and i.data.sample_rate == rate for i in group)


def _kind(r: MonitorBatch, i: int) -> str:
    """The event of sample ``i``. An adoption ends an alarm, and whether the monitor also
    marks that sample cleared or not, it is one event, told as the adoption it is."""
    if r.raised[i]:
        return "raised"
    return "baseline_adopted" if r.adopted[i] else "cleared"


def _onset(onsets: np.ndarray, i: int, before: float) -> float:
    """The onset of the alarm in force at (or just ended by) sample ``i``: the latest one the
    monitor reported up to ``i`` - a clearing or adopting sample may already report none,
    and rejected samples report none - else ``before``, carried over from earlier batches."""
    known = np.flatnonzero(np.isfinite(onsets[: i + 1]))
    return float(onsets[known[-1]]) if known.size else before


#: Messages a signal must have sent before its interval is trusted for the silence watch, and
#: the weight of each new arrival gap in that interval.
SILENCE_LEARN = 10
SILENCE_WEIGHT = 0.05

#: Pipeline work between two heartbeats: a few thousand samples (or frames' worth of them)
#: take milliseconds on the batch path and well under a second on the per-sample path of an
#: active alarm. Results do not depend on it: pipelines give the same scores for any split.
CHUNK_SAMPLES = 4096


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _stamp(item: Item) -> float:
    """The sample timestamp an item carries (its latest sample for scalar batches)."""
    data = item.data
    return data.timestamp if isinstance(data, Frame) else float(data.timestamps[-1])


def _frame_runs(frames: list[Frame]) -> list[list[Frame]]:
    """Consecutive frames of equal length and sample rate: a batch of frames must be one 2-D
    array, and a run is refused whole when its rate is wrong, so a frame at another rate must
    not share a run with good neighbours."""
    runs: list[list[Frame]] = []
    for frame in frames:
        last = runs[-1][-1] if runs else None
        if (last is not None and len(last.samples) == len(frame.samples)
                and last.sample_rate == frame.sample_rate):
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs
