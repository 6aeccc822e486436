"""Ingest: what runs in the MQTT network thread for every message.

It matches the topic against the compiled templates, decodes the payload with the
subscription's codec (pure functions over untrusted bytes), names the signal, enforces the
signal cap and enqueues. It never blocks, never learns and never raises into paho: the
keepalive must keep flowing however bad the data. Everything it refuses is counted by reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass

from shopfloor.agent.config import AgentConfig, AgentSettings, Subscription
from shopfloor.config import NAME_PATTERN, signal_id
from shopfloor.logs import RateLimitedLog
from shopfloor.receiving.admission import Admission
from shopfloor.receiving.codecs import Frame, Limits, Rejected, Samples, decode
from shopfloor.receiving.jsonfields import decode_layout
from shopfloor.receiving.mqtt import Receipt
from shopfloor.receiving.sparkplug import MESSAGE_TYPES, SparkplugAliases
from shopfloor.receiving.sparkplug_host import SparkplugHost

__all__ = ["DROP_REASONS", "BoundedQueue", "Ingest", "Item", "finish", "item_cost"]

log = logging.getLogger("shopfloor.receiving.ingest")


@dataclass(frozen=True, slots=True)
class Item:
    """One decoded reading on its way to the worker."""

    signal: str  # asset/name
    subscription: int  # index into the config's subscriptions
    labels: tuple[tuple[str, str], ...]  # the topic's other named levels (site, line, ...)
    data: Samples | Frame
    arrival: float
    # The QoS 1/2 message's acknowledgement, held until this item is done (scored or dropped);
    # None for QoS 0.
    receipt: Receipt | None = None


def finish(items: Iterable[Item]) -> None:
    """The items are done with (scored, or dropped and counted): release their messages'
    receipts, which acknowledges every message whose items are all done."""
    receipts = [i.receipt for i in items if i.receipt is not None]
    if receipts:
        receipts[0].link.release(receipts)


_DEFAULTS = AgentSettings()

#: Why a queue overflowed, the ``reason`` label of ``shopfloor_messages_dropped_total``.
DROP_REASONS = ("items", "bytes", "samples")

# What a queued item holds besides its arrays' data, measured with tracemalloc on items made by
# Ingest from real payloads (JSON scalars and batches, frames, Sparkplug; CPython 3.11, NumPy
# 2): about 370 bytes for a frame item and 425 for a JSON one without topic labels, each label
# about 85 bytes more (its (name, value) tuple), the signal's name a byte a character. These
# constants round that up, so the accounting errs on the side of memory (by <= 15 %).
_ITEM_BYTES = 320  # the Item, its Samples/Frame, the arrival float, the deque slot
_ARRAY_BYTES = 64  # per ndarray header, beyond its data
_LABEL_BYTES = 88  # per topic label


def item_cost(item: Item) -> tuple[int, int]:
    """What ``item`` costs the queue: (bytes of memory it holds, samples it carries)."""
    data = item.data
    held = _ITEM_BYTES + len(item.signal) + _LABEL_BYTES * len(item.labels)
    if isinstance(data, Frame):
        return held + _ARRAY_BYTES + data.samples.nbytes, data.samples.size
    return (held + 2 * _ARRAY_BYTES + data.timestamps.nbytes + data.values.nbytes,
            data.values.size)


class BoundedQueue:
    """A FIFO bounded in items, bytes and samples, whose overflow policy is explicit: drop the
    oldest or the newest items.

    Items alone bound nothing useful once one message can carry 100,000 values: 2,636 such
    items held 4.4 GB. So the queue also counts the memory each item holds (:func:`item_cost`:
    its arrays plus measured object overhead) and the samples it carries (the worker's work),
    and keeps all three under their bounds. ``put`` never blocks (the network thread must not
    stall); every drop is counted under the bound that forced it (:data:`DROP_REASONS`). An
    item that alone exceeds the byte or sample bound is dropped without evicting anything: it
    could never fit.
    """

    def __init__(
        self,
        capacity: int,
        policy: str = "drop_oldest",
        max_bytes: int = _DEFAULTS.queue_bytes,
        max_samples: int = _DEFAULTS.queue_samples,
    ) -> None:
        if policy not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"policy must be drop_oldest or drop_newest; got {policy!r}")
        for name, bound in (("capacity", capacity), ("max_bytes", max_bytes),
                            ("max_samples", max_samples)):
            if bound < 1:
                raise ValueError(f"{name} must be >= 1, got {bound!r}")
        self.capacity = capacity
        self.policy = policy
        self.max_bytes = max_bytes
        self.max_samples = max_samples
        # Memory peaks when the queue is full and the worker holds a batch: the batch's items,
        # their concatenation and the accepted samples for the asset detectors are three
        # copies of it (measured: a 64 MiB queue of one signal's 65,536-value batches, taken
        # whole, added 263 MiB to RSS). An eighth per get, and the worker gets twice per turn
        # (batch_linger), keeps that peak near 1.75 x max_bytes (the same flood: +112 MiB).
        # Batches stay large enough: 8 MiB at the default bound amortises any per-batch cost.
        self.batch_bytes = max(1, max_bytes // 8)
        self.batch_samples = max(1, max_samples // 8)
        self.bytes = 0  # held by the queued items, by item_cost
        self.samples = 0
        # Items handed out by get_batch and not yet reported done: the queue is drained when
        # it is empty and nothing is in hand (the agent's stop waits for both).
        self.in_hand = 0
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        # Each item with its cost as counted when it came in, so a get subtracts exactly that.
        self._items: deque[tuple[Item, int, int]] = deque()
        self._ready = threading.Condition(threading.Lock())

    @property
    def dropped(self) -> int:
        """Items dropped for any reason."""
        return sum(self.drops.values())

    def put(self, item: Item) -> None:
        dropped = self._put(item)
        if dropped:
            finish(dropped)  # outside the lock: acknowledging takes the link's lock

    def _put(self, item: Item) -> list[Item]:
        """Queue ``item``; the items dropped for it (it may be one of them)."""
        size, samples = item_cost(item)
        with self._ready:
            if size > self.max_bytes or samples > self.max_samples:
                self.drops["bytes" if size > self.max_bytes else "samples"] += 1
                return [item]
            dropped: list[Item] = []
            while True:
                if len(self._items) >= self.capacity:
                    reason = "items"
                elif self.bytes + size > self.max_bytes:
                    reason = "bytes"
                elif self.samples + samples > self.max_samples:
                    reason = "samples"
                else:
                    break
                self.drops[reason] += 1
                if self.policy == "drop_newest":
                    dropped.append(item)
                    return dropped
                old, old_size, old_samples = self._items.popleft()
                dropped.append(old)
                self.bytes -= old_size
                self.samples -= old_samples
            self._items.append((item, size, samples))
            self.bytes += size
            self.samples += samples
            if len(self._items) == 1:  # only an empty queue has a waiting worker to wake
                self._ready.notify()
            return dropped

    def get_batch(self, max_items: int, timeout: float) -> list[Item]:
        """Up to ``max_items`` items, waiting at most ``timeout`` seconds for the first.

        A batch also holds at most ``batch_bytes`` and ``batch_samples`` (but always one item):
        the worker keeps a batch, and copies of its arrays, while the queue fills up again.
        """
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            batch: list[Item] = []
            size_left, samples_left = self.batch_bytes, self.batch_samples
            while self._items and len(batch) < max_items:
                item, size, samples = self._items[0]
                if batch and (size > size_left or samples > samples_left):
                    break
                self._items.popleft()
                self.bytes -= size
                self.samples -= samples
                size_left -= size
                samples_left -= samples
                batch.append(item)
            self.in_hand += len(batch)
            return batch

    def take(self, max_items: int, timeout: float, linger: float) -> list[Item]:
        """:meth:`get_batch`, then, if the batch is not full, ``linger`` seconds for more: a
        batch then holds many samples per signal, and a pipeline call's fixed cost is paid per
        batch, not per message (the sleep also frees the GIL for the network thread)."""
        items = self.get_batch(max_items, timeout)
        if items and linger > 0 and len(items) < max_items:
            time.sleep(linger)
            items += self.get_batch(max_items - len(items), 0.0)
        return items

    def done(self, count: int) -> None:
        """``count`` items handed out are done with (scored, failed or abandoned)."""
        with self._ready:
            self.in_hand -= count

    def take_all(self) -> list[Item]:
        """Empty the queue (at stop, once the worker is gone): what was never scored."""
        with self._ready:
            items = [item for item, _, _ in self._items]
            self._items.clear()
            self.bytes = self.samples = 0
            return items

    def __len__(self) -> int:
        return len(self._items)


class Ingest:
    """The ``on_message`` handler: topic -> subscription -> codec -> signal -> queue."""

    def __init__(
        self, config: AgentConfig, queue: BoundedQueue, limits: Limits | None = None
    ) -> None:
        self.config = config
        self.queue = queue
        # The payload cap is checked before any parsing, the values cap before any array is
        # built: an oversized message costs a length check, not a decode.
        self.limits = limits or Limits(max_payload_bytes=config.agent.max_payload_bytes,
                                       max_batch_values=config.agent.max_batch_values)
        self.aliases = SparkplugAliases()
        self.sparkplug: SparkplugHost | None = None  # sends rebirth requests (the agent's)
        self.received = 0
        self.rejected: Counter[str] = Counter()
        # Signals with a pipeline (bounded by max_signals; a full table evicts the unproven
        # and the long silent): only this thread admits.
        a = config.agent
        self.admitted = Admission((s.id for s in config.pipeline.signals), a.max_signals,
                                  a.evict_idle_after)
        self.closed = False
        self.deferred = 0  # messages left with the broker while shutting down
        self._routes: dict[str, tuple[int, dict[str, str]]] = {}  # topic -> (subscription, fields)
        self._errors = RateLimitedLog(log)

    def on_message(self, topic: str, payload: bytes, arrival: float,
                   receipt: Receipt | None = None) -> bool:
        """Take one message; False refuses it (not acknowledged: the broker keeps it).

        ``receipt`` is held once for every item queued; the worker releases it once the item
        is scored, so the message is acknowledged only then."""
        if self.closed:
            # Shutting down: leave it with the broker, which delivers it to the next run.
            self.deferred += 1
            return False
        self.received += 1
        route = self._routes.get(topic)
        if route is None:
            route = self._route(topic)
        if route[0] < 0:
            self._reject("unknown_topic", topic, "no subscription template matches it")
        else:
            index, fields = route
            self._accept(index, self.config.subscriptions[index], fields, topic, payload,
                         arrival, receipt)
        return True

    def _route(self, topic: str) -> tuple[int, dict[str, str]]:
        # Matching every template per message cost a tenth of the network thread; topics
        # repeat, so the answer is remembered - for at most 2 x max_signals topics, so a flood
        # of new topics cannot grow it (it is simply cleared and refilled).
        route: tuple[int, dict[str, str]] = (-1, {})
        for index, sub in enumerate(self.config.subscriptions):
            fields = sub.template.match(topic)
            if fields is not None:
                route = (index, fields)
                break
        if len(self._routes) >= 2 * self.config.agent.max_signals:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        # Counted always; logged once a minute per reason, naming one offending topic.
        self.rejected[reason] += 1
        self._errors.log(logging.WARNING, reason, "message on %s rejected: %s (%s)",
                         topic[:200], reason, detail[:200])

    def _accept(
        self,
        index: int,
        sub: Subscription,
        fields: dict[str, str],
        topic: str,
        payload: bytes,
        arrival: float,
        receipt: Receipt | None,
    ) -> None:
        if sub.layout.active:
            decoded = decode_layout(payload, arrival, self.limits, sub.layout)
        else:
            decoded = decode(
                sub.codec,
                payload,
                arrival,
                self.limits,
                self.aliases if sub.codec == "sparkplug" else None,
                topic,
            )
        if self.aliases.wanted and self.sparkplug is not None:
            self.sparkplug.serve(self.aliases)
        if isinstance(decoded, Rejected):
            self._reject(decoded.reason, topic, decoded.detail)
            return
        asset = sub.asset or fields.get("asset", "")
        # The topic's other levels label the signal's events - except a Sparkplug message type
        # (DBIRTH, DDATA, ...), which says nothing about the signal and changes per message.
        labels = tuple((k, v) for k, v in fields.items() if k not in ("asset", "signal")
                       and not (sub.codec == "sparkplug" and v in MESSAGE_TYPES))
        for reading in decoded:
            if isinstance(reading.data, Rejected):
                self._reject(reading.data.reason, topic, reading.data.detail)
                continue
            name = sub.signal or fields.get("signal") or reading.metric or ""
            if not (NAME_PATTERN.match(asset) and NAME_PATTERN.match(name)):
                self._reject("bad_name", topic, "asset and signal names are 1-64 letters, "
                             "digits, '_', '.' or '-'")
                continue
            # A configured signal is one machine's, whatever line it is heard on; a discovered
            # one is known by every named level of its topic.
            signal = f"{asset}/{name}"
            if signal not in self.admitted.configured:
                signal = signal_id(asset, name, labels)
            if not self.admitted.admit(signal):
                self._reject("signal_cap", topic, f"agent.max_signals = "
                             f"{self.config.agent.max_signals} signals are known, all active")
                continue
            if receipt is not None:
                receipt.hold()
            self.queue.put(Item(signal, index, labels, reading.data, arrival, receipt))
