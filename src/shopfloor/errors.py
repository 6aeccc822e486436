"""Errors a user can act on: bad configuration and bad input data.

Both name where the problem is (file, line, key or column) so an engineer can fix it without
reading a traceback, and both map to exit code 2 on the command line.
"""

from __future__ import annotations

__all__ = ["EXIT_USAGE", "ConfigError", "InputError", "UserError"]

#: Exit code for bad configuration, arguments or input data (as argparse uses for usage errors).
EXIT_USAGE = 2


class UserError(Exception):
    """A problem in something the user gave us, located as precisely as we can."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (where, self.key) if p]
        return ": ".join([*parts, self.message])


class ConfigError(UserError):
    """The configuration is invalid; ``key`` is a dotted path like ``signals[2].detector.alpha``."""


class InputError(UserError):
    """Input data (a CSV for replay, a file named on the command line) cannot be used."""
