"""The agent's MQTT connection: one paho-mqtt 2.x client, configured once, that survives brokers.

:class:`MqttLink` subscribes again after every (re)connect, retries a broker that is down when
the agent starts, keeps a persistent session so QoS 1 messages published while the agent was
away are delivered when it comes back, and hands every message to a callback that must only
decode and enqueue. Counters (``connected``, ``connects``, ``reconnects``,
``messages_received``, ``publish_failed``, ...) are plain attributes for the metrics layer.

paho pitfalls this module and its parts work around (see the comments where each applies):

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
  hangs a service: the password callback (:mod:`shopfloor.receiving.mqtt_paho`) fails instead.

The parts: this module holds :class:`MqttLink` (construction, start, receiving and
acknowledging messages) and :class:`Receipt`; the settings are in
:mod:`shopfloor.receiving.mqtt_settings`, paho's TLS context and client adaptations in
:mod:`shopfloor.receiving.mqtt_paho`, and the link's connection callbacks and publishing side in its
base classes in :mod:`shopfloor.receiving.mqtt_connection` and
:mod:`shopfloor.receiving.mqtt_outbox`. The names other code imports are re-exported here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shopfloor.logs import RateLimitedLog
from shopfloor.receiving.mqtt_outbox import _Outbox
from shopfloor.receiving.mqtt_paho import _Client, _PahoLog, tls_context
from shopfloor.receiving.mqtt_settings import (
    MqttSettings,
    Presence,
    TlsSettings,
    _check_filter,
    read_password,
)

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

log = logging.getLogger("shopfloor.receiving.mqtt")

#: ``on_message(topic, payload, arrival, receipt)``: arrival is the epoch time the message was
# read; receipt is the QoS 1/2 message's acknowledgement (None for QoS 0), which the handler
# holds for as long as the message's content is not done with (see :class:`Receipt`).
# Returns False to refuse a message: it is then not acknowledged, so the broker keeps it in the
# session and delivers it again after the next connect (used while the agent shuts down).
MessageHandler = Callable[[str, bytes, float, "Receipt | None"], bool | None]


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


class MqttLink(_Outbox):
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
        paho_log = _PahoLog(logging.getLogger("shopfloor.receiving.mqtt.paho"))
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

    # paho's message callback: on the network thread; it may not raise.

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
