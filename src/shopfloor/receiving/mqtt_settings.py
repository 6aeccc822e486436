"""What the agent's MQTT link is configured with: broker, session, TLS and presence settings.

:class:`MqttSettings` (with :class:`TlsSettings` and :class:`Presence`) is everything
:class:`shopfloor.receiving.mqtt.MqttLink` needs to connect, checked when it is made;
:func:`read_password` reads the broker password from a file or a systemd credential, and
``_check_filter`` checks a subscription before paho could raise on its network thread. Plain
values with no paho client in them, so configuration code can build and check them; kept apart
from the link itself (:mod:`shopfloor.receiving.mqtt`), which re-exports them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["MqttSettings", "Presence", "TlsSettings", "read_password"]

log = logging.getLogger("shopfloor.receiving.mqtt")

_MAX_SESSION_EXPIRY = 0xFFFFFFFF  # MQTT 5: this value means "never expires"


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """TLS towards the broker; ``ca_file`` None trusts the system's certificate authorities."""

    ca_file: str | None = None
    cert_file: str | None = None  # client certificate (may hold the key too)
    key_file: str | None = None
    minimum_version: Literal["1.2", "1.3"] = "1.2"

    def __post_init__(self) -> None:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file needs tls.cert_file (the client certificate)")
        if self.minimum_version not in ("1.2", "1.3"):
            raise ValueError(
                f"tls.minimum_version must be '1.2' or '1.3'; got {self.minimum_version!r}"
            )


@dataclass(frozen=True, slots=True)
class Presence:
    """A retained topic that says whether the agent is there (see MqttSettings.presence)."""

    topic: str
    online: bytes
    offline: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """Everything the link needs to connect; the password is resolved by the caller.

    ``password`` is left out of ``repr`` so that logging the settings cannot leak it.
    """

    host: str
    client_id: str
    port: int = 1883
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = 30
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    clean_start: bool = False
    # MQTT 5: seconds the broker keeps our session after a disconnect (0: none, so nothing is
    # queued while we are away). MQTT 3.1.1 has no expiry: clean_start=False keeps it forever.
    session_expiry: int = 3600
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0
    max_queued_messages: int = 1000  # unacknowledged QoS>0 publishes paho may hold
    # MQTT 5: QoS 1/2 messages the broker may send us before we acknowledge any; we acknowledge
    # only what is scored, so this bounds what is taken but not yet done with. (MQTT 3.1.1 has
    # no such property: the broker's own bound applies, Mosquitto's max_inflight_messages.)
    receive_maximum: int = 1000
    # The agent's own presence: for each, a retained "online" message after every connect and
    # "offline" at a clean stop; the first one's offline is also the MQTT will, which the
    # broker publishes when the connection is lost without a goodbye (a crash, a power cut).
    presence: tuple[Presence, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (bool(self.host), "host must not be empty"),
            (1 <= self.port <= 65535, f"port must be in [1, 65535]; got {self.port}"),
            (self.protocol in ("5", "3.1.1"),
             f"protocol must be '5' or '3.1.1'; got {self.protocol!r}"),
            # A persistent session is found again by client id: an empty one cannot work.
            (bool(self.client_id), "client_id must not be empty"),
            (1 <= self.keepalive <= 65535,
             f"keepalive must be in [1, 65535] s; got {self.keepalive}"),
            (0 <= self.session_expiry <= _MAX_SESSION_EXPIRY,
             f"session_expiry must be in [0, {_MAX_SESSION_EXPIRY}] s; got {self.session_expiry}"),
            (self.reconnect_min_delay > 0, "reconnect_min_delay must be > 0 s"),
            (self.reconnect_max_delay >= self.reconnect_min_delay,
             "reconnect_max_delay must be >= reconnect_min_delay"),
            (self.max_queued_messages >= 1,
             "max_queued_messages must be >= 1 (the queue is bounded)"),
            (1 <= self.receive_maximum <= 65535,
             f"receive_maximum must be in [1, 65535]; got {self.receive_maximum}"),
            # MQTT 3.1.1 forbids a password without a user name (MQTT 5 allows it).
            (self.protocol == "5" or self.password is None or self.username is not None,
             "a password needs a username with protocol '3.1.1'"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def read_password(password_file: str | None, password_credential: str | None) -> str | None:
    """The broker password from a file, or from a systemd credential (``LoadCredential=``).

    A credential named ``name`` is read from ``$CREDENTIALS_DIRECTORY/name``. One trailing
    newline (as editors and ``echo`` leave it) is removed. Returns None when neither is given.

    Raises
    ------
    ValueError
        Both are given, the credentials directory is not set, or the file cannot be read; the
        message names the file, never its content.
    """
    if password_file is not None and password_credential is not None:
        raise ValueError("give password_file or password_credential, not both")
    if password_credential is not None:
        name = password_credential
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"password_credential must be a plain file name; got {name!r}")
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise ValueError(
                f"password_credential {name!r} needs $CREDENTIALS_DIRECTORY: run under systemd "
                f"with LoadCredential={name}:/path/to/file"
            )
        password_file = str(Path(directory) / name)
    if password_file is None:
        return None
    try:
        text = Path(password_file).read_text(encoding="utf-8")
        mode = os.stat(password_file).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read the MQTT password from {password_file}: {reason}") from None
    if mode & 0o004:
        # Accepted (the agent must start), but said: any account on the device can read it.
        log.warning("the MQTT password file %s is readable by every user (mode %o): "
                    "chmod 600 it, or use a systemd credential", password_file, mode & 0o777)
    return text.removesuffix("\n").removesuffix("\r")


def _check_filter(topic_filter: str, qos: int) -> None:
    # Checked here because paho would raise inside on_connect, on its network thread.
    levels = topic_filter.split("/")
    bad_hash = "#" in topic_filter and (levels[-1] != "#" or topic_filter.count("#") > 1)
    bad_plus = any("+" in level and level != "+" for level in levels)
    if not topic_filter or bad_hash or bad_plus or "\0" in topic_filter:
        raise ValueError(f"invalid MQTT topic filter {topic_filter!r}")
    if qos not in (0, 1, 2):
        raise ValueError(f"subscription qos must be 0, 1 or 2; got {qos} for {topic_filter!r}")
