"""Find the line of a key in a TOML file, so configuration errors can name it.

:mod:`tomllib` parses but forgets positions. This scanner reads the text once and records the
line of every table header and ``key =`` assignment under its dotted path (array-of-tables
elements get an index: ``signals[2].detector.kind``). It understands what config files use:
headers, array tables, dotted and quoted keys, one-line inline tables. A path it cannot place
falls back to its longest known prefix, which is still the right neighbourhood.
"""

from __future__ import annotations

import re

__all__ = ["KeyLines"]

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(
    r"""^\s*((?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)(?:\s*\.\s*(?:"[^"]*"|'[^']*'|[A-Za-z0-9_\-]+))*)\s*="""
)
_INLINE_KEY = re.compile(r"""[{,]\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_\-]+)""", dotted)
    return [a or b or c for a, b, c in parts]


class KeyLines:
    """Map dotted key paths of one TOML text to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        table: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                names = _split_key(header.group(2))
                if header.group(1) == "[[":
                    base = self._resolve(names[:-1], counts)
                    array = ".".join([*base, names[-1]]) if base else names[-1]
                    index = counts.get(array, -1) + 1
                    counts[array] = index
                    table = [*base, f"{names[-1]}[{index}]"]
                else:
                    table = self._resolve(names, counts)
                self._lines.setdefault(".".join(table), number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                key = ".".join([*table, *_split_key(assign.group(1))])
                self._lines.setdefault(key, number)
                rest = line[assign.end() :]
                if rest.lstrip().startswith("{"):
                    for inner in _INLINE_KEY.finditer(rest):
                        self._lines.setdefault(f"{key}.{_split_key(inner.group(1))[0]}", number)

    @staticmethod
    def _resolve(names: list[str], counts: dict[str, int]) -> list[str]:
        # `[signals.detector]` after `[[signals]]` belongs to the latest signals element.
        out: list[str] = []
        for name in names:
            path = ".".join([*out, name]) if out else name
            out.append(f"{name}[{counts[path]}]" if path in counts else name)
        return out

    def line(self, path: str) -> int | None:
        """Line of ``path`` or of its longest known prefix; ``None`` if nothing matches."""
        while path:
            if path in self._lines:
                return self._lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None
