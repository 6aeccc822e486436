"""The live terminal view of ``shopfloor demo``: per signal and asset, rate, score and alarms.

The agent hands over an :class:`AgentView` snapshot; :func:`render` turns one (and an older one,
for rates) into text (see :mod:`shopfloor.tools.liveview_table` for the layout: fixed row
order, never wider than the terminal, counts never cut), and :func:`run_view` shows it until
told to stop.

On a terminal the view is redrawn in place about twice a second (cursor home, clear to end of
line and of screen), with the alarm state in colour unless ``NO_COLOR`` is set, and never
taller than the terminal. Below the rows a bounded area lists the latest alarms from an
:class:`AlarmLog`: the agent's log lines of them land on the same screen and the next redraw
wipes them, so the view keeps its own copy.

Into a pipe or a log (``isatty()`` false) there are no escape codes: one totals line per period
(five seconds by default), each preceded by the alarms raised or cleared since the previous one,
written as the agent's log writes them.

Examples
--------
>>> view = AgentView([SignalView("motor-1", "accel", 240, 7.5, 3.3, "ACTIVE", 1)],
...                  received=240, rejected=0, dropped=0, events=1, uptime_s=120.0)
>>> print(render(view, None, 80))
up 0:02:00  messages 240  rejected 0  dropped 0  events 1  active alarms 1
ASSET    SIGNAL    MSG/S      SCORE  THRESHOLD  STATE       ALARMS
motor-1  accel         -        7.5        3.3  ACTIVE           1
RECENT ALARMS  none yet
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from shopfloor.tools.liveview_table import (
    LOG_TIME_FORMAT,
    AgentView,
    AlarmLine,
    AssetView,
    Labels,
    SignalView,
    plain_alarm_line,
    render,
    summary,
)

__all__ = [
    "LOG_TIME_FORMAT",
    "AgentView",
    "AlarmLine",
    "AlarmLog",
    "AssetView",
    "SignalView",
    "render",
    "run_view",
    "summary",
]


class AlarmLog:
    """The latest ``size`` alarms, filled by the agent's worker thread, read by the view."""

    def __init__(self, size: int = 50) -> None:
        self.size = size
        self._lines: deque[AlarmLine] = deque(maxlen=size)
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, kind: str, asset: str, signal: str | None, score: float, threshold: float,
            labels: Labels = (), when: float | None = None) -> None:
        with self._lock:
            self._seq += 1
            self._lines.append(AlarmLine(self._seq, time.time() if when is None else when,
                                         kind, asset, signal, score, threshold, labels))

    def recent(self) -> tuple[AlarmLine, ...]:
        """Oldest first."""
        with self._lock:
            return tuple(self._lines)


def run_view(
    get_view: Callable[[], AgentView | None],
    stop_event: threading.Event,
    out: TextIO = sys.stdout,
    *,
    interval: float = 0.5,
    line_interval: float = 5.0,
    rows: int = 20,
    alarm_rows: int = 5,
    rate_window: float = 3.0,
    title: str = "",
) -> None:
    """Show the view until ``stop_event`` is set.

    On a terminal the view is redrawn every ``interval`` seconds; into a pipe a totals line
    is written every ``line_interval`` seconds, after a line per alarm since the last one.
    ``get_view`` returns the agent's snapshot, or ``None`` while there is none yet. On a
    terminal, rates are taken over the last ``rate_window`` seconds of snapshots; in a pipe,
    since the previous line. ``title`` heads the terminal view (the screen is cleared, so
    whatever was printed before it is gone while the view runs).
    """
    if not out.isatty():
        _run_lines(get_view, stop_event, out, line_interval)
        return
    color = not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    history: deque[tuple[float, AgentView]] = deque()
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
                size = shutil.get_terminal_size()
                text = render(view, previous, size.columns, rows=rows, color=color,
                              alarm_rows=alarm_rows, height=size.lines, title=title)
                out.write("\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J")
                out.flush()
            if stop_event.wait(interval):
                return
    finally:
        out.write("\x1b[?25h\n")
        out.flush()


def _run_lines(get_view: Callable[[], AgentView | None], stop_event: threading.Event,
               out: TextIO, interval: float) -> None:
    previous: AgentView | None = None
    last_seq = 0
    while True:
        view = get_view()
        if view is not None:
            new = [a for a in view.alarms if a.seq > last_seq]
            if new and new[0].seq > last_seq + 1:
                # The log is bounded: more alarms than it keeps came in since the last line.
                out.write(f"... {new[0].seq - last_seq - 1} earlier alarms not shown\n")
            for a in new:
                out.write(plain_alarm_line(a, view) + "\n")
            last_seq = max([last_seq, *(a.seq for a in new)])
            out.write(summary(view, previous) + "\n")
            out.flush()
            previous = view
        # No view yet (the agent is starting): look again soon rather than a period later.
        if stop_event.wait(interval if view is not None else min(interval, 0.5)):
            return
