"""A dead sensor does not clear its own alarm (issue 11, item 8).

Before: a signal that stopped sending kept its last state until ``stale_after``, when its
series dropped out of /metrics and an active alarm silently resolved. Now silence for
``agent.silence_intervals`` of the signal's own message intervals is an alarm of its own, with
its event and metric, and the last alarm state stays until the signal speaks again.
"""

from __future__ import annotations

import json

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.events import EventSink
from shopfloor.agent.run import Agent
from shopfloor.agent.worker import AlarmChange
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.scoring.detect.alarm import AlarmState
from test_events import EVENTS, FakeLink

CONFIG = """
[mqtt]
host = "127.0.0.1"
[metrics]
port = 0
stale_after = 60
[[subscriptions]]
topic = "plant/{asset}/{signal}"
detector = { kind = "zscore", min_samples = 20 }
alarm = { warmup = 20 }
"""
T0 = 1_767_225_600.0
TOPIC = "plant/press-1/force"


def make() -> tuple[Agent, list[AlarmChange], FakeLink]:
    agent = Agent(parse_agent_config(CONFIG, source="t.toml"), CollectorRegistry())
    changes: list[AlarmChange] = []
    link = FakeLink()
    sink = EventSink(link, agent="a")

    def changed(change: AlarmChange) -> None:
        changes.append(change)
        sink.alarm(change)

    agent.worker.on_change = changed
    return agent, changes, link


def send(agent: Agent, values: list[float], start: int) -> None:
    for i, v in enumerate(values):  # one message a second, on the agent's clock too
        agent.ingest.on_message(TOPIC, encode_json_scalar(T0 + start + i, v), T0 + start + i)
        agent.worker.run_once(timeout=0.0)


def exported(agent: Agent, name: str) -> float | None:
    for family in text_string_to_metric_families(generate_latest(agent.registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def test_silence_for_ten_intervals_raises_its_alarm_and_a_message_ends_it() -> None:
    agent, changes, link = make()
    rng = np.random.default_rng(1)
    send(agent, list(10.0 + rng.standard_normal(60)), 0)
    last = T0 + 59
    agent.worker.watch_silence(last + 29)  # 10 intervals, but under silence_min_seconds
    assert changes == []
    agent.worker.watch_silence(last + 31)
    [silent] = changes
    assert (silent.kind, silent.signal) == ("silent", "force")
    assert 30 < silent.score < 32  # intervals of silence
    agent.worker.watch_silence(last + 90)
    assert len(changes) == 1  # raised once
    send(agent, [10.0], 200)
    assert [c.kind for c in changes] == ["silent", "resumed"]
    docs = [json.loads(payload) for _, payload, _, _ in link.sent]
    for doc in docs:
        EVENTS.validate(doc)
    assert [(d["kind"], d["event"]) for d in docs] == [("raised", "silent"),
                                                       ("cleared", "resumed")]


def test_the_rate_is_the_signals_own() -> None:
    agent, changes, _ = make()
    for i in range(30):  # a slow signal: one message a minute
        agent.ingest.on_message(TOPIC, encode_json_scalar(T0 + 60 * i, 5.0), T0 + 60 * i)
        agent.worker.run_once(timeout=0.0)
    last = T0 + 60 * 29
    agent.worker.watch_silence(last + 300)  # 5 minutes: half its limit
    assert changes == []
    agent.worker.watch_silence(last + 601)
    assert [c.kind for c in changes] == ["silent"]


def test_an_alarm_in_force_when_the_sensor_dies_stays_visible() -> None:
    agent, changes, _ = make()
    rng = np.random.default_rng(2)
    values = list(10.0 + rng.standard_normal(80))
    values[60:] = [v + 15.0 for v in values[60:]]  # a fault, and then the sensor dies
    send(agent, values, 0)
    status = agent.worker.status["press-1/force"]
    assert status.state == AlarmState.ACTIVE
    agent.worker.watch_silence(T0 + 79 + 100)
    assert changes[-1].kind == "silent"
    # Long past stale_after (60 s): the series stay, the alarm still active, the silence shown.
    assert status.state == AlarmState.ACTIVE
    assert exported(agent, "shopfloor_signal_silent") == 1.0
    assert exported(agent, "shopfloor_signal_alarm_active") == 1.0
