"""A signal is every named level of its topic (issue 11, item 1).

Before: a signal was its asset and name alone, so ``shopfloor simulate --line line2`` beside
line1 fed line 2's samples into line 1's ``station-1/torque_nm`` model, without a word.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker import Mosquitto
from shopfloor.agent.checkpoints import FILE_NAME, Checkpointer, spec_hash
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.events import EventSink
from shopfloor.agent.run import Agent
from shopfloor.agent.state import write_checkpoint
from shopfloor.errors import ConfigError
from shopfloor.receiving.admission import Admission
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.scoring.pipeline import Plant
from test_events import FakeLink

T0 = 1_750_000_000.0
CONFIG = """
[mqtt]
host = "127.0.0.1"
[metrics]
port = 0
[[subscriptions]]
topic = "plant/{site}/{line}/{asset}/{signal}"
codec = "json"
detector = { kind = "zscore", min_samples = 20 }
alarm = { warmup = 20 }
"""
LINE1 = "station-1/torque_nm{site=s1,line=line1}"
LINE2 = "station-1/torque_nm{site=s1,line=line2}"


def feed(agent: Agent, line: str, values: np.ndarray, start: int = 0) -> None:
    for i, v in enumerate(values):
        agent.ingest.on_message(f"plant/s1/{line}/station-1/torque_nm",
                                encode_json_scalar(T0 + start + i, float(v)), time.time())
    while agent.worker.run_once(timeout=0.0):
        pass


def test_two_lines_with_the_same_asset_and_signal_are_two_signals(tmp_path: Path) -> None:
    config = parse_agent_config(CONFIG, source="t.toml", base_dir=tmp_path)
    agent = Agent(config, CollectorRegistry())
    rng = np.random.default_rng(1)
    feed(agent, "line1", 10.0 + rng.standard_normal(100))
    feed(agent, "line2", 50.0 + 5 * rng.standard_normal(60))
    assert set(agent.plant.signals) == {LINE1, LINE2}
    assert agent.plant.signals[LINE1].scored == 100
    assert agent.plant.signals[LINE2].scored == 60
    # The metrics tell them apart by the template's levels, and only by those.
    text = generate_latest(agent.registry).decode()
    scored = {tuple(sorted(s.labels.items())): s.value
              for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "shopfloor_signal_samples_scored_total"}
    def key(line: str) -> tuple[tuple[str, str], ...]:
        return (("asset", "station-1"), ("line", line), ("signal", "torque_nm"), ("site", "s1"))

    assert scored == {key("line1"): 100.0, key("line2"): 60.0}


def test_a_step_on_one_line_alarms_there_and_not_on_the_other(tmp_path: Path) -> None:
    config = parse_agent_config(CONFIG, source="t.toml", base_dir=tmp_path)
    agent = Agent(config, CollectorRegistry())
    raised: list[tuple[str, dict[str, str]]] = []
    agent.worker.on_change = lambda c: raised.append((c.kind, dict(c.labels)))
    rng = np.random.default_rng(2)
    # Line 2 runs at a level line 1 would call an alarm: merged, line 2 would fire at once.
    feed(agent, "line1", 10.0 + rng.standard_normal(400))
    feed(agent, "line2", 30.0 + rng.standard_normal(400))
    assert raised == []
    step = 10.0 + rng.standard_normal(40)
    step[10:] += 12.0
    feed(agent, "line1", step, start=400)
    assert ("raised", {"site": "s1", "line": "line1"}) in raised
    assert all(labels["line"] == "line1" for _, labels in raised)


def test_checkpoints_key_on_the_identity_and_an_old_checkpoint_is_taken_over(
    tmp_path: Path,
) -> None:
    config = parse_agent_config(CONFIG, source="t.toml", base_dir=tmp_path)
    agent = Agent(config, CollectorRegistry())
    rng = np.random.default_rng(3)
    feed(agent, "line1", 10.0 + rng.standard_normal(100))
    feed(agent, "line2", 50.0 + rng.standard_normal(50))
    assert Checkpointer(config, agent.plant, tmp_path, 60).write()
    table = Admission((), 100, 3600)
    restored = Plant(config.pipeline)
    assert Checkpointer(config, restored, tmp_path, 60).restore(table) == 2
    assert set(restored.signals) == {LINE1, LINE2}
    assert restored.signals[LINE2].get_state()["scored"] == 50

    # A checkpoint of the version before: keyed "asset/name", no labels, the spec hashed
    # without them. Its state goes to the first signal of that asset and name to arrive.
    old = tmp_path / "old"
    old.mkdir()
    line1 = agent.plant.signals[LINE1]
    spec = line1.spec.__class__(**{**{f: getattr(line1.spec, f) for f in (
        "asset", "name", "kind", "stage", "column", "valid_range", "features")}})
    checkpointer = Checkpointer(config, agent.plant, old, 60)
    tree = {"signals": {"station-1/torque_nm": {"spec": spec_hash(spec), "subscription": 0,
                                                 "state": line1.get_state()}},
            "assets": {}}
    write_checkpoint(old / FILE_NAME, tree, checkpointer.config_hash)
    upgraded = Agent(config, CollectorRegistry())
    upgraded.checkpoints = Checkpointer(config, upgraded.plant, old, 60)
    upgraded.checkpoints.restore(upgraded.ingest.admitted)
    feed(upgraded, "line1", 10.0 + rng.standard_normal(5), start=100)
    assert upgraded.plant.signals[LINE1].get_state()["scored"] == 105
    feed(upgraded, "line2", 50.0 + rng.standard_normal(5), start=100)
    assert upgraded.plant.signals[LINE2].get_state()["scored"] == 5  # the state was taken


@pytest.mark.parametrize("level", ["feature", "reason", "instance"])
def test_a_template_level_named_like_a_metric_label_is_a_config_error(level: str) -> None:
    text = CONFIG.replace("{line}", f"{{{level}}}")
    with pytest.raises(ConfigError, match=f"{{{level}}} cannot name a level"):
        parse_agent_config(text, source="t.toml")


def test_events_may_be_placed_by_every_level_all_subscriptions_name(tmp_path: Path) -> None:
    events = ('[events]\ntopic = "{prefix}/{site}/{line}/{asset}/{signal}/anomaly"\n'
              'state_topic = "{prefix}/{site}/{line}/{asset}/{signal}/state"\n')
    config = parse_agent_config(CONFIG + events, source="t.toml", base_dir=tmp_path)
    link = FakeLink()
    agent = Agent(config, CollectorRegistry())
    agent.events = EventSink(link, config.events.prefix, config.events.topic,
                             config.events.state_topic, agent="a")
    rng = np.random.default_rng(4)
    feed(agent, "line2", 10.0 + rng.standard_normal(300))
    step = 10.0 + rng.standard_normal(30)
    step[5:] += 15.0
    feed(agent, "line2", step, start=300)
    topics = {topic for topic, *_ in link.sent}
    assert "shopfloor/s1/line2/station-1/torque_nm/anomaly" in topics
    assert "shopfloor/s1/line2/station-1/torque_nm/state" in topics
    # A level one subscription lacks cannot place events: its signals would have no topic.
    other = '[[subscriptions]]\ntopic = "cell/{asset}/{signal}"\ncodec = "json"\n'
    with pytest.raises(ConfigError, match="a level every subscription names"):
        parse_agent_config(CONFIG + other + events, source="t.toml")


def test_the_state_topic_warning_names_only_levels_every_subscription_has(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    # The shipped example (a Sparkplug subscription beside plant/{site}/{line}/...) warned
    # at every start about levels its state topic could never use.
    broker = f'[mqtt]\nhost = "{mosquitto.host}"\nport = {mosquitto.port}\n'
    sparkplug = ('[[subscriptions]]\ntopic = "spBv1.0/{group}/{type}/{edge}/{asset}"\n'
                 'codec = "sparkplug"\n')
    for extra, warned in (("", True), (sparkplug, False)):
        caplog.clear()
        text = broker + CONFIG.replace('[mqtt]\nhost = "127.0.0.1"\n', "") + extra
        agent = Agent(parse_agent_config(text, source="t.toml", base_dir=tmp_path),
                      CollectorRegistry())
        with caplog.at_level("WARNING", "shopfloor.agent.run"):
            agent.start()
            agent.stop()
        assert any("lacks {site}, {line}" in r.getMessage() for r in caplog.records) is warned
