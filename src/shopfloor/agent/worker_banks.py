"""The worker's path for signals that live in banks: one compiled call per bank and drain.

What :meth:`shopfloor.agent.worker.Worker._signal` does per signal - the time-order check, scoring
in chunks with a heartbeat between them, the signal's status, its alarm events, its samples
for the asset detector - is done here for every signal of a bank at once, with NumPy and the
bank's kernels; Python touches each signal only to update its status (a few attribute
writes) and for the rare alarm change. The results are those of the per-signal path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol, cast

import numpy as np
from numpy.typing import NDArray

from shopfloor.agent.config import AgentConfig
from shopfloor.agent.status import AlarmChange, SignalStatus, SignalTable
from shopfloor.receiving.codecs import Frame, Samples
from shopfloor.receiving.ingest import Item
from shopfloor.scoring.bank import BankBatch, FrameBank, ScalarBank
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.diagnosis import DEFECTS
from shopfloor.scoring.kernels.bank import DUPLICATE, FUTURE, LATE, order_steps
from shopfloor.scoring.monitor import MonitorBatch
from shopfloor.scoring.pipeline import BankedSignal, Plant, Signal, SignalBatch

__all__ = ["BankHost", "Member", "score_banks"]

#: A banked signal of the drain: its id, its view and its items (all scalar samples, or all
#: frames of one length at the bank's sample rate).
Member = tuple[str, BankedSignal, list[Item]]


class BankHost(Protocol):
    """What the bank path uses of :class:`shopfloor.agent.worker.Worker`, the one host: a
    protocol, so that this module does not import the worker that imports it."""

    config: AgentConfig
    plant: Plant
    status: dict[str, SignalStatus]
    admission: SignalTable | None
    on_change: Callable[[AlarmChange], None]
    on_state: Callable[[SignalStatus], None]

    def _signal_contained(self, sid: str, pipe: Signal, group: list[Item],
                          accepted: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                          lags: list[float]) -> None: ...
    def _beat(self) -> None: ...
    def _heard(self, pipe: Signal, status: SignalStatus, group: list[Item]) -> None: ...
    def _asset_column(self, pipe: Signal) -> int: ...
    @staticmethod
    def _change(pipe: Signal, status: SignalStatus, r: MonitorBatch, i: int, ts: float,
                batch: SignalBatch, names: tuple[str, ...] | None, kind: str, onset: float
                ) -> AlarmChange: ...


_VERDICTS = {DUPLICATE: "duplicate", LATE: "out_of_order", FUTURE: "future"}


def score_banks(worker: BankHost, members: list[Member],
                accepted: dict[str, list[tuple[NDArray[np.float64], NDArray[np.float64]]]],
                lags: list[float], chunk: int) -> None:
    """Score the drain's items of banked signals, bank by bank (see the module docstring),
    ``chunk`` samples per bank call between two heartbeats."""
    # One call per bank - and per frame length: a call's frames are one array.
    banks: dict[tuple[int, int], tuple[ScalarBank, list[Member]]] = {}
    for member in members:
        bank = member[1].bank
        first = member[2][0].data
        length = len(first.samples) if type(first) is Frame else 0
        banks.setdefault((id(bank), length), (bank, []))[1].append(member)
    in_assets = worker.plant.asset_members()
    for bank, group in banks.values():
        _score_bank(worker, bank, group, accepted, lags, in_assets, chunk)


def _score_bank(worker: BankHost, bank: ScalarBank, members: list[Member],
                accepted: dict[str, list[tuple[NDArray[np.float64], NDArray[np.float64]]]],
                lags: list[float], in_assets: frozenset[str], chunk: int) -> None:
    try:
        rows, times, values, verdict, by_row, ends = _gather(worker, bank, members)
    except Exception:
        # Nothing of the bank has moved yet: each signal takes the per-signal path, where a
        # failure costs only that signal's messages (the bank path's containment).
        for sid, view, items in members:
            worker._signal_contained(sid, view, items, accepted, lags)
        return
    refused = np.flatnonzero(verdict)
    if refused.size:
        for r, code in zip(rows[refused].tolist(), verdict[refused].tolist(), strict=True):
            bank.other[r][_VERDICTS[code]] += 1
        keep = verdict == 0
        rows, times, values = rows[keep], times[keep], values[keep]
    step = chunk if values.ndim == 1 else max(1, chunk // values.shape[1])
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        batch = bank.process(rows[part], values[part], times[part])
        _report(worker, batch, bank.names if isinstance(bank, FrameBank) else None, by_row,
                accepted, in_assets)
        worker._beat()
    status_of = worker.status
    for sid, view, items in members:
        status = status_of[sid]
        status.messages += len(items)
        worker._heard(view, status, items)
    # The lag of each message's latest sample (batch_max bounds how many).
    lags.extend((time.time() - ends).tolist())


def _gather(worker: BankHost, bank: ScalarBank, members: list[Member]
            ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64],
                       NDArray[np.uint8], dict[int, Member], NDArray[np.float64]]:
    """The members' samples as (rows, times, values) with order_steps' verdicts, and the
    time of each message's latest sample. For a frame bank ``values`` is (n, frame_len)."""
    data: list[Samples | Frame] = []
    item_rows: list[int] = []
    by_row: dict[int, Member] = {}
    for member in members:
        r = member[1].row
        by_row[r] = member
        for item in member[2]:
            data.append(item.data)
            item_rows.append(r)
    horizon = time.time() + worker.config.agent.max_clock_ahead
    if isinstance(bank, FrameBank):  # the caller checked: frames of one length and rate
        frames = cast(list[Frame], data)
        rows = np.array(item_rows, dtype=np.int64)
        times = np.array([f.timestamp for f in frames], dtype=np.float64)
        latest = bank.alarm_times[:, 2].copy()
        verdict = np.empty(len(rows), dtype=np.uint8)
        # A frame is its own identity: the same time twice is a redelivery (the time is
        # passed as the "value", so a duplicate is a frame at the latest time).
        order_steps(rows, times, times, latest, latest.copy(), horizon, verdict)
        return (rows, times, np.stack([f.samples for f in frames]), verdict, by_row, times)
    scalars = cast(list[Samples], data)
    counts = np.fromiter((len(d.values) for d in scalars), dtype=np.int64, count=len(data))
    rows = np.repeat(np.array(item_rows, dtype=np.int64), counts)
    times = np.concatenate([d.timestamps for d in scalars]).astype(np.float64, copy=False)
    values = np.concatenate([d.values for d in scalars]).astype(np.float64, copy=False)
    # The per-signal path's _in_order, for all rows at once: later than the row's latest
    # scored time (a redelivery at that time is a duplicate), not ahead of the clock.
    verdict = np.empty(len(rows), dtype=np.uint8)
    order_steps(rows, times, values, bank.alarm_times[:, 2].copy(), bank.last_value.copy(),
                horizon, verdict)
    return rows, times, values, verdict, by_row, times[np.cumsum(counts) - 1]


def _last(rows: NDArray[np.int64], mask: NDArray[np.bool_] | None = None
          ) -> dict[int, int]:
    """Per row, the index of its last sample (among ``mask``)."""
    idx = np.arange(len(rows)) if mask is None else np.flatnonzero(mask)
    picked = rows[idx]
    uniq, first_from_end = np.unique(picked[::-1], return_index=True)
    return dict(zip(uniq.tolist(), idx[len(idx) - 1 - first_from_end].tolist(), strict=True))


def _report(worker: BankHost, batch: BankBatch, names: tuple[str, ...] | None,
            by_row: dict[int, Member],
            accepted: dict[str, list[tuple[NDArray[np.float64], NDArray[np.float64]]]],
            in_assets: frozenset[str]) -> None:
    """Statuses, events and the asset detector's samples of one chunk (as Worker._report);
    ``names`` are a frame bank's feature names, None for scalars."""
    r, rows, times, values = batch.result, batch.rows, batch.times, batch.values
    if not len(rows):
        return
    scored = np.isfinite(r.score)
    last_any = _last(rows)
    last_scored = _last(rows, scored)
    changed = r.raised | r.cleared | r.adopted
    changed_rows = set(rows[changed].tolist())
    # Plain floats once, not a NumPy scalar per attribute write.
    states, time_list = r.state.tolist(), times.tolist()
    score, threshold = r.score.tolist(), r.threshold.tolist()
    like, value_list = r.likelihood.tolist(), values.tolist()
    status_of = worker.status
    before = {}
    onsets = {}  # per row, the onset of the alarm in force, carried over from earlier batches
    for row, i in last_any.items():
        status = status_of[by_row[row][0]]
        onsets[row] = status.onset
        status.last_time = time_list[i]
        j = last_scored.get(row)
        if j is not None:
            status.score, status.threshold = score[j], threshold[j]
            status.likelihood = like[j]
            if names is None:
                status.value = value_list[j]
            else:
                assert batch.features is not None
                assert batch.diagnosis is not None
                status.features = dict(zip(names, batch.features[j].tolist(), strict=True))
                status.defect = DEFECTS[int(batch.diagnosis.defect[j])]
                status.iso_zone = int(batch.diagnosis.zone[j])
        before[row] = status.state
        if status.state != states[i]:
            status.state = AlarmState(states[i])
    # Events in sample order, each with the onset of the alarm in force for its signal.
    signal_batch = SignalBatch(
        reason=batch.reason, result=r, diagnosis=batch.diagnosis,
        features=values.reshape(-1, 1) if batch.features is None else batch.features)
    for i in np.flatnonzero(np.isfinite(r.onset) | changed).tolist():
        row = int(rows[i])
        if math.isfinite(r.onset[i]):
            onsets[row] = float(r.onset[i])
        if not changed[i]:
            continue
        sid, view, _ = by_row[row]
        status = worker.status[sid]
        kind = "raised" if r.raised[i] else ("baseline_adopted" if r.adopted[i] else "cleared")
        status.alarms += kind == "raised"
        status.adopted += kind == "baseline_adopted"
        worker.on_change(worker._change(view, status, r, i, times[i], signal_batch, names,
                                        kind, onsets[row]))
    for row in last_any:
        status = worker.status[by_row[row][0]]
        status.onset = onsets[row]
        if status.state != before[row] or row in changed_rows:
            worker.on_state(status)
    # Accepted samples: proof against eviction, and the asset detectors' input.
    if worker.admission is None and not in_assets:
        return
    ok = batch.reason == 0
    order = np.argsort(rows[ok], kind="stable")
    ok_rows, ok_times = rows[ok][order], times[ok][order]
    rows_of_features = values.reshape(-1, 1) if batch.features is None else batch.features
    ok_features = rows_of_features[ok][order]
    uniq, starts = np.unique(ok_rows, return_index=True)
    ends = [*starts[1:].tolist(), len(ok_rows)] if len(ok_rows) else []
    for row, a, b in zip(uniq.tolist(), starts.tolist(), ends, strict=True):
        sid = by_row[row][0]
        if worker.admission is not None:
            worker.admission.prove(sid)
        if sid in in_assets:
            column = 0 if names is None else worker._asset_column(by_row[row][1])
            accepted.setdefault(sid, []).append((ok_times[a:b], ok_features[a:b, column]))

