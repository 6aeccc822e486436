"""An MQTT broker inside the process, for ``shopfloor demo`` on a machine without Mosquitto.

amqtt (a maintained pure-Python broker, the ``demo`` extra) runs on its own asyncio loop in a
daemon thread, on a free loopback port. It speaks MQTT 3.1.1 only, so the demo's agent uses
3.1.1 with it. It is for the demo: plants run Mosquitto or another production broker.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from shopfloor.tools.broker import HOST, BrokerError, free_port

__all__ = ["EmbeddedBroker"]


class EmbeddedBroker:
    """amqtt on 127.0.0.1 and a free port; ``start``/``stop`` like :class:`Mosquitto`."""

    host = HOST
    protocol = "3.1.1"

    def __init__(self) -> None:
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError("no Mosquitto and no embedded broker: install Mosquitto "
                              "(apt-get install mosquitto) or shopfloor's 'demo' extra") from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to start() below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or failure:
            raise BrokerError(f"the embedded broker did not start: {failure or 'timeout'}")

    def stop(self, *_: Any, timeout: float = 10.0) -> None:
        loop, broker, self._loop = self._loop, self._broker, None
        if loop is None or broker is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
