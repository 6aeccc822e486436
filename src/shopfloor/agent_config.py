"""The agent's configuration: the pipeline config plus MQTT, subscriptions, queue and events.

Everything is validated once, before the agent connects: ``shopfloor check`` and
``shopfloor run`` share this loader, so a file that passes one passes the other. Files named in
the config (TLS certificates, the password file) must be readable now, not at the first
reconnect at 3 a.m.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from shopfloor.config import (
    AGENT_SECTIONS,
    NAME_PATTERN,
    Parser,
    PipelineConfig,
    SignalSpec,
    StageSpec,
    read_config_file,
    read_toml,
)
from shopfloor.tomlkeys import KeyLines
from shopfloor.topics import TopicTemplate

__all__ = [
    "AgentConfig",
    "AgentSettings",
    "EventSettings",
    "MetricsSettings",
    "MqttConfig",
    "StateSettings",
    "Subscription",
    "load_agent_config",
    "parse_agent_config",
]

CODECS = ("json", "frame", "sparkplug")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Broker connection; the password itself is read at start from a file or credential."""

    host: str = "localhost"
    port: int = 1883
    protocol: str = "5"  # "5" or "3.1.1"
    client_id: str = ""  # empty: shopfloor-<hostname>
    keepalive: int = 30
    username: str = ""
    password_file: str = ""
    password_credential: str = ""  # name under $CREDENTIALS_DIRECTORY (systemd LoadCredential)
    tls: bool = False  # also on when ca_file or cert_file is set; no ca_file: system CAs
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    clean_start: bool = False  # persistent session: QoS 1 messages wait while we are away
    session_expiry: int = 3600  # seconds the broker keeps the session (MQTT 5)
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Queue and worker sizing."""

    queue_size: int = 10_000
    drop_policy: str = "drop_oldest"  # or "drop_newest"
    max_signals: int = 1_000
    batch_max: int = 5_000
    # After the first message of a batch, wait this long for more: a batch then holds many
    # samples per signal, and the fixed cost of a pipeline call (tens of µs) is paid per batch,
    # not per message. Adds at most this much latency.
    batch_linger: float = 0.02
    shutdown_timeout: float = 10.0
    # Signals discovered on subscriptions join their asset's multivariate detector, up to this
    # many per asset (its covariance grows with the square); 0: no asset detector for them.
    asset_signals: int = 16


@dataclass(frozen=True, slots=True)
class EventSettings:
    """Where anomaly events and retained per-signal states go."""

    prefix: str = "shopfloor"
    topic: str = "{prefix}/{asset}/{signal}/anomaly"
    state_topic: str = "{prefix}/{asset}/{signal}/state"
    qos: int = 1


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus endpoint (9817 is not taken by a common exporter)."""

    host: str = "127.0.0.1"
    port: int = 9817
    cert_file: str = ""  # serve /metrics over TLS when set (with key_file)
    key_file: str = ""
    stale_after: float = 3600.0  # seconds of silence before a signal's series are dropped


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Checkpoints of the pipelines, so what was learned survives restarts and power cuts."""

    directory: str = ""  # empty: $STATE_DIRECTORY (systemd StateDirectory=), else none
    checkpoint_interval: float = 300.0  # seconds between periodic checkpoints

    def resolved(self) -> Path | None:
        """The checkpoint directory, or None when checkpoints are off."""
        if self.directory:
            return Path(self.directory)
        env = os.environ.get("STATE_DIRECTORY", "")
        return Path(env.split(":")[0]) if env else None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic template, its codec, and the pipeline of signals first seen on it."""

    template: TopicTemplate
    codec: str
    qos: int
    asset: str | None  # fixed asset when the template has no {asset}
    signal: str | None  # fixed signal when the template has no {signal} (sparkplug: metrics)
    kind: str
    valid_range: tuple[float, float] | None
    features: dict[str, Any]
    stage: StageSpec

    def signal_spec(self, asset: str, name: str) -> SignalSpec:
        """The spec of a signal discovered on this subscription."""
        return SignalSpec(
            asset=asset,
            name=name,
            kind=self.kind,
            stage=self.stage,
            valid_range=self.valid_range,
            features=self.features,
        )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """A validated agent configuration."""

    pipeline: PipelineConfig
    mqtt: MqttConfig
    subscriptions: tuple[Subscription, ...]
    agent: AgentSettings
    events: EventSettings
    metrics: MetricsSettings
    state: StateSettings
    source: str
    # The asset detector's stage for assets made of discovered signals ([defaults.asset_*]).
    asset_stage: StageSpec | None = None

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"shopfloor-{socket.gethostname()}"


_SUB_KEYS = {
    "topic",
    "codec",
    "qos",
    "asset",
    "signal",
    "kind",
    "valid_range",
    "features",
    "detector",
    "threshold",
    "alarm",
}
_RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "metrics.port": (0, 65535),  # 0: any free port (tests)
    "keepalive": (5, 65535),
    "session_expiry": (0, 2**32 - 1),
    "reconnect_min_delay": (0.1, 3600),
    "reconnect_max_delay": (0.1, 86400),
    "queue_size": (10, 10_000_000),
    "max_signals": (1, 1_000_000),
    "batch_max": (1, 10_000_000),
    "asset_signals": (0, 256),
    "shutdown_timeout": (0.1, 3600),
    "batch_linger": (0.0, 1.0),
    "qos": (0, 1),
    "stale_after": (1, 10 * 365 * 86400),
    "checkpoint_interval": (1, 7 * 86400),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "protocol": ("5", "3.1.1"),
    "drop_policy": ("drop_oldest", "drop_newest"),
}


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read and validate an agent configuration file."""
    text = read_config_file(path)
    return parse_agent_config(text, source=str(path), base_dir=Path(path).parent)


def parse_agent_config(
    text: str, *, source: str = "<config>", base_dir: Path | None = None
) -> AgentConfig:
    """Validate agent TOML ``text``; relative file names resolve against ``base_dir``."""
    raw = read_toml(text, source)
    parser = Parser(raw, KeyLines(text), source)
    subs_raw = raw.get("subscriptions", [])
    if not isinstance(subs_raw, list):
        raise parser.error("subscriptions", "must be an array of tables ([[subscriptions]])")
    pipeline = parser.config(AGENT_SECTIONS, need_signals=not subs_raw)
    base = parser.base
    mqtt = _section(parser, raw, "mqtt", MqttConfig)
    base_dir = base_dir or Path.cwd()
    mqtt = _readable_files(
        parser, "mqtt", mqtt, base_dir, ("password_file", "ca_file", "cert_file", "key_file")
    )
    if mqtt.password_file and mqtt.password_credential:
        raise parser.error(
            "mqtt.password_credential", "give password_file or password_credential, not both"
        )
    if mqtt.reconnect_min_delay > mqtt.reconnect_max_delay:
        raise parser.error("mqtt.reconnect_min_delay", "must not exceed reconnect_max_delay")
    subscriptions = tuple(
        _subscription(parser, s, f"subscriptions[{i}]", base) for i, s in enumerate(subs_raw)
    )
    events = _section(parser, raw, "events", EventSettings)
    for key in ("topic", "state_topic"):
        template = getattr(events, key)
        try:
            template.format(prefix="p", asset="a", signal="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise parser.error(
                f"events.{key}", f"may use {{prefix}}, {{asset}} and {{signal}} only ({exc})"
            ) from None
        if "+" in template or "#" in template:
            raise parser.error(f"events.{key}", "may not contain MQTT wildcards")
    if not NAME_PATTERN.match(events.prefix.replace("/", "-")):
        raise parser.error("events.prefix", "must be topic levels of letters, digits, _ . -")
    metrics = _readable_files(
        parser,
        "metrics",
        _section(parser, raw, "metrics", MetricsSettings),
        base_dir,
        ("cert_file", "key_file"),
    )
    state = _section(parser, raw, "state", StateSettings)
    if state.directory and not os.path.isabs(state.directory):
        state = replace(state, directory=str(base_dir / state.directory))
    return AgentConfig(
        pipeline=pipeline,
        mqtt=mqtt,
        subscriptions=subscriptions,
        agent=_section(parser, raw, "agent", AgentSettings),
        events=events,
        metrics=metrics,
        state=state,
        source=source,
        asset_stage=parser.stage({}, "defaults", base, "asset_detector"),
    )


def _readable_files(
    parser: Parser, section: str, settings: Any, base_dir: Path, keys: tuple[str, ...]
) -> Any:
    """Resolve file settings against the config's folder; each must be readable now."""
    for key in keys:
        value = getattr(settings, key)
        if value:
            path = Path(value) if os.path.isabs(value) else base_dir / value
            if not os.access(path, os.R_OK):
                raise parser.error(f"{section}.{key}", f"cannot read {str(path)!r}")
            settings = replace(settings, **{key: str(path)})
    if bool(getattr(settings, "cert_file", "")) != bool(getattr(settings, "key_file", "")):
        raise parser.error(f"{section}.cert_file", "a certificate needs key_file too, and back")
    return settings


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
    # Sparkplug names signals by metric, and its topic carries the device (the asset).
    required = tuple(
        n
        for n in ("asset", "signal")
        if n not in fixed and not (codec == "sparkplug" and n == "signal")
    )
    try:
        template = TopicTemplate.compile(
            t["topic"] if isinstance(t["topic"], str) else "", required=required
        )
    except ValueError as exc:
        raise parser.error(f"{key}.topic", str(exc)) from None
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
    )


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
