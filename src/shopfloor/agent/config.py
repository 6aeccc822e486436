"""The agent's configuration: the pipeline config plus MQTT, subscriptions, queue and events.

Everything is validated once, before the agent connects: ``shopfloor check`` and
``shopfloor run`` share this loader, so a file that passes one passes the other. Files named in
the config (TLS certificates, the password file) must be readable now, not at the first
reconnect at 3 a.m.

The settings of each section are in :mod:`shopfloor.agent.config_sections`, the reading of the
sections in :mod:`shopfloor.agent.config_parsing` and the checks of the files named in
:mod:`shopfloor.agent.config_checks`; this module holds :class:`AgentConfig`, the loader that
puts them together, and :func:`preflight`, and re-exports the settings.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path

from shopfloor.agent.config_checks import _metrics_access, _readable_files, _ssl_reason
from shopfloor.agent.config_parsing import (
    _SUB_KEYS,
    _agent_settings,
    _no_feedback,
    _section,
    _subscription,
)
from shopfloor.agent.config_sections import (
    AgentSettings,
    EventSettings,
    MetricsSettings,
    MqttConfig,
    StateSettings,
    Subscription,
)
from shopfloor.agent.events import check_topic_template
from shopfloor.agent.fleet import FleetSettings, status_level
from shopfloor.config import (
    AGENT_SECTIONS,
    NAME_PATTERN,
    Parser,
    PipelineConfig,
    StageSpec,
    read_config_file,
    read_toml,
)
from shopfloor.errors import ConfigError
from shopfloor.tomlkeys import KeyLines

__all__ = [
    "_SUB_KEYS",
    "AgentConfig",
    "AgentSettings",
    "EventSettings",
    "FleetSettings",
    "MetricsPortInUseError",
    "MetricsSettings",
    "MqttConfig",
    "StateSettings",
    "Subscription",
    "default_workers",
    "load_agent_config",
    "metrics_listen_error",
    "parse_agent_config",
    "preflight",
    "usable_cores",
    "usable_memory",
]


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
        """Scoring processes: ``agent.workers``, or with 0 what :func:`default_workers` makes
        of the usable cores and memory."""
        return self.agent.workers or default_workers(usable_cores(), usable_memory())

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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or a systemd
    ``CPUAffinity=`` share, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def usable_memory() -> int:
    """Bytes this process may use: the machine's memory, or less where a cgroup limits it
    (the unit's ``MemoryMax=``, a container's limit), whichever is lower."""
    limits = [_meminfo_total()]
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: the limit may sit on any ancestor
            base, name = Path("/sys/fs/cgroup"), "memory.max"
        elif "memory" in controllers.split(","):
            base, name = Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"
        else:
            continue
        node = base / path.lstrip("/")
        while True:
            try:
                text = (node / name).read_text().strip()
                if text.isdigit():
                    limits.append(int(text))
            except OSError:
                pass
            if node == base:
                break
            node = node.parent
    return min(limits)


def _meminfo_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62  # unknown: the cores decide


#: What ``default_workers`` reserves, in MiB: the receiving process with a full queue (the
#: agent is ~180 MiB, a full default queue up to 112 more), and each scoring process (~175 MiB
#: measured, with room for its pipelines and a batch).
RECEIVING_MIB = 320
SCORER_MIB = 240


def default_workers(cores: int, memory: int) -> int:
    """``agent.workers = 0``: on fewer than 4 cores one process does it all (the receiving
    side and the system take a core, and a second scoring process pays off only for
    scoring-heavy loads: set it where the agent benchmark shows it); beyond, a scoring process
    per core past two, at most 4, and no more than ``memory`` (bytes) holds beside the
    receiving process: under the unit's default MemoryMax=512M that is one process."""
    by_cores = 1 if cores < 4 else min(cores - 2, 4)
    by_memory = (memory // (1 << 20) - RECEIVING_MIB) // SCORER_MIB
    workers = min(by_cores, by_memory)
    return workers if workers >= 2 else 1


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
