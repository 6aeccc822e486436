"""Structured, rate-limited logs: one line per event, and no log storm from one bad sensor.

Lines are ``time level logger message`` with key=value pairs in the message, which journald and
grep both read well. A message template that repeats (the same logger and format string, e.g.
"payload rejected from %s") is let through a few times per interval; the rest are counted and
summarised once the interval ends, so a flood of bad payloads costs one line a minute, not a
full disk.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["RateLimit", "setup_logging"]


class RateLimit(logging.Filter):
    """Let each (logger, template) through ``burst`` times per ``interval`` seconds."""

    def __init__(self, burst: int = 5, interval: float = 60.0, max_keys: int = 1024) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.max_keys = max_keys  # bounded: templates are code, but be safe
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [window start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # only warnings and errors repeat at data rate
        key = (record.name, str(record.msg))
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.interval:
            if entry is not None and entry[1] > self.burst:
                record.msg = f"{record.msg} (and {int(entry[1] - self.burst)} more like it " \
                             f"in the last {self.interval:g} s)"
            if len(self._seen) >= self.max_keys and key not in self._seen:
                self._seen.clear()
            self._seen[key] = [now, 1.0]
            return True
        entry[1] += 1
        return entry[1] <= self.burst


def setup_logging(level: str = "info") -> None:
    """Configure the root logger for a command-line run (never called at import)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z"))
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
