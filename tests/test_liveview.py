"""The live view: what render() shows, and how run_view() draws on terminals and in logs."""

from __future__ import annotations

import doctest
import io
import math
import re
import threading

import pytest

from shopfloor import liveview as liveview_module
from shopfloor.liveview import AgentView, SignalView, render, run_view, summary

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def signal(asset: str, name: str, messages: int = 100, score: float = 1.0,
           threshold: float = 3.0, state: str = "NORMAL", alarms: int = 0) -> SignalView:
    return SignalView(asset, name, messages, score, threshold, state, alarms)


def agent(signals: list[SignalView], uptime: float = 60.0, received: int = 1000) -> AgentView:
    return AgentView(signals, received=received, rejected=3, dropped=2, events=5,
                     uptime_s=uptime)


def small_view() -> AgentView:
    return agent([
        signal("station-1", "diameter_mm", score=0.5),
        signal("motor-1", "accel", score=7.25, threshold=3.5, state="ACTIVE", alarms=2),
        signal("station-2", "torque_nm", score=math.nan, threshold=math.inf, state="WARMING_UP"),
        signal("motor-2", "accel", score=2.5, state="COOLDOWN", alarms=1),
    ])


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_shows_totals_columns_and_every_signal_row() -> None:
    lines = render(small_view(), None, 100).splitlines()
    assert lines[0] == ("up 0:01:00  messages 1000  rejected 3  dropped 2  events 5"
                        "  active alarms 1")
    assert lines[1].split() == ["ASSET", "SIGNAL", "MSG/S", "SCORE", "THRESHOLD", "STATE",
                                "ALARMS"]
    rows = [line.split() for line in lines[2:]]
    # Active alarms first, then by score; a signal without a score yet comes last.
    assert [r[:2] for r in rows] == [["motor-1", "accel"], ["motor-2", "accel"],
                                     ["station-1", "diameter_mm"], ["station-2", "torque_nm"]]
    assert rows[0][3:] == ["7.25", "3.5", "ACTIVE", "2"]
    assert rows[1][5:] == ["COOLDOWN", "1"]
    # No rate without an earlier view; no score yet and an uncalibrated threshold.
    assert rows[3][2:] == ["-", "-", "inf", "WARMING_UP", "0"]
    assert not ANSI.search("\n".join(lines))


def test_rates_come_from_the_previous_view() -> None:
    before = agent([signal("motor-1", "accel", messages=100)], uptime=10.0, received=500)
    now = agent([signal("motor-1", "accel", messages=140),
                 signal("motor-2", "accel", messages=7)], uptime=12.0, received=900)
    lines = render(now, before, 100).splitlines()
    assert "messages 900 (200/s)" in lines[0]
    rows = {tuple(line.split()[:2]): line.split()[2] for line in lines[2:]}
    assert rows[("motor-1", "accel")] == "20.0"
    assert rows[("motor-2", "accel")] == "-"  # not seen before: no rate yet
    # A view that is not newer gives no rates rather than a division by zero.
    assert "/s)" not in summary(now, now)


def test_rows_are_bounded_and_the_rest_counted() -> None:
    view = agent([signal("motor-1", f"s{i:02d}", score=float(i)) for i in range(25)])
    lines = render(view, None, 100, rows=20).splitlines()
    assert len(lines) == 2 + 20 + 1
    assert lines[-1] == "... 5 more signals"
    shown = [line.split()[1] for line in lines[2:-1]]
    assert shown == [f"s{i:02d}" for i in range(24, 4, -1)]  # the top 20 by score
    assert len(render(view, None, 100, rows=25).splitlines()) == 2 + 25


@pytest.mark.parametrize("width", [10, 20, 40, 63, 80, 120, 200])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    view = agent([signal("a-very-long-asset-name-from-a-real-plant", "and_an_even_longer_signal",
                         score=123456789.0, threshold=-1e-12, state="ACTIVE", alarms=123456),
                  *small_view().signals])
    for color in (False, True):
        text = render(view, view, width, color=color)
        for line in ANSI.sub("", text).splitlines():
            assert len(line) <= max(width, 20), line


def test_colour_marks_the_state_only() -> None:
    view = small_view()
    plain = render(view, None, 100)
    colored = render(view, None, 100, color=True)
    assert "\x1b[1;31mACTIVE" in colored
    assert ANSI.sub("", colored) == plain


def test_long_names_are_shortened_visibly() -> None:
    view = agent([signal("a" * 60, "b" * 60)])
    row = render(view, None, 80).splitlines()[2]
    assert "~" in row
    assert row.split()[-2:] == ["NORMAL", "0"]


def test_run_view_prints_one_summary_line_per_refresh_into_a_pipe() -> None:
    stop = threading.Event()
    views = iter([None, small_view(), agent(small_view().signals, uptime=61.0, received=1100)])

    def get_view() -> AgentView | None:
        view = next(views, None)
        if view is None and calls:
            stop.set()
        calls.append(view)
        return view

    calls: list[AgentView | None] = []
    out = io.StringIO()
    run_view(get_view, stop, out, interval=0.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # nothing while the agent had no view yet
    assert lines[0].startswith("up 0:01:00  messages 1000  rejected 3")
    assert "messages 1100 (100/s)" in lines[1]
    assert not ANSI.search(out.getvalue())


@pytest.mark.parametrize(("no_color", "colored"), [(None, True), ("1", False)])
def test_run_view_redraws_in_place_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, colored: bool
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", "xterm")
    stop = threading.Event()
    count = 0

    def get_view() -> AgentView:
        nonlocal count
        count += 1
        if count == 2:
            stop.set()
        return small_view()

    out = Tty()
    run_view(get_view, stop, out, interval=0.0)
    text = out.getvalue()
    assert text.count("\x1b[H") == 2  # cursor home before each redraw
    assert text.endswith("\x1b[?25h\n")  # the cursor comes back
    assert ("\x1b[1;31mACTIVE" in text) is colored
    assert "ASSET" in text
    assert "motor-1" in text


def test_docstring_examples_run() -> None:
    result = doctest.testmod(liveview_module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
