"""The one-pass frame statistics against a plain-NumPy two-pass reference.

The reference centres the finite samples twice (``x - mean``, then minus the mean of that), so
its central moments are accurate even on a 1e8 offset; the kernel must match it at rtol 1e-9.
Skewness is also compared with ``atol=1e-9``: it is near 0 for symmetric frames, where no
algorithm has relative precision, and it is dimensionless, so 1e-9 is an absolute bound on the
natural scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped]  # tests only; no stubs in the venv
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.scoring.kernels.frame import FRAME_STAT_NAMES, frame_stats

RTOL = 1e-9
SKEW = FRAME_STAT_NAMES.index("skewness")


def reference(frame: NDArray[np.float64]) -> tuple[NDArray[np.float64], int]:
    finite = frame[np.isfinite(frame)]
    skipped = frame.size - finite.size
    if finite.size < 2:
        return np.full(7, np.nan), skipped
    mean = finite.mean()
    centred = finite - mean
    residual = centred.mean()
    centred = centred - residual
    m2, m3, m4 = ((centred**k).mean() for k in (2, 3, 4))
    rms = np.sqrt(m2)
    peak = np.abs(centred).max()
    p2p = finite.max() - finite.min()
    if np.all(finite == finite[0]):
        crest = kurt = skew = np.nan
        rms = peak = 0.0
    else:
        crest, kurt, skew = peak / rms, m4 / m2**2, m3 / m2**1.5
    return np.array([mean + residual, rms, peak, p2p, crest, kurt, skew]), skipped


def reference_batch(frames: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    rows = [reference(f) for f in frames]
    stats = np.array([r[0] for r in rows]).reshape(len(rows), 7)
    return stats, np.array([r[1] for r in rows], dtype=np.int64)


def assert_matches_reference(frames: NDArray[np.float64]) -> None:
    stats, skipped = frame_stats(frames)
    want, want_skipped = reference_batch(np.atleast_2d(frames))
    np.testing.assert_array_equal(skipped, want_skipped)
    cols = [c for c in range(7) if c != SKEW]
    np.testing.assert_allclose(stats[:, cols], want[:, cols], rtol=RTOL, atol=0.0)
    np.testing.assert_allclose(stats[:, SKEW], want[:, SKEW], rtol=RTOL, atol=1e-9)


def test_random_frames_match_reference() -> None:
    rng = np.random.default_rng(1)
    frames = np.concatenate(
        [
            rng.standard_normal((20, 512)),
            rng.exponential(2.0, (20, 512)) - 7.0,  # skewed
            rng.standard_t(3, (20, 512)) * 1e-3,  # heavy tails, small scale
        ]
    )
    assert_matches_reference(frames)


def test_matches_scipy_moments() -> None:
    frames = np.random.default_rng(2).gamma(2.0, size=(10, 1000))
    stats, _ = frame_stats(frames)
    col = FRAME_STAT_NAMES.index
    kurt = scipy.stats.kurtosis(frames, axis=1, fisher=False)
    np.testing.assert_allclose(stats[:, col("kurtosis")], kurt, rtol=RTOL)
    skew = scipy.stats.skew(frames, axis=1)
    np.testing.assert_allclose(stats[:, col("skewness")], skew, rtol=RTOL)
    np.testing.assert_allclose(stats[:, col("rms")], frames.std(axis=1), rtol=RTOL)


def test_large_offset_keeps_the_digits() -> None:
    # Raw power sums of 1e8 + N(0, 1) lose every digit of the kurtosis; shifted sums do not.
    rng = np.random.default_rng(3)
    ac = rng.standard_normal((8, 4096))
    for offset in (1e8, -3e9):
        assert_matches_reference(ac + offset)
    stats, _ = frame_stats(ac + 1e8)
    clean, _ = frame_stats(ac)
    # Only the data change: 1e8 + x is x rounded to 1.5e-8, which moves the moments by ~1e-8.
    np.testing.assert_allclose(stats[:, 1:], clean[:, 1:], rtol=1e-6)


def test_first_sample_far_from_the_rest() -> None:
    # The shift is the first sample; a lone spike there is the worst case for cancellation.
    frame = np.random.default_rng(4).standard_normal(4096)
    frame[0] = 1e4
    assert_matches_reference(frame + 5e3)


def test_sine_has_textbook_values() -> None:
    t = np.arange(4000) / 4000.0
    stats, _ = frame_stats(3.0 + 2.0 * np.sin(2 * np.pi * 10 * t))
    mean, rms, peak, p2p, crest, kurt, skew = stats[0]
    np.testing.assert_allclose(
        [mean, rms, peak, p2p, crest, kurt], [3.0, np.sqrt(2), 2.0, 4.0, np.sqrt(2), 1.5], rtol=1e-9
    )
    assert abs(skew) < 1e-9


@pytest.mark.parametrize("value", [0.0, 1e8, -7.25])
def test_constant_frame(value: float) -> None:
    stats, skipped = frame_stats(np.full((2, 100), value))
    np.testing.assert_array_equal(stats[:, :4], [[value, 0.0, 0.0, 0.0]] * 2)
    assert np.isnan(stats[:, 4:]).all()
    assert skipped.tolist() == [0, 0]


def test_non_finite_samples_are_skipped_and_counted() -> None:
    rng = np.random.default_rng(5)
    frames = rng.standard_normal((6, 300)) + 50.0
    frames[0, 0] = np.nan  # the shift must come from the first *finite* sample
    frames[1, [3, 90, 299]] = [np.inf, -np.inf, np.nan]
    frames[2, :298] = np.nan  # two finite samples left
    frames[3, 1:] = np.nan  # one finite sample: NaN statistics
    frames[4, :] = np.inf
    frames[5, ::2] = np.nan
    stats, skipped = frame_stats(frames)
    assert skipped.tolist() == [1, 3, 298, 299, 300, 150]
    assert np.isnan(stats[3:5]).all()
    assert np.isfinite(stats[[0, 1, 2, 5]]).all()
    assert_matches_reference(frames)


@pytest.mark.parametrize(
    "bad", [np.inf, -np.inf, np.nan, np.copysign(np.nan, -1.0), np.float64("-nan")]
)
def test_each_kind_of_non_finite_sample_is_caught(bad: float) -> None:
    # Clean frames take a pass without masks; any non-finite sample, whatever its sign bit,
    # must send the frame through the masked pass.
    frames = np.random.default_rng(15).standard_normal((3, 64)) - 2.0
    frames[0, 17] = bad
    frames[1, -1] = bad
    stats, skipped = frame_stats(frames)
    assert skipped.tolist() == [1, 1, 0]
    assert np.isfinite(stats).all()
    assert_matches_reference(frames)


def test_empty_and_tiny_frames() -> None:
    stats, skipped = frame_stats(np.empty((0, 64)))
    assert stats.shape == (0, 7)
    assert skipped.shape == (0,)
    stats, skipped = frame_stats(np.empty((3, 0)))
    assert np.isnan(stats).all()
    assert skipped.tolist() == [0, 0, 0]
    stats, skipped = frame_stats(np.array([[4.0]]))
    assert np.isnan(stats).all()
    assert skipped.tolist() == [0]
    stats, _ = frame_stats(np.array([1.0, 3.0]))
    np.testing.assert_array_equal(stats, [[2.0, 1.0, 1.0, 2.0, 1.0, 1.0, 0.0]])


def test_one_dimensional_and_strided_input() -> None:
    frames = np.random.default_rng(6).standard_normal((4, 200))
    whole, _ = frame_stats(frames[:, ::2])
    want, _ = frame_stats(np.ascontiguousarray(frames[:, ::2]))
    np.testing.assert_array_equal(whole, want)
    one, _ = frame_stats(frames[1])
    np.testing.assert_array_equal(one, frame_stats(frames[1:2])[0])


def test_rejects_wrong_types_and_shapes() -> None:
    with pytest.raises(TypeError, match="float64"):
        frame_stats(np.ones((2, 8), dtype=np.float32))
    with pytest.raises(TypeError, match="float64"):
        frame_stats([[1.0, 2.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_frames, frame_len"):
        frame_stats(np.ones((2, 2, 2)))


samples = st.one_of(
    st.integers(-(10**6), 10**6).map(lambda k: k / 1000.0),
    st.sampled_from([0.0, 1.0, np.nan, np.inf, -np.inf]),
)


@settings(max_examples=80, deadline=None)
@given(
    frames=st.integers(1, 4).flatmap(
        lambda n: st.lists(
            st.lists(samples, min_size=0, max_size=40),
            min_size=n,
            max_size=n,
        )
    ),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    offset=st.sampled_from([0.0, 1e8, -2.5e5]),
)
def test_property_matches_reference(frames: list[list[float]], scale: float, offset: float) -> None:
    width = max(len(r) for r in frames)
    arr = np.array([r + [0.0] * (width - len(r)) for r in frames], dtype=np.float64)
    arr = arr * scale + offset
    assert_matches_reference(arr)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    frame_len=st.integers(2, 300),
    shift=st.floats(-1e6, 1e6),
)
def test_property_invariants(seed: int, frame_len: int, shift: float) -> None:
    frames = np.random.default_rng(seed).standard_normal((3, frame_len))
    stats, _ = frame_stats(frames)
    moved, _ = frame_stats(frames * 2.0 + shift)
    # Every statistic but the mean ignores the offset; scale-free ones ignore the scale too.
    np.testing.assert_allclose(moved[:, 1:4], 2.0 * stats[:, 1:4], rtol=1e-6)
    np.testing.assert_allclose(moved[:, 4:6], stats[:, 4:6], rtol=1e-6)
    np.testing.assert_allclose(moved[:, 6], stats[:, 6], rtol=1e-6, atol=1e-6)
    assert (stats[:, 5] >= 1.0 - 1e-12).all()  # Pearson kurtosis >= 1 always
    assert (stats[:, 4] >= 1.0 - 1e-12).all()  # peak >= rms
    assert (stats[:, 2] <= stats[:, 3] + 1e-12).all()  # peak <= peak-to-peak
