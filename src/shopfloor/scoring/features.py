"""The feature stage of a signal's pipeline: what a detector sees of each sample or frame.

A scalar signal (a quality measurement) is its own feature. A vibration frame becomes one row of
named features: time-domain statistics (:mod:`shopfloor.scoring.kernels.frame`), band energies, ISO
velocity rms, bearing-defect envelope amplitudes and the velocity at shaft orders such as 1x
and 2x (:mod:`shopfloor.scoring.kernels.spectrum`).

Dropouts inside a frame are skipped by the statistics and counted. For the spectrum they are
filled with the frame's mean, which adds no AC power, and the band energies and velocity are
scaled by ``frame_len / finite_samples`` so they still estimate the power of the samples that
arrived (band energies over all bins then add up to ``rms**2`` exactly). A frame with more than
``max_missing`` of its samples missing is rejected: its spectral features are NaN, since gaps
that large smear the spectrum more than any rescaling can undo.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shopfloor.scoring.kernels.frame import FRAME_STAT_NAMES, frame_stats
from shopfloor.scoring.kernels.spectrum import (
    ACCEL_UNITS,
    SpectralPlan,
    spectral_features,
    spectral_plan,
)

__all__ = [
    "BEARING_6205_2RS",
    "FeatureBatch",
    "FrameFeatures",
    "ScalarFeatures",
    "default_bands",
    "default_envelope_band",
]

#: Defect frequencies of an SKF 6205-2RS deep-groove ball bearing, in multiples of shaft speed.
BEARING_6205_2RS: Mapping[str, float] = MappingProxyType(
    {"bpfi": 5.4152, "bpfo": 3.5848, "bsf": 4.7135, "ftf": 0.39828}
)

# Spectra are computed and read in chunks, so that each chunk's spectrum is still in cache when
# the feature kernel reads it; one FFT over thousands of frames would send it through main
# memory twice. Measured (2-core EPYC VM, 4 Mi samples): 2 MiB chunks of at least 8 frames give
# the best spectral rate from 1024 to 65536 samples per frame; fewer than 8 frames per call
# make numpy's FFT itself slower (2 frames of 65536: 1.7x).
_CHUNK_BYTES = 2 << 20
_CHUNK_MIN_FRAMES = 8
_MAX_PLANS = 16  # frame lengths remembered per signal (a signal rarely has more than one)
_DEFECT_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """Features of a batch of frames.

    Attributes
    ----------
    values
        Shape (n, d), float64, columns named by :attr:`FrameFeatures.names`. NaN where a
        feature is undefined (see :mod:`shopfloor.scoring.kernels.frame`) or the frame was rejected.
    missing
        Shape (n,), int64: non-finite samples skipped in each frame.
    rejected
        Shape (n,), bool: frames with more than ``max_missing`` of their samples missing (or
        fewer than two finite samples), whose spectral features are NaN.
    """

    values: NDArray[np.float64]
    missing: NDArray[np.int64]
    rejected: NDArray[np.bool_]


class ScalarFeatures:
    """A scalar signal's feature is its value.

    Examples
    --------
    >>> ScalarFeatures().compute(np.array([1.5, 2.0])).tolist()
    [[1.5], [2.0]]
    """

    names: tuple[str, ...] = ("value",)

    def compute(self, values: ArrayLike) -> NDArray[np.float64]:
        """Return ``values`` (shape (n,)) as a float64 (n, 1) feature matrix."""
        v = _as_real_array(values, "values")
        if v.ndim > 1:
            raise ValueError(f"values must be a scalar or 1-D (n,); got shape {v.shape}")
        return np.ascontiguousarray(v.reshape(-1, 1))


def default_bands(sample_rate: float) -> tuple[tuple[float, float], ...]:
    """Octave-ish bands on the 1-2-5 series from 10 Hz up to the Nyquist frequency.

    >>> default_bands(1000.0)
    ((10.0, 20.0), (20.0, 50.0), (50.0, 100.0), (100.0, 200.0), (200.0, 500.0))
    """
    edges: list[float] = []
    decade = 10.0
    while decade <= sample_rate / 2:
        edges += [e for e in (decade, 2 * decade, 5 * decade) if e <= sample_rate / 2]
        decade *= 10
    return tuple(itertools.pairwise(edges))


def default_envelope_band(sample_rate: float) -> tuple[float, float]:
    """``[fs / 5.12, fs / 2.56)``: the upper octave of the usable band (fs = 2.56 × bandwidth
    is the usual anti-alias convention), where bearing impacts excite structural resonances."""
    return (sample_rate / 5.12, sample_rate / 2.56)


class FrameFeatures:
    """Named features of vibration frames sampled at ``sample_rate``.

    Parameters
    ----------
    sample_rate
        Samples per second of the frames (Hz), > 0.
    bands
        ``(low_hz, high_hz)`` bands whose mean-square energy is a feature, each within
        ``0 < low_hz < high_hz <= sample_rate / 2``; ``None`` for :func:`default_bands`.
    velocity_band
        Band of the velocity rms (ISO 10816/20816: 10-1000 Hz), or ``None`` for no velocity.
    accel_unit
        Unit of the frames, for velocity: ``"g"`` or ``"m/s2"``.
    shaft_hz
        Shaft speed in Hz, needed for ``defect_orders``.
    defect_orders
        Defect name (lower_snake) to frequency in multiples of shaft speed; each becomes an
        ``env_<name>`` feature. Empty by default; :data:`BEARING_6205_2RS` is an example.
    envelope_band
        Band demodulated for the envelope features; ``None`` for
        :func:`default_envelope_band`. It must be wider than the highest defect frequency.
    defect_tolerance
        Search half-width around each defect frequency and shaft order, as a fraction of it
        (bearing slip, speed error), in ``[0, 0.5)``.
    max_missing
        Largest fraction of missing samples of a frame whose spectrum is still used, ``[0, 1)``.
    stats
        Time-domain statistics to include, from :data:`FRAME_STAT_NAMES`.
    shaft_orders
        Multiples of shaft speed (needs ``shaft_hz``) whose velocity rms in mm/s becomes a
        ``shaft_<order>x_mm_s`` feature, after all others: ``(1.0, 2.0)`` gives
        ``shaft_1x_mm_s`` (unbalance) and ``shaft_2x_mm_s`` (misalignment). None by default,
        so that configurations written before it keep their feature rows (and checkpoints).

    Examples
    --------
    >>> t = np.arange(4096) / 25600.0
    >>> ff = FrameFeatures(25600.0, bands=((50.0, 200.0),), stats=("rms",))
    >>> ff.names
    ('rms', 'band_50_200_hz', 'velocity_rms_mm_s')
    >>> batch = ff.compute(np.sin(2 * np.pi * 100.0 * t))  # 1 g at 100 Hz
    >>> np.round(batch.values, 3).tolist()  # 11.036 mm/s in theory; +0.2 % from the window
    [[0.707, 0.5, 11.058]]
    """

    def __init__(
        self,
        sample_rate: float,
        bands: Sequence[Sequence[float]] | None = None,
        velocity_band: Sequence[float] | None = (10.0, 1000.0),
        accel_unit: str = "g",
        shaft_hz: float | None = None,
        defect_orders: Mapping[str, float] | None = None,
        envelope_band: Sequence[float] | None = None,
        defect_tolerance: float = 0.02,
        max_missing: float = 0.1,
        stats: Sequence[str] = FRAME_STAT_NAMES,
        shaft_orders: Sequence[float] | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.bands = bands
        self.velocity_band = velocity_band
        self.accel_unit = accel_unit
        self.shaft_hz = shaft_hz
        self.defect_orders = defect_orders
        self.envelope_band = envelope_band
        self.defect_tolerance = defect_tolerance
        self.max_missing = max_missing
        self.stats = stats
        self.shaft_orders = shaft_orders
        _Config.resolve(self)  # every parameter is checked now, not on the first frame

    @cached_property
    def _config(self) -> _Config:
        return _Config.resolve(self)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, in column order: statistics, bands, velocity, envelope, orders."""
        return self._config.names

    @cached_property
    def _plans(self) -> dict[int, SpectralPlan]:
        return {}

    def compute(self, frames: ArrayLike) -> FeatureBatch:
        """Features of each frame of ``frames``, shape (n, frame_len) (1-D: one frame).

        ``frame_len`` may change from one call to the next; it must be at least 2.
        """
        x = _as_real_array(frames, "frames")
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2:
            raise ValueError(f"frames must have shape (n, frame_len); got {x.shape}")
        n, frame_len = x.shape
        if n and frame_len < 2:
            raise ValueError(f"frames need at least 2 samples each; got frame_len={frame_len}")
        cfg = self._config
        stats, missing = frame_stats(x)
        finite = frame_len - missing
        rejected = (missing > cfg.max_missing * frame_len) | (finite < 2)
        values = np.empty((n, len(cfg.names)), dtype=np.float64)
        values[:, : len(cfg.stat_columns)] = stats[:, list(cfg.stat_columns)]
        spectral = values[:, len(cfg.stat_columns) :]
        if n == 0 or spectral.shape[1] == 0:
            return FeatureBatch(values=values, missing=missing, rejected=rejected)
        plan = self._plan(frame_len)
        # Missing samples take the frame's mean (no AC power added); a rejected frame's take
        # 0 only so that the FFT sees finite numbers, its features are overwritten below.
        fill = np.where(rejected, 0.0, stats[:, 0])
        rows = max(_CHUNK_MIN_FRAMES, _CHUNK_BYTES // (16 * (frame_len // 2 + 1)))
        for start in range(0, n, rows):
            chunk = x[start : start + rows]
            if missing[start : start + rows].any():
                chunk = np.where(np.isfinite(chunk), chunk, fill[start : start + rows, None])
            spectral[start : start + rows] = spectral_features(np.fft.rfft(chunk, axis=1), plan)
        gappy = (missing > 0) & ~rejected
        if gappy.any():
            power_scale = frame_len / finite[gappy]
            spectral[gappy, : cfg.n_power] *= power_scale[:, None]
            amplitude_scale = np.sqrt(power_scale)[:, None]
            spectral[gappy, cfg.n_power : cfg.n_power + cfg.n_velocity] *= amplitude_scale
            if cfg.order_hz:
                spectral[gappy, -len(cfg.order_hz) :] *= amplitude_scale
        spectral[rejected] = np.nan
        return FeatureBatch(values=values, missing=missing, rejected=rejected)

    def _plan(self, frame_len: int) -> SpectralPlan:
        plans = self._plans
        plan = plans.get(frame_len)
        if plan is None:
            if len(plans) >= _MAX_PLANS:
                plans.clear()
            cfg = self._config
            plan = plans[frame_len] = spectral_plan(
                frame_len,
                cfg.sample_rate,
                bands=cfg.bands,
                velocity_band=cfg.velocity_band,
                accel_unit=cfg.accel_unit,
                envelope_band=cfg.envelope_band,
                defect_hz=cfg.defect_hz,
                tolerance=cfg.defect_tolerance,
                order_hz=cfg.order_hz,
            )
        return plan


@dataclass(frozen=True, slots=True)
class _Config:
    """FrameFeatures' parameters checked, defaults filled in and names worked out."""

    sample_rate: float
    bands: tuple[tuple[float, float], ...]
    velocity_band: tuple[float, float] | None
    accel_unit: str
    envelope_band: tuple[float, float] | None
    defect_hz: tuple[float, ...]
    order_hz: tuple[float, ...]
    defect_tolerance: float
    max_missing: float
    stat_columns: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def n_power(self) -> int:
        return len(self.bands)

    @property
    def n_velocity(self) -> int:
        return 0 if self.velocity_band is None else 1

    @classmethod
    def resolve(cls, p: FrameFeatures) -> _Config:
        fs = _number(p.sample_rate, "sample_rate")
        if not fs > 0.0:
            raise ValueError(f"sample_rate must be > 0 Hz; got {p.sample_rate!r}")
        nyquist = fs / 2.0
        bands = default_bands(fs) if p.bands is None else _bands(p.bands, nyquist)
        velocity = None
        if p.velocity_band is not None:
            velocity = _band(p.velocity_band, "velocity_band", nyquist)
        if p.accel_unit not in ACCEL_UNITS:
            raise ValueError(
                f"accel_unit must be one of {sorted(ACCEL_UNITS)}; got {p.accel_unit!r}"
            )
        tolerance = _number(p.defect_tolerance, "defect_tolerance")
        if not 0.0 <= tolerance < 0.5:
            raise ValueError(f"defect_tolerance must be a fraction in [0, 0.5); got {tolerance!r}")
        max_missing = _number(p.max_missing, "max_missing")
        if not 0.0 <= max_missing < 1.0:
            raise ValueError(f"max_missing must be a fraction in [0, 1); got {max_missing!r}")
        orders = dict(p.defect_orders or {})
        shaft_orders = _shaft_orders(() if p.shaft_orders is None else p.shaft_orders)
        defect_hz: tuple[float, ...] = ()
        order_hz: tuple[float, ...] = ()
        envelope = None
        if p.shaft_hz is not None or orders or shaft_orders:
            shaft = _number(p.shaft_hz, "shaft_hz") if p.shaft_hz is not None else math.nan
            if not shaft > 0.0:
                raise ValueError(
                    f"shaft_hz must be the shaft speed in Hz (> 0) for the env_* and shaft_* "
                    f"features; got {p.shaft_hz!r}"
                )
            if not orders and not shaft_orders:
                raise ValueError(
                    "defect_orders and shaft_orders are empty, so shaft_hz has no use: give "
                    f"e.g. defect_orders = {dict(BEARING_6205_2RS)} (6205-2RS), "
                    "shaft_orders = [1.0, 2.0], or leave out shaft_hz"
                )
            order_hz = tuple(shaft * o for o in shaft_orders)
            if order_hz and max(order_hz) * (1.0 + tolerance) >= nyquist:
                raise ValueError(
                    f"shaft_orders {list(shaft_orders)} reach {max(order_hz):g} Hz, beyond the "
                    f"Nyquist frequency {nyquist:g} Hz"
                )
            for name, order in sorted(orders.items()):
                if not isinstance(name, str) or not _DEFECT_NAME.fullmatch(name):
                    raise ValueError(f"defect_orders names must be lower_snake; got {name!r}")
                if not _number(order, f"defect_orders[{name!r}]") > 0.0:
                    raise ValueError(f"defect_orders[{name!r}] must be > 0; got {order!r}")
            if orders:
                defect_hz = tuple(shaft * float(orders[k]) for k in sorted(orders))
                envelope = _band(
                    default_envelope_band(fs) if p.envelope_band is None else p.envelope_band,
                    "envelope_band",
                    nyquist,
                )
                top = max(defect_hz) * (1.0 + tolerance)
                if top >= envelope[1] - envelope[0]:
                    raise ValueError(
                        f"envelope_band {envelope} is {envelope[1] - envelope[0]:g} Hz wide, "
                        f"too narrow to show the highest defect frequency ({top:g} Hz with "
                        "tolerance); widen it"
                    )
        stats = tuple(p.stats)
        unknown = [s for s in stats if s not in FRAME_STAT_NAMES]
        if unknown or len(set(stats)) != len(stats):
            raise ValueError(f"stats must be distinct names from {FRAME_STAT_NAMES}; got {stats!r}")
        names = (
            stats
            + tuple(f"band_{_hz(lo)}_{_hz(hi)}_hz" for lo, hi in bands)
            + (("velocity_rms_mm_s",) if velocity is not None else ())
            + tuple(f"env_{k}" for k in sorted(orders))
            + tuple(f"shaft_{_hz(o)}x_mm_s" for o in shaft_orders)
        )
        if len(set(names)) != len(names):
            raise ValueError(f"bands must be distinct; got {bands!r}")
        if not names:
            raise ValueError("no features left: give stats, bands, velocity_band or defect_orders")
        return cls(
            sample_rate=fs,
            bands=bands,
            velocity_band=velocity,
            accel_unit=p.accel_unit,
            envelope_band=envelope,
            defect_hz=defect_hz,
            order_hz=order_hz,
            defect_tolerance=tolerance,
            max_missing=max_missing,
            stat_columns=tuple(FRAME_STAT_NAMES.index(s) for s in stats),
            names=names,
        )


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return float(value)


def _band(band: Any, name: str, nyquist: float) -> tuple[float, float]:
    if isinstance(band, str | bytes) or not isinstance(band, Sequence) or len(band) != 2:
        raise ValueError(f"{name} must be a (low_hz, high_hz) pair; got {band!r}")
    lo, hi = _number(band[0], name), _number(band[1], name)
    if not 0.0 < lo < hi <= nyquist:
        raise ValueError(
            f"{name} {band!r} must satisfy 0 < low_hz < high_hz <= {nyquist:g} Hz (Nyquist)"
        )
    return lo, hi


def _shaft_orders(orders: Any) -> tuple[float, ...]:
    if isinstance(orders, str | bytes) or not isinstance(orders, Sequence):
        raise ValueError(f"shaft_orders must be a list of multiples of shaft speed; got {orders!r}")
    out = tuple(_number(o, "shaft_orders") for o in orders)
    if any(not o > 0.0 for o in out) or len(set(out)) != len(out):
        raise ValueError(f"shaft_orders must be distinct multiples > 0; got {orders!r}")
    return out


def _bands(bands: Any, nyquist: float) -> tuple[tuple[float, float], ...]:
    if isinstance(bands, str | bytes) or not isinstance(bands, Sequence):
        raise ValueError(f"bands must be a list of (low_hz, high_hz) pairs; got {bands!r}")
    return tuple(_band(b, "bands", nyquist) for b in bands)


def _hz(f: float) -> str:
    # 10.0 -> "10", 12.5 -> "12p5": digits, letters and underscores only.
    return f"{f:.6f}".rstrip("0").rstrip(".").replace(".", "p")


def _as_real_array(values: Any, name: str) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers; got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)
