"""The quality benchmark: SKAB's scores by hand, the decimator, and a run on generated data.

Nothing here reads the real data folder: the smoke runs write tiny SKAB- and CWRU-format files
into ``tmp_path``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ is not an installed package: ``python -m benchmarks`` runs from the repository
# root, so the tests put the root on the path the same way.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import quality  # noqa: E402
from benchmarks.harness import Bench, Mode  # noqa: E402
from benchmarks.quality_cwru import FAULTS, HEALTHY_FILE, frame_hop, run_cwru  # noqa: E402
from benchmarks.quality_data import (  # noqa: E402
    SkabFile,
    decimate,
    frames,
    lowpass_taps,
    read_skab,
)
from benchmarks.quality_metrics import (  # noqa: E402
    NAB_PROFILES,
    confusion,
    nab_scores,
    nab_tally,
    nab_windows,
    position_score,
    predicted_changepoints,
)
from benchmarks.quality_nab import ALARM, LIKELIHOOD, QUICK_NAB  # noqa: E402
from benchmarks.quality_skab import (  # noqa: E402
    ASSET,
    TRAIN_ROWS,
    label_file,
    shares,
    skab_configs,
)

from shopfloor.tools.replay import ReplayOptions, replay  # noqa: E402

STANDARD = NAB_PROFILES["standard"]


# --- point-wise scores ---------------------------------------------------------------------


def test_f1_far_mar_by_hand() -> None:
    true = [1, 1, 1, 0, 0, 0, 0, 1]
    pred = [1, 1, 0, 1, 0, 0, 0, 0]
    c = confusion(true, pred)
    assert (c.tp, c.fp, c.tn, c.fn) == (2, 1, 3, 2)
    assert c.f1 == pytest.approx(2 / (2 + (2 + 1) / 2))  # 0.571
    assert c.far == pytest.approx(25.0)  # 1 of 4 normal rows
    assert c.mar == pytest.approx(50.0)  # 2 of 4 anomalous rows
    both = c + c  # pooled over files: counts add, rates are of the pooled counts
    assert (both.tp, both.fp, both.tn, both.fn) == (4, 2, 6, 4)
    assert both.f1 == pytest.approx(c.f1)


def test_confusion_refuses_other_labels_and_lengths() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        confusion([0, 2], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        confusion([0, 1], [0, 1, 1])


def test_changepoints_are_the_edges_of_the_output() -> None:
    times = np.arange(10.0, 16.0)
    np.testing.assert_array_equal(predicted_changepoints(times, [0, 1, 1, 0, 0, 1]),
                                  [11.0, 13.0, 15.0])
    # An output that starts at 1 starts with a rising edge (SKAB's prediction_cp[0]).
    np.testing.assert_array_equal(predicted_changepoints(times, [1, 1, 0, 0, 0, 0]), [10.0, 12.0])
    assert predicted_changepoints(times, np.zeros(6, dtype=bool)).size == 0


# --- NAB -----------------------------------------------------------------------------------


def test_windows_follow_each_changepoint_and_overlaps_are_cut_from_the_later_one() -> None:
    assert nab_windows([200.0, 0.0, 50.0], 60.0) == [(0.0, 60.0), (60.0, 110.0), (200.0, 260.0)]
    with pytest.raises(ValueError, match="width"):
        nab_windows([0.0], 0.0)


def test_position_score_runs_from_a_tp_at_the_start_to_a_fp_at_the_end() -> None:
    a_tp, a_fp, _ = STANDARD
    assert position_score(0.0, a_tp, a_fp) == pytest.approx(a_tp, abs=1e-12)
    assert position_score(1.0, a_tp, a_fp) == pytest.approx(a_fp, abs=1e-12)
    assert position_score(5.0, a_tp, a_fp) == pytest.approx(a_fp, abs=1e-12)  # last point
    # Halfway: index 500 of 1000 points over [-pi/2, pi/2] is x = pi * (500/999 - 1/2).
    x = math.pi * (500 / 999 - 0.5)
    half = (a_tp - a_fp) / 2
    expected = half * (1 - math.tanh(x) / math.tanh(math.pi / 2)) + a_fp
    assert position_score(0.5, a_tp, a_fp) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.444, abs=1e-3)
    # Monotone: later is never better.
    scores = [position_score(p, a_tp, a_fp) for p in np.linspace(0.0, 1.0, 101)]
    assert all(b <= a for a, b in itertools.pairwise(scores))


def test_detection_at_the_window_start_scores_a_tp_and_at_the_right_edge_about_a_fp() -> None:
    windows = nab_windows([100.0], 60.0)
    start = nab_tally(windows, [100.0])
    edge = nab_tally(windows, [160.0])
    assert start.positions == (0.0,)
    assert edge.positions == (1.0,)
    assert start.raw(STANDARD) == pytest.approx((1.0, -1.0, 1.0))
    assert edge.raw(STANDARD)[0] == pytest.approx(-0.11, abs=1e-12)
    assert start.false_positives == edge.false_positives == 0


def test_only_the_first_detection_in_a_window_counts() -> None:
    windows = nab_windows([100.0], 60.0)
    tally = nab_tally(windows, [130.0, 101.0, 150.0])  # unsorted on purpose
    assert len(tally.positions) == 1
    assert tally.positions[0] == pytest.approx(1 / 60)
    assert tally.false_positives == 0
    assert tally.raw(STANDARD)[0] == pytest.approx(position_score(1 / 60, 1.0, -0.11))


def test_a_detection_outside_windows_costs_a_fp_and_a_missed_window_a_fn() -> None:
    windows = nab_windows([100.0, 300.0], 60.0)
    tally = nab_tally(windows, [50.0, 100.0, 200.0, 400.0])
    assert tally.false_positives == 3  # before, between and after the windows
    assert tally.missed == 1
    for profile in NAB_PROFILES.values():
        a_tp, a_fp, a_fn = profile
        assert tally.raw(profile) == pytest.approx((a_tp + 3 * a_fp + a_fn, 2 * a_fn, 2 * a_tp))
    # Standard: S = 1 - 0.33 - 1, S_null = -2, S_perfect = 2.
    assert nab_scores([tally])["standard"] == pytest.approx(100 * (1 - 0.33 - 1 + 2) / 4)


def test_the_shared_instant_of_cut_windows_belongs_to_both() -> None:
    windows = nab_windows([0.0, 30.0], 60.0)  # (0, 60) and (60, 90)
    tally = nab_tally(windows, [60.0])
    assert tally.positions == (1.0, 0.0)
    assert tally.false_positives == 0


def test_null_and_perfect_detectors_score_0_and_100_over_several_files() -> None:
    files = [[0.0, 100.0, 344.0, 404.0], [10.0], []]
    windows = [nab_windows(cps, 60.0) for cps in files]
    null = nab_scores(nab_tally(w, []) for w in windows)
    perfect = nab_scores(nab_tally(w, cps) for w, cps in zip(windows, files, strict=True))
    for profile in NAB_PROFILES:
        assert null[profile] == pytest.approx(0.0, abs=1e-12)
        assert perfect[profile] == pytest.approx(100.0)
    # Files add before normalising: one file perfect, one missed -> halfway.
    half = nab_scores([nab_tally(nab_windows([0.0]), [0.0]), nab_tally(nab_windows([0.0]), [])])
    assert half["standard"] == pytest.approx(50.0)
    # SKAB's cut makes a detection exactly at a changepoint whose window overlapped the
    # previous one count for the previous window, so "perfect" falls short there, as in SKAB.
    close = nab_windows([0.0, 57.0], 60.0)
    assert nab_tally(close, [0.0, 57.0]).positions == (0.0, None)
    # Without any true changepoint every detection is a false positive.
    assert nab_tally([], [1.0, 2.0]).false_positives == 2


def test_alarm_shares_count_rows_in_and_out_of_faults_and_carried_alarms() -> None:
    n = TRAIN_ROWS + 4
    fault = np.zeros(n, dtype=bool)
    fault[TRAIN_ROWS + 2:] = True
    data = SkabFile("v/0", np.arange(n, dtype=float), ("x",), {"x": np.zeros(n)}, fault,
                    np.zeros(n, dtype=bool))
    carried = np.zeros(n, dtype=bool)
    carried[TRAIN_ROWS - 5: TRAIN_ROWS + 3] = True  # raised in training, still on at the start
    late = np.zeros(n, dtype=bool)
    late[-1] = True
    labels = {"x": carried, "asset": late, "any": carried | late}
    x, asset = shares([data, data], [labels, labels])
    assert (x.alarm, x.anomalous_rows, x.normal_rows, x.active_at_start) == ("x", 2, 4, 2)
    assert (asset.alarm, asset.anomalous_rows, asset.normal_rows, asset.active_at_start) == (
        "asset", 2, 0, 0)


# --- decimation ----------------------------------------------------------------------------


def _amplitude(hz: float, fs: float = 48_000.0, seconds: float = 1.0) -> float:
    t = np.arange(int(fs * seconds)) / fs
    y = decimate(np.sin(2 * np.pi * hz * t), 4)[50:-50]
    # Amplitude by least squares on sin/cos at the tone's frequency (after decimation, the
    # tone above Nyquist would appear at its alias, so fit there too).
    t_out = (len(lowpass_taps(4)) // 2 + 4 * np.arange(y.size + 100)[50:-50]) / fs
    f = hz if hz < 6000.0 else abs(hz - 12_000.0 * round(hz / 12_000.0))
    basis = np.column_stack([np.sin(2 * np.pi * f * t_out), np.cos(2 * np.pi * f * t_out)])
    coef = np.linalg.lstsq(basis, y, rcond=None)[0]
    return float(np.hypot(*coef))


@pytest.mark.parametrize("hz", [100.0, 1000.0, 3000.0, 4500.0])
def test_a_tone_below_the_new_nyquist_passes_within_one_percent(hz: float) -> None:
    assert _amplitude(hz) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("hz", [6500.0, 9000.0, 15_000.0, 23_000.0])
def test_a_tone_above_the_new_nyquist_is_attenuated_more_than_40_db(hz: float) -> None:
    assert 20 * math.log10(_amplitude(hz)) < -40.0


def test_decimate_keeps_time_alignment_and_validates() -> None:
    taps = lowpass_taps(4)
    assert taps.size % 2 == 1
    assert taps.sum() == pytest.approx(1.0)
    x = np.sin(2 * np.pi * 50.0 * np.arange(9600) / 48_000.0)
    y = decimate(x, 4)
    centre = taps.size // 2
    np.testing.assert_allclose(y, x[centre::4][: y.size], atol=1e-3)
    with pytest.raises(ValueError, match="factor"):
        lowpass_taps(1)
    with pytest.raises(ValueError, match="at least"):
        decimate(np.zeros(10), 4)


def test_frames_hop_through_the_signal() -> None:
    f = frames(np.arange(10.0), 4, 3)
    np.testing.assert_array_equal(f, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])
    assert frames(np.arange(3.0), 4, 1).shape == (0, 4)


# --- generated data folder -----------------------------------------------------------------

SENSORS = ("Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
           "Thermocouple", "Voltage", "Volume Flow RateRMS")


def _skab_csv(path: Path, rng: np.random.Generator, rows: int = 700,
              healthy: bool = False) -> None:
    """A SKAB-format experiment: correlated normal sensors, a fault in rows 500-599; or, with
    ``healthy``, the anomaly-free recording's format (no fault, no label columns)."""
    anomaly = np.zeros(rows)
    changepoint = np.zeros(rows)
    common = rng.normal(size=rows)
    values = 0.5 * common[:, None] + rng.normal(size=(rows, len(SENSORS)))
    if not healthy:
        anomaly[500:600] = 1.0
        changepoint[[500, 600]] = 1.0
        values[500:600, 2:4] += 6.0  # current and pressure step while the valve is shut
    start = datetime(2020, 3, 9, 10, 14, 33)
    labels = [] if healthy else ["anomaly", "changepoint"]
    lines = [";".join(["datetime", *SENSORS, *labels])]
    for i in range(rows):
        stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        cells = [stamp, *(f"{v:.6g}" for v in values[i])]
        if not healthy:
            cells += [f"{anomaly[i]:.1f}", f"{changepoint[i]:.1f}"]
        lines.append(";".join(cells))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _cwru_npz(path: Path, samples: int, rng: np.random.Generator, impulses: bool,
              rate: float = 12_000.0, start: int = 0) -> None:
    x = 0.07 * rng.normal(size=samples)
    if impulses:  # from ``start`` on, a defect every 1/162 s (BPFI): 3 kHz resonance bursts
        t = np.arange(samples) / rate
        phase = (t * 162.0) % 1.0
        x[start:] += (1.5 * np.exp(-phase * 60.0) * np.sin(2 * np.pi * 3000.0 * t))[start:]
    arrays = {"DE": x[:, None], "FE": 0.5 * x[:, None]}
    if impulses:
        arrays["BA"] = 0.1 * x[:, None]
    np.savez(path, **arrays)  # type: ignore[arg-type]


def _nab_corpus(root: Path, rng: np.random.Generator, rows: int = 800) -> None:
    """The quick run's NAB files, 5 minutes apart: files with "NoAnomaly" in their folder are
    noise, the others step by 8 sigma at row 500 inside a label window on rows 490-560."""
    labels: dict[str, list[list[str]]] = {}
    start = datetime(2014, 2, 1)
    stamps = [start + timedelta(minutes=5 * i) for i in range(rows)]
    for name in QUICK_NAB:
        values = 50.0 + rng.normal(size=rows)
        labels[name] = []
        if "NoAnomaly" not in name:
            values[500:] += 8.0
            labels[name] = [[stamps[490].strftime("%Y-%m-%d %H:%M:%S.%f"),
                             stamps[560].strftime("%Y-%m-%d %H:%M:%S.%f")]]
        path = root / "nab" / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("timestamp,value\n" + "".join(
            f"{t:%Y-%m-%d %H:%M:%S},{v:.6f}\n" for t, v in zip(stamps, values, strict=True)),
            encoding="utf-8")
    (root / "nab" / "labels").mkdir(parents=True)
    (root / "nab" / "labels" / "combined_windows.json").write_text(json.dumps(labels), "utf-8")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    for name in ("valve1/0", "valve1/1", "valve2/0"):
        _skab_csv(root / "skab" / f"{name}.csv", rng)
    _skab_csv(root / "skab" / "anomaly-free" / "anomaly-free.csv", rng, 2800, healthy=True)
    cwru = root / "cwru"
    cwru.mkdir()
    # 5.1 s healthy at 48 kHz, as the real file (3 s to fit, a held-back part, a control),
    # and 0.5 s of each fault.
    _cwru_npz(cwru / HEALTHY_FILE, 244_000, rng, impulses=False)
    for name in FAULTS.values():
        _cwru_npz(cwru / name, 6_000, rng, impulses=True)
    _nab_corpus(root, rng)
    return root


def test_the_replay_and_the_benchmark_label_rows_alike(data: Path) -> None:
    path = data / "skab" / "valve1" / "0.csv"
    out = io.StringIO()
    replay(path, out, options=ReplayOptions(exclude=("anomaly", "changepoint"), asset=ASSET))
    rows = csv.DictReader(io.StringIO(out.getvalue()))
    replayed = np.array([int(r["anomaly"]) for r in rows], dtype=bool)
    skab = read_skab(path)
    labels = label_file(skab_configs(skab.columns)["default"], skab)
    np.testing.assert_array_equal(labels["any"], replayed)
    assert labels["any"].any(), "the generated fault should raise an alarm"
    assert not (labels["asset"] & ~labels["any"]).any()


def test_quick_run_on_generated_data_writes_tables_and_figures(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert quality.main(["--data", str(data), "--out", str(tmp_path), "--quick"]) == 0
    text = (tmp_path / "quality.md").read_text(encoding="utf-8")
    assert "3 files (valve1/0, valve1/1, valve2/0)" in text
    assert "| Conv-AE (published) | 0.78 | 13.55 | 28.02 |" in text
    assert "| MSCRED (published) | 32.42 | 16.53 | 40.28 |" in text
    assert "| inner race (IR) |" in text
    assert "| default | asset |" in text  # the alarm breakdown
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert results["skipped"] == []
    figures = {f["name"]: f for f in results["figures"]}
    from benchmarks.quality_report import ROWS

    # F1 and NAB per table row and the SKAB control; CWRU held back, control, one fault's
    # delay and the defects named; NAB standard of two detectors.
    assert len(figures) == 2 * len(ROWS) + 1 + 4 + 2
    for f in figures.values():
        assert f["area"] == "quality"
        assert f["repeats"] == 1
        for key in ("median", "reference_median", "ratio"):
            assert math.isfinite(f[key]), (f["name"], key)
    quiet = figures["SKAB control: healthy rows without an alarm, defaults"]
    assert 0.0 <= quiet["median"] <= 100.0
    assert "| control FAR % |" in text
    f1 = figures["SKAB F1, (a) defaults (z-score signals + asset), any alarm"]
    assert 0.0 < f1["median"] <= 1.0
    assert f1["ratio"] == pytest.approx(f1["median"] / 0.78)
    delay = figures["CWRU inner race (IR): seconds from the join to the alarm"]
    assert delay["unit"] == "s"
    assert delay["better"] == "lower"
    assert 0.0 < delay["median"] < 0.5
    for control in ("held-back healthy part", "healthy-to-healthy control join"):
        silent = figures[f"CWRU {control}: alarms"]
        assert (silent["median"], silent["passed"], silent["ratio"]) == (0, True, 1.0)
    named = figures["CWRU faults whose defect is named right at the alarm"]
    assert (named["median"], named["reference_median"]) == (1, 1)  # IR -> inner_race
    assert "| inner race (IR) | 3 |" in text  # raise_after frames: the earliest possible
    # NAB: every step is caught at its window's start by a raised alarm, and nothing else is
    # raised, so the alarm output scores near 100 (only the sigmoid's earliness costs).
    assert "5 files of `nab/data` (4000 rows" in text
    alarm = figures[f"NAB standard, {ALARM}"]
    assert alarm["reference_median"] == 66.6
    assert 90.0 < alarm["median"] <= 100.0
    assert alarm["ratio"] == pytest.approx(alarm["median"] / 66.6)
    assert figures[f"NAB standard, {LIKELIHOOD}"]["median"] > 0.0
    assert "reference scorer not run" in text  # no tools/ folder beside the generated data
    assert "## Synthetic suite (default configuration)" in text
    assert "| clean control | no alarm | no |" in text
    assert "quality" in (tmp_path / "results.md").read_text(encoding="utf-8")
    assert f"{len(figures)} figures" in capsys.readouterr().out


def test_cwru_controls_stay_silent_and_the_fault_alarms_and_is_named(data: Path) -> None:
    report = run_cwru(data / "cwru", ("inner race (IR)",))
    hop = report.hop
    assert hop == frame_hop(report.warmup_frames)
    # The fitted part holds the warm-up and a quarter more, in 3.0 s of frames.
    assert report.fit_frames == (36_000 - 2048) // hop + 1 >= 1.25 * report.warmup_frames
    assert report.fit_alarms == 0
    for healthy in (report.held_back, report.control):
        assert healthy.alarms == 0, healthy
        assert healthy.named == (("none", healthy.frames),)
    fitted = (report.fit_frames - 1) * hop + 2048
    decimated = (244_000 - len(lowpass_taps(4))) // 4 + 1
    assert report.held_back.frames == (decimated - fitted - 2048) // hop + 1
    # The control's join is one a step detector sees: the slow part jumps many times more
    # than it ever does between neighbouring samples of the fitted part.
    assert report.join_step_ratio > 10.0
    (fault,) = report.faults
    assert fault.frames_to_alarm == 3  # raise_after frames: the earliest possible
    assert fault.seconds_to_alarm == fault.earliest_seconds == (2 * hop + 2048) / 12_000.0
    assert (fault.defect_at_alarm, fault.truth, fault.named_right) == (
        "inner_race", "inner_race", True)
    assert fault.named_while_active[0][0] == "inner_race"


def test_a_fault_in_the_held_back_part_fails_its_figure(tmp_path: Path) -> None:
    # The protocol can fail: a "healthy" recording that turns faulty after its fitted part
    # alarms on the held-back part, and the figure says so.
    rng = np.random.default_rng(8)
    folder = tmp_path / "cwru"
    folder.mkdir()
    _cwru_npz(folder / HEALTHY_FILE, 244_000, rng, impulses=True, rate=48_000.0,
              start=4 * 40_000)
    for name in FAULTS.values():
        _cwru_npz(folder / name, 6_000, rng, impulses=True)
    bench = Bench(Mode.of(True), progress=lambda msg: None, area="quality")
    report = quality._cwru(bench, folder)
    assert report is not None
    assert report.held_back.alarms >= 1
    figure = next(f for f in bench.figures if f.name.startswith("CWRU held-back"))
    assert figure.passed is False
    assert figure.ratio < 1.0


def test_a_missing_data_folder_is_a_recorded_skip(tmp_path: Path) -> None:
    bench = Bench(Mode.of(True), progress=lambda msg: None, area="quality")
    quality.run(bench, data=tmp_path / "nowhere", out=tmp_path)
    assert bench.figures == []
    assert [s.name for s in bench.skipped] == ["SKAB", "NAB", "CWRU"]
    assert all("--data" in s.reason for s in bench.skipped)
    text = (tmp_path / "quality.md").read_text(encoding="utf-8")
    assert "SKAB: not run" in text
    assert "CWRU: not run" in text
    assert "NAB: not run" in text
    assert "## Synthetic suite" in text  # needs no data


def test_under_the_harness_quality_md_goes_to_its_out_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert quality._harness_out() is None  # pytest is the program, not the harness
    harness = SimpleNamespace(__spec__=SimpleNamespace(name="benchmarks.__main__"))
    monkeypatch.setitem(sys.modules, "__main__", harness)
    monkeypatch.setattr(sys, "argv", ["benchmarks", "quality", "--out", str(tmp_path)])
    assert quality._harness_out() == tmp_path


@pytest.mark.parametrize("folder", ["nowhere", "empty"])
def test_a_data_folder_that_is_not_there_is_exit_2_and_keeps_the_old_results(
    tmp_path: Path, folder: str, capsys: pytest.CaptureFixture[str],
) -> None:
    # It ran the synthetic suite alone, exited 0 and overwrote results.json with no figures.
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("old", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        quality.main(["--data", str(tmp_path / folder), "--out", str(out), "--quick"])
    assert exit_.value.code == 2
    assert "nothing was run or written" in capsys.readouterr().err
    assert (out / "results.json").read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
