"""``shopfloor replay``: the live pipeline over a CSV file, scores out.

The CSV has a time column and numeric columns. Without a config every numeric column becomes a
signal of one asset, with the default detectors and the asset-level detector over all of them.
Rows are processed in chunks through the same :class:`~shopfloor.pipeline.Plant` the agent runs,
so memory stays bounded and the scores are what the live agent would have produced.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import PipelineConfig, config_from_dict
from shopfloor.detect.alarm import AlarmState
from shopfloor.errors import InputError
from shopfloor.pipeline import AssetBatch, Plant, SignalBatch

__all__ = ["ReplayOptions", "ReplaySummary", "read_table", "replay"]

CHUNK_ROWS = 65_536


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to read the CSV."""

    separator: str | None = None  # None: sniff ',' ';' or tab from the header
    time_column: str | None = None  # None: the first column
    exclude: tuple[str, ...] = ()  # columns that are not signals (labels, ids)
    asset: str = "asset"  # asset name for the default config


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did, for the command line and for tests."""

    rows: int = 0
    signals: tuple[str, ...] = ()
    alarms_raised: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, dict[str, int]] = field(default_factory=dict)
    anomaly_rows: int = 0


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
    for col in options.exclude:
        if col not in header:
            raise InputError(
                f"excluded column {col!r} not found; the header has: {', '.join(header)}",
                file=name,
                line=1,
            )
    columns = {h: i for i, h in enumerate(header) if i != time_index and h not in options.exclude}
    return _Table(
        name, header, time_index, columns, csv.reader(handle, delimiter=delimiter), delimiter
    )


def default_config(columns: Sequence[str], asset: str) -> PipelineConfig:
    """Each column a scalar signal of one asset; names made safe for topics and metrics."""
    signals = []
    used: set[str] = set()
    for col in columns:
        base = re.sub(r"[^A-Za-z0-9_.\-]+", "_", col).strip("_.-")[:60] or "signal"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        signals.append({"asset": asset, "name": name, "column": col})
    return config_from_dict({"signals": signals}, source="<default replay config>")


def replay(
    data: str | Path,
    out: IO[str],
    config: PipelineConfig | None = None,
    options: ReplayOptions | None = None,
    plot_rows: list[Any] | None = None,
) -> ReplaySummary:
    """Replay ``data`` through the pipeline, writing one scored row per input row to ``out``.

    ``plot_rows``, when given, collects per-chunk arrays for :mod:`shopfloor.plot`.
    """
    options = options or ReplayOptions()
    path = Path(data)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    with handle:
        table = read_table(path, options, handle)
        if config is None:
            config = default_config(list(table.columns), options.asset)
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
        summary = ReplaySummary(signals=tuple(plant.signals))
        for times, raw_times, values in _chunks(table, config):
            batches, assets = plant.process(values)
            anomaly = writer.write(raw_times, batches, assets)
            summary.rows += len(times)
            summary.anomaly_rows += int(anomaly.sum())
            if plot_rows is not None:
                plot_rows.append((times, values, writer.last_assets, anomaly))
        for sid, pipe in plant.signals.items():
            summary.rejected[sid] = dict(pipe.rejected)
        summary.alarms_raised = writer.raised
    return summary


def _chunks(
    table: _Table, config: PipelineConfig
) -> Iterator[tuple[NDArray[np.float64], list[str], dict[str, NDArray[np.float64]]]]:
    wanted = {s.id: table.columns[s.column or s.name] for s in config.signals}
    ncol = len(table.header)
    line = 1
    previous = -math.inf
    while True:
        raw_times: list[str] = []
        times: list[float] = []
        cols: dict[str, list[float]] = {sid: [] for sid in wanted}
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
            raw_times.append(stamp)
            times.append(t)
            for sid, idx in wanted.items():
                cols[sid].append(_parse_value(row[idx], table, line, idx))
            if len(times) == CHUNK_ROWS:
                break
        if not times:
            return
        yield np.array(times), raw_times, {k: np.array(v) for k, v in cols.items()}


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
    """Formats output rows: time, then per asset score/threshold/anomaly/top, then signal scores."""

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
            header += [f"{p}asset_score", f"{p}threshold", f"{p}anomaly", f"{p}top_signal"]
        header += [f"{plant.signals[s].spec.name if single else s}_score" for s in plant.signals]
        self.out.writerow(header)
        self.raised: dict[str, int] = {}
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
                self.raised[sid] = self.raised.get(sid, 0) + int(r.raised.sum())
            if asset in assets:
                ab = assets[asset]
                r = ab.result
                active |= r.state == AlarmState.ACTIVE
                self.raised[asset] = self.raised.get(asset, 0) + int(r.raised.sum())
                names = np.array([*ab.signals, ""], dtype=object)
                top = names[np.where(r.top >= 0, r.top, len(ab.signals))]
                score, threshold = r.score, r.threshold
            else:  # one signal: its own score is the asset's
                r = batches[sids[0]].result
                score, threshold = r.score, r.threshold
                top = np.full(n, self.plant.signals[sids[0]].spec.name, dtype=object)
            self.last_assets[asset] = (score, threshold)
            any_anomaly |= active
            columns += [
                _fmt(score),
                _fmt(threshold),
                active.astype(int).astype(str).tolist(),
                list(top),
            ]
        for sid in self.plant.signals:
            columns.append(_fmt(batches[sid].result.score))
        self.out.writerows(zip(*columns, strict=True))
        return any_anomaly


def _fmt(values: NDArray[np.float64]) -> list[str]:
    # Empty for "not scored" (NaN); a threshold still warming up prints as inf.
    return ["" if v != v else format(v, ".9g") for v in values.tolist()]
