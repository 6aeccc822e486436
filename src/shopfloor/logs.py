"""Logging for the command line: one line per event, and no log storm from one bad sensor.

Lines are ``time level logger message`` with key=value pairs in the message, which journald and
grep both read well. Code that can log at data rate (a rejected payload, a failed publish) goes
through :class:`RateLimitedLog`, so a flood of bad payloads costs one line a minute, not a full
disk - for library users too, whatever handlers they configure.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

__all__ = ["JournalFormatter", "RateLimitedLog", "setup_logging", "to_journal"]


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


#: syslog priorities of Python's levels, as sd-daemon(3) prefixes read them ("<3>..."): the
#: journal then files an ERROR line as err, so ``journalctl -p warning`` shows what matters.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))


class JournalFormatter(logging.Formatter):
    """Lines with their syslog priority in front, every line of a traceback too (journald
    makes each line an entry of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in _PRIORITIES if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def to_journal(stream: object, environ: dict[str, str] | None = None) -> bool:
    """True if ``stream`` is the journal's: systemd sets $JOURNAL_STREAM to the
    ``device:inode`` of the stream it connected (a redirected stream keeps the variable but
    is another file)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(x) for x in value.split(":"))
        st = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup_logging(level: str = "info") -> None:
    """Configure the root logger for a command-line run (never called at import)."""
    handler = logging.StreamHandler(sys.stderr)
    cls = JournalFormatter if to_journal(sys.stderr) else logging.Formatter
    handler.setFormatter(cls(
        "%(asctime)s %(levelname)s %(name)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
