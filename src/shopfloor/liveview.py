"""The live terminal view of ``shopfloor demo``: per signal, rate, score, threshold and alarm.

The agent hands over an :class:`AgentView` snapshot; :func:`render` turns one (and an older one,
for rates) into text, and :func:`run_view` redraws it about twice a second. On a terminal the
table is redrawn in place (cursor home, clear to end of line and of screen), with the alarm
state in colour unless ``NO_COLOR`` is set; into a pipe or a log, one summary line is printed
per refresh instead, so a captured run stays readable.

Examples
--------
>>> view = AgentView([SignalView("motor-1", "accel", 240, 7.5, 3.3, "ACTIVE", 1)],
...                  received=240, rejected=0, dropped=0, events=1, uptime_s=120.0)
>>> print(render(view, None, 80))
up 0:02:00  messages 240  rejected 0  dropped 0  events 1  active alarms 1
ASSET    SIGNAL    MSG/S      SCORE  THRESHOLD  STATE       ALARMS
motor-1  accel         -        7.5        3.3  ACTIVE           1
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["AgentView", "SignalView", "render", "run_view", "summary"]

_COLORS = {"ACTIVE": "\x1b[1;31m", "COOLDOWN": "\x1b[33m", "WARMING_UP": "\x1b[36m",
           "NORMAL": "\x1b[32m"}
_RESET = "\x1b[0m"
# Fixed columns: (title, width); asset and signal share what is left of the line.
_FIXED = (("MSG/S", 7), ("SCORE", 9), ("THRESHOLD", 9), ("STATE", 10), ("ALARMS", 6))
_GAP = "  "


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
    """

    asset: str
    signal: str
    messages: int
    score: float
    threshold: float
    state: str
    alarms: int


@dataclass(frozen=True, slots=True)
class AgentView:
    """A snapshot of the agent: every signal, and totals since it started."""

    signals: list[SignalView]
    received: int  # messages received
    rejected: int  # payloads rejected by the codecs or routing
    dropped: int  # messages dropped by the full queue
    events: int  # anomaly events published
    uptime_s: float


def summary(view: AgentView, previous: AgentView | None = None) -> str:
    """The one-line totals: uptime, messages (and their rate), rejects, drops, events."""
    rate = _rate(view.received, view, None if previous is None else previous.received, previous)
    active = sum(s.state == "ACTIVE" for s in view.signals)
    up = int(view.uptime_s)
    return (f"up {up // 3600}:{up // 60 % 60:02d}:{up % 60:02d}  messages {view.received}"
            + (f" ({rate:.0f}/s)" if rate is not None else "")
            + f"  rejected {view.rejected}  dropped {view.dropped}  events {view.events}"
            f"  active alarms {active}")


def render(
    view: AgentView,
    previous_view: AgentView | None,
    width: int,
    *,
    rows: int = 20,
    color: bool = False,
) -> str:
    """The view as text lines no wider than ``width``.

    Signals with an active alarm come first, then the highest scores; at most ``rows``
    signals are listed and a last line counts the others. Message rates are taken between
    ``previous_view`` and ``view`` ("-" without a previous view). ``color`` adds ANSI colours
    to the alarm state.
    """
    width = max(width, 20)
    before = {} if previous_view is None else {
        (s.asset, s.signal): s.messages for s in previous_view.signals}
    ranked = sorted(view.signals, key=lambda s: (
        s.state != "ACTIVE", -s.score if not math.isnan(s.score) else math.inf, s.asset, s.signal))
    shown = ranked[:max(rows, 0)]
    fixed = sum(w for _, w in _FIXED) + len(_GAP) * len(_FIXED)
    names = max(width - fixed - len(_GAP), 11)
    asset_w = min(max([5, *(len(s.asset) for s in shown)]), max(5, names // 2))
    signal_w = min(max([6, *(len(s.signal) for s in shown)]), names - asset_w)
    lines = [_cut(summary(view, previous_view), width)]
    head = f"{'ASSET':<{asset_w}}{_GAP}{'SIGNAL':<{signal_w}}"
    head += "".join(f"{_GAP}{t:<{w}}" if t == "STATE" else f"{_GAP}{t:>{w}}" for t, w in _FIXED)
    lines.append(_cut(head.rstrip(), width))
    for s in shown:
        rate = _rate(s.messages, view, before.get((s.asset, s.signal)), previous_view)
        left = (f"{_fit(s.asset, asset_w):<{asset_w}}{_GAP}{_fit(s.signal, signal_w):<{signal_w}}"
                f"{_GAP}{_number(rate, 7, '.1f')}{_GAP}{_number(s.score, 9)}"
                f"{_GAP}{_number(s.threshold, 9)}{_GAP}")
        state = f"{s.state:<10}"
        right = f"{_GAP}{s.alarms:>6}"
        if len(left) + len(state) + len(right) > width:
            lines.append(_cut(left + state + right, width))
        elif color:
            lines.append(left + _COLORS.get(s.state, "") + state + _RESET + right)
        else:
            lines.append(left + state + right)
    if len(ranked) > len(shown):
        lines.append(_cut(f"... {len(ranked) - len(shown)} more signals", width))
    return "\n".join(lines)


def run_view(
    get_view: Callable[[], AgentView | None],
    stop_event: threading.Event,
    out: TextIO = sys.stdout,
    *,
    interval: float = 0.5,
    rows: int = 20,
    rate_window: float = 3.0,
) -> None:
    """Redraw the view every ``interval`` seconds until ``stop_event`` is set.

    ``get_view`` returns the agent's snapshot, or ``None`` while there is none yet. Rates
    are taken over the last ``rate_window`` seconds of snapshots.
    """
    tty = out.isatty()
    color = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    history: deque[tuple[float, AgentView]] = deque()
    if tty:
        out.write("\x1b[?25l\x1b[2J")  # hide the cursor while the table repaints
    try:
        while True:
            view = get_view()
            if view is not None:
                now = time.monotonic()
                history.append((now, view))
                while len(history) > 2 and now - history[1][0] >= rate_window:
                    history.popleft()
                previous = history[0][1] if len(history) > 1 else None
                if tty:
                    width = shutil.get_terminal_size().columns
                    text = render(view, previous, width, rows=rows, color=color)
                    out.write("\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J")
                else:
                    out.write(summary(view, previous) + "\n")
                out.flush()
            if stop_event.wait(interval):
                return
    finally:
        if tty:
            out.write("\x1b[?25h\n")
            out.flush()


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
    if len(text) > width:
        text = format(value, ".2g")
    return f"{text:>{width}}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "~"


def _cut(line: str, width: int) -> str:
    return line[:width]
