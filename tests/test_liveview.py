"""The live view: what render() shows, and how run_view() draws on terminals and in logs."""

from __future__ import annotations

import doctest
import io
import logging
import math
import re
import threading
import time

import pytest

from shopfloor.logs import setup_logging
from shopfloor.tools import liveview as liveview_module
from shopfloor.tools.liveview import (
    LOG_TIME_FORMAT,
    AgentView,
    AlarmLine,
    AlarmLog,
    AssetView,
    SignalView,
    render,
    run_view,
    summary,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LINE1 = (("site", "s1"), ("line", "line1"))
LINE2 = (("site", "s1"), ("line", "line2"))


def signal(asset: str, name: str, messages: int = 100, score: float = 1.0,
           threshold: float = 3.0, state: str = "NORMAL", alarms: int = 0,
           labels: tuple[tuple[str, str], ...] = ()) -> SignalView:
    return SignalView(asset, name, messages, score, threshold, state, alarms, labels)


def agent(signals: list[SignalView], uptime: float = 60.0, received: int = 1000,
          assets: list[AssetView] | None = None,
          alarms: tuple[AlarmLine, ...] = ()) -> AgentView:
    return AgentView(signals, received=received, rejected=3, dropped=2, events=5,
                     uptime_s=uptime, assets=assets or [], alarms=alarms)


def small_view() -> AgentView:
    return agent([
        signal("station-1", "diameter_mm", score=0.5),
        signal("motor-1", "accel", score=7.25, threshold=3.5, state="ACTIVE", alarms=2),
        signal("station-2", "torque_nm", score=math.nan, threshold=math.inf, state="WARMING_UP"),
        signal("motor-2", "accel", score=2.5, state="COOLDOWN", alarms=1),
    ])


def table(text: str) -> list[list[str]]:
    """The rows of a rendered view (after the totals and the header), split into words."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(("RECENT", "...")))
    return [line.split() for line in lines[2:end]]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_shows_totals_columns_and_every_signal_row() -> None:
    text = render(small_view(), None, 100)
    lines = text.splitlines()
    assert lines[0] == ("up 0:01:00  messages 1000  rejected 3  dropped 2  events 5"
                        "  active alarms 1")
    assert lines[1].split() == ["ASSET", "SIGNAL", "MSG/S", "SCORE", "THRESHOLD", "STATE",
                                "ALARMS"]
    rows = table(text)
    assert [r[:2] for r in rows] == [["motor-1", "accel"], ["motor-2", "accel"],
                                     ["station-1", "diameter_mm"], ["station-2", "torque_nm"]]
    assert rows[0][3:] == ["7.25", "3.5", "ACTIVE", "2"]
    assert rows[1][5:] == ["COOLDOWN", "1"]
    # No rate without an earlier view; no score yet and an uncalibrated threshold.
    assert rows[3][2:] == ["-", "-", "inf", "WARMING_UP", "0"]
    assert lines[-1] == "RECENT ALARMS  none yet"
    assert not ANSI.search(text)


def test_rows_keep_their_order_whatever_the_scores_states_and_arrival() -> None:
    names = [("motor-10", "accel"), ("motor-2", "accel"), ("station-1", "torque_nm"),
             ("station-1", "diameter_mm"), ("aux", "gauge_002"), ("aux", "gauge_001")]
    first = agent([signal(a, s, score=float(i)) for i, (a, s) in enumerate(names)])
    # Another moment: scores reversed, one signal in an alarm, signals in another order.
    later = agent([signal(a, s, score=float(-i), state="ACTIVE" if a == "station-1" else
                          "NORMAL") for i, (a, s) in enumerate(reversed(names))])
    expected = [["aux", "gauge_001"], ["aux", "gauge_002"], ["motor-2", "accel"],
                ["motor-10", "accel"], ["station-1", "diameter_mm"],
                ["station-1", "torque_nm"]]
    for view in (first, later):
        assert [r[:2] for r in table(render(view, None, 100))] == expected


def test_an_asset_detector_is_a_row_of_its_asset_before_its_signals() -> None:
    view = agent([signal("station-1", "torque_nm"), signal("station-1", "diameter_mm"),
                  signal("motor-1", "accel")],
                 assets=[AssetView("station-1", 59.7, "ACTIVE", 2)])
    rows = table(render(view, None, 100))
    assert [r[:2] for r in rows] == [["motor-1", "accel"], ["station-1", "(asset)"],
                                     ["station-1", "diameter_mm"], ["station-1", "torque_nm"]]
    assert rows[1][2:] == ["-", "59.7", "-", "ACTIVE", "2"]  # no message rate, no threshold
    assert render(view, None, 100).splitlines()[0].endswith("active alarms 1")


def test_labels_tell_apart_signals_that_share_asset_and_name() -> None:
    view = agent([signal("station-1", "torque_nm", labels=LINE2, alarms=3),
                  signal("station-1", "torque_nm", labels=LINE1),
                  signal("motor-1", "accel", labels=LINE1)],
                 assets=[AssetView("station-1", 1.0, "NORMAL", 0, LINE2)])
    for width in (80, 60, 40):
        rows = table(render(view, None, width))
        # Only the label that differs is shown, and only where it is needed; a long asset
        # name is cut before its label.
        assets = [r[0] for r in rows]
        assert assets[0] == "motor-1"
        assert [a[-6:] for a in assets[1:]] == ["@line1", "@line2", "@line2"]
        assert all(a.startswith("stat") for a in assets[1:])
        assert [r[1] for r in rows] == ["accel", "torque_nm", "(asset)", "torque_nm"]
        assert rows[-1][-1] == "3"


def test_rates_come_from_the_previous_view() -> None:
    before = agent([signal("motor-1", "accel", messages=100)], uptime=10.0, received=500)
    now = agent([signal("motor-1", "accel", messages=140),
                 signal("motor-2", "accel", messages=7)], uptime=12.0, received=900)
    text = render(now, before, 100)
    assert "messages 900 (200/s)" in text.splitlines()[0]
    rows = {tuple(r[:2]): r[2] for r in table(text)}
    assert rows[("motor-1", "accel")] == "20.0"
    assert rows[("motor-2", "accel")] == "-"  # not seen before: no rate yet
    # A view that is not newer gives no rates rather than a division by zero.
    assert "/s)" not in summary(now, now)


def test_rows_are_bounded_and_those_in_an_alarm_kept() -> None:
    view = agent([signal("motor-1", f"s{i:02d}", score=float(i),
                         state="ACTIVE" if i in (3, 24) else "NORMAL") for i in range(25)])
    text = render(view, None, 100, rows=20)
    lines = text.splitlines()
    assert lines[-2] == "... 5 more"
    shown = [r[1] for r in table(text)]
    # The signals in an alarm, then the first others, all in the rows' order.
    assert shown == [f"s{i:02d}" for i in [*range(19), 24]]
    assert len(table(render(view, None, 100, rows=25))) == 25
    hidden = render(view, None, 100, rows=1)
    assert "... 24 more (1 in an alarm)" in hidden


@pytest.mark.parametrize("height", [6, 10, 24, 40])
def test_the_view_fits_the_terminal_height(height: int) -> None:
    log = AlarmLog()
    for i in range(8):
        log.add("raised", "motor-1", f"s{i:02d}", 5.0, 3.0)
    view = agent([signal("motor-1", f"s{i:02d}") for i in range(30)], alarms=log.recent())
    lines = render(view, None, 80, height=height, title="a title\nand its second line").splitlines()
    assert len(lines) <= height
    assert "RECENT ALARMS" in lines
    assert lines[-1].split()[-1] != "..."


BIG = agent([signal("a-very-long-asset-name-from-a-real-plant", "and_an_even_longer_signal",
                    score=123456789.0, threshold=-1e-12, state="ACTIVE", alarms=123456,
                    labels=LINE1),
             signal("a-very-long-asset-name-from-a-real-plant", "and_an_even_longer_signal",
                    labels=LINE2, alarms=7),
             *small_view().signals],
            uptime=3_600_000.0, received=123_456_789,
            assets=[AssetView("station-1", 2.0, "ACTIVE", 1)])


@pytest.mark.parametrize("width", [10, 20, 40, 63, 80, 120, 200])
def test_no_line_is_wider_than_the_terminal(width: int) -> None:
    log = AlarmLog()
    log.add("baseline_adopted", "a-very-long-asset-name-from-a-real-plant",
            "and_an_even_longer_signal", 1e9, 3.0, LINE1)
    view = AgentView(BIG.signals, BIG.received, BIG.rejected, BIG.dropped, BIG.events,
                     BIG.uptime_s, BIG.assets, log.recent())
    for shown, color in ((view, False), (view, True), (BIG, False)):  # BIG: no alarms yet
        text = render(shown, view, width, color=color, title="x" * 300)
        for line in ANSI.sub("", text).splitlines():
            assert len(line) <= max(width, 20), line


@pytest.mark.parametrize("width", [20, 40, 63, 80])
def test_counts_are_never_cut_only_names_and_columns(width: int) -> None:
    text = render(BIG, BIG, width)
    top = text.splitlines()[0]
    assert re.search(r"\balarms 3$", top), top  # two signals and an asset in an alarm
    rows = table(text)
    assert sorted(r[-1] for r in rows) == sorted(["123456", "7", "1", "2", "1", "0", "0"])
    assert all(r[-2] in ("ACTIVE", "NORMAL", "COOLDOWN", "COOLDN", "WARMING_UP", "WARMUP")
               for r in rows)
    if width >= 80:
        # Every column still there: only the names gave way.
        assert text.splitlines()[1].split() == [
            "ASSET", "SIGNAL", "MSG/S", "SCORE", "THRESHOLD", "STATE", "ALARMS"]
        assert all(len(r) == 7 for r in rows)
        assert rows[0][0].endswith("@line1")
        assert "~" in rows[0][0]


def test_totals_shorten_words_before_dropping_any_and_keep_alarms_last() -> None:
    full = summary(BIG, None)
    assert full == ("up 1000:00:00  messages 123456789  rejected 3  dropped 2  events 5"
                    "  active alarms 3")
    assert summary(BIG, None, len(full)) == full  # it fits
    assert summary(BIG, None, 80) == (
        "up 1000:00:00  msg 123456789  rej 3  drop 2  ev 5  active alarms 3")
    assert summary(BIG, None, 60) == "up 1000:00:00  msg 123456789  rej 3  drop 2  ev 5  alarms 3"
    assert summary(BIG, None, 40).endswith("alarms 3")
    assert summary(BIG, None, 15) == "active alarms 3"


def test_colour_marks_the_state_only() -> None:
    view = small_view()
    plain = render(view, None, 100)
    colored = render(view, None, 100, color=True)
    assert "\x1b[1;31mACTIVE" in colored
    assert ANSI.sub("", colored) == plain


def test_long_names_are_shortened_visibly() -> None:
    view = agent([signal("a" * 60, "b" * 60)])
    row = table(render(view, None, 80))[0]
    assert "~" in row[0]
    assert "~" in row[1]
    assert row[-2:] == ["NORMAL", "0"]


def test_recent_alarms_are_listed_newest_last_and_bounded() -> None:
    log = AlarmLog(size=4)
    t = time.mktime((2024, 5, 1, 10, 0, 0, 0, 0, -1))
    for i in range(6):
        log.add("raised" if i % 2 == 0 else "cleared", "motor-1", "accel", 5.0 + i, 3.25,
                when=t + i)
    log.add("baseline_adopted", "station-1", None, 40.0, 17.0, LINE2, when=t + 10)
    recent = log.recent()
    assert [a.seq for a in recent] == [4, 5, 6, 7]  # the log keeps the latest 4
    view = agent([signal("motor-1", "accel"), signal("station-1", "torque_nm", labels=LINE1),
                  signal("station-1", "torque_nm", labels=LINE2)], alarms=recent)
    lines = render(view, None, 80, alarm_rows=3).splitlines()
    area = lines[lines.index("RECENT ALARMS") + 1:]
    assert area == [
        "10:00:04 raised   motor-1/accel  score 9  threshold 3.25",
        "10:00:05 cleared  motor-1/accel  score 10  threshold 3.25",
        "10:00:10 adopted  station-1@line2 (asset)  score 40  threshold 17",
    ]
    assert "RECENT ALARMS" not in render(view, None, 80, alarm_rows=0)


def test_run_view_writes_plain_lines_into_a_pipe() -> None:
    stop = threading.Event()
    log = AlarmLog()
    t = time.time()
    views = [None, small_view()]
    for i in range(3):
        log.add("raised", "motor-1", "accel", 7.25, 3.5, when=t)
        views.append(agent(small_view().signals, uptime=61.0 + i, received=1100 + 100 * i,
                           alarms=log.recent()))
    calls = iter(views)

    def get_view() -> AgentView | None:
        view = next(calls)
        if view is views[-1]:
            stop.set()
        return view

    out = io.StringIO()
    run_view(get_view, stop, out, line_interval=0.0)
    text = out.getvalue()
    assert not ANSI.search(text)
    lines = text.splitlines()
    totals = [line for line in lines if line.startswith("up ")]
    assert len(totals) == 4  # one per period with a view, none while there was none
    assert totals[0].startswith("up 0:01:00  messages 1000  rejected 3")
    assert "messages 1100 (100/s)" in totals[1]
    # Each alarm once, before the totals line of the period it came in, as the log says it.
    stamp = time.strftime(LOG_TIME_FORMAT, time.localtime(t))
    alarm = f"{stamp} alarm raised: motor-1/accel score=7.25 threshold=3.5"
    assert lines == [totals[0], alarm, totals[1], alarm, totals[2], alarm, totals[3]]


def test_run_view_into_a_pipe_says_when_alarms_were_left_out() -> None:
    stop = threading.Event()
    log = AlarmLog(size=2)
    for i in range(5):
        log.add("raised", "motor-1", f"s{i}", 5.0, 3.0)
    out = io.StringIO()

    def get_view() -> AgentView:
        stop.set()
        return agent([], alarms=log.recent())

    run_view(get_view, stop, out, line_interval=0.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "... 3 earlier alarms not shown"
    assert [line.split()[3] for line in lines[1:3]] == ["motor-1/s3", "motor-1/s4"]


@pytest.mark.parametrize(("no_color", "colored"), [(None, True), ("1", False)])
def test_run_view_redraws_in_place_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, colored: bool
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    stop = threading.Event()
    log = AlarmLog()
    count = 0

    def get_view() -> AgentView:
        nonlocal count
        count += 1
        if count == 1:
            log.add("raised", "motor-1", "accel", 7.25, 3.5)
        if count == 3:
            stop.set()
        return agent(small_view().signals, alarms=log.recent())

    out = Tty()
    run_view(get_view, stop, out, interval=0.0, title="shopfloor demo: a title")
    text = out.getvalue()
    assert text.count("\x1b[H") == 3  # cursor home before each redraw
    assert text.endswith("\x1b[?25h\n")  # the cursor comes back
    assert ("\x1b[1;31mACTIVE" in text) is colored
    frames = text.split("\x1b[H")[1:]
    for frame in frames:
        lines = ANSI.sub("", frame).splitlines()
        assert lines[0] == "shopfloor demo: a title"
        assert len(lines) <= 24
        assert max(map(len, lines)) <= 80
        # The alarm stays on screen in every redraw after it came in.
        assert "raised   motor-1/accel" in frame


def test_the_alarm_log_takes_alarms_from_another_thread() -> None:
    log = AlarmLog(size=100)

    def add() -> None:
        for _ in range(500):
            log.add("raised", "m", "s", 1.0, 1.0)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recent = log.recent()
    assert len(recent) == 100
    assert [a.seq for a in recent] == list(range(1901, 2001))


def test_alarm_times_use_the_log_lines_format() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("info")
        formatter = root.handlers[0].formatter
        assert formatter is not None
        assert formatter.datefmt == LOG_TIME_FORMAT
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(liveview_module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
