"""Kernels area: issue 2's performance targets, on one core.

==========================  =========================================  =====================
subject                     reference                                  target (rate ratio)
==========================  =========================================  =====================
``frame_stats``             ``np.sum`` over the same frames            >= 0.5
``frame_stats``             NumPy vectorised, pure Python              reported
rfft + spectral features    ``np.fft.rfft`` of the same frames         >= 0.8
rfft + spectral features    NumPy (bands, velocity, Hilbert envelope)  reported
z-score, EWMA chart, CUSUM  NumPy vectorised equivalent                >= 10
z-score, EWMA chart, CUSUM  pure Python                                reported
==========================  =========================================  =====================

Every reference is checked against its subject on the benchmark's own data before it is timed,
so a ratio always compares two ways of computing the same numbers. Pure Python runs on a small
subset; rates are per sample, so they compare directly. The chart kernels use the Welford
baseline (``alpha = 0``) here because its running mean and variance vectorise in NumPy
(cumulative sums); the EWMA baseline's time-varying weight does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.harness import Bench, Case, Target, agree

__all__ = ["run"]

F64 = NDArray[np.float64]
ChartKernel = Callable[[F64, NDArray[np.bool_], F64], F64]
Ref = Callable[[F64], F64]
SAMPLE_RATE = 25_600.0  # Hz, a common vibration DAQ rate
FRAME_LEN = 4096
MIN_SAMPLES = 100
#: The spectral features measured: what a bearing monitor would configure.
SPECTRAL: dict[str, Any] = {
    "bands": ((10.0, 1000.0), (1000.0, 3000.0), (3000.0, 6000.0), (6000.0, 12800.0)),
    "velocity_band": (10.0, 1000.0),
    "envelope_band": (2000.0, 5000.0),
    # BPFO, BPFI, BSF, FTF of a 6205 bearing on a 24.7 Hz shaft
    "defect_hz": (88.5, 133.8, 116.4, 9.8),
    "tolerance": 0.02,
}


def run(bench: Bench) -> None:
    """Measure every kernel figure of the area."""
    rng = np.random.default_rng(20240502)
    frames = _vibration_frames(rng, bench.size(32, 256))
    _frame_stats(bench, frames)
    _spectral(bench, frames)
    stream = 5.0 + rng.standard_normal(bench.size(200_000, 2_000_000))
    _charts(bench, stream)


def _vibration_frames(rng: np.random.Generator, n_frames: int) -> F64:
    """Bearing-like frames: shaft harmonics, an amplitude-modulated resonance, noise."""
    t = np.arange(FRAME_LEN) / SAMPLE_RATE
    shaft = 2.0 * np.pi * 24.7 * t[None, :]
    phase = rng.uniform(0.0, 2.0 * np.pi, (n_frames, 1))
    # An outer-race defect: a 3.1 kHz resonance amplitude-modulated at BPFO.
    resonance = np.sin(2.0 * np.pi * 3100.0 * t) * (1.0 + 0.5 * np.cos(2.0 * np.pi * 88.5 * t))
    frames = (
        0.3 * np.sin(shaft + phase)
        + 0.1 * np.sin(2.0 * shaft + phase)
        + 0.2 * resonance[None, :]
        + 0.05 * rng.standard_normal((n_frames, FRAME_LEN))
    )
    return np.ascontiguousarray(frames)


def _frame_stats(bench: Bench, frames: F64) -> None:
    from shopfloor.scoring.kernels.frame import frame_stats

    small = np.ascontiguousarray(frames[:1])
    got = bench.first_call("frame_stats", lambda: frame_stats(frames))[0]
    agree("frame_stats", "numpy vectorised", numpy_frame_stats(frames), got, rtol=1e-9)
    agree("frame_stats", "pure python", python_frame_stats(small), got[:1], rtol=1e-9)
    bench.compare(
        Case("frame_stats", lambda: frame_stats(frames), frames.size,
             note=f"{frames.shape[0]} frames of {FRAME_LEN} samples, 7 statistics"),
        [
            Case("np.sum", lambda: np.sum(frames), frames.size),
            Case("numpy vectorised", lambda: numpy_frame_stats(frames), frames.size,
                 note="NumPy reference does not skip NaN (the kernel does)"),
            Case("pure python", lambda: python_frame_stats(small), small.size,
                 note="pure Python on 1 frame"),
        ],
        [Target(0.5, "kernel rate >= 50% of np.sum's")],
    )


def _spectral(bench: Bench, frames: F64) -> None:
    from shopfloor.scoring.kernels.spectrum import spectral_features, spectral_plan

    plan = spectral_plan(FRAME_LEN, SAMPLE_RATE, accel_unit="g", **SPECTRAL)

    def features() -> F64:
        return spectral_features(np.fft.rfft(frames, axis=1), plan)

    got = bench.first_call("rfft + spectral features", features)
    agree("spectral_features", "numpy spectral", numpy_spectral(frames, **SPECTRAL), got,
          rtol=1e-7, atol=1e-12)
    bench.compare(
        Case("rfft + spectral features", features, frames.size,
             note=f"{plan.n_features} features: 4 bands, velocity rms, envelope at 4 defects"),
        [
            Case("np.fft.rfft", lambda: np.fft.rfft(frames, axis=1), frames.size),
            Case("numpy spectral", lambda: numpy_spectral(frames, **SPECTRAL), frames.size,
                 note="NumPy reference demodulates with two more FFTs (Hilbert)"),
        ],
        [Target(0.8, "kernel rate >= 80% of np.fft.rfft's")],
    )
    try:
        from shopfloor.scoring.features import FrameFeatures
    except ImportError as exc:
        bench.skip("FrameFeatures", f"shopfloor.scoring.features not importable: {exc}")
        return
    _frame_features(bench, frames, FrameFeatures)


def _frame_features(bench: Bench, frames: F64, frame_features: Any) -> None:
    from shopfloor.scoring.features import BEARING_6205_2RS
    from shopfloor.scoring.kernels.frame import frame_stats
    from shopfloor.scoring.kernels.spectrum import spectral_features, spectral_plan

    shaft_hz = 24.7
    ff = frame_features(
        SAMPLE_RATE, bands=SPECTRAL["bands"], velocity_band=SPECTRAL["velocity_band"],
        shaft_hz=shaft_hz, defect_orders=BEARING_6205_2RS, envelope_band=SPECTRAL["envelope_band"],
    )
    plan = spectral_plan(
        FRAME_LEN, SAMPLE_RATE, bands=SPECTRAL["bands"], velocity_band=SPECTRAL["velocity_band"],
        envelope_band=SPECTRAL["envelope_band"], tolerance=SPECTRAL["tolerance"],
        defect_hz=[shaft_hz * order for order in BEARING_6205_2RS.values()],
    )

    def by_hand() -> F64:
        return np.hstack([frame_stats(frames)[0],
                          spectral_features(np.fft.rfft(frames, axis=1), plan)])

    got = bench.first_call("FrameFeatures", lambda: ff.compute(frames)).values
    agree("FrameFeatures", "frame_stats + rfft + spectral", got, by_hand(), rtol=1e-9,
          atol=1e-12)
    bench.compare(
        Case("FrameFeatures", lambda: ff.compute(frames), frames.size,
             note=f"7 statistics + {plan.n_features} spectral features (6205 bearing)"),
        [
            Case("np.fft.rfft", lambda: np.fft.rfft(frames, axis=1), frames.size),
            Case("frame_stats + rfft + spectral", by_hand, frames.size,
                 note="the kernels called directly on the whole batch"),
        ],
    )


def _charts(bench: Bench, stream: F64) -> None:
    from shopfloor.scoring.kernels import stats

    learn = np.ones(stream.size, dtype=np.bool_)
    small = stream[:20_000].copy()
    lam, k = 0.2, 0.5
    kernels: dict[str, tuple[ChartKernel, Callable[[int], F64], Ref, Ref]] = {
        "welford_z": (
            lambda x, m, st: stats.welford_z(x, m, st, min_samples=MIN_SAMPLES)[0],
            stats.new_welford_state,
            lambda x: numpy_welford_z(x, MIN_SAMPLES),
            lambda x: python_charts(x, MIN_SAMPLES, "z", lam, k),
        ),
        "ewma_chart": (
            lambda x, m, st: stats.ewma_chart(
                x, m, st, lam=lam, alpha=0.0, min_samples=MIN_SAMPLES)[0],
            stats.new_ewma_chart_state,
            lambda x: numpy_ewma_chart(x, MIN_SAMPLES, lam),
            lambda x: python_charts(x, MIN_SAMPLES, "ewma", lam, k),
        ),
        "cusum": (
            lambda x, m, st: stats.cusum(x, m, st, k=k, alpha=0.0, min_samples=MIN_SAMPLES)[0],
            stats.new_cusum_state,
            lambda x: numpy_cusum(x, MIN_SAMPLES, k),
            lambda x: python_charts(x, MIN_SAMPLES, "cusum", lam, k),
        ),
    }
    for name, (kern, new_state, numpy_ref, python_ref) in kernels.items():
        got = bench.first_call(f"{name} (d=1)", partial(kern, stream, learn, new_state(1)))
        # Cumulative sums lose a few digits against Welford's update over 1e6 samples.
        agree(name, "numpy vectorised", numpy_ref(stream), got, rtol=1e-7, atol=1e-7)
        agree(name, "pure python", python_ref(small), got[: small.size], rtol=1e-9, atol=1e-12)
        state = new_state(1)  # timed calls go on from the same state, as a live chart does

        bench.compare(
            Case(f"{name} (d=1)", partial(kern, stream, learn, state), stream.size,
                 note="Welford baseline, every sample learned"),
            [
                Case("numpy vectorised", partial(numpy_ref, stream), stream.size),
                Case("pure python", partial(python_ref, small), small.size,
                     note=f"pure Python on {small.size} samples"),
            ],
            [Target(10.0, "kernel rate >= 10x NumPy vectorised")],
        )


# ---------------------------------------------------------------- references


def numpy_frame_stats(frames: F64) -> F64:
    """The seven statistics of :mod:`shopfloor.scoring.kernels.frame`, NumPy-vectorised (no
    NaN skip)."""
    mean = frames.mean(axis=1)
    dev = frames - mean[:, None]
    dev2 = dev * dev
    m2 = dev2.mean(axis=1)
    rms = np.sqrt(m2)
    peak = np.abs(dev).max(axis=1)
    return np.column_stack([
        mean, rms, peak, frames.max(axis=1) - frames.min(axis=1), peak / rms,
        (dev2 * dev2).mean(axis=1) / (m2 * m2), (dev2 * dev).mean(axis=1) / (m2 * rms),
    ])


def python_frame_stats(frames: F64) -> F64:
    """The same statistics in pure Python, frame by frame."""
    out = []
    for row in frames.tolist():
        n = len(row)
        mean = sum(row) / n
        s2 = s3 = s4 = peak = 0.0
        for v in row:
            d = v - mean
            d2 = d * d
            s2 += d2
            s3 += d2 * d
            s4 += d2 * d2
            peak = max(peak, abs(d))
        m2 = s2 / n
        rms = math.sqrt(m2)
        out.append([mean, rms, peak, max(row) - min(row), peak / rms,
                    s4 / n / (m2 * m2), s3 / n / (m2 * rms)])
    return np.array(out)


def numpy_spectral(frames: F64, **spec: Any) -> F64:
    """Band energies, velocity rms and envelope depth the textbook NumPy way.

    Built from :mod:`shopfloor.scoring.kernels.spectrum`'s documented definitions (bins with
    ``lo <= f_k < hi``, one-sided power), not from its plan, so that it checks the kernel.
    The envelope goes through the analytic signal (inverse FFT of the band, doubled) and the
    spectrum of its squared magnitude: two FFTs more than the kernel's lag products.
    """
    n_len = frames.shape[1]
    freqs = np.fft.rfftfreq(n_len, d=1.0 / SAMPLE_RATE)

    def bins(band: tuple[float, float]) -> tuple[int, int]:
        return int(np.searchsorted(freqs, band[0])), int(np.searchsorted(freqs, band[1]))

    spec_x = np.fft.rfft(frames, axis=1)
    power = spec_x.real**2 + spec_x.imag**2
    weight = np.full(power.shape[1], 2.0 / n_len**2)
    weight[0] = 1.0 / n_len**2
    if n_len % 2 == 0:
        weight[-1] = 1.0 / n_len**2
    cols = []
    for band in spec["bands"]:
        k0, k1 = bins(band)
        if band[1] >= SAMPLE_RATE / 2:
            k1 = len(freqs)  # a band reaching Nyquist holds the Nyquist bin
        cols.append((power[:, k0:k1] * weight[k0:k1]).sum(axis=1))
    k0, k1 = bins(spec["velocity_band"])
    k1 = min(k1, (n_len + 1) // 2)
    # Hann window applied along frequency, (-1/4, 1/2, -1/4), its power 3/8 divided out.
    hann = 0.5 * spec_x[:, k0:k1] - 0.25 * (spec_x[:, k0 - 1 : k1 - 1] + spec_x[:, k0 + 1 : k1 + 1])
    to_mm_s = 9.80665e3 / (2.0 * np.pi * freqs[k0:k1])  # g to mm/s, integrated
    velocity = (hann.real**2 + hann.imag**2) * (2.0 / n_len**2 / 0.375) * to_mm_s**2
    cols.append(np.sqrt(velocity.sum(axis=1)))
    k0, k1 = bins(spec["envelope_band"])
    k1 = min(k1, (n_len + 1) // 2)  # the analytic signal has no Nyquist bin
    analytic = np.zeros((frames.shape[0], n_len), dtype=np.complex128)
    analytic[:, k0:k1] = 2.0 * spec_x[:, k0:k1]
    z = np.fft.ifft(analytic, axis=1)
    env = np.fft.rfft(z.real**2 + z.imag**2, axis=1)
    mean_power = env[:, 0].real.copy()
    env[:, 0] = 0.0  # the mean is left out, which Hann-windows the mean-removed envelope
    df, tol = SAMPLE_RATE / n_len, spec["tolerance"]
    for f in spec["defect_hz"]:
        lo = max(1, math.floor(f * (1.0 - tol) / df))
        hi = max(lo, math.ceil(f * (1.0 + tol) / df))
        hann = 2.0 * env[:, lo : hi + 1] - env[:, lo - 1 : hi] - env[:, lo + 1 : hi + 2]
        cols.append(np.abs(hann).max(axis=1) / mean_power)
    return np.column_stack(cols)


def _welford_prev(x: F64) -> tuple[F64, F64, F64]:
    """Count, mean and sample variance of the values before each one, by cumulative sums."""
    shift = x[0]  # summing x - x[0] keeps the variance's cancellation small
    d = x - shift
    s1 = np.concatenate(([0.0], np.cumsum(d)[:-1]))
    s2 = np.concatenate(([0.0], np.cumsum(d * d)[:-1]))
    count = np.arange(x.size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / count
        var = (s2 - s1 * mean) / (count - 1.0)
    return count, mean + shift, var


def numpy_welford_z(x: F64, min_samples: int) -> F64:
    """z against the Welford baseline before each value, vectorised (every value learned)."""
    count, mean, var = _welford_prev(x)
    with np.errstate(invalid="ignore"):
        sd = np.maximum(np.sqrt(np.maximum(var, 0.0)), 1e-10 * np.abs(mean))
    z = (x - mean) / np.maximum(sd, 1e-100)
    z[count < min_samples] = 0.0
    return z


def _scan(v: F64, decay: float) -> F64:
    """``y_t = decay * y_(t-1) + v_t`` from ``y = 0``, vectorised in blocks.

    Within a block of B values ``y = decay^s * cumsum(v / decay^s)``, with B small enough that
    ``decay^-B`` stays below 1e12; block ends carry over by the same recursion, whose factor
    ``decay^B`` is so small that two or three terms reach double precision.
    """
    n = v.size
    block = max(1, min(n, int(12.0 / -math.log10(decay))))
    n_blocks = -(-n // block)
    padded = np.zeros(n_blocks * block)
    padded[:n] = v
    powers = decay ** np.arange(block, dtype=np.float64)
    local = np.cumsum(padded.reshape(n_blocks, block) / powers, axis=1) * powers
    ends = local[:, -1]
    carry = ends.copy()
    factor, lag = decay**block, 1
    while lag < n_blocks and factor**lag > 1e-18:
        carry[lag:] += factor**lag * ends[:-lag]
        lag += 1
    local[1:] += np.outer(carry[:-1], powers * decay)
    return local.reshape(-1)[:n]


def numpy_ewma_chart(x: F64, min_samples: int, lam: float) -> F64:
    """The EWMA chart of Welford z-scores, with Montgomery's exact sigma, vectorised."""
    z = numpy_welford_z(x, min_samples)[min_samples:]
    keep = 1.0 - lam
    e = lam * _scan(z, keep)
    w = keep ** (2.0 * np.arange(1, z.size + 1))
    return np.concatenate((np.zeros(min_samples), e / np.sqrt(lam / (2.0 - lam) * (1.0 - w))))


def numpy_cusum(x: F64, min_samples: int, k: float) -> F64:
    """The two-sided tabular CUSUM of Welford z-scores, by Lindley's cumulative-minimum form."""
    z = numpy_welford_z(x, min_samples)[min_samples:]
    walk_up = np.cumsum(z - k)
    walk_down = np.cumsum(-z - k)
    up = walk_up - np.minimum(np.minimum.accumulate(walk_up), 0.0)
    down = walk_down - np.minimum(np.minimum.accumulate(walk_down), 0.0)
    return np.concatenate((np.zeros(min_samples), np.where(up >= down, up, -down)))


def python_charts(x: F64, min_samples: int, chart: str, lam: float, k: float) -> F64:
    """z-score, EWMA chart or CUSUM of one signal in pure Python (Welford baseline)."""
    out = []
    count = mean = m2 = 0.0
    a = b = 0.0  # S+ and S- of the CUSUM, or E and (1 - lam)^(2t) of the EWMA chart
    b = 1.0 if chart == "ewma" else 0.0
    for v in x.tolist():
        if count >= min_samples:
            var = m2 / (count - 1.0)
            sd = max(math.sqrt(max(var, 0.0)), 1e-10 * abs(mean), 1e-100)
            z = (v - mean) / sd
            if chart == "z":
                out.append(z)
            elif chart == "ewma":
                a = lam * z + (1.0 - lam) * a
                b *= (1.0 - lam) * (1.0 - lam)
                out.append(a / math.sqrt(lam / (2.0 - lam) * (1.0 - b)))
            else:
                a = max(0.0, a + z - k)
                b = max(0.0, b - z - k)
                out.append(a if a >= b else -b)
        else:
            out.append(0.0)
        count += 1.0
        diff = v - mean
        mean += diff / count
        m2 += diff * (v - mean)
    return np.array(out)
