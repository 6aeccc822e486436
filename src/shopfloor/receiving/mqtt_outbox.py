"""The publishing side of the agent's MQTT link: publish, presence updates and a clean stop.

``_Outbox`` is a base class of :class:`shopfloor.receiving.mqtt.MqttLink` (on top of
:class:`~shopfloor.receiving.mqtt_connection._Connection`), never used alone: it queues messages
with paho and counts what paho refuses, keeps the QoS > 0 ones until the broker acknowledges them,
replaces the retained presence message, and at :meth:`stop` says offline and waits (bounded) for the
acknowledgements before disconnecting. The attributes it declares are set by ``MqttLink.__init__``.
Split from :mod:`shopfloor.receiving.mqtt` to keep each module small; the log lines go to the same
logger, ``shopfloor.receiving.mqtt``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from shopfloor.receiving.mqtt_connection import _Connection

__all__: list[str] = []

log = logging.getLogger("shopfloor.receiving.mqtt")


class _Outbox(_Connection):
    """Publishing and stopping of :class:`shopfloor.receiving.mqtt.MqttLink` (its base class)."""

    # Set by MqttLink.__init__ (see there).
    _client: paho.Client
    _pending: deque[paho.MQTTMessageInfo]
    _presence_lock: threading.Lock
    _leaving: bool
    _started: bool
    published: int
    publish_failed: int

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

