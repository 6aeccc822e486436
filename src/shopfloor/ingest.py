"""Ingest: what runs in the MQTT network thread for every message.

It matches the topic against the compiled templates, decodes the payload with the
subscription's codec (pure functions over untrusted bytes), names the signal, enforces the
signal cap and enqueues. It never blocks, never learns and never raises into paho: the
keepalive must keep flowing however bad the data. Everything it refuses is counted by reason.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from dataclasses import dataclass

from shopfloor.agent_config import AgentConfig, Subscription
from shopfloor.codecs import Frame, Limits, Rejected, Samples, decode
from shopfloor.config import NAME_PATTERN
from shopfloor.logs import RateLimitedLog
from shopfloor.sparkplug import MESSAGE_TYPES, SparkplugAliases

__all__ = ["BoundedQueue", "Ingest", "Item"]

log = logging.getLogger("shopfloor.ingest")


@dataclass(frozen=True, slots=True)
class Item:
    """One decoded reading on its way to the worker."""

    signal: str  # asset/name
    subscription: int  # index into the config's subscriptions
    labels: tuple[tuple[str, str], ...]  # the topic's other named levels (site, line, ...)
    data: Samples | Frame
    arrival: float


class BoundedQueue:
    """A bounded FIFO whose overflow policy is explicit: drop the oldest or the newest item.

    ``put`` never blocks (the network thread must not stall); every drop is counted.
    """

    def __init__(self, capacity: int, policy: str = "drop_oldest") -> None:
        if policy not in ("drop_oldest", "drop_newest"):
            raise ValueError(f"policy must be drop_oldest or drop_newest; got {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self.dropped = 0
        self._items: deque[Item] = deque()
        self._ready = threading.Condition(threading.Lock())

    def put(self, item: Item) -> None:
        with self._ready:
            if len(self._items) >= self.capacity:
                self.dropped += 1
                if self.policy == "drop_newest":
                    return
                self._items.popleft()
            self._items.append(item)
            if len(self._items) == 1:  # only an empty queue has a waiting worker to wake
                self._ready.notify()

    def get_batch(self, max_items: int, timeout: float) -> list[Item]:
        """Up to ``max_items`` items, waiting at most ``timeout`` seconds for the first."""
        with self._ready:
            if not self._items:
                self._ready.wait(timeout)
            n = min(max_items, len(self._items))
            return [self._items.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._items)


class Ingest:
    """The ``on_message`` handler: topic -> subscription -> codec -> signal -> queue."""

    def __init__(
        self, config: AgentConfig, queue: BoundedQueue, limits: Limits | None = None
    ) -> None:
        self.config = config
        self.queue = queue
        self.limits = limits or Limits()
        self.aliases = SparkplugAliases()
        self.received = 0
        self.rejected: Counter[str] = Counter()
        # Signals admitted so far (bounded by max_signals): only this thread adds to it.
        self.admitted: set[str] = {s.id for s in config.pipeline.signals}
        self.closed = False
        self.deferred = 0  # messages left with the broker while shutting down
        self._routes: dict[str, tuple[int, dict[str, str]]] = {}  # topic -> (subscription, fields)
        self._errors = RateLimitedLog(log)

    def on_message(self, topic: str, payload: bytes, arrival: float) -> bool:
        """Take one message; False refuses it (not acknowledged: the broker keeps it)."""
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
                         arrival)
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
    ) -> None:
        decoded = decode(
            sub.codec,
            payload,
            arrival,
            self.limits,
            self.aliases if sub.codec == "sparkplug" else None,
            topic,
        )
        if isinstance(decoded, Rejected):
            self._reject(decoded.reason, topic, decoded.detail)
            return
        asset = sub.asset or fields.get("asset", "")
        # The topic's other levels label the signal's events - except a Sparkplug message type
        # (DBIRTH, DDATA, ...), which says nothing about the signal and changes per message.
        labels = tuple((k, v) for k, v in fields.items() if k not in ("asset", "signal")
                       and not (sub.codec == "sparkplug" and v in MESSAGE_TYPES))
        for reading in decoded:
            name = sub.signal or fields.get("signal") or reading.metric or ""
            if not (NAME_PATTERN.match(asset) and NAME_PATTERN.match(name)):
                self._reject("bad_name", topic, "asset and signal names are 1-64 letters, "
                             "digits, '_', '.' or '-'")
                continue
            signal = f"{asset}/{name}"
            if signal not in self.admitted:
                if len(self.admitted) >= self.config.agent.max_signals:
                    self._reject("signal_cap", topic, f"agent.max_signals = "
                                 f"{self.config.agent.max_signals} signals are known already")
                    continue
                self.admitted.add(signal)
            self.queue.put(Item(signal, index, labels, reading.data, arrival))
