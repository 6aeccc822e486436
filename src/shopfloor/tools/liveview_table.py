"""The text of the live view: the agent's snapshot as lines no wider than the terminal.

:func:`render` lays out one :class:`AgentView` (and an older one, for rates) as the table the
terminal shows, :func:`summary` is its one-line totals, :func:`plain_alarm_line` an alarm as
the agent's log writes it. Pure functions of the snapshot: :mod:`shopfloor.tools.liveview` draws
them.

Layout, in the order things give way when the line is too narrow: names are shortened first
(a ``~`` marks the cut; an asset's distinguishing labels, ``station-1@line2``, are kept), then
the columns least needed go (rate, threshold, score), then the state is abbreviated. Counts
- the active alarms in the totals line, the alarms of each row - are never cut: the totals
line shortens its words and leaves out other totals first. Rows are sorted by asset (digit
runs as numbers: ``motor-2`` before ``motor-10``), its labels, the asset's own detector, then
its signals, so no row moves while a person reads it; when not all fit, those in an alarm are
the ones kept.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "LOG_TIME_FORMAT",
    "AgentView",
    "AlarmLine",
    "AssetView",
    "Labels",
    "SignalView",
    "plain_alarm_line",
    "render",
    "summary",
]

#: As :func:`shopfloor.logs.setup_logging` stamps its lines (local time): a time the demo
#: prints can be found in the log.
LOG_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"

Labels = tuple[tuple[str, str], ...]

_COLORS = {"ACTIVE": "\x1b[1;31m", "COOLDOWN": "\x1b[33m", "WARMING_UP": "\x1b[36m",
           "NORMAL": "\x1b[32m"}
_RESET = "\x1b[0m"
_GAP = "  "
# Optional columns in the order they are given up when the line is too narrow.
_OPTIONAL = (("MSG/S", 7), ("THRESHOLD", 9), ("SCORE", 9))
_SHOWN = ("MSG/S", "SCORE", "THRESHOLD")  # their order on the line
_STATE_WIDTH, _STATE_NARROW = 10, 6
_SHORT_STATES = {"WARMING_UP": "WARMUP", "COOLDOWN": "COOLDN"}
_NAMES_WANTED = 20  # columns for asset and signal before the optional columns give way
_ALARMING = ("ACTIVE", "COOLDOWN")
_KINDS = {"baseline_adopted": "adopted"}


@dataclass(frozen=True, slots=True)
class SignalView:
    """One signal as the agent last saw it.

    Attributes
    ----------
    messages
        Messages received for the signal since the agent started.
    score, threshold
        Latest score and threshold; NaN before the first score, threshold inf while the
        threshold is not calibrated.
    state
        Alarm state name: ``WARMING_UP``, ``NORMAL``, ``ACTIVE`` or ``COOLDOWN``.
    alarms
        Alarms raised since the agent started.
    labels
        The topic's other named levels (``(("line", "line2"),)``), part of the signal's
        identity: two signals may share asset and name and differ only here.
    """

    asset: str
    signal: str
    messages: int
    score: float
    threshold: float
    state: str
    alarms: int
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class AssetView:
    """An asset-level (multivariate) detector over several signals of one machine."""

    asset: str
    score: float
    state: str
    alarms: int
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class AlarmLine:
    """An alarm raised, cleared or ended by adoption; ``signal`` None for an asset's alarm."""

    seq: int  # 1, 2, ... in the order the log took them: tells a reader what it has missed
    time: float  # wall-clock epoch seconds
    kind: str  # "raised", "cleared" or "baseline_adopted"
    asset: str
    signal: str | None
    score: float
    threshold: float
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class AgentView:
    """A snapshot of the agent: every signal and asset, totals, and the latest alarms."""

    signals: list[SignalView]
    received: int  # messages received
    rejected: int  # payloads rejected by the codecs or routing
    dropped: int  # messages dropped by the full queue
    events: int  # anomaly events published
    uptime_s: float
    assets: list[AssetView] = field(default_factory=list)
    alarms: tuple[AlarmLine, ...] = ()  # oldest first, see AlarmLog.recent


@dataclass(frozen=True, slots=True)
class _Row:
    asset: str
    labels: Labels
    signal: str | None  # None: the asset's own detector
    messages: int | None
    score: float
    threshold: float
    state: str
    alarms: int

    @property
    def order(self) -> tuple[object, ...]:
        # Asset, then its labels (one asset on two lines is two machines), then the asset's
        # own row before its signals.
        return (_natural(self.asset), self.labels, self.signal is not None,
                _natural(self.signal or ""))


def summary(view: AgentView, previous: AgentView | None = None, width: int | None = None) -> str:
    """The one-line totals: uptime, messages (and their rate), rejects, drops, events, alarms.

    With ``width``, words are shortened and the least needed totals left out until the line
    fits; the count of active alarms always stays.
    """
    rate = _rate(view.received, view, None if previous is None else previous.received, previous)
    per_s = "" if rate is None else f" ({rate:.0f}/s)"
    active = sum(s.state == "ACTIVE" for s in view.signals) + sum(
        a.state == "ACTIVE" for a in view.assets)
    up = int(view.uptime_s)
    uptime = f"up {up // 3600}:{up // 60 % 60:02d}:{up % 60:02d}"
    # (rank, (long form, short form)) in line order. When even the short forms are too wide,
    # parts go lowest rank first; the active alarms, last on the line, always stay, and keep
    # their long form longest.
    parts = [(2, (uptime, uptime)),
             (4, (f"messages {view.received}{per_s}", f"msg {view.received}")),
             (1, (f"rejected {view.rejected}", f"rej {view.rejected}")),
             (3, (f"dropped {view.dropped}", f"drop {view.dropped}")),
             (0, (f"events {view.events}", f"ev {view.events}"))]
    alarms = (f"active alarms {active}", f"alarms {active}")

    def line(form: int, alarm_form: int, least: int, gap: str) -> str:
        kept = [words[form] for rank, words in parts if rank >= least]
        return gap.join([*kept, alarms[alarm_form]])

    if width is None:
        return line(0, 0, 0, _GAP)
    for least in range(len(parts) + 1):
        for form, alarm_form, gap in ((0, 0, _GAP), (1, 0, _GAP), (1, 1, _GAP), (1, 1, " ")):
            text = line(form, alarm_form, least, gap)
            if len(text) <= width:
                return text
    return alarms[1][:width]


def render(
    view: AgentView,
    previous_view: AgentView | None,
    width: int,
    *,
    rows: int = 20,
    color: bool = False,
    alarm_rows: int = 5,
    height: int | None = None,
    title: str = "",
) -> str:
    """The view as text lines no wider than ``width`` (and no more than ``height``).

    Rows are sorted by asset (its labels, then the asset's own detector) and signal. At most
    ``rows`` are listed; when there are more, those in an alarm are listed first and a last
    line counts the others. Message rates are taken between ``previous_view`` and ``view``
    ("-" without a previous view). The latest ``alarm_rows`` alarms follow. ``color`` adds
    ANSI colours to the alarm state; ``title`` is the first line or lines (cut to the width).
    """
    width = max(width, 20)
    before = {} if previous_view is None else {
        (s.asset, s.labels, s.signal): s.messages for s in previous_view.signals}
    all_rows = _rows(view)
    lines = [_cut(line, width) for line in title.splitlines()]
    lines.append(summary(view, previous_view, width))
    alarms = view.alarms[-alarm_rows:] if alarm_rows > 0 else ()
    limit = max(rows, 0)
    if height is not None:
        # The rows keep about two thirds of the screen; the alarm area gets the rest. One
        # line is the header, and one the "more" line if not every row fits.
        budget = max(height - len(lines) - 1, 2)
        alarms = alarms[len(alarms) - min(len(alarms), max(budget // 3 - 1, 0)):]
        fit = max(budget - ((1 + len(alarms)) if alarm_rows > 0 else 0), 1)
        limit = min(limit, fit if len(all_rows) <= fit else max(fit - 1, 0))
    shown = _choose(all_rows, limit)
    suffixes = _label_suffixes(all_rows)
    layout = _Layout.fit(width, shown, suffixes)
    lines.append(_cut(layout.header(), width))
    for r in shown:
        rate = None if r.signal is None else _rate(
            r.messages or 0, view, before.get((r.asset, r.labels, r.signal)), previous_view)
        lines.append(layout.row(r, rate, suffixes.get((r.asset, r.labels), ""), color))
    if len(shown) < len(all_rows):
        alarming = sum(r.state in _ALARMING for r in all_rows) - sum(
            r.state in _ALARMING for r in shown)
        lines.append(_cut(f"... {len(all_rows) - len(shown)} more"
                          + (f" ({alarming} in an alarm)" if alarming else ""), width))
    if alarm_rows > 0:
        lines.append(_cut("RECENT ALARMS" + ("" if view.alarms else "  none yet"), width))
        lines += [_alarm_line(a, width, suffixes) for a in alarms]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Layout:
    asset_w: int
    signal_w: int
    columns: tuple[tuple[str, int], ...]  # the optional columns shown, in line order
    state_w: int
    alarms_w: int
    width: int

    @classmethod
    def fit(cls, width: int, rows: Sequence[_Row], suffixes: dict[tuple[str, Labels], str]
            ) -> _Layout:
        asset_need = max([5, *(len(r.asset) + len(suffixes.get((r.asset, r.labels), ""))
                               for r in rows)])
        signal_need = max([6, *(len(r.signal or "(asset)") for r in rows)])
        alarms_w = max([6, *(len(str(r.alarms)) for r in rows)])
        wanted = min(asset_need + signal_need, _NAMES_WANTED)
        optional = list(_OPTIONAL)
        state_w = _STATE_WIDTH

        def names(state: int) -> int:  # columns left for asset and signal, and their gap
            fixed = sum(w for _, w in optional) + state + alarms_w
            return width - fixed - len(_GAP) * (len(optional) + 3)

        while optional and names(state_w) < wanted:
            optional.pop(0)
        if names(state_w) < wanted:
            state_w = _STATE_NARROW
        room = max(names(state_w), 2)
        if asset_need + signal_need <= room:
            asset_w, signal_w = asset_need, signal_need
        elif asset_need <= room // 2:
            asset_w, signal_w = asset_need, room - asset_need
        elif signal_need <= room - room // 2:
            asset_w, signal_w = room - signal_need, signal_need
        else:
            asset_w, signal_w = room // 2, room - room // 2
        shown = tuple(c for name in _SHOWN for c in optional if c[0] == name)
        return cls(asset_w, signal_w, shown, state_w, alarms_w, width)

    def header(self) -> str:
        text = f"{_fit('ASSET', self.asset_w):<{self.asset_w}}{_GAP}"
        text += f"{_fit('SIGNAL', self.signal_w):<{self.signal_w}}"
        text += "".join(f"{_GAP}{t:>{w}}" for t, w in self.columns)
        text += f"{_GAP}{_fit('STATE', self.state_w):<{self.state_w}}"
        text += f"{_GAP}{_fit('ALARMS', self.alarms_w):>{self.alarms_w}}"
        return text

    def row(self, r: _Row, rate: float | None, suffix: str, color: bool) -> str:
        asset = _fit_keeping(r.asset, suffix, self.asset_w)
        signal = _fit(r.signal or "(asset)", self.signal_w)
        left = f"{asset:<{self.asset_w}}{_GAP}{signal:<{self.signal_w}}"
        values = {"MSG/S": _number(rate, 7, ".1f"), "SCORE": _number(r.score, 9),
                  "THRESHOLD": _number(r.threshold, 9)}
        left += "".join(f"{_GAP}{values[t]}" for t, _ in self.columns) + _GAP
        name = r.state if self.state_w == _STATE_WIDTH else _SHORT_STATES.get(r.state, r.state)
        state = f"{_fit(name, self.state_w):<{self.state_w}}"
        right = f"{_GAP}{r.alarms:>{self.alarms_w}}"
        if len(left) + len(state) + len(right) > self.width:  # only narrower than ~20 columns
            return _cut(left + state + right, self.width)
        if color and r.state in _COLORS:
            return left + _COLORS[r.state] + state + _RESET + right
        return left + state + right


def _rows(view: AgentView) -> list[_Row]:
    return sorted(
        [_Row(a.asset, a.labels, None, None, a.score, math.nan, a.state, a.alarms)
         for a in view.assets]
        + [_Row(s.asset, s.labels, s.signal, s.messages, s.score, s.threshold, s.state, s.alarms)
           for s in view.signals],
        key=lambda r: r.order)


def _choose(rows: list[_Row], limit: int) -> list[_Row]:
    """The first ``limit`` rows, those in an alarm first; in the rows' own order."""
    if len(rows) <= limit:
        return rows
    alarming = [r for r in rows if r.state in _ALARMING][:limit]
    rest = [r for r in rows if r.state not in _ALARMING][:limit - len(alarming)]
    keep = set(map(id, alarming + rest))
    return [r for r in rows if id(r) in keep]


def _label_suffixes(rows: Sequence[_Row]) -> dict[tuple[str, Labels], str]:
    """``@value`` of the labels that tell apart rows of the same asset name; "" when none do.

    Labels every row shares (one site, one line) are left out, so a single-line plant shows
    plain names.
    """
    by_asset: dict[str, set[Labels]] = {}
    for r in rows:
        by_asset.setdefault(r.asset, set()).add(r.labels)
    out: dict[tuple[str, Labels], str] = {}
    for asset, variants in by_asset.items():
        if len(variants) < 2:
            continue
        keys = {k for labels in variants for k, _ in labels}
        differ = {k for k in keys if len({dict(labels).get(k) for labels in variants}) > 1}
        for labels in variants:
            values = [v for k, v in labels if k in differ]
            out[(asset, labels)] = "@" + "/".join(values) if values else ""
    return out


def _alarm_name(a: AlarmLine, suffixes: dict[tuple[str, Labels], str]) -> str:
    asset = a.asset + suffixes.get((a.asset, a.labels), "")
    return f"{asset}/{a.signal}" if a.signal is not None else f"{asset} (asset)"


def _alarm_line(a: AlarmLine, width: int, suffixes: dict[tuple[str, Labels], str]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(a.time))  # the log lines' clock
    head = f"{clock} {_KINDS.get(a.kind, a.kind):<7}{_GAP}"
    tail = f"  score {_number(a.score, 0)}  threshold {_number(a.threshold, 0)}"
    name = _alarm_name(a, suffixes)
    room = width - len(head) - len(tail)
    if room < len(name):
        tail, room = "", width - len(head)  # the name says more than the numbers
    return _cut(head + _fit(name, max(room, 0)) + tail, width)


def plain_alarm_line(a: AlarmLine, view: AgentView) -> str:
    """``a`` as the agent's own log line of it: on its clock, in its words (labels as the
    view shows them)."""
    stamp = time.strftime(LOG_TIME_FORMAT, time.localtime(a.time))
    name = _alarm_name(a, _label_suffixes(_rows(view)))
    return f"{stamp} alarm {a.kind}: {name} score={a.score:.3g} threshold={a.threshold:.3g}"


def _rate(count: int, view: AgentView, before: int | None, previous: AgentView | None
          ) -> float | None:
    if before is None or previous is None or view.uptime_s <= previous.uptime_s:
        return None
    return max(count - before, 0) / (view.uptime_s - previous.uptime_s)


def _number(value: float | None, width: int, spec: str = ".4g") -> str:
    if value is None or math.isnan(value):
        return f"{'-':>{width}}"
    if math.isinf(value):
        return f"{'inf' if value > 0 else '-inf':>{width}}"
    text = format(value, spec)
    if len(text) > width > 0:
        text = format(value, ".2g")
    return f"{text:>{width}}"


def _natural(text: str) -> tuple[object, ...]:
    # motor-2 before motor-10: digit runs compare as numbers. re.split with a group puts
    # text at even and digits at odd positions, so two keys never compare str with int.
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"[:width]


def _fit_keeping(text: str, suffix: str, width: int) -> str:
    """``text + suffix`` in ``width``, cutting ``text`` first: the suffix tells rows apart."""
    if len(text) + len(suffix) <= width:
        return text + suffix
    room = width - len(suffix) - 1
    if room >= 1:
        return text[:room] + "~" + suffix
    return ("~" + suffix[len(suffix) - width + 1:])[:width] if width > 0 else ""


def _cut(line: str, width: int) -> str:
    return line[:width]
