"""Reading replay's CSV: the header, rows in time order, and numbers with either decimal mark.

The header. The separator is given or sniffed (the most frequent of ``,`` ``;`` and tab in the
header line). A header of one column is an error that names the separator the line seems to
use: a replay needs a time column and a signal, so one column always means a wrong separator.
An empty first header cell is the row index ``pandas.DataFrame.to_csv`` writes: it is left out
with a notice, unless no time column is named and its first cell is a time (not a whole number
below 1e9, which is a row number), when it is the time column. An empty header cell anywhere
else is an error naming its column number, since no option could name that column.

The rows. Each row's time is read by :class:`~shopfloor.tools.csvtime.TimeParser`. A row whose time
is earlier than a row before it (ties are fine) is handled by the time order:

- ``reject`` (the default) skips the row and counts it (:attr:`Table.out_of_order`). A log that
  repeats a stretch (NAB's machine temperature goes back an hour once) replays to the end.
- ``sort`` reads every row first and sorts them by time, keeping file order among equal times:
  the one mode whose memory grows with the file.
- ``stop`` ends the replay with an error naming the row's line.

The numbers. An empty cell is NaN (a dropout, counted downstream, not an error). With the
decimal mark ``,`` a cell holding ``.`` is an error rather than a number, since there the dot is
a thousands separator and ``1.234`` would silently be read a thousand times too small.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

import numpy as np
from numpy.typing import NDArray

from shopfloor.errors import InputError
from shopfloor.tools.csvtime import TimeParser

__all__ = ["TIME_ORDERS", "Rows", "Table", "open_table", "row_chunks", "to_float", "values"]

TIME_ORDERS: tuple[str, ...] = ("reject", "sort", "stop")
SEPARATORS: tuple[str, ...] = (",", ";", "\t")
#: Separators suggested, never sniffed, when the header splits into one column.
_SUGGESTED = (*SEPARATORS, "|", " ")
_SEPARATOR_NAMES = {"\t": "tab", " ": "space"}
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")
_DOTTED = re.compile(r"[+-]?[\d.]*\.\d+(,\d*)?")


@dataclass(slots=True)
class Table:
    path: str
    header: list[str]
    time_index: int
    columns: dict[str, int]  # signal column name -> index
    reader: Iterator[list[str]]
    delimiter: str
    decimal: str
    time: TimeParser
    index_column: int | None = None  # an unnamed row index, left out
    notices: list[str] = field(default_factory=list)  # for the user, before any scoring
    out_of_order: int = 0  # rows earlier than a row before them
    first_out_of_order: tuple[int, str] | None = None  # its line and time as written

    def name(self, idx: int) -> str:
        """Column ``idx`` for messages: its name, or its number when it has none."""
        return self.header[idx] or f"column {idx + 1}"


@dataclass(frozen=True, slots=True)
class Rows:
    """One chunk of rows with the right number of fields and parsed times."""

    lines: list[int]  # each row's line in the file, for error messages
    raw_times: list[str]
    times: NDArray[np.float64]
    cells: list[list[str]]


def open_table(
    path: str,
    handle: IO[str],
    *,
    separator: str | None = None,
    decimal: str = ".",
    time_column: str | None = None,
    time_format: str | None = None,
    exclude: Sequence[str] = (),
    signal_columns: Sequence[str] = (),
) -> Table:
    """Read the header from ``handle`` and decide the time column and the candidate signals."""
    if decimal not in (".", ","):
        raise ValueError(f"the decimal mark must be '.' or ',', not {decimal!r}")
    first = handle.readline()
    if not first:
        raise InputError("the file is empty; expected a header row", file=path, line=1)
    # A decimal comma is never the separator, so it is not sniffed as one.
    delimiter = _separator(separator, path) or max(
        (s for s in SEPARATORS if s != decimal), key=first.count)
    if decimal == delimiter:
        raise InputError(f"the separator and the decimal mark are both {decimal!r}; "
                         "give the separator with --separator", file=path, line=1)
    header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter))]
    if len(header) == 1:
        raise InputError(_one_column(header[0], delimiter, separator is not None), file=path,
                         line=1)
    for i, h in enumerate(header[1:], start=1):
        if not h:
            trailing = " (the header line ends with a separator)" if i == len(header) - 1 else ""
            raise InputError(f"column {i + 1} of the header has no name{trailing}; every column "
                             "but a leading row index needs one", file=path, line=1)
    named = [h for h in header if h]
    if len(set(named)) != len(named):
        dup = next(h for h in named if named.count(h) > 1)
        raise InputError(f"column {dup!r} appears twice in the header", file=path, line=1)
    reader: Iterator[list[str]] = csv.reader(handle, delimiter=delimiter)
    time = TimeParser(time_format, decimal)
    table = Table(path, header, 0, {}, reader, delimiter, decimal, time)
    if not header[0]:
        # Decided from the first row, which is then put back in front of the rest.
        peeked: list[list[str]] = []
        for row in reader:
            peeked.append(row)
            if not _blank(row):
                break
        table.reader = itertools.chain(peeked, reader)
        cell = peeked[-1][0].strip() if peeked and not _blank(peeked[-1]) else ""
        if time_column is not None or not _is_time(cell, TimeParser(time_format, decimal)):
            table.index_column = 0
            table.notices.append(
                f"column 1 has no name and holds {cell!r} in the first row: taken as a row "
                "index (as pandas writes one) and left out")
    if time_column is None:
        table.time_index = 1 if table.index_column == 0 else 0
    elif time_column in named:
        table.time_index = header.index(time_column)
    else:
        raise InputError(f"time column {time_column!r} not found; the header has: "
                         f"{', '.join(named)}", file=path, line=1)
    for what, wanted in (("excluded", exclude), ("signal", signal_columns)):
        for col in wanted:
            if col not in named:
                raise InputError(f"{what} column {col!r} not found; the header has: "
                                 f"{', '.join(named)}", file=path, line=1)
    for col in signal_columns:
        if col in exclude or header.index(col) == table.time_index:
            what = "excluded" if col in exclude else "the time column"
            raise InputError(f"column {col!r} cannot be a signal: it is {what}", file=path, line=1)
    skipped = {table.time_index, table.index_column}
    table.columns = {h: i for i, h in enumerate(header) if i not in skipped and h not in exclude}
    return table


def row_chunks(table: Table, chunk_rows: int, time_order: str = "reject") -> Iterator[Rows]:
    """The rows in chunks of ``chunk_rows``, in time order (see the module docstring)."""
    if time_order not in TIME_ORDERS:
        raise ValueError(f"time order must be one of {', '.join(TIME_ORDERS)}, not {time_order!r}")
    rows = _timed_rows(table, time_order)
    if time_order == "sort":
        rows = iter(sorted(rows, key=lambda r: r[2]))  # stable: equal times keep file order
    while True:
        chunk = list(itertools.islice(rows, chunk_rows))
        if not chunk:
            return
        yield Rows([r[0] for r in chunk], [r[1] for r in chunk],
                   np.array([r[2] for r in chunk], dtype=np.float64), [r[3] for r in chunk])


def values(rows: Rows, idx: int, table: Table, remedy: str) -> NDArray[np.float64]:
    """Column ``idx`` as numbers; ``remedy`` ends the error for text (what the user can do)."""
    return np.array(
        [_number(row[idx], table, line, idx, remedy)
         for row, line in zip(rows.cells, rows.lines, strict=True)],
        dtype=np.float64,
    )


def to_float(text: str, decimal: str = ".") -> float:
    """``float`` with the decimal mark ``decimal``; ``ValueError`` for anything else."""
    if decimal == ",":
        if "." in text:
            raise ValueError(f"{text!r} holds a '.' with the decimal mark ','")
        text = text.replace(",", ".")
    return float(text)


def _timed_rows(table: Table, time_order: str) -> Iterator[tuple[int, str, float, list[str]]]:
    ncol = len(table.header)
    line = 1
    latest = -math.inf
    for row in table.reader:
        line += 1
        if _blank(row):
            continue
        if len(row) != ncol:
            raise InputError(f"expected {ncol} fields, found {len(row)}", file=table.path,
                             line=line)
        stamp = row[table.time_index].strip()
        try:
            t = table.time.parse(stamp)
        except ValueError as exc:
            hint = "" if table.time.time_format is not None else (
                "; give its format with --time-format (a strptime format such as "
                "'%d/%m/%Y %H:%M:%S', or s, ms, us or ns for numbers)")
            raise InputError(f"cannot read time {stamp!r}: {exc}{hint}", file=table.path,
                             line=line, key=table.name(table.time_index)) from None
        if t < latest:
            if time_order == "stop":
                raise InputError(
                    f"time {stamp!r} is earlier than the row before; rows must be sorted by time "
                    "(--time-order reject skips such rows, --time-order sort sorts the file)",
                    file=table.path, line=line, key=table.name(table.time_index))
            table.out_of_order += 1
            if table.first_out_of_order is None:
                table.first_out_of_order = (line, stamp)
            if time_order == "reject":
                continue
        else:
            latest = t
        yield line, stamp, t, row


def _number(text: str, table: Table, line: int, idx: int, remedy: str) -> float:
    s = text.strip()
    if not s:
        return math.nan  # an empty cell is a dropout: counted by the gate, not an error
    try:
        return to_float(s, table.decimal)
    except ValueError:
        pass
    if table.decimal == "." and _DECIMAL_COMMA.fullmatch(s):
        why = "with ',' as the decimal mark give --decimal ,"
    elif table.decimal == "," and _DOTTED.fullmatch(s):
        why = "with --decimal , a '.' is no decimal mark, and thousands separators are not read"
    else:
        why = remedy
    raise InputError(f"{s!r} is not a number; {why}", file=table.path, line=line,
                     key=f"column {table.header[idx]!r}")


def _blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _is_time(cell: str, parser: TimeParser) -> bool:
    try:
        if parser.is_row_index(cell):
            return False
        parser.parse(cell)
    except ValueError:
        return False
    return True


def _separator(given: str | None, path: str) -> str | None:
    if given is None:
        return None
    # A tab is awkward to type in a shell, so its escape and its name do as well.
    sep = {"\\t": "\t", "tab": "\t"}.get(given, given)
    if len(sep) != 1:
        raise InputError(f"--separator must be one character (or tab), not {given!r}", file=path)
    return sep


def _one_column(cell: str, delimiter: str, given: bool) -> str:
    likely = max((s for s in _SUGGESTED if s != delimiter), key=cell.count)
    how = f"with the separator {_named(delimiter)}" if given else "(no separator found)"
    text = f"the header has one column {how}: {cell!r}"
    if cell.count(likely):
        return f"{text}; it looks {_named(likely)}-separated: --separator {_shown(likely)}"
    return f"{text}; replay needs a time column and a signal column: give the separator with " \
           "--separator"


def _named(sep: str) -> str:
    return _SEPARATOR_NAMES.get(sep, repr(sep))


def _shown(sep: str) -> str:
    return "tab" if sep == "\t" else shlex.quote(sep)
