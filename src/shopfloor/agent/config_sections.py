"""The settings of each section of the agent's config file, as the parser fills them.

``[mqtt]``, ``[agent]``, ``[events]``, ``[metrics]``, ``[state]`` and each ``[[subscriptions]]``
table: frozen dataclasses whose defaults are the defaults of the file. They are apart from
:class:`~shopfloor.agent.config.AgentConfig`, which holds them, so that the parsing and the
file checks (:mod:`shopfloor.agent.config_parsing`, :mod:`shopfloor.agent.config_checks`) can
name them without importing the loader that calls them; :mod:`shopfloor.agent.config`
re-exports every one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shopfloor.config import SignalSpec, StageSpec
from shopfloor.receiving.jsonfields import JsonLayout
from shopfloor.receiving.topics import TopicTemplate

__all__ = [
    "AgentSettings",
    "EventSettings",
    "MetricsSettings",
    "MqttConfig",
    "StateSettings",
    "Subscription",
]


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
