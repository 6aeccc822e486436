"""The agent benchmark's other processes: a publisher and an observer, each its own process.

``python -m benchmarks.agent_peers {publisher,observer} --port P`` reads one JSON command per
line on standard input and answers each with one JSON line on standard output, so the
benchmark (the parent) drives both without sharing a GIL with them or with the agent.

publisher
    Speaks MQTT 3.1.1 over a plain socket with pre-encoded packets, so that publishing costs
    next to no CPU and the consumer under test is what limits the rate. QoS 0 publishes: the
    socket write blocks when the broker does not read, which is "as fast as the broker takes".
    Every sample carries its publish time as its timestamp (``time.time()``, the same clock as
    the receivers'), which is what latency is measured from.
observer
    A bare paho-mqtt 2.x subscriber (``CallbackAPIVersion.VERSION2``, MQTT 5, QoS 1 like the
    agent's subscriptions). In ``count`` mode its ``on_message`` only counts: the reference the
    agent's rate is compared with. In ``latency`` mode it records, for anomalous data samples
    and for the agent's ``raised`` anomaly events, ``(signal, sample ts, arrival)``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FRAME_LEN", "HEALTHY_MEAN", "SAMPLE_RATE", "SPIKE", "main"]

FRAME_LEN = 1024
SAMPLE_RATE = 25_600.0  # Hz: a 1024-sample frame is 40 ms of vibration
HEALTHY_MEAN = 10.0  # scalar samples: N(10, 1)
SPIKE = 60.0  # the anomalous sample: 50 standard deviations out
ANOMALY_CUTOFF = 30.0  # the observer's test for "anomalous" (healthy samples never reach it)
CHUNK = 256  # messages per socket write when flooding
HOST = "127.0.0.1"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


class RawPublisher:
    """QoS 0 PUBLISH packets on one MQTT 3.1.1 connection."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10.0)
        # As paho does: a message is written when it is published, not held back by Nagle.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        # Protocol "MQTT" level 4, clean session, keepalive 60 s (a command lasts less).
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack(">H", len(cid)) + cid
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        ack = self.sock.recv(4)
        if len(ack) != 4 or ack[0] != 0x20 or ack[3] != 0:
            raise ConnectionError(f"broker refused the publisher: CONNACK {ack!r}")

    @staticmethod
    def packet(topic: bytes, payload: bytes) -> bytes:
        head = struct.pack(">H", len(topic)) + topic
        return b"\x30" + _varint(len(head) + len(payload)) + head + payload

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT: the broker drops nothing we sent
        finally:
            self.sock.close()


class Payloads:
    """Healthy payloads with a fresh timestamp: JSON scalars or int16 frames."""

    def __init__(self, kind: str, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.kind = kind
        self.values = [repr(float(v)) for v in HEALTHY_MEAN + rng.standard_normal(4096)]
        self.frames: list[bytes] = []
        if kind == "frame":
            from shopfloor.receiving.codecs import encode_frame

            t = np.arange(FRAME_LEN) / SAMPLE_RATE
            for _ in range(64):
                phase = rng.uniform(0.0, 2.0 * np.pi)
                x = (0.5 * np.sin(2.0 * np.pi * 24.7 * t + phase)
                     + 0.2 * np.sin(2.0 * np.pi * 3100.0 * t)
                     + 0.05 * rng.standard_normal(FRAME_LEN))
                self.frames.append(encode_frame(1.0, SAMPLE_RATE, x, "int16", scale=1e-4))

    def make(self, i: int, ts: float) -> bytes:
        if self.kind == "frame":
            frame = self.frames[i % len(self.frames)]
            return frame[:12] + struct.pack("<d", ts) + frame[20:]  # the header's start time
        return b'{"ts":%r,"value":%s}' % (ts, self.values[i % len(self.values)].encode())


@functools.cache
def _payloads(kind: str) -> Payloads:
    return Payloads(kind)  # made once per process: 64 frames take a moment to encode


def _topics(prefix: str, signals: int) -> list[bytes]:
    return [f"{prefix}/s{k:03d}".encode() for k in range(signals)]


def flood(port: int, prefix: str, kind: str, signals: int, rate: float | None,
          seconds: float) -> dict[str, Any]:
    """Publish healthy samples round-robin over ``signals`` for ``seconds``, paced at ``rate``
    messages/s or (``None``) as fast as the broker reads them."""
    pub = RawPublisher(port, f"sfbench-pub-{time.monotonic_ns()}")
    payloads, topics = _payloads(kind), _topics(prefix, signals)
    sent, start = 0, time.monotonic()
    end = start + seconds
    try:
        while (now := time.monotonic()) < end:
            n = CHUNK
            if rate is not None:
                n = min(CHUNK, int((now - start) * rate) + 1 - sent)
                if n <= 0:
                    time.sleep(min(0.002, end - now))
                    continue
            ts = time.time()
            pub.sock.sendall(b"".join(
                pub.packet(topics[(sent + k) % signals], payloads.make(sent + k, ts))
                for k in range(n)))
            sent += n
    finally:
        pub.close()
    return {"sent": sent, "seconds": time.monotonic() - start}


def paced_anomalies(port: int, prefix: str, signals: int, rate: float, every: int,
                    seconds: float) -> dict[str, Any]:
    """Healthy JSON samples at ``rate`` messages/s round-robin over ``signals``; every
    ``every``-th is a spike instead. Each message is stamped when it is written; spikes are
    listed. ``every`` must be coprime with ``signals``: then the spikes visit every signal in
    turn and every signal also gets healthy samples."""
    if math.gcd(every, signals) != 1:
        raise ValueError(f"every={every} must be coprime with signals={signals}")
    pub = RawPublisher(port, f"sfbench-lat-{time.monotonic_ns()}")
    payloads, topics = _payloads("json"), _topics(prefix, signals)
    ids = ["/".join(t.decode().rsplit("/", 2)[-2:]) for t in topics]  # asset/signal
    spikes: list[tuple[str, float]] = []
    sent, start = 0, time.monotonic()
    end = start + seconds
    try:
        while (now := time.monotonic()) < end:
            due = min(64, int((now - start) * rate) + 1 - sent)
            if due <= 0:
                time.sleep(max(0.0, start + sent / rate - now))
                continue
            for _ in range(due):
                k = sent % signals
                ts = time.time()
                if sent % every == every - 1:
                    payload = b'{"ts":%r,"value":%r}' % (ts, SPIKE)
                    spikes.append((ids[k], ts))
                else:
                    payload = payloads.make(sent, ts)
                pub.sock.sendall(pub.packet(topics[k], payload))
                sent += 1
    finally:
        pub.close()
    return {"sent": sent, "seconds": time.monotonic() - start, "spikes": spikes}


def _publisher(port: int, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd["op"]
    if op == "flood":
        return flood(port, cmd["prefix"], cmd["kind"], cmd["signals"], cmd.get("rate"),
                     cmd["seconds"])
    if op == "latency":
        return paced_anomalies(port, cmd["prefix"], cmd["signals"], cmd["rate"], cmd["every"],
                               cmd["seconds"])
    raise ValueError(f"unknown publisher op {op!r}")


class Observer:
    """The bare paho subscriber (see the module docstring)."""

    def __init__(self, port: int, filters: list[str]) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.count = 0
        self.records: list[tuple[str, float, float]] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sfbench-reference",
                                  protocol=paho.MQTTv5)
        # Subscribed again after every connect: the benchmark restarts the broker.
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in filters])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self._subscribed.clear()
        self.client.reconnect_delay_set(0.1, 1.0)  # type: ignore[arg-type]
        self.client.on_message = self._count
        self.client.connect(HOST, port, keepalive=30)
        self.client.loop_start()

    def _count(self, client: Any, userdata: Any, message: Any) -> None:
        self.count += 1  # the whole of the reference's work per message

    def _record(self, client: Any, userdata: Any, message: Any) -> None:
        arrival = time.time()
        self.count += 1
        try:
            doc = json.loads(message.payload)
        except ValueError:
            return
        topic = message.topic
        if topic.endswith("/anomaly"):  # an agent event: the anomalous sample's ts
            if doc.get("kind") == "raised":
                self.records.append((f"{doc['asset']}/{doc['signal']}", doc["ts"], arrival))
        elif doc.get("value", 0.0) > ANOMALY_CUTOFF:  # the spike itself, straight from the broker
            asset, signal = topic.rsplit("/", 2)[-2:]
            self.records.append((f"{asset}/{signal}", doc["ts"], arrival))

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "ready":
            return {"ready": self._subscribed.wait(cmd.get("timeout", 10.0))}
        if op == "mode":
            handler: Callable[..., None] = self._record if cmd["mode"] == "latency" else self._count
            self.client.on_message = handler
            return {"mode": cmd["mode"]}
        if op == "count":
            return {"count": self.count}
        if op == "take":
            taken, self.records = self.records, []
            return {"records": taken}
        raise ValueError(f"unknown observer op {op!r}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agent_peers")
    p.add_argument("role", choices=["publisher", "observer"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--filter", action="append", default=[], help="observer: topic filters")
    args = p.parse_args(argv)
    observer = Observer(args.port, args.filter) if args.role == "observer" else None
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            try:
                out = observer.handle(cmd) if observer else _publisher(args.port, cmd)
            except Exception as exc:  # told to the parent, which raises with it
                out = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(out), flush=True)
    finally:
        if observer is not None:
            observer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
