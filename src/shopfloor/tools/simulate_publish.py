"""Publishing a simulated plant's messages to an MQTT broker, paced and bounded.

:func:`publish` connects a paho client, sends :class:`~shopfloor.tools.simulate_plant.Plant`'s
messages at the plant's own pace (or as fast as the broker takes them, at most a window of
unacknowledged ones), holds them back while the broker is away, and reports what was sent
(:class:`PublishReport`). Apart from the generation (:mod:`shopfloor.tools.simulate_plant`), which
is pure; re-exported by :mod:`shopfloor.tools.simulate`.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from shopfloor.tools.simulate_plant import Plant

__all__ = ["PublishReport", "publish"]


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What :func:`publish` sent."""

    messages: int
    payload_bytes: int
    wall_seconds: float
    simulated_seconds: float  # plant time covered by the messages sent
    stopped_by: str  # "duration", "max_messages" or "stop" (a signal or the caller)
    lost: int  # QoS 0 messages refused while disconnected, or unacknowledged at the end

    @property
    def rate(self) -> float:
        """Messages per wall-clock second."""
        return self.messages / self.wall_seconds if self.wall_seconds > 0 else 0.0


def publish(
    plant: Plant,
    host: str = "127.0.0.1",
    port: int = 1883,
    *,
    t0: float | None = None,
    duration: float | None = None,
    max_messages: int | None = None,
    realtime: bool = True,
    speed: float = 1.0,
    rate_limit: float | None = None,
    stop: threading.Event | None = None,
    client_id: str = "",
    connect_timeout: float = 10.0,
    protocol: str = "5",
    flush_timeout: float = 10.0,
) -> PublishReport:
    """Publish ``plant``'s messages to an MQTT broker until a bound or ``stop`` is reached.

    Parameters
    ----------
    t0
        Epoch seconds of the run's start in the payloads; default now.
    duration, max_messages
        Bounds in simulated seconds and in messages; ``None`` for no bound.
    realtime, speed
        Pace messages at ``speed`` times the plant's clock; ``realtime=False`` sends as fast as
        the broker takes them (at most 500 messages not yet written or acknowledged), for load
        tests.
    rate_limit
        At most this many messages per wall-clock second, on top of the pacing.
    stop
        Set it (from a signal handler, another thread) to end the run early.

    Raises
    ------
    ConnectionError
        The broker was not reachable within ``connect_timeout`` seconds.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    stop = stop or threading.Event()
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
    client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else connected.set()
    client.on_disconnect = lambda c, u, f, rc, p: connected.clear()
    client.reconnect_delay_set(1, 10)
    client.max_inflight_messages_set(100)
    client.connect_async(host, port, keepalive=30)
    client.loop_start()  # retries a refused connection by itself, so a broker may start late
    try:
        deadline = time.monotonic() + connect_timeout
        while not connected.wait(0.05):
            if stop.is_set():
                return PublishReport(0, 0, 0.0, 0.0, "stop", 0)
            if time.monotonic() > deadline:
                raise ConnectionError(f"no MQTT broker answered at {host}:{port} "
                                      f"within {connect_timeout:g} s")
        return _send(plant, client, connected, stop, t0=time.time() if t0 is None else t0,
                     duration=duration, max_messages=max_messages,
                     speed=speed if realtime else math.inf, rate_limit=rate_limit,
                     flush_timeout=flush_timeout)
    finally:
        client.disconnect()
        client.loop_stop()


_WINDOW = 500  # messages in flight before the publisher waits for the oldest


def _send(
    plant: Plant, client: Any, connected: threading.Event, stop: threading.Event, *, t0: float,
    duration: float | None, max_messages: int | None, speed: float, rate_limit: float | None,
    flush_timeout: float,
) -> PublishReport:
    sent = size = lost = 0
    offset = 0.0
    stopped_by = "duration"
    pending: deque[Any] = deque()
    start = time.monotonic()
    for m in plant.measurements(duration):
        if max_messages is not None and sent >= max_messages:
            stopped_by = "max_messages"
            break
        due = m.offset / speed
        if rate_limit is not None:
            due = max(due, sent / rate_limit)
        delay = start + due - time.monotonic()
        if (delay > 0.001 and stop.wait(delay)) or not _until_connected(connected, stop):
            stopped_by = "stop"
            break
        topic, payload, qos = plant.encode(m, t0)
        info = client.publish(topic, payload, qos)
        if info.rc != 0 and qos == 0:
            lost += 1
        sent, size, offset = sent + 1, size + len(payload), m.offset
        pending.append(info)
        # Without waiting, an as-fast-as-possible run would queue every message in memory.
        if len(pending) > _WINDOW and not _wait_published(pending.popleft(), math.inf, stop):
            lost += 1
    # Stopped or not, what was handed to paho gets a bounded time to reach the broker.
    deadline = time.monotonic() + flush_timeout
    lost += sum(not _wait_published(i, deadline) for i in pending)
    return PublishReport(sent, size, time.monotonic() - start, offset, stopped_by, lost)


def _until_connected(connected: threading.Event, stop: threading.Event) -> bool:
    """Hold messages back while the broker is away, as a gateway buffers; False on stop."""
    while not connected.is_set():
        if stop.wait(0.05):
            return False
    return not stop.is_set()


def _wait_published(info: Any, deadline: float, stop: threading.Event | None = None) -> bool:
    while True:
        try:
            if info.is_published():
                return True
        except (RuntimeError, ValueError):  # refused by paho: it will never be published
            return False
        if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
            return False
        info.wait_for_publish(timeout=0.05)
