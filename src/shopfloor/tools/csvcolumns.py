"""Which columns of a replay CSV are labels, which one is the truth, and which look suspicious.

Label columns. Data sets that come with ground truth (SKAB's ``anomaly`` and ``changepoint``)
carry it in columns beside the sensors; scored as signals they would leak the answer into the
detection. Without a config, a column is *label-like*, and not a signal, when

- its name is one of :data:`LABEL_NAMES` (ignoring case), or
- every non-empty cell of it in the first chunk of rows (:data:`shopfloor.tools.replay.CHUNK_ROWS`,
  or the whole file when shorter) is 0 or 1: the decision is made before the first row is
  scored, so a column that holds only 0 and 1 in those rows is left out even if other values
  come later.

``ReplayOptions.signal_columns`` (``--signal-column``) scores such a column as a signal all the
same (a valve's open/closed state is a real 0/1 signal). With a config, the config's columns are
the signals, whatever their names.

Suspicious columns. Without a config, a signal column that looks like a row index or a time
(named so, such as ``id``, ``index``, pandas' ``Unnamed: 0`` or ``timestamp``; counting up by
exactly 1 every row; or empty throughout the first chunk) is scored all the same, with a warning
naming it and the option that leaves it out: only the user knows whether a part counter is a
measurement.

An unnamed first column that :mod:`shopfloor.tools.csvread` takes as a row index is left out there,
with a notice of its own.

The truth. :func:`truth_column` picks the first column named like one of :data:`TRUTH_NAMES`
(excluded or not) whose first-chunk cells are all 0 or 1; :func:`truth_values` reads it chunk by
chunk and gives up, with a notice, at the first other value rather than count a wrong truth.
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from shopfloor.tools.csvread import Rows, Table, to_float

__all__ = [
    "LABEL_NAMES",
    "TRUTH_NAMES",
    "label_columns",
    "label_notice",
    "quote_names",
    "suspicious_columns",
    "truth_column",
    "truth_values",
]

#: Column names (compared in lower case) that hold labels, not measurements: SKAB's
#: ``anomaly`` and ``changepoint``, and the usual names of a ground-truth column elsewhere.
LABEL_NAMES: tuple[str, ...] = (
    "anomaly", "anomalies", "is_anomaly", "label", "labels", "target", "fault",
    "changepoint", "changepoints",
)
#: Label names that mark every anomalous row, in order of preference for the point-wise report.
#: A changepoint column marks only the rows where a fault starts or ends, so it is no truth.
TRUTH_NAMES: tuple[str, ...] = tuple(n for n in LABEL_NAMES if not n.startswith("changepoint"))


def _zero_one(rows: Rows | None, idx: int, decimal: str) -> bool:
    """Whether every non-empty cell of column ``idx`` is 0 or 1, and there is one at least."""
    if rows is None:
        return False
    distinct = {row[idx].strip() for row in rows.cells} - {""}
    try:
        return bool(distinct) and all(to_float(v, decimal) in (0.0, 1.0) for v in distinct)
    except ValueError:
        return False  # text: not a label of ours (and an error later if it is a signal)


def label_columns(table: Table, first: Rows | None, keep: Sequence[str]) -> dict[str, str]:
    """Candidate signal columns that look like labels, each with the reason why."""
    out: dict[str, str] = {}
    for name, idx in table.columns.items():
        if name in keep:
            continue
        if name.lower() in LABEL_NAMES:
            out[name] = "named like a label"
        elif _zero_one(first, idx, table.decimal):
            out[name] = "only 0 and 1 in the first rows"
    return out


def label_notice(labels: dict[str, str]) -> str:
    reasons = "; ".join(
        f"{quote_names([c for c in labels if labels[c] == why])} ({why})"
        for why in dict.fromkeys(labels.values())
    )
    return (f"label-like columns left out of the signals: {reasons}; "
            "--signal-column NAME scores one as a signal anyway")


#: Names (in lower case) of columns that hold a row number or an id rather than a measurement,
#: and of time columns; ``unnamed: N`` is what pandas calls a column whose header cell is empty.
_INDEX_NAMES = re.compile(r"index|idx|id|row|rownum|row_number|unnamed: \d+")
_TIME_NAMES = ("time", "timestamp", "datetime", "date", "epoch")


def suspicious_columns(
    table: Table, first: Rows | None, signals: Sequence[str], keep: Sequence[str]
) -> dict[str, str]:
    """Signal columns that look like a row index, a time or nothing, each with its warning."""
    out: dict[str, str] = {}
    for name in signals:
        if name in keep:
            continue  # forced in with --signal-column: the user has looked at it
        idx = table.columns[name]
        low = name.lower()
        leave_out = f"--exclude {shlex.quote(name)} leaves it out"
        if _INDEX_NAMES.fullmatch(low):
            why = "is named like a row index or an id"
        elif low in _TIME_NAMES:
            why = (f"is named like a time (the time column is {table.name(table.time_index)!r}; "
                   f"--time-column {shlex.quote(name)} reads the time from it)")
        elif first is not None and _counts_rows(first, idx, table.decimal):
            why = "counts up by 1 every row, like a row index"
        elif first is not None and not any(row[idx].strip() for row in first.cells):
            why = (f"is empty in the first {len(first.cells)} rows (each empty cell is a "
                   "rejected sample)")
        else:
            continue
        out[name] = f"column {name!r} {why}, and is scored as a signal; {leave_out}"
    return out


def _counts_rows(rows: Rows, idx: int, decimal: str) -> bool:
    try:
        numbers = [to_float(row[idx].strip(), decimal) for row in rows.cells]
    except ValueError:
        return False  # text, or an empty cell: no counter
    return len(numbers) >= 3 and all(b - a == 1.0 for a, b in itertools.pairwise(numbers))


def quote_names(names: Sequence[str] | dict[str, str]) -> str:
    return ", ".join(repr(n) for n in names)


def truth_column(
    table: Table, first: Rows | None, notify: Callable[[str], None] | None
) -> int | None:
    """Index of the column the point-wise report scores against, or None."""
    by_name = {h.lower(): i for i, h in reversed(list(enumerate(table.header)))}
    candidates = [by_name[n] for n in TRUTH_NAMES if n in by_name and
                  by_name[n] != table.time_index]
    for idx in candidates:
        if _zero_one(first, idx, table.decimal):
            return idx
    if candidates and first is not None and notify is not None:
        names = quote_names([table.header[i] for i in candidates])
        notify(f"no F1 report: label column {names} holds values other than 0 and 1"
               if len(candidates) == 1 else
               f"no F1 report: label columns {names} hold values other than 0 and 1")
    return None


def truth_values(
    rows: Rows, idx: int, table: Table, notify: Callable[[str], None] | None
) -> NDArray[np.float64] | None:
    """The truth column's 0/1 values (NaN where empty); None at a value other than 0 or 1."""
    out = np.full(len(rows.cells), np.nan)
    for i, row in enumerate(rows.cells):
        cell = row[idx].strip()
        if not cell:
            continue
        try:
            v = to_float(cell, table.decimal)
        except ValueError:
            v = math.nan
        if v not in (0.0, 1.0):
            if notify is not None:
                notify(f"no F1 report: {table.path}:{rows.lines[i]}: column "
                       f"{table.header[idx]!r} holds {cell!r}, not 0 or 1")
            return None
        out[i] = v
    return out
