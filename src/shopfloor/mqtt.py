"""The agent's MQTT connection: one paho-mqtt 2.x client, configured once, that survives brokers.

:class:`MqttLink` subscribes again after every (re)connect, retries a broker that is down when
the agent starts, keeps a persistent session so QoS 1 messages published while the agent was
away are delivered when it comes back, and hands every message to a callback that must only
decode and enqueue. Counters (``connected``, ``connects``, ``reconnects``,
``messages_received``, ``publish_failed``, ...) are plain attributes for the metrics layer.

paho pitfalls this module works around (see the comments where each applies):

- MQTT 5 keeps a session only with ``clean_start=False`` *and* a Session Expiry Interval on
  CONNECT: without the property the broker drops the session when the connection drops.
- An exception escaping a callback kills paho's network thread (``suppress_exceptions`` is
  False): every callback here catches, counts and logs at a bounded rate.
- ``max_queued_messages`` bounds *all* unacknowledged QoS > 0 publishes (in flight or waiting
  for a connection); 0 would mean unbounded. QoS 0 publishes while disconnected are dropped.
- ``max_inflight`` cannot change on an established connection, and paho resends every queued
  message at once after a reconnect (paho issue 492): keep the queue bound modest.
- A QoS > 0 publish while disconnected returns ``MQTT_ERR_NO_CONN`` yet stays queued and is
  sent after the reconnect; ``MQTTMessageInfo.wait_for_publish`` would raise on that code.
- An encrypted private key without a password makes OpenSSL prompt on the terminal, which
  hangs a service: the password callback here fails instead.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.logs import RateLimitedLog

__all__ = [
    "MessageHandler",
    "MqttLink",
    "MqttSettings",
    "Presence",
    "Receipt",
    "TlsSettings",
    "read_password",
    "tls_context",
]

log = logging.getLogger("shopfloor.mqtt")

#: ``on_message(topic, payload, arrival, receipt)``: arrival is the epoch time the message was
# read; receipt is the QoS 1/2 message's acknowledgement (None for QoS 0), which the handler
# holds for as long as the message's content is not done with (see :class:`Receipt`).
# Returns False to refuse a message: it is then not acknowledged, so the broker keeps it in the
# session and delivers it again after the next connect (used while the agent shuts down).
MessageHandler = Callable[[str, bytes, float, "Receipt | None"], bool | None]

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


def _fail_password() -> str:
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    pass


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A verifying client context (hostname checked) with TLS >= ``tls.minimum_version``.

    Raises ValueError naming the file that cannot be used.
    """
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot use tls.ca_file {tls.ca_file}: {exc}") from None
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.minimum_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    if tls.cert_file is not None:
        key = tls.key_file or tls.cert_file
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_fail_password)
        except _EncryptedKeyError:
            raise ValueError(f"tls.key_file {key} is encrypted: give an unencrypted key") from None
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot use tls.cert_file {tls.cert_file} / key {key}: {exc}"
            ) from None
    return context


class _PahoLog:
    """paho's own log lines, all at DEBUG.

    paho's levels are not ours: it logs a routine "Client is not connected" as ERROR on every
    reconnect attempt. The events that matter are logged by MqttLink's callbacks.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def log(self, level: int, message: str, *args: object) -> None:
        self._logger.debug(message, *args)


class _Client(paho.Client):
    """paho's client, remembering why the last connection attempt failed: paho calls
    ``on_connect_fail`` without the exception (a TLS refusal looked like a broker that is
    down, even at debug level)."""

    # Kept as text: the exception's traceback would keep the failed socket alive (and
    # unclosed) for as long as the client lives.
    last_error: str | None = None
    # Called before every connection attempt, first one included (MqttLink forgets what it
    # owes the old connection: paho drops queued packets here and the broker redelivers).
    on_reconnecting: Callable[[], None] | None = None

    def reconnect(self) -> MQTTErrorCode:
        if self.on_reconnecting is not None:
            self.on_reconnecting()
        try:
            return super().reconnect()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise

    def _ssl_wrap_socket(self, tcp_sock: socket.socket) -> ssl.SSLSocket:
        # paho's own leaves the socket of a failed handshake (a refused certificate) open
        # until the collector finds it, once per retry: close it here. Our contexts check the
        # host name themselves (tls_context), so paho's second check is not needed.
        assert self._ssl_context is not None
        ssl_sock = self._ssl_context.wrap_socket(
            tcp_sock, server_hostname=self._host, do_handshake_on_connect=False)
        try:
            ssl_sock.settimeout(self._connect_timeout)
            ssl_sock.do_handshake()
        except BaseException:
            ssl_sock.close()
            raise
        return ssl_sock


class Receipt:
    """The acknowledgement a QoS 1/2 message owes the broker, sent once all it carried is done.

    An acknowledged message is gone from the broker: acknowledging on arrival lost up to 9,000
    messages taken into the queue but never scored when the agent stopped under load. So the
    handler holds the receipt once for every item it queues, and whoever finishes an
    item - the worker once it is scored, the queue when it drops it (counted) - releases it. The
    link holds it too while the handler runs, so an item finished at once cannot acknowledge a
    message whose other items are still being queued. Receipts are acknowledged in arrival
    order (MQTT asks for PUBACKs in the order of the PUBLISHes).
    """

    __slots__ = ("holds", "link", "mid", "qos")

    def __init__(self, link: MqttLink, mid: int, qos: int) -> None:
        self.link = link
        self.mid = mid
        self.qos = qos
        self.holds = 1  # the link's own, while the handler runs

    def hold(self) -> None:
        with self.link._acks:
            self.holds += 1

    def release(self) -> None:
        self.link.release((self,))


class MqttLink:
    """A paho client that reconnects, resubscribes and never lets a callback kill its thread.

    Parameters
    ----------
    settings
        Connection settings.
    subscriptions
        ``(filter, qos)`` pairs, subscribed after every successful connect.
    on_message
        Called on paho's network thread for each message with ``(topic, payload, arrival)``;
        it must be quick (decode and enqueue). Exceptions are caught and counted.
    """

    def __init__(
        self,
        settings: MqttSettings,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: MessageHandler | None = None,
    ) -> None:
        for topic_filter, qos in subscriptions:
            _check_filter(topic_filter, qos)
        self.settings = settings
        self.subscriptions = tuple(subscriptions)
        self._on_message_cb = on_message
        self._errors = RateLimitedLog(log)
        self._lock = threading.Lock()
        self._ready = threading.Condition()
        self._is_ready = False
        self._sub_mid: int | None = None
        self._pending: deque[paho.MQTTMessageInfo] = deque()
        self._started = False
        self._stopped = False
        self._refused = False
        # Counters and state for the metrics layer (written by one thread each).
        self.connected = False
        self.session_present: bool | None = None
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0  # TCP/TLS failures and refused CONNACKs
        self.disconnects = 0
        self.messages_received = 0
        self.callback_errors = 0
        self.refused = 0  # messages the handler refused, left unacknowledged for the broker
        self.acknowledged = 0  # QoS 1/2 messages acknowledged once done with
        # Receipts of this connection's messages in arrival order, until acknowledged. Bounded
        # by the Receive Maximum we announce (MQTT 5) or the broker's in-flight bound.
        self._owed: deque[Receipt] = deque()
        self._acks = threading.Lock()
        self.subscribe_failed = 0
        self.published = 0
        self.publish_failed = 0
        # The online message of each presence topic, replaceable while running (the agent's
        # status lists what it scores, which changes): the one a reconnect publishes too.
        self._online = {p.topic: p.online for p in settings.presence}
        self._presence_lock = threading.Lock()
        self._leaving = False  # stop() has said offline
        self._client = self._build_client()

    @property
    def client_id(self) -> str:
        return self.settings.client_id

    def _build_client(self) -> paho.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = _Client(
            CallbackAPIVersion.VERSION2,
            # We acknowledge QoS 1 messages ourselves, after the handler has taken them: what it
            # refuses stays unacknowledged and so stays with the broker.
            manual_ack=True,
            client_id=s.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else s.clean_start,
        )
        if s.tls is not None:
            client.tls_set_context(tls_context(s.tls))
        if s.username is not None or s.password is not None:
            client.username_pw_set(s.username, s.password)
        # paho's arithmetic takes float delays although its hints say int.
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)  # type: ignore[arg-type]
        client.max_queued_messages_set(s.max_queued_messages)
        client.on_reconnecting = self._forget_receipts
        if s.presence:  # one will per connection: the first presence's
            client.will_set(s.presence[0].topic, s.presence[0].offline, qos=1, retain=True)
        paho_log = _PahoLog(logging.getLogger("shopfloor.mqtt.paho"))
        client.enable_logger(cast(logging.Logger, paho_log))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Start connecting in the background; a broker that is down is retried with backoff."""
        if self._started:
            raise RuntimeError("MqttLink.start() was already called")
        self._started = True
        s = self.settings
        properties = None
        if s.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry
            properties.ReceiveMaximum = s.receive_maximum
        # connect_async defers the first connect to the loop thread, which retries it on
        # failure (loop_forever(retry_first_connection=True)): no crash when the broker is down.
        self._client.connect_async(
            s.host, s.port, keepalive=s.keepalive, clean_start=s.clean_start, properties=properties
        )
        self._client.loop_start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected with every subscription acknowledged; False on timeout."""
        with self._ready:
            return self._ready.wait_for(lambda: self._is_ready, timeout)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; False (and counted) when paho refuses it.

        QoS > 0 messages are kept (up to ``max_queued_messages``) while disconnected and sent
        after the reconnect; QoS 0 messages while disconnected are lost. Thread safe.
        """
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:  # wildcards in the topic, bad qos, oversized payload
            return self._publish_refused("publish_invalid", "cannot publish to %r: %s", topic, exc)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            # Queued for the reconnect (see the module docstring): mark it as accepted so
            # wait_for_publish() waits for the acknowledgement instead of raising.
            info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return self._publish_refused(
                "publish_refused", "publish refused (%s); messages are being dropped",
                paho.error_string(info.rc),
            )
        with self._lock:
            self.published += 1
            if qos > 0:
                self._prune()
                self._pending.append(info)
        return True

    def update_presence(self, topic: str, online: bytes) -> bool:
        """Replace the online message of the presence ``topic``: published now (retained,
        QoS 1) when connected, and after every reconnect from now on. False when paho refused
        it (counted in ``publish_failed``); it is still the one the next connect publishes.

        Thread safe. The message is stored before ``connected`` is read, and ``_on_connect``
        sets ``connected`` before it reads the message: a connect that races with an update
        publishes the new message, or the update does. Once :meth:`stop` has said offline,
        nothing: the offline message stays the last.
        """
        if topic not in self._online:
            raise KeyError(f"{topic!r} is not a presence topic of this link")
        with self._presence_lock:
            if self._leaving:
                return True
            with self._lock:
                self._online[topic] = online
            if not self.connected:
                return True
            return self.publish(topic, online, qos=1, retain=True)

    def _publish_refused(self, key: str, message: str, *args: object) -> bool:
        with self._lock:
            self.publish_failed += 1
        self._errors.log(logging.WARNING, key, message, *args)
        return False

    def _prune(self) -> None:
        # Acknowledgements arrive in publish order, so the acknowledged ones sit at the left.
        while self._pending and self._pending[0].is_published():
            self._pending.popleft()

    @property
    def unacknowledged(self) -> int:
        """QoS > 0 messages published but not yet acknowledged by the broker."""
        with self._lock:
            self._prune()
            return sum(1 for info in self._pending if not info.is_published())

    def stop(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` s for QoS > 0 acknowledgements, then disconnect.

        The session stays on the broker (MQTT 5: for ``session_expiry``), so messages for our
        subscriptions are kept until we come back. True when every published QoS > 0 message
        was acknowledged (:attr:`unacknowledged` tells how many were not). Idempotent.
        """
        if self._stopped or not self._started:
            self._stopped = True
            return self.unacknowledged == 0
        with self._presence_lock:  # no online message after the offline one
            self._leaving = True
            if self.connected:
                # A clean DISCONNECT discards the will: say it ourselves, waited for below.
                for p in self.settings.presence:
                    self.publish(p.topic, p.offline, qos=1, retain=True)
        self._stopped = True
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._pending)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            info.wait_for_publish(remaining)
        left = self.unacknowledged
        if left:
            log.warning("mqtt stopping with %d message(s) unacknowledged by the broker", left)
        # Our acknowledgements of scored messages are packets paho has queued, with nothing to
        # wait on: wait (bounded) until its queue is written, or the broker would deliver what
        # was scored once more. paho stops its thread without writing what is left.
        while (self.connected and self._client._out_packet
               and time.monotonic() < deadline):
            time.sleep(0.005)
        self._client.disconnect()
        self._client.loop_stop()
        self._set_ready(False)
        self.connected = False
        return left == 0

    def _set_ready(self, ready: bool) -> None:
        with self._ready:
            self._is_ready = ready
            self._ready.notify_all()

    # paho callbacks: all on the network thread; none may raise.

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
        reason: ReasonCode, properties: Properties | None,
    ) -> None:
        try:
            s = self.settings
            if reason.is_failure:
                self.connect_failures += 1
                self._refused = True  # the broker closes the connection next: one failure
                self._errors.log(logging.WARNING, "refused", "mqtt broker %s:%d refused the "
                                 "connection: %s; retrying", s.host, s.port, reason)
                return
            self.connected = True
            for p in s.presence:
                with self._lock:
                    online = self._online[p.topic]
                client.publish(p.topic, online, qos=1, retain=True)
            self.session_present = bool(flags.session_present)
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            log.info("mqtt connected host=%s port=%d client_id=%s session_present=%s",
                     s.host, s.port, s.client_id, self.session_present)
            # Subscribe on every connect: a broker that lost our session (restart without
            # persistence, expiry) has forgotten the subscriptions.
            if self.subscriptions:
                _, self._sub_mid = client.subscribe(list(self.subscriptions))
            else:
                self._set_ready(True)
        except Exception:
            self._errors.log(logging.ERROR, "on_connect", "mqtt on_connect failed", exc_info=True)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self.connect_failures += 1
        s = self.settings
        cause = getattr(client, "last_error", None)
        # The cause, as Mosquitto and Telegraf log it: a refused certificate is not a down
        # broker ("[SSL: CERTIFICATE_VERIFY_FAILED] ... self-signed certificate").
        self._errors.log(logging.WARNING, "connect_fail",
                         "mqtt cannot reach broker %s:%d: %s; retrying with backoff", s.host,
                         s.port, cause if cause is not None else "no cause given")

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: paho.DisconnectFlags,
        reason: ReasonCode, properties: Properties | None,
    ) -> None:
        was_connected = self.connected
        self.connected = False
        self._set_ready(False)
        if self._stopped:
            return
        if was_connected:
            self.disconnects += 1
            self._errors.log(logging.WARNING, "disconnect",
                             "mqtt connection lost: %s; reconnecting", reason)
        elif self._refused:
            self._refused = False
        else:
            # Closed before CONNACK: with TLS 1.3 a rejected client certificate shows here.
            self.connect_failures += 1
            self._errors.log(logging.WARNING, "closed_early", "mqtt broker %s:%d closed the "
                             "connection before accepting it: %s; retrying",
                             self.settings.host, self.settings.port, reason)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int,
        reasons: list[ReasonCode], properties: Properties | None,
    ) -> None:
        failed = [f for (f, _), r in zip(self.subscriptions, reasons, strict=False) if r.is_failure]
        if failed:
            self.subscribe_failed += len(failed)
            self._errors.log(logging.ERROR, "subscribe", "mqtt broker refused subscriptions %s",
                             ", ".join(failed))
        if mid == self._sub_mid:
            self._set_ready(True)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        arrival = time.time()
        self.messages_received += 1
        taken: bool | None = True
        receipt = Receipt(self, message.mid, message.qos) if message.qos > 0 else None
        if self._on_message_cb is not None:
            try:
                payload = message.payload
                if not isinstance(payload, bytes):
                    payload = bytes(payload)
                taken = self._on_message_cb(message.topic, payload, arrival, receipt)
            except Exception:
                # A handler bug must not make the broker redeliver the message forever.
                self.callback_errors += 1
                self._errors.log(logging.ERROR, "on_message", "message handler failed",
                                 exc_info=True)
        if taken is False:
            self.refused += 1
        elif receipt is not None:
            with self._acks:
                self._owed.append(receipt)
            self.release((receipt,))  # the link's own hold: acknowledged now if nothing queued

    def release(self, receipts: Iterable[Receipt]) -> None:
        """Release one hold of each receipt; acknowledge, in arrival order, every message whose
        receipts are all released. Thread safe (the worker calls it after a batch)."""
        with self._acks:
            for receipt in receipts:
                receipt.holds -= 1
            owed = self._owed
            while owed and owed[0].holds <= 0:
                done = owed.popleft()
                self._client.ack(done.mid, done.qos)
                self.acknowledged += 1

    def _forget_receipts(self) -> None:
        # A new connection: paho drops what it had queued for the old one (acknowledgements
        # included) and the broker redelivers every message we had not acknowledged, under
        # mids of the new connection. An old receipt released later must not acknowledge one
        # of those by its mid: it is no longer owed. Under the lock, so no acknowledgement of
        # the old connection can be queued after paho's clear.
        with self._acks:
            self._owed.clear()

    @property
    def owed(self) -> int:
        """QoS 1/2 messages taken but not yet acknowledged (their content is not done with)."""
        with self._acks:
            return len(self._owed)
