"""The connection side of the agent's MQTT link: readiness and paho's connection callbacks.

``_Connection`` is a base class of :class:`shopfloor.receiving.mqtt.MqttLink`, never used alone: it
holds what happens when paho connects, fails to, loses the connection or has the subscriptions
acknowledged (counting and logging each at a bounded rate, resubscribing on every connect,
publishing the presence), and :meth:`wait_ready`. The attributes it declares are set by
``MqttLink.__init__``. Split from :mod:`shopfloor.receiving.mqtt` to keep each module small; the log
lines go to the same logger, ``shopfloor.receiving.mqtt``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.logs import RateLimitedLog
from shopfloor.receiving.mqtt_settings import MqttSettings

__all__: list[str] = []

log = logging.getLogger("shopfloor.receiving.mqtt")


class _Connection:
    """Connection state and callbacks of :class:`shopfloor.receiving.mqtt.MqttLink` (its base
    class)."""

    # Set by MqttLink.__init__ (see there).
    settings: MqttSettings
    subscriptions: tuple[tuple[str, int], ...]
    connected: bool
    session_present: bool | None
    connects: int
    reconnects: int
    connect_failures: int
    disconnects: int
    subscribe_failed: int
    _errors: RateLimitedLog
    _lock: threading.Lock
    _ready: threading.Condition
    _is_ready: bool
    _sub_mid: int | None
    _stopped: bool
    _refused: bool
    _online: dict[str, bytes]

    def wait_ready(self, timeout: float) -> bool:
        """Wait until connected with every subscription acknowledged; False on timeout."""
        with self._ready:
            return self._ready.wait_for(lambda: self._is_ready, timeout)

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

