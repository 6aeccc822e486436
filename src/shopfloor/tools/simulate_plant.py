"""The simulated plant's assets and signals, and the seeded generation of their messages.

A :class:`Plant` lists its signals (:class:`SimSignal`: ``motor-N`` accelerometer frames,
``station-N`` part measurements, ``aux`` gauges), checks the faults it is given
(:mod:`shopfloor.tools.simulate_faults`) against them, and yields every message of a run in time
order, as :class:`Measurement` values or encoded ``(topic, payload, qos)``.

Generation is pure and separate from publishing (:mod:`shopfloor.tools.simulate_publish`): every
signal draws from its own generator, seeded from the plant's seed, the signal's name and a
fixed-size chunk of its messages, so adding a signal or lengthening a run changes no other
message. Re-exported by :mod:`shopfloor.tools.simulate`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import NAME_PATTERN
from shopfloor.receiving.codecs import encode_frame, encode_json_scalar
from shopfloor.scoring.features import BEARING_6205_2RS
from shopfloor.tools.simulate_faults import Fault
from shopfloor.tools.synthetic import bearing_frames

__all__ = [
    "FRAME_SCALE",
    "FRAME_TOPIC",
    "SCALAR_TOPIC",
    "SHAFT_HZ",
    "Measurement",
    "Plant",
    "SimSignal",
]

SCALAR_TOPIC = "plant/{site}/{line}/{asset}/{signal}"
FRAME_TOPIC = "plant/{site}/{line}/{asset}/{signal}/frame"

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

    (Not :class:`shopfloor.scoring.pipeline.Plant`, which scores a plant's signals.)

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
