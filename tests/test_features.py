"""The feature stage: names, dropouts, rejection, validation, and physical sanity.

The kernels behind it are checked against references in test_kernels_frame.py and
test_kernels_spectrum.py; here FrameFeatures is checked against those kernels, against physics
(a sine's velocity, a faulty bearing's envelope) and against its own contract.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.scoring.features import (
    BEARING_6205_2RS,
    FrameFeatures,
    ScalarFeatures,
    default_bands,
    default_envelope_band,
)
from shopfloor.scoring.kernels.frame import FRAME_STAT_NAMES, frame_stats
from shopfloor.scoring.kernels.spectrum import spectral_features, spectral_plan

FS = 25600.0
SHAFT_HZ = 25.0
G = 9.80665


def bearing_frames(
    rng: np.random.Generator, n: int, n_len: int, *, fault: bool
) -> NDArray[np.float64]:
    """Shaft harmonics and noise; with a fault, 7 kHz ringing struck at BPFO with 1 % slip."""
    t = np.arange(n_len) / FS
    frames = 0.05 * rng.standard_normal((n, n_len))
    frames += 0.2 * np.sin(2 * np.pi * SHAFT_HZ * t) + 0.1 * np.sin(2 * np.pi * 2 * SHAFT_HZ * t)
    if fault:
        period = 1.0 / (BEARING_6205_2RS["bpfo"] * SHAFT_HZ)
        for frame in frames:
            hit = rng.uniform(0.0, period)
            while hit < t[-1]:
                after = t >= hit
                dt = t[after] - hit
                frame[after] += 0.5 * np.exp(-dt / 1e-3) * np.sin(2 * np.pi * 7000.0 * dt)
                hit += period * rng.normal(1.0, 0.01)
    return frames


def test_scalar_features() -> None:
    features = ScalarFeatures()
    assert features.names == ("value",)
    out = features.compute(np.array([1.0, np.nan, 3.0]))
    assert out.shape == (3, 1)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 0], [1.0, np.nan, 3.0])
    assert features.compute(np.int64(4)).tolist() == [[4.0]]
    with pytest.raises(ValueError, match="1-D"):
        features.compute(np.ones((2, 2)))
    with pytest.raises(TypeError, match="real numbers"):
        features.compute(np.array(["a"]))


def test_default_bands_and_envelope_band() -> None:
    assert default_bands(1000.0) == (
        (10.0, 20.0), (20.0, 50.0), (50.0, 100.0), (100.0, 200.0), (200.0, 500.0)
    )
    assert default_bands(FS)[-1] == (5000.0, 10000.0)
    assert len(default_bands(FS)) == 9
    assert default_bands(30.0) == ()
    assert default_envelope_band(FS) == (5000.0, 10000.0)


def test_names_are_stable_lower_snake() -> None:
    plain = FrameFeatures(FS)
    assert plain.names == (
        *FRAME_STAT_NAMES,
        "band_10_20_hz", "band_20_50_hz", "band_50_100_hz", "band_100_200_hz",
        "band_200_500_hz", "band_500_1000_hz", "band_1000_2000_hz", "band_2000_5000_hz",
        "band_5000_10000_hz",
        "velocity_rms_mm_s",
    )
    bearing = FrameFeatures(
        FS, bands=((12.5, 100.0),), velocity_band=None, stats=("kurtosis", "rms"),
        shaft_hz=SHAFT_HZ, defect_orders={"ftf": 0.39828, "bpfo": 3.5848},
    )
    assert bearing.names == ("kurtosis", "rms", "band_12p5_100_hz", "env_bpfo", "env_ftf")
    # Shaft orders come last, so adding them keeps every earlier column where it was.
    orders = FrameFeatures(
        FS, bands=((12.5, 100.0),), velocity_band=None, stats=("kurtosis", "rms"),
        shaft_hz=SHAFT_HZ, defect_orders={"ftf": 0.39828, "bpfo": 3.5848},
        shaft_orders=(1.0, 2.0, 0.5),
    )
    assert orders.names == (*bearing.names, "shaft_1x_mm_s", "shaft_2x_mm_s", "shaft_0p5x_mm_s")
    alone = FrameFeatures(FS, stats=(), bands=(), velocity_band=None, shaft_hz=30.0,
                          shaft_orders=[1.0])
    assert alone.names == ("shaft_1x_mm_s",)  # no bearing needed for the shaft orders


def test_parameters_are_stored_as_given() -> None:
    kwargs: dict[str, Any] = {
        "sample_rate": 10000.0, "bands": [[10.0, 100.0]], "velocity_band": (10.0, 1000.0),
        "accel_unit": "m/s2", "shaft_hz": 30.0, "defect_orders": dict(BEARING_6205_2RS),
        "envelope_band": (2000.0, 4000.0), "defect_tolerance": 0.01, "max_missing": 0.2,
        "stats": ("rms",),
    }
    features = FrameFeatures(**kwargs)
    for key, value in kwargs.items():
        assert getattr(features, key) == value


def test_clean_frames_match_the_kernels() -> None:
    rng = np.random.default_rng(20)
    frames = rng.standard_normal((70, 2048))  # more than one chunk of spectra
    features = FrameFeatures(
        FS, shaft_hz=SHAFT_HZ, defect_orders=BEARING_6205_2RS, stats=("rms", "mean")
    )
    batch = features.compute(frames)
    stats, _ = frame_stats(frames)
    plan = spectral_plan(
        2048, FS, bands=default_bands(FS), velocity_band=(10.0, 1000.0),
        envelope_band=default_envelope_band(FS),
        defect_hz=[SHAFT_HZ * BEARING_6205_2RS[k] for k in sorted(BEARING_6205_2RS)],
    )
    spectral = spectral_features(np.fft.rfft(frames, axis=1), plan)
    np.testing.assert_array_equal(batch.values[:, :2], stats[:, [1, 0]])
    # The FFT runs per chunk here and over the whole batch there; pocketfft may take other
    # SIMD paths for the two, so the last bits can differ.
    np.testing.assert_allclose(batch.values[:, 2:], spectral, rtol=1e-12)
    assert batch.missing.tolist() == [0] * 70
    assert not batch.rejected.any()


def test_shaft_orders_through_the_stage_with_dropouts() -> None:
    # 1x and 2x tones of known velocity: read at their orders, and a frame with 5 % of its
    # samples lost still reads the same amplitude (the power is rescaled like velocity's).
    fs, n_len, shaft = 12000.0, 4096, 29.95
    t = np.arange(n_len) / fs
    v1, v2 = 2.0, 0.5  # mm/s rms wanted at 1x and 2x
    a1 = v1 * math.sqrt(2) * 2 * np.pi * shaft / (G * 1e3)
    a2 = v2 * math.sqrt(2) * 2 * np.pi * 2 * shaft / (G * 1e3)
    frame = a1 * np.sin(2 * np.pi * shaft * t) + a2 * np.sin(2 * np.pi * 2 * shaft * t + 1.0)
    gappy = frame.copy()
    gappy[np.random.default_rng(25).choice(n_len, size=200, replace=False)] = np.nan
    features = FrameFeatures(fs, shaft_hz=shaft, shaft_orders=(1.0, 2.0), stats=("rms",))
    values = features.compute(np.vstack([frame, gappy])).values
    cols = [features.names.index("shaft_1x_mm_s"), features.names.index("shaft_2x_mm_s")]
    np.testing.assert_allclose(values[0, cols], [v1, v2], rtol=2e-3)
    np.testing.assert_allclose(values[1, cols], [v1, v2], rtol=0.05)


def test_sine_velocity_through_the_stage() -> None:
    t = np.arange(8192) / FS
    batch = FrameFeatures(FS).compute(0.3 * np.sin(2 * np.pi * 100.0 * t))
    velocity = batch.values[0, FrameFeatures(FS).names.index("velocity_rms_mm_s")]
    # Within the Hann window's bias of about (df / f)² / 2 (see the spectrum module).
    np.testing.assert_allclose(velocity, 0.3 * G / (2 * np.pi * 100.0) / math.sqrt(2) * 1e3,
                               rtol=1e-3)


def test_faulty_bearing_shows_in_env_bpfo() -> None:
    rng = np.random.default_rng(21)
    features = FrameFeatures(FS, shaft_hz=SHAFT_HZ, defect_orders=BEARING_6205_2RS)
    col = features.names.index
    healthy = features.compute(bearing_frames(rng, 6, 8192, fault=False)).values
    faulty = features.compute(bearing_frames(rng, 6, 8192, fault=True)).values
    assert faulty[:, col("env_bpfo")].min() > 5 * healthy[:, col("env_bpfo")].max()
    # The other defect frequencies are not multiples of BPFO: their envelope stays low.
    assert faulty[:, col("env_bpfi")].max() < faulty[:, col("env_bpfo")].min() / 2
    assert faulty[:, col("kurtosis")].min() > healthy[:, col("kurtosis")].max()


def test_dropouts_are_filled_and_power_rescaled() -> None:
    rng = np.random.default_rng(22)
    frames = rng.standard_normal((5, 1000)) + 4.0
    for i, k in enumerate([0, 1, 30, 99, 100]):  # up to 10 %: still used
        frames[i, rng.choice(1000, size=k, replace=False)] = [np.nan, np.inf][i % 2]
    tiling = ((1e-6, 100.0), (100.0, 500.0))  # every bin but DC, fs = 1000
    features = FrameFeatures(1000.0, bands=tiling, velocity_band=None, stats=("rms",))
    batch = features.compute(frames)
    assert batch.missing.tolist() == [0, 1, 30, 99, 100]
    assert not batch.rejected.any()
    rms = batch.values[:, 0]
    np.testing.assert_allclose(batch.values[:, 1:].sum(axis=1), rms**2, rtol=1e-9)


def test_too_many_dropouts_reject_the_spectrum_only() -> None:
    frames = np.random.default_rng(23).standard_normal((4, 500))
    frames[0, :51] = np.nan  # 10.2 % > max_missing = 0.1
    frames[1, :50] = np.nan  # exactly 10 %: kept
    frames[2, :] = np.nan
    features = FrameFeatures(1000.0, velocity_band=(10.0, 400.0), stats=("rms", "kurtosis"))
    batch = features.compute(frames)
    assert batch.rejected.tolist() == [True, False, True, False]
    assert batch.missing.tolist() == [51, 50, 500, 0]
    assert np.isnan(batch.values[[0, 2], 2:]).all()
    assert np.isfinite(batch.values[0, :2]).all()
    assert np.isfinite(batch.values[[1, 3]]).all()
    assert np.isnan(batch.values[2]).all()
    strict = FrameFeatures(1000.0, velocity_band=None, max_missing=0.0).compute(frames)
    assert strict.rejected.tolist() == [True, True, True, False]


def test_frame_length_may_change_between_calls() -> None:
    rng = np.random.default_rng(24)
    features = FrameFeatures(FS, shaft_hz=SHAFT_HZ, defect_orders=BEARING_6205_2RS)
    long, short = rng.standard_normal((3, 4096)), rng.standard_normal((2, 1000))
    first = features.compute(long).values
    np.testing.assert_array_equal(
        features.compute(short).values,
        FrameFeatures(FS, shaft_hz=SHAFT_HZ, defect_orders=BEARING_6205_2RS).compute(short).values,
    )
    np.testing.assert_array_equal(features.compute(long).values, first)


def test_shapes_and_input_checks() -> None:
    features = FrameFeatures(1000.0, velocity_band=(10.0, 450.0))
    empty = features.compute(np.empty((0, 256)))
    assert empty.values.shape == (0, len(features.names))
    assert empty.missing.shape == (0,)
    assert empty.rejected.shape == (0,)
    one = features.compute(np.arange(256))  # 1-D ints: one frame
    assert one.values.shape == (1, len(features.names))
    with pytest.raises(ValueError, match="at least 2 samples"):
        features.compute(np.ones((3, 1)))
    with pytest.raises(ValueError, match="frame_len"):
        features.compute(np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="real numbers"):
        features.compute(np.ones((2, 8), dtype=np.complex128))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": math.nan}, "sample_rate"),
        ({"sample_rate": "fast"}, "sample_rate"),
        ({"sample_rate": True}, "sample_rate"),
        ({"bands": ((0.0, 10.0),)}, "bands"),
        ({"bands": ((10.0, 12801.0),)}, "bands"),
        ({"bands": ((10.0,),)}, "bands"),
        ({"bands": "10-20"}, "bands"),
        ({"bands": ((10.0, 20.0), (10.0, 20.0))}, "bands"),
        ({"velocity_band": (10.0, 20000.0)}, "velocity_band"),
        ({"velocity_band": (100.0, 10.0)}, "velocity_band"),
        ({"accel_unit": "mm/s2"}, "accel_unit"),
        ({"shaft_hz": 25.0}, "defect_orders"),
        ({"defect_orders": {"bpfo": 3.5}}, "shaft_hz"),
        ({"shaft_hz": -1.0, "defect_orders": {"bpfo": 3.5}}, "shaft_hz"),
        ({"shaft_hz": 25.0, "defect_orders": {"BPFO": 3.5}}, "defect_orders"),
        ({"shaft_hz": 25.0, "defect_orders": {"bpfo": -3.5}}, "defect_orders"),
        ({"shaft_hz": 25.0, "defect_orders": {"bpfo": "x"}}, "defect_orders"),
        ({"shaft_hz": 25.0, "defect_orders": {"bpfo": 3.5}, "envelope_band": (5000.0, 5050.0)},
         "envelope_band"),
        ({"shaft_hz": 25.0, "defect_orders": {"bpfo": 3.5}, "envelope_band": (5e3, 2e4)},
         "envelope_band"),
        ({"defect_tolerance": 0.5}, "defect_tolerance"),
        ({"max_missing": 1.0}, "max_missing"),
        ({"max_missing": -0.1}, "max_missing"),
        ({"stats": ("rms", "rms")}, "stats"),
        ({"stats": ("loudness",)}, "stats"),
        ({"stats": (), "bands": (), "velocity_band": None}, "no features"),
        ({"shaft_orders": [1.0]}, "shaft_hz"),
        ({"shaft_hz": 25.0, "shaft_orders": [1.0, 1.0]}, "shaft_orders"),
        ({"shaft_hz": 25.0, "shaft_orders": [0.0]}, "shaft_orders"),
        ({"shaft_hz": 25.0, "shaft_orders": "1x"}, "shaft_orders"),
        ({"shaft_hz": 25.0, "shaft_orders": [600.0]}, "shaft_orders"),
    ],
)
def test_invalid_parameters_name_themselves(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FrameFeatures(**{"sample_rate": FS, **kwargs})


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_len=st.integers(2, 400),
    lost=st.floats(0.0, 0.3),
    max_missing=st.sampled_from([0.0, 0.05, 0.1, 0.25]),
)
def test_property_dropouts(seed: int, n_len: int, lost: float, max_missing: float) -> None:
    rng = np.random.default_rng(seed)
    frames = rng.standard_normal((4, n_len)) * 2.0 - 1.0
    mask = rng.random(frames.shape) < lost
    frames[mask] = rng.choice([np.nan, np.inf, -np.inf], size=int(mask.sum()))
    tiling = ((1e-6, 50.0),)  # every bin but DC at fs = 100
    features = FrameFeatures(100.0, bands=tiling, velocity_band=None, stats=("rms",),
                             max_missing=max_missing)
    batch = features.compute(frames)
    finite = np.isfinite(frames).sum(axis=1)
    np.testing.assert_array_equal(batch.missing, n_len - finite)
    np.testing.assert_array_equal(
        batch.rejected, (n_len - finite > max_missing * n_len) | (finite < 2)
    )
    kept = ~batch.rejected
    assert np.isnan(batch.values[~kept, 1]).all()
    np.testing.assert_allclose(
        batch.values[kept, 1], batch.values[kept, 0] ** 2, rtol=1e-9, atol=1e-300
    )
