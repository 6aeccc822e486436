"""The synthetic quality suite (benchmarks/quality_synthetic.py): what it generates, how a case
is scored from the monitor's arrays (by hand), and two short cases through the real pipeline.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ is not an installed package: ``python -m benchmarks`` runs from the repository
# root, so the tests put the root on the path the same way.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality_synthetic import (  # noqa: E402
    EXPECT_ALARM,
    EXPECT_ENDS,
    EXPECT_QUIET,
    GAP_S,
    CaseResult,
    Sizes,
    SyntheticCase,
    SyntheticReport,
    ar1,
    generate,
    regular_times,
    run_case,
    score_case,
    synthetic_markdown,
)

from shopfloor.scoring.pipeline import Plant  # noqa: E402
from shopfloor.tools.replay import default_config  # noqa: E402

SMALL = Sizes(healthy=1000, after=300, control=3000)


def _default_warmup() -> int:
    """The default configuration's alarm warm-up (rows that can never raise)."""
    plant = Plant(default_config(["x"], "a"))
    (sid,) = plant.signals
    return plant.signals[sid].warmup


def _by_name(cases: list[SyntheticCase], start: str) -> SyntheticCase:
    (case,) = [c for c in cases if c.name.startswith(start)]
    return case


# --- generation ----------------------------------------------------------------------------


def test_generation_is_seeded_and_each_case_has_its_own_stream() -> None:
    a, b = generate(SMALL, seed=1), generate(SMALL, seed=1)
    assert [c.name for c in a] == [c.name for c in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.values, y.values)
    other = generate(SMALL, seed=2)
    assert not np.array_equal(a[0].values, other[0].values)
    # A longer control does not change the change cases (independent streams).
    longer = generate(replace(SMALL, control=5000), seed=1)
    np.testing.assert_array_equal(a[0].values, longer[0].values)


def test_the_changes_are_where_and_what_they_say() -> None:
    cases = generate(Sizes(healthy=2000, after=2000, control=20_000), seed=5)
    c = 2000
    step = _by_name(cases, "step")
    assert step.change == c
    assert step.sustained
    assert step.expect == EXPECT_ALARM
    assert step.values[c:].mean() - step.values[:c].mean() == pytest.approx(4.0, abs=0.15)
    assert step.values[:c].std() == pytest.approx(1.0, abs=0.05)
    drift = _by_name(cases, "drift")
    slope = np.polyfit(np.arange(2000), drift.values[c:], 1)[0]
    assert slope == pytest.approx(0.005, abs=0.0005)
    spike = _by_name(cases, "spike")
    assert not spike.sustained
    assert spike.window == 10
    assert (spike.values[c:c + 5] > 7.0).all()
    assert np.abs(np.delete(spike.values, np.arange(c, c + 5))).max() < 5.0
    seasonal = _by_name(cases, "seasonal")
    healthy = seasonal.values[:c]
    # Period 100: the series correlates with itself 100 samples later, not 50.
    assert np.corrcoef(healthy[:-100], healthy[100:])[0, 1] > 0.5
    assert np.corrcoef(healthy[:-50], healthy[50:])[0, 1] < -0.5
    gap = _by_name(cases, "gap")
    steps = np.diff(gap.times)
    assert steps[c - 1] == GAP_S + 1.0
    assert (np.delete(steps, c - 1) == 1.0).all()
    assert gap.expect == EXPECT_ENDS
    stuck = _by_name(cases, "stuck")
    assert (stuck.values[c:] == stuck.values[c - 1]).all()
    for start in ("clean", "AR(1)", "outliers"):
        control = _by_name(cases, start)
        assert control.change is None
        assert control.expect == EXPECT_QUIET
        assert control.values.size == 20_000
    outliers = _by_name(cases, "outliers")
    at = np.flatnonzero(outliers.values == 6.0)
    assert at.size == 5
    assert np.diff(at).min() > 1000
    assert np.abs(np.delete(outliers.values, at)).max() < 5.0


def test_ar1_has_unit_variance_and_the_asked_autocorrelation() -> None:
    x = ar1(np.random.default_rng(0), 200_000, 0.9)
    assert x.var() == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(x[:-1], x[1:])[0, 1] == pytest.approx(0.9, abs=0.01)
    with pytest.raises(ValueError, match="phi"):
        ar1(np.random.default_rng(0), 10, 1.0)


# --- scoring by hand -----------------------------------------------------------------------


def _case(n: int = 30, change: int | None = 10, sustained: bool = True, window: int = 20,
          expect: str = EXPECT_ALARM) -> SyntheticCase:
    return SyntheticCase("c", regular_times(n, start=100.0), np.zeros(n), change, sustained,
                         window, expect)


def _flags(n: int, *rows: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(rows)] = True
    return out


def _score(case: SyntheticCase, raised: tuple[int, ...] = (), cleared: tuple[int, ...] = (),
           adopted: tuple[int, ...] = (), exceeded: tuple[int, ...] = (),
           onset: dict[int, float] | None = None, warmup: int = 2) -> CaseResult:
    n = case.values.size
    on = np.full(n, np.nan)
    for k, v in (onset or {}).items():
        on[k] = v
    return score_case(case, _flags(n, *raised), _flags(n, *cleared), _flags(n, *adopted),
                      _flags(n, *exceeded), on, warmup)


def test_a_sustained_change_detected_then_cleared() -> None:
    r = _score(_case(), raised=(5, 12), cleared=(8, 20), exceeded=(10, 11, 12),
               onset={12: 110.0})
    assert (r.detected, r.delay, r.exceeded, r.raises_in_change) == (True, 2, True, 1)
    assert r.onset_lag_s == 0.0  # onset at the change's own time (100 + 10)
    # The raise at row 5 is a false alarm among rows 2..9 (after the warm-up, before 10).
    assert (r.false_alarms, r.healthy_samples) == (1, 8)
    assert r.fa_per_10k == pytest.approx(1250.0)
    assert (r.ended, r.end_seconds) == ("cleared", 8.0)  # rows 12 -> 20, one second apart
    assert r.passed


def test_adoption_ends_an_alarm_and_wins_over_a_clear_on_the_same_row() -> None:
    r = _score(_case(), raised=(15,), cleared=(25,), adopted=(25,))
    assert (r.ended, r.end_seconds, r.delay) == ("adopted", 10.0, 5)
    r = _score(_case(), raised=(15,))
    assert (r.ended, r.end_seconds) == ("no", 14.0)  # still active at row 29


def test_a_one_sample_change_counts_only_its_window_and_is_healthy_after_it() -> None:
    case = _case(sustained=False, window=5)
    late = _score(case, raised=(16,), exceeded=(10,))  # 6 samples after: not the spike's
    assert (late.detected, late.exceeded, late.ended) == (False, True, "-")
    assert late.false_alarms == 1
    assert late.healthy_samples == 8 + 15  # rows 2..9 and 15..29
    assert not late.passed
    hit = _score(case, raised=(12,))
    assert (hit.detected, hit.delay, hit.false_alarms, hit.ended) == (True, 2, 0, "-")


def test_controls_count_every_raise_after_the_warm_up() -> None:
    control = _case(n=1000, change=None, expect=EXPECT_QUIET)
    r = _score(control, raised=(1, 300, 700), warmup=100)
    assert (r.false_alarms, r.healthy_samples, r.detected) == (2, 900, False)
    assert not r.passed
    assert _score(control, warmup=100).passed


def test_a_change_that_may_alarm_passes_when_its_alarm_ends_or_none_is_raised() -> None:
    case = _case(expect=EXPECT_ENDS)
    assert _score(case).passed
    assert _score(case, raised=(12,), adopted=(20,)).passed
    assert not _score(case, raised=(12,)).passed


def test_arrays_of_the_wrong_length_are_refused() -> None:
    ok, short = np.zeros(30, dtype=bool), np.zeros(29, dtype=bool)
    with pytest.raises(ValueError, match="raised"):
        score_case(_case(), short, ok, ok, ok, np.zeros(30), 0)
    with pytest.raises(ValueError, match="onset"):
        score_case(_case(), ok, ok, ok, ok, np.zeros(29), 0)


# --- through the pipeline ------------------------------------------------------------------


def test_a_step_alarms_within_a_few_samples_and_a_clean_control_stays_quiet() -> None:
    warmup = _default_warmup()
    assert warmup <= SMALL.healthy - 200, "the step needs a scored healthy stretch before it"
    cases = generate(SMALL, seed=7)
    step = run_case(_by_name(cases, "step"))
    assert step.detected
    assert step.delay is not None
    assert 2 <= step.delay <= 6
    assert step.false_alarms == 0
    assert step.healthy_samples == SMALL.healthy - warmup
    clean = run_case(_by_name(cases, "clean"))
    assert (clean.false_alarms, clean.healthy_samples) == (0, SMALL.control - warmup)
    report = SyntheticReport(7, SMALL, [step, clean])
    assert report.control_false_alarms == (0, SMALL.control - warmup)
    text = "\n".join(synthetic_markdown(report))
    assert f"| {step.name} | alarm | yes | {step.delay} |" in text
    assert "| clean control | no alarm | no |" in text
    assert f"Controls pooled: 0 false alarms in {SMALL.control - warmup} healthy samples" in text
