"""The agent as a Sparkplug host (issue 11, item 6): an unknown alias or a sequence gap asks
the node for a rebirth, and a restarted agent recovers the aliases within one rebirth.
Before, every DATA was rejected as unknown_alias until the node happened to re-birth."""

from __future__ import annotations

import json
import threading
import time

import pytest

from broker import Inbox, LinkFactory, Mosquitto, link_settings, wait_until
from shopfloor.agent.config import AgentConfig, parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.receiving.codecs import Limits, decode
from shopfloor.receiving.mqtt import MqttLink
from shopfloor.receiving.sparkplug import (
    DataType,
    Metric,
    SparkplugAliases,
    encode_data,
    encode_dbirth,
    encode_nbirth,
    encode_payload,
    parse_topic,
    sparkplug_topic,
)
from shopfloor.receiving.sparkplug_host import SparkplugHost

GROUP, EDGE, DEVICE = "plant", "edge-1", "robot-1"


def test_unknown_aliases_and_sequence_gaps_ask_for_a_rebirth_at_a_bounded_rate() -> None:
    aliases = SparkplugAliases()
    sent: list[tuple[str, bytes]] = []
    now = [0.0]
    def publish(topic: str, payload: bytes) -> bool:
        sent.append((topic, payload))
        return True

    host = SparkplugHost(publish, clock=lambda: now[0])

    def feed(kind: str, payload: bytes) -> None:
        decode("sparkplug", payload, 0.0, Limits(), aliases,
               sparkplug_topic(GROUP, kind, EDGE, DEVICE if kind[0] == "D" else None))
        host.serve(aliases)

    feed("DDATA", encode_data(1, 5, [(1, DataType.DOUBLE, 1.0)]))  # never born: ask
    assert [t for t, _ in sent] == [f"spBv1.0/{GROUP}/NCMD/{EDGE}"]
    feed("DDATA", encode_data(1, 6, [(1, DataType.DOUBLE, 1.0)]))
    assert len(sent) == 1  # within the interval: held back
    assert host.held == 1
    now[0] += 11
    feed("NBIRTH", encode_nbirth(1, []))
    feed("DBIRTH", encode_dbirth(1, 1, [("speed", 1, DataType.DOUBLE, 0.0)]))
    feed("DDATA", encode_data(1, 2, [(1, DataType.DOUBLE, 1.0)]))
    assert len(sent) == 1  # born, in sequence: nothing to ask
    feed("DDATA", encode_data(1, 4, [(1, DataType.DOUBLE, 1.0)]))  # 3 went missing
    assert len(sent) == 2
    assert aliases.gaps == 1
    feed("DDATA", encode_data(1, 5, [(1, DataType.DOUBLE, 1.0)]))
    feed("DDATA", encode_data(1, 6, [(1, DataType.DOUBLE, 1.0)]))
    now[0] += 60
    feed("DDATA", encode_data(1, 7, [(1, DataType.DOUBLE, 1.0)]))
    assert len(sent) == 2  # in order again: no request


def host_config(mosquitto: Mosquitto, client_id: str, mqtt_extra: str = "") -> AgentConfig:
    """An agent on ``mosquitto`` reading the devices of every Sparkplug edge node."""
    return parse_agent_config(f"""
[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
client_id = "{client_id}"
{mqtt_extra}[metrics]
port = 0
[[subscriptions]]
topic = "spBv1.0/{{group}}/{{type}}/{{edge}}/{{asset}}"
codec = "sparkplug"
qos = 0
""", source="t.toml")


class EdgeNode:
    """A simulated Sparkplug edge node that answers rebirth requests and publishes DDATA by
    alias only."""

    def __init__(self, make_link: LinkFactory, broker: Mosquitto) -> None:
        self.seq = 0
        self.rebirths = 0
        self._lock = threading.Lock()
        self.link: MqttLink = make_link(
            link_settings(broker, "edge-node"), [(f"spBv1.0/{GROUP}/NCMD/{EDGE}", 0)],
            self._command)
        assert self.link.wait_ready(10)

    def _next(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def birth(self) -> None:
        with self._lock:
            self.seq = 0
            self.link.publish(sparkplug_topic(GROUP, "NBIRTH", EDGE), encode_nbirth(1, []))
            self.link.publish(sparkplug_topic(GROUP, "DBIRTH", EDGE, DEVICE), encode_dbirth(
                int(time.time() * 1000), self._next(), [("speed", 1, DataType.DOUBLE, 0.0)]))

    def data(self, value: float, quality: int | None = None) -> None:
        """A DDATA of the speed by alias; ``quality`` adds its Sparkplug Quality property."""
        with self._lock:
            now_ms, seq = int(time.time() * 1000), self._next()
            payload = (encode_data(now_ms, seq, [(1, DataType.DOUBLE, value)])
                       if quality is None else
                       encode_payload(now_ms, seq, [Metric(None, 1, DataType.DOUBLE, value,
                                                           None, quality)],
                                      with_datatype=False))
            self.link.publish(sparkplug_topic(GROUP, "DDATA", EDGE, DEVICE), payload)

    def _command(self, topic: str, payload: bytes, arrival: float, receipt: object) -> None:
        assert parse_topic(topic) is not None
        if b"Node Control/Rebirth" in payload:
            self.rebirths += 1
            self.birth()


@pytest.mark.integration
def test_a_restarted_agent_recovers_the_aliases_within_one_rebirth(
    mosquitto: Mosquitto, make_link: LinkFactory,
) -> None:
    config = host_config(mosquitto, "sp-host", 'sparkplug_host_id = "shopfloor-1"\n')
    states = Inbox()
    make_link(link_settings(mosquitto, "state-watch"), [("spBv1.0/STATE/+", 1)], states)
    node = EdgeNode(make_link, mosquitto)
    node.birth()  # born before the agent came: the agent has never seen these aliases
    agent = Agent(config)
    agent.start()
    try:
        assert agent.link.wait_ready(10)
        assert wait_until(lambda: bool(states.messages))
        assert json.loads(states.messages[0][1])["online"] is True
        sid = "robot-1/speed{group=plant,edge=edge-1}"
        deadline = time.monotonic() + 10
        while sid not in agent.plant.signals and time.monotonic() < deadline:
            node.data(1.0)
            time.sleep(0.1)
        assert sid in agent.plant.signals, dict(agent.ingest.rejected)
        assert node.rebirths == 1
        assert agent.ingest.sparkplug is not None
        assert agent.ingest.sparkplug.requested == 1
    finally:
        agent.stop()
    assert wait_until(lambda: json.loads(states.messages[-1][1])["online"] is False)


@pytest.mark.integration
def test_samples_of_bad_or_stale_quality_are_counted_and_never_learned(
    mosquitto: Mosquitto, make_link: LinkFactory,
) -> None:
    # Issue 11, item 5: Sparkplug's Quality property (0 BAD, 192 GOOD, 500 STALE).
    config = host_config(mosquitto, "sp-quality")
    agent = Agent(config)
    agent.start()
    try:
        assert agent.link.wait_ready(10)
        node = EdgeNode(make_link, mosquitto)
        node.birth()
        sid = "robot-1/speed{group=plant,edge=edge-1}"
        assert wait_until(lambda: sid in agent.plant.signals)  # the birth's value
        for value, quality in [(1.0, 192), (1e6, 0), (2.0, None), (-1e6, 500), (3.0, 192)]:
            node.data(value, quality)
        assert wait_until(lambda: agent.ingest.rejected["bad_quality"] == 2)
        # Scored: the birth's value, the three good samples and one value per rebirth the
        # agent asked for (this subscription does not hear the node's NBIRTH).
        pipe = agent.plant.signals[sid]
        assert wait_until(lambda: pipe.scored == 4 + node.rebirths), pipe.scored
        time.sleep(0.3)  # nothing more arrives: the two bad samples were never scored
        assert pipe.scored == 4 + node.rebirths
        assert dict(agent.ingest.rejected) == {"bad_quality": 2}
    finally:
        agent.stop()
