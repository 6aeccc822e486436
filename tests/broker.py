"""A real Mosquitto for tests: loopback only, an ephemeral port, stopped by signal, restartable.

Also the small helpers MQTT tests share: settings for a test link, an inbox, bounded waits.

Each broker gets its own directory (configuration, log, persistence database, certificates),
listens on 127.0.0.1 only, and keeps its port across restarts so that clients reconnect to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from shopfloor.receiving.mqtt import MqttLink, MqttSettings, Receipt
from shopfloor.tools.broker import (
    BrokerError,
    Mosquitto,
    TlsFiles,
    find_mosquitto,
    free_port,
    make_tls_files,
)

__all__ = [
    "BrokerError",
    "BrokerFactory",
    "Inbox",
    "LinkFactory",
    "Mosquitto",
    "TlsFiles",
    "find_mosquitto",
    "free_port",
    "link_settings",
    "make_tls_files",
    "wait_until",
]

def link_settings(broker: Mosquitto, client_id: str, **overrides: Any) -> MqttSettings:
    """Settings for a test link: short reconnect delays so restarts are quick to recover."""
    values: dict[str, Any] = {
        "host": broker.host, "port": broker.port, "client_id": client_id, "keepalive": 5,
        "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5,
    }
    values.update(overrides)
    return MqttSettings(**values)


class Inbox:
    """Collects messages handed to an ``on_message`` callback; waits are bounded."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, float]] = []
        self._cond = threading.Condition()

    def __call__(self, topic: str, payload: bytes, arrival: float,
                 receipt: Receipt | None = None) -> None:
        with self._cond:
            self.messages.append((topic, payload, arrival))
            self._cond.notify_all()

    @property
    def payloads(self) -> list[bytes]:
        with self._cond:
            return [payload for _, payload, _ in self.messages]

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """True once ``count`` messages have arrived; False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.messages) >= count, timeout)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


#: The ``mosquitto_factory`` fixture:
#: ``factory(start=True, persistence=True, tls=False, users=None)``.
BrokerFactory = Callable[..., Mosquitto]
#: The ``make_link`` fixture:
#: ``make_link(settings, subscriptions=(), on_message=None, start=True)``.
LinkFactory = Callable[..., MqttLink]
