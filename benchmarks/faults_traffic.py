"""The fault suite's MQTT load: a paced QoS 1 sample stream, a list of messages published in
order, and the probe that says the agent's subscription is in place."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from benchmarks.agent_procs import BenchError
from benchmarks.faults_procs import Agent
from benchmarks.faults_rig import wait_for
from shopfloor.tools.broker import HOST

__all__ = ["SampleStream", "publish_all", "wait_subscribed"]

class SampleStream(threading.Thread):
    """JSON samples at QoS 1, round-robin over ``topics``, paced at ``rate`` messages/s (None:
    as fast as the window of unacknowledged messages allows), until :meth:`finish`.

    Each topic's timestamps strictly increase (a message's first sample is later than the last
    sample before it on that topic), so a redelivered sample is always recognisable by the
    agent. A message counts as published once the broker acknowledged it (``acked``): paho
    keeps unacknowledged QoS 1 messages across a broker restart and sends them again, so the
    window (:attr:`window`) bounds what it holds while the broker is away.
    """

    window = 1000

    def __init__(self, port: int, topics: list[str], rate: float | None, *, client_id: str,
                 values: int = 1, spacing: float = 1e-5, seed: int = 0) -> None:
        super().__init__(name=f"faults-{client_id}", daemon=True)
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.topics = topics
        self.rate = rate
        self.values = values  # samples per message: 1 is {"ts", "value"}, more a batch
        self.spacing = spacing  # seconds between a batch's samples
        # Healthy N(10, 1) values, pre-formatted; each message takes a random slice, so no two
        # signals or messages repeat each other (identical streams look perfectly correlated
        # to the asset detector, which then alarms on healthy data).
        rng = np.random.default_rng(seed)
        self._pool = [b"%.4f" % v for v in 10.0 + rng.standard_normal(1 << 16)]
        self._offsets = rng.integers(0, 1 << 16, size=1 << 12)
        self.client_id = client_id
        self.published = 0  # handed to paho
        self.acked = 0  # acknowledged by the broker
        self.failed = 0  # refused by paho (never sent)
        self._halt = threading.Event()
        self._last = dict.fromkeys(topics, 0.0)
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: self._connected.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self._connected.clear()
        self.client.on_publish = self._on_publish
        self.client.max_inflight_messages_set(100)
        # Back quickly after a broker restart; paho takes float delays though its hints say int.
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.connect_async(HOST, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10.0):
            self.client.loop_stop()
            raise BenchError(f"publisher {client_id} could not connect to port {port}")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.acked += 1

    @property
    def samples_acked(self) -> int:
        return self.acked * self.values

    def payload(self, topic: str, i: int) -> bytes:
        ts = max(time.time(), self._last[topic] + self.spacing)
        start = int(self._offsets[i % len(self._offsets)]) + i
        pool = self._pool
        if self.values == 1:
            self._last[topic] = ts
            return b'{"ts":%r,"value":%s}' % (ts, pool[start % len(pool)])
        self._last[topic] = ts + (self.values - 1) * self.spacing
        body = b",".join(pool[(start + k) % len(pool)] for k in range(self.values))
        return b'{"ts":%r,"rate":%r,"values":[%s]}' % (ts, 1.0 / self.spacing, body)

    def run(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._halt.is_set():
            if self.rate is not None:
                due = start + i / self.rate - time.monotonic()
                if due > 0:
                    self._halt.wait(min(due, 0.05))
                    continue
            if self.published - self.acked - self.failed >= self.window:
                self._halt.wait(0.002)  # the broker is slow or away: hold back
                continue
            topic = self.topics[i % len(self.topics)]
            info = self.client.publish(topic, self.payload(topic, i), qos=1)
            # MQTT_ERR_NO_CONN still queues a QoS 1 message (sent after the reconnect);
            # anything else is a refusal.
            if info.rc not in (0, 4):
                self.failed += 1
            self.published += 1
            i += 1

    def finish(self, timeout: float = 30.0) -> bool:
        """Stop publishing and wait until the broker acknowledged everything; False when it
        did not within ``timeout`` (the connection is closed either way)."""
        self._halt.set()
        self.join(10.0)
        done = wait_for(lambda: self.acked + self.failed >= self.published, timeout, 0.02)
        self.client.disconnect()
        self.client.loop_stop()
        return done


def publish_all(port: int, client_id: str, messages: Iterable[tuple[str, bytes]], *,
                qos: int = 1, pace: float = 0.0, timeout: float = 60.0) -> int:
    """Publish ``messages`` in order on one connection (``pace`` seconds apart), then wait for
    the broker's acknowledgements; the number published."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect(HOST, port, keepalive=30)
    client.loop_start()
    try:
        infos = []
        for topic, payload in messages:
            infos.append(client.publish(topic, payload, qos=qos))
            if pace:
                time.sleep(pace)
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        if not all(info.is_published() for info in infos):
            raise BenchError(f"{client_id}: the broker did not take every message in "
                             f"{timeout:g} s")
        return len(infos)
    finally:
        client.disconnect()
        client.loop_stop()



def wait_subscribed(agent: Agent, broker_port: int, topic: str, timeout: float = 30.0) -> None:
    """Publish probe samples on ``topic`` until the agent receives one: its SUBSCRIBE has been
    processed, so what is published from now on has a subscriber (connected alone does not
    say so, and a message published before the first subscription reaches nobody)."""
    deadline = time.monotonic() + timeout
    before = agent.metrics().value("shopfloor_messages_received_total")
    while time.monotonic() < deadline:
        publish_all(broker_port, f"probe-{time.monotonic_ns()}",
                    [(topic, b'{"value":1.0}')], qos=0)
        if wait_for(lambda: agent.metrics().value("shopfloor_messages_received_total")
                    > before, 0.5):
            return
    raise BenchError(f"the agent received nothing on {topic} within {timeout:g} s")

