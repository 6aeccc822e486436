"""Several agents on one broker (issue 12, item 4): each announces what it owns in its retained
status, and counts the signals it scores that another online agent announces too.

Against a real Mosquitto: two agents with disjoint topic filters score every signal exactly
once, each sees the other's status, and the one killed with SIGKILL is taken off by its will;
two agents whose filters overlap both count the signal they share. Without a broker: the
status' bounds, its rate limit, what another agent's status may be, and the config errors of
the new options.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from broker import Inbox, LinkFactory, Mosquitto, free_port, link_settings, wait_until
from shopfloor.agent.config import FleetSettings, parse_agent_config
from shopfloor.agent.fleet import (
    MAX_STATUS_BYTES,
    Fleet,
    filters_overlap,
    identity,
    status_level,
)
from shopfloor.agent.run import Agent
from shopfloor.agent.worker import SignalStatus
from shopfloor.cli import main
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.receiving.mqtt import MqttLink, Presence
from test_agent_integration import AgentFactory, AgentProcess
from test_agent_integration import start_agent as start_agent  # the fixture, by name
from test_config_errors import BASE, line_of, run_agent
from test_events import _format_checker

STATUS = Draft202012Validator(
    json.loads(resources.files("shopfloor.schemas").joinpath("agent-status.v1.json").read_text()),
    format_checker=_format_checker())
STATUS_FILTER = "shopfloor/agent/+/status"
SAMPLES = 12  # per signal
T0 = 1_750_000_000.0
LINE1 = ("station-1/torque", "station-2/diameter")
LINE2 = ("station-3/torque", "station-4/diameter")

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers -----------------------------------------------------------------------------------


def fleet_toml(broker: Mosquitto, name: str, topics: tuple[str, ...], metrics_port: int = 0
               ) -> str:
    """An agent of the fleet: its subscriptions, statuses once a second at most."""
    subs = "".join(f"""
[[subscriptions]]
topic = "{topic}"
detector = {{ kind = "zscore", min_samples = 5 }}
alarm = {{ warmup = 5 }}
""" for topic in topics)
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{name}"
keepalive = 5
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5

[agent]
shutdown_timeout = 5.0

[metrics]
port = {metrics_port}

[fleet]
announce_interval = 1.0
{subs}"""


def scrape(port: int) -> Metrics:
    """An agent's /metrics: (sample name, labels) -> value; {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), math.nan)


def scored(metrics: Metrics) -> dict[str, float]:
    """``asset/signal`` -> samples scored, of every signal the agent exports."""
    return {f"{dict(labels)['asset']}/{dict(labels)['signal']}": v
            for (name, labels), v in metrics.items()
            if name == "shopfloor_signal_samples_scored_total"}


def publish_samples(link: MqttLink, topics: list[str]) -> None:
    """SAMPLES JSON samples to each topic at QoS 1, acknowledged by the broker."""
    assert link.wait_ready(10)
    for i in range(SAMPLES):
        for j, topic in enumerate(topics):
            assert link.publish(topic, encode_json_scalar(T0 + i, 10.0 + j + 0.1 * (i % 3)))
    assert wait_until(lambda: link.unacknowledged == 0, 10)


def statuses(inbox: Inbox, agent: str) -> list[dict[str, Any]]:
    return [json.loads(p) for t, p, _ in list(inbox.messages)
            if t == f"shopfloor/agent/{agent}/status" and p]


def latest(inbox: Inbox, agent: str) -> dict[str, Any]:
    found = statuses(inbox, agent)
    return found[-1] if found else {}


@pytest.fixture
def in_process() -> Iterator[Callable[[str], Agent]]:
    """``start(config_text)``: a started in-process agent, stopped after the test."""
    agents: list[Agent] = []

    def start(text: str) -> Agent:
        agent = Agent(parse_agent_config(text), CollectorRegistry())
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.stop()


# --- two agents on one broker --------------------------------------------------------------------


@pytest.mark.integration
def test_two_agents_with_disjoint_filters_score_every_signal_once_and_see_each_other(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory,
    in_process: Callable[[str], Agent],
) -> None:
    watch = Inbox()
    make_link(link_settings(mosquitto, "fleet-watch"), [(STATUS_FILTER, 1)], watch)
    a = in_process(fleet_toml(mosquitto, "fleet-a", ("plant/line1/{asset}/{signal}",)))
    assert a.link.wait_ready(10)
    # The other one as systemd runs it, so that it can die without a goodbye below.
    b_port = free_port()
    b: AgentProcess = start_agent(
        fleet_toml(mosquitto, "fleet-b", ("plant/line2/{asset}/{signal}",), b_port), "fleet-b")
    # fleet-b subscribes to its data and to the statuses in one SUBSCRIBE, its data first:
    # once it has read fleet-a's retained status, its data subscription is in place.
    assert wait_until(lambda: b.metric("shopfloor_fleet_peers") == 1 or not b.running, 60), \
        b.tail()
    publisher = make_link(link_settings(mosquitto, "fleet-plant"))
    topics = [f"plant/line{n}/{sid}" for n, line in ((1, LINE1), (2, LINE2)) for sid in line]
    publish_samples(publisher, topics)

    def both() -> tuple[Metrics, Metrics]:
        return scrape(a.metrics_port), b.metrics()

    def counted() -> dict[str, float]:
        total: dict[str, float] = {}
        for metrics in both():
            for sid, n in scored(metrics).items():
                total[sid] = total.get(sid, 0.0) + n
        return total

    everything = set(LINE1 + LINE2)
    assert wait_until(lambda: counted() == dict.fromkeys(everything, SAMPLES), 30), counted()
    ma, mb = both()
    # Each signal by exactly one agent, the one whose filter it is under; and each agent
    # received its own messages only.
    assert set(scored(ma)) == set(LINE1)
    assert set(scored(mb)) == set(LINE2)
    assert value(ma, "shopfloor_messages_received_total") == len(LINE1) * SAMPLES
    assert value(mb, "shopfloor_messages_received_total") == len(LINE2) * SAMPLES

    # Each announces what it owns, retained, in the documented form.
    def announced(agent: str, count: int) -> bool:
        return latest(watch, agent).get("signal_count") == count

    assert wait_until(lambda: announced("fleet-a", 2) and announced("fleet-b", 2), 15), \
        (latest(watch, "fleet-a"), latest(watch, "fleet-b"))
    for doc in statuses(watch, "fleet-a") + statuses(watch, "fleet-b"):
        STATUS.validate(doc)
    sa, sb = latest(watch, "fleet-a"), latest(watch, "fleet-b")
    assert (sa["status"], sa["filters"], sa["signals"], sa["truncated"]) == (
        "online", ["plant/line1/+/+"], sorted(LINE1), False)
    assert (sb["status"], sb["filters"], sb["signals"], sb["truncated"]) == (
        "online", ["plant/line2/+/+"], sorted(LINE2), False)
    assert set(sa["signals"]) | set(sb["signals"]) == everything
    assert not set(sa["signals"]) & set(sb["signals"])
    # Statuses are republished on change, not per sample: a first one at connect, then one
    # or two as the signals appeared.
    assert len(statuses(watch, "fleet-a")) <= 4

    # Each sees the other, and shares nothing with it.
    def views(a_peers: float, b_peers: float) -> bool:
        ma, mb = both()
        return (value(ma, "shopfloor_fleet_peers"), value(mb, "shopfloor_fleet_peers")) == (
            a_peers, b_peers)

    assert wait_until(lambda: views(1, 1), 10)
    ma, mb = both()
    for metrics, me, peer in ((ma, "fleet-a", "fleet-b"), (mb, "fleet-b", "fleet-a")):
        assert value(metrics, "shopfloor_fleet_agent_info", agent=me) == 1
        assert value(metrics, "shopfloor_signals_shared") == 0
        assert value(metrics, "shopfloor_signals_shared_with", peer=peer) == 0
        assert value(metrics, "shopfloor_fleet_filters_overlapping") == 0
        assert value(metrics, "shopfloor_fleet_announced_signals") == 2
        assert value(metrics, "shopfloor_fleet_unlisted_signals") == 0

    # Lost without a goodbye: its will says offline, and it owns nothing any more.
    b.stop(signal.SIGKILL)
    assert wait_until(lambda: value(scrape(a.metrics_port), "shopfloor_fleet_peers") == 0, 30)
    gone = latest(watch, "fleet-b")
    STATUS.validate(gone)
    assert gone["status"] == "offline"
    assert "signals" not in gone
    assert not any(name == "shopfloor_signals_shared_with"
                   for name, _ in scrape(a.metrics_port))


@pytest.mark.integration
def test_overlapping_filters_make_both_agents_count_the_shared_signal(
    mosquitto: Mosquitto, make_link: LinkFactory, in_process: Callable[[str], Agent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="shopfloor.agent.fleet")
    # The copy-paste mistake: fleet-d took line 1's template as well as its own.
    c = in_process(fleet_toml(mosquitto, "fleet-c", ("plant/line1/{asset}/{signal}",)))
    d = in_process(fleet_toml(mosquitto, "fleet-d", ("plant/line1/{asset}/{signal}",
                                                     "plant/line2/{asset}/{signal}")))
    assert c.link.wait_ready(10)
    assert d.link.wait_ready(10)
    publish_samples(make_link(link_settings(mosquitto, "fleet-plant-2")),
                    ["plant/line1/station-1/torque", "plant/line2/station-3/torque"])
    assert wait_until(lambda: scored(scrape(c.metrics_port)) == {"station-1/torque": SAMPLES}
                      and scored(scrape(d.metrics_port)) == {"station-1/torque": SAMPLES,
                                                             "station-3/torque": SAMPLES}, 30)

    def sharing(agent: Agent, peer: str) -> bool:
        m = scrape(agent.metrics_port)
        return (value(m, "shopfloor_signals_shared"),
                value(m, "shopfloor_signals_shared_with", peer=peer),
                value(m, "shopfloor_fleet_filters_overlapping")) == (1, 1, 1)

    # Each counts the one signal the other announces too (station-3 is fleet-d's alone).
    assert wait_until(lambda: sharing(c, "fleet-d") and sharing(d, "fleet-c"), 15), (
        scrape(c.metrics_port), scrape(d.metrics_port))
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "scored by another agent too, 1 of them by fleet-d (e.g. station-1/torque" in said
    assert "topic filters of agent(s) fleet-c overlap this agent's" in said


@pytest.mark.integration
def test_a_replaced_status_is_published_and_never_after_the_offline_one(
    mosquitto: Mosquitto, make_link: LinkFactory,
) -> None:
    status = Presence("shopfloor/agent/edge-9/status", b"online-0", b"offline")
    watch = Inbox()
    make_link(link_settings(mosquitto, "watch-9"), [(status.topic, 1)], watch)
    link = make_link(link_settings(mosquitto, "edge-9", presence=(status,)))
    assert link.wait_ready(10)
    assert link.update_presence(status.topic, b"online-1")
    assert wait_until(lambda: watch.payloads[-1:] == [b"online-1"], 10), watch.payloads
    assert link.stop(5)
    assert link.update_presence(status.topic, b"online-2")  # too late: kept, never sent
    late = Inbox()
    make_link(link_settings(mosquitto, "late-9"), [(status.topic, 1)], late)
    assert late.wait_for(1, 10)
    assert late.payloads == [b"offline"]
    assert b"online-2" not in watch.payloads


# --- the status and the peers, without a broker --------------------------------------------------


def fleet(settings: FleetSettings, clock: Callable[[], float] = time.monotonic
          ) -> tuple[Fleet, list[bytes]]:
    """A fleet whose statuses are collected in a list."""
    sent: list[bytes] = []
    f = Fleet("edge-1", "{prefix}/agent/{agent}/status", "shopfloor",
              ["plant/+/+/+"], settings, clock=clock)

    def publish(topic: str, payload: bytes) -> bool:
        assert topic == "shopfloor/agent/edge-1/status"
        sent.append(payload)
        return True

    f.publish = publish
    return f, sent


def signals(names: list[str], **labels: str) -> list[SignalStatus]:
    now = time.time()
    return [SignalStatus(asset=n.split("/")[0], name=n.split("/")[1], labels=dict(labels),
                         last_arrival=now) for n in names]


def test_the_status_lists_at_most_announce_signals_and_says_truncated() -> None:
    f, sent = fleet(FleetSettings(announce_signals=2))
    f.tick(signals(["m-3/a", "m-1/a", "m-2/a", "m-1/b"], site="s1", line="l2"), time.time())
    doc = json.loads(sent[-1])
    STATUS.validate(doc)
    # Sorted, the topic's levels in name order whatever the template's order.
    assert doc["signals"] == ["m-1/a{line=l2,site=s1}", "m-1/b{line=l2,site=s1}"]
    assert (doc["signal_count"], doc["truncated"]) == (4, True)
    assert (f.listed, f.unlisted) == (2, 2)
    assert identity("m", "x", {"site": "s", "line": "l"}) == "m/x{line=l,site=s}"


def test_the_status_stays_within_its_size_bound() -> None:
    f, sent = fleet(FleetSettings(announce_signals=100_000))
    many = [f"machine-{i:05d}/signal-with-a-long-name-{i:05d}" for i in range(5000)]
    f.tick(signals(many, site="s" * 60), time.time())
    doc = json.loads(sent[-1])
    STATUS.validate(doc)
    assert len(sent[-1]) <= MAX_STATUS_BYTES
    assert (doc["truncated"], doc["signal_count"]) == (True, 5000)
    assert 0 < len(doc["signals"]) == f.listed < 5000
    assert f.unlisted == 5000 - f.listed


def test_a_changed_signal_table_is_announced_at_a_bounded_rate() -> None:
    now = [0.0]
    f, sent = fleet(FleetSettings(announce_interval=10.0), clock=lambda: now[0])
    table = signals(["m/a"])
    f.tick(table, time.time())
    assert len(sent) == 1
    # New signals every half second for 30 s: looked at once a second, announced once every
    # ten seconds, the last state always.
    for step in range(1, 61):
        now[0] = step * 0.5
        table = table + signals([f"m/s{step}"])
        f.tick(table, time.time())
    assert len(sent) == 4  # at 0, 10, 20 and 30 s
    assert json.loads(sent[-1])["signal_count"] == 61
    # Nothing changes: nothing is sent.
    for step in range(61, 100):
        now[0] = step * 0.5
        f.tick(table, time.time())
    assert len(sent) == 4
    # A signal silent past metrics.stale_after is no longer announced.
    old = SignalStatus(asset="m", name="old", last_arrival=time.time() - 7200)
    now[0] = 100.0
    f.tick([*table, old], time.time())
    assert len(sent) == 4


def test_other_agents_statuses_are_bounded_and_refusals_counted() -> None:
    now = [0.0]
    f, _ = fleet(FleetSettings(max_peers=2), clock=lambda: now[0])
    f.tick([], time.time())
    online = json.dumps({"status": "online", "signals": ["m/a"], "filters": ["x/+"]}).encode()
    f.on_status("edge-1", online)  # its own status: not a peer
    f.on_status("edge-2", online)
    f.on_status("edge-3", b'{"status": "online"}')  # an older agent: online, owns nothing known
    f.on_status("edge-4", online)
    f.on_status("edge-5", b"x" * (MAX_STATUS_BYTES + 1))
    f.on_status("edge-6", b"[1, 2")
    f.on_status("edge-7", json.dumps({"status": "online", "signals": [1]}).encode())
    f.on_status("e" * 300, online)
    assert f.rejected == {"too_large": 1, "invalid": 3, "peers_full": 1}

    def family(name: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for m in f.collect() for s in m.samples if s.name == name]

    assert family("shopfloor_fleet_peers") == [({}, 2)]
    f.on_status("edge-2", json.dumps({"status": "offline"}).encode())
    f.on_status("edge-3", b"")  # its retained status deleted
    f.on_status("edge-4", online)  # room again
    assert family("shopfloor_fleet_peers") == [({}, 1)]
    now[0] = 2.0
    f.tick(signals(["m/a", "m/b"]), time.time())
    # edge-4 announces m/a, which this agent scores too.
    assert family("shopfloor_signals_shared_with") == [({"peer": "edge-4"}, 1)]
    assert family("shopfloor_signals_shared") == [({}, 1)]


def test_filters_overlap_when_some_topic_matches_both() -> None:
    for a, b, overlap in [
        ("plant/line1/+/+", "plant/line2/+/+", False),
        ("plant/+/+/+", "plant/line2/+/+", True),
        ("plant/line1/+/+", "plant/line1/+/+/frame", False),
        ("plant/#", "plant", True),
        ("plant/a/#", "plant/b/#", False),
        ("$share/agents/plant/+/+", "plant/l1/m", True),
        ("#", "anything/at/all", True),
    ]:
        assert filters_overlap(a, b) is overlap is filters_overlap(b, a), (a, b)
    assert status_level("{prefix}/agent/{agent}/status", "sf") == ("sf/agent/", "/status")
    assert status_level("{prefix}/agent-{agent}", "sf") is None
    assert status_level("{prefix}/{agent}/{agent}", "sf") is None


# --- the options' config errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "key", "words"),
    [
        ("[fleet]\nannounce_interval = 0.5", "fleet.announce_interval", "must be between 1 and"),
        ("[fleet]\nannounce_signals = -1", "fleet.announce_signals", "must be between 0 and"),
        ("[fleet]\nmax_peers = 0", "fleet.max_peers", "must be between 1 and"),
        ('[fleet]\nwatch_peers = "yes"', "fleet.watch_peers", "must be bool, got str"),
        ("[fleet]\nannounce = true", "fleet.announce", ""),
    ],
)
def test_fleet_options_are_checked_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, key: str, words: str,
) -> None:
    text = BASE + "\n" + setting + "\n"
    path = tmp_path / "agent.toml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line_of(text, setting.splitlines()[1])}: {key}: {words}" in err, err
    assert "Traceback" not in err


def test_watching_peers_needs_the_agent_as_a_whole_status_level(tmp_path: Path) -> None:
    setting = 'status_topic = "{prefix}/agents-{agent}"'
    text = BASE.replace('prefix = "shopfloor"', f'prefix = "shopfloor"\n{setting}')
    path = tmp_path / "agent.toml"
    path.write_text(text)
    done = run_agent(path)  # what systemd starts: exit 2 before the warm-up, no restart loop
    assert done.returncode == 2, done.stderr
    assert (f"{path}:{line_of(text, setting)}: events.status_topic: must have {{agent}} as one "
            "whole topic level") in done.stderr
    assert "Traceback" not in done.stderr
    # Not watching, the agent may name its status as it likes.
    parse_agent_config(text + "\n[fleet]\nwatch_peers = false\n")
