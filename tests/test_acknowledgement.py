"""QoS 1 messages are acknowledged only once scored, and a stop under load tells the truth.

Issue 10, defect 5: an overloaded agent stopped by SIGTERM had acknowledged 7,000-9,000
messages it never scored (acknowledged on arrival, lost from the queue), wrote no final
checkpoint, and once logged ``drained=True`` with exit 0 while it abandoned a batch.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from broker import LinkFactory, Mosquitto, free_port, link_settings, wait_until
from shopfloor.agent.checkpoints import FILE_NAME
from shopfloor.agent.config import AgentConfig, parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.agent.warmup import warm_up
from shopfloor.agent.worker import Worker
from shopfloor.receiving.codecs import Samples, encode_frame, encode_json_scalar
from shopfloor.receiving.ingest import BoundedQueue, Ingest, Item, finish
from shopfloor.receiving.mqtt import MqttLink, MqttSettings, Receipt
from shopfloor.scoring.pipeline import Plant
from test_agent_integration import (
    SAMPLE_RATE,
    T0,
    AgentFactory,
    publish_qos1,
    start_agent,  # noqa: F401 - the fixture, used by name
)

TOPIC = "plant/press-1/force"


def config_text(broker: Mosquitto, client_id: str, *, batch_max: int = 5000,
                receive_maximum: int = 1000, state: Path | None = None,
                shutdown_timeout: float = 5.0, metrics_port: int = 0) -> str:
    state_section = f'[state]\ndirectory = "{state}"\ncheckpoint_interval = 3600\n' if state else ""
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
clean_start = false
session_expiry = 300
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5
receive_maximum = {receive_maximum}

[agent]
batch_max = {batch_max}
batch_linger = 0.0
shutdown_timeout = {shutdown_timeout}

[metrics]
port = {metrics_port}

{state_section}
[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"
qos = 1

[[subscriptions]]
topic = "vib/{{asset}}/{{signal}}"
codec = "frame"
qos = 1
features = {{ sample_rate = {SAMPLE_RATE} }}
"""


class Consumer:
    """The agent's intake path without its threads: a link, the ingest, the queue, a worker
    turned by hand - so what is acknowledged when can be checked exactly."""

    def __init__(self, config: AgentConfig, make_link: LinkFactory, settings: MqttSettings
                 ) -> None:
        a = config.agent
        self.queue = BoundedQueue(a.queue_size, a.drop_policy, a.queue_bytes, a.queue_samples)
        self.ingest = Ingest(config, self.queue)
        self.worker = Worker(config, Plant(config.pipeline), self.queue)
        self.link: MqttLink = make_link(settings, [("plant/+/+", 1)], self.ingest.on_message)
        assert self.link.wait_ready(10)


def scalars(start: int, count: int) -> list[tuple[str, bytes]]:
    return [(TOPIC, encode_json_scalar(T0 + i, 100.0 + (i % 7))) for i in range(start,
                                                                              start + count)]


@pytest.mark.integration
def test_a_message_is_acknowledged_once_scored_and_what_was_not_is_delivered_again(
    mosquitto: Mosquitto, make_link: LinkFactory, tmp_path: Path,
) -> None:
    config = parse_agent_config(config_text(mosquitto, "ack", batch_max=10),
                                source="ack.toml", base_dir=tmp_path)
    settings = link_settings(mosquitto, "ack", clean_start=False, session_expiry=300)
    first = Consumer(config, make_link, settings)
    publish_qos1(mosquitto, scalars(0, 30))
    assert wait_until(lambda: first.ingest.received == 30)
    # Taken into the queue, but nothing is scored yet: nothing is acknowledged.
    assert (first.link.owed, first.link.acknowledged) == (30, 0)
    assert first.worker.run_once(timeout=1.0) == 10  # batch_max: one turn scores 10
    assert wait_until(lambda: first.link.acknowledged == 10, 2)
    assert first.link.owed == 20
    first.link.stop(2.0)  # the agent is gone with 20 messages in its queue

    second = Consumer(config, make_link, settings)  # same client id: the same session
    assert wait_until(lambda: second.ingest.received == 20), second.ingest.received
    batch = second.queue.get_batch(100, 0.0)
    second.queue.done(len(batch))
    times = np.concatenate([i.data.timestamps for i in batch if isinstance(i.data, Samples)])
    assert times.tolist() == [T0 + i for i in range(10, 30)]  # exactly the unscored ones
    finish(batch)
    assert wait_until(lambda: second.link.acknowledged == 20, 2)
    second.link.stop(2.0)

    third = Consumer(config, make_link, settings)
    time.sleep(1.0)
    assert third.ingest.received == 0  # everything scored was acknowledged: nothing comes back


@pytest.mark.integration
def test_receive_maximum_bounds_what_is_taken_but_not_scored(
    mosquitto: Mosquitto, make_link: LinkFactory, tmp_path: Path,
) -> None:
    config = parse_agent_config(config_text(mosquitto, "window", batch_max=3),
                                source="window.toml", base_dir=tmp_path)
    consumer = Consumer(config, make_link, link_settings(
        mosquitto, "window", clean_start=False, session_expiry=300, receive_maximum=5))
    publish_qos1(mosquitto, scalars(0, 40))
    assert wait_until(lambda: consumer.ingest.received == 5)
    time.sleep(0.5)
    assert consumer.ingest.received == 5  # the broker holds the other 35 until we score
    deadline = time.monotonic() + 20
    while consumer.worker.processed < 40 and time.monotonic() < deadline:
        consumer.worker.run_once(timeout=0.2)
    assert consumer.worker.processed == 40
    assert consumer.link.acknowledged == 40
    assert consumer.ingest.received == 40


def test_receipts_are_acknowledged_in_arrival_order_and_dropped_items_release_theirs() -> None:
    link = MqttLink(MqttSettings(host="127.0.0.1", client_id="unit"))  # never connected
    receipts = [Receipt(link, mid, 1) for mid in (1, 2, 3)]
    link._owed.extend(receipts)
    for r in receipts:
        r.hold()  # one item each, queued
    link.release(receipts)  # the link's own holds: each message is now its item's alone
    assert link.acknowledged == 0
    receipts[2].release()
    receipts[1].release()
    assert link.acknowledged == 0  # 2 and 3 are done, but 1 came first
    queue = BoundedQueue(1, "drop_oldest")
    data = Samples(np.array([T0]), np.array([1.0]))
    queue.put(Item("a/s", 0, (), data, T0, receipts[0]))
    queue.put(Item("a/s", 0, (), data, T0))  # evicts the first: counted, and released
    assert queue.drops["items"] == 1
    assert link.acknowledged == 3
    assert link.owed == 0


def test_a_new_connection_forgets_what_the_old_one_was_owed() -> None:
    link = MqttLink(MqttSettings(host="127.0.0.1", client_id="unit"))
    old = Receipt(link, 7, 1)
    link._owed.append(old)
    link._forget_receipts()  # as on every (re)connect: the broker redelivers under new mids
    old.release()
    assert link.acknowledged == 0  # mid 7 of the new connection is another message


def test_a_stop_past_its_deadline_abandons_the_batch_writes_the_checkpoint_and_says_so(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # QoS 0 frames (no receipts: nobody keeps them) queued faster than a 0.1 s drain can
    # score them: the stop must abandon work, still checkpoint, and not claim success.
    state = tmp_path / "state"
    config = parse_agent_config(
        config_text(mosquitto, "abandon", state=state, shutdown_timeout=0.1),
        source="abandon.toml", base_dir=tmp_path)
    agent = Agent(config)
    rng = np.random.default_rng(1)
    for i in range(600):
        agent.ingest.on_message(f"vib/motor-{i % 4}/accel",
                                encode_frame(T0 + i, SAMPLE_RATE, rng.standard_normal(8192)),
                                time.time())
    # As `shopfloor run` does before it starts: on a cold Numba cache (a fresh clone) the
    # first batch would compile for seconds, and no stop can cut into a compile.
    warm_up(config)
    agent.start()
    caplog.set_level("INFO", "shopfloor.agent.run")
    assert agent.stop() is False
    line = next(r.getMessage() for r in caplog.records
                if r.getMessage().startswith("agent stopped:"))
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    assert fields["drained"] == "False", line
    assert fields["checkpoint"] == "written", line
    assert int(fields["lost"]) + int(fields["processed"]) + agent.worker.abandoned == 600, line
    assert int(fields["lost"]) > 0, line
    assert (state / FILE_NAME).stat().st_size > 0
    assert not agent._worker_alive()


@pytest.mark.integration
def test_sigterm_under_overload_exits_0_with_a_checkpoint_and_every_message_scored_once(
    mosquitto: Mosquitto, start_agent: AgentFactory, tmp_path: Path,  # noqa: F811
) -> None:
    state = tmp_path / "state"
    count = 800
    text = config_text(mosquitto, "overload", state=state, shutdown_timeout=0.5)
    first = start_agent(text.replace("port = 0", f"port = {free_port()}"), "first")
    assert first.wait_log("agent started")
    rng = np.random.default_rng(2)
    publish_qos1(mosquitto, [(f"vib/motor-{i % 4}/accel",
                              encode_frame(T0 + i, SAMPLE_RATE, rng.standard_normal(8192)))
                             for i in range(count)])
    sent = time.time()
    code, seconds = first.stop(signal.SIGTERM, timeout=30)
    assert code == 0, first.tail()
    assert seconds < 5, first.tail()
    fields = _stopped(first.log())
    assert fields["checkpoint"] == "written", first.tail()
    assert fields["lost"] == "0"
    assert max(p.stat().st_mtime for p in state.iterdir()) >= sent - 1
    print(f"first run: {fields}")

    second = start_agent(text.replace("port = 0", f"port = {free_port()}"), "second")
    assert second.wait_log("agent started")
    scored_first = int(fields["processed"])
    assert wait_until(lambda: second.metric("shopfloor_messages_received_total")
                      >= count - scored_first, 30), second.tail()
    time.sleep(0.5)
    code, _ = second.stop(signal.SIGTERM, timeout=30)
    assert code == 0, second.tail()
    again = _stopped(second.log())
    # Every message scored exactly once over the two runs: the first acknowledged only what
    # it scored, the broker delivered the rest to the second.
    assert scored_first + int(again["processed"]) == count, (fields, again)
    assert again["drained"] == "True"


def _stopped(log: str) -> dict[str, str]:
    lines = [line for line in log.splitlines() if "agent stopped:" in line]
    assert lines, log[-2000:]
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1].split("agent stopped:", 1)[1]))
