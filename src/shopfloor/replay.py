"""``shopfloor replay``: the live pipeline over a CSV file, scores out, and how well it did.

The CSV has a time column and numeric columns. Without a config every numeric column becomes a
signal of one asset, with the default detectors and the asset-level detector over all of them.
Rows are processed in chunks through the same :class:`~shopfloor.pipeline.Plant` the agent runs,
with the time column as the samples' signal times, so memory stays bounded and the scores are
what the live agent would have produced.

Label columns. Data sets that come with ground truth (SKAB's ``anomaly`` and ``changepoint``)
carry it in columns beside the sensors; scored as signals they would leak the answer into the
detection. Without a config, a column is *label-like*, and not a signal, when

- its name is one of :data:`LABEL_NAMES` (ignoring case), or
- every non-empty cell of it in the first chunk of rows (:data:`CHUNK_ROWS`, or the whole file
  when shorter) is 0 or 1: the decision is made before the first row is scored, so a column
  that holds only 0 and 1 in those rows is left out even if other values come later.

``ReplayOptions.signal_columns`` (``--signal-column``) scores such a column as a signal all the
same (a valve's open/closed state is a real 0/1 signal). With a config, the config's columns are
the signals, whatever their names.

How well it did. The first column named like one of :data:`TRUTH_NAMES` whose first-chunk cells
are all 0 or 1 is the truth: the replay's ``anomaly`` output is scored against it row by row
(:mod:`shopfloor.scoring`: F1, FAR, MAR) over the rows after the warm-up. An empty truth cell
leaves its row out of the count.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import PipelineConfig, config_from_dict
from shopfloor.detect.alarm import AlarmState
from shopfloor.errors import InputError
from shopfloor.monitor import MonitorBatch
from shopfloor.pipeline import AssetBatch, Plant, SignalBatch
from shopfloor.scoring import Confusion, confusion

__all__ = [
    "LABEL_NAMES",
    "TRUTH_NAMES",
    "ReplayOptions",
    "ReplaySummary",
    "default_config",
    "read_table",
    "replay",
]

CHUNK_ROWS = 65_536

#: Column names (compared in lower case) that hold labels, not measurements: SKAB's
#: ``anomaly`` and ``changepoint``, and the usual names of a ground-truth column elsewhere.
LABEL_NAMES: tuple[str, ...] = (
    "anomaly", "anomalies", "is_anomaly", "label", "labels", "target", "fault",
    "changepoint", "changepoints",
)
#: Label names that mark every anomalous row, in order of preference for the point-wise report.
#: A changepoint column marks only the rows where a fault starts or ends, so it is no truth.
TRUTH_NAMES: tuple[str, ...] = tuple(n for n in LABEL_NAMES if not n.startswith("changepoint"))


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to read the CSV."""

    separator: str | None = None  # None: sniff ',' ';' or tab from the header
    time_column: str | None = None  # None: the first column
    exclude: tuple[str, ...] = ()  # columns that are not signals (labels, ids)
    asset: str = "asset"  # asset name for the default config
    # Label-like columns (see the module docstring) to score as signals all the same; only
    # without a config, which names its columns itself.
    signal_columns: tuple[str, ...] = ()
    # Training rows: the default config's alarm warm-up, and the first row the point-wise
    # report counts. None: the config's warm-up (the longest of its signals' and assets'). A
    # given config is used as it is; ``load_config(path, defaults={"alarm": {"warmup": n}})``
    # is how the command line applies ``--warmup`` to one.
    warmup: int | None = None


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did, for the command line and for tests."""

    rows: int = 0
    signals: tuple[str, ...] = ()
    alarms_raised: dict[str, int] = field(default_factory=dict)
    # Alarms (per signal or asset id) that ended by adopting the new level as the baseline.
    adopted: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    anomaly_rows: int = 0
    label_columns: tuple[str, ...] = ()  # left out of the signals as label-like
    truth_column: str | None = None  # what ``points`` is scored against
    report_from: int = 0  # the first row (0-based, header not counted) ``points`` counts
    points: Confusion | None = None  # ``anomaly`` against ``truth_column``, None without one


@dataclass(slots=True)
class _Table:
    path: str
    header: list[str]
    time_index: int
    columns: dict[str, int]  # signal column name -> index
    reader: Iterator[list[str]]
    delimiter: str


def read_table(path: str | Path, options: ReplayOptions, handle: IO[str]) -> _Table:
    """Open the CSV's header and decide which columns are signals."""
    name = str(path)
    first = handle.readline()
    if not first:
        raise InputError("the file is empty; expected a header row", file=name, line=1)
    delimiter = options.separator or max((",", ";", "\t"), key=first.count)
    header = next(csv.reader([first], delimiter=delimiter))
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputError(f"column {dup!r} appears twice in the header", file=name, line=1)
    if options.time_column is None:
        time_index = 0
    elif options.time_column in header:
        time_index = header.index(options.time_column)
    else:
        raise InputError(
            f"time column {options.time_column!r} not found; the header has: {', '.join(header)}",
            file=name,
            line=1,
        )
    for what, named in (("excluded", options.exclude), ("signal", options.signal_columns)):
        for col in named:
            if col not in header:
                raise InputError(
                    f"{what} column {col!r} not found; the header has: {', '.join(header)}",
                    file=name,
                    line=1,
                )
    for col in options.signal_columns:
        if col in options.exclude or header.index(col) == time_index:
            what = "excluded" if col in options.exclude else "the time column"
            raise InputError(f"column {col!r} cannot be a signal: it is {what}", file=name, line=1)
    columns = {h: i for i, h in enumerate(header) if i != time_index and h not in options.exclude}
    return _Table(
        name, header, time_index, columns, csv.reader(handle, delimiter=delimiter), delimiter
    )


def default_config(
    columns: Sequence[str], asset: str, warmup: int | None = None
) -> PipelineConfig:
    """Each column a scalar signal of one asset; names made safe for topics and metrics.

    ``warmup`` is the alarms' warm-up in samples (``[defaults.alarm] warmup``); None keeps the
    library default.
    """
    signals = []
    used: set[str] = set()
    for col in columns:
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", col).strip("_.-")[:60] or "signal"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        signals.append({"asset": asset, "name": name, "column": col})
    raw: dict[str, Any] = {"signals": signals}
    if warmup is not None:
        raw["defaults"] = {"alarm": {"warmup": warmup}}
    return config_from_dict(raw, source="<default replay config>")


def replay(
    data: str | Path,
    out: IO[str],
    config: PipelineConfig | None = None,
    options: ReplayOptions | None = None,
    plot_rows: list[Any] | None = None,
    notify: Callable[[str], None] | None = None,
) -> ReplaySummary:
    """Replay ``data`` through the pipeline, writing one scored row per input row to ``out``.

    ``plot_rows``, when given, collects per-chunk arrays for :mod:`shopfloor.plot`. ``notify``
    receives notices for the user (label-like columns left out, a truth column that cannot be
    scored) before the first row is scored.
    """
    options = options or ReplayOptions()
    if config is not None and options.signal_columns:
        raise InputError(
            "signal columns (--signal-column) are for the default config; "
            "a config names its signals' columns itself",
            file=config.source,
        )
    path = Path(data)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    with handle:
        table = read_table(path, options, handle)
        chunks = _row_chunks(table)
        first = next(chunks, None)  # label columns are decided from it, before any scoring
        summary = ReplaySummary()
        if config is None:
            labels = _label_columns(table, first, options.signal_columns)
            signal_columns = [c for c in table.columns if c not in labels]
            if not signal_columns:
                raise InputError(
                    "no signal columns: "
                    + (f"{_quote(labels)} look like labels; --signal-column NAME scores one"
                       if labels else "every column but the time column is excluded"),
                    file=table.path,
                    line=1,
                )
            config = default_config(signal_columns, options.asset, options.warmup)
            summary.label_columns = tuple(labels)
            if labels and notify is not None:
                notify(_label_notice(labels))
        for s in config.signals:
            col = s.column or s.name
            if s.kind != "scalar":
                raise InputError(
                    f"signal {s.id} is a frame signal; replay reads scalar columns only",
                    file=config.source,
                )
            if col not in table.columns:
                raise InputError(
                    f"column {col!r} for signal {s.id} not found; the header has: "
                    f"{', '.join(table.header)}",
                    file=table.path,
                    line=1,
                )
        plant = Plant(config)
        writer = _Writer(out, plant)
        summary.signals = tuple(plant.signals)
        truth = _truth_column(table, first, notify)
        if truth is not None:
            summary.truth_column = table.header[truth]
            summary.points = Confusion(0, 0, 0, 0)
            summary.report_from = options.warmup if options.warmup is not None else max(
                m.alarm.warmup
                for m in itertools.chain((p.monitor for p in plant.signals.values()),
                                         (p.monitor for p in plant.assets.values()))
            )
        wanted = {s.id: table.columns[s.column or s.name] for s in config.signals}
        for rows in itertools.chain([first] if first is not None else [], chunks):
            values = {sid: _column(rows, idx, table) for sid, idx in wanted.items()}
            # The times drive the alarm's lifecycle (adapt_after, gap_reset) in signal time.
            batches, assets = plant.process(values, rows.times)
            anomaly = writer.write(rows.raw_times, batches, assets)
            if truth is not None and summary.points is not None:
                true = _truth_values(rows, truth, table, notify)
                if true is None:  # a value other than 0 or 1: no report rather than a wrong one
                    summary.points = None
                else:
                    counted = np.isfinite(true)
                    counted[: max(0, summary.report_from - summary.rows)] = False
                    summary.points += confusion(true[counted].astype(np.bool_), anomaly[counted])
            summary.rows += len(rows.times)
            summary.anomaly_rows += int(anomaly.sum())
            if plot_rows is not None:
                plot_rows.append((rows.times, values, writer.last_assets, anomaly))
        for sid, pipe in plant.signals.items():
            summary.rejected[sid] = dict(pipe.rejected)
        summary.alarms_raised = writer.raised
        summary.adopted = writer.adopted
    return summary


@dataclass(frozen=True, slots=True)
class _Rows:
    """One chunk of rows with the right number of fields and parsed, sorted times."""

    lines: list[int]  # each row's line in the file, for error messages
    raw_times: list[str]
    times: NDArray[np.float64]
    cells: list[list[str]]


def _row_chunks(table: _Table) -> Iterator[_Rows]:
    ncol = len(table.header)
    line = 1
    previous = -math.inf
    while True:
        lines: list[int] = []
        raw_times: list[str] = []
        times: list[float] = []
        cells: list[list[str]] = []
        for row in table.reader:
            line += 1
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != ncol:
                raise InputError(
                    f"expected {ncol} fields, found {len(row)}", file=table.path, line=line
                )
            stamp = row[table.time_index].strip()
            t = _parse_time(stamp, table, line)
            if t < previous:
                raise InputError(
                    f"time {stamp!r} is earlier than the row before; rows must be sorted by time",
                    file=table.path,
                    line=line,
                    key=table.header[table.time_index],
                )
            previous = t
            lines.append(line)
            raw_times.append(stamp)
            times.append(t)
            cells.append(row)
            if len(times) == CHUNK_ROWS:
                break
        if not times:
            return
        yield _Rows(lines, raw_times, np.array(times), cells)


def _column(rows: _Rows, idx: int, table: _Table) -> NDArray[np.float64]:
    return np.array(
        [_parse_value(row[idx], table, line, idx) for row, line in zip(rows.cells, rows.lines,
                                                                          strict=True)],
        dtype=np.float64,
    )


def _zero_one(rows: _Rows | None, idx: int) -> bool:
    """Whether every non-empty cell of column ``idx`` is 0 or 1, and there is one at least."""
    if rows is None:
        return False
    distinct = {row[idx].strip() for row in rows.cells} - {""}
    try:
        return bool(distinct) and all(float(v) in (0.0, 1.0) for v in distinct)
    except ValueError:
        return False  # text: not a label of ours (and an error later if it is a signal)


def _label_columns(table: _Table, first: _Rows | None, keep: Sequence[str]) -> dict[str, str]:
    """Candidate signal columns that look like labels, each with the reason why."""
    out: dict[str, str] = {}
    for name, idx in table.columns.items():
        if name in keep:
            continue
        if name.lower() in LABEL_NAMES:
            out[name] = "named like a label"
        elif _zero_one(first, idx):
            out[name] = "only 0 and 1 in the first rows"
    return out


def _label_notice(labels: dict[str, str]) -> str:
    reasons = "; ".join(
        f"{_quote([c for c in labels if labels[c] == why])} ({why})"
        for why in dict.fromkeys(labels.values())
    )
    return (f"label-like columns left out of the signals: {reasons}; "
            "--signal-column NAME scores one as a signal anyway")


def _quote(names: Sequence[str] | dict[str, str]) -> str:
    return ", ".join(repr(n) for n in names)


def _truth_column(
    table: _Table, first: _Rows | None, notify: Callable[[str], None] | None
) -> int | None:
    """Index of the column the point-wise report scores against, or None."""
    by_name = {h.lower(): i for i, h in reversed(list(enumerate(table.header)))}
    candidates = [by_name[n] for n in TRUTH_NAMES if n in by_name and
                  by_name[n] != table.time_index]
    for idx in candidates:
        if _zero_one(first, idx):
            return idx
    if candidates and first is not None and notify is not None:
        names = _quote([table.header[i] for i in candidates])
        notify(f"no F1 report: label column {names} holds values other than 0 and 1"
               if len(candidates) == 1 else
               f"no F1 report: label columns {names} hold values other than 0 and 1")
    return None


def _truth_values(
    rows: _Rows, idx: int, table: _Table, notify: Callable[[str], None] | None
) -> NDArray[np.float64] | None:
    """The truth column's 0/1 values (NaN where empty); None at a value other than 0 or 1."""
    out = np.full(len(rows.cells), np.nan)
    for i, row in enumerate(rows.cells):
        cell = row[idx].strip()
        if not cell:
            continue
        try:
            v = float(cell)
        except ValueError:
            v = math.nan
        if v not in (0.0, 1.0):
            if notify is not None:
                notify(f"no F1 report: {table.path}:{rows.lines[i]}: column "
                       f"{table.header[idx]!r} holds {cell!r}, not 0 or 1")
            return None
        out[i] = v
    return out


def _parse_time(text: str, table: _Table, line: int) -> float:
    try:
        return float(text)  # seconds (epoch or relative)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"cannot read time {text!r}; expected ISO 8601 (2024-05-01 12:00:00) or seconds",
            file=table.path,
            line=line,
            key=table.header[table.time_index],
        ) from None
    # A stamp without a zone is taken as UTC, never local time: local clocks repeat an hour
    # when daylight saving ends, which would make a sorted file look unsorted.
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _parse_value(text: str, table: _Table, line: int, idx: int) -> float:
    s = text.strip()
    if not s:
        return math.nan  # an empty cell is a dropout: counted by the gate, not an error
    try:
        return float(s)
    except ValueError:
        raise InputError(
            f"{s!r} is not a number",
            file=table.path,
            line=line,
            key=f"column {table.header[idx]!r}",
        ) from None


class _Writer:
    """Formats output rows: time, then per asset score/likelihood/threshold/anomaly/top, then
    each signal's score and likelihood."""

    def __init__(self, out: IO[str], plant: Plant) -> None:
        self.out = csv.writer(out, lineterminator="\n")
        self.plant = plant
        self.by_asset: dict[str, list[str]] = {}
        for sid, pipe in plant.signals.items():
            self.by_asset.setdefault(pipe.spec.asset, []).append(sid)
        single = len(self.by_asset) == 1
        header = ["time"]
        for asset in self.by_asset:
            p = "" if single else f"{asset}."
            header += [f"{p}asset_score", f"{p}asset_likelihood", f"{p}threshold",
                       f"{p}anomaly", f"{p}top_signal"]
        for sid in plant.signals:
            name = plant.signals[sid].spec.name if single else sid
            header += [f"{name}_score", f"{name}_likelihood"]
        self.out.writerow(header)
        self.raised: dict[str, int] = {}
        self.adopted: dict[str, int] = {}
        self.last_assets: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}

    def write(self, raw_times: list[str], batches: dict[str, SignalBatch],
              assets: dict[str, AssetBatch]) -> NDArray[np.bool_]:
        n = len(raw_times)
        columns: list[list[str]] = [raw_times]
        any_anomaly = np.zeros(n, dtype=np.bool_)
        for asset, sids in self.by_asset.items():
            active = np.zeros(n, dtype=np.bool_)
            for sid in sids:
                r = batches[sid].result
                active |= r.state == AlarmState.ACTIVE
                self._count(sid, r)
            if asset in assets:
                ab = assets[asset]
                r = ab.result
                active |= r.state == AlarmState.ACTIVE
                self._count(asset, r)
                names = np.array([*ab.signals, ""], dtype=object)
                top = names[np.where(r.top >= 0, r.top, len(ab.signals))]
            else:  # one signal: its own score is the asset's
                r = batches[sids[0]].result
                top = np.full(n, self.plant.signals[sids[0]].spec.name, dtype=object)
            self.last_assets[asset] = (r.score, r.threshold)
            any_anomaly |= active
            columns += [
                _fmt(r.score),
                _fmt(r.likelihood),
                _fmt(r.threshold),
                active.astype(int).astype(str).tolist(),
                list(top),
            ]
        for sid in self.plant.signals:
            r = batches[sid].result
            columns += [_fmt(r.score), _fmt(r.likelihood)]
        self.out.writerows(zip(*columns, strict=True))
        return any_anomaly

    def _count(self, key: str, r: MonitorBatch) -> None:
        self.raised[key] = self.raised.get(key, 0) + int(r.raised.sum())
        self.adopted[key] = self.adopted.get(key, 0) + int(r.adopted.sum())


def _fmt(values: NDArray[np.float64]) -> list[str]:
    # Empty for "not scored" (NaN) and for a likelihood not computed; a threshold still
    # warming up prints as inf.
    return ["" if v != v else format(v, ".9g") for v in values.tolist()]
