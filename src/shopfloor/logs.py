"""Logging for the command line: one line per event, and no log storm from one bad sensor.

Lines are ``time level logger message`` with key=value pairs in the message, which journald and
grep both read well. Code that can log at data rate (a rejected payload, a failed publish) goes
through :class:`RateLimitedLog`, so a flood of bad payloads costs one line a minute, not a full
disk - for library users too, whatever handlers they configure.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

__all__ = ["RateLimitedLog", "setup_logging"]


class RateLimitedLog:
    """Log a repeated problem once per ``interval`` seconds per key, counting what it held back.

    Keys are fixed strings from the code (a bounded set), never data from the network.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(
        self, level: int, key: str, message: str, *args: object, exc_info: bool = False
    ) -> None:
        """Log ``message % args`` unless ``key`` was logged less than ``interval`` s ago."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += " (%d similar held back)"
            args = (*args, held)
        self.logger.log(level, message, *args, exc_info=exc_info)


def setup_logging(level: str = "info") -> None:
    """Configure the root logger for a command-line run (never called at import)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
