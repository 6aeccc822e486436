"""Our NAB scorer (benchmarks/quality_nab.py): hand-computed cases, a brute-force check of the
threshold sweep, and agreement with the reference scorer ``../shared/tools/nab_score.py`` on a
generated NAB-format corpus (skipped, with the reason, where the reference cannot run).
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ is not an installed package: ``python -m benchmarks`` runs from the repository
# root, so the tests put the root on the path the same way.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.quality_nab import (  # noqa: E402
    ALARM,
    LIKELIHOOD,
    PROFILES,
    FileEvents,
    NabFile,
    NabRun,
    best_threshold,
    detector_scores,
    file_events,
    nab_files,
    optimised,
    parse_reference_output,
    perfect_scores,
    probation_rows,
    reference_missing,
    reference_python,
    reference_scores,
    scaled_sigmoid,
    score_at,
    window_rows,
    write_scores,
)

#: The reference scorer, beside the clone as CI has it (``<repo>/../shared/tools``).
REFERENCE = ROOT.parent / "shared" / "tools" / "nab_score.py"
STANDARD = PROFILES["standard"]
FIVE_MIN = 300_000_000  # microseconds
START = datetime(2014, 4, 1)


def _sigma(y: float) -> float:
    """NAB's scaled sigmoid, written out independently of the module."""
    return -1.0 if y > 3.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def _micros(n: int) -> np.ndarray:
    return (START - datetime(1970, 1, 1)) // timedelta(microseconds=1) + FIVE_MIN * np.arange(
        n, dtype=np.int64)


def _events(scores: list[float] | np.ndarray, windows: list[tuple[int, int]]) -> FileEvents:
    """A file of len(scores) rows five minutes apart, windows given as (first row, last row)."""
    m = _micros(len(scores))
    return file_events(np.asarray(scores, dtype=float), m,
                       [(int(m[a]), int(m[b])) for a, b in windows])


# --- the pieces ----------------------------------------------------------------------------


def test_scaled_sigmoid_by_hand() -> None:
    s = scaled_sigmoid([0.0, -1.0, 3.0, 3.0001, 1e6, -1e6])
    assert s[0] == 0.0
    assert s[1] == pytest.approx(0.9866142981514305, rel=1e-15)  # 2 / (1 + e^-5) - 1
    assert s[2] == pytest.approx(-0.99999938819, rel=1e-9)  # still the curve at exactly 3
    assert s[3] == -1.0  # past 3: exactly -1
    assert s[4] == -1.0
    assert s[5] == 1.0


@pytest.mark.parametrize(("n", "rows"), [(6, 0), (100, 15), (4032, 604), (4999, 749),
                                         (5000, 750), (22695, 750)])
def test_probation_is_15_percent_at_most_750_rows(n: int, rows: int) -> None:
    assert probation_rows(n) == rows


def test_windows_cover_the_rows_inside_them_inclusive_and_empty_ones_are_dropped() -> None:
    m = _micros(10)
    half = FIVE_MIN // 2
    windows = [(int(m[2]), int(m[4])),  # exactly on rows 2 and 4: both ends in
               (int(m[5]) + 1, int(m[6]) - 1),  # between two rows: no row, dropped
               (int(m[6]) - half, int(m[7]) + half),  # rows 6-7
               (int(m[9]), int(m[9]) + 10 * FIVE_MIN)]  # runs past the data: row 9 only
    assert window_rows(m, windows) == [(2, 4), (6, 7), (9, 9)]


def test_true_and_false_positive_values_by_hand() -> None:
    # 20 rows: probation 3; one window on rows 10-14 (5 rows).
    ev = _events(np.zeros(20), [(10, 14)])
    assert ev.windows == 1
    assert ev.scores.size == 17  # rows 3..19
    row = {i: i - 3 for i in range(3, 20)}
    assert ev.window.tolist() == [-1] * 7 + [0] * 5 + [-1] * 5
    # In the window: sigma(-(14 - i + 1) / 5) / sigma(-1): 1 at its first row.
    assert ev.tp[row[10]] == pytest.approx(1.0, rel=1e-15)
    assert ev.tp[row[12]] == pytest.approx(0.9174286804284079, rel=1e-12)
    assert ev.tp[row[14]] == pytest.approx(0.46838684390227814, rel=1e-12)
    assert ev.tp[row[12]] == pytest.approx(_sigma(-3 / 5) / _sigma(-1.0), rel=1e-12)
    # Before any window: a full -1; after it: sigma(|14 - i| / (14 - 10)).
    assert ev.fp[row[5]] == -1.0
    assert ev.fp[row[15]] == pytest.approx(-0.5545997223493824, rel=1e-12)
    assert ev.fp[row[19]] == pytest.approx(_sigma(5 / 4), rel=1e-12)
    assert (ev.fp[ev.window >= 0] == 0.0).all()
    assert (ev.tp[ev.window < 0] == 0.0).all()


def test_a_false_positive_is_weighed_from_the_window_that_ended_last_before_it() -> None:
    ev = _events(np.zeros(40), [(10, 12), (20, 29)])
    # Row 16 follows the first window (width 2), row 35 the second (width 9).
    assert ev.fp[16 - 6] == pytest.approx(_sigma(4 / 2))
    assert ev.fp[35 - 6] == pytest.approx(_sigma(6 / 9))


def test_corpus_scores_by_hand() -> None:
    # Detections: row 5 (0.5, before the window), row 12 (0.9, in it), row 15 (0.7, after).
    scores = np.zeros(20)
    scores[[5, 12, 15]] = [0.5, 0.9, 0.7]
    ev = [_events(scores, [(10, 14)])]
    tp12, fp15 = 0.9174286804284079, -0.5545997223493824
    at = {t: score_at(ev, STANDARD, t) for t in (0.9, 0.7, 0.5)}
    assert at[0.9].raw == pytest.approx(tp12)
    assert at[0.9].score == pytest.approx(100 * (tp12 + 1) / 2)  # 95.87
    assert at[0.7].raw == pytest.approx(tp12 + 0.11 * fp15)
    assert at[0.5].raw == pytest.approx(tp12 + 0.11 * fp15 - 0.11)
    assert at[0.5].score == pytest.approx(87.32, abs=0.01)
    assert (at[0.5].detected, at[0.5].false_positives) == (1, 2)
    assert best_threshold(ev, STANDARD) == 0.9
    # Low FN: missing costs 2, so the normalisation spans -2 .. 1.
    low_fn = optimised(ev, PROFILES["low FN"])
    assert low_fn.score == pytest.approx(100 * (tp12 + 2) / 3)
    # Nothing detected: the null score, 0.
    assert score_at(ev, STANDARD, math.inf).score == 0.0


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    scores = np.zeros(20)
    scores[[10, 12, 13]] = [0.3, 0.9, 0.9]
    ev = [_events(scores, [(10, 14)])]
    assert score_at(ev, STANDARD, 0.9).raw == pytest.approx(0.9174286804284079)
    assert score_at(ev, STANDARD, 0.3).raw == pytest.approx(1.0)  # row 10, not a sum
    assert score_at(ev, STANDARD, 0.3).false_positives == 0
    assert best_threshold(ev, STANDARD) == 0.3


def test_a_window_in_probation_can_only_be_missed() -> None:
    m = _micros(100)  # probation 15 rows
    windows = [(int(m[2]), int(m[8])), (int(m[50]), int(m[60]))]
    f = NabFile("x/y.csv", [], m, np.zeros(100), windows)
    perfect = perfect_scores(f)
    assert np.flatnonzero(perfect).tolist() == [50]
    s = optimised([file_events(perfect, m, windows)], STANDARD)
    assert (s.windows, s.detected) == (2, 1)
    assert s.score == pytest.approx(50.0)  # one of two windows: (1 - 1 + 2) / 4
    # A window straddling the end of probation: its first scored row is the perfect one.
    f2 = NabFile("x/z.csv", [], m, np.zeros(100), [(int(m[10]), int(m[20]))])
    assert np.flatnonzero(perfect_scores(f2)).tolist() == [15]


def test_the_threshold_sweep_finds_the_brute_force_best() -> None:
    rng = np.random.default_rng(3)
    files = []
    for n in (300, 450, 800):
        scores = np.round(rng.random(n), 1)  # many ties on purpose
        windows = [(n // 3, n // 3 + 20), (2 * n // 3, 2 * n // 3 + 40)]
        for a, _ in windows:
            scores[a + rng.integers(0, 10)] = 0.95
        files.append(_events(scores, windows))
    for profile in PROFILES.values():
        candidates = sorted({float(s) for f in files for s in f.scores} | {math.inf})
        brute = [score_at(files, profile, t).raw for t in candidates]
        best = max(brute)
        # The highest threshold among the best totals, as the reference keeps the first.
        expected = max(t for t, r in zip(candidates, brute, strict=True) if r >= best - 1e-12)
        chosen = best_threshold(files, profile)
        assert chosen == expected
        assert score_at(files, profile, chosen).raw == pytest.approx(best, abs=1e-12)


def test_nothing_detected_wins_when_every_detection_costs() -> None:
    # Detections only outside windows: every threshold is worse than the null detector.
    scores = np.zeros(40)
    scores[[20, 30]] = 1.0
    ev = [_events(scores, [(8, 12)])]
    assert best_threshold(ev, STANDARD) == math.inf
    assert optimised(ev, STANDARD).score == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        _events([0.0, math.nan, 0.0], [])
    with pytest.raises(ValueError, match="one score per row"):
        file_events(np.zeros(3), _micros(4), [])
    with pytest.raises(ValueError, match="no label windows"):
        score_at([_events(np.zeros(10), [])], STANDARD, 0.5)


def test_likelihood_falls_back_to_the_alarm_only_when_it_is_never_there() -> None:
    raised = np.array([False, True, False, False])
    absent = [NabRun("a", np.full(4, np.nan), raised)]
    scores, note = detector_scores(absent)
    assert "falls back" in note
    np.testing.assert_array_equal(scores[LIKELIHOOD][0], [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(scores[ALARM][0], [0.0, 1.0, 0.0, 0.0])
    present = [NabRun("a", np.array([np.nan, 0.2, 0.999, 1.0]), raised)]
    scores, note = detector_scores(present)
    assert "1 of 4 rows" in note
    assert "1 rows are exactly 1.0" in note
    np.testing.assert_array_equal(scores[LIKELIHOOD][0], [0.0, 0.2, 0.999, 1.0])


def test_reference_output_is_parsed() -> None:
    text = ("standard: 15.26 (threshold 1.0000, files 35)\n"
            "reward_low_FP_rate: 0.00 (threshold inf, files 35)\n"
            "reward_low_FN_rate: -3.50 (threshold 0.5000, files 35)\n")
    parsed = parse_reference_output(text)
    assert parsed == {"standard": (15.26, 1.0, 35), "low FP": (0.0, math.inf, 35),
                      "low FN": (-3.5, 0.5, 35)}


# --- against the reference scorer on a generated corpus ------------------------------------


def _corpus(root: Path, rng: np.random.Generator) -> list[NabFile]:
    """A NAB-format folder: data/<folder>/<file>.csv and labels/combined_windows.json."""
    labels: dict[str, list[list[str]]] = {}
    fmt = "%Y-%m-%d %H:%M:%S"
    for k in range(7):
        n = int(rng.integers(150, 1600))
        start = START + timedelta(days=int(rng.integers(0, 300)))
        stamps = [start + timedelta(minutes=5 * i) for i in range(n)]
        name = f"{'realThings' if k % 2 else 'artificialThings'}/series_{k}.csv"
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        values = rng.normal(size=n)
        path.write_text("timestamp,value\n" + "".join(
            f"{t.strftime(fmt)},{v!r}\n" for t, v in zip(stamps, values.tolist(), strict=True)),
            encoding="utf-8")
        windows: list[list[str]] = []
        cuts = np.sort(rng.choice(np.arange(2, n - 2), size=2 * int(rng.integers(0, 4)),
                                  replace=False))
        for a, b in cuts.reshape(-1, 2):
            b = max(b, a + 1)  # at least two rows: the reference divides by the width
            windows.append([stamps[a].strftime(fmt + ".%f"), stamps[b].strftime(fmt + ".%f")])
        if k == 0:  # one window reaching past the data's start (rows in probation)
            windows.insert(0, [(start - timedelta(hours=2)).strftime(fmt + ".%f"),
                               stamps[5].strftime(fmt + ".%f")])
        if k == 1:  # one window after the last row: no rows, dropped by both scorers
            windows.append([(stamps[-1] + timedelta(days=1)).strftime(fmt + ".%f"),
                            (stamps[-1] + timedelta(days=2)).strftime(fmt + ".%f")])
        labels[name] = windows
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels), "utf-8")
    return nab_files(root)


def test_the_corpus_is_read_in_label_order_with_windows_in_microseconds(tmp_path: Path) -> None:
    files = _corpus(tmp_path / "nab", np.random.default_rng(11))
    names = [f.name for f in files]
    assert names == sorted(names)
    assert len(names) == 7
    first = files[0]
    assert first.stamps[0] == first.stamps[0].strip()
    np.testing.assert_array_equal(np.diff(first.micros), FIVE_MIN)
    np.testing.assert_allclose(first.times, first.micros / 1e6)
    # series_1 has a window after its last row: read, and then without rows.
    late = next(f for f in files if f.name.endswith("series_1.csv"))
    assert late.windows[-1][0] > late.micros[-1]
    assert len(window_rows(late.micros, late.windows)) == len(late.windows) - 1
    only = nab_files(tmp_path / "nab", only=[names[2]])
    assert [f.name for f in only] == [names[2]]
    np.testing.assert_array_equal(only[0].values, files[2].values)
    assert nab_files(tmp_path / "nowhere") == []


def test_score_files_hold_timestamps_and_exact_scores_only(tmp_path: Path) -> None:
    f = NabFile("folder/a.csv", ["2014-04-01 00:00:00", "2014-04-01 00:05:00"], _micros(2),
                np.array([12.5, 13.5]), [])
    path = write_scores(tmp_path, f, np.array([0.1, 1 / 3]))
    assert path == tmp_path / "folder" / "a.csv"
    assert path.read_text(encoding="utf-8") == (
        "timestamp,anomaly_score\n2014-04-01 00:00:00,0.1\n"
        "2014-04-01 00:05:00,0.3333333333333333\n")
    with pytest.raises(ValueError, match=r"\(3,\) scores for 2 rows"):
        write_scores(tmp_path, f, np.zeros(3))


def test_our_scorer_agrees_with_the_reference_scorer(tmp_path: Path) -> None:
    python = reference_python()
    why = reference_missing(REFERENCE, python)
    if why is not None:
        pytest.skip(f"cannot check against the reference NAB scorer: {why}")
    rng = np.random.default_rng(11)
    files = _corpus(tmp_path / "nab", rng)
    assert len(files) == 7
    assert sum(len(window_rows(f.micros, f.windows)) for f in files) >= 4
    detectors: dict[str, list[np.ndarray]] = {"continuous": [], "alarm-like": []}
    for f in files:
        n = f.values.size
        smooth = np.round(rng.random(n) ** 3, 3)  # ties at 3 decimals, mostly low
        for a, b in window_rows(f.micros, f.windows):  # some high scores inside windows
            smooth[a + int(rng.integers(0, b - a + 1))] = round(float(rng.uniform(0.6, 1)), 3)
        detectors["continuous"].append(smooth)
        detectors["alarm-like"].append((rng.random(n) < 0.01).astype(float))
    for name, scores in detectors.items():
        folder = tmp_path / "scores" / name
        for f, s in zip(files, scores, strict=True):
            write_scores(folder, f, s)
        ref = reference_scores(REFERENCE, python, tmp_path / "nab" / "data",
                               tmp_path / "nab" / "labels" / "combined_windows.json", folder)
        events = [file_events(s, f.micros, f.windows) for f, s in zip(files, scores, strict=True)]
        for profile, weights in PROFILES.items():
            ours = optimised(events, weights)
            ref_score, ref_threshold, ref_files = ref[profile]
            assert ref_files == len(files)
            assert ours.score == pytest.approx(ref_score, abs=0.0051), (name, profile)
            if math.isinf(ref_threshold):
                assert math.isinf(ours.threshold), (name, profile)
            else:
                assert ours.threshold == pytest.approx(ref_threshold, abs=5.1e-5), (name, profile)
