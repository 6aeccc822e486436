"""Which signals the agent keeps a pipeline for: bounded by ``agent.max_signals``, and who
leaves when a new signal finds the table full.

A first-come cap filled for good: 1,000 junk topics took every slot, a real signal that came
later was never scored, and a restart restored the junk from the checkpoint. Now a full table
evicts, and only what is not worth keeping:

1. a signal that never produced a valid sample, once it has had ``GRACE`` seconds to (its
   first message may still be queued) - oldest first;
2. else the least recently active signal, once it has been silent ``idle_after`` seconds.

An active signal is never evicted, so a flood of new names can only displace its own junk
(or signals long dead); while it lasts, newcomers beyond the cap are refused and counted.
Configured signals (``[[signals]]``) are permanent and count towards the cap.

The network thread admits (:meth:`Admission.admit`); the worker marks signals that produced
a valid sample (:meth:`Admission.prove`) and drops the pipelines of evicted signals
(:meth:`Admission.take_evicted`). Both sides touch only operations that are atomic under the
GIL (set add, deque append/popleft, dict membership).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator

__all__ = ["EVICTION_REASONS", "GRACE", "Admission"]

#: Seconds a new signal has to produce a valid sample before it may be evicted for never
#: having produced one: more than a queue's worth of latency.
GRACE = 10.0
#: Why a signal was evicted, the ``reason`` label of ``shopfloor_signals_evicted_total``.
EVICTION_REASONS = ("never_valid", "idle")


class Admission:
    """The admitted signal ids, bounded; iterating gives them all (configured ones first)."""

    def __init__(self, configured: Iterable[str], max_signals: int, idle_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = frozenset(configured)
        self.max_signals = max_signals
        self.idle_after = idle_after
        self._now = clock
        # Discovered signals, least recently active first -> the time of their last message.
        self._active: OrderedDict[str, float] = OrderedDict()
        # Discovered signals not yet proven (no valid sample), oldest first -> admission time.
        self._unproven: OrderedDict[str, float] = OrderedDict()
        self.proven: set[str] = set()  # written by the worker
        self._evicted: deque[str] = deque()  # for the worker, which owns the pipelines
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_REASONS, 0)

    def __contains__(self, sid: object) -> bool:
        return sid in self._active or sid in self.configured

    def __len__(self) -> int:
        return len(self._active) + len(self.configured)

    def __iter__(self) -> Iterator[str]:
        yield from self.configured
        yield from list(self._active)

    def admit(self, sid: str) -> bool:
        """Admit (or refresh) ``sid`` for a message that names it; False when the table is full
        of signals that may not be evicted. Network thread only."""
        active = self._active
        if sid in active:
            active.move_to_end(sid)
            active[sid] = self._now()
            return True
        if sid in self.configured:
            return True
        if len(self) >= self.max_signals and not self._evict_one():
            return False
        self.add(sid)
        return True

    def add(self, sid: str, proven: bool = False) -> None:
        """Admit ``sid`` regardless of the bound's policy (a restored or a test signal)."""
        now = self._now()
        self._active[sid] = now
        if proven:
            self.proven.add(sid)
        elif sid not in self.proven:
            self._unproven[sid] = now

    def prove(self, sid: str) -> None:
        """``sid`` produced a valid sample (worker thread)."""
        if sid not in self.proven:
            self.proven.add(sid)

    def take_evicted(self) -> list[str]:
        """Signals evicted since the last call that are still out (worker thread)."""
        out: list[str] = []
        while self._evicted:
            sid = self._evicted.popleft()
            if sid not in self:  # not admitted again meanwhile
                out.append(sid)
        return out

    def _evict_one(self) -> bool:
        now = self._now()
        unproven = self._unproven
        while unproven:
            sid, since = next(iter(unproven.items()))
            if sid in self.proven or sid not in self._active:
                del unproven[sid]  # proven (or gone) since: no longer a candidate
                continue
            if now - since < GRACE:
                break  # the oldest is too young, so are the rest
            self._remove(sid, "never_valid")
            return True
        if self._active:
            sid, last = next(iter(self._active.items()))
            if now - last >= self.idle_after:
                self._remove(sid, "idle")
                return True
        return False

    def _remove(self, sid: str, reason: str) -> None:
        del self._active[sid]
        self._unproven.pop(sid, None)
        self.proven.discard(sid)
        self._evicted.append(sid)
        self.evictions[reason] += 1
