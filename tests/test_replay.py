"""``shopfloor replay``: the documented output, label columns kept out of the signals, the
point-wise report, ``--warmup``, signal times, and an exit-2 error naming file, line and column
for every class of bad input."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray

import shopfloor.tools.replay as replay_module
from shopfloor.cli import main
from shopfloor.config import load_config
from shopfloor.scoring.pipeline import AssetBatch, Plant, SignalBatch
from shopfloor.tools.replay import ReplayOptions, replay
from shopfloor.tools.synthetic import SIGNALS, write_pump_example

#: The alarms' default warm-up ([defaults.alarm] warmup): where a default replay's report starts.
WARMUP = 400


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def pump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pump_example(tmp_path_factory.mktemp("pump") / "pump.csv")


def test_replay_writes_documented_csv_and_png(
    pump: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, png = tmp_path / "scores.csv", tmp_path / "replay.png"
    code = main(
        [
            "replay",
            str(pump),
            "--out",
            str(out),
            "--plot",
            str(png),
            "--exclude",
            "anomaly",
            "--asset",
            "pump",
        ]
    )
    assert code == 0
    with out.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with pump.open(encoding="utf-8") as fh:
        source = list(csv.DictReader(fh))
    assert len(rows) == len(source)
    assert list(rows[0]) == [
        "time",
        "asset_score",
        "asset_likelihood",
        "threshold",
        "anomaly",
        "top_signal",
        *(f"{s}_{what}" for s in SIGNALS for what in ("score", "likelihood")),
    ]
    assert [r["time"] for r in rows] == [r["time"] for r in source]
    assert {r["anomaly"] for r in rows} <= {"0", "1"}
    assert {r["top_signal"] for r in rows} <= {*SIGNALS, ""}
    scores = np.array([float(r["asset_score"]) for r in rows])
    assert np.isfinite(scores).all()
    anomaly = np.array([r["anomaly"] == "1" for r in rows])
    labels = np.array([r["anomaly"] == "1" for r in source])
    # The example's faults are obvious: most alarm rows must fall on them.
    assert anomaly.sum() > 0
    assert (anomaly & labels).sum() > 0.5 * anomaly.sum()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000
    err = capsys.readouterr().err
    assert "replayed 8000 rows, 5 signals" in err
    assert "ended by adopting a new baseline" in err
    # --exclude keeps a column out of the signals, not out of the report.
    assert f"against 'anomaly' after a warm-up of {WARMUP} rows ({8000 - WARMUP} rows): F1 " in err
    assert "label-like" not in err  # nothing left to leave out


def test_replay_is_independent_of_chunk_size(pump: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shopfloor.tools.replay as replay_module

    options = ReplayOptions(exclude=("anomaly",))
    whole = io.StringIO()
    replay(pump, whole, options=options)
    monkeypatch.setattr(replay_module, "CHUNK_ROWS", 777)
    chunked = io.StringIO()
    replay(pump, chunked, options=options)
    assert whole.getvalue() == chunked.getvalue()


def test_empty_cells_are_counted_not_fatal(tmp_path: Path) -> None:
    rows = ["t,a,b"] + [f"{i},{np.sin(i):.4f},{np.cos(i):.4f}" for i in range(300)]
    rows[50] = "49,,0.5"
    data = _write(tmp_path / "d.csv", "\n".join(rows) + "\n")
    summary = replay(data, io.StringIO())
    assert summary.rows == 300
    assert summary.rejected["asset/a"] == {"nan": 1}


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("t,a\n1,2\n", ["--time-column", "time"], "d.csv:1: time column 'time' not found"),
        ("t,a\n1,2\n", ["--exclude", "label"], "d.csv:1: excluded column 'label' not found"),
        ("t,a\n1,2\n2,x\n", [], "d.csv:3: column 'a': 'x' is not a number"),
        ("t,a\n1,2\n2,3,4\n", [], "d.csv:3: expected 2 fields, found 3"),
        (
            "t,a\n2,2\n1,3\n",
            ["--time-order", "stop"],
            "d.csv:3: t: time '1' is earlier than the row before",
        ),
        ("t,a\nyesterday,2\n", [], "d.csv:2: t: cannot read time 'yesterday'"),
        ("", [], "d.csv:1: the file is empty"),
        ("t,a\n1,2\n", ["--signal-column", "label"], "d.csv:1: signal column 'label' not found"),
        ("t,a\n1,2\n", ["--signal-column", "t"], "d.csv:1: column 't' cannot be a signal"),
        (
            "t,a,b\n1,2,3\n",
            ["--exclude", "b", "--signal-column", "b"],
            "d.csv:1: column 'b' cannot be a signal: it is excluded",
        ),
        ("t,Label\n1,0\n", [], "d.csv:1: no signal columns: 'Label' look like labels"),
        ("t,a,a\n1,2,3\n", [], "d.csv:1: column 'a' appears twice"),
    ],
)
def test_bad_input_exits_2_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, args: list[str], message: str
) -> None:
    data = _write(tmp_path / "d.csv", text)
    out = tmp_path / "scores.csv"
    assert main(["replay", str(data), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1  # one line, no traceback
    assert not out.exists()  # a failed replay leaves no half-written output


def test_missing_file_and_missing_config_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    assert "none.csv: cannot read" in capsys.readouterr().err
    data = _write(tmp_path / "d.csv", "t,a\n1,2\n")
    cfg = _write(tmp_path / "c.toml", '[[signals]]\nasset = "m"\nname = "b"\n')
    assert main(["replay", str(data), "--config", str(cfg), "--out", str(tmp_path / "o.csv")]) == 2
    assert "d.csv:1: column 'b' for signal m/b not found" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "d.csv", "t,a\n1,2\n")
    cfg = _write(tmp_path / "c.toml", '[[signals]]\nasset = "m"\nname = "a"\nkind = "wave"\n')
    assert main(["replay", str(data), "--config", str(cfg), "--out", str(tmp_path / "o.csv")]) == 2
    assert "c.toml:4: signals[0].kind: must be 'scalar' or 'frame'" in capsys.readouterr().err


def test_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write(tmp_path / "c.toml", '[[signals]]\nasset = "m"\nname = "a"\n')
    assert main(["check", "--config", str(cfg)]) == 0
    assert "ok (1 signals, 0 assets, 0 subscriptions)" in capsys.readouterr().out


# --- label-like columns ----------------------------------------------------------------------

START = datetime(2026, 3, 1, 6, 0, 0, tzinfo=UTC)


def _sensor_csv(
    path: Path,
    rows: int = 1200,
    fault: tuple[int, int] = (700, 800),
    extra: dict[str, list[str]] | None = None,
    sep: str = ",",
) -> tuple[Path, NDArray[np.bool_]]:
    """Two noisy sensors ``a`` and ``b`` one second apart; ``a`` steps up 8 sigma in ``fault``.

    Returns the path and the true labels (also written as the ``anomaly`` column).
    """
    rng = np.random.default_rng(11)
    a = rng.normal(10.0, 0.5, rows)
    b = rng.normal(-3.0, 0.2, rows)
    truth = np.zeros(rows, dtype=np.bool_)
    truth[fault[0] : fault[1]] = True
    a[truth] += 4.0
    extra = extra or {}
    header = ["time", "a", "b", "anomaly", *extra]
    lines = [sep.join(header)]
    for i in range(rows):
        stamp = (START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
        cells = [stamp, f"{a[i]:.5f}", f"{b[i]:.5f}", str(int(truth[i]))]
        lines.append(sep.join(cells + [v[i] for v in extra.values()]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, truth


def _scores(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_label_columns_named_like_labels_are_left_out_with_a_notice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SKAB's layout: ';'-separated, the labels 'anomaly' and 'changepoint' beside the sensors
    # (here 'Changepoint', since names are compared ignoring case).
    n = 1200
    cp = ["1" if i in (700, 799) else "0" for i in range(n)]
    data, _ = _sensor_csv(tmp_path / "skab.csv", n, extra={"Changepoint": cp}, sep=";")
    out = tmp_path / "s.csv"
    assert main(["replay", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert ("label-like columns left out of the signals: 'anomaly', 'Changepoint' (named like a "
            "label); --signal-column NAME scores one as a signal anyway") in err
    rows = _scores(out)
    assert [c for c in rows[0] if c.endswith("_score")] == ["asset_score", "a_score", "b_score"]
    summary = replay(data, io.StringIO())
    assert summary.label_columns == ("anomaly", "Changepoint")
    assert summary.signals == ("asset/a", "asset/b")
    # Forced in, a label column is a signal like any other, and no longer in the notice.
    assert main(["replay", str(data), "--out", str(out), "--signal-column", "Changepoint"]) == 0
    err = capsys.readouterr().err
    assert "left out of the signals: 'anomaly' (named like a label);" in err
    assert "Changepoint_score" in _scores(out)[0]


def test_columns_of_only_0_and_1_are_left_out_unless_forced_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 1200
    valve = [str((i // 37) % 2) for i in range(n)]  # a digital input: 0/1, named like a sensor
    # 0 and 1 in the first chunk of rows only: the decision is made from that chunk.
    late = ["" if i % 10 == 3 else str(i % 2) for i in range(60)] + ["2.5"] * (n - 60)
    data, _ = _sensor_csv(tmp_path / "d.csv", n, extra={"valve": valve, "late": late})
    monkeypatch.setattr(replay_module, "CHUNK_ROWS", 60)
    out = tmp_path / "s.csv"
    assert main(["replay", str(data), "--out", str(out), "--exclude", "anomaly"]) == 0
    err = capsys.readouterr().err
    assert ("label-like columns left out of the signals: 'valve', 'late' (only 0 and 1 in the "
            "first rows); --signal-column NAME") in err
    assert [c for c in _scores(out)[0] if c.endswith("_score")] == ["asset_score", "a_score",
                                                                      "b_score"]
    assert main(["replay", str(data), "--out", str(out), "--exclude", "anomaly",
                 "--signal-column", "valve", "--signal-column", "late"]) == 0
    err = capsys.readouterr().err
    assert "label-like" not in err
    rows = _scores(out)
    assert {"valve_score", "late_score"} <= set(rows[0])
    assert all(r["valve_score"] != "" for r in rows)  # scored, so not silently dropped


def test_a_config_names_its_own_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = _sensor_csv(tmp_path / "d.csv", 300)
    cfg = _write(tmp_path / "c.toml", '[[signals]]\nasset = "m"\nname = "anomaly"\n'
                                      '[[signals]]\nasset = "m"\nname = "a"\n')
    out = tmp_path / "s.csv"
    assert main(["replay", str(data), "--config", str(cfg), "--out", str(out)]) == 0
    assert "label-like" not in capsys.readouterr().err
    assert "anomaly_score" in _scores(out)[0]
    assert main(["replay", str(data), "--config", str(cfg), "--out", str(out),
                 "--signal-column", "anomaly"]) == 2
    assert "c.toml: signal columns (--signal-column) are for the default config" in (
        capsys.readouterr().err)


# --- the point-wise report and --warmup ------------------------------------------------------


def _report(truth: NDArray[np.bool_], scores: list[dict[str, str]], start: int) -> str:
    """The report line, counted here by hand from the scores file (not with
    shopfloor.tools.scores)."""
    tp = fp = tn = fn = 0
    for i in range(start, len(scores)):
        alarm, true = scores[i]["anomaly"] == "1", bool(truth[i])
        tp += alarm and true
        fp += alarm and not true
        tn += not alarm and not true
        fn += not alarm and true
    f1 = tp / (tp + (fn + fp) / 2)
    far = fp / (fp + tn) * 100
    mar = fn / (fn + tp) * 100
    return (f"against 'anomaly' after a warm-up of {start} rows ({tp + fp + tn + fn} rows): "
            f"F1 {f1:.3f}, FAR {far:.1f} %, MAR {mar:.1f} % (TP {tp}, FP {fp}, TN {tn}, FN {fn})")


def test_f1_far_mar_of_an_injected_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, truth = _sensor_csv(tmp_path / "d.csv")
    out = tmp_path / "s.csv"
    assert main(["replay", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    scores = _scores(out)
    assert _report(truth, scores, WARMUP) in err
    alarm = np.array([r["anomaly"] == "1" for r in scores])
    # The 8-sigma step is found, and the healthy rows stay quiet: the figures mean something.
    assert (alarm & truth).sum() >= 80
    assert (alarm & ~truth).sum() <= 30
    summary = replay(data, io.StringIO())
    assert summary.points is not None
    assert summary.truth_column == "anomaly"
    assert summary.report_from == WARMUP
    assert summary.points.tp == int((alarm & truth)[WARMUP:].sum())
    assert summary.points.fp == int((alarm & ~truth)[WARMUP:].sum())


def test_rows_with_an_empty_truth_are_not_counted_and_a_bad_one_stops_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _ = _sensor_csv(tmp_path / "d.csv")
    lines = data.read_text(encoding="utf-8").splitlines()
    blank = {450, 750}  # a healthy row and a fault row, both after the warm-up
    for i in blank:  # data row i is line i + 1 of the file (0-based, after the header)
        lines[i + 1] = lines[i + 1].rsplit(",", 1)[0] + ","
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = replay(data, io.StringIO())
    assert summary.points is not None
    p = summary.points
    assert min(blank) > WARMUP
    assert p.tp + p.fp + p.tn + p.fn == 1200 - WARMUP - len(blank)
    lines[900 + 1] = lines[900 + 1].rsplit(",", 1)[0] + ",2"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "s.csv"
    # In the first chunk, the column is no truth from the start ...
    assert main(["replay", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "no F1 report: label column 'anomaly' holds values other than 0 and 1" in err
    assert "F1 " not in err.split("no F1 report")[1]
    # ... in a later one, the report stops there rather than count a wrong truth.
    monkeypatch.setattr(replay_module, "CHUNK_ROWS", 500)
    assert main(["replay", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"no F1 report: {data}:902: column 'anomaly' holds '2', not 0 or 1" in err
    assert "F1 " not in err.split("no F1 report")[1]


def test_warmup_sets_the_alarm_warmup_and_where_the_report_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, truth = _sensor_csv(tmp_path / "d.csv")
    out = tmp_path / "s.csv"
    assert main(["replay", str(data), "--out", str(out)]) == 0
    default = np.array([r["anomaly"] == "1" for r in _scores(out)])
    assert default[700:750].any()  # with the default warm-up (400) the fault alarms at once
    capsys.readouterr()
    assert main(["replay", str(data), "--out", str(out), "--warmup", "750"]) == 0
    err = capsys.readouterr().err
    scores = _scores(out)
    warm = np.array([r["anomaly"] == "1" for r in scores])
    assert not warm[:750].any()  # the training rows raise nothing
    assert _report(truth, scores, 750) in err
    assert "(450 rows)" in err


def test_warmup_overrides_a_configs_defaults_but_not_a_signals_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(
        tmp_path / "c.toml",
        "[defaults.alarm]\nraise_after = 2\nwarmup = 50\n"
        '[[signals]]\nasset = "m"\nname = "a"\n'
        '[[signals]]\nasset = "m"\nname = "b"\nalarm = { warmup = 20 }\n',
    )
    config = load_config(cfg, defaults={"alarm": {"warmup": 750}})
    assert [dict(s.stage.alarm) for s in config.signals] == [
        {"raise_after": 2, "warmup": 750},
        {"raise_after": 2, "warmup": 20},
    ]
    assert dict(config.assets[0].stage.alarm) == {"raise_after": 2, "warmup": 750}
    bare = _write(tmp_path / "bare.toml", '[[signals]]\nasset = "m"\nname = "a"\n')
    assert dict(load_config(bare, defaults={"alarm": {"warmup": 7}}).signals[0].stage.alarm) == {
        "warmup": 7}
    # End to end: only signal a, whose warm-up now covers the start of the fault.
    data, _ = _sensor_csv(tmp_path / "d.csv")
    out = tmp_path / "s.csv"
    assert main(["replay", str(data), "--config", str(bare), "--out", str(out)]) == 0
    assert any(r["anomaly"] == "1" for r in _scores(out)[700:750])
    assert main(["replay", str(data), "--config", str(bare), "--out", str(out),
                 "--warmup", "750"]) == 0
    assert not any(r["anomaly"] == "1" for r in _scores(out)[:750])
    assert "after a warm-up of 750 rows (450 rows)" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-3", "2.5", "ten", "1e3", ""])
def test_warmup_must_be_a_whole_number_of_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    data = _write(tmp_path / "d.csv", "t,a\n1,2\n")
    out = tmp_path / "s.csv"
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(data), "--out", str(out), "--warmup", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --warmup: must be a whole number of rows, 0 or more; got" in err
    assert not out.exists()


# --- signal times and the new output columns -------------------------------------------------


class _RecordingPlant(Plant):
    """A real plant that also keeps the times it was given."""

    seen: ClassVar[list[NDArray[np.float64] | None]] = []

    def process(
        self, columns: Mapping[str, NDArray[np.float64]],
        times: NDArray[np.float64] | None = None,
    ) -> tuple[dict[str, SignalBatch], dict[str, AssetBatch]]:
        self.seen.append(None if times is None else np.array(times))
        return super().process(columns, times)


def test_the_time_column_reaches_the_plant_as_signal_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ISO stamps with a one-hour gap, one with a zone; and chunks smaller than the file.
    stamps = [START + timedelta(seconds=i) for i in range(150)]
    stamps += [START + timedelta(hours=1, seconds=i) for i in range(150)]
    text = ["t,a"] + [f"{s.strftime('%Y-%m-%d %H:%M:%S')},{np.sin(i):.4f}"
                      for i, s in enumerate(stamps)]
    text[200] = text[200].replace(" ", "T").replace(",", "+00:00,")
    data = _write(tmp_path / "d.csv", "\n".join(text) + "\n")
    monkeypatch.setattr(replay_module, "Plant", _RecordingPlant)
    monkeypatch.setattr(replay_module, "CHUNK_ROWS", 64)
    monkeypatch.setattr(_RecordingPlant, "seen", [])
    replay(data, io.StringIO())
    seen = _RecordingPlant.seen
    assert len(seen) == 5  # 300 rows in chunks of 64
    assert all(t is not None for t in seen)
    got = np.concatenate([t for t in seen if t is not None])
    np.testing.assert_array_equal(got, [s.timestamp() for s in stamps])
    assert got[150] - got[149] == 3600 - 149  # the gap is there in signal time


def test_likelihood_columns_and_adopted_counts_per_asset_and_signal(tmp_path: Path) -> None:
    data, _ = _sensor_csv(tmp_path / "d.csv", 600, fault=(300, 420),
                          extra={"c": [f"{np.cos(i / 9):.4f}" for i in range(600)]})
    cfg = _write(
        tmp_path / "c.toml",
        '[[signals]]\nasset = "m1"\nname = "a"\n[[signals]]\nasset = "m1"\nname = "b"\n'
        '[[signals]]\nasset = "m2"\nname = "c"\n',
    )
    out = io.StringIO()
    summary = replay(data, out, load_config(cfg))
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == [
        "time",
        *(f"m1.{c}" for c in ("asset_score", "asset_likelihood", "threshold", "anomaly",
                              "top_signal")),
        *(f"m2.{c}" for c in ("asset_score", "asset_likelihood", "threshold", "anomaly",
                              "top_signal")),
        *(f"{s}_{c}" for s in ("m1/a", "m1/b", "m2/c") for c in ("score", "likelihood")),
    ]
    for name in [c for c in rows[0] if c.endswith("likelihood")]:
        values = [float(r[name]) for r in rows if r[name] != ""]
        assert all(0.0 <= v <= 1.0 for v in values), name  # a probability, or empty
    assert sum(summary.alarms_raised.values()) >= 1  # the fault on m1/a alarms
    assert set(summary.adopted) == set(summary.alarms_raised) == {"m1/a", "m1/b", "m2/c", "m1"}
    for key, count in summary.adopted.items():
        assert 0 <= count <= summary.alarms_raised[key]  # only a raised alarm can adopt
