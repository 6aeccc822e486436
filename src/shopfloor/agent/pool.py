"""The agent's scoring processes (``agent.workers`` above 1), seen by the agent as one worker.

The receiving process takes messages off the MQTT connection, decodes and queues them as with
one worker; the dispatcher (the agent's worker thread) drains the queue and hands each item to
the scoring process that owns its signal (:func:`~shopfloor.agent.scorer.owner`: a stable hash of
its asset). Each process scores its share in arrival order, so per-signal order and state are
what one worker gives, and answers each batch with what changed. Only then are the batch's
QoS 1 messages acknowledged, its events published and its statuses merged for ``/metrics``:
so with any number of processes a message is acknowledged once scored.

A process that dies (kill -9, the OOM killer, a crash in native code) is noticed when its
pipe closes and started again: it restores its share from the last checkpoint and is handed
the batches it held, which were never acknowledged. It loses what its signals learned since
that checkpoint; a batch in flight at two deaths of its process is given up, acknowledged
and counted, so one poisonous message cannot kill the process forever. A process that
answers nothing for ``HUNG_AFTER`` seconds is killed and restarted the same way.

Processes are spawned, not forked: the MQTT client's threads are running by then.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue as queues
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from shopfloor.agent.config import AgentConfig
from shopfloor.agent.scorer import Report, owner, serve
from shopfloor.agent.status import AlarmChange, AssetStatus, SignalCounts, SignalStatus
from shopfloor.receiving.admission import Admission
from shopfloor.receiving.ingest import BoundedQueue, Item, finish

__all__ = ["ScoringPool"]

log = logging.getLogger("shopfloor.agent.pool")

CONTEXT = multiprocessing.get_context("spawn")
#: Batches a scoring process holds at once: one in work, one waiting in its pipe.
MAX_IN_FLIGHT = 2
#: Seconds a scoring process may take to start (imports, kernels loaded from Numba's cache; a
#: first start on a Raspberry Pi compiles them, which takes minutes).
READY_TIMEOUT = 600.0
#: Seconds without an answer to a batch before its process is taken for hung and killed.
HUNG_AFTER = 120.0
#: A death within this many seconds of a start counts towards the back-off before the next;
#: START_ATTEMPTS of them in a row while the agent starts fail the start.
QUICK_DEATH = 10.0
START_ATTEMPTS = 3
#: Seconds to wait for the processes' parts of a checkpoint.
STATE_TIMEOUT = 60.0


@dataclass(slots=True)
class _Batch:
    seq: int
    items: list[Item]
    sent: float = field(default_factory=time.monotonic)
    deaths: int = 0  # deaths of its process while it was in flight


@dataclass(slots=True, eq=False)
class _Process:
    index: int
    process: BaseProcess
    conn: Connection
    outbox: queues.Queue[tuple[Any, ...] | None] = field(default_factory=queues.Queue)
    replies: queues.Queue[tuple[Any, ...]] = field(default_factory=queues.Queue)
    ready: threading.Event = field(default_factory=threading.Event)
    ready_at: float = 0.0
    pid: int = 0
    warmed: str = ""
    totals: tuple[int, int, int, int] = (0, 0, 0, 0)
    signals: int = 0
    closing: bool = False
    restarted: bool = False


class ScoringPool:
    """``count`` scoring processes behind the surface of :class:`~shopfloor.agent.worker.Worker`
    that the agent, its metrics and its checkpoints use."""

    def __init__(self, config: AgentConfig, queue: BoundedQueue, count: int,
                 on_change: Callable[[AlarmChange], None] | None = None,
                 on_state: Callable[[SignalStatus], None] | None = None,
                 admission: Admission | None = None) -> None:
        self.config, self.queue, self.count, self.admission = config, queue, count, admission
        self.on_change = on_change or (lambda change: None)
        self.on_state = on_state or (lambda status: None)
        self.on_batch: Callable[[float, list[float]], None] = lambda duration, lags: None
        self.heartbeat: Callable[[], None] = lambda: None
        self.stopping = CONTEXT.Event()
        self.status: dict[str, SignalStatus] = {}
        self.asset_status: dict[str, AssetStatus] = {}
        self._counts: dict[str, SignalCounts] = {}
        self.restarts = 0
        self.batches_lost = 0  # given up after two deaths of their process (acknowledged)
        self.batch_errors = 0
        self.evicted_items = 0
        self._abandoned = 0  # items the dispatcher took after the stop began
        self._retired = [0, 0, 0, 0]  # totals of processes that died
        self._lock = threading.Condition()  # one answer at a time; room in a process's pipe
        self._inflight: list[dict[int, _Batch]] = [{} for _ in range(count)]
        self._seq = itertools.count()
        self._processes: list[_Process] = []
        self._closing = threading.Event()
        # Each admitted signal's process (bounded by agent.max_signals; evictions leave it).
        self._owners: dict[str, int] = {}
        self._quick_deaths = [0] * count  # deaths in a row soon after a start, per process

    # -- the processes' lives ---------------------------------------------------------------

    def start(self) -> None:
        """Start the processes and wait until each has warmed up (idempotent)."""
        if self._processes:
            return
        self._processes = [self._spawn(i) for i in range(self.count)]
        deadline = time.monotonic() + READY_TIMEOUT
        for index in range(self.count):
            # The process may die and be replaced while we wait: look at the current one.
            while not self._processes[index].ready.wait(0.5):
                if self._quick_deaths[index] >= START_ATTEMPTS or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(
                        f"scoring process {index} did not start (exit code "
                        f"{self._processes[index].process.exitcode}); its log lines say why")

    def describe(self) -> str:
        return (f"{self.count} scoring processes (pids "
                f"{', '.join(str(p.pid) for p in self._processes)}); {self._processes[0].warmed}"
                if self._processes else f"{self.count} scoring processes, not started")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def _spawn(self, index: int) -> _Process:
        ours, theirs = CONTEXT.Pipe()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        process = CONTEXT.Process(target=serve, args=(theirs, self.config, index, self.count,
                                                      level, self.stopping),
                                  name=f"shopfloor-scorer-{index}", daemon=True)
        process.start()
        theirs.close()
        p = _Process(index, process, ours)
        threading.Thread(target=self._send_loop, args=(p,), name=f"shopfloor-to-{index}",
                         daemon=True).start()
        threading.Thread(target=self._receive_loop, args=(p,), name=f"shopfloor-from-{index}",
                         daemon=True).start()
        return p

    def _send_loop(self, p: _Process) -> None:
        # A thread per process: a large batch waits in its own pipe, not in the dispatcher.
        while (message := p.outbox.get()) is not None:
            try:
                p.conn.send(message)
            except (OSError, ValueError):  # it died: its receiver restarts it
                return

    def _receive_loop(self, p: _Process) -> None:
        while True:
            try:
                message = p.conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "ready":
                p.pid, p.warmed = message[1], message[2]
                p.ready_at = time.monotonic()
                p.ready.set()
                log.info("scoring process %d ready: pid %d", p.index, p.pid)
            elif kind == "done":
                self._done(p, message[1], message[2], message[3])
            elif not (kind == "restored" and p.restarted):  # a restart's restore: no one waits
                p.replies.put(message)
        p.outbox.put(None)
        self._died(p)

    def _died(self, p: _Process) -> None:
        p.process.join(5.0)
        if p.closing:
            return
        # One that dies while starting, or soon after, would die again at once (memory, a
        # broken cache): wait longer each time instead of spawning in a tight loop.
        quick = not p.ready.is_set() or time.monotonic() - p.ready_at < QUICK_DEATH
        self._quick_deaths[p.index] = self._quick_deaths[p.index] + 1 if quick else 0
        if quick:
            delay = min(60.0, 2.0 ** self._quick_deaths[p.index] - 1.0)
            log.error("scoring process %d died %d time(s) in a row within %.0f s of starting: "
                      "next start in %.0f s", p.index, self._quick_deaths[p.index],
                      QUICK_DEATH, delay)
            time.sleep(delay)
            if self._closing.is_set():
                return
        with self._lock:
            self.restarts += 1
            self._retired = [a + b for a, b in zip(self._retired, p.totals, strict=True)]
            held = sorted(self._inflight[p.index].values(), key=lambda b: b.seq)
            log.error("scoring process %d (pid %d) died (exit code %s): starting it again "
                      "from the last checkpoint; it held %d unacknowledged batch(es)",
                      p.index, p.pid, p.process.exitcode, len(held))
            new = self._spawn(p.index)
            new.restarted = True
            new.outbox.put(("restore",))
            for batch in held:
                batch.deaths += 1
                if batch.deaths >= 2:  # twice in flight when its process died: give it up
                    del self._inflight[p.index][batch.seq]
                    self.batches_lost += 1
                    finish(batch.items)
                    self.queue.done(len(batch.items))
                    log.error("a batch of %d message(s) was in flight at two deaths of scoring "
                              "process %d: given up (acknowledged, not scored)",
                              len(batch.items), p.index)
                    continue
                batch.sent = time.monotonic()
                new.outbox.put(("batch", batch.seq, _rows(batch.items), []))
            self._processes[p.index] = new
            self._lock.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Tell every process to exit; kill the ones that do not within ``timeout``."""
        self._closing.set()
        for p in self._processes:
            p.closing = True
            p.outbox.put(("stop",))
            p.outbox.put(None)
        deadline = time.monotonic() + timeout
        for p in self._processes:
            p.process.join(max(0.0, deadline - time.monotonic()))
            if p.process.is_alive():
                p.process.kill()
                p.process.join(1.0)

    # -- batches ----------------------------------------------------------------------------

    def run_once(self, timeout: float = 0.2) -> int:
        """Take one batch off the queue and hand it out; returns the items taken."""
        self._watch_hung()
        a = self.config.agent
        items = self.queue.take(a.batch_max, timeout, a.batch_linger)
        if not items:
            return 0
        if self.stopping.is_set():  # as the single worker: left with the broker
            self._abandoned += len(items)
            self.queue.done(len(items))
            return len(items)
        parts: list[list[Item]] = [[] for _ in range(self.count)]
        evicted: list[list[str]] = [[] for _ in range(self.count)]
        refused: list[Item] = []
        if self.admission is not None:
            for sid in self.admission.take_evicted():
                evicted[owner(sid, self.count)].append(sid)
                self.status.pop(sid, None)
                self._counts.pop(sid, None)
                self._owners.pop(sid, None)
        owners = self._owners
        for item in items:
            sid = item.signal
            if self.admission is not None and sid not in self.admission:
                refused.append(item)  # evicted after it was queued
                continue
            index = owners.get(sid)
            if index is None:  # a hash per signal, not per message
                index = owners[sid] = owner(sid, self.count)
            parts[index].append(item)
        if refused:
            self.evicted_items += len(refused)
            finish(refused)
            self.queue.done(len(refused))
        for index, part in enumerate(parts):
            if part or evicted[index]:
                self._hand(index, part, evicted[index])
        return len(items)

    def _hand(self, index: int, part: list[Item], evicted: list[str]) -> None:
        with self._lock:
            while len(self._inflight[index]) >= MAX_IN_FLIGHT:
                self._lock.wait(0.2)
                self.heartbeat()  # waiting on a busy process is progress for the watchdog
            batch = _Batch(next(self._seq), part)
            self._inflight[index][batch.seq] = batch
            self._processes[index].outbox.put(("batch", batch.seq, _rows(part), evicted))

    def _done(self, p: _Process, seq: int, outcome: str, report: Report) -> None:
        with self._lock:
            batch = self._inflight[p.index].pop(seq, None) if seq >= 0 else None
            self._merge(report)
            p.totals, p.signals = report.totals, report.signals
            if batch is not None:
                if outcome != "abandoned":  # abandoned: left unacknowledged with the broker
                    finish(batch.items)
                self.batch_errors += outcome == "failed"
                self.queue.done(len(batch.items))
                if outcome == "done":
                    self.on_batch(report.duration, report.lags)
            self._lock.notify_all()

    def _merge(self, report: Report) -> None:
        for change in report.changes:
            self.on_change(change)
        for state in report.states:
            self.on_state(state)
        admitted = self.admission
        for sid, status in report.status.items():
            if admitted is None or sid in admitted:  # not one evicted since
                self.status[sid] = status
        for sid, counts in report.counts.items():
            if admitted is None or sid in admitted:
                self._counts[sid] = counts
        self.asset_status.update(report.assets)
        if admitted is not None:
            for sid in report.proven:
                admitted.prove(sid)

    def _watch_hung(self) -> None:
        now = time.monotonic()
        for p in self._processes:
            held = self._inflight[p.index]
            if not p.ready.is_set() or not held:
                continue
            oldest = min(b.sent for b in list(held.values()))
            if now - max(oldest, p.ready_at) > HUNG_AFTER and p.process.is_alive():
                log.error("scoring process %d (pid %d) answered nothing for %.0f s: killing it",
                          p.index, p.pid, HUNG_AFTER)
                p.process.kill()

    def settle(self, timeout: float) -> bool:
        """Wait until every batch handed out is answered; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(self._inflight):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.2))
        return True

    def watch_silence(self, now: float) -> None:
        """Each scoring process watches its own signals' silence."""

    # -- checkpoints ------------------------------------------------------------------------

    def restore(self, admit: Admission | None) -> int:
        """Each process restores its share; ``admit`` gains the restored signals."""
        replies = self._ask("restore")
        restored = 0
        for reply in replies or []:
            for sid in reply[1]:
                restored += 1
                if admit is not None and sid not in admit:
                    admit.add(sid, proven=True)
        return restored

    def tree(self) -> dict[str, Any] | None:
        """Every process's part of a checkpoint, merged; None if one did not answer."""
        replies = self._ask("state")
        if replies is None:
            return None
        tree: dict[str, Any] = {"signals": {}, "assets": {}}
        for _, part in replies:
            for section in tree:
                tree[section].update(part[section])
        return tree

    def _ask(self, kind: str) -> list[tuple[Any, ...]] | None:
        asked = list(self._processes)
        for p in asked:
            p.outbox.put((kind,))
        replies = []
        deadline = time.monotonic() + STATE_TIMEOUT
        for p in asked:
            while True:
                try:
                    replies.append(p.replies.get(timeout=0.2))
                    break
                except queues.Empty:
                    if self._processes[p.index] is not p or time.monotonic() > deadline:
                        log.error("scoring process %d did not answer %r", p.index, kind)
                        return None
        return replies

    # -- what the agent and its metrics read ------------------------------------------------

    def _total(self, i: int) -> int:
        return self._retired[i] + sum(p.totals[i] for p in self._processes)

    @property
    def processed(self) -> int:
        return self._total(0)

    @property
    def processed_by(self) -> list[int]:
        """Items each running process has scored since it started."""
        return [p.totals[0] for p in self._processes]

    @property
    def batches(self) -> int:
        return self._total(1)

    @property
    def signal_errors(self) -> int:
        return self._total(2) + self.batch_errors

    @property
    def abandoned(self) -> int:
        return self._total(3) + self._abandoned

    @property
    def signal_count(self) -> int:
        return sum(p.signals for p in self._processes)

    def signal_counts(self, sid: str) -> SignalCounts | None:
        return self._counts.get(sid)


def _rows(items: list[Item]) -> list[tuple[Any, ...]]:
    """Items as they cross to a scoring process: without the MQTT receipt, which stays."""
    return [(i.signal, i.subscription, i.labels, i.data, i.arrival) for i in items]

