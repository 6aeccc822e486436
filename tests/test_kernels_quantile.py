"""The streaming tail-quantile kernel against a brute-force plain-Python reference.

The reference keeps every learned score with its forgetting weight and, for every sample,
rebuilds the bin weights from scratch and finds the quantile's bin by summing from the top. It
shares with the kernel only the documented grid (the signed log coordinate ``u``), the
interpolation rule inside a bin (between the bin's smallest and largest learned score), the
exact rescaling of the weights and the winsorising of withheld exceedances; the tail pointer and
the running totals are what it checks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.scoring.kernels import quantile as kq
from shopfloor.scoring.kernels.quantile import new_quantile_state, tail_quantile

R, XMIN, SIDE, NB = kq.BINS_PER_E, kq.X_MIN, kq.SIDE, kq.N_BINS


def u_of(x: float) -> float:
    if abs(x) <= XMIN:
        return x / XMIN
    u = 1.0 + R * math.log(abs(x) / XMIN)
    return u if x > 0 else -u


def x_of(u: float) -> float:
    if abs(u) <= 1.0:
        return u * XMIN
    x = XMIN * math.exp((abs(u) - 1.0) / R)
    return x if u > 0 else -x


def bin_of(u: float) -> int:
    u = min(max(u, -SIDE - 1.0), SIDE + 1.0)
    if u >= 1.0:
        return min(SIDE + math.floor(u), NB - 1)
    if u <= -1.0:
        return max(SIDE - math.floor(-u), 0)
    return SIDE


def edges(b: int) -> tuple[float, float]:
    if b == SIDE:
        return -1.0, 1.0
    return (b - SIDE, b - SIDE + 1.0) if b > SIDE else (b - SIDE - 1.0, b - SIDE)


def reference(
    score: NDArray[np.float64], learn: NDArray[np.bool_], withheld: NDArray[np.bool_], *,
    tail: float, half_life: float, min_samples: int, margin: float = 0.0,
) -> NDArray[np.float64]:
    """Threshold before each score, with the histogram rebuilt from every learned score."""
    values: list[float] = []  # learned values, their bins and weights, in learning order
    bins: list[int] = []
    weights: list[float] = []
    alive: list[bool] = []  # False once the value's bin has been forgotten to the last bit
    growth = 2.0 ** (1.0 / half_life)
    w = 1.0
    out = np.empty(len(score))
    thr, uq = math.inf, math.nan
    for i, s in enumerate(score):
        if not math.isfinite(s):
            out[i] = math.inf
            continue
        out[i] = thr
        if learn[i]:
            x, u = s, u_of(s)
        elif withheld[i] and s > thr:
            x, u = s, u_of(s)
            if u > uq + 1.0:
                x, u = x_of(uq + 1.0), uq + 1.0
        else:
            continue
        values.append(x)
        bins.append(bin_of(u))
        weights.append(w)  # the n-th score weighs growth**n: older ones count relatively less
        alive.append(True)
        w *= growth
        if w > 2.0**512:  # the documented exact rescaling, and what it forgets
            w *= 2.0**-512
            weights = [v * 2.0**-512 for v in weights]
            hist = np.bincount(bins, weights=weights, minlength=NB)
            alive = [a and hist[b] > 0.0 for a, b in zip(alive, bins, strict=True)]
        hist = np.bincount(bins, weights=weights, minlength=NB)
        smallest = np.full(NB, math.inf)
        largest = np.full(NB, -math.inf)
        keep = np.array(alive)
        np.minimum.at(smallest, np.array(bins)[keep], np.array(values)[keep])
        np.maximum.at(largest, np.array(bins)[keep], np.array(values)[keep])
        n = len(values)
        target = tail * hist.sum()
        above = 0.0
        k = NB - 1
        while above + hist[k] < target:  # the bin where the mass from the top reaches target
            above += hist[k]
            k -= 1
        frac = min(max((target - above) / hist[k], 0.0), 1.0)
        lo, hi = edges(k)
        lo = min(max(lo, u_of(smallest[k])), hi)  # between the bin's extremes, not its edges
        hi = max(min(hi, u_of(largest[k])), lo)
        uq = hi - frac * (hi - lo)
        q = min(max(x_of(uq), smallest[k]), largest[k])
        thr = math.inf if n < min_samples or k == NB - 1 else q + margin * abs(q)
    return out


def run(
    score: Any, learn: NDArray[np.bool_] | None = None, withheld: NDArray[np.bool_] | None = None,
    state: kq.QuantileState | None = None, **params: Any,
) -> tuple[NDArray[np.float64], kq.QuantileState]:
    n = len(score)
    learn = np.ones(n, dtype=bool) if learn is None else learn
    st_ = new_quantile_state() if state is None else state
    return tail_quantile(np.asarray(score, dtype=np.float64), learn, withheld, st_, **params), st_


PARAMS: dict[str, Any] = {"tail": 0.05, "half_life": 40.0, "min_samples": 5}


def check(
    score: Any, learn: NDArray[np.bool_] | None = None, withheld: NDArray[np.bool_] | None = None,
    **params: Any,
) -> NDArray[np.float64]:
    n = len(score)
    p = {**PARAMS, **params}
    lrn = np.ones(n, dtype=bool) if learn is None else learn
    held = np.zeros(n, dtype=bool) if withheld is None else withheld
    got, _ = run(score, lrn, held, **p)
    want = reference(np.asarray(score, dtype=np.float64), lrn, held, **p)
    # rtol 1e-9: the reference sums its weights in a different order than the kernel's running
    # totals (rounding ~1e-15); one bin is 3 % wide, so anything coarser would be a real bug.
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0.0)
    return got


def test_random_scores_match_reference() -> None:
    rng = np.random.default_rng(0)
    got = check(rng.exponential(1.0, 400))
    assert np.isinf(got[:5]).all()
    assert np.isfinite(got[5:]).all()


def test_signed_and_tiny_scores_match_reference() -> None:
    rng = np.random.default_rng(1)
    check(rng.normal(0.0, 1.0, 300))  # a detector whose scores go negative
    check(rng.normal(-5.0, 1.0, 300))  # a negative quantile
    check(rng.normal(0.0, 1e-9, 300))  # the linear zero bin
    check(rng.normal(0.0, 1e-12, 300))


def test_learn_and_withheld_masks_match_reference() -> None:
    rng = np.random.default_rng(2)
    s = rng.exponential(1.0, 500)
    s[300:320] += 50.0  # withheld exceedances far above the quantile get winsorised
    check(s, rng.random(500) < 0.7, rng.random(500) < 0.5)
    check(s, np.zeros(500, dtype=bool), np.ones(500, dtype=bool))


def test_adversarial_inputs_match_reference() -> None:
    rng = np.random.default_rng(3)
    check(1e8 + rng.normal(0.0, 1.0, 200))  # offset far above the spread
    check(np.full(200, 2.5))  # constant
    check(np.zeros(200))
    check(np.concatenate([np.full(100, 1.0), np.full(100, 1e12)]))  # beyond the grid: +inf
    check(np.concatenate([np.full(100, 1.0), np.full(100, -1e12)]))
    s = rng.exponential(1.0, 200)
    s[::7] = np.nan
    s[::11] = np.inf
    s[::13] = -np.inf
    check(s)
    check(np.empty(0))


def test_renormalisation_matches_reference() -> None:
    # half_life 2 grows the weights by 2**0.5 per score: they are rescaled after ~1000 scores.
    rng = np.random.default_rng(4)
    got, state = run(rng.exponential(1.0, 2500), tail=0.5, half_life=2.0, min_samples=1)
    assert state.scalars[0] < 2.0**512
    check(rng.exponential(1.0, 2500), tail=0.5, half_life=2.0, min_samples=1)
    assert np.isfinite(got[1:]).all()


def test_forgotten_scores_release_their_bin() -> None:
    # 1.0 and 1.02 share a bin. Once the 1.0s are forgotten to the last bit, equal scores of
    # 1.02 must not exceed: the bin's smallest score has to follow the data.
    # (half_life 2.5, not an integer h: with tail 0.5 the weight of all but the last h scores
    # would equal that of the last h to the last bit, a tie the kernel and the reference may
    # break differently.)
    s = np.concatenate([np.full(100, 1.0), np.full(4000, 1e3), np.full(300, 1.02)])
    thr = check(s, tail=0.5, half_life=2.5, min_samples=1)
    assert not (s[4100:] > thr[4100:]).any()


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(-1e3, 1e3, allow_nan=False),
            st.sampled_from([0.0, 1.0, 1.0, 2.0, np.nan, np.inf, -np.inf, 1e-10]),
        ),
        max_size=120,
    ),
    seed=st.integers(0, 2**32 - 1),
    tail=st.sampled_from([0.5, 0.2, 0.05]),
    margin=st.sampled_from([0.0, 0.1]),
)
def test_property_matches_reference(
    values: list[float], seed: int, tail: float, margin: float
) -> None:
    rng = np.random.default_rng(seed)
    n = len(values)
    check(np.array(values, dtype=np.float64), rng.random(n) < 0.8, rng.random(n) < 0.5,
          tail=tail, half_life=10.0 / tail, min_samples=3, margin=margin)


def test_equal_scores_get_themselves_as_threshold() -> None:
    for c in (0.0, 1.0, 2.5, 3.0e5, -7.0, 1e-10, 0.1 + 0.2):
        s = np.full(3000, c)
        thr, _ = run(s, tail=1e-3, half_life=1e5, min_samples=100)
        np.testing.assert_array_equal(thr[100:], c)


def test_bounded_scores_get_a_threshold_they_can_reach() -> None:
    # Scores up to exactly 1.0 (HST's range): the 1 - 0.01 quantile is inside the bin holding
    # 1.0, and the threshold must stay below 1.0, not at the bin's edge above it.
    # Interpolating up to the bin's edge would put it near 1.025 and nothing would exceed.
    s = np.random.default_rng(6).beta(5.0, 1.0, 20_000)
    thr, _ = run(s, tail=0.01, half_life=1e4, min_samples=100)
    assert (thr[100:] < 1.0).all()
    assert 0.5 < np.mean(s[100:] > thr[100:]) / 0.01 < 2.0  # 200 expected: ±7 % Poisson


def test_batch_splits_are_bit_identical() -> None:
    rng = np.random.default_rng(5)
    s = rng.standard_t(3, 5000)
    s[rng.random(5000) < 0.01] = np.nan
    learn = rng.random(5000) < 0.9
    held = rng.random(5000) < 0.5
    p: dict[str, Any] = {"tail": 0.01, "half_life": 300.0, "min_samples": 50}
    whole, st_whole = run(s, learn, held, **p)
    state = new_quantile_state()
    cuts = np.sort(rng.choice(np.arange(1, 5000), 40, replace=False))
    parts = [
        tail_quantile(a, b, c, state, **p)
        for a, b, c in zip(np.split(s, cuts), np.split(learn, cuts), np.split(held, cuts),
                           strict=True)
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    for a, b in zip(state, st_whole, strict=True):
        np.testing.assert_array_equal(a, b)


def test_counts_skipped_only_where_learning() -> None:
    s = np.array([1.0, np.nan, np.inf, 2.0, np.nan])
    _, state = run(s, np.array([True, True, True, True, False]), tail=0.5, half_life=2.0,
                   min_samples=1)
    assert state.counts[1] == 2
    assert state.counts[2] == 2


def test_wrapper_rejects_bad_input() -> None:
    state = new_quantile_state()
    ok = np.ones(3)
    lrn = np.ones(3, dtype=bool)
    p: dict[str, Any] = {"tail": 0.1, "half_life": 100.0, "min_samples": 1}
    with pytest.raises(TypeError, match="float64"):
        tail_quantile(np.ones(3, dtype=np.float32), lrn, None, state, **p)
    with pytest.raises(TypeError, match="bool"):
        tail_quantile(ok, np.ones(3), None, state, **p)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        tail_quantile(ok, np.ones(2, dtype=bool), None, state, **p)
    with pytest.raises(ValueError, match="shape"):
        tail_quantile(np.ones((3, 1)), lrn, None, state, **p)
    with pytest.raises(ValueError, match="tail"):
        tail_quantile(ok, lrn, None, state, **{**p, "tail": 0.7})
    with pytest.raises(ValueError, match="half_life"):
        tail_quantile(ok, lrn, None, state, **{**p, "half_life": 5.0})
    with pytest.raises(ValueError, match="min_samples"):
        tail_quantile(ok, lrn, None, state, **{**p, "min_samples": 0})
    with pytest.raises(ValueError, match="margin"):
        tail_quantile(ok, lrn, None, state, **{**p, "margin": -0.1})
    bad = kq.QuantileState(state.table[:, :10].copy(), state.scalars, state.counts)
    with pytest.raises(ValueError, match="new_quantile_state"):
        tail_quantile(ok, lrn, None, bad, **p)
