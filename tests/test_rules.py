"""Western Electric rules: the kernel against a window-based reference, the detector's
contract, what each rule catches, and how often each rule fires on in-control data."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shopfloor.scoring.detect.rules import (
    RULES,
    RuleHit,
    WesternElectricDetector,
    rule_hits,
    severity,
)
from shopfloor.scoring.kernels import rules as kr
from shopfloor.scoring.kernels import stats
from test_kernels_stats import RefBaseline

ALPHA, MIN_SAMPLES = 0.05, 3


def ref_rules(x: np.ndarray, learn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rules evaluated on explicit windows of past z-scores. The z-scores come from the EWMA
    z kernel, itself checked against a plain-Python reference in test_kernels_stats."""
    z_all, _ = stats.ewma_z(x, learn, stats.new_ewma_state(x.shape[1]), alpha=ALPHA,
                            min_samples=MIN_SAMPLES)
    bits = np.zeros(x.shape, dtype=np.uint8)
    for j in range(x.shape[1]):
        base, past = RefBaseline(ALPHA), list[float]()
        for i in range(x.shape[0]):
            v, z = float(x[i, j]), float(z_all[i, j])
            if not math.isfinite(v):
                continue
            if base.n >= MIN_SAMPLES:
                window = [*past, z]
                last3, last5, last8 = window[-3:], window[-5:], window[-8:]
                b = 0
                if abs(z) > 3:
                    b |= 1
                for side in (1.0, -1.0):
                    if side * z > 2 and sum(side * w > 2 for w in last3) >= 2:
                        b |= 2
                    if side * z > 1 and sum(side * w > 1 for w in last5) >= 4:
                        b |= 4
                    if len(last8) == 8 and all(side * w > 0 for w in last8):
                        b |= 8
                bits[i, j] = b
                past.append(z)
            if learn[i]:
                base.learn(v)
    return z_all, bits


def run_kernel(x: np.ndarray, learn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    state = kr.new_rules_state(x.shape[1])
    z, bits, _ = kr.western_electric(x, learn, state, alpha=ALPHA, min_samples=MIN_SAMPLES)
    return z, bits, state


def assert_matches_reference(x: np.ndarray, learn: np.ndarray) -> None:
    z, bits, _ = run_kernel(x, learn)
    z_ref, bits_ref = ref_rules(x, learn)
    np.testing.assert_array_equal(z, z_ref)  # same baseline arithmetic: bit-identical
    np.testing.assert_array_equal(bits, bits_ref)


def drifting(seed: int, n: int = 2000, d: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noise with slow wander so that every rule fires now and then."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + np.cumsum(rng.normal(size=(n, d)) * 0.3, axis=0) * 0.2
    return x * 7.0 + 40.0, rng.random(n) < 0.9


# ------------------------------------------------------------------ kernel vs reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_matches_reference(seed: int) -> None:
    x, learn = drifting(seed)
    x[[10, 500, 501], 0] = [np.nan, np.inf, np.nan]
    _, bits, _ = run_kernel(x, learn)
    assert all((bits & (1 << k)).any() for k in range(4)), "every rule is exercised"
    assert_matches_reference(x, learn)
    assert (bits[[10, 500, 501], 0] == 0).all()


def test_adversarial_inputs() -> None:
    x, learn = drifting(3, n=600)
    assert_matches_reference(x + 1e8, learn)
    const = np.full((200, 2), 3.5)
    z, bits, _ = run_kernel(const, np.ones(200, dtype=bool))
    np.testing.assert_array_equal(bits, 0)  # on the centre line: no run, no rule
    z, bits, skipped = kr.western_electric(np.empty((0, 2)), np.empty(0, dtype=bool),
                                           kr.new_rules_state(2), alpha=ALPHA)
    assert z.shape == bits.shape == (0, 2)
    assert skipped == 0


@settings(max_examples=60, deadline=None)
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(0, 60), st.integers(1, 2)),
                    elements=st.one_of(st.floats(-1e3, 1e3, allow_subnormal=False),
                                       st.sampled_from([np.nan, np.inf, 0.0, 1.0, 5.0]))),
       learn_bits=st.integers(0, 2**60 - 1))
def test_property_matches_reference(x: np.ndarray, learn_bits: int) -> None:
    learn = np.array([(learn_bits >> i) & 1 == 1 for i in range(x.shape[0])], dtype=bool)
    assert_matches_reference(x, learn)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), cuts=st.lists(st.integers(0, 800), max_size=6))
def test_batch_splits_are_bit_identical(seed: int, cuts: list[int]) -> None:
    x, learn = drifting(seed, n=800)
    z, bits, state = run_kernel(x, learn)
    split_state = kr.new_rules_state(2)
    parts = []
    for a, b in itertools.pairwise([0, *sorted(cuts), 800]):
        parts.append(kr.western_electric(np.ascontiguousarray(x[a:b]), learn[a:b].copy(),
                                         split_state, alpha=ALPHA, min_samples=MIN_SAMPLES))
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), z)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), bits)
    np.testing.assert_array_equal(split_state, state)


def test_kernel_validates_input() -> None:
    with pytest.raises(TypeError, match="float64"):
        kr.western_electric(np.zeros(3, dtype=np.float32), np.ones(3, dtype=bool),
                            kr.new_rules_state(1), alpha=ALPHA)
    with pytest.raises(ValueError, match="state must have shape"):
        kr.western_electric(np.zeros(3), np.ones(3, dtype=bool), stats.new_cusum_state(1),
                            alpha=ALPHA)
    with pytest.raises(ValueError, match="alpha"):
        kr.western_electric(np.zeros(3), np.ones(3, dtype=bool), kr.new_rules_state(1),
                            alpha=1.0)


# ------------------------------------------------------------------ rule hits and severity


def test_rule_hits_decode_every_mask() -> None:
    assert rule_hits(0) == []
    assert [h.rule for h in rule_hits(0b1111)] == [1, 2, 3, 4]
    for hit in RULES:
        assert rule_hits(hit.bit) == [hit]
        assert hit.name
        assert "sigma" in hit.description or "centre line" in hit.description
    assert [h.rule for h in rule_hits(int(np.uint8(0b0110)))] == [2, 3]
    with pytest.raises(ValueError, match="mask"):
        rule_hits(256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        RULES[0].rule = 5  # type: ignore[misc]
    assert RuleHit(1, "a", "b") == RuleHit(1, "a", "b")


def test_severity_orders_what_fired() -> None:
    z = np.array([0.5, 2.5, 3.3, 6.0, -3.3, 1.5])
    bits = np.array([0, 2, 1, 1, 1 | 2 | 4, 8], dtype=np.uint8)
    sev = severity(z, bits)
    np.testing.assert_allclose(sev, [0.0, 1.0, 1.1, 2.0, 3.1, 1.0])
    assert ((sev > 0.5) == (bits != 0)).all()


def test_worst_column_reports_the_most_severe_column_and_its_bits() -> None:
    z = np.array([[0.1, 3.6, -2.5], [1.2, 0.3, -0.4], [-4.5, 1.0, 2.2], [0.0, 0.0, 0.0]])
    bits = np.array([[8, 1, 2 | 4], [0, 0, 0], [1, 8, 2], [0, 0, 0]], dtype=np.uint8)
    score, top, rules = kr.worst_column(z, bits)
    np.testing.assert_allclose(score, [2.0, 0.0, 1.5, 0.0])
    np.testing.assert_array_equal(top, [2, -1, 0, -1])
    np.testing.assert_array_equal(rules, [6, 0, 1, 0])
    want = np.array([[1.0, 1.2, 2.0], [0.0, 0.0, 0.0], [1.5, 1.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(severity(z, bits), want)
    with pytest.raises(TypeError, match="western_electric"):
        kr.worst_column(z, bits.astype(np.int64))


# ------------------------------------------------------------------ the detector


def test_detector_contract_checkpoint_and_top() -> None:
    x = np.random.default_rng(4).normal(size=(1500, 3)) * [1.0, 5.0, 0.1]
    x[1000, 2] += 2.0  # a 20-sigma spike in column 2
    x[1200:, 0] += 1.5
    learn = np.ones(1500, dtype=bool)
    det = WesternElectricDetector()
    whole = det.score_learn(x, learn)
    assert whole.rules is not None
    assert whole.rules.dtype == np.uint8
    np.testing.assert_array_equal(whole.score[:100], 0.0)
    assert whole.top[1000] == 2
    assert whole.rules[1000] & 1
    assert whole.score[1000] > 5.0
    assert ((whole.score > 0.5) == (whole.rules != 0)).all()
    assert (whole.top[whole.score == 0] == -1).all()

    split = WesternElectricDetector()
    scores, rules = [], []
    for a, b in itertools.pairwise([0, 99, 100, 777, 1001, 1500]):
        out = split.score_learn(x[a:b], learn[a:b])
        scores.append(out.score)
        assert out.rules is not None
        rules.append(out.rules)
        if b == 777:
            saved = split.get_state()
            split = WesternElectricDetector()
            split.set_state(saved)
    np.testing.assert_array_equal(np.concatenate(scores), whole.score)
    np.testing.assert_array_equal(np.concatenate(rules), whole.rules)


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"baseline": "mean"}, "baseline"),
    ({"alpha": -0.1}, "alpha"),
    ({"min_samples": 0}, "min_samples"),
])
def test_detector_parameters_are_validated(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        WesternElectricDetector(**kwargs)  # type: ignore[arg-type]


T0 = 2000


@pytest.mark.parametrize(("fault", "rule", "max_delay"), [
    ("spike", 1, 0),
    # Bounds with ~1.5x margin over the worst of 40 seeds.
    ("drift", 4, 180),
    ("variance", 2, 45),
    ("variance", 3, 150),
    ("stuck", 4, 7),
    ("step", 3, 40),
])
def test_rule_catches_its_fault(fault: str, rule: int, max_delay: int) -> None:
    for seed in range(8):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=T0 + 1000)
        t = np.arange(1000, dtype=np.float64)
        if fault == "spike":
            x[T0] = 6.0
        elif fault == "drift":
            x[T0:] += 0.01 * t  # one sigma every 100 values
        elif fault == "variance":
            x[T0:] *= 3.0
        elif fault == "stuck":
            x[T0:] = 0.5  # half a sigma off the centre line: invisible to rules 1-3
        elif fault == "step":
            x[T0:] += 1.5
        rows = (x * 0.3 + 12.0)[:, None]
        out = WesternElectricDetector(forecast=False).score_learn(rows, np.ones(x.size, dtype=bool))
        assert out.rules is not None
        fired = np.flatnonzero(out.rules[T0:] & (1 << (rule - 1)))
        assert fired.size, f"seed {seed}: rule {rule} never fired"
        assert fired[0] <= max_delay, f"seed {seed}: rule {rule} after {fired[0]} values"


# Per-value probability of each rule under N(0, 1) with known parameters, from the normal
# tail areas p1 = P(Z > 1), p2 = P(Z > 2) and the firing conditions in kernels/rules.py.
P1, P2, P3 = 0.15865525393145707, 0.022750131948179209, 0.0013498980316301035
EXPECTED = {
    1: 2 * P3,
    2: 2 * P2 * (1 - (1 - P2) ** 2),
    3: 2 * P1 * (4 * P1**3 * (1 - P1) + P1**4),
    4: 2 * 0.5**8,
}


def test_rule_rates_on_gaussian_noise() -> None:
    n = 400_000
    x = np.random.default_rng(9).normal(size=(n, 1)) * 2.0 + 7.0
    out = WesternElectricDetector(forecast=False).score_learn(x, np.ones(n, dtype=bool))
    assert out.rules is not None
    rules = out.rules[1000:]
    for rule, p in EXPECTED.items():
        rate = np.mean(rules & (1 << (rule - 1)) != 0)
        # 400,000 values; rules 3-4 fire in clusters, hence +-20 % rather than +-5 %.
        assert 0.8 * p <= rate <= 1.2 * p, (rule, rate / p)
    any_rate = np.mean(out.score[1000:] > 0.5)
    assert max(EXPECTED.values()) < any_rate <= sum(EXPECTED.values())
