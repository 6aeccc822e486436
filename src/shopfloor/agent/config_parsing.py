"""Reading the sections of the agent's config file: each key typed and in range, each
subscription checked, and no event topic that a subscription would deliver back.

:func:`_section` fills a settings dataclass from its table by the types of its defaults, with
the ranges (:data:`_RANGES`) and choices (:data:`_CHOICES`) of its keys; the subscriptions, the
``[agent]`` sizing and the event topics have rules of their own here. Apart from
:func:`shopfloor.agent.config.parse_agent_config`, which calls them in the file's order, so that
the loader reads as the list of what is checked.
"""

from __future__ import annotations

import re
import string
from dataclasses import fields
from typing import Any

from shopfloor.agent.config_sections import AgentSettings, EventSettings, Subscription
from shopfloor.config import Parser
from shopfloor.receiving.jsonfields import JsonLayout
from shopfloor.receiving.topics import TopicTemplate

__all__ = ["CODECS"]

CODECS = ("json", "frame", "sparkplug")


# Labels of the per-signal metrics besides the topic's levels, and Prometheus' own.
_RESERVED_LABELS = {"feature", "reason", "defect", "job", "instance", "le", "quantile"}

_SUB_KEYS = {
    "topic",
    "codec",
    "qos",
    "asset",
    "signal",
    "kind",
    "valid_range",
    "features",
    "unit",
    "units",
    "value",
    "fields",
    "quality",
    "detector",
    "threshold",
    "alarm",
}
_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "metrics.port": (0, 65535),  # 0: any free port (tests)
    "keepalive": (5, 65535),
    "session_expiry": (0, 2**32 - 1),
    "receive_maximum": (1, 65535),
    "reconnect_min_delay": (0.1, 3600),
    "reconnect_max_delay": (0.1, 86400),
    "queue_size": (10, 10_000_000),
    "max_signals": (1, 1_000_000),
    "evict_idle_after": (1, 365 * 86400),
    "silence_intervals": (2, 1_000_000),
    "max_clock_ahead": (1, 365 * 86400),
    "silence_min_seconds": (1, 365 * 86400),
    "batch_max": (1, 10_000_000),
    "asset_signals": (0, 256),
    "workers": (0, 64),
    "shutdown_timeout": (0.1, 3600),
    "batch_linger": (0.0, 1.0),
    "qos": (0, 1),
    "stale_after": (1, 10 * 365 * 86400),
    "checkpoint_interval": (1, 7 * 86400),
    "metrics.max_requests": (1, 1024),
    "metrics.max_connections": (1, 65536),
    "metrics.read_timeout": (0.1, 3600),
    "metrics.write_timeout": (0.1, 3600),
    "queue_bytes": (1 << 20, 1 << 40),
    "queue_samples": (1_000, 1 << 40),
    "max_payload_bytes": (1024, 256 << 20),  # MQTT's own limit is 256 MB
    "max_batch_values": (2, 100_000_000),
    "announce_signals": (0, 100_000),
    "announce_interval": (1, 86400),
    "max_peers": (1, 10_000),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "protocol": ("5", "3.1.1"),
    "drop_policy": ("drop_oldest", "drop_newest"),
}


def _no_feedback(
    parser: Parser, raw: dict[str, Any], events: EventSettings,
    subscriptions: tuple[Subscription, ...],
) -> None:
    """Refuse event topics that a subscription would deliver back to the agent.

    Each event topic template is a pattern (the prefix fixed, {asset} and {signal} any one
    level); it overlaps a subscription when some topic fits both. That topic is built level
    by level - a level of the subscription's own text where the pattern can take it, any name
    elsewhere - and the subscription's matcher, the one that routes messages, decides.
    """
    mark = "\x01"  # stands for a field's value; no topic level holds it
    table = raw.get("events", {})
    for key in ("topic", "state_topic"):
        template = getattr(events, key)
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        levels = template.format_map({**dict.fromkeys(fields, mark),
                                      "prefix": events.prefix}).split("/")
        for i, sub in enumerate(subscriptions):
            wanted = sub.template.levels
            witness = []
            for n, level in enumerate(levels):
                fixed = wanted[n] if n < len(wanted) else None
                pattern = ".+".join(re.escape(part) for part in level.split(mark))
                if mark in level and fixed is not None and re.fullmatch(pattern, fixed):
                    witness.append(fixed)
                else:
                    witness.append(level.replace(mark, "x"))
            if sub.template.match("/".join(witness)) is None:
                continue
            # Blame what the file set and what would fix it: the prefix, unless the file set
            # this template itself and left the prefix alone or out of it.
            own = key in table and ("prefix" not in table or "{prefix}" not in template)
            blame = key if own else "prefix"
            shown = template.format(prefix=events.prefix, asset="{asset}", signal="{signal}")
            what = "anomaly events" if key == "topic" else "retained states"
            raise parser.error(
                f"events.{blame}",
                f"the agent would receive its own {what}: {shown!r} matches "
                f"subscriptions[{i}].topic {sub.template.template!r}; choose "
                f"{'a topic' if own else 'a prefix'} outside the subscribed topics",
            )


def _subscription(parser: Parser, entry: Any, key: str, base: dict[str, Any]) -> Subscription:
    t = parser.table(entry, key, _SUB_KEYS)
    if "topic" not in t:
        raise parser.error(key, "missing key 'topic', a template like plant/{asset}/{signal}")
    codec = t.get("codec", "json")
    if codec not in CODECS:
        raise parser.error(f"{key}.codec", f"must be one of {', '.join(CODECS)}; got {codec!r}")
    fixed = {}
    for name in ("asset", "signal"):
        value = t.get(name)
        if value is not None:
            fixed[name] = parser.name(value, f"{key}.{name}")
    layout = _layout(parser, t, key, codec, fixed)
    # Sparkplug names signals by metric, and its topic carries the device (the asset); an
    # object of several fields names them by key.
    required = tuple(
        n
        for n in ("asset", "signal")
        if n not in fixed and not ((codec == "sparkplug" or layout.fields) and n == "signal")
    )
    try:
        template = TopicTemplate.compile(
            t["topic"] if isinstance(t["topic"], str) else "", required=required
        )
    except ValueError as exc:
        raise parser.error(f"{key}.topic", str(exc)) from None
    reserved = sorted({f for f in template.fields if f is not None} & _RESERVED_LABELS)
    if reserved:
        raise parser.error(f"{key}.topic", f"{{{reserved[0]}}} cannot name a level: the "
                           "topic's named levels label the signal's metrics, and that label "
                           "is taken; rename it")
    kind = t.get("kind", "frame" if codec == "frame" else "scalar")
    if (codec == "frame") != (kind == "frame"):
        raise parser.error(f"{key}.kind", "the frame codec carries frame signals, and only it")
    qos = t.get("qos", 1)
    if qos not in (0, 1) or isinstance(qos, bool):
        raise parser.error(f"{key}.qos", "must be 0 or 1 (QoS 2 buys nothing for sensor data)")
    features = parser.table(t.get("features", {}), f"{key}.features")
    if kind == "frame":
        parser.frame_features(features, f"{key}.features")
    elif features:
        raise parser.error(f"{key}.features", "only frame signals have a features table")
    return Subscription(
        template=template,
        codec=codec,
        qos=qos,
        asset=fixed.get("asset"),
        signal=fixed.get("signal"),
        kind=kind,
        valid_range=parser.valid_range(t.get("valid_range"), f"{key}.valid_range"),
        features=features,
        stage=parser.stage(t, key, base, "detector", frame=kind == "frame"),
        unit=parser.unit(t.get("unit", ""), f"{key}.unit"),
        units={parser.name(k, f"{key}.units"): parser.unit(v, f"{key}.units.{k}")
               for k, v in parser.table(t.get("units", {}), f"{key}.units").items()},
        layout=layout,
    )


def _layout(parser: Parser, t: dict[str, Any], key: str, codec: str, fixed: dict[str, str]
            ) -> JsonLayout:
    """value, fields and quality: how gateway JSON objects are read (see jsonfields)."""

    def path(name: str) -> tuple[str, ...]:
        raw = t.get(name, "")
        parts = tuple(raw.split(".")) if isinstance(raw, str) else ()
        if not isinstance(raw, str) or (raw and not all(parts)):
            raise parser.error(f"{key}.{name}", f"must be a dotted path like 'ENERGY.Power'; "
                               f"got {raw!r}")
        return parts if raw else ()

    value, quality = path("value"), path("quality")
    raw_fields = t.get("fields", False)
    if raw_fields is True or raw_fields is False:
        fields: bool | tuple[str, ...] = raw_fields
    elif isinstance(raw_fields, list) and raw_fields:
        fields = tuple(parser.name(f, f"{key}.fields") for f in raw_fields)
    else:
        raise parser.error(f"{key}.fields", "must be true or a list of field names")
    if (value or fields or quality) and codec != "json":
        raise parser.error(f"{key}.value" if value else f"{key}.fields" if fields
                           else f"{key}.quality", "only the json codec reads gateway objects")
    if value and fields:
        raise parser.error(f"{key}.fields", "give value (one signal) or fields (several), "
                           "not both")
    if fields and "signal" in fixed:
        raise parser.error(f"{key}.signal", "with fields, each field names its signal")
    if quality and not (value or fields):
        raise parser.error(f"{key}.quality", "needs value or fields (the default forms read "
                           "a 'quality' or 'q' key themselves)")
    return JsonLayout(value, fields, quality)


def _agent_settings(parser: Parser, raw: dict[str, Any]) -> AgentSettings:
    """[agent], with the queue able to hold one message of the largest size allowed: else
    every such message would be dropped, counted, yet never scored."""
    agent: AgentSettings = _section(parser, raw, "agent", AgentSettings)
    if agent.queue_samples < agent.max_batch_values:
        raise parser.error("agent.queue_samples", f"must hold one message of max_batch_values = "
                           f"{agent.max_batch_values} values; got {agent.queue_samples}")
    # A queued JSON value holds 16 bytes (its time and value); 64 KiB covers the objects.
    need = 16 * agent.max_batch_values + (64 << 10)
    if agent.queue_bytes < need:
        raise parser.error("agent.queue_bytes", f"must hold one message of max_batch_values = "
                           f"{agent.max_batch_values} values, {need} bytes; got "
                           f"{agent.queue_bytes}")
    return agent


def _section(parser: Parser, raw: dict[str, Any], name: str, cls: type[Any]) -> Any:
    table = parser.table(raw.get(name, {}), name, {f.name for f in fields(cls)})
    values: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in table:
            continue
        value, key = table[f.name], f"{name}.{f.name}"
        default = f.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            value = float(value) if ok else value
        else:
            ok = isinstance(value, str)
        if not ok:
            raise parser.error(key, f"must be {type(default).__name__}, got {type(value).__name__}")
        limits = _RANGES.get(key, _RANGES.get(f.name))
        if limits is not None:
            low, high = limits
            if not low <= value <= high:
                raise parser.error(key, f"must be between {low:g} and {high:g}; got {value!r}")
        if f.name in _CHOICES and value not in _CHOICES[f.name]:
            raise parser.error(key, f"must be one of {', '.join(_CHOICES[f.name])}; got {value!r}")
        values[f.name] = value
    return cls(**values)
