"""What the demo hands its live view: every signal with its labels, the assets, the alarms."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry

from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.agent.worker import AlarmChange, AssetStatus, SignalStatus
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.tools.demo import demo_plant, log_alarms, view_of
from shopfloor.tools.liveview import AlarmLog, AssetView, SignalView, render
from shopfloor.tools.simulate import agent_config_toml


def demo_agent() -> Agent:
    """The demo's agent, never started: nothing connects, nothing runs."""
    toml = agent_config_toml(demo_plant(), "127.0.0.1", 1, client_id="t", metrics_port=0)
    return Agent(parse_agent_config(toml, source="<test>"), CollectorRegistry())


def change(kind: str, asset: str, signal: str | None, labels: dict[str, str]) -> AlarmChange:
    return AlarmChange(kind=kind, scope="signal" if signal else "asset", asset=asset,
                       signal=signal, labels=labels, ts=0.0, score=7.5, threshold=3.25,
                       value=None, features=None, top=None, rules=0, likelihood=math.nan,
                       onset=math.nan)


def test_the_view_has_labels_assets_and_the_alarm_log() -> None:
    agent = demo_agent()
    line2 = {"line": "line2"}
    agent.worker.status["station-1/torque_nm{line=line2}"] = SignalStatus(
        "station-1", "torque_nm", line2, messages=40, score=5.0, threshold=3.0,
        state=AlarmState.ACTIVE, alarms=1)
    agent.worker.status["station-1/torque_nm{line=line1}"] = SignalStatus(
        "station-1", "torque_nm", {"line": "line1"}, messages=40)
    agent.worker.asset_status["station-1{line=line2}"] = AssetStatus(
        "station-1", line2, score=60.0, state=AlarmState.ACTIVE, alarms=2)
    alarms = AlarmLog()
    alarms.add("raised", "station-1", "torque_nm", 5.0, 3.0, (("line", "line2"),))
    view = view_of(agent, alarms)
    by_line = sorted(view.signals, key=lambda s: s.labels)
    assert by_line[1] == SignalView("station-1", "torque_nm", 40, 5.0, 3.0, "ACTIVE", 1,
                                    (("line", "line2"),))
    # NaN score and threshold: compared field by field, as NaN != NaN.
    assert (by_line[0].labels, by_line[0].state, by_line[0].alarms) == (
        (("line", "line1"),), "WARMING_UP", 0)
    assert view.assets == [AssetView("station-1", 60.0, "ACTIVE", 2, (("line", "line2"),))]
    assert [a.kind for a in view.alarms] == ["raised"]
    text = render(view, None, 80)
    assert "station-1@line2  (asset)" in text
    assert "station-1@line2/torque_nm" in text
    assert view_of(agent).alarms == ()


def test_every_alarm_change_reaches_the_log_and_still_the_agent() -> None:
    agent = demo_agent()
    forwarded: list[AlarmChange] = []
    agent.worker.on_change = forwarded.append  # stands in for the agent's events and logs
    alarms = AlarmLog()
    log_alarms(agent, alarms)
    changes = [change("raised", "motor-1", "accel", {}),
               change("cleared", "station-2", None, {"line": "line1"})]
    for c in changes:
        agent.worker.on_change(c)
    assert forwarded == changes
    assert [(a.seq, a.kind, a.asset, a.signal, a.labels, a.score, a.threshold)
            for a in alarms.recent()] == [
        (1, "raised", "motor-1", "accel", (), 7.5, 3.25),
        (2, "cleared", "station-2", None, (("line", "line1"),), 7.5, 3.25)]
