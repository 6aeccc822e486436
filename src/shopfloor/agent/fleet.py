"""Several agents on one broker: each says what it owns, and sees who else scores the same.

A plant grows by adding agents beside the first, each owning its own topic filters. Nothing in
MQTT stops two of them from subscribing to the same machine, and then each scores it: two
models, two alarms, two events for every anomaly, and nobody notices. So each agent announces
what it owns, and watches what the others announce.

The announcement is the agent's presence (:class:`~shopfloor.receiving.mqtt.Presence`), extended:
the retained status at ``events.status_topic`` (``{prefix}/agent/{agent}/status``) says, while the
agent is online, the topic filters it subscribes to and the signals it scores (schema
``schemas/agent-status.v1.json``). One topic and one mechanism: the offline message that a clean
stop publishes, and that the broker publishes as the agent's MQTT will when the connection is lost,
replaces it - so a retained status never claims the signals of an agent that is gone. (With
``mqtt.sparkplug_host_id`` set, Sparkplug requires its STATE to be the will, and a crashed agent's
status keeps saying online until it is back.)

Bounds: the status lists at most ``fleet.announce_signals`` signals and at most
:data:`MAX_STATUS_BYTES` of JSON (the rest are counted, ``signal_count``, and the status says
``truncated``); it is republished when the agent's signals change, at most once every
``fleet.announce_interval`` seconds, never per sample. Another agent's status is read only up to
:data:`MAX_STATUS_BYTES`, of at most ``fleet.max_peers`` agents online at once; what is refused
is counted by reason.

Threads: the worker calls :meth:`Fleet.tick` on every turn of its loop (it alone reads the
signal table); the MQTT network thread hands other agents' statuses to :meth:`Fleet.on_status`;
Prometheus' scrape reads :meth:`Fleet.collect`. The peer table is under a lock; what the tick
computes is swapped in as a whole.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

from shopfloor import __version__
from shopfloor.config import signal_id
from shopfloor.logs import RateLimitedLog
from shopfloor.receiving.mqtt import MessageHandler, Presence, Receipt

__all__ = [
    "MAX_STATUS_BYTES",
    "REJECT_REASONS",
    "STATUS_SCHEMA",
    "Fleet",
    "FleetSettings",
    "filters_overlap",
    "identity",
    "status_level",
]

log = logging.getLogger("shopfloor.agent.fleet")

STATUS_SCHEMA = "shopfloor.status/1"
#: The largest status an agent publishes, or reads from another: ~2,000 signal identities of
#: the usual length. 64 agents' statuses at most this size stay within ~25 MiB of memory.
MAX_STATUS_BYTES = 128 << 10
#: A signal identity (or an agent's name) longer than this in another agent's status makes
#: the status invalid: ours are an asset and a name of 64 characters each, plus topic levels.
MAX_ID_CHARS = 512
#: An agent's name (its status topic's level) longer than this is refused: MQTT 5 guarantees
#: client ids of 23 characters, brokers take more; none needs hundreds.
MAX_NAME_CHARS = 256
#: Why another agent's status was refused (the ``reason`` of
#: ``shopfloor_fleet_statuses_rejected_total``).
REJECT_REASONS = ("too_large", "invalid", "peers_full")
#: Seconds between two looks at the signal table (O(signals) each): often enough that a new
#: signal is announced within ``announce_interval`` plus this.
LOOK_INTERVAL = 1.0
_MARK = "\x00"  # stands for the agent's level in the status topic template


class _Signal(Protocol):
    """What the fleet reads of a signal's status (``shopfloor.agent.worker.SignalStatus``)."""

    asset: str
    name: str
    labels: dict[str, str]
    last_arrival: float
    silent: bool


def identity(asset: str, name: str, labels: Mapping[str, str]) -> str:
    """A signal's identity as statuses list it: :func:`~shopfloor.config.signal_id` with its
    topic levels in name order, so that agents whose templates order the levels differently
    still name one signal alike."""
    return signal_id(asset, name, tuple(sorted(labels.items())))


def filters_overlap(a: str, b: str) -> bool:
    """Whether some topic matches both MQTT topic filters (``+`` one level, ``#`` the rest,
    the parent level included). A shared subscription (``$share/GROUP/...``) is taken by the
    filter after its group: its members split the messages, but each is a pipeline of its own
    for the same signals."""
    left, right = _unshared(a).split("/"), _unshared(b).split("/")
    for i in range(max(len(left), len(right))):
        x = left[i] if i < len(left) else None
        y = right[i] if i < len(right) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and "+" not in (x, y):
            return False
    return True


def _unshared(topic_filter: str) -> str:
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2] if topic_filter.count("/") >= 2 else ""
    return topic_filter


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Several agents on one broker (see shopfloor.agent.fleet): what this one announces it owns in
    its retained status, and whether it watches what the others announce."""

    # Signals listed by identity in the status (sorted; the rest only counted, and the status
    # says truncated). The default lists every signal of a full default signal table.
    announce_signals: int = 1000
    # Seconds at least between two statuses when the signals change: a plant discovering
    # hundreds of signals at start-up costs a few statuses, not one per signal.
    announce_interval: float = 10.0
    # Subscribe to the other agents' statuses (same prefix and status_topic) and count the
    # signals this agent scores that another online agent announces too.
    watch_peers: bool = True
    # Other agents' statuses kept at once (each up to 128 KiB); more are refused, counted.
    max_peers: int = 64



def status_level(template: str, prefix: str) -> tuple[str, str] | None:
    """``(before, after)``: the text of ``template`` (``events.status_topic``) around its
    ``{agent}`` level, or None when ``{agent}`` is not exactly one whole level (then the
    other agents' statuses cannot be told apart by one ``+``)."""
    topic = template.format(prefix=prefix, agent=_MARK)
    levels = topic.split("/")
    if topic.count(_MARK) != 1 or _MARK not in levels:
        return None
    before, after = topic.split(_MARK)
    return before, after


@dataclass(frozen=True, slots=True)
class _Peer:
    """Another online agent, as its latest status says."""

    signals: frozenset[str]  # what it lists (a truncated list: some of what it scores)
    filters: tuple[str, ...]


class Fleet:
    """This agent's announcement and its view of the other agents on the broker.

    Parameters
    ----------
    agent
        This agent's name (``mqtt.client_id``): its status topic's level.
    status_topic
        ``events.status_topic``, with ``{prefix}`` and ``{agent}``.
    prefix
        ``events.prefix``.
    filters
        The topic filters this agent subscribes to, listed in its status.
    settings
        ``[fleet]``.
    stale_after
        ``metrics.stale_after``: a signal silent this long (and not in silence alarm) is no
        longer listed, as it leaves the metrics.
    """

    def __init__(self, agent: str, status_topic: str, prefix: str, filters: Sequence[str],
                 settings: FleetSettings, stale_after: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.topic = status_topic.format(prefix=prefix, agent=agent)
        self.filters = tuple(filters)
        self.settings = settings
        self.stale_after = stale_after
        self._clock = clock
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        around = status_level(status_topic, prefix) if settings.watch_peers else None
        self.watching = around is not None
        self._around = around or ("", "")
        # The filter of every agent's status (ours included, which is skipped).
        self.peer_filter = status_topic.format(prefix=prefix, agent="+") if around else ""
        # Set by the agent: replaces the retained online status (MqttLink.update_presence).
        self.publish: Callable[[str, bytes], bool] = lambda topic, payload: True
        self._lock = threading.Lock()
        self._peers: dict[str, _Peer] = {}
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        # Worker thread only: what it announced last and when it may announce again.
        self._announced: frozenset[str] = frozenset()
        self._next_look = -math.inf
        self._next_announce = -math.inf
        # Swapped in whole by the tick, read by the scrape.
        self.announcements = 0
        self.listed = 0
        self.unlisted = 0
        self._shared: tuple[dict[str, int], int] = ({}, 0)
        self._overlapping: frozenset[str] = frozenset()  # peers whose filters overlap ours
        self._shared_log = RateLimitedLog(log, interval=600.0)
        self._peer_log = RateLimitedLog(log, interval=60.0)

    # --- this agent's status -------------------------------------------------------------

    def presence(self) -> Presence:
        """The status topic with its first online message (filters, no signals yet) and the
        offline one, which is also the will."""
        return Presence(self.topic, self._document((), 0), self._base("offline"))

    def _base(self, status: str) -> bytes:
        return _dumps(self._fields(status))

    def _fields(self, status: str) -> dict[str, Any]:
        return {"schema": STATUS_SCHEMA, "agent": self.agent, "status": status,
                "version": __version__, "started": self.started}

    def _document(self, listed: Sequence[str], count: int) -> bytes:
        doc = {**self._fields("online"), "filters": list(self.filters),
               "signals": list(listed), "signal_count": count,
               "truncated": len(listed) < count,
               "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return _dumps(doc)

    def _listing(self, ours: frozenset[str]) -> bytes:
        """The online status for ``ours``: sorted, the first ``announce_signals`` of them that
        fit in MAX_STATUS_BYTES."""
        wanted = sorted(ours)[: self.settings.announce_signals]
        room = MAX_STATUS_BYTES - len(self._document((), len(ours)))
        listed: list[str] = []
        for sid in wanted:
            room -= len(json.dumps(sid)) + 1  # the quoted identity and its comma
            if room < 0:
                break
            listed.append(sid)
        self.listed, self.unlisted = len(listed), len(ours) - len(listed)
        return self._document(listed, len(ours))

    def tick(self, signals: Iterable[_Signal], now: float) -> None:
        """Look at the signal table (at most once a LOOK_INTERVAL); announce a changed one
        (at most once an ``announce_interval``); count the signals shared with other agents.
        Worker thread only. ``now`` is the wall clock, as the signals' arrivals are."""
        mono = self._clock()
        if mono < self._next_look:
            return
        self._next_look = mono + LOOK_INTERVAL
        ours = frozenset(
            identity(s.asset, s.name, s.labels) for s in list(signals)
            if not (now - s.last_arrival > self.stale_after and not s.silent)
        )
        if ours != self._announced and mono >= self._next_announce:
            self._next_announce = mono + self.settings.announce_interval
            self._announced = ours
            self.publish(self.topic, self._listing(ours))
            self.announcements += 1
        if self.watching:
            self._count_shared(ours)

    # --- the other agents ----------------------------------------------------------------

    def route(self, ingest: MessageHandler) -> MessageHandler:
        """The link's message handler: statuses of agents to :meth:`on_status`, the rest to
        ``ingest``."""
        if not self.watching:
            return ingest
        before, after = self._around

        def on_message(topic: str, payload: bytes, arrival: float,
                       receipt: Receipt | None = None) -> bool | None:
            if (topic.startswith(before) and topic.endswith(after)
                    and len(topic) > len(before) + len(after)):
                name = topic[len(before):len(topic) - len(after)]
                if "/" not in name:
                    self.on_status(name, payload)
                    return True  # acknowledged now: a status is done with once read
            return ingest(topic, payload, arrival, receipt)

        return on_message

    def on_status(self, name: str, payload: bytes) -> None:
        """Another agent's retained status (network thread). Online: its signals replace
        what it said before. Offline, emptied (retained status deleted) or unreadable: it
        owns nothing now."""
        if name == self.agent:
            return
        # The name becomes a metric label: a level longer than any client id is no agent's.
        peer, reason = _read_status(payload) if len(name) <= MAX_NAME_CHARS else (None, "invalid")
        with self._lock:
            known = name in self._peers
            if reason is None and peer is not None and not known \
                    and len(self._peers) >= self.settings.max_peers:
                reason = "peers_full"
            if reason is not None:
                self.rejected[reason] += 1
            if peer is None or reason is not None:
                self._peers.pop(name, None)
            else:
                self._peers[name] = peer
            online = len(self._peers)
        if reason is not None:
            self._peer_log.log(logging.WARNING, reason, "status of agent %r refused (%s): it "
                               "counts as owning nothing", name[:MAX_NAME_CHARS], reason)
        elif (peer is not None) != known:
            self._peer_log.log(logging.INFO, "peers", "agent %s is %s (%d other agent(s) "
                               "online)", name, "online" if peer else "gone", online)

    def _count_shared(self, ours: frozenset[str]) -> None:
        with self._lock:
            peers = list(self._peers.items())
        shared: dict[str, int] = {}
        union: set[str] = set()
        for name, peer in peers:
            both = ours & peer.signals
            shared[name] = len(both)
            union |= both
        self._shared = (shared, len(union))
        # Signals are compared by identity (asset, name, the topic's named levels); two agents
        # whose templates name one topic differently (a level fixed in one, named in the other)
        # score it under two identities. Their filters overlap all the same.
        overlapping = frozenset(
            name for name, peer in peers
            if any(filters_overlap(f, g) for f in self.filters for g in peer.filters))
        if overlapping - self._overlapping:
            self._shared_log.log(
                logging.WARNING, "filters", "topic filters of agent(s) %s overlap this agent's "
                "(%s): a topic that matches both is scored by both. Give each agent topic "
                "filters of its own", ", ".join(sorted(overlapping)), ", ".join(self.filters))
        self._overlapping = overlapping
        if union:
            name, peer = max(peers, key=lambda p: shared[p[0]])
            example = min(ours & peer.signals)
            self._shared_log.log(
                logging.WARNING, "shared",
                "%d signal(s) this agent scores are scored by another agent too, %d of them by "
                "%s (e.g. %s; it subscribes to %s): each is scored twice, with two models and "
                "two alarms. Give each agent topic filters of its own", len(union),
                shared[name], name, example, ", ".join(peer.filters) or "nothing it lists")

    # --- metrics ---------------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """The fleet's metric families (the agent's collector yields them at each scrape)."""
        agent = InfoMetricFamily("shopfloor_fleet_agent",
                                 "The agent's name on the broker (mqtt.client_id): its status "
                                 "topic's level and the peer label other agents use for it.")
        agent.add_metric([], {"agent": self.agent})
        yield agent
        yield _counter("shopfloor_fleet_announcements", "Retained statuses this agent "
                       "published because its signals changed (at most one every "
                       "fleet.announce_interval).", self.announcements)
        yield _gauge("shopfloor_fleet_announced_signals",
                     "Signals listed in this agent's latest status.", self.listed)
        yield _gauge("shopfloor_fleet_unlisted_signals",
                     "Signals this agent scores but left out of its status "
                     "(fleet.announce_signals, or the status' size bound).", self.unlisted)
        rejected = CounterMetricFamily("shopfloor_fleet_statuses_rejected",
                                       "Other agents' statuses refused, by reason (too_large, "
                                       "invalid, peers_full): such an agent owns nothing here.",
                                       labels=["reason"])
        for reason in REJECT_REASONS:
            rejected.add_metric([reason], self.rejected[reason])
        yield rejected
        if not self.watching:
            return
        shared, total = self._shared
        with self._lock:
            online = sorted(self._peers)
        yield _gauge("shopfloor_fleet_peers", "Other agents online on the broker, as their "
                     "retained statuses say (at most fleet.max_peers).", len(online))
        yield _gauge("shopfloor_fleet_filters_overlapping", "Other online agents whose topic "
                     "filters overlap this agent's: some topic would be scored by both.",
                     len(self._overlapping))
        yield _gauge("shopfloor_signals_shared", "Signals this agent scores that another "
                     "online agent announces too: each is scored twice (0 when every "
                     "signal has one agent).", total)
        per_peer = GaugeMetricFamily("shopfloor_signals_shared_with",
                                     "Signals this agent scores that the online agent `peer` "
                                     "announces too.", labels=["peer"])
        for name in online:  # bounded by fleet.max_peers
            per_peer.add_metric([name], shared.get(name, 0))
        yield per_peer


def _read_status(payload: bytes) -> tuple[_Peer | None, str | None]:
    """``(peer, None)`` for an online status, ``(None, None)`` for an offline or deleted one,
    ``(None, reason)`` for one refused. Untrusted bytes: bounded before they are parsed."""
    if not payload:
        return None, None
    if len(payload) > MAX_STATUS_BYTES:
        return None, "too_large"
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        return None, "invalid"
    if not isinstance(doc, dict) or not isinstance(doc.get("status"), str):
        return None, "invalid"
    if doc["status"] != "online":
        return None, None
    # An agent older than the announcements says online without signals: it is there, and
    # owns nothing we can tell.
    signals, filters = doc.get("signals", []), doc.get("filters", [])
    count = doc.get("signal_count", 0)
    if not (_strings(signals) and _strings(filters) and isinstance(count, int)):
        return None, "invalid"
    return _Peer(frozenset(signals), tuple(filters)), None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, str) and len(v) <= MAX_ID_CHARS for v in value)


def _dumps(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc)
    c.add_metric([], value)
    return c
