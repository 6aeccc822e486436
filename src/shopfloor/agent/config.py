"""The agent's configuration: the pipeline config plus MQTT, subscriptions, queue and events.

Everything is validated once, before the agent connects: ``shopfloor check`` and
``shopfloor run`` share this loader, so a file that passes one passes the other. Files named in
the config (TLS certificates, the password file) must be readable now, not at the first
reconnect at 3 a.m.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
import stat
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shopfloor.agent.events import check_topic_template
from shopfloor.agent.fleet import FleetSettings, status_level
from shopfloor.agent.metrics_server import PasswordHash, TlsFileError, server_tls_context
from shopfloor.config import (
    AGENT_SECTIONS,
    NAME_PATTERN,
    Parser,
    PipelineConfig,
    SignalSpec,
    StageSpec,
    file_kind,
    read_config_file,
    read_toml,
)
from shopfloor.errors import ConfigError
from shopfloor.receiving.jsonfields import JsonLayout
from shopfloor.receiving.topics import TopicTemplate
from shopfloor.tomlkeys import KeyLines

__all__ = [
    "AgentConfig",
    "AgentSettings",
    "EventSettings",
    "FleetSettings",
    "MetricsPortInUseError",
    "MetricsSettings",
    "MqttConfig",
    "StateSettings",
    "Subscription",
    "load_agent_config",
    "metrics_listen_error",
    "parse_agent_config",
    "preflight",
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
    # Back within a second of the broker's return (with 60 s, a broker restart cost ~5 s more
    # of lost scoring); retrying once a second costs a refused TCP connect a second.
    reconnect_min_delay: float = 0.5
    reconnect_max_delay: float = 1.0
    # MQTT 5: QoS 1 messages the broker may have sent us unacknowledged. We acknowledge a
    # message once it is scored, so this bounds what a stop or a crash can leave undone (the
    # broker keeps it). 1000 is a few batches: enough to keep the worker busy.
    receive_maximum: int = 1000
    # Sparkplug 3.0 host application id: when set, the agent publishes its STATE
    # (spBv1.0/STATE/{id}, retained, its death as the will) for nodes that wait for a host.
    sparkplug_host_id: str = ""


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Queue and worker sizing."""

    queue_size: int = 10_000
    drop_policy: str = "drop_oldest"  # or "drop_newest"
    max_signals: int = 1_000
    # A full signal table evicts a signal silent this long (seconds) to admit a new one; one
    # that never produced a valid sample goes first (see shopfloor.receiving.admission).
    evict_idle_after: float = 3600.0
    # A signal silent for this many of its own message intervals (and at least
    # silence_min_seconds) raises a silence alarm: a dead sensor sends nothing to clear with.
    silence_intervals: float = 10.0
    # Samples stamped further ahead of the agent's clock are rejected as future (counted): one
    # stamped in 2100 would make every later sample of its signal out of order.
    max_clock_ahead: float = 600.0
    silence_min_seconds: float = 30.0
    batch_max: int = 5_000
    # After the first message of a batch, wait this long for more: a batch then holds many
    # samples per signal, and the fixed cost of a pipeline call (tens of µs) is paid per batch,
    # not per message. Adds at most this much latency.
    batch_linger: float = 0.02
    shutdown_timeout: float = 10.0
    # Signals discovered on subscriptions join their asset's multivariate detector, up to this
    # many per asset (its covariance grows with the square); 0: no asset detector for them.
    asset_signals: int = 16
    # The queue is bounded in memory and work too, not only in messages: one JSON message can
    # carry tens of thousands of values (see agent.example.toml for how these were sized).
    queue_bytes: int = 64 << 20
    queue_samples: int = 8 << 20
    # Refused before decoding (payload) and before queuing (values), counted as too_large.
    max_payload_bytes: int = 512 << 10
    max_batch_values: int = 65_536
    # Scoring processes (see shopfloor.agent.pool): 1 scores in the agent's own process; more hand
    # each asset's signals to one of that many processes. 0 picks from the usable cores.
    workers: int = 0


@dataclass(frozen=True, slots=True)
class EventSettings:
    """Where anomaly events and retained per-signal states go."""

    prefix: str = "shopfloor"
    topic: str = "{prefix}/{asset}/{signal}/anomaly"
    state_topic: str = "{prefix}/{asset}/{signal}/state"
    # The agent's presence, retained: online after each connect, offline at a clean stop or,
    # as its MQTT will, when the broker loses it. Online, it lists what the agent owns ([fleet]).
    status_topic: str = "{prefix}/agent/{agent}/status"
    qos: int = 1


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """The Prometheus endpoint (9817 is not taken by a common exporter)."""

    host: str = "127.0.0.1"
    port: int = 9817
    cert_file: str = ""  # serve /metrics over TLS when set (with key_file)
    key_file: str = ""
    stale_after: float = 3600.0  # seconds of silence before a signal's series are dropped
    # The server's bounds (node_exporter's --web.max-requests is the model; see
    # shopfloor.agent.metrics_server): renders at once (more get 503), open connections (a new one
    # pushes out the oldest without a full request), seconds from accept to a full request,
    # seconds for the client to take the answer.
    max_requests: int = 4
    max_connections: int = 64
    read_timeout: float = 5.0
    write_timeout: float = 10.0
    # Who may scrape: basic auth (the password's salted PBKDF2 hash, from `shopfloor
    # hash-password`) and TLS client certificates signed by a CA of client_ca_file.
    basic_auth_user: str = ""
    basic_auth_hash: str = ""
    client_ca_file: str = ""


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
    unit: str = ""  # of every signal of the subscription ...
    units: Mapping[str, str] = field(default_factory=dict)  # ... unless named here
    layout: JsonLayout = field(default_factory=JsonLayout)  # gateway JSON (jsonfields)

    def signal_spec(self, asset: str, name: str, labels: tuple[tuple[str, str], ...] = ()
                    ) -> SignalSpec:
        """The spec of a signal discovered on this subscription, with its topic labels."""
        return SignalSpec(
            asset=asset,
            name=name,
            kind=self.kind,
            stage=self.stage,
            valid_range=self.valid_range,
            features=self.features,
            labels=labels,
            unit=self.units.get(name, self.unit),
        )

    @property
    def label_names(self) -> tuple[str, ...]:
        """The template's named levels that label its signals: all but asset and signal, and
        a Sparkplug topic's message type (DDATA, DBIRTH, ...: not part of any identity)."""
        fields = self.template.fields
        sparkplug_type = 2 if self.codec == "sparkplug" else -1
        return tuple(f for i, f in enumerate(fields)
                     if f is not None and f not in ("asset", "signal") and i != sparkplug_type)


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
    fleet: FleetSettings = field(default_factory=FleetSettings)
    # The asset detector's stage for assets made of discovered signals ([defaults.asset_*]).
    asset_stage: StageSpec | None = None
    # Where each key is in the file: errors found after the load (a busy metrics port at
    # start) still name their line.
    lines: KeyLines = field(default_factory=lambda: KeyLines(""), compare=False, repr=False)

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"shopfloor-{socket.gethostname()}"

    @property
    def workers(self) -> int:
        """Scoring processes: ``agent.workers``, or with 0 one per usable core beyond the two
        the receiving process and the system keep busy, at most 4 (each costs its own
        interpreter, NumPy and Numba: see the README's capacity guide)."""
        return self.agent.workers or default_workers(usable_cores())

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every label a signal may carry, in order of first appearance: the per-signal
        metrics' extra label names (bounded by the templates, whatever the topics say)."""
        names: dict[str, None] = {}
        for sub in self.subscriptions:
            names.update(dict.fromkeys(sub.label_names))
        return tuple(names)

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` at ``key`` of this config's file."""
        return ConfigError(message, file=self.source, line=self.lines.line(key), key=key)


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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a systemd
    ``CPUAffinity=`` share, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def default_workers(cores: int) -> int:
    """``agent.workers = 0``: on fewer than 4 cores one process does it all (the receiving
    side and the system take a core, and a second scoring process pays off only for
    scoring-heavy loads: set it where the agent benchmark shows it); beyond, a scoring process
    per core past two, at most 4 (each holds its own ~170 MiB of interpreter, NumPy and
    Numba)."""
    return 1 if cores < 4 else min(cores - 2, 4)


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
    if mqtt.sparkplug_host_id and not NAME_PATTERN.match(mqtt.sparkplug_host_id):
        raise parser.error("mqtt.sparkplug_host_id", "must be one topic level of letters, "
                           "digits, _ . - (it names spBv1.0/STATE/{id})")
    subscriptions = tuple(
        _subscription(parser, s, f"subscriptions[{i}]", base) for i, s in enumerate(subs_raw)
    )
    events = _section(parser, raw, "events", EventSettings)
    # A level every subscription names (a site, a line) may place events too; one that some
    # subscription lacks would leave its signals' events without a topic.
    common = set.intersection(*(set(s.label_names) for s in subscriptions)) if subscriptions \
        else set()
    for key in ("topic", "state_topic"):
        template = getattr(events, key)
        try:
            template.format(prefix="p", asset="a", signal="s", **dict.fromkeys(common, "x"))
        except (KeyError, IndexError, ValueError) as exc:
            named = "".join(f", {{{n}}}" for n in sorted(common))
            raise parser.error(
                f"events.{key}", f"may use {{prefix}}, {{asset}}, {{signal}}{named} only: a "
                f"level every subscription names ({exc})"
            ) from None
        if "+" in template or "#" in template:
            raise parser.error(f"events.{key}", "may not contain MQTT wildcards")
        # What the event sink refuses when the agent starts (a state topic without {signal}),
        # refused here with the line, by the same code.
        try:
            check_topic_template(template, per_signal=key == "state_topic")
        except ValueError as exc:
            raise parser.error(f"events.{key}", str(exc)) from None
    # Level by level: "a//b" or "a/" would pass as one name and give invalid topics.
    if not all(NAME_PATTERN.match(level) for level in events.prefix.split("/")):
        raise parser.error("events.prefix", "must be topic levels of letters, digits, _ . -")
    try:
        status = events.status_topic.format(prefix=events.prefix, agent="a")
    except (KeyError, IndexError, ValueError) as exc:
        raise parser.error("events.status_topic",
                           f"may use {{prefix}} and {{agent}} only ({exc})") from None
    if any(c in status for c in "+#\0") or "" in status.split("/"):
        raise parser.error("events.status_topic", f"gives invalid topics like {status!r}")
    fleet: FleetSettings = _section(parser, raw, "fleet", FleetSettings)
    if fleet.watch_peers and status_level(events.status_topic, events.prefix) is None:
        raise parser.error("events.status_topic", "must have {agent} as one whole topic level, "
                           "once, for fleet.watch_peers: the other agents' statuses are "
                           "watched with a '+' in its place (or set fleet.watch_peers = false)")
    _no_feedback(parser, raw, events, subscriptions)
    metrics = _readable_files(
        parser,
        "metrics",
        _section(parser, raw, "metrics", MetricsSettings),
        base_dir,
        ("cert_file", "key_file"),
    )
    metrics = _metrics_access(parser, metrics, base_dir)
    state = _section(parser, raw, "state", StateSettings)
    if state.directory and not os.path.isabs(state.directory):
        state = replace(state, directory=str(base_dir / state.directory))
    return AgentConfig(
        pipeline=pipeline,
        mqtt=mqtt,
        subscriptions=subscriptions,
        agent=_agent_settings(parser, raw),
        events=events,
        metrics=metrics,
        state=state,
        source=source,
        fleet=fleet,
        asset_stage=parser.stage({}, "defaults", base, "asset_detector"),
        lines=parser.lines,
    )


def _metrics_access(parser: Parser, metrics: MetricsSettings, base_dir: Path) -> MetricsSettings:
    """Who may scrape /metrics - basic auth, TLS client certificates - checked as the server
    will use them, so a bad hash or CA file fails here with its line, not at start."""
    metrics = _readable_files(parser, "metrics", metrics, base_dir, ("client_ca_file",))
    if metrics.client_ca_file and not metrics.cert_file:
        raise parser.error(
            "metrics.client_ca_file", "client certificates need TLS: set cert_file and key_file"
        )
    if metrics.client_ca_file:
        try:
            server_tls_context(metrics.cert_file, metrics.key_file, metrics.client_ca_file)
        except TlsFileError as exc:
            raise parser.error(f"metrics.{exc.key}", str(exc)) from None
    user, hashed = metrics.basic_auth_user, metrics.basic_auth_hash
    if bool(user) != bool(hashed):
        raise parser.error(
            f"metrics.basic_auth_{'hash' if user else 'user'}",
            "basic auth needs both basic_auth_user and basic_auth_hash",
        )
    if ":" in user:  # RFC 7617: the colon ends the user name
        raise parser.error("metrics.basic_auth_user", "may not contain ':'")
    if hashed:
        try:
            PasswordHash.parse(hashed)
        except ValueError as exc:
            raise parser.error("metrics.basic_auth_hash", str(exc)) from None
    return metrics


def _readable_files(
    parser: Parser, section: str, settings: Any, base_dir: Path, keys: tuple[str, ...]
) -> Any:
    """Resolve file settings against the config's folder; each must be a regular file,
    readable now, holding what it is for (a certificate, a key, a UTF-8 password)."""
    for key in keys:
        value = getattr(settings, key)
        if value:
            path = Path(value) if os.path.isabs(value) else base_dir / value
            # stat before anything opens it: a FIFO would hang the load, a directory passes
            # os.access and fails only at the first connect.
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                raise parser.error(
                    f"{section}.{key}", f"cannot read {str(path)!r}: {exc.strerror or exc}"
                ) from None
            if not stat.S_ISREG(mode):
                raise parser.error(
                    f"{section}.{key}", f"{str(path)!r} is {file_kind(mode)}, not a file"
                )
            if not os.access(path, os.R_OK):
                raise parser.error(f"{section}.{key}", f"cannot read {str(path)!r}")
            settings = replace(settings, **{key: str(path)})
    if bool(getattr(settings, "cert_file", "")) != bool(getattr(settings, "key_file", "")):
        raise parser.error(f"{section}.cert_file", "a certificate needs key_file too, and back")
    _file_contents(parser, section, settings)
    return settings


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> str:
    # Called by ssl only for an encrypted key: nobody is there to type its passphrase.
    raise _EncryptedKeyError


def _ssl_reason(exc: OSError) -> str:
    # "[SSL] PEM lib (_ssl.c:3900)": the source position helps nobody who edits a config.
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc))


def _file_contents(parser: Parser, section: str, settings: Any) -> None:
    """Load each named file as what it is for, as the connection would at 3 a.m."""
    password = getattr(settings, "password_file", "")
    if password:
        try:
            Path(password).read_bytes().decode("utf-8")  # never shown: it is the password
        except OSError as exc:
            raise parser.error(
                f"{section}.password_file", f"cannot read {password!r}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise parser.error(
                f"{section}.password_file",
                f"{password!r} is not UTF-8 text: it must hold the password on one line",
            ) from None
    ca = getattr(settings, "ca_file", "")
    if ca:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca)
        except OSError as exc:  # ssl.SSLError is one
            raise parser.error(
                f"{section}.ca_file",
                f"{ca!r} holds no CA certificate (PEM) that can be loaded: {_ssl_reason(exc)}",
            ) from None
    cert, key = getattr(settings, "cert_file", ""), getattr(settings, "key_file", "")
    if cert and key:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # First the certificate alone, so a file of the wrong kind is blamed on its own key.
        try:
            context.load_verify_locations(cafile=cert)
        except OSError as exc:
            raise parser.error(
                f"{section}.cert_file",
                f"{cert!r} holds no certificate (PEM) that can be loaded: {_ssl_reason(exc)}",
            ) from None
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except _EncryptedKeyError:
            raise parser.error(
                f"{section}.key_file",
                f"{key!r} is encrypted: give an unencrypted key (the agent starts unattended)",
            ) from None
        except OSError as exc:
            raise parser.error(
                f"{section}.key_file",
                f"{key!r} is not the private key (PEM) of {cert!r}: {_ssl_reason(exc)}",
            ) from None


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


class MetricsPortInUseError(ConfigError):
    """/metrics cannot listen: its port is taken. ``run`` stops; ``check`` only warns, since
    the agent that is running holds its own port while its config is checked."""


def preflight(config: AgentConfig, *, create: bool) -> None:
    """What the config asks of this machine, before anything starts; ``check`` and ``run``
    both call it, after :func:`load_agent_config`.

    The state directory must exist or be creatable (``create``: ``run`` makes it, ``check``
    looks only), and /metrics must be able to listen on its host and port: a socket is bound
    there and closed again. Raises :class:`ConfigError` (:class:`MetricsPortInUseError` for
    a busy port) naming the key.
    """
    directory = config.state.resolved()
    if directory is not None:
        problem = _state_directory_problem(directory, create=create)
        if problem is not None:
            origin = "" if config.state.directory else "$STATE_DIRECTORY: "
            raise config.error("state.directory", origin + problem)
    m = config.metrics
    try:
        # What the HTTP server does: the first address getaddrinfo gives, SO_REUSEADDR on.
        family, _, _, _, address = socket.getaddrinfo(
            m.host, m.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise metrics_listen_error(config, exc) from None


def metrics_listen_error(config: AgentConfig, exc: OSError) -> ConfigError:
    """The :class:`ConfigError` for /metrics failing to listen with ``exc``, naming the key
    to change."""
    m = config.metrics
    if isinstance(exc, socket.gaierror):
        return config.error(
            "metrics.host",
            f"{m.host!r} is no address or host name this machine can resolve "
            f"({exc.strerror}); use an address such as 127.0.0.1, 0.0.0.0 or ::",
        )
    if isinstance(exc, ssl.SSLError):
        return config.error("metrics.cert_file", f"cannot serve TLS: {_ssl_reason(exc)}")
    if exc.errno == errno.EADDRINUSE:
        return MetricsPortInUseError(
            f"port {m.port} on {m.host} is already in use: stop what listens there, or set "
            "[metrics] port to a free port",
            file=config.source,
            line=config.lines.line("metrics.port"),
            key="metrics.port",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return config.error(
            "metrics.host",
            f"{m.host!r} is not an address of this machine: use one of its addresses, "
            "127.0.0.1, or 0.0.0.0 for all",
        )
    if exc.errno == errno.EACCES:
        return config.error(
            "metrics.port",
            f"may not listen on port {m.port} (below 1024 needs privileges the agent does not "
            "have): use a port from 1024 up",
        )
    return config.error("metrics.host", f"cannot listen on {m.host} port {m.port}: "
                        f"{exc.strerror or exc}")


def _state_directory_problem(path: Path, *, create: bool) -> str | None:
    """Why checkpoints cannot be written under ``path``, or None."""
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # "Not a directory" alone does not say which part of the path is the file.
            return _state_path_problem(path) or f"cannot create {str(path)!r}: {exc.strerror}"
    return _state_path_problem(path)


def _state_path_problem(path: Path) -> str | None:
    # Without creating it: the nearest part of the path that exists must be a directory we
    # can write in (os.access also says no on a read-only file system).
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path:
        if not path.is_dir():
            return f"{str(path)!r} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"cannot write in {str(path)!r}"
        return None
    if not existing.is_dir():
        return f"cannot create {str(path)!r}: {str(existing)!r} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot create {str(path)!r}: no write access to {str(existing)!r}"
    return None


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
