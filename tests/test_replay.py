"""``shopfloor replay``: the documented output, and an exit-2 error naming file, line and column
for every class of bad input."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from shopfloor.cli import main
from shopfloor.replay import ReplayOptions, replay
from shopfloor.synthetic import SIGNALS, write_pump_example


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
        "threshold",
        "anomaly",
        "top_signal",
        *(f"{s}_score" for s in SIGNALS),
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
    assert "replayed 8000 rows, 5 signals" in capsys.readouterr().err


def test_replay_is_independent_of_chunk_size(pump: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shopfloor.replay as replay_module

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
        ("t,a\n2,2\n1,3\n", [], "d.csv:3: t: time '1' is earlier than the row before"),
        ("t,a\nyesterday,2\n", [], "d.csv:2: t: cannot read time 'yesterday'"),
        ("", [], "d.csv:1: the file is empty"),
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
