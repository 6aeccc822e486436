"""Anomaly events and retained per-signal states, as versioned JSON on MQTT.

The messages are documented field by field in ``schemas/anomaly-event.v1.json`` (JSON Schema
Draft 2020-12): ``shopfloor.anomaly/1`` events, published at QoS 1 when an alarm is raised,
cleared or ends by adopting a new baseline, and ``shopfloor.state/1`` states, published
retained when a signal's alarm state changes. :func:`event_document` and
:func:`state_document` build them; :class:`EventSink` renders the topics and publishes.

Severity: ``critical`` when ``threshold > 0`` and ``score >= 2 × threshold``, else ``warning``.
Twice the threshold is far outside anything a calibrated threshold lets through by chance,
and needs no second threshold per signal; a cleared event repeats its raise's severity.

Events of frame signals also name the defect the frame points to and the ISO 20816-3 zone of
its velocity (``defect``, ``iso_zone``; :mod:`shopfloor.scoring.diagnosis`).

An alarm that ends because the shifted level was adopted as the new baseline (``adapt_after``)
is sent with ``kind: "cleared"`` and ``event: "baseline_adopted"``: a consumer written before
``event`` existed still sees the end of the alarm it opened (and resolves its alert), while
one that knows the field can tell "the fault went away" from "the fault became the normal".
"""

from __future__ import annotations

import json
import logging
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from importlib import resources
from typing import Any, Protocol

from shopfloor.config import NAME_PATTERN
from shopfloor.logs import RateLimitedLog
from shopfloor.scoring.detect.rules import rule_hits
from shopfloor.scoring.diagnosis import DEFECTS, ZONES

__all__ = [
    "ASSET_TOPIC_LEVEL",
    "EVENT_KINDS",
    "EVENT_SCHEMA",
    "SCHEMA_URI",
    "STATE_SCHEMA",
    "AlarmLike",
    "AnomalyEvent",
    "EventSink",
    "Publisher",
    "check_topic_template",
    "event_document",
    "load_schema",
    "severity",
    "state_document",
]

EVENT_SCHEMA = "shopfloor.anomaly/1"
STATE_SCHEMA = "shopfloor.state/1"
SCHEMA_URI = "urn:shopfloor:schema:anomaly-event:1"  # the schema file's $id
#: Stands for the signal in topics of asset-level messages; signal names cannot start with "_".
ASSET_TOPIC_LEVEL = "_asset"
STATES = ("warming_up", "normal", "active", "cooldown")
#: What an alarm transition can be: the ``event`` field; ``kind`` folds adoption into cleared.
EVENT_KINDS = ("raised", "cleared", "baseline_adopted", "silent", "resumed")
_LABEL_KEY = frozenset(string.ascii_letters + string.digits + "_")
_MAX_LABELS = 16

log = logging.getLogger("shopfloor.agent.events")


def load_schema() -> dict[str, Any]:
    """The JSON Schema of events (states under ``$defs/state``), as shipped in the package."""
    text = resources.files("shopfloor.schemas").joinpath("anomaly-event.v1.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


class AlarmLike(Protocol):
    """What an alarm transition must carry; :class:`AnomalyEvent` is one, the worker's another."""

    @property
    def kind(self) -> str: ...
    @property
    def asset(self) -> str: ...
    @property
    def signal(self) -> str | None: ...  # None: the asset's multivariate detector
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def ts(self) -> float: ...
    @property
    def score(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def value(self) -> float | None: ...  # scalar signals
    @property
    def features(self) -> Mapping[str, float] | None: ...  # frames; asset: signal values
    @property
    def top(self) -> str | None: ...
    @property
    def rules(self) -> int | Sequence[str]: ...  # rule bitmask or rule names
    @property
    def likelihood(self) -> float | None: ...  # anomaly likelihood in [0, 1]; None/NaN unknown
    @property
    def onset(self) -> float | None: ...  # signal time the alarm started; None/NaN unknown
    @property
    def defect(self) -> str | None: ...  # frames: a name of DEFECTS; None for no diagnosis
    @property
    def iso_zone(self) -> str | None: ...  # frames: "A".."D"; None without a velocity


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """An alarm raised, cleared or ended by adoption (see the schema for every field).

    ``kind`` is one of :data:`EVENT_KINDS`; ``baseline_adopted`` becomes ``kind: "cleared"`` with
    ``event: "baseline_adopted"`` in the document.
    """

    kind: str
    asset: str
    signal: str | None
    ts: float
    score: float
    threshold: float
    value: float | None = None
    features: Mapping[str, float] | None = None
    top: str | None = None
    rules: int | Sequence[str] = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    likelihood: float | None = None
    onset: float | None = None
    defect: str | None = None
    iso_zone: str | None = None


def severity(score: float, threshold: float) -> str:
    """``critical`` when ``threshold > 0`` and ``score >= 2 × threshold``, else ``warning``."""
    return "critical" if threshold > 0 and score >= 2.0 * threshold else "warning"


def _number(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _probability(x: float | None) -> float | None:
    # A likelihood outside [0, 1] is a bug upstream, not a number to pass on; null keeps the
    # event itself (an alarm must not be lost over one of its annotations).
    return float(x) if x is not None and 0.0 <= x <= 1.0 else None


def _onset(ts: float | None) -> str | None:
    # Like the likelihood: an onset that is no representable time is dropped, not the event.
    try:
        return None if ts is None or not math.isfinite(ts) else _when(ts)
    except ValueError:
        return None


def _when(ts: float) -> str:
    try:
        stamp = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"ts {ts!r} is not a representable time") from None
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(asset: str, signal: str | None, labels: Mapping[str, str], ts: float,
            agent: str) -> dict[str, Any]:
    if not NAME_PATTERN.match(asset):
        raise ValueError(f"asset name {asset!r} does not match {NAME_PATTERN.pattern}")
    if signal is not None and not NAME_PATTERN.match(signal):
        raise ValueError(f"signal name {signal!r} does not match {NAME_PATTERN.pattern}")
    if len(labels) > _MAX_LABELS:
        raise ValueError(f"at most {_MAX_LABELS} labels; got {len(labels)}")
    for key in labels:
        if not key or key[0].isdigit() or len(key) > 32 or not set(key) <= _LABEL_KEY:
            raise ValueError(f"label name {key!r} must be an identifier of at most 32 chars")
    if not math.isfinite(ts):
        raise ValueError(f"ts must be finite; got {ts!r}")
    return {"time": _when(ts), "ts": float(ts), "asset": asset, "signal": signal,
            "scope": "asset" if signal is None else "signal",
            "labels": {k: str(v)[:256] for k, v in labels.items()}, "agent": agent}


def event_document(event: AlarmLike, agent: str, severity_: str | None = None) -> dict[str, Any]:
    """The ``shopfloor.anomaly/1`` message for ``event``; ``severity_`` overrides the rule.

    Raises ValueError when the event cannot be represented (bad names, non-finite score).
    """
    if event.kind not in EVENT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(EVENT_KINDS)}; got {event.kind!r}")
    score = _number(event.score)
    if score is None:
        raise ValueError(f"an alarm's score must be finite; got {event.score!r}")
    if event.value is not None and event.features is not None:
        raise ValueError("an event carries value (scalar) or features (frame), not both")
    if event.signal is not None and event.value is None and event.features is None:
        raise ValueError("a signal event needs its value (scalar) or features (frame)")
    rules = event.rules
    names = [hit.name for hit in rule_hits(rules)] if isinstance(rules, int) else list(rules)
    doc = {"schema": EVENT_SCHEMA,
           "kind": "raised" if event.kind in ("raised", "silent") else "cleared",
           "event": event.kind,
           **_common(event.asset, event.signal, event.labels, event.ts, agent),
           "severity": severity_ or severity(event.score, event.threshold),
           "score": score, "threshold": _number(event.threshold), "top": event.top,
           "rules": names, "likelihood": _probability(event.likelihood),
           "onset": _onset(event.onset)}
    if event.value is not None:
        doc["value"] = _number(event.value)
    else:  # an asset event without signal values still says so in the same shape
        doc["features"] = {str(k): _number(v) for k, v in (event.features or {}).items()}
    # Optional, and like the likelihood an unknown name drops the annotation, not the event.
    if event.defect in DEFECTS:
        doc["defect"] = event.defect
    if event.iso_zone in ZONES[1:]:
        doc["iso_zone"] = event.iso_zone
    return doc


def state_document(asset: str, signal: str | None, state: str, score: float | None,
                   threshold: float | None, ts: float, agent: str,
                   labels: Mapping[str, str] | None = None,
                   likelihood: float | None = None) -> dict[str, Any]:
    """The ``shopfloor.state/1`` message (see the schema's ``$defs/state``)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}; got {state!r}")
    return {"schema": STATE_SCHEMA, **_common(asset, signal, labels or {}, ts, agent),
            "state": state, "score": _number(score), "threshold": _number(threshold),
            "likelihood": _probability(likelihood)}


class Publisher(Protocol):
    """What the sink needs from the MQTT link (:class:`shopfloor.receiving.mqtt.MqttLink` is
    one)."""

    @property
    def client_id(self) -> str: ...
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool: ...


class _Topic:
    """A topic template: ``{name}`` fields each fill exactly one level, never a wildcard."""

    def __init__(self, template: str, what: str, *, per_signal: bool) -> None:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        if any(not f.isidentifier() for f in fields) or "{}" in template:
            raise ValueError(f"{what} {template!r}: placeholders must be named, like {{asset}}")
        if per_signal and not {"asset", "signal"} <= fields:
            raise ValueError(f"{what} {template!r} needs {{asset}} and {{signal}}: retained "
                             "states of different signals must not overwrite each other")
        probe = template.format_map(dict.fromkeys(fields, "x"))
        if _bad_topic(probe) or probe.startswith("$"):
            raise ValueError(f"{what} {template!r} would give invalid topics like {probe!r}")
        self.template = template
        self.fields = fields

    def render(self, values: Mapping[str, str]) -> str:
        """The topic; ValueError if a field is missing or a value is not one clean level."""
        for name in self.fields:
            value = values.get(name)
            if value is None:
                raise ValueError(f"no value for {{{name}}} in topic {self.template!r}")
            if name != "prefix" and (not value or "/" in value or _bad_topic(value)):
                raise ValueError(f"{name}={value!r} is not a single topic level")
        return self.template.format_map(values)


def check_topic_template(template: str, *, per_signal: bool) -> None:
    """Raise ValueError if :class:`EventSink` would refuse ``template`` (``per_signal``: a
    retained state topic): the agent's config check calls this, so a file that passes the
    check cannot fail when the sink is built."""
    _Topic(template, "template", per_signal=per_signal)


def _bad_topic(topic: str) -> bool:
    return not topic or "+" in topic or "#" in topic or "\0" in topic or "//" in topic \
        or topic.startswith("/") or topic.endswith("/")


def _encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()


class EventSink:
    """Publishes anomaly events (QoS ``qos``) and retained state changes; used by one thread.

    Parameters
    ----------
    link
        Where to publish (an :class:`~shopfloor.receiving.mqtt.MqttLink`).
    prefix
        Fills ``{prefix}``; may span levels (``acme/shopfloor``), no wildcards.
    topic_template, state_topic_template
        Topics with ``{prefix}``, ``{asset}``, ``{signal}`` and the events' label names.
    qos
        QoS of events and states (1: delivered at least once).
    agent
        The ``agent`` field; the link's client id by default.
    """

    def __init__(self, link: Publisher, prefix: str = "shopfloor",
                 topic_template: str = "{prefix}/{asset}/{signal}/anomaly",
                 state_topic_template: str = "{prefix}/{asset}/{signal}/state", qos: int = 1,
                 agent: str | None = None) -> None:
        if _bad_topic(prefix) or prefix.startswith("$"):
            raise ValueError(f"events prefix {prefix!r} must be topic levels without wildcards")
        if qos not in (0, 1, 2):
            raise ValueError(f"events qos must be 0, 1 or 2; got {qos}")
        self.link = link
        self.prefix = prefix
        self.topic = _Topic(topic_template, "events topic", per_signal=False)
        self.state_topic = _Topic(state_topic_template, "events state_topic", per_signal=True)
        self.qos = qos
        self.agent = agent or link.client_id
        self.published = 0
        self.failed = 0
        self.states_published = 0
        self.states_failed = 0
        # Keyed by the signal's whole identity: asset, signal and its topic labels.
        self._raised: dict[tuple[str, str | None, str], str] = {}  # open alarm -> severity
        self._states: dict[tuple[str, str | None, str], str] = {}  # last state published
        self._errors = RateLimitedLog(log)

    def _values(self, asset: str, signal: str | None,
                labels: Mapping[str, str]) -> dict[str, str]:
        return {**labels, "prefix": self.prefix, "asset": asset,
                "signal": ASSET_TOPIC_LEVEL if signal is None else signal}

    def alarm(self, event: AlarmLike) -> bool:
        """Publish one raised, cleared or adopted alarm; False (counted, logged) if it cannot
        be sent."""
        # The silence alarm is a second alarm of the signal, beside its anomaly alarm.
        silence = "silence" if event.kind in ("silent", "resumed") else ""
        key = (event.asset, event.signal, _label_key(event.labels) + silence)
        raising = event.kind in ("raised", "silent")
        try:
            # An adoption ends the alarm as a clear does: it repeats the raise's severity.
            level = self._raised.get(key) if not raising else None
            doc = event_document(event, self.agent, level)
            topic = self.topic.render(self._values(event.asset, event.signal, event.labels))
            payload = _encode(doc)
        except ValueError as exc:
            self.failed += 1
            self._errors.log(logging.WARNING, "event_invalid", "anomaly event for %s/%s not "
                             "published: %s", event.asset, event.signal, exc)
            return False
        if raising:
            self._raised[key] = doc["severity"]
        else:
            self._raised.pop(key, None)
        if not self.link.publish(topic, payload, self.qos, False):
            self.failed += 1
            return False
        self.published += 1
        return True

    def state(self, asset: str, signal: str | None, state_name: str | Enum,
              score: float | None, threshold: float | None, ts: float,
              labels: Mapping[str, str] | None = None,
              likelihood: float | None = None) -> bool:
        """Publish the signal's state, retained, if it differs from the last one published.

        ``state_name`` is one of warming_up, normal, active, cooldown (or an AlarmState).
        Returns True when a message was published. A failed publish is retried on the next
        call, since the state is remembered only once published.
        """
        name = state_name.name.lower() if isinstance(state_name, Enum) else state_name
        key = (asset, signal, _label_key(labels or {}))
        if self._states.get(key) == name:
            return False
        try:
            doc = state_document(asset, signal, name, score, threshold, ts, self.agent, labels,
                                 likelihood)
            topic = self.state_topic.render(self._values(asset, signal, labels or {}))
            payload = _encode(doc)
        except ValueError as exc:
            self.states_failed += 1
            self._errors.log(logging.WARNING, "state_invalid", "state for %s/%s not "
                             "published: %s", asset, signal, exc)
            return False
        if not self.link.publish(topic, payload, self.qos, True):
            self.states_failed += 1
            return False
        self._states[key] = name
        self.states_published += 1
        return True



def _label_key(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())
