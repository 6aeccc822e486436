"""The agent's hot path in process, without a broker: queue, ingest (routing, caps), worker.

Messages go straight into :meth:`Ingest.on_message` (what paho's thread calls) and batches are
drained with :meth:`Worker.run_once`, so every count can be checked exactly and fast.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from shopfloor.agent.config import AgentConfig, parse_agent_config
from shopfloor.agent.events import EventSink, event_document
from shopfloor.agent.worker import AlarmChange, SignalStatus, Worker
from shopfloor.receiving.codecs import (
    REJECT_REASONS,
    Frame,
    Samples,
    encode_frame,
    encode_json_scalar,
)
from shopfloor.receiving.ingest import BoundedQueue, Ingest, Item
from shopfloor.receiving.sparkplug import DataType, encode_data, encode_dbirth
from shopfloor.scoring.pipeline import BankedSignal, Plant
from test_events import EVENTS, FakeLink  # the schema's validator, a recording publisher

RATE = 12_000.0
T0 = 1_750_000_000.0
SL = "{site=s,line=l}"  # the labels of a signal on plant/s/l/{asset}/{signal}

SUBSCRIPTIONS = f"""
[[subscriptions]]  # more specific than the next one, and listed first: it wins
topic = "plant/{{site}}/{{line}}/{{asset}}/temp"
signal = "temperature"

[[subscriptions]]
topic = "plant/{{site}}/{{line}}/{{asset}}/{{signal}}"
detector = {{ kind = "zscore", min_samples = 10 }}
alarm = {{ warmup = 10 }}

[[subscriptions]]
topic = "vib/{{asset}}/{{signal}}"
codec = "frame"
features = {{ sample_rate = {RATE} }}

[[subscriptions]]
topic = "spBv1.0/{{group}}/{{type}}/{{edge}}/{{asset}}"
codec = "sparkplug"

[[subscriptions]]
topic = "oven/{{site}}/reading"
asset = "oven-1"
signal = "temp"
"""


def make_config(extra: str = "", **agent: object) -> AgentConfig:
    settings = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in agent.items())
    return parse_agent_config(f"[agent]\n{settings}\n{extra}\n{SUBSCRIPTIONS}", source="t.toml")


def make_ingest(extra: str = "", **agent: object) -> tuple[Ingest, BoundedQueue]:
    config = make_config(extra, **agent)
    queue = BoundedQueue(config.agent.queue_size, config.agent.drop_policy)
    return Ingest(config, queue), queue


def drain(queue: BoundedQueue) -> list[Item]:
    return queue.get_batch(len(queue) + 1, timeout=0.0)


def item(n: int) -> Item:
    return Item(f"a/s{n}", 0, (), Samples(np.array([float(n)]), np.array([1.0])), 0.0)


# --- the bounded queue --------------------------------------------------------------------


def test_drop_oldest_keeps_the_newest_items_and_counts_every_drop() -> None:
    queue = BoundedQueue(10, "drop_oldest")
    for n in range(25):
        queue.put(item(n))
    assert len(queue) == 10
    assert queue.dropped == 15
    assert [i.signal for i in drain(queue)] == [f"a/s{n}" for n in range(15, 25)]


def test_drop_newest_keeps_the_oldest_items_and_counts_every_drop() -> None:
    queue = BoundedQueue(10, "drop_newest")
    for n in range(25):
        queue.put(item(n))
    assert queue.dropped == 15
    assert [i.signal for i in drain(queue)] == [f"a/s{n}" for n in range(10)]


def test_batches_are_fifo_and_bounded() -> None:
    queue = BoundedQueue(100)
    for n in range(7):
        queue.put(item(n))
    assert [i.signal for i in queue.get_batch(3, timeout=0.0)] == ["a/s0", "a/s1", "a/s2"]
    assert [i.signal for i in queue.get_batch(10, timeout=0.0)] == [f"a/s{n}" for n in range(3, 7)]
    assert queue.get_batch(10, timeout=0.01) == []  # empty: returns after the timeout
    assert queue.dropped == 0


def test_an_unknown_drop_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="drop_oldest or drop_newest"):
        BoundedQueue(10, "drop_random")


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest"])
def test_ingest_under_a_full_queue_never_blocks_and_drops_by_policy(policy: str) -> None:
    ingest, queue = make_ingest(queue_size=10, drop_policy=policy)
    for n in range(25):
        ingest.on_message("plant/s1/l1/press-1/force", encode_json_scalar(T0 + n, n), 0.0)
    assert queue.dropped == 15
    values = [float(i.data.values[0]) for i in drain(queue)]  # type: ignore[union-attr]
    assert values == [float(n) for n in (range(15, 25) if policy == "drop_oldest" else range(10))]
    assert not ingest.rejected  # a drop is the queue's count, not a rejection


# --- routing ------------------------------------------------------------------------------


def test_topics_route_to_their_subscription_with_labels_and_fixed_names() -> None:
    ingest, queue = make_ingest()
    ingest.on_message("plant/lyon/L2/press-4/force", b"1.5", T0)
    ingest.on_message("plant/lyon/L2/press-4/temp", b"80", T0)
    ingest.on_message("oven/lyon/reading", b"200", T0)
    ingest.on_message("vib/motor-1/accel", encode_frame(T0, RATE, np.ones(64)), T0)
    force, temp, oven, accel = drain(queue)
    # Every named level is part of the identity: line L2's press-4 is not line L3's.
    assert (force.signal, force.subscription) == ("press-4/force{site=lyon,line=L2}", 1)
    assert force.labels == (("site", "lyon"), ("line", "L2"))
    assert isinstance(force.data, Samples)
    assert force.data.timestamps.tolist() == [T0]  # a bare number is stamped on arrival
    assert (temp.signal, temp.subscription) == (  # the first match
        "press-4/temperature{site=lyon,line=L2}", 0)
    assert (oven.signal, oven.labels) == ("oven-1/temp{site=lyon}", (("site", "lyon"),))
    assert accel.signal == "motor-1/accel"
    assert isinstance(accel.data, Frame)
    assert accel.data.sample_rate == RATE
    assert set(ingest.admitted) == {"press-4/force{site=lyon,line=L2}",
                                    "press-4/temperature{site=lyon,line=L2}",
                                    "oven-1/temp{site=lyon}", "motor-1/accel"}
    assert ingest.received == 4
    assert not ingest.rejected


def test_topics_no_template_matches_are_counted_and_not_learned() -> None:
    ingest, queue = make_ingest()
    # What the filters deliver although no template matches: empty levels (``+`` matches an
    # empty level; a name cannot be empty), and anything a broadened subscription lets in.
    for topic in ("plant/lyon/L2//force", "plant/lyon/L2/press-4/", "oven//reading",
                  "plant/lyon/L2/press-4/force/extra", "elsewhere/x"):
        ingest.on_message(topic, b"1", T0)
    assert dict(ingest.rejected) == {"unknown_topic": 5}
    assert len(queue) == 0
    assert not len(ingest.admitted)


def test_names_that_are_not_signal_names_are_counted() -> None:
    ingest, queue = make_ingest()
    for level in ("press 4", "-press", "x" * 65, "press%4", "prêss"):
        ingest.on_message(f"plant/lyon/L2/{level}/force", b"1", T0)
    # A Sparkplug metric name becomes the signal name: a slash in it is no name; the valid
    # metric of the same message still goes through.
    birth = encode_dbirth(int(T0 * 1000), 0, [("Motor/Speed", 1, DataType.DOUBLE, 1.0),
                                              ("speed", 2, DataType.DOUBLE, 2.0)])
    ingest.on_message("spBv1.0/line1/DBIRTH/edge1/robot-1", birth, T0)
    assert dict(ingest.rejected) == {"bad_name": 6}
    sid = "robot-1/speed{group=line1,edge=edge1}"  # a Sparkplug device is its group's, edge's
    assert [i.signal for i in drain(queue)] == [sid]
    assert set(ingest.admitted) == {sid}


def test_the_signal_cap_counts_configured_signals_and_refuses_the_rest() -> None:
    static = '[[signals]]\nasset = "press-1"\nname = "force"\n'
    ingest, queue = make_ingest(static, max_signals=5, queue_size=100_000)
    assert set(ingest.admitted) == {"press-1/force"}
    for n in range(5000):
        ingest.on_message(f"plant/s/l/asset-{n // 100}/s{n % 100}", b"1", T0)
    assert len(ingest.admitted) == 5
    assert ingest.rejected == {"signal_cap": 4996}
    assert len(queue) == 4
    # Known signals keep flowing, the configured one included; new ones stay out.
    ingest.on_message("plant/s/l/asset-0/s0", b"2", T0)
    ingest.on_message("plant/s/l/press-1/force", b"2", T0)
    ingest.on_message("plant/s/l/asset-99/s99", b"2", T0)
    assert ingest.rejected == {"signal_cap": 4997}
    assert [i.signal for i in drain(queue)][-2:] == [f"asset-0/s0{SL}", "press-1/force"]


def test_a_closed_ingest_refuses_and_counts() -> None:
    ingest, queue = make_ingest()
    ingest.closed = True
    # Refused (False): the link leaves it unacknowledged, so the broker keeps it.
    assert ingest.on_message("plant/s/l/press-1/force", b"1", T0) is False
    assert ingest.deferred == 1
    assert dict(ingest.rejected) == {}
    assert ingest.received == 0
    assert len(queue) == 0


_FRAME = encode_frame(T0, RATE, np.sin(np.arange(256.0)), "float32")
_SCALAR = "plant/s/l/press-1/force"
_DEVICE = "spBv1.0/line1/DDATA/edge1/robot-1"
MALFORMED: dict[str, tuple[str, bytes]] = {
    "too_large": (_SCALAR, b" " * 1_048_576 + b"1"),
    "not_utf8": (_SCALAR, b"\xc3\x28"),
    "bad_json": (_SCALAR, b"{'value': 1}"),
    "too_deep": (_SCALAR, b'{"value": ' + b"[" * 9 + b"1" + b"]" * 9 + b"}"),
    "non_finite": (_SCALAR, b'{"value": Infinity}'),
    "wrong_type": (_SCALAR, b'{"value": false}'),
    "truncated": ("vib/motor-1/accel", _FRAME[:-1]),
    "bad_header": ("vib/motor-1/accel", _FRAME + b"\x00"),
    "bad_sparkplug": (_DEVICE, b"\x12\xff"),
    "unknown_alias": (_DEVICE, encode_data(int(T0 * 1000), 1, [(9, DataType.DOUBLE, 1.0)])),
    "empty": (_SCALAR, b"  "),
    "bad_quality": (_SCALAR, b'{"value": 1.0, "quality": "Bad_SensorFailure"}'),
}


def test_every_reject_reason_is_covered_here() -> None:
    assert set(MALFORMED) == set(REJECT_REASONS)


@pytest.mark.parametrize("reason", sorted(MALFORMED))
def test_each_malformed_payload_is_counted_by_its_reason(reason: str) -> None:
    ingest, queue = make_ingest()
    topic, payload = MALFORMED[reason]
    ingest.on_message(topic, payload, T0)
    ingest.on_message(_SCALAR, b"1.0", T0)  # the next good message is unaffected
    assert dict(ingest.rejected) == {reason: 1}
    assert [i.signal for i in drain(queue)] == ["press-1/force" + SL]


# --- the worker ---------------------------------------------------------------------------


def run(extra: str = "", banks: bool = True, **agent: object
        ) -> tuple[Ingest, Worker, list[AlarmChange], list[SignalStatus]]:
    config = make_config(extra, **agent)
    queue = BoundedQueue(config.agent.queue_size, config.agent.drop_policy)
    changes: list[AlarmChange] = []
    states: list[SignalStatus] = []
    worker = Worker(config, Plant(config.pipeline, banks=banks), queue, on_change=changes.append,
                    on_state=lambda s: states.append(SignalStatus(s.asset, s.name, s.labels,
                                                                  state=s.state)))
    return Ingest(config, queue), worker, changes, states


def work(worker: Worker) -> int:
    batches = 0
    while worker.run_once(timeout=0.0):
        batches += 1
    return batches


def reference_scores(config: AgentConfig, sid: str, values: np.ndarray) -> np.ndarray:
    """The scores of a fresh pipeline for ``sid`` fed ``values`` alone, in one batch."""
    sub = 1 if sid.startswith("press") else 2
    asset, name = sid.split("/")
    pipe = Plant(config.pipeline).add_signal(config.subscriptions[sub].signal_spec(asset, name))
    return pipe.process(values).result.score


def test_interleaved_signals_are_grouped_and_each_keeps_its_order() -> None:
    ingest, worker, _, _ = run()
    rng = np.random.default_rng(1)
    series = {sid: rng.standard_normal(40) + k for k, sid in enumerate(
        ("press-1/force", "press-1/load", "press-2/force"))}
    for i in range(40):
        for sid, values in series.items():
            ingest.on_message(f"plant/s/l/{sid}", encode_json_scalar(T0 + i, values[i]), T0)
    assert work(worker) == 1  # one batch of 120 items
    assert worker.processed == 120
    for sid, values in series.items():
        status = worker.status[sid + SL]
        assert status.messages == 40
        assert status.last_time == T0 + 39
        assert worker.plant.signals[sid + SL].scored == 40
        # Grouped per signal in order: the same scores as the signal's values alone.
        assert status.score == reference_scores(worker.config, sid, values)[-1]


def test_frames_of_different_lengths_in_one_batch_are_all_scored() -> None:
    ingest, worker, _, _ = run()
    rng = np.random.default_rng(2)
    lengths = [512, 512, 1024, 512, 2048, 2048]
    for i, n in enumerate(lengths):
        ingest.on_message("vib/motor-1/accel",
                          encode_frame(T0 + i, RATE, rng.standard_normal(n), "float32"), T0)
    assert work(worker) == 1
    pipe = worker.plant.signals["motor-1/accel"]
    assert pipe.scored == len(lengths)
    assert not pipe.rejected
    assert worker.status["motor-1/accel"].last_time == T0 + len(lengths) - 1


def test_frames_at_another_sample_rate_are_counted_and_only_they_are_refused() -> None:
    ingest, worker, _, _ = run()
    rng = np.random.default_rng(3)
    rates = [RATE, RATE, RATE / 2, RATE, RATE / 2, RATE]  # one length: one run of frames
    for i, rate in enumerate(rates):
        ingest.on_message("vib/motor-1/accel",
                          encode_frame(T0 + i, rate, rng.standard_normal(512), "float32"), T0)
    work(worker)
    pipe = worker.plant.signals["motor-1/accel"]
    assert dict(pipe.rejected) == {"sample_rate_mismatch": 2}
    assert pipe.scored == 4


def test_a_configured_scalar_signal_fed_frames_counts_a_kind_mismatch() -> None:
    static = '[[signals]]\nasset = "motor-1"\nname = "accel"\n'  # scalar by default
    ingest, worker, _, _ = run(static)
    ingest.on_message("vib/motor-1/accel", encode_frame(T0, RATE, np.ones(64)), T0)
    ingest.on_message("plant/s/l/motor-1/accel", b"1.0", T0)
    work(worker)
    pipe = worker.plant.signals["motor-1/accel"]
    assert dict(pipe.rejected) == {"kind_mismatch": 1}
    assert pipe.scored == 1


ASSET = """
[[signals]]
asset = "press-1"
name = "force"

[[signals]]
asset = "press-1"
name = "pressure"

[[assets]]
name = "press-1"
detector = { kind = "mahalanobis", min_samples = 30 }
alarm = { warmup = 30 }
"""


def test_an_asset_gets_one_row_per_distinct_timestamp_of_its_signals() -> None:
    ingest, worker, _, _ = run(ASSET)
    for t in (1, 2, 3):
        ingest.on_message("plant/s/l/press-1/force", encode_json_scalar(T0 + t, 10.0 + t), T0)
    for t in (2, 3, 4):
        ingest.on_message("plant/s/l/press-1/pressure", encode_json_scalar(T0 + t, 50.0 + t), T0)
    work(worker)
    asset = worker.plant.assets["press-1"]
    # Rows at t = 1..4; at t = 1 pressure has never had a value, so that row is not scored;
    # at t = 4 force holds its value from t = 3.
    assert asset.scored == 3
    assert asset.hold.tolist() == [13.0, 54.0]
    ingest.on_message("plant/s/l/press-1/pressure", encode_json_scalar(T0 + 5, 55.0), T0)
    work(worker)
    assert asset.scored == 4  # the next batch goes on from the held values


def test_alarm_changes_carry_what_an_event_needs_and_states_are_reported() -> None:
    ingest, worker, changes, states = run()
    values = [*(100.0 + np.random.default_rng(4).standard_normal(30)), *([150.0] * 3)]
    for i, v in enumerate(values):
        ingest.on_message("plant/lyon/L2/press-1/force", encode_json_scalar(T0 + i, v), T0)
    work(worker)
    [change] = changes
    assert (change.kind, change.scope, change.asset, change.signal) == (
        "raised", "signal", "press-1", "force")
    assert change.value == 150.0
    assert change.features is None
    assert change.ts == T0 + 32
    assert change.score > change.threshold
    assert change.labels == {"site": "lyon", "line": "L2"}
    assert [s.state.name for s in states] == ["ACTIVE"]  # warming_up -> active in one batch
    doc = event_document(change, "agent-1")
    assert not list(EVENTS.iter_errors(doc))


def test_an_asset_alarm_names_the_signal_that_broke_the_pattern() -> None:
    ingest, worker, changes, _ = run(ASSET)
    rng = np.random.default_rng(5)
    load = rng.standard_normal(60)
    for i in range(60):
        # Pressure follows force; at the end force jumps while pressure does not follow.
        force = 10.0 + load[i] + (8.0 if i >= 55 else 0.0)
        pressure = 50.0 + 2.0 * load[i] + 0.1 * rng.standard_normal()
        ingest.on_message("plant/s/l/press-1/force", encode_json_scalar(T0 + i, force), T0)
        ingest.on_message("plant/s/l/press-1/pressure", encode_json_scalar(T0 + i, pressure), T0)
    work(worker)
    asset_changes = [c for c in changes if c.scope == "asset"]
    assert asset_changes, changes
    change = asset_changes[0]
    assert (change.kind, change.asset, change.signal) == ("raised", "press-1", None)
    assert change.top == "force"
    assert change.features is not None
    assert set(change.features) == {"force", "pressure"}
    assert all(math.isfinite(v) for v in change.features.values())
    assert not list(EVENTS.iter_errors(event_document(change, "agent-1")))


# press-1/force, with an alarm that adopts a shift lasting 20 s of signal time as the new normal.
ADAPTING = """
[[signals]]
asset = "press-1"
name = "force"
detector = { kind = "zscore", min_samples = 10 }
alarm = { warmup = 30, adapt_after = 20.0 }
"""
# The level moves by 12 sigma at sample 150 and stays there; the likelihood has had the 100
# scores it needs for an opinion by then.
N, STEP_AT, STEP = 200, 150, 12.0


@pytest.mark.parametrize("batch_max", [10_000, 1], ids=["one batch", "a sample per batch"])
def test_a_sustained_step_is_raised_then_adopted_and_the_events_say_so(batch_max: int) -> None:
    ingest, worker, changes, states = run(ADAPTING, batch_max=batch_max)
    link = FakeLink()
    sink = EventSink(link)

    def publish(change: AlarmChange) -> None:  # what the agent does with each change
        changes.append(change)
        assert sink.alarm(change)

    worker.on_change = publish
    rng = np.random.default_rng(7)
    values = 100.0 + rng.standard_normal(N) + np.where(np.arange(N) >= STEP_AT, STEP, 0.0)
    for i, v in enumerate(values):  # one sample a second
        ingest.on_message("plant/lyon/L2/press-1/force", encode_json_scalar(T0 + i, v), T0)
    work(worker)
    assert [c.kind for c in changes] == ["raised", "baseline_adopted"]
    raised, adopted = changes
    # The first stepped sample is the first exceedance: the alarm's onset, for both events.
    assert raised.onset == adopted.onset == T0 + STEP_AT
    assert raised.ts == T0 + STEP_AT + 2  # raise_after = 3 exceedances
    assert adopted.ts == T0 + STEP_AT + 20  # adapt_after = 20 s of signal time after the onset
    assert adopted.value == values[STEP_AT + 20]
    assert adopted.score > adopted.threshold  # still shifted: adopted, not cleared
    # Each event carries the likelihood of its own sample: the one a lone pipeline computes
    # there for the same samples and times, however the worker batched them.
    alone = Plant(worker.config.pipeline).signals["press-1/force"]
    reference = alone.process(values, T0 + np.arange(N, dtype=float)).result.likelihood
    assert raised.likelihood == reference[STEP_AT + 2]
    assert adopted.likelihood == reference[STEP_AT + 20]
    # News at the raise; less so twenty seconds into the same shift; and once the shift is
    # the baseline the detector re-warmed on, no news at all.
    assert 0.0 <= adopted.likelihood < raised.likelihood <= 1.0
    assert raised.likelihood > 0.99
    status = worker.status["press-1/force"]
    assert (status.alarms, status.adopted, status.onset) == (1, 1, T0 + STEP_AT)
    assert status.state.name == "NORMAL"
    assert status.likelihood == reference[-1] < 0.5
    assert states[-1].state.name == "NORMAL"  # the retained state follows the adoption
    # What operators receive: a clear that says why, with the raise's severity and its onset.
    docs = [json.loads(payload) for _, payload, _, _ in link.sent]
    for doc in docs:
        EVENTS.validate(doc)
    assert [(d["kind"], d["event"]) for d in docs] == [
        ("raised", "raised"), ("cleared", "baseline_adopted")]
    assert docs[1]["severity"] == docs[0]["severity"]
    assert docs[0]["onset"] == docs[1]["onset"] == "2025-06-15T15:09:10.000Z"  # T0 + 150 s
    assert docs[1]["value"] == adopted.value
    assert (docs[0]["likelihood"], docs[1]["likelihood"]) == (raised.likelihood,
                                                              adopted.likelihood)


def test_an_asset_event_reports_the_held_values_it_scored() -> None:
    ingest, worker, changes, _ = run(ASSET)
    rng = np.random.default_rng(6)
    load = rng.standard_normal(60)
    for i in range(60):
        force = 10.0 + load[i] + (8.0 if i >= 55 else 0.0)
        pressure = 50.0 + 2.0 * load[i] + 0.1 * rng.standard_normal()
        ingest.on_message("plant/s/l/press-1/force", encode_json_scalar(T0 + i, force), T0)
        if i < 55:  # pressure goes quiet when the fault starts: its last value is held
            ingest.on_message("plant/s/l/press-1/pressure", encode_json_scalar(T0 + i, pressure),
                              T0)
    work(worker)
    [change] = [c for c in changes if c.scope == "asset" and c.kind == "raised"]
    assert change.features is not None
    held = 50.0 + 2.0 * load[54]
    assert change.features["pressure"] == pytest.approx(held, abs=0.5)  # held, not null


def test_sparkplug_message_types_are_not_labels() -> None:
    ingest, _, _, _ = run()
    birth = encode_dbirth(int(T0 * 1000), 0, [("temp", 1, DataType.DOUBLE, 40.0)])
    ingest.on_message("spBv1.0/line1/DBIRTH/edge1/robot-1", birth, T0)
    [queued] = drain(ingest.queue)
    assert dict(queued.labels) == {"group": "line1", "edge": "edge1"}


def test_a_long_batch_keeps_the_heartbeat_going_and_scores_as_one_call() -> None:
    # 1,000-value JSON batches with an alarm active (the per-sample path) left 34.7 s between
    # watchdog pings: the worker now beats after every CHUNK_SAMPLES of pipeline work.
    from shopfloor.agent.worker import CHUNK_SAMPLES

    ingest, worker, changes, _ = run()
    beats: list[int] = []
    worker.heartbeat = lambda: beats.append(1)
    rng = np.random.default_rng(2)
    n = 5 * CHUNK_SAMPLES // 1000
    values = 20.0 + rng.standard_normal(1000 * n)
    values[3000:9000] += 9.0  # an alarm: the chain steps sample by sample through it
    for k in range(n):
        part = values[1000 * k : 1000 * (k + 1)]
        payload = json.dumps({"ts": T0 + 1000 * k, "rate": 1.0, "values": part.tolist()})
        ingest.on_message("plant/s/l/press-2/force", payload.encode(), T0)
    assert work(worker) == 1  # one batch of every message
    assert len(beats) >= len(values) // CHUNK_SAMPLES
    got = worker.plant.signals["press-2/force" + SL].get_state()
    reference = Plant(worker.config.pipeline).add_signal(
        worker.config.subscriptions[1].signal_spec("press-2", "force"))
    reference.process(values, T0 + np.arange(len(values), dtype=float))
    assert got["scored"] == reference.get_state()["scored"] == len(values)
    np.testing.assert_array_equal(got["monitor"]["detector"]["stats"],
                                  reference.get_state()["monitor"]["detector"]["stats"])
    assert any(c.kind == "raised" for c in changes)


def test_the_batch_duration_histogram_reaches_a_minute() -> None:
    from shopfloor.agent.metrics import DURATION_BUCKETS

    assert DURATION_BUCKETS[-1] >= 60.0  # WatchdogSec=30: slow batches must show


def test_a_redelivered_sample_is_counted_once_and_an_older_one_is_dropped() -> None:
    # A QoS 1 duplicate after a clean broker restart was scored twice.
    ingest, worker, _, _ = run()
    topic = "plant/s/l/press-3/force"
    for t, v in ((1, 10.0), (2, 11.0), (3, 12.0)):
        ingest.on_message(topic, encode_json_scalar(T0 + t, v), T0)
    work(worker)
    ingest.on_message(topic, encode_json_scalar(T0 + 3, 12.0), T0)  # redelivered
    ingest.on_message(topic, encode_json_scalar(T0 + 2, 11.5), T0)  # older than scored
    ingest.on_message(topic, encode_json_scalar(T0 + 3, 12.5), T0)  # same time, new value
    ingest.on_message(topic, encode_json_scalar(T0 + 4, 13.0), T0)
    work(worker)
    pipe = worker.plant.signals["press-3/force" + SL]
    assert pipe.scored == 5
    assert pipe.rejected["duplicate"] == 1
    assert pipe.rejected["out_of_order"] == 1


def test_a_redelivered_frame_is_counted_once() -> None:
    ingest, worker, _, _ = run()
    rng = np.random.default_rng(6)
    frames = [encode_frame(T0 + k, RATE, rng.standard_normal(1024), "float32")
              for k in range(3)]
    for payload in (*frames, frames[2], frames[0]):
        ingest.on_message("vib/motor-9/accel", payload, T0)
        work(worker)
    pipe = worker.plant.signals["motor-9/accel"]
    assert pipe.scored == 3
    assert pipe.rejected["duplicate"] == 1
    assert pipe.rejected["out_of_order"] == 1


@pytest.mark.parametrize("banks", [False, True], ids=["pipelines", "banks"])
def test_one_signal_that_fails_costs_only_its_own_messages_of_the_batch(
    monkeypatch: pytest.MonkeyPatch, banks: bool,
) -> None:
    ingest, worker, _, _ = run(banks=banks)
    for t in range(3):
        ingest.on_message("plant/s/l/press-5/force", encode_json_scalar(T0 + t, 1.0), T0)
    work(worker)
    broken = worker.plant.signals["press-5/force" + SL]

    def fail(*args: object) -> None:
        raise FloatingPointError("a value no check foresaw")

    monkeypatch.setattr(broken, "process", fail)
    if banks:
        # The bank's path fails before its bank moved: each signal takes its own path,
        # where only the broken one fails.
        import shopfloor.agent.worker_banks as worker_banks
        monkeypatch.setattr(worker_banks, "order_steps", fail)
    for t in range(3, 6):  # one batch: the broken signal's messages between the others'
        ingest.on_message("plant/s/l/press-6/force", encode_json_scalar(T0 + t, 1.0), T0)
        ingest.on_message("plant/s/l/press-5/force", encode_json_scalar(T0 + t, 1.0), T0)
        ingest.on_message("plant/s/l/press-7/force", encode_json_scalar(T0 + t, 1.0), T0)
    assert work(worker) == 1
    assert worker.signal_errors == 1
    assert worker.plant.signals["press-6/force" + SL].scored == 3
    assert worker.plant.signals["press-7/force" + SL].scored == 3
    assert worker.processed == 12


def test_a_bank_that_fails_costs_its_signals_this_batch_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest, worker, _, _ = run()
    for t in range(3):
        ingest.on_message("plant/s/l/press-5/force", encode_json_scalar(T0 + t, 1.0), T0)
        ingest.on_message("plant/s/l/press-6/force", encode_json_scalar(T0 + t, 1.0), T0)
    work(worker)
    pipe = worker.plant.signals["press-5/force" + SL]
    assert isinstance(pipe, BankedSignal)

    def fail(*args: object) -> None:
        raise FloatingPointError("a bug in the bank")

    with monkeypatch.context() as patch:
        patch.setattr(pipe.bank, "process", fail)
        for t in range(3, 6):
            ingest.on_message("plant/s/l/press-5/force", encode_json_scalar(T0 + t, 1.0), T0)
            ingest.on_message("plant/s/l/press-6/force", encode_json_scalar(T0 + t, 1.0), T0)
        assert work(worker) == 1
    assert worker.signal_errors == 2  # each signal of the bank, once
    for t in range(6, 9):  # the next batch is scored as usual
        ingest.on_message("plant/s/l/press-5/force", encode_json_scalar(T0 + t, 1.0), T0)
    work(worker)
    assert pipe.scored == 6


def test_a_redelivered_tail_of_a_batch_is_not_scored_again() -> None:
    # The fault suite's finding: redelivering 5 and 6 after 6 compared 6's value with 5's.
    ingest, worker, _, _ = run()
    topic = "plant/s/l/press-8/force"
    for t in range(1, 7):
        ingest.on_message(topic, encode_json_scalar(T0 + t, 10.0 + t), T0)
    work(worker)
    for t in (5, 6):
        ingest.on_message(topic, encode_json_scalar(T0 + t, 10.0 + t), T0)
    work(worker)
    pipe = worker.plant.signals["press-8/force" + SL]
    assert pipe.scored == 6
    assert pipe.rejected["out_of_order"] == 1
    assert pipe.rejected["duplicate"] == 1


def test_a_sample_stamped_far_ahead_of_the_clock_cannot_blind_its_signal() -> None:
    # {"ts": 4102444800} (year 2100) was scored, and every later sample was out of order.
    ingest, worker, _, _ = run()
    topic = "plant/s/l/press-9/force"
    now = time.time()
    ingest.on_message(topic, encode_json_scalar(now - 10, 1.0), now)
    ingest.on_message(topic, encode_json_scalar(4102444800.0, 1.0), now)
    for k in range(5):
        ingest.on_message(topic, encode_json_scalar(now - 9 + k, 1.0), now)
    work(worker)
    pipe = worker.plant.signals["press-9/force" + SL]
    assert pipe.rejected["future"] == 1
    assert pipe.scored == 6
