"""``shopfloor replay`` reading the CSVs found in the wild: columns that look like an index or a
time, epoch numbers in any unit, rows out of time order (NAB's machine temperature), common time
formats and ``--time-format``, pandas' unnamed index column, decimal commas, text columns and a
wrong separator. Every case runs the command line on a file written to ``tmp_path``."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from numpy.typing import NDArray

import shopfloor.tools.replay as replay_module
from shopfloor.cli import main
from shopfloor.scoring.pipeline import AssetBatch, Plant, SignalBatch

START = datetime(2026, 3, 1, 6, 0, 0, tzinfo=UTC)
#: NAB's machine temperature file, beside the clone as the shared data README describes it.
NAB_MACHINE_TEMPERATURE = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "nab" / "data" / "realKnownCause"
    / "machine_temperature_system_failure.csv"
)


class _RecordingPlant(Plant):
    """A real plant that also keeps the times and values it was given."""

    times: ClassVar[list[NDArray[np.float64]]] = []
    columns: ClassVar[list[dict[str, NDArray[np.float64]]]] = []

    def process(
        self, columns: Mapping[str, NDArray[np.float64]],
        times: NDArray[np.float64] | None = None,
    ) -> tuple[dict[str, SignalBatch], dict[str, AssetBatch]]:
        assert times is not None
        self.times.append(np.array(times))
        self.columns.append({k: np.array(v) for k, v in columns.items()})
        return super().process(columns, times)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> type[_RecordingPlant]:
    monkeypatch.setattr(replay_module, "Plant", _RecordingPlant)
    monkeypatch.setattr(_RecordingPlant, "times", [])
    monkeypatch.setattr(_RecordingPlant, "columns", [])
    return _RecordingPlant


def _times(plant: type[_RecordingPlant]) -> NDArray[np.float64]:
    return np.concatenate(plant.times)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _signal(n: int) -> list[str]:
    return [f"{10 + np.sin(i / 7):.4f}" for i in range(n)]


def _run(data: Path, tmp_path: Path, *args: str) -> int:
    return main(["replay", str(data), "--out", str(tmp_path / "scores.csv"), *args])


def _scores(tmp_path: Path) -> list[dict[str, str]]:
    with (tmp_path / "scores.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


# --- 1. columns left out or suspicious are named ---------------------------------------------


def test_columns_like_an_index_a_time_or_nothing_are_named_in_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 50
    stamps = [(START + timedelta(seconds=i)).isoformat() for i in range(n)]
    data = _write(tmp_path / "d.csv", ["time,Unnamed: 0,part count,timestamp,spare,a"] + [
        f"{stamps[i]},{i},{i + 17},{1.7e9 + i},,{v}" for i, v in enumerate(_signal(n))])
    assert _run(data, tmp_path) == 0
    err = capsys.readouterr().err
    assert ("warning: column 'Unnamed: 0' is named like a row index or an id, and is scored as a "
            "signal; --exclude 'Unnamed: 0' leaves it out") in err
    assert ("warning: column 'part count' counts up by 1 every row, like a row index, and is "
            "scored as a signal; --exclude 'part count' leaves it out") in err
    assert ("warning: column 'timestamp' is named like a time (the time column is 'time'; "
            "--time-column timestamp reads the time from it), and is scored") in err
    assert "warning: column 'spare' is empty in the first 50 rows" in err
    assert "'a'" not in err  # a measurement is no suspect
    # Warned about, not left out: only the user knows whether a counter is a measurement.
    assert {"Unnamed_0_score", "part_count_score", "timestamp_score", "a_score"} <= set(
        _scores(tmp_path)[0])
    # Forced in, or left out, a column is no longer a suspect.
    assert _run(data, tmp_path, "--signal-column", "part count", "--exclude", "timestamp",
                "--exclude", "spare", "--exclude", "Unnamed: 0") == 0
    assert "warning" not in capsys.readouterr().err


# --- 2. epoch units and time order -----------------------------------------------------------


@pytest.mark.parametrize(("unit", "scale"), [("s", 1), ("ms", 10**3), ("us", 10**6),
                                             ("ns", 10**9)])
def test_epoch_numbers_are_read_in_the_unit_their_size_tells(
    tmp_path: Path, recorded: type[_RecordingPlant], unit: str, scale: int
) -> None:
    n = 40
    epoch = int(START.timestamp())
    written = [f"{epoch + i}.25" if unit == "s" else str((epoch + i) * scale + scale // 4)
               for i in range(n)]
    data = _write(tmp_path / "d.csv", ["t,a"] + [f"{t},{v}" for t, v in zip(written, _signal(n),
                                                                             strict=True)])
    assert _run(data, tmp_path) == 0
    np.testing.assert_allclose(_times(recorded), epoch + np.arange(n) + 0.25, rtol=0, atol=1e-6)
    assert [r["time"] for r in _scores(tmp_path)] == written  # as written


def test_time_format_gives_the_unit_of_relative_numbers(
    tmp_path: Path, recorded: type[_RecordingPlant], capsys: pytest.CaptureFixture[str]
) -> None:
    # Milliseconds since a start look like seconds by size; only the user can tell.
    data = _write(tmp_path / "d.csv", ["t,a"] + [f"{i * 10},{v}"
                                                 for i, v in enumerate(_signal(40))])
    assert _run(data, tmp_path, "--time-format", "ms") == 0
    np.testing.assert_allclose(_times(recorded), np.arange(40) * 0.01)
    capsys.readouterr()
    # A compact stamp is no epoch number: as milliseconds it would be the year 2611.
    compact = _write(tmp_path / "c.csv", ["t,a", "20240501120000,1", "20240501120001,2"])
    assert _run(compact, tmp_path) == 2
    err = _one_error(capsys)
    assert "c.csv:2: t: cannot read time '20240501120000': read as epoch milliseconds" in err
    assert "--time-format" in err
    assert _run(compact, tmp_path, "--time-format", "%Y%m%d%H%M%S") == 0


def _shuffled(path: Path) -> tuple[Path, list[str]]:
    """40 rows a minute apart, and after row 19 the times of rows 15..18 again (as a logger that
    resends a stretch does); returns the file and the times as written."""
    stamps = [(START + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(40)]
    written = stamps[:20] + stamps[15:19] + stamps[20:]
    _write(path, ["t,a"] + [f"{s},{v}" for s, v in zip(written, _signal(44), strict=True)])
    return path, written


def test_rows_earlier_than_a_row_before_are_skipped_and_counted_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, written = _shuffled(tmp_path / "d.csv")
    assert _run(data, tmp_path) == 0
    err = capsys.readouterr().err
    assert (f"warning: 4 rows skipped: time earlier than a row before (the first at line 22: "
            f"{written[20]!r}); --time-order sort") in err
    assert "replayed 40 rows" in err
    assert [r["time"] for r in _scores(tmp_path)] == written[:20] + written[24:]


def test_time_order_sort_and_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, written = _shuffled(tmp_path / "d.csv")
    monkeypatch.setattr(replay_module, "CHUNK_ROWS", 16)  # sorted across chunks too
    assert _run(data, tmp_path, "--time-order", "sort") == 0
    err = capsys.readouterr().err
    assert "4 rows out of time order (the first at line 22" in err
    assert "replayed 44 rows" in err
    assert [r["time"] for r in _scores(tmp_path)] == sorted(written)  # stable: ties in file order
    assert _run(data, tmp_path, "--time-order", "stop") == 2
    err = _one_error(capsys)
    assert f"d.csv:22: t: time {written[20]!r} is earlier than the row before" in err


@pytest.mark.skipif(not NAB_MACHINE_TEMPERATURE.exists(),
                    reason=f"NAB data not found at {NAB_MACHINE_TEMPERATURE}")
def test_nab_machine_temperature_replays_to_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The file goes back an hour once (line 10151) and repeats 12 stamps; one ties.
    assert _run(NAB_MACHINE_TEMPERATURE, tmp_path) == 0
    err = capsys.readouterr().err
    assert ("11 rows skipped: time earlier than a row before (the first at line 10151: "
            "'2014-01-07 02:00:00')") in err
    assert "replayed 22684 rows, 1 signals" in err
    assert _scores(tmp_path)[-1]["time"] == "2014-02-19 15:25:00"


# --- 3. time formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%M:%S.%f+00:00",
        "%Y.%m.%d.%H.%M.%S",  # the NASA bearing set
        "%Y/%m/%d %H:%M:%S",
    ],
)
def test_common_time_formats_are_recognised(
    tmp_path: Path, recorded: type[_RecordingPlant], fmt: str
) -> None:
    stamps = [START + timedelta(seconds=10 * i) for i in range(30)]
    data = _write(tmp_path / "d.csv", ["t,a"] + [
        f"{s.strftime(fmt)},{v}" for s, v in zip(stamps, _signal(30), strict=True)])
    assert _run(data, tmp_path) == 0
    np.testing.assert_array_equal(_times(recorded), [s.timestamp() for s in stamps])


def test_an_unreadable_time_names_file_line_column_and_value_and_time_format_reads_it(
    tmp_path: Path, recorded: type[_RecordingPlant], capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write(tmp_path / "d.csv", ["When,a", "01/02/2024 10:00,1.5", "02/02/2024 10:00,2.5"])
    assert _run(data, tmp_path) == 2
    err = _one_error(capsys)
    assert "d.csv:2: When: cannot read time '01/02/2024 10:00': recognised are ISO 8601" in err
    assert "give its format with --time-format" in err
    assert not (tmp_path / "scores.csv").exists()
    assert _run(data, tmp_path, "--time-format", "%d/%m/%Y %H:%M", "--signal-column", "a") == 0
    assert _times(recorded)[0] == datetime(2024, 2, 1, 10, tzinfo=UTC).timestamp()
    capsys.readouterr()
    assert _run(data, tmp_path, "--time-format", "%Y-%m-%d %H:%M") == 2
    assert ("d.csv:2: When: cannot read time '01/02/2024 10:00': time data '01/02/2024 10:00' "
            "does not match format '%Y-%m-%d %H:%M' (--time-format)") in _one_error(capsys)


# --- 4. pandas' unnamed index column ---------------------------------------------------------


def test_an_unnamed_first_column_is_a_row_index_or_the_time(
    tmp_path: Path, recorded: type[_RecordingPlant], capsys: pytest.CaptureFixture[str]
) -> None:
    stamps = [(START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(30)]
    signal = _signal(30)
    # DataFrame.to_csv() of a frame with a RangeIndex: the index first, its header cell empty.
    data = _write(tmp_path / "d.csv", [",time,a"] + [
        f"{i},{s},{v}" for i, (s, v) in enumerate(zip(stamps, signal, strict=True))])
    assert _run(data, tmp_path) == 0
    assert ("warning: column 1 has no name and holds '0' in the first row: taken as a row index "
            "(as pandas writes one) and left out") in capsys.readouterr().err
    assert [r["time"] for r in _scores(tmp_path)] == stamps
    assert [c for c in _scores(tmp_path)[0] if c.endswith("_score")] == ["asset_score", "a_score"]
    np.testing.assert_array_equal(_times(recorded), [START.timestamp() + i for i in range(30)])
    # The same with --time-column, and an index of text that is no time.
    text = _write(tmp_path / "t.csv", [",time,a"] + [
        f"r{i},{s},{v}" for i, (s, v) in enumerate(zip(stamps, signal, strict=True))])
    assert _run(text, tmp_path, "--time-column", "time") == 0
    assert "column 1 has no name and holds 'r0'" in capsys.readouterr().err
    # A DatetimeIndex written the same way is the time column.
    dated = _write(tmp_path / "i.csv", [",a"] + [f"{s},{v}"
                                                 for s, v in zip(stamps, signal, strict=True)])
    assert _run(dated, tmp_path) == 0
    assert "warning" not in capsys.readouterr().err
    assert [r["time"] for r in _scores(tmp_path)] == stamps


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("t,,b", "1,2,3", "d.csv:1: column 2 of the header has no name; every column but a "
                          "leading row index needs one"),
        ("t,a,b,", "1,2,3,", "d.csv:1: column 4 of the header has no name (the header line ends "
                             "with a separator)"),
    ],
)
def test_an_empty_header_cell_elsewhere_is_an_error_naming_its_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: str, row: str, message: str
) -> None:
    data = _write(tmp_path / "d.csv", [header, row])
    assert _run(data, tmp_path) == 2
    assert message in _one_error(capsys)


# --- 5. decimal commas -----------------------------------------------------------------------


def test_decimal_commas_are_read_with_decimal_comma_and_detected_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 600
    rng = np.random.default_rng(5)
    a = rng.normal(20.0, 0.5, n)
    a[400:450] += 5.0
    truth = ["1.0" if 400 <= i < 450 else "0.0" for i in range(n)]
    stamps = [(START + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]
    dotted = _write(tmp_path / "dot.csv", ["datetime;a;anomaly"] + [
        f"{s};{v:.4f};{t}" for s, v, t in zip(stamps, a, truth, strict=True)])
    # SKAB's layout as a spreadsheet with a German locale writes it.
    comma = _write(tmp_path / "comma.csv", [line.replace(".", ",") for line in
                                            dotted.read_text(encoding="utf-8").splitlines()])
    assert _run(dotted, tmp_path, "--warmup", "300") == 0
    expected, report = (tmp_path / "scores.csv").read_text(encoding="utf-8"), capsys.readouterr()
    assert _run(comma, tmp_path, "--warmup", "300", "--decimal", ",") == 0
    assert (tmp_path / "scores.csv").read_text(encoding="utf-8") == expected
    err = capsys.readouterr().err
    assert "against 'anomaly' after a warm-up of 300 rows" in err  # '0,0' and '1,0' are labels
    assert err == report.err
    assert _run(comma, tmp_path) == 2
    err = capsys.readouterr().err
    bad = comma.read_text(encoding="utf-8").splitlines()[1].split(";")[1]
    assert (f"comma.csv:2: column 'a': {bad!r} is not a number; with ',' as the decimal mark "
            "give --decimal ,") in err


@pytest.mark.parametrize(
    ("lines", "args", "message"),
    [
        (["t;a", "1;1.234,5"], ["--decimal", ","],
         "d.csv:2: column 'a': '1.234,5' is not a number; with --decimal , a '.' is no decimal "
         "mark"),
        (["t,a", "1,2"], ["--decimal", ",", "--separator", ","],
         "d.csv:1: the separator and the decimal mark are both ','"),
    ],
)
def test_decimal_comma_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], args: list[str],
    message: str
) -> None:
    assert _run(_write(tmp_path / "d.csv", lines), tmp_path, *args) == 2
    assert message in _one_error(capsys)


# --- 6. text columns -------------------------------------------------------------------------


def test_a_text_column_names_its_first_bad_value_and_suggests_exclude(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 30
    data = _write(tmp_path / "d.csv", ["t,a,Machine State"] + [
        f"{i},{v},{'' if i < 3 else 'RUN'}" for i, v in enumerate(_signal(n))])
    assert _run(data, tmp_path) == 2
    assert ("d.csv:5: column 'Machine State': 'RUN' is not a number; a column of text cannot be "
            "a signal: --exclude 'Machine State' leaves it out") in _one_error(capsys)
    assert _run(data, tmp_path, "--exclude", "Machine State") == 0
    capsys.readouterr()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[signals]]\nasset = "m"\nname = "state"\ncolumn = "Machine State"\n',
                   encoding="utf-8")
    assert _run(data, tmp_path, "--config", str(cfg)) == 2
    assert ("d.csv:5: column 'Machine State': 'RUN' is not a number; a column of text cannot be "
            "a signal: take signal m/state out of the config") in _one_error(capsys)


# --- 7. the separator ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "args", "message"),
    [
        (["t;a;b", "1;2;3"], ["--separator", ","],
         "d.csv:1: the header has one column with the separator ',': 't;a;b'; it looks "
         "';'-separated: --separator ';'"),
        (["t\ta\tb", "1\t2\t3"], ["--separator", ";"],
         "it looks tab-separated: --separator tab"),
        (["t|a|b", "1|2|3"], [],
         "d.csv:1: the header has one column (no separator found): 't|a|b'; it looks "
         "'|'-separated: --separator '|'"),
        (["value", "1"], [],
         "the header has one column (no separator found): 'value'; replay needs a time column "
         "and a signal column: give the separator with --separator"),
        (["t,a", "1,2"], ["--separator", ";;"],
         "d.csv: --separator must be one character (or tab), not ';;'"),
    ],
)
def test_a_wrong_separator_says_the_header_has_one_column_and_suggests_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: list[str], args: list[str],
    message: str
) -> None:
    assert _run(_write(tmp_path / "d.csv", lines), tmp_path, *args) == 2
    assert message in _one_error(capsys)


@pytest.mark.parametrize("sep", ["tab", "\\t", "\t", "|"])
def test_a_given_separator_is_used(tmp_path: Path, sep: str) -> None:
    char = "|" if sep == "|" else "\t"
    data = _write(tmp_path / "d.csv", [f"t{char}a"] + [f"{i}{char}{v}"
                                                       for i, v in enumerate(_signal(20))])
    assert _run(data, tmp_path, "--separator", sep) == 0
    assert len(_scores(tmp_path)) == 20


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    # A spreadsheet's "CSV UTF-8" starts with one.
    data = tmp_path / "d.csv"
    data.write_text("\ufefftime,a\n" + "".join(f"{i},{v}\n" for i, v in enumerate(_signal(20))),
                    encoding="utf-8")
    assert _run(data, tmp_path, "--time-column", "time") == 0
