"""The spectral kernels against plain-NumPy references built the textbook way.

Band energies and velocity come from the one-sided power spectrum with masks over
``np.fft.rfftfreq``; the envelope reference builds the analytic signal of the band-passed frame
(cross-checked against ``scipy.signal.hilbert``), squares its magnitude, removes the mean,
applies a periodic Hann window, takes a full FFT and searches the tolerance window. Envelope
amplitudes are also compared with ``atol=1e-9``: they are dimensionless ratios of order 0.01-1,
and near zero no algorithm has relative precision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.signal  # type: ignore[import-untyped]  # tests only; no stubs in the venv
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.scoring.kernels.spectrum import (
    band_energies,
    envelope_amplitudes,
    order_velocity_rms,
    spectral_features,
    spectral_plan,
    velocity_rms,
)

RTOL = 1e-9
G = 9.80665
Band = tuple[float, float]


def power(frames: NDArray[np.float64], fs: float) -> tuple[NDArray[np.float64], NDArray[Any]]:
    n_len = frames.shape[1]
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / n_len**2
    p[:, 1:] *= 2.0
    if n_len % 2 == 0:
        p[:, -1] /= 2.0
    return p, np.fft.rfftfreq(n_len, 1.0 / fs)


def ref_bands(frames: NDArray[np.float64], fs: float, bands: list[Band]) -> NDArray[np.float64]:
    # [lo, hi), except that a band reaching fs/2 keeps the Nyquist bin.
    p, f = power(frames, fs)
    masks = [(f >= lo) & ((f < hi) | (hi >= fs / 2)) for lo, hi in bands]
    return np.stack([p[:, m].sum(axis=1) for m in masks], axis=1)


def ref_velocity(
    frames: NDArray[np.float64], fs: float, band: Band, unit: float
) -> NDArray[np.float64]:
    # Mean removed, periodic Hann window in time, power divided by its mean square 3/8;
    # Nyquist left out.
    n_len = frames.shape[1]
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_len) / n_len)
    p, f = power((frames - frames.mean(axis=1, keepdims=True)) * hann, fs)
    m = (f >= band[0]) & (f < band[1]) & (2 * np.arange(len(f)) < n_len)
    v2: NDArray[np.float64] = (p[:, m] / (2 * np.pi * f[m]) ** 2).sum(axis=1) / 0.375
    return np.sqrt(v2) * unit * 1000.0


def ref_order(
    frames: NDArray[np.float64], fs: float, f: float, tol: float, unit: float
) -> NDArray[np.float64]:
    # Hann-windowed power (mean removed) summed from one bin below the tolerance window around
    # f to one bin above it, bins strictly between DC and Nyquist, converted at f itself.
    n_len = frames.shape[1]
    df = fs / n_len
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_len) / n_len)
    p, _ = power((frames - frames.mean(axis=1, keepdims=True)) * hann, fs)
    k = np.arange(p.shape[1])
    lo = math.floor(f * (1 - tol) / df) - 1
    hi = math.ceil(f * (1 + tol) / df) + 1
    m = (k >= max(lo, 1)) & (k <= hi) & (2 * k < n_len)
    a2: NDArray[np.float64] = p[:, m].sum(axis=1) / 0.375
    return np.sqrt(a2) * unit * 1000.0 / (2 * np.pi * f)


def analytic_band(frame: NDArray[np.float64], fs: float, band: Band) -> NDArray[np.complex128]:
    n_len = len(frame)
    x = np.fft.fft(frame)
    k = np.arange(n_len)
    f = np.fft.fftfreq(n_len, 1.0 / fs)  # the kernels' bin frequencies, rounding included
    inside = (f >= band[0]) & (f < band[1]) & (k > 0) & (2 * k < n_len)
    return np.fft.ifft(np.where(inside, 2.0 * x, 0.0))


def ref_envelope(
    frames: NDArray[np.float64], fs: float, band: Band, defect_hz: list[float], tol: float
) -> NDArray[np.float64]:
    n_len = frames.shape[1]
    df = fs / n_len
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_len) / n_len)
    out = np.full((len(frames), len(defect_hz)), np.nan)
    for i, frame in enumerate(frames):
        e = np.abs(analytic_band(frame, fs, band)) ** 2
        if e.mean() == 0.0:
            continue
        spectrum = np.abs(np.fft.fft(hann * (e - e.mean()))) * 4.0 / (n_len * e.mean())
        for d, f in enumerate(defect_hz):
            lo = max(1, math.floor(f * (1 - tol) / df))
            hi = max(lo, math.ceil(f * (1 + tol) / df))
            out[i, d] = spectrum[lo : hi + 1].max() if lo < n_len else 0.0
    return out


def rfft(frames: NDArray[np.float64]) -> NDArray[np.complex128]:
    return np.fft.rfft(frames, axis=1)


@pytest.mark.parametrize("n_len", [4096, 1001, 2, 3])
def test_band_energies_add_up_to_the_ac_variance(n_len: int) -> None:
    fs = 1000.0
    frames = np.random.default_rng(n_len).standard_normal((5, n_len)) + 3.0
    tiling = [(1e-9, 50.0), (50.0, 123.4), (123.4, fs / 2)]  # every bin but DC
    energies = band_energies(rfft(frames), n_len, fs, tiling)
    np.testing.assert_allclose(energies.sum(axis=1), frames.var(axis=1), rtol=RTOL)
    np.testing.assert_allclose(energies, ref_bands(frames, fs, tiling), rtol=RTOL, atol=1e-15)


@pytest.mark.parametrize(("n_len", "fs"), [(4096, 25600.0), (1000, 4000.0), (777, 51200.0)])
def test_band_energies_match_reference(n_len: int, fs: float) -> None:
    frames = np.random.default_rng(7).standard_normal((6, n_len)) * 0.3
    bands = [(10.0, 20.0), (20.0, 500.0), (137.5, 1000.0), (fs / 4, fs / 2), (fs / 3, fs)]
    got = band_energies(rfft(frames), n_len, fs, bands)
    np.testing.assert_allclose(got, ref_bands(frames, fs, bands), rtol=RTOL, atol=0.0)


def test_band_edges_follow_rfftfreq() -> None:
    # A bin exactly on an edge belongs to the band that starts there: [lo, hi).
    frames = np.random.default_rng(8).standard_normal((2, 64))
    got = band_energies(rfft(frames), 64, 64.0, [(4.0, 8.0), (8.0, 9.0)])
    p, _ = power(frames, 64.0)
    np.testing.assert_allclose(got, np.stack([p[:, 4:8].sum(1), p[:, 8]], axis=1), rtol=RTOL)


@pytest.mark.parametrize(("unit", "scale"), [("g", G), ("m/s2", 1.0)])
def test_velocity_of_a_sine_is_textbook(unit: str, scale: float) -> None:
    fs, n_len, amplitude, f = 25600.0, 4096, 0.7, 100.0  # 100 Hz is bin 16 of 6.25 Hz
    t = np.arange(n_len) / fs
    frame = amplitude * np.sin(2 * np.pi * f * t)[None, :]
    want = amplitude * scale / (2 * np.pi * f) / math.sqrt(2) * 1000.0
    got = velocity_rms(rfft(frame), n_len, fs, (10.0, 1000.0), unit)
    # The Hann window spreads the line over bins 15-17 (power 1/6, 2/3, 1/6), read with
    # their own 1/f² weights: exactly this factor, about 1 + (df/f)² / 2.
    df = fs / n_len
    bias = math.sqrt(2 / 3 + (f**2 / (f - df) ** 2 + f**2 / (f + df) ** 2) / 6)
    np.testing.assert_allclose(got, [want * bias], rtol=RTOL)
    assert abs(bias - 1) < 0.003


@pytest.mark.parametrize("f", [103.0, 217.3, 96.875])
def test_velocity_of_an_off_bin_sine_is_close(f: float) -> None:
    # Between bins the main lobe spreads over 4 bins with different 1/f² weights; the window
    # keeps the sidelobes (which 1/f² would magnify at 10-20 Hz) out of it.
    fs, n_len = 25600.0, 4096
    frame = np.sin(2 * np.pi * f * np.arange(n_len) / fs)[None, :]
    want = G / (2 * np.pi * f) / math.sqrt(2) * 1000.0
    np.testing.assert_allclose(velocity_rms(rfft(frame), n_len, fs), [want], rtol=0.004)


@pytest.mark.parametrize(
    ("n_len", "band"), [(4096, (10.0, 1000.0)), (500, (1.0, 500.0)), (99, (5.0, 500.0))]
)
def test_velocity_matches_reference(n_len: int, band: Band) -> None:
    fs = 1000.0
    frames = np.random.default_rng(9).standard_normal((5, n_len)) + 1.0
    got = velocity_rms(rfft(frames), n_len, fs, band, "g")
    np.testing.assert_allclose(got, ref_velocity(frames, fs, band, G), rtol=RTOL)


def test_velocity_ignores_a_dc_offset() -> None:
    # 40 Hz bins: the band starts at bin 1, whose Hann neighbour below is DC.
    fs, n_len = 25600.0, 640
    frames = np.random.default_rng(13).standard_normal((3, n_len))
    clean = velocity_rms(rfft(frames), n_len, fs)
    np.testing.assert_allclose(velocity_rms(rfft(frames + 1.0), n_len, fs), clean, rtol=1e-9)


@pytest.mark.parametrize(
    ("n_len", "fs", "f", "tol"),
    [(2048, 12000.0, 29.95, 0.02), (2048, 12000.0, 59.9, 0.0), (1001, 5000.0, 27.0, 0.05),
     (64, 1000.0, 15.625, 0.0), (64, 1000.0, 480.0, 0.02), (5, 100.0, 40.0, 0.02)],
)
def test_order_velocity_matches_reference(n_len: int, fs: float, f: float, tol: float) -> None:
    frames = np.random.default_rng(14).standard_normal((5, n_len)) + 2.0
    got = order_velocity_rms(rfft(frames), n_len, fs, [f], tol, "m/s2")
    np.testing.assert_allclose(got[:, 0], ref_order(frames, fs, f, tol, 1.0), rtol=RTOL)


@pytest.mark.parametrize("f", [29.95, 29.296875, 32.2, 59.9])  # off-bin, on bin 5, others
def test_order_velocity_of_a_tone_has_no_scallop(f: float) -> None:
    # The summed bins hold the Hann main lobe wherever the tone falls: the reading is the
    # tone's velocity rms within 0.1 %, where a peak reading could lose 15 % (1.42 dB).
    fs, n_len, amplitude = 12000.0, 2048, 0.05
    t = np.arange(n_len) / fs
    frame = (amplitude * np.sin(2 * np.pi * f * t + 0.3))[None, :]
    want = amplitude * G / (2 * np.pi * f) / math.sqrt(2) * 1000.0
    got = order_velocity_rms(rfft(frame), n_len, fs, [f, 2 * f])
    np.testing.assert_allclose(got[0, 0], want, rtol=1e-3)
    assert got[0, 1] < 0.01 * want  # nothing of it reaches the 2x bins


def test_analytic_reference_equals_scipy_hilbert() -> None:
    fs, n_len, band = 25600.0, 2048, (5000.0, 10000.0)
    frame = np.random.default_rng(10).standard_normal(n_len)
    x = np.fft.rfft(frame)
    f = np.fft.rfftfreq(n_len, 1 / fs)
    passed = np.fft.irfft(np.where((f >= band[0]) & (f < band[1]), x, 0.0), n_len)
    np.testing.assert_allclose(
        analytic_band(frame, fs, band), scipy.signal.hilbert(passed), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(
    ("n_len", "fs", "band"),
    [
        (4096, 25600.0, (5000.0, 10000.0)),
        (1001, 20000.0, (2000.0, 9999.0)),
        (600, 1000.0, (1.0, 500.0)),
    ],
)
def test_envelope_matches_reference(n_len: int, fs: float, band: Band) -> None:
    rng = np.random.default_rng(11)
    frames = rng.standard_normal((4, n_len))
    defect_hz = [89.7, 135.4, 10.0, 117.8]
    got = envelope_amplitudes(rfft(frames), n_len, fs, band, defect_hz, 0.02)
    want = ref_envelope(frames, fs, band, defect_hz, 0.02)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-9)


def am_frame(n_len: int, fs: float, fc: float, fm: float, depth: float) -> NDArray[np.float64]:
    t = np.arange(n_len) / fs
    return ((1 + depth * np.cos(2 * np.pi * fm * t)) * np.cos(2 * np.pi * fc * t))[None, :]


def test_envelope_reads_the_modulation_depth() -> None:
    # (1 + mu cos wm t) cos wc t has squared envelope 1 + mu²/2 + 2 mu cos wm t + ...: its
    # depth at wm is 2 mu / (1 + mu² / 2). Carrier and modulation sit on bins, so it is exact.
    fs, n_len, mu = 25600.0, 4096, 0.5
    frame = am_frame(n_len, fs, 7000.0, 87.5, mu)  # bins 1120 and 14
    got = envelope_amplitudes(rfft(frame), n_len, fs, (5000.0, 10000.0), [87.5], 0.02)
    np.testing.assert_allclose(got, [[2 * mu / (1 + mu**2 / 2)]], rtol=RTOL)


def test_envelope_between_bins_loses_at_most_the_hann_scallop() -> None:
    fs, n_len, mu = 25600.0, 4096, 0.5
    true_depth = 2 * mu / (1 + mu**2 / 2)
    for fm in (87.5 + 3.125, 90.0, 91.0):  # half a bin off, and two other offsets
        got = envelope_amplitudes(
            rfft(am_frame(n_len, fs, 7000.0, fm, mu)), n_len, fs, (5000.0, 10000.0), [fm], 0.02
        )
        assert 10 ** (-1.43 / 20) * true_depth <= got[0, 0] <= true_depth * 1.01


def test_tolerance_finds_a_slipping_defect() -> None:
    fs, n_len = 25600.0, 16384  # 1.5625 Hz bins
    frame = am_frame(n_len, fs, 7000.0, 137.5, 0.5)  # nominal 134 Hz, 2.6 % slip
    spectrum = rfft(frame)
    found = envelope_amplitudes(spectrum, n_len, fs, (5000.0, 10000.0), [134.0], 0.03)
    # Without tolerance the search covers the two bins around 134 Hz; the line is two bins
    # beyond them, outside the Hann main lobe.
    missed = envelope_amplitudes(spectrum, n_len, fs, (5000.0, 10000.0), [134.0], 0.0)
    assert found[0, 0] > 0.8
    assert missed[0, 0] < 0.2


def test_silent_frames_and_empty_batches() -> None:
    plan = spectral_plan(
        256, 1000.0, bands=[(10.0, 100.0)], velocity_band=(10.0, 400.0),
        envelope_band=(200.0, 450.0), defect_hz=[30.0],
    )
    got = spectral_features(rfft(np.full((2, 256), 5.0)), plan)
    np.testing.assert_array_equal(got[:, :2], np.zeros((2, 2)))
    assert np.isnan(got[:, 2]).all()  # no energy in the band: the depth is undefined
    assert spectral_features(np.zeros((0, 129), np.complex128), plan).shape == (0, 3)


@pytest.mark.parametrize("n_len", [1, 2, 3, 4])
def test_tiny_frames_match_reference(n_len: int) -> None:
    fs = 100.0
    frames = np.random.default_rng(n_len).standard_normal((3, n_len))
    plan = spectral_plan(
        n_len, fs, bands=[(1.0, 30.0), (30.0, 50.0)], velocity_band=(1.0, 50.0),
        envelope_band=(1.0, 50.0), defect_hz=[20.0],
    )
    got = spectral_features(rfft(frames), plan)
    np.testing.assert_allclose(got[:, :2], ref_bands(frames, fs, [(1.0, 30.0), (30.0, 50.0)]),
                               rtol=RTOL, atol=1e-15)
    np.testing.assert_allclose(got[:, 2], ref_velocity(frames, fs, (1.0, 50.0), G), rtol=RTOL)
    want_env = ref_envelope(frames, fs, (1.0, 50.0), [20.0], 0.02)
    np.testing.assert_allclose(got[:, 3:], want_env, rtol=RTOL, atol=1e-9)


def test_combined_equals_the_parts() -> None:
    fs, n_len = 12800.0, 2048
    x = rfft(np.random.default_rng(12).standard_normal((7, n_len)))
    bands = [(10.0, 1000.0), (1000.0, 6400.0)]
    plan = spectral_plan(n_len, fs, bands=bands, velocity_band=(10.0, 1000.0),
                         envelope_band=(2500.0, 5000.0), defect_hz=[50.0, 120.0],
                         order_hz=[25.0, 50.0])
    got = spectral_features(x, plan)
    np.testing.assert_array_equal(got[:, :2], band_energies(x, n_len, fs, bands))
    np.testing.assert_array_equal(got[:, 2], velocity_rms(x, n_len, fs))
    np.testing.assert_array_equal(
        got[:, 3:5], envelope_amplitudes(x, n_len, fs, (2500.0, 5000.0), [50.0, 120.0])
    )
    np.testing.assert_array_equal(got[:, 5:], order_velocity_rms(x, n_len, fs, [25.0, 50.0]))
    one = spectral_features(x[3], plan)
    np.testing.assert_array_equal(one, got[3:4])


def test_rejects_bad_input() -> None:
    plan = spectral_plan(64, 100.0, bands=[(1.0, 10.0)])
    with pytest.raises(TypeError, match="complex128"):
        spectral_features(np.zeros((2, 33)), plan)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"np.fft.rfft"):
        spectral_features(np.zeros((2, 64), np.complex128), plan)
    bad_plans = [
        ({"bands": [(0.0, 10.0)]}, "bands"),
        ({"bands": [(10.0, 5.0)]}, "bands"),
        ({"bands": [(1.0,)]}, "bands"),
        ({"velocity_band": (1.0, math.inf)}, "velocity_band"),
        ({"accel_unit": "mm/s2"}, "accel_unit"),
        ({"defect_hz": [10.0]}, "envelope_band"),
        ({"defect_hz": [-1.0], "envelope_band": (1.0, 40.0)}, "defect_hz"),
        ({"tolerance": 0.5}, "tolerance"),
        ({"order_hz": [0.0]}, "order_hz"),
    ]
    for kwargs, name in bad_plans:
        with pytest.raises(ValueError, match=name):
            spectral_plan(64, 100.0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="frame_len"):
        spectral_plan(0, 100.0)
    with pytest.raises(ValueError, match="sample_rate"):
        spectral_plan(64, -1.0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_len=st.integers(2, 300),
    fs=st.sampled_from([100.0, 1000.0, 44100.0]),
    edges=st.lists(st.floats(0.001, 0.6), min_size=2, max_size=2, unique=True),
    defects=st.lists(st.floats(0.0005, 0.3), min_size=1, max_size=3),
    tol=st.sampled_from([0.0, 0.01, 0.05]),
    offset=st.sampled_from([0.0, 1e4]),
)
def test_property_matches_reference(
    seed: int, n_len: int, fs: float, edges: list[float], defects: list[float], tol: float,
    offset: float,
) -> None:
    frames = np.random.default_rng(seed).standard_normal((2, n_len)) + offset
    lo, hi = sorted(e * fs for e in edges)
    defect_hz = [d * fs for d in defects]
    plan = spectral_plan(n_len, fs, bands=[(lo, hi)], velocity_band=(lo, hi),
                         envelope_band=(lo, hi), defect_hz=defect_hz, tolerance=tol,
                         order_hz=defect_hz)
    got = spectral_features(rfft(frames), plan)
    n_env = len(defect_hz)
    for o, f in enumerate(defect_hz):
        want_o = ref_order(frames, fs, f, tol, G)
        np.testing.assert_allclose(got[:, 2 + n_env + o], want_o, rtol=RTOL,
                                   atol=1e-9 * max(want_o.max(), 1e-300))
    scale = frames.var(axis=1).max()
    np.testing.assert_allclose(got[:, 0], ref_bands(frames, fs, [(lo, hi)])[:, 0],
                               rtol=RTOL, atol=1e-12 * scale)
    want_v = ref_velocity(frames, fs, (lo, hi), G)
    np.testing.assert_allclose(got[:, 1], want_v, rtol=RTOL, atol=1e-9 * want_v.max())
    want_env = ref_envelope(frames, fs, (lo, hi), defect_hz, tol)
    np.testing.assert_allclose(got[:, 2 : 2 + n_env], want_env, rtol=RTOL, atol=1e-9)
