"""A scoring process: one share of the agent's signals, scored where no other process can touch
their state.

With ``agent.workers`` above 1 the agent's receiving process keeps the MQTT connection, the
decoding, the queue, events, metrics and the checkpoint file, and hands each signal's items to
the one scoring process that owns it (:func:`owner`). This module is that process's side: it
runs the same :class:`~shopfloor.agent.worker.Worker` the single-process agent runs, on its share,
and answers over one pipe (see :mod:`shopfloor.agent.pool` for the other end):

- ``("batch", seq, rows, evicted)``: score the rows (``Item`` without its MQTT receipt, which
  stays with the receiving process until the batch is answered); the reply
  ``("done", seq, outcome, Report)`` carries what changed.
- ``("restore",)``: take this share's pipelines from the checkpoint file;
  ``("restored", sids)``.
- ``("state",)``: ``("state", tree)``, this share's part of the next checkpoint.
- ``("stop",)``: exit.

It ignores SIGTERM and SIGINT: systemd signals every process of the service, and the stop
belongs to the receiving process, which drains, takes the final state and then says stop.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
import zlib
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from shopfloor.agent.checkpoints import Checkpointer
from shopfloor.agent.config import AgentConfig
from shopfloor.agent.warmup import warm_up
from shopfloor.agent.worker import (
    Abandoned,
    AlarmChange,
    AssetStatus,
    Flag,
    SignalCounts,
    SignalStatus,
    Worker,
)
from shopfloor.logs import setup_logging
from shopfloor.receiving.ingest import Item
from shopfloor.scoring.pipeline import Plant

__all__ = ["Report", "Share", "asset_key", "owner", "serve"]

log = logging.getLogger("shopfloor.agent.scorer")

#: Seconds between two silence watches when no batch comes (as the single worker's loop).
WATCH_INTERVAL = 1.0
#: Seconds at least between two reports of the statuses a batch touched (scores, values, frame
#: features for /metrics and the fleet): sent with every batch they cost the receiving process
#: more than the frames themselves. A status whose alarm state changed goes out at once.
STATUS_INTERVAL = 0.25


def owner(key: str, count: int) -> int:
    """The scoring process (of ``count``) that owns a signal or asset ``key``.

    A stable hash of the asset's identity (asset and topic labels, the signal's name left
    out): an asset's signals feed its multivariate detector together, so they share one
    process. CRC-32, not ``hash()``: that is salted per process.
    """
    if count == 1:
        return 0
    return zlib.crc32(asset_key(key).encode()) % count


def asset_key(key: str) -> str:
    """The asset identity (:func:`~shopfloor.config.asset_id`) of a signal or asset key."""
    head, brace, labels = key.partition("{")
    return head.split("/", 1)[0] + brace + labels


class Share:
    """The agent's signal table as a scoring process sees it: the receiving process sends
    only admitted signals' items, names the evicted ones with each batch, and learns from
    each reply which signals produced a valid sample."""

    def __init__(self) -> None:
        self.evicted: list[str] = []
        self.proven: set[str] = set()

    def __contains__(self, sid: object) -> bool:
        return True

    def take_evicted(self) -> list[str]:
        evicted, self.evicted = self.evicted, []
        return evicted

    def prove(self, sid: str) -> None:
        self.proven.add(sid)


@dataclass(slots=True)
class Report:
    """What a batch changed, for the receiving process's events, metrics and fleet status."""

    changes: list[AlarmChange] = field(default_factory=list)
    states: list[SignalStatus] = field(default_factory=list)
    status: dict[str, SignalStatus] = field(default_factory=dict)  # at most every 0.25 s
    counts: dict[str, SignalCounts] = field(default_factory=dict)  # the batch's signals
    assets: dict[str, AssetStatus] = field(default_factory=dict)
    totals: tuple[int, int, int, int] = (0, 0, 0, 0)  # processed, batches, errors, abandoned
    signals: int = 0  # pipelines of this share
    duration: float = 0.0
    lags: list[float] = field(default_factory=list)
    proven: list[str] = field(default_factory=list)


def serve(conn: Connection, config: AgentConfig, index: int, count: int, level: str,
          stopping: Flag) -> None:
    """The scoring process's main function (``multiprocessing`` target). ``stopping`` is the
    agent's stop flag, shared: once its drain deadline passes, a batch in work is abandoned
    at its next chunk, as the single worker's."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(level)
    scorer = Scorer(conn, config, index, count)
    scorer.worker.stopping = stopping
    scorer.run()


class Scorer:
    """One scoring process's plant, worker and checkpoint share."""

    def __init__(self, conn: Connection, config: AgentConfig, index: int, count: int) -> None:
        self.conn = conn
        self.index, self.count = index, count
        self.share = Share()
        self.report = Report()
        self.touched: set[str] = set()  # signals whose status has not been reported since
        self.reported: set[str] = set()  # signals whose status was reported at least once
        self.status_sent = 0.0
        self.plant = Plant(config.pipeline)
        self.worker = Worker(config, self.plant, None, on_change=self.report.changes.append,
                             on_state=self.report.states.append, admission=self.share)
        self.worker.on_batch = self._batch
        # The plant builds every configured signal; those of other shares never see a sample.
        self.others = sum(not self.owns(sid) for sid in self.plant.signals)
        directory = config.state.resolved()
        self.checkpoints = (Checkpointer(config, self.plant, directory,
                                         config.state.checkpoint_interval)
                            if directory is not None else None)

    def owns(self, key: str) -> bool:
        return owner(key, self.count) == self.index

    def run(self) -> None:
        try:
            self._run()
        except (BrokenPipeError, ConnectionResetError):  # the receiving process is gone
            return

    def _run(self) -> None:
        warmed = warm_up(self.worker.config)
        gc.collect()
        gc.freeze()  # as the agent's process (see Agent.run): start-up's objects stay
        self.conn.send(("ready", os.getpid(), warmed.describe()))
        watched = time.monotonic()
        while True:
            wait = STATUS_INTERVAL if self.touched else WATCH_INTERVAL
            try:
                message = self.conn.recv() if self.conn.poll(wait) else None
            except (EOFError, OSError):  # the receiving process is gone (kill -9): so are we
                return
            if message is not None and message[0] == "stop":
                return
            if message is not None:
                self._handle(message)
            if time.monotonic() - watched >= WATCH_INTERVAL:
                watched = time.monotonic()
                self.worker.watch_silence(time.time())
                if self.report.changes or self.report.states:  # a silence alarm: say it now
                    self._send(-1, "watch")
            if message is None and self.touched:  # quiet now: the statuses held back
                self._send(-1, "watch")

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "batch":
            _, seq, rows, evicted = message
            self.share.evicted.extend(evicted)
            self.reported.difference_update(evicted)
            items = [Item(*row) for row in rows]
            try:
                self.worker.process(items)
                outcome = "done"
            except Abandoned:  # counted as Worker.run_once counts it
                self.worker.abandoned += len(items)
                outcome = "abandoned"
            except Exception:  # as the single worker's loop: logged, counted, the process goes on
                log.exception("worker batch failed; continuing")
                outcome = "failed"
            self._send(seq, outcome, {i.signal for i in items})
        elif kind == "restore":
            sids: list[str] = []
            if self.checkpoints is not None:
                self.checkpoints.restore(None, self.owns)
                sids = list(self.checkpoints.restored)
            self.conn.send(("restored", sids))
        elif kind == "state":
            self.conn.send(("state", self.checkpoints.tree(self.owns)
                            if self.checkpoints is not None else None))

    def _batch(self, duration: float, lags: list[float]) -> None:
        self.report.duration, self.report.lags = duration, lags

    def _send(self, seq: int, outcome: str, batch: set[str] | None = None) -> None:
        """Answer batch ``seq`` (-1: no batch) with what changed since the last answer: the
        counts of the batch's signals (samples scored and refused: live, as one process's), and
        at most every STATUS_INTERVAL the statuses touched since."""
        r, w = self.report, self.worker
        for sid in batch or ():
            counts = w.signal_counts(sid)
            if counts is not None:
                r.counts[sid] = counts
        self.touched.update(batch or ())
        for sid in (batch or set()) - self.reported:  # a new signal's first status: at once
            status = w.status.get(sid)
            if status is not None:
                r.status[sid] = status
                self.reported.add(sid)
        now = time.monotonic()
        if now - self.status_sent >= STATUS_INTERVAL:
            for sid in self.touched:
                status = w.status.get(sid)
                if status is not None:
                    r.status[sid] = status
            self.touched.clear()
            self.status_sent = now
        for state in r.states:  # a silence alarm's signal, or one a batch changed
            r.status.setdefault(state.sid, state)
        for key in {asset_key(sid) for sid in r.status}:
            if key in w.asset_status:
                r.assets[key] = w.asset_status[key]
        r.totals = (w.processed, w.batches, w.signal_errors, w.abandoned)
        r.signals = len(self.plant.signals) - self.others
        r.proven = sorted(self.share.proven)
        self.share.proven.clear()
        self.conn.send(("done", seq, outcome, r))
        self.report = Report()
        w.on_change, w.on_state = self.report.changes.append, self.report.states.append
