"""``shopfloor replay``: the live pipeline over a CSV file, scores out, and how well it did.

The CSV has a time column and numeric columns. Without a config every numeric column becomes a
signal of one asset, with the default detectors and the asset-level detector over all of them.
Rows are processed in chunks through the same :class:`~shopfloor.scoring.pipeline.Plant` the agent
runs, with the time column as the samples' signal times, so memory stays bounded (unless the rows
must be sorted by time first: ``time_order="sort"``) and the scores are what the live agent would
have produced.

Which columns are label-like (left out of the signals, with a notice), which one is the truth,
and which signal columns deserve a warning is :mod:`shopfloor.tools.csvcolumns`'s; reading the file
(separator, decimal mark, time formats and time order, an unnamed index column) is
:mod:`shopfloor.tools.csvread`'s and :mod:`shopfloor.tools.csvtime`'s.

How well it did. The first column named like one of :data:`TRUTH_NAMES` whose first-chunk cells
are all 0 or 1 is the truth (:func:`~shopfloor.tools.csvcolumns.truth_column`): the replay's
``anomaly`` output is scored against it row by row (:mod:`shopfloor.tools.scores`: F1, FAR, MAR)
over the rows after the warm-up. An empty truth cell leaves its row out of the count.
"""

from __future__ import annotations

import csv
import itertools
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.config import PipelineConfig, config_from_dict
from shopfloor.errors import InputError
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.monitor import MonitorBatch
from shopfloor.scoring.pipeline import AssetBatch, Plant, SignalBatch
from shopfloor.tools.csvcolumns import (
    LABEL_NAMES,
    TRUTH_NAMES,
    label_columns,
    label_notice,
    quote_names,
    suspicious_columns,
    truth_column,
    truth_values,
)
from shopfloor.tools.csvread import Table, open_table, row_chunks, values
from shopfloor.tools.scores import Confusion, confusion

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


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How to read the CSV."""

    separator: str | None = None  # None: sniff ',' ';' or tab from the header
    time_column: str | None = None  # None: the first column (after an unnamed row index)
    # A strptime format, or a unit (s, ms, us, ns) for numbers; None: recognised formats and
    # epoch numbers with the unit told by their size (shopfloor.tools.csvtime).
    time_format: str | None = None
    decimal: str = "."  # the numbers' decimal mark: '.' or ','
    # A row earlier than a row before it: "reject" skips and counts it, "sort" sorts the file
    # by time first, "stop" is an error (shopfloor.tools.csvread).
    time_order: str = "reject"
    exclude: tuple[str, ...] = ()  # columns that are not signals (labels, ids)
    asset: str = "asset"  # asset name for the default config
    # Label-like columns (shopfloor.tools.csvcolumns) to score as signals all the same; only
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
    suspicious_columns: tuple[str, ...] = ()  # scored, with a warning (see the module docstring)
    out_of_order: int = 0  # rows earlier than a row before them: skipped, or sorted
    truth_column: str | None = None  # what ``points`` is scored against
    report_from: int = 0  # the first row (0-based, header not counted) ``points`` counts
    points: Confusion | None = None  # ``anomaly`` against ``truth_column``, None without one


def read_table(path: str | Path, options: ReplayOptions, handle: IO[str]) -> Table:
    """Open the CSV's header and decide which columns are signals."""
    return open_table(
        str(path),
        handle,
        separator=options.separator,
        decimal=options.decimal,
        time_column=options.time_column,
        time_format=options.time_format,
        exclude=options.exclude,
        signal_columns=options.signal_columns,
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
    """Replay ``data`` through the pipeline, writing one scored row per input row to ``out``
    (but for rows skipped as out of time order, ``options.time_order="reject"``).

    ``plot_rows``, when given, collects per-chunk arrays for :mod:`shopfloor.tools.plot`. ``notify``
    receives notices for the user (columns left out or suspicious, a truth column that cannot
    be scored) before the first row is scored, and rows out of time order at the end.
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
        # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would
        # otherwise become part of the first column's name.
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    with handle:
        table = read_table(path, options, handle)
        chunks = row_chunks(table, CHUNK_ROWS, options.time_order)
        first = next(chunks, None)  # label columns are decided from it, before any scoring
        summary = ReplaySummary()
        if notify is not None:
            for notice in table.notices:
                notify(f"warning: {notice}")
        by_config = config is not None
        if config is None:
            labels = label_columns(table, first, options.signal_columns)
            signal_columns = [c for c in table.columns if c not in labels]
            if not signal_columns:
                raise InputError(
                    "no signal columns: "
                    + (f"{quote_names(labels)} look like labels; --signal-column NAME scores one"
                       if labels else "every column but the time column is excluded"),
                    file=table.path,
                    line=1,
                )
            config = default_config(signal_columns, options.asset, options.warmup)
            summary.label_columns = tuple(labels)
            if labels and notify is not None:
                notify(label_notice(labels))
            suspicious = suspicious_columns(table, first, signal_columns, options.signal_columns)
            summary.suspicious_columns = tuple(suspicious)
            if notify is not None:
                for notice in suspicious.values():
                    notify(f"warning: {notice}")
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
        truth = truth_column(table, first, notify)
        if truth is not None:
            summary.truth_column = table.header[truth]
            summary.points = Confusion(0, 0, 0, 0)
            summary.report_from = options.warmup if options.warmup is not None else max(
                itertools.chain((p.warmup for p in plant.signals.values()),
                                (p.monitor.alarm.warmup for p in plant.assets.values()))
            )
        wanted = {s.id: table.columns[s.column or s.name] for s in config.signals}
        remedies = {s.id: _text_remedy(table.header[idx], s.id, by_config)
                    for s, idx in zip(config.signals, wanted.values(), strict=True)}
        for rows in itertools.chain([first] if first is not None else [], chunks):
            columns = {sid: values(rows, idx, table, remedies[sid]) for sid, idx in wanted.items()}
            # The times drive the alarm's lifecycle (adapt_after, gap_reset) in signal time.
            batches, assets = plant.process(columns, rows.times)
            anomaly = writer.write(rows.raw_times, batches, assets)
            if truth is not None and summary.points is not None:
                true = truth_values(rows, truth, table, notify)
                if true is None:  # a value other than 0 or 1: no report rather than a wrong one
                    summary.points = None
                else:
                    counted = np.isfinite(true)
                    counted[: max(0, summary.report_from - summary.rows)] = False
                    summary.points += confusion(true[counted].astype(np.bool_), anomaly[counted])
            summary.rows += len(rows.times)
            summary.anomaly_rows += int(anomaly.sum())
            if plot_rows is not None:
                plot_rows.append((rows.times, columns, writer.last_assets, anomaly))
        for sid, pipe in plant.signals.items():
            summary.rejected[sid] = dict(pipe.rejected)
        summary.alarms_raised = writer.raised
        summary.adopted = writer.adopted
        summary.out_of_order = table.out_of_order
        if table.first_out_of_order is not None and notify is not None:
            notify(_order_notice(table, options.time_order))
    return summary


def _text_remedy(column: str, signal: str, by_config: bool) -> str:
    if by_config:
        return f"a column of text cannot be a signal: take signal {signal} out of the config"
    return f"a column of text cannot be a signal: --exclude {shlex.quote(column)} leaves it out"


def _order_notice(table: Table, time_order: str) -> str:
    assert table.first_out_of_order is not None
    line, stamp = table.first_out_of_order
    n = table.out_of_order
    rows = "1 row" if n == 1 else f"{n} rows"
    where = f"(the first at line {line}: {stamp!r})"
    if time_order == "sort":
        return f"{rows} out of time order {where}, sorted by time (--time-order sort)"
    return (f"warning: {rows} skipped: time earlier than a row before {where}; "
            "--time-order sort sorts the rows by time instead, --time-order stop stops at the "
            "first")


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
