"""Reading the time column of a replay CSV into seconds.

Without a format, a cell is read as

- a number: seconds, milliseconds, microseconds or nanoseconds since the epoch, the unit told by
  its size (:data:`EPOCH_UNITS`) from the column's first number and kept for the whole column, so
  one file is never read in two units. Small numbers are seconds, which covers times relative to
  a start (0, 0.5, 1.0, ...); relative milliseconds look the same and need ``--time-format ms``.
- ISO 8601 (``datetime.fromisoformat``: ``2024-05-01 12:00:00``, ``2024-05-01T12:00:00.5Z``,
  with or without a zone), then the year-first stamps of :data:`STAMP_FORMATS`, among them the
  NASA bearing set's ``2004.02.12.10.32.39``. Day- or month-first dates (``01/02/2024``) are
  ambiguous and are never guessed: they need ``--time-format``.

A stamp without a zone is UTC, never local time: local clocks repeat an hour when daylight
saving ends, which would make a sorted file look unsorted.

A format (``--time-format``) is either a unit of :data:`TIME_UNITS` for plain numbers or a
``strptime`` format, and is then the only way a cell is read.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

__all__ = ["EPOCH_UNITS", "STAMP_FORMATS", "TIME_UNITS", "TimeParser"]

#: ``--time-format`` values for plain numbers, and the seconds in one of them.
TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}

#: Where an epoch number stops being seconds (then milliseconds, ...): 1e11 seconds is the year
#: 5138, 1e11 milliseconds the year 1973, so each unit owns its range of plausible dates.
EPOCH_UNITS: tuple[tuple[float, str], ...] = ((1e17, "ns"), (1e14, "us"), (1e11, "ms"))

#: Stamps tried after ISO 8601, year first only (no day/month ambiguity).
STAMP_FORMATS: tuple[str, ...] = (
    "%Y.%m.%d.%H.%M.%S",  # the NASA IMS bearing set's file names: 2004.02.12.10.32.39
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S.%f",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
)

#: An epoch number read by its size past this is a misreading, not a date: a compact stamp
#: 20240501120000 taken as milliseconds would be the year 2611.
_LATEST = datetime(2200, 1, 1, tzinfo=UTC).timestamp()

RECOGNISED = (
    "recognised are ISO 8601 (2024-05-01 12:00:00, 2024-05-01T12:00:00+02:00), "
    "2004.02.12.10.32.39, 2004/02/12 10:32:39 and epoch numbers (s, ms, us or ns, told by size)"
)

_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+")


class TimeParser:
    """Turns the cells of one time column into seconds; :meth:`parse` raises ``ValueError``
    whose text says why a cell cannot be read."""

    def __init__(self, time_format: str | None = None, decimal: str = ".") -> None:
        self.time_format = time_format
        self.decimal = decimal
        # The unit of plain numbers: given, or decided by the column's first number.
        self.unit: str | None = time_format if time_format in TIME_UNITS else None
        # The stamp format that read the last stamp is tried first: a file keeps one format,
        # and a failed try costs more than a hit. None is ISO 8601.
        self._stamps: list[str | None] = [None, *STAMP_FORMATS]

    def parse(self, text: str) -> float:
        """Seconds since the epoch (or since whatever start plain numbers count from)."""
        fmt = self.time_format
        if fmt is not None and fmt not in TIME_UNITS:
            try:
                return _seconds(datetime.strptime(text, fmt))
            except ValueError as exc:
                raise ValueError(f"{exc} (--time-format)") from None
        number = self._number(text)
        if number is not None:
            return self._epoch(number)
        if fmt is not None:
            raise ValueError(f"--time-format {fmt} expects a number")
        for i, stamp_format in enumerate(self._stamps):
            try:
                stamp = (datetime.fromisoformat(text) if stamp_format is None
                         else datetime.strptime(text, stamp_format))
            except ValueError:
                continue
            if i:
                self._stamps.insert(0, self._stamps.pop(i))
            return _seconds(stamp)
        hint = ("; with ',' as the decimal mark give --decimal ,"
                if self.decimal == "." and _DECIMAL_COMMA.fullmatch(text) else "")
        raise ValueError(RECOGNISED + hint)

    def is_row_index(self, text: str) -> bool:
        """Whether ``text`` reads as a row number (a whole number below 1e9, before the epoch
        second of 2001-09-09) rather than as a time."""
        number = self._number(text)
        return number is not None and number == int(number) and abs(number) < 1e9

    def _number(self, text: str) -> float | None:
        if self.decimal == ",":
            if "." in text:
                return None
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            return None
        if not math.isfinite(number):
            raise ValueError("a time must be a finite number")
        return number

    def _epoch(self, number: float) -> float:
        if self.unit is None:
            self.unit = next((u for edge, u in EPOCH_UNITS if abs(number) >= edge), "s")
            guessed = True
        else:
            guessed = self.time_format is None
        seconds = number * TIME_UNITS[self.unit]
        if guessed and seconds >= _LATEST:
            raise ValueError(
                f"read as epoch {_UNIT_NAMES[self.unit]} (told by its size) it lies after the "
                "year 2200, so it is no epoch time"
            )
        return seconds


_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _seconds(stamp: datetime) -> float:
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
