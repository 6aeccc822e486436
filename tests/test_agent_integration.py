"""The agent end to end against a real Mosquitto on loopback: the acceptance tests of issue 3.

Most tests run ``python -m shopfloor run --config F`` as a child process, exactly as systemd
would, with its log in a file; tests that need the agent's counters use an in-process
:class:`~shopfloor.agent.run.Agent`. A watcher client subscribed to ``shopfloor/#`` collects the
anomaly events and retained states.

Readiness and completion are observed, never slept for. Every config has a ``probe``
subscription whose signals have no warm-up, so the first sample of a new probe signal moves it
from warming_up to normal and the agent publishes that state. Publishing to a fresh probe signal
until its state comes back proves the agent is subscribed (a probe is repeated because a
message the broker receives before the agent's SUBSCRIBE is not delivered); sent after other
messages on the same publisher connection, a probe proves that everything before it has been
scored and its events published: the broker forwards one connection's messages in order, the
worker handles queued items in order (a new signal's group comes last in its batch), and the
agent's publishes reach the watcher in order.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.publish as paho_publish
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker import Inbox, LinkFactory, Mosquitto, free_port, link_settings, wait_until
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.receiving.codecs import encode_frame, encode_json_scalar
from shopfloor.receiving.mqtt import MqttLink
from shopfloor.receiving.sparkplug import DataType, encode_data, encode_dbirth
from shopfloor.tools.simulate import Fault, Plant, agent_config_toml
from test_events import EVENTS, STATES  # the schema's validators, date-time format checked

pytestmark = pytest.mark.integration

SAMPLE_RATE = 12_000.0
FRAME_LEN = 1024
T0 = 1_750_000_000.0  # timestamps of hand-made samples: any fixed epoch time will do
STOPPED = re.compile(r"agent stopped: drained=(\w+) flushed=(\w+) processed=(\d+)")


# --- the agent as a child process ---------------------------------------------------------


class AgentProcess:
    """``python -m shopfloor run --config CONFIG``, its standard error (the log) in a file."""

    def __init__(self, config: Path, log_file: Path) -> None:
        self.log_file = log_file
        self.metrics_port = int(tomllib.loads(config.read_text())["metrics"]["port"])
        with log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shopfloor", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait_log(self, needle: str, count: int = 1, timeout: float = 30.0) -> bool:
        """True once ``needle`` appears ``count`` times in the log; False on timeout or exit."""
        return wait_until(lambda: self.log().count(needle) >= count or not self.running,
                          timeout) and self.log().count(needle) >= count

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The agent's Prometheus exposition: (sample name, labels) -> value; {} if down."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        """One sample's value (NaN while the endpoint does not answer or lacks it)."""
        return self.metrics().get((name, frozenset(labels.items())), math.nan)

    def received(self) -> float:
        return self.metric("shopfloor_messages_received_total")

    def rss_kib(self) -> int:
        """Resident set size now, from /proc (the kernel's own accounting)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0
             ) -> tuple[int, float]:
        """Send ``sig``; the exit code and the seconds until the process was gone."""
        start = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def stopped_line(self) -> tuple[bool, bool, int]:
        """``(drained, flushed, processed)`` from the agent's last words."""
        found = STOPPED.findall(self.log())
        assert found, f"no 'agent stopped' line in the log:\n{self.tail()}"
        drained, flushed, processed = found[-1]
        return drained == "True", flushed == "True", int(processed)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
        self.proc.wait(10)


AgentFactory = Callable[[str, str], AgentProcess]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[AgentFactory]:
    """``start_agent(config_text, name)``: a running agent; any still alive is killed after."""
    started: list[AgentProcess] = []

    def start(config_text: str, name: str = "agent") -> AgentProcess:
        config = tmp_path / f"{name}-{len(started)}.toml"
        config.write_text(config_text)
        agent = AgentProcess(config, tmp_path / f"{name}-{len(started)}.log")
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.kill()


# --- configuration, publishing, watching --------------------------------------------------


def agent_toml(broker: Mosquitto, client_id: str, *, protocol: str = "5", max_signals: int = 1000,
               shutdown_timeout: float = 5.0, queue_size: int = 10_000) -> str:
    """A config with one subscription per codec, and the probe subscription (no warm-up).

    Scalar signals warm up on 20 samples (detector and alarm) so short tests can raise alarms.
    """
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
protocol = "{protocol}"
client_id = "{client_id}"
keepalive = 5
clean_start = false
session_expiry = 300
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5

[agent]
queue_size = {queue_size}
max_signals = {max_signals}
shutdown_timeout = {shutdown_timeout}

[metrics]
port = {free_port()}

[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"
detector = {{ kind = "zscore", min_samples = 20 }}
alarm = {{ warmup = 20 }}

[[subscriptions]]
topic = "vib/{{asset}}/{{signal}}"
codec = "frame"
features = {{ sample_rate = {SAMPLE_RATE} }}
detector = {{ kind = "zscore", min_samples = 20 }}
alarm = {{ warmup = 20 }}

[[subscriptions]]
topic = "spBv1.0/{{group}}/{{type}}/{{edge}}/{{asset}}"
codec = "sparkplug"

{PROBE_SUBSCRIPTION}
"""


PROBE_SUBSCRIPTION = """
[[subscriptions]]
topic = "probe/{asset}/{signal}"
codec = "json"
alarm = { warmup = 0 }
"""


def publish_qos1(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 on one fresh connection; returns once the broker acknowledged all."""
    paho_publish.multiple(
        [{"topic": t, "payload": p, "qos": 1} for t, p in messages],
        hostname=broker.host, port=broker.port, client_id="", keepalive=5,
    )


def _at_least(count: Callable[[], float], target: float) -> bool:
    return count() >= target


PACE = 400  # messages per step, well below Mosquitto's default max_queued_messages (1000)


def publish_paced(broker: Mosquitto, messages: list[tuple[str, bytes]],
                  received: Callable[[], float], timeout: float = 30.0) -> None:
    """Publish in steps, each once the agent has received everything before it.

    A subscriber that falls more than ``max_queued_messages`` (default 1000) behind loses
    messages at the broker ("Outgoing messages are being dropped" in its log): a publisher at
    full speed outruns the agent whenever the machine is busy. Waiting on the agent's own
    count keeps every test message and the counts exact, whatever the load.
    """
    base = received()
    for start in range(0, len(messages), PACE):
        step = messages[start:start + PACE]
        publish_qos1(broker, step)
        target = base + start + len(step)
        if not wait_until(partial(_at_least, received, target), timeout):
            pytest.fail(f"the agent received {received() - base:g} of {target - base} messages "
                        f"within {timeout} s")


class Watcher:
    """Everything the agent publishes under ``shopfloor/#``, decoded."""

    def __init__(self, make_link: LinkFactory, broker: Mosquitto, name: str = "watcher") -> None:
        self.inbox = Inbox()
        self.link: MqttLink = make_link(
            link_settings(broker, name, clean_start=False, session_expiry=300),
            [("shopfloor/#", 1)], self.inbox)
        assert self.link.wait_ready(10), "the watcher could not subscribe"

    def topics(self) -> list[str]:
        return [topic for topic, _, _ in list(self.inbox.messages)]

    def has(self, topic: str) -> bool:
        return topic in self.topics()

    def documents(self, suffix: str) -> list[tuple[str, dict[str, Any]]]:
        return [(t, json.loads(p)) for t, p, _ in list(self.inbox.messages) if t.endswith(suffix)]

    def events(self) -> list[dict[str, Any]]:
        return [doc for _, doc in self.documents("/anomaly")]

    def raised(self, asset: str, signal: str) -> list[dict[str, Any]]:
        return [e for e in self.events()
                if (e["asset"], e["signal"], e["kind"]) == (asset, signal, "raised")]


def probe(broker: Mosquitto, watcher: Watcher, name: str, timeout: float = 20.0) -> None:
    """Publish to the probe signal ``name/probe`` until the agent publishes its state.

    Each probe is an asset of its own: a static probe signal (see the flood test) in an asset
    with another signal would get the asset-level detector too.
    """
    state = f"shopfloor/{name}/probe/state"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        publish_qos1(broker, [(f"probe/{name}/probe", b"0")])
        if wait_until(lambda: watcher.has(state), 0.5):
            return
    pytest.fail(f"the agent did not answer probe {name!r} within {timeout} s")


def scalar_messages(asset: str, signal: str, values: np.ndarray, start: int = 0
                    ) -> list[tuple[str, bytes]]:
    return [(f"plant/{asset}/{signal}", encode_json_scalar(T0 + start + i, float(v)))
            for i, v in enumerate(values)]


def healthy(n: int, seed: int) -> np.ndarray:
    return 100.0 + np.random.default_rng(seed).standard_normal(n)


def assert_documents_valid(watcher: Watcher) -> None:
    for topic, doc in watcher.documents("/anomaly"):
        errors = [e.message for e in EVENTS.iter_errors(doc)]
        assert not errors, (topic, doc, errors)
    for topic, doc in watcher.documents("/state"):
        errors = [e.message for e in STATES.iter_errors(doc)]
        assert not errors, (topic, doc, errors)


# --- 1. simulate -> agent -> events -------------------------------------------------------


def test_simulated_plant_faults_raise_events_and_healthy_signals_stay_quiet(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory,
) -> None:
    # Faults start at 30 s of plant time; at 4 frames and 4 parts a second, the detectors'
    # baselines (30 samples) and the alarms' warm-up (40) are done 10 s before that. The drift
    # ramps over 8 s: a z-score learns a slow drift as its new normal before it is 3 sigma
    # off (that is a property of the detector, not of the agent); measured over 12 seeds,
    # both faults were raised 4-6 s after they started and no healthy signal was.
    start, duration = 30.0, 50.0
    plant = Plant(
        vibration_assets=2, quality_assets=2, extra_signals=2, frame_rate=4.0,
        parts_per_second=4.0, frame_len=FRAME_LEN, seed=7,
        faults=(Fault("motor-1", "accel", "bearing", start, size=0.3, ramp=8.0),
                Fault("station-1", "diameter_mm", "drift", start, size=8.0, ramp=8.0)),
    )
    config = agent_config_toml(plant, mosquitto.host, mosquitto.port, client_id="agent-sim",
                               metrics_port=free_port(), warmup=40)
    config += "\n[defaults.detector]\nkind = \"zscore\"\nmin_samples = 30\n" + PROBE_SUBSCRIPTION
    watcher = Watcher(make_link, mosquitto)
    agent = start_agent(config, "sim")
    probe(mosquitto, watcher, "ready")

    t0 = time.time() - duration  # the plant's clock: the last message is about now
    messages = [(topic, payload) for topic, payload, _ in plant.messages(t0, duration)]
    expected = len(messages)
    publish_paced(mosquitto, messages, agent.received)
    probe(mosquitto, watcher, "done")

    truth = plant.ground_truth(t0)
    assert set(truth) == {"motor-1/accel", "station-1/diameter_mm"}
    events = watcher.events()
    raised = {f"{e['asset']}/{e['signal']}": e for e in events if e["kind"] == "raised"}
    healthy_ids = {s.id for s in plant.signals} - set(truth)
    assert set(raised) == set(truth), f"raised: {sorted(raised)}; log:\n{agent.tail()}"
    assert not [e for e in events if f"{e['asset']}/{e['signal']}" in healthy_ids]
    for sid, fault_start in truth.items():
        event = raised[sid]
        # Raised within the fault and not before it (no premature alarm on a faulty signal).
        assert fault_start <= event["ts"] <= t0 + duration, (sid, event)
        assert event["score"] > event["threshold"]
        assert event["labels"] == {}  # the generated config pins site and line in its topics
    assert raised["motor-1/accel"]["features"]
    assert "value" not in raised["motor-1/accel"]
    assert raised["motor-1/accel"]["top"] in raised["motor-1/accel"]["features"]
    assert isinstance(raised["station-1/diameter_mm"]["value"], float)
    assert_documents_valid(watcher)
    # Every faulty signal's retained state says so; healthy signals' states say normal.
    states = {t: doc["state"] for t, doc in watcher.documents("/state")}
    for sid in healthy_ids:
        assert states.get(f"shopfloor/{sid}/state") == "normal", sid

    assert not [k for k in agent.metrics() if k[0] == "shopfloor_messages_rejected_total"]
    code, _ = agent.stop()
    assert code == 0, agent.tail()
    drained, _, processed = agent.stopped_line()
    assert drained
    assert processed >= expected + 2  # every plant message and at least one of each probe


# --- 2. broker restarts and persistent sessions -------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_agent_survives_a_broker_restart_and_scores_what_comes_after(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory,
    sig: signal.Signals,
) -> None:
    # A SIGKILLed broker saves nothing: the agent's session and subscriptions are gone, so
    # messages flow again only because the agent subscribes on every connect.
    watcher = Watcher(make_link, mosquitto)
    agent = start_agent(agent_toml(mosquitto, "agent-restart"), "restart")
    probe(mosquitto, watcher, "ready")
    publish_qos1(mosquitto, scalar_messages("press-1", "force", healthy(40, seed=1)))
    probe(mosquitto, watcher, "warm")  # the baseline is learned before the broker goes

    mosquitto.restart(sig)
    assert agent.wait_log("mqtt connected", count=2, timeout=20), agent.tail()
    assert agent.running
    assert wait_until(lambda: watcher.link.reconnects >= 1 and watcher.link.wait_ready(0.1), 20)
    probe(mosquitto, watcher, "back")  # subscribed again (SIGKILL: from scratch)

    # Scored after the restart by the same pipeline: the baseline learned before it holds,
    # so a spike of 40 sigma raises the alarm.
    spike = np.full(5, 140.0)
    publish_qos1(mosquitto, scalar_messages("press-1", "force", spike, start=40))
    assert wait_until(lambda: bool(watcher.raised("press-1", "force")), 10), agent.tail()
    event = watcher.raised("press-1", "force")[0]
    assert event["value"] == 140.0
    assert event["ts"] == T0 + 42  # the third exceedance in a row raises it
    assert_documents_valid(watcher)

    code, _ = agent.stop()
    assert code == 0, agent.tail()
    drained, flushed, processed = agent.stopped_line()
    assert drained
    assert flushed
    assert processed >= 45 + 3


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_published_while_the_agent_was_away_are_scored_when_it_returns(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory, protocol: str,
) -> None:
    # How to be away while the broker keeps the session: the agent stops cleanly (SIGTERM,
    # DISCONNECT), which keeps a persistent session (MQTT 5: clean_start false and a session
    # expiry; 3.1.1: clean_session false). Messages published meanwhile queue in the session;
    # a broker restart with persistence on in between shows the queue survives the broker too.
    # The agent then comes back with the same client id: it must receive and score exactly
    # those messages (a new process: its detectors start afresh, so the queued messages include
    # the warm-up as well as the fault).
    config = agent_toml(mosquitto, f"agent-away-{protocol.replace('.', '')}", protocol=protocol)
    first = start_agent(config, "first")
    watcher = Watcher(make_link, mosquitto)
    probe(mosquitto, watcher, "ready")
    code, _ = first.stop()
    assert code == 0, first.tail()

    away = [*scalar_messages("press-1", "force", healthy(40, seed=2)),
            *scalar_messages("press-1", "force", np.full(5, 140.0), start=40),
            ("probe/returned/probe", b"0")]  # once: the session's subscription delivers it
    publish_qos1(mosquitto, away)
    mosquitto.restart(signal.SIGTERM)
    assert wait_until(lambda: watcher.link.reconnects >= 1 and watcher.link.wait_ready(0.1), 20)

    second = start_agent(config, "second")
    assert wait_until(lambda: watcher.has("shopfloor/returned/probe/state"), 30), second.tail()
    assert "session_present=True" in second.log()
    raised = watcher.raised("press-1", "force")
    assert [e["ts"] for e in raised] == [T0 + 42]  # one alarm, on the third spike
    assert_documents_valid(watcher)
    code, _ = second.stop()
    assert code == 0, second.tail()
    drained, flushed, processed = second.stopped_line()
    assert drained
    assert flushed
    assert processed == len(away)  # all of them, and nothing else


# --- 3. malformed payloads ----------------------------------------------------------------


@pytest.fixture
def run_agent(tmp_path: Path) -> Iterator[Callable[[str], Agent]]:
    """``run_agent(config_text)``: a started in-process Agent, subscribed; stopped after."""
    agents: list[Agent] = []

    def run(config_text: str) -> Agent:
        agent = Agent(parse_agent_config(config_text, source="test.toml", base_dir=tmp_path))
        agents.append(agent)
        agent.start()
        assert agent.link.wait_ready(10), "the agent could not subscribe"
        return agent

    yield run
    for agent in agents:
        agent.stop()


def test_malformed_payloads_are_counted_by_reason_and_scoring_goes_on(
    mosquitto: Mosquitto, make_link: LinkFactory, run_agent: Callable[[str], Agent],
) -> None:
    agent = run_agent(agent_toml(mosquitto, "agent-malformed"))
    watcher = Watcher(make_link, mosquitto)
    frame = encode_frame(T0, SAMPLE_RATE, np.sin(np.arange(FRAME_LEN) / 3.0), "float32")
    device = "spBv1.0/line1/{}/edge1/robot-1"
    bad: dict[str, list[tuple[str, bytes]]] = {
        "truncated": [("vib/motor-1/accel", frame[:-10]), ("vib/motor-1/accel", frame[:20])],
        "bad_header": [("vib/motor-1/accel", b"XXXX" + frame[4:])],
        "too_large": [("plant/press-2/temp", b"1" * (1_048_576 + 1)),
                      ("vib/motor-1/accel", frame + bytes(1_048_576))],
        "too_deep": [("plant/press-2/temp", b"[" * 64 + b"1" + b"]" * 64),
                     ("plant/press-2/temp", b'{"a":' * 9 + b"1" + b"}" * 9)],
        "non_finite": [("plant/press-2/temp", b'{"ts": 1750000000, "value": NaN}'),
                       ("plant/press-2/temp", b"-Infinity"),
                       ("plant/press-2/temp", b'{"ts": 1750000000, "value": 1e999}')],
        "wrong_type": [("plant/press-2/temp", b'{"value": "12.5"}'),
                       ("plant/press-2/temp", b"true"),
                       ("plant/press-2/temp", b'{"ts": 1750000000, "value": null}')],
        "bad_json": [("plant/press-2/temp", b'{"value": ')],
        "not_utf8": [("plant/press-2/temp", b"\xff\xfe1")],
        "empty": [("plant/press-2/temp", b"")],
        "bad_sparkplug": [(device.format("DDATA"), b"\xff\xff\xff\xff")],
        "unknown_alias": [(device.format("DDATA"),
                           encode_data(int(T0 * 1000), 1, [(7, DataType.DOUBLE, 1.0)]))],
        # The template's filter plant/+/+ also delivers empty levels, which name nothing.
        "unknown_topic": [("plant//force", b"1"), ("plant/press-2/", b"1")],
        "bad_name": [("plant/press 2/force", b"1"), ("plant/press-2/force%", b"1")],
    }
    good = scalar_messages("press-1", "force", healthy(40, seed=3))
    messages: list[tuple[str, bytes]] = []
    bad_flat = [m for ms in bad.values() for m in ms]
    for i, message in enumerate(good):  # bad messages interleaved with the good ones
        messages.append(message)
        if i < len(bad_flat):
            messages.append(bad_flat[i])
    # A valid Sparkplug device: born with an alias, then data by alias only.
    messages += [
        (device.format("DBIRTH"), encode_dbirth(int(T0 * 1000), 0, [
            ("temperature", 1, DataType.DOUBLE, 20.0)])),
        (device.format("DDATA"), encode_data(int(T0 * 1000) + 1000, 1,
                                             [(1, DataType.DOUBLE, 20.5)])),
        *scalar_messages("press-1", "force", np.full(5, 140.0), start=40),
    ]
    publish_qos1(mosquitto, messages)

    valid = len(good) + 2 + 5
    assert wait_until(lambda: agent.worker.processed >= valid, 15), agent.ingest.rejected
    assert wait_until(lambda: bool(watcher.raised("press-1", "force")), 10)
    assert agent.ingest.received == len(messages)
    assert dict(agent.ingest.rejected) == {reason: len(ms) for reason, ms in bad.items()}
    assert agent.worker.processed == valid
    assert agent.queue.dropped == 0
    # Still running, and nothing escaped into paho's thread or the worker.
    assert agent.link.connected
    assert agent.link.callback_errors == 0
    assert agent._worker_thread is not None
    assert agent._worker_thread.is_alive()
    assert agent.worker_errors == 0
    force = agent.plant.signals["press-1/force"]
    assert force.scored == 45
    assert agent.worker.status["press-1/force"].alarms == 1
    robot = "robot-1/temperature{group=line1,edge=edge1}"  # a Sparkplug device's identity
    assert agent.plant.signals[robot].scored == 2
    assert set(agent.plant.signals) == {"press-1/force", robot}
    assert_documents_valid(watcher)


# --- 4. topic floods ----------------------------------------------------------------------

FLOOD = 5_000
CAP = 50


def flood(prefix: str, first: int = 0) -> list[tuple[str, bytes]]:
    """``FLOOD`` distinct signal topics (100 assets of 50 signals), one message each."""
    return [(f"{prefix}/flood-{i // 50:03d}/s{i % 50:02d}", b"1")
            for i in range(first, first + FLOOD)]


def test_a_topic_flood_stops_at_the_signal_cap(
    mosquitto: Mosquitto, run_agent: Callable[[str], Agent],
) -> None:
    agent = run_agent(agent_toml(mosquitto, "agent-cap", max_signals=CAP))
    publish_paced(mosquitto, flood("plant"), lambda: agent.ingest.received)
    assert wait_until(lambda: agent.worker.processed >= CAP, 10)
    admitted = {f"flood-{i // 50:03d}/s{i % 50:02d}" for i in range(CAP)}  # the first to come
    assert set(agent.ingest.admitted) == admitted
    assert dict(agent.ingest.rejected) == {"signal_cap": FLOOD - CAP}
    assert set(agent.plant.signals) == admitted
    assert set(agent.worker.status) == admitted
    # Admitted signals keep flowing after the cap is reached; new ones stay out.
    publish_qos1(mosquitto, [("plant/flood-000/s00", b"2"), ("plant/new/signal", b"2")])
    assert wait_until(lambda: agent.ingest.received >= FLOOD + 2, 10)
    assert wait_until(lambda: agent.worker.processed >= CAP + 1, 10)
    assert agent.ingest.rejected["signal_cap"] == FLOOD - CAP + 1
    assert agent.worker.processed == CAP + 1
    assert len(agent.plant.signals) == CAP


def test_a_topic_flood_does_not_grow_the_agents_memory(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory,
) -> None:
    # Two static probe signals answer after each flood although the cap is full: configured
    # signals are admitted from the start (and count towards the cap).
    config = agent_toml(mosquitto, "agent-flood", max_signals=CAP) + "".join(f"""
[[signals]]
asset = "{name}"
name = "probe"
alarm = {{ warmup = 0 }}
""" for name in ("done1", "done2"))
    watcher = Watcher(make_link, mosquitto)
    agent = start_agent(config, "flood")
    probe(mosquitto, watcher, "ready")
    before = agent.rss_kib()

    # The flood goes to the probe subscription, whose signals publish a state on their first
    # sample: the state topics count the signals the agent took on.
    publish_paced(mosquitto, flood("probe"), agent.received)
    probe(mosquitto, watcher, "done1")
    after_first = agent.rss_kib()
    publish_paced(mosquitto, flood("probe", first=FLOOD), agent.received)  # 5,000 new ones
    probe(mosquitto, watcher, "done2")
    after_second = agent.rss_kib()

    signals = {t.removeprefix("shopfloor/").removesuffix("/state")
               for t, _ in watcher.documents("/state")}
    flooded = {s for s in signals if s.startswith("flood-")}
    assert len(flooded) == CAP - 3  # the cap less the static probes and "ready"
    assert signals == flooded | {"ready/probe", "done1/probe", "done2/probe"}
    # Memory: a scalar signal's pipeline holds 64 KiB (measured over 2,000 signals; the
    # quantile threshold's histogram is most of it), so 10,000 admitted signals would add
    # 640 MiB. Measured here: +3 MiB for the first flood (47 signals, paho and allocator
    # buffers), +0.1 MiB for the second. The bounds leave room for allocator noise.
    growth_mib = (after_second - before) / 1024
    second_mib = (after_second - after_first) / 1024
    print(f"RSS: {before / 1024:.1f} MiB before, {after_first / 1024:.1f} after 5,000 topics, "
          f"{after_second / 1024:.1f} after 10,000")
    assert growth_mib < 20, growth_mib
    assert second_mib < 5, second_mib
    # The agent's own counts agree: CAP pipelines, the rest of the flood refused by the cap.
    assert agent.metric("shopfloor_signals") == CAP
    assert agent.metric("shopfloor_messages_rejected_total", reason="signal_cap") == (
        2 * FLOOD - (CAP - 3))
    assert agent.running
    code, _ = agent.stop()
    assert code == 0, agent.tail()
    processed = agent.stopped_line()[2]
    assert CAP <= processed < 2 * CAP  # 47 flood messages and the probes (sent until answered)


# --- 5. SIGTERM ---------------------------------------------------------------------------

# Below Mosquitto's default max_queued_messages (1000): a larger burst outruns the agent's
# network thread and the broker drops what no longer fits its queue for the agent ("Outgoing
# messages are being dropped" in its log), which is the broker's bound, not the agent's.
BURST = 800


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_the_queue_and_exits_0_within_the_shutdown_timeout(
    mosquitto: Mosquitto, make_link: LinkFactory, start_agent: AgentFactory, sig: signal.Signals,
) -> None:
    shutdown_timeout = 5.0
    config = agent_toml(mosquitto, "agent-sigterm", shutdown_timeout=shutdown_timeout)
    watcher = Watcher(make_link, mosquitto)
    agent = start_agent(config, "sigterm")
    probe(mosquitto, watcher, "ready")
    rng = np.random.default_rng(5)
    # Frames of 8192 samples: each costs the worker an FFT or two, so a backlog builds up.
    burst = [(f"vib/motor-{i % 4}/accel",
              encode_frame(T0 + i, SAMPLE_RATE, rng.standard_normal(8192), "float32"))
             for i in range(BURST)]
    publish_qos1(mosquitto, burst)
    code, seconds = agent.stop(sig, timeout=shutdown_timeout + 10)
    assert code == 0, agent.tail()
    assert seconds <= shutdown_timeout, agent.tail()
    drained, flushed, processed = agent.stopped_line()
    assert drained
    assert flushed
    # The last line; what came after the signal stays with the broker (left_with_broker).
    assert re.search(rf"drained=True flushed=True processed={processed} left_with_broker=\d+ "
                     r"lost=0 checkpoint=none$", agent.log().splitlines()[-1])
    assert processed >= 1  # the probe; the burst's share depends on when the signal came


def test_stop_scores_every_queued_item_before_it_returns(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    # The same drain with a backlog made certain: the items are queued through on_message
    # before the worker starts, and stop() follows start() at once.
    config = parse_agent_config(agent_toml(mosquitto, "agent-drain", shutdown_timeout=10.0),
                                source="test.toml", base_dir=tmp_path)
    agent = Agent(config)
    rng = np.random.default_rng(6)
    for i in range(BURST):
        frame = encode_frame(T0 + i, SAMPLE_RATE, rng.standard_normal(8192), "float32")
        agent.ingest.on_message(f"vib/motor-{i % 4}/accel", frame, time.time())
    assert len(agent.queue) == BURST
    agent.start()
    try:
        started = time.monotonic()
        assert agent.stop()
        assert time.monotonic() - started <= config.agent.shutdown_timeout
    finally:
        agent.stop()  # idempotent; stops what a failed assertion left running
    assert len(agent.queue) == 0
    assert agent.worker.processed == BURST
    assert sum(p.scored for p in agent.plant.signals.values()) == BURST
    assert agent.queue.dropped == 0
    assert not agent.ingest.rejected


def test_messages_arriving_during_the_drain_wait_in_the_session_for_the_next_run(
    mosquitto: Mosquitto, run_agent: Callable[[str], Agent],
) -> None:
    # stop() closes intake first and disconnects last; messages that arrive in between are
    # made deterministic here by closing intake by hand, as stop() does, before publishing.
    config = agent_toml(mosquitto, "agent-drain-window")
    first = run_agent(config)
    first.ingest.closed = True
    publish_qos1(mosquitto, scalar_messages("press-1", "force", healthy(10, seed=7)))
    # Refused while closing: delivered to us, but not acknowledged.
    assert wait_until(lambda: first.ingest.deferred >= 10, 10)
    assert first.link.refused == 10
    assert first.stop()
    second = run_agent(config)  # the same client id: the same persistent session
    assert wait_until(lambda: second.worker.processed >= 10, 3), dict(first.ingest.rejected)
