"""A simulated plant for ``shopfloor simulate``: seeded sensor traffic with labelled faults.

Vibration assets (``motor-1``, ...) send accelerometer frames of their ``accel`` signal; quality
assets (``station-1``, ...) measure every part, a ``diameter_mm`` and a ``torque_nm``; optional
extra healthy gauges (asset ``aux``) make load. Faults are injected into chosen signals from
chosen times: a developing bearing defect (impacts at the outer-race defect frequency, their
severity ramping up from 0), a slow drift (tool wear), a level shift and outliers.

Topics follow the Unified Namespace: ``plant/{site}/{line}/{asset}/{signal}`` carries JSON
scalars and ``plant/{site}/{line}/{asset}/{signal}/frame`` binary frames. The frame topics have
one level more so that the two subscriptions (one per codec) never overlap: a broker may deliver
a message once per matching subscription (Mosquitto does over MQTT 5), and a frame read as JSON
would only be rejected.

Generation is pure and separate from publishing: every signal draws from its own generator,
seeded from the plant's seed, the signal's name and a fixed-size chunk of its messages, so
adding a signal or lengthening a run changes no other message. Timestamps are simulated time
(``t0`` + offset), so a run faster than real time still carries the plant's own clock.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import signal
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.codecs import encode_frame, encode_json_scalar
from shopfloor.config import NAME_PATTERN
from shopfloor.errors import UserError
from shopfloor.features import BEARING_6205_2RS
from shopfloor.synthetic import bearing_frames

__all__ = [
    "FAULT_KINDS",
    "FRAME_SCALE",
    "FRAME_TOPIC",
    "SCALAR_TOPIC",
    "Fault",
    "Measurement",
    "Plant",
    "PublishReport",
    "SimSignal",
    "add_parser",
    "agent_config_toml",
    "plant_from_args",
    "publish",
    "run",
    "standard_faults",
]

SCALAR_TOPIC = "plant/{site}/{line}/{asset}/{signal}"
FRAME_TOPIC = "plant/{site}/{line}/{asset}/{signal}/frame"
FAULT_KINDS = ("bearing", "drift", "shift", "outliers")

SHAFT_HZ = 29.95  # a 4-pole motor at 1797 rpm, as on the CWRU test rig
FRAME_SCALE = 1e-4  # g per int16 count: +-3.27 g full scale, noise (0.05 g) spans 500 counts
FULL_SCALE = 32767 * FRAME_SCALE
OUTLIER_FRACTION = 0.05  # of parts, once outliers have started
_FRAME_CHUNK = 32  # frames drawn from one seeded generator
_SCALAR_CHUNK = 512  # samples drawn from one seeded generator
# name -> (mean, standard deviation) of a healthy process
QUALITY_SIGNALS = {"diameter_mm": (25.0, 0.005), "torque_nm": (12.0, 0.15)}
EXTRA_SIGNAL = (50.0, 0.5)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault in one signal from ``start`` seconds after the run's start.

    Attributes
    ----------
    kind
        ``bearing`` (frame signals): impacts of ``size`` g at full severity. ``drift``: the
        mean moves by ``size`` healthy standard deviations over ``ramp`` seconds and stays.
        ``shift``: a step of ``size`` standard deviations. ``outliers``: from ``start`` on,
        5 % of the values are off by ``size`` standard deviations, either way.
    ramp
        Seconds from ``start`` to full size (``bearing`` and ``drift``); 0 is a step.
    """

    asset: str
    signal: str
    kind: str
    start: float
    size: float
    ramp: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {self.kind!r}"
            )
        for name in ("start", "size", "ramp"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"fault {name} must be a finite number >= 0; got {value!r}")

    def level(self, offset: NDArray[np.float64]) -> NDArray[np.float64]:
        """Fraction of full size at each offset (seconds): 0 before ``start``, 1 after the ramp."""
        since = offset - self.start
        if self.ramp == 0.0:
            return (since >= 0.0).astype(np.float64)
        return np.clip(since / self.ramp, 0.0, 1.0)


def standard_faults(asset: str, start: float) -> tuple[Fault, ...]:
    """The faults ``shopfloor simulate --fault-asset`` injects into ``asset`` from ``start``.

    A ``motor-*`` asset develops an outer-race defect over a minute; a ``station-*`` asset's
    diameter drifts by 8 sigma over a minute (tool wear, hurried for a demo: at 2 parts a second
    the agent's z-score sees it, while a drift several times slower per part is learned as the
    new normal) while its torque steps by 4 sigma and throws 8-sigma outliers (a worn clutch).
    """
    if asset.startswith("motor-"):
        return (Fault(asset, "accel", "bearing", start, size=0.3, ramp=60.0),)
    if asset.startswith("station-"):
        return (
            Fault(asset, "diameter_mm", "drift", start, size=8.0, ramp=60.0),
            Fault(asset, "torque_nm", "shift", start, size=4.0),
            Fault(asset, "torque_nm", "outliers", start, size=8.0),
        )
    raise ValueError(f"faults are injected into motor-N or station-N assets; got {asset!r}")


@dataclass(frozen=True, slots=True)
class SimSignal:
    """One simulated signal: a frame stream (``kind`` "frame") or a scalar stream."""

    asset: str
    signal: str
    kind: str
    rate: float  # messages per second
    topic: str
    mean: float = 0.0
    std: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.asset}/{self.signal}"

    @property
    def key(self) -> int:
        """Stable across processes (``hash()`` of a str is salted per process)."""
        return zlib.crc32(self.id.encode())

    @property
    def phase(self) -> float:
        """Offset of the first message, as a fraction of the period, so signals do not tie."""
        return (self.key % 1000) / 1000.0


@dataclass(frozen=True, slots=True)
class Measurement:
    """A generated message before encoding: a scalar value or one frame (g)."""

    offset: float  # seconds after the run's start
    signal: SimSignal
    value: float | NDArray[np.float64]


@dataclass(frozen=True)
class Plant:
    """A simulated plant: which assets send what, how fast, and which faults develop.

    (Not :class:`shopfloor.pipeline.Plant`, which scores a plant's signals.)

    Parameters
    ----------
    site, line
        Names in the topics.
    vibration_assets, quality_assets
        Counts of ``motor-N`` (frames) and ``station-N`` (two measurements per part) assets.
    frame_rate
        Frames per second per vibration asset.
    sample_rate, frame_len
        Samples per second and per frame of the accelerometers.
    parts_per_second
        Parts measured per second per quality asset; also the rate of each extra gauge.
    extra_signals
        Extra healthy scalar signals (``aux/gauge_001``, ...) for load tests.
    faults
        Injected faults; see :func:`standard_faults`.
    seed
        Seed of every signal's generator.
    qos
        MQTT QoS of every message (0 or 1).
    """

    site: str = "site1"
    line: str = "line1"
    vibration_assets: int = 2
    quality_assets: int = 2
    frame_rate: float = 2.0
    sample_rate: float = 12_000.0
    frame_len: int = 2048
    parts_per_second: float = 2.0
    extra_signals: int = 0
    faults: tuple[Fault, ...] = ()
    seed: int = 0
    qos: int = 1
    _signals: tuple[SimSignal, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("site", "line"):
            if not NAME_PATTERN.match(getattr(self, name)):
                raise ValueError(f"{name} must be 1-64 letters, digits, '_', '.' or '-'")
        _check(self.vibration_assets, "vibration_assets", 0, 10_000, integer=True)
        _check(self.quality_assets, "quality_assets", 0, 10_000, integer=True)
        _check(self.extra_signals, "extra_signals", 0, 100_000, integer=True)
        _check(self.frame_rate, "frame_rate", 1e-3, 10_000.0)
        _check(self.sample_rate, "sample_rate", 2_000.0, 1_000_000.0)
        _check(self.frame_len, "frame_len", 64, 1 << 20, integer=True)
        _check(self.parts_per_second, "parts_per_second", 1e-3, 100_000.0)
        _check(self.seed, "seed", 0, 2**63 - 1, integer=True)
        if self.qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1; got {self.qos!r}")
        where = f"plant/{self.site}/{self.line}"
        signals = [
            SimSignal(f"motor-{i}", "accel", "frame", self.frame_rate,
                      f"{where}/motor-{i}/accel/frame")
            for i in range(1, self.vibration_assets + 1)
        ]
        for i in range(1, self.quality_assets + 1):
            for name, (mean, std) in QUALITY_SIGNALS.items():
                signals.append(SimSignal(f"station-{i}", name, "scalar", self.parts_per_second,
                                         f"{where}/station-{i}/{name}", mean, std))
        for k in range(1, self.extra_signals + 1):
            signals.append(SimSignal("aux", f"gauge_{k:03d}", "scalar", self.parts_per_second,
                                     f"{where}/aux/gauge_{k:03d}", *EXTRA_SIGNAL))
        object.__setattr__(self, "_signals", tuple(signals))
        by_id = {s.id: s for s in signals}
        for f in self.faults:
            s = by_id.get(f"{f.asset}/{f.signal}")
            if s is None:
                raise ValueError(f"fault on {f.asset}/{f.signal}: no such signal in this plant")
            if (f.kind == "bearing") != (s.kind == "frame"):
                raise ValueError(f"fault on {s.id}: a {f.kind!r} fault does not fit a "
                                 f"{s.kind} signal ('bearing' is for frame signals only)")

    @property
    def signals(self) -> tuple[SimSignal, ...]:
        """Every signal, vibration first, then quality, then the extra gauges."""
        return self._signals

    @property
    def message_rate(self) -> float:
        """Messages per second of simulated time, over all signals."""
        return sum(s.rate for s in self._signals)

    def ground_truth(self, t0: float = 0.0) -> dict[str, float]:
        """``asset/signal`` -> epoch seconds its first fault starts; other signals are healthy."""
        truth: dict[str, float] = {}
        for f in self.faults:
            key = f"{f.asset}/{f.signal}"
            truth[key] = min(truth.get(key, math.inf), t0 + f.start)
        return truth

    def encode(self, m: Measurement, t0: float) -> tuple[str, bytes, int]:
        """``(topic, payload, qos)`` of ``m`` in a run that started at epoch ``t0``."""
        if isinstance(m.value, np.ndarray):
            payload = encode_frame(t0 + m.offset, self.sample_rate, m.value, "int16", FRAME_SCALE)
        else:
            payload = encode_json_scalar(t0 + m.offset, m.value)
        return m.signal.topic, payload, self.qos

    def messages(
        self, t0: float, duration: float | None = None
    ) -> Iterator[tuple[str, bytes, int]]:
        """``(topic, payload, qos)`` of the first ``duration`` seconds from epoch ``t0``, in
        timestamp order (``duration`` ``None``: endless)."""
        for m in self.measurements(duration):
            yield self.encode(m, t0)

    def measurements(self, duration: float | None = None) -> Iterator[Measurement]:
        """Every message of the first ``duration`` seconds (``None``: endless), in time order."""
        streams = [self._stream(s, duration) for s in self._signals]
        return heapq.merge(*streams, key=_offset)

    def _stream(self, s: SimSignal, duration: float | None) -> Iterator[Measurement]:
        end = math.inf if duration is None else duration
        faults = [f for f in self.faults if (f.asset, f.signal) == (s.asset, s.signal)]
        size = _FRAME_CHUNK if s.kind == "frame" else _SCALAR_CHUNK
        for chunk in itertools.count():
            offsets = np.asarray((chunk * size + np.arange(size) + s.phase) / s.rate,
                                 dtype=np.float64)
            if offsets[0] >= end:
                return
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(s.key, chunk)))
            values: list[float] | NDArray[np.float64]
            if s.kind == "frame":
                values = self._frames(rng, offsets, faults)
            else:
                values = _scalars(rng, s, offsets, faults).tolist()
            for offset, value in zip(offsets.tolist(), values, strict=True):
                if offset >= end:
                    return
                yield Measurement(offset, s, value)

    def _frames(
        self, rng: np.random.Generator, offsets: NDArray[np.float64], faults: list[Fault]
    ) -> NDArray[np.float64]:
        severity = np.zeros(offsets.size)
        for f in faults:
            severity += f.size * f.level(offsets)

        def frames(start: int, n: int, severity: float = 0.0) -> NDArray[np.float64]:
            # The housing resonance the impacts ring sits inside the default envelope band
            # (fs/5.12 to fs/2.56), whatever the sample rate.
            return bearing_frames(
                rng, start, n, frame_len=self.frame_len, sample_rate=self.sample_rate,
                shaft_hz=SHAFT_HZ, defect_order=BEARING_6205_2RS["bpfo"], severity=severity,
                resonance_hz=0.25 * self.sample_rate,
            )

        if not severity.any():
            x = frames(0, offsets.size)
        else:
            x = np.vstack([frames(i, 1, float(sev)) for i, sev in enumerate(severity)])
        # A strong defect saturates the sensor, as a real one would: clip at int16 full scale.
        return np.clip(x, -FULL_SCALE, FULL_SCALE, out=x)


def _scalars(
    rng: np.random.Generator, s: SimSignal, offsets: NDArray[np.float64], faults: list[Fault]
) -> NDArray[np.float64]:
    n = offsets.size
    # Every draw is made whether or not a fault needs it, so a faulty signal is its healthy
    # self plus the fault, value for value.
    noise = rng.standard_normal(n)
    outlier = rng.random(n) < OUTLIER_FRACTION
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    shift = np.zeros(n)
    for f in faults:
        level = f.level(offsets)
        if f.kind == "outliers":
            shift += np.where(outlier & (level > 0.0), sign * f.size, 0.0)
        else:
            shift += f.size * level
    return s.mean + s.std * (noise + shift)


def _offset(m: Measurement) -> float:
    return m.offset


def _check(value: object, name: str, low: float, high: float, *, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not (low <= value <= high):  # type: ignore[operator]
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{low:g}, {high:g}]; got {value!r}")


def agent_config_toml(
    plant: Plant,
    broker_host: str = "127.0.0.1",
    broker_port: int = 1883,
    *,
    client_id: str = "shopfloor-agent",
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 9817,
    events_prefix: str = "shopfloor",
    warmup: int = 100,
) -> str:
    """The agent configuration (TOML) that listens to ``plant`` on the given broker.

    One subscription per topic family, pinned to the plant's site and line: frames with the
    plant's sample rate and the 6205 bearing's defect orders, scalars with a z-score. The
    alarms ignore their first ``warmup`` samples (100: as many as the detectors need for a
    baseline), so a fault must start after ``warmup / rate`` seconds to be seen; with the
    default rates (2 frames and 2 parts a second) that is 50 s.
    """
    subscriptions: list[dict[str, object]] = []
    prefix = f"plant/{plant.site}/{plant.line}/"
    if plant.vibration_assets:
        subscriptions.append({
            "topic": prefix + "{asset}/{signal}/frame", "codec": "frame", "qos": plant.qos,
            "kind": "frame",
            # Just inside int16 full scale, so a clipped frame is rejected, not scored.
            "valid_range": [-3.2, 3.2],
            "features": {"sample_rate": float(plant.sample_rate), "shaft_hz": SHAFT_HZ,
                         "defect_orders": dict(BEARING_6205_2RS)},
            "detector": {"kind": "zscore"},
            "alarm": {"warmup": warmup},
        })
    if plant.quality_assets or plant.extra_signals:
        subscriptions.append({
            "topic": prefix + "{asset}/{signal}", "codec": "json", "qos": plant.qos,
            "kind": "scalar", "detector": {"kind": "zscore"}, "alarm": {"warmup": warmup},
        })
    sections: dict[str, dict[str, object]] = {
        "mqtt": {"host": broker_host, "port": broker_port, "protocol": "5",
                 "client_id": client_id, "keepalive": 30, "clean_start": False,
                 "session_expiry": 3600},
        "agent": {"queue_size": 10_000, "drop_policy": "drop_oldest",
                  "max_signals": max(1000, 2 * len(plant.signals)), "batch_max": 5000,
                  "shutdown_timeout": 10.0},
        "events": {"prefix": events_prefix, "qos": 1},
        "metrics": {"host": metrics_host, "port": metrics_port},
    }
    lines = [f"# Agent configuration for the simulated plant {plant.site}/{plant.line} "
             f"(seed {plant.seed}), written by shopfloor simulate.", ""]
    for name in ("mqtt", "agent", "events", "metrics"):
        lines += [f"[{name}]", *_toml_table(sections[name], name), ""]
    for sub in subscriptions:
        lines += ["[[subscriptions]]", *_toml_table(sub, "subscriptions"), ""]
    return "\n".join(lines)


def _toml_table(table: dict[str, object], path: str) -> list[str]:
    # Scalars first, then sub-tables as [path.key] headers, as TOML requires.
    out = [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            out += ["", f"[{path}.{k}]", *_toml_table(v, f"{path}.{k}")]
    return out


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {type(v).__name__}")


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


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``simulate`` command to ``subparsers`` (from ``add_subparsers``)."""
    d = Plant()
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="a simulated plant publishing to an MQTT broker",
        description="Publish seeded vibration frames and quality measurements, with a bearing "
        "defect and quality faults from --fault-start on, to an MQTT broker.",
    )
    p.add_argument("--host", default="127.0.0.1", help="broker (default: 127.0.0.1)")
    p.add_argument("--port", type=_int(1, 65535), default=1883, help="default: 1883")
    p.add_argument("--seed", type=_int(0, 2**63 - 1), default=d.seed, help="default: 0")
    p.add_argument("--duration", type=_float(0.0, above=True), metavar="SECONDS",
                   help="simulated seconds to publish (default: until Ctrl-C)")
    p.add_argument("--max-messages", type=_int(1, 2**62), metavar="N", help="stop after N")
    p.add_argument("--speed", type=_speed, default=1.0, metavar="X",
                   help="times real time, or 'max' for as fast as the broker takes (default: 1)")
    p.add_argument("--rate", type=_float(0.0, above=True), metavar="MSG_PER_S",
                   help="at most this many messages per second")
    p.add_argument("--vibration-assets", type=_int(0, 10_000), default=d.vibration_assets,
                   metavar="N",
                   help=f"motor-N assets sending frames (default: {d.vibration_assets})")
    p.add_argument("--quality-assets", type=_int(0, 10_000), default=d.quality_assets,
                   metavar="N",
                   help=f"station-N assets measuring parts (default: {d.quality_assets})")
    p.add_argument("--frame-rate", type=_float(1e-3, 10_000.0), default=d.frame_rate,
                   metavar="HZ", help=f"frames per second per motor (default: {d.frame_rate:g})")
    p.add_argument("--sample-rate", type=_float(2_000.0, 1e6), default=d.sample_rate,
                   metavar="HZ", help=f"accelerometer sample rate (default: {d.sample_rate:g})")
    p.add_argument("--frame-len", type=_int(64, 1 << 20), default=d.frame_len, metavar="N",
                   help=f"samples per frame (default: {d.frame_len})")
    p.add_argument("--parts-per-second", type=_float(1e-3, 100_000.0),
                   default=d.parts_per_second, metavar="HZ",
                   help=f"parts measured per station (default: {d.parts_per_second:g})")
    p.add_argument("--extra-signals", type=_int(0, 100_000), default=0, metavar="N",
                   help="extra healthy gauges at the parts rate, for load tests (default: 0)")
    p.add_argument("--fault-asset", action="append", metavar="ASSET",
                   help="asset that develops faults (repeatable; 'none' for a healthy plant; "
                   "default: motor-1 and station-1)")
    p.add_argument("--fault-start", type=_float(0.0), default=120.0, metavar="SECONDS",
                   help="when the faults begin, in simulated seconds (default: 120)")
    p.add_argument("--qos", type=_int(0, 1), default=1, help="MQTT QoS (default: 1)")
    p.add_argument("--site", default=d.site, help=f"site in the topics (default: {d.site})")
    p.add_argument("--line", default=d.line, help=f"line in the topics (default: {d.line})")
    p.add_argument("--print-config", action="store_true",
                   help="print the agent configuration for this plant and broker, then exit")
    return p


def plant_from_args(args: argparse.Namespace) -> Plant:
    """The :class:`Plant` the ``simulate`` options describe; ValueError on a bad combination."""
    assets = args.fault_asset
    if assets is None:
        assets = [a for a, n in (("motor-1", args.vibration_assets),
                                 ("station-1", args.quality_assets)) if n]
    for a in assets:
        kind, _, number = a.partition("-")
        count = {"motor": args.vibration_assets, "station": args.quality_assets}.get(kind, 0)
        if a != "none" and not (number.isdigit() and 1 <= int(number) <= count):
            raise ValueError(f"--fault-asset {a}: not an asset of this plant, which has "
                             f"motor-1..{args.vibration_assets} and "
                             f"station-1..{args.quality_assets} (or 'none')")
    faults = tuple(f for a in assets if a != "none" for f in standard_faults(a, args.fault_start))
    return Plant(site=args.site, line=args.line, vibration_assets=args.vibration_assets,
                 quality_assets=args.quality_assets, frame_rate=args.frame_rate,
                 sample_rate=args.sample_rate, frame_len=args.frame_len,
                 parts_per_second=args.parts_per_second, extra_signals=args.extra_signals,
                 faults=faults, seed=args.seed, qos=args.qos)


def run(args: argparse.Namespace) -> int:
    """Run ``shopfloor simulate``; SIGINT and SIGTERM end it cleanly (exit 0)."""
    try:
        plant = plant_from_args(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.print_config:
        sys.stdout.write(agent_config_toml(plant, args.host, args.port))
        return 0
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    for s in plant.signals:
        start = min((f.start for f in plant.faults if f.asset == s.asset
                     and f.signal == s.signal), default=math.inf)
        if start * s.rate < 150:
            print(f"simulate: warning: the fault on {s.id} starts after {start * s.rate:.0f} "
                  "samples; the agent's alarms warm up for 100, and its detectors need as many "
                  "again to settle", file=sys.stderr)
    t0 = time.time()
    truth = ", ".join(f"{k} from {v - t0:g} s" for k, v in plant.ground_truth(t0).items())
    print(f"simulate: {len(plant.signals)} signals, {plant.message_rate:g} messages per "
          f"simulated second to {args.host}:{args.port}; faults: {truth or 'none'}",
          file=sys.stderr)
    try:
        report = publish(plant, args.host, args.port, t0=t0, duration=args.duration,
                         max_messages=args.max_messages, realtime=args.speed != math.inf,
                         speed=args.speed, rate_limit=args.rate, stop=stop)
    except ConnectionError as exc:
        print(f"shopfloor simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"simulate: sent {report.messages} messages ({report.payload_bytes / 1e6:.1f} MB) in "
          f"{report.wall_seconds:.1f} s ({report.rate:.0f}/s), {report.simulated_seconds:.1f} s "
          f"of plant time; stopped by {report.stopped_by}; {report.lost} lost", file=sys.stderr)
    return 0


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}; got {value}")
        return value

    return parse


def _float(low: float, high: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        fits = value > low if above else value >= low
        if not (math.isfinite(value) and fits and value <= high):
            bounds = f"{'>' if above else '>='} {low:g}"
            bounds += f" and <= {high:g}" if high < math.inf else ""
            raise argparse.ArgumentTypeError(f"must be a number {bounds}; got {text}")
        return value

    return parse


def _speed(text: str) -> float:
    return math.inf if text == "max" else _float(0.0, above=True)(text)
