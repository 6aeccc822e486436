"""The simulated plant: deterministic messages, faults where the ground truth says, the agent
config that listens to it, the command line, and the publisher's bounds."""

from __future__ import annotations

import argparse
import itertools
import math
import signal
import subprocess
import sys
import threading
import tomllib
from collections import defaultdict

import numpy as np
import pytest

from broker import Inbox, LinkFactory, Mosquitto, link_settings
from shopfloor.agent.config import parse_agent_config
from shopfloor.errors import UserError
from shopfloor.receiving.codecs import Frame, Limits, Rejected, Samples, decode
from shopfloor.scoring.features import BEARING_6205_2RS, FrameFeatures
from shopfloor.scoring.pipeline import SignalPipeline
from shopfloor.tools.simulate import (
    FRAME_SCALE,
    FRAME_TOPIC,
    SCALAR_TOPIC,
    Fault,
    Plant,
    add_parser,
    agent_config_toml,
    plant_from_args,
    publish,
    run,
    standard_faults,
)

T0 = 1_767_225_600.0  # 2026-01-01 UTC
FAULTS = standard_faults("motor-1", 60.0) + standard_faults("station-1", 60.0)


def small(**kwargs: object) -> Plant:
    """A plant with short frames, so that tests stay fast."""
    args: dict[str, object] = {"sample_rate": 4096.0, "frame_len": 512, "seed": 5}
    args.update(kwargs)
    return Plant(**args)  # type: ignore[arg-type]


def by_topic(plant: Plant, duration: float) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = defaultdict(list)
    for topic, payload, _ in plant.messages(T0, duration):
        out[topic].append(payload)
    return out


def decoded(topic: str, payload: bytes) -> Samples | Frame:
    result = decode("frame" if topic.endswith("/frame") else "json", payload, 0.0, Limits())
    assert not isinstance(result, Rejected), result
    assert len(result) == 1
    data = result[0].data
    assert not isinstance(data, Rejected), data
    return data


def series(plant: Plant, duration: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per signal id: (offsets, values (n,) or frames (n, L))."""
    times: dict[str, list[float]] = defaultdict(list)
    values: dict[str, list[object]] = defaultdict(list)
    for m in plant.measurements(duration):
        times[m.signal.id].append(m.offset)
        values[m.signal.id].append(m.value)
    return {k: (np.array(times[k]), np.array(values[k])) for k in times}


# --- generation ---------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_messages_and_another_seed_others() -> None:
    a = list(small(faults=FAULTS).messages(T0, 30.0))
    assert a == list(small(faults=FAULTS).messages(T0, 30.0))
    b = list(small(faults=FAULTS, seed=6).messages(T0, 30.0))
    assert [t for t, _, _ in a] == [t for t, _, _ in b]
    assert all(pa != pb for (_, pa, _), (_, pb, _) in zip(a, b, strict=True))


def test_adding_signals_changes_no_other_signal() -> None:
    base = by_topic(small(faults=FAULTS), 40.0)
    bigger = by_topic(small(faults=FAULTS, vibration_assets=3, quality_assets=4,
                            extra_signals=3), 40.0)
    assert len(bigger) == len(base) + 1 + 2 * 2 + 3
    for topic, payloads in base.items():
        assert bigger[topic] == payloads, topic


def test_a_longer_run_starts_with_the_shorter_one() -> None:
    short = list(small().messages(T0, 17.3))
    long = list(small().messages(T0, 70.0))
    assert long[: len(short)] == short
    assert len(long) > len(short)


def test_messages_come_in_timestamp_order_at_the_configured_rates() -> None:
    plant = small(frame_rate=5.0, parts_per_second=3.0, extra_signals=2)
    msgs = list(plant.messages(T0, 20.0))
    stamps = [decoded(t, p) for t, p, _ in msgs]
    times = [d.timestamp if isinstance(d, Frame) else float(d.timestamps[0]) for d in stamps]
    assert times == sorted(times)
    assert T0 <= times[0] < times[-1] < T0 + 20.0
    counts: dict[str, int] = defaultdict(int)
    for topic, _, qos in msgs:
        counts[topic] += 1
        assert qos == 1
    assert counts["plant/site1/line1/motor-2/accel/frame"] == 100
    assert counts["plant/site1/line1/station-1/torque_nm"] == 60
    assert counts["plant/site1/line1/aux/gauge_002"] == 60
    assert len(msgs) == round(plant.message_rate * 20.0)


def test_payloads_decode_into_what_was_generated() -> None:
    plant = small(faults=FAULTS)
    for m in plant.measurements(70.0):
        topic, payload, _ = plant.encode(m, T0)
        template = FRAME_TOPIC if m.signal.kind == "frame" else SCALAR_TOPIC
        assert topic == template.format(site="site1", line="line1", asset=m.signal.asset,
                                        signal=m.signal.signal)
        data = decoded(topic, payload)
        if isinstance(m.value, np.ndarray):
            assert isinstance(data, Frame)
            assert data.timestamp == T0 + m.offset
            assert data.sample_rate == plant.sample_rate
            # int16 at FRAME_SCALE: off by at most half a step (the scale travels as float32).
            np.testing.assert_allclose(data.samples, m.value, rtol=0, atol=FRAME_SCALE * 0.5001)
        else:
            assert isinstance(data, Samples)
            assert data.timestamps.tolist() == [T0 + m.offset]
            assert data.values.tolist() == [m.value]  # repr round-trips a float exactly


def test_a_strong_defect_saturates_at_int16_full_scale_instead_of_failing() -> None:
    plant = small(faults=(Fault("motor-1", "accel", "bearing", 0.0, size=50.0),))
    frames = series(plant, 5.0)["motor-1/accel"][1]
    assert np.abs(frames).max() == pytest.approx(32767 * FRAME_SCALE)
    for topic, payload, _ in plant.messages(T0, 5.0):
        decoded(topic, payload)


# --- faults -------------------------------------------------------------------------------


def test_quality_faults_change_values_only_from_their_start() -> None:
    healthy = series(small(), 200.0)
    faulty = series(small(faults=FAULTS), 200.0)
    truth = small(faults=FAULTS).ground_truth(T0)
    assert truth == {"motor-1/accel": T0 + 60.0, "station-1/diameter_mm": T0 + 60.0,
                     "station-1/torque_nm": T0 + 60.0}
    for sid in healthy:
        t, h = healthy[sid]
        f = faulty[sid][1]
        if sid not in truth:
            np.testing.assert_array_equal(f, h)
        elif not sid.endswith("accel"):
            np.testing.assert_array_equal(f[t < 60.0], h[t < 60.0])
    t, h = healthy["station-1/diameter_mm"]
    drift = (faulty["station-1/diameter_mm"][1] - h) / 0.005
    # 8 sigma over a minute, then it stays.
    np.testing.assert_allclose(drift, 8.0 * np.clip((t - 60.0) / 60.0, 0.0, 1.0), atol=1e-6)
    t, h = healthy["station-1/torque_nm"]
    extra = (faulty["station-1/torque_nm"][1] - h) / 0.15
    after = extra[t >= 60.0]
    np.testing.assert_allclose(np.sort(np.unique(np.round(after, 6))), [-4.0, 4.0, 12.0])
    outliers = np.mean(np.abs(after - 4.0) > 1.0)
    assert 0.02 < outliers < 0.09, outliers  # 5 % of parts, 280 parts


def test_the_bearing_defect_grows_in_the_faulty_motor_only() -> None:
    plant = small(faults=FAULTS, sample_rate=12_000.0, frame_len=2048)
    data = series(plant, 150.0)
    ff = FrameFeatures(plant.sample_rate, shaft_hz=29.95, defect_orders=BEARING_6205_2RS,
                       stats=("rms", "kurtosis"))
    col = {n: i for i, n in enumerate(ff.names)}
    for sid, grows in (("motor-1/accel", True), ("motor-2/accel", False)):
        t, frames = data[sid]
        features = ff.compute(frames).values
        before = features[t < 60.0].mean(axis=0)
        after = features[t >= 120.0].mean(axis=0)  # past the one-minute ramp
        for name in ("env_bpfo", "kurtosis"):
            ratio = after[col[name]] / before[col[name]]
            assert bool(ratio > 1.25) == grows, (sid, name, ratio)
        # Impacts at the outer-race frequency, not at the inner race's.
        if grows:
            assert after[col["env_bpfo"]] > 3 * after[col["env_bpfi"]]


def test_fault_and_plant_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="fault kind"):
        Fault("motor-1", "accel", "rust", 1.0, 1.0)
    with pytest.raises(ValueError, match="ramp"):
        Fault("motor-1", "accel", "bearing", 1.0, 1.0, ramp=-1.0)
    with pytest.raises(ValueError, match="no such signal"):
        Plant(faults=standard_faults("motor-3", 1.0))
    with pytest.raises(ValueError, match="frame signals only"):
        Plant(faults=(Fault("station-1", "torque_nm", "bearing", 1.0, 1.0),))
    with pytest.raises(ValueError, match="does not fit"):
        Plant(faults=(Fault("motor-1", "accel", "drift", 1.0, 1.0),))
    with pytest.raises(ValueError, match="motor-N or station-N"):
        standard_faults("aux", 1.0)
    for bad in ({"frame_len": 8}, {"sample_rate": 100.0}, {"vibration_assets": -1},
                {"frame_rate": 0.0}, {"qos": 2}, {"site": "a/b"}, {"seed": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Plant(**bad)


# --- the agent config ---------------------------------------------------------------------


def test_agent_config_parses_and_routes_every_topic_to_one_subscription() -> None:
    plant = small(extra_signals=2, qos=0, site="berlin", line="l-2")
    text = agent_config_toml(plant, "broker.local", 1884, metrics_port=9999)
    raw = tomllib.loads(text)
    assert raw["mqtt"]["host"] == "broker.local"
    config = parse_agent_config(text, source="simulated")
    assert config.mqtt.port == 1884
    assert config.metrics.port == 9999
    frames, scalars = config.subscriptions
    assert (frames.codec, frames.kind, frames.qos) == ("frame", "frame", 0)
    assert frames.features["sample_rate"] == plant.sample_rate
    assert frames.features["defect_orders"] == dict(BEARING_6205_2RS)
    assert (scalars.codec, scalars.kind) == ("json", "scalar")
    for s in plant.signals:
        matches = [(sub, sub.template.match(s.topic)) for sub in config.subscriptions]
        hits = [(sub, m) for sub, m in matches if m is not None]
        assert len(hits) == 1, s.id
        sub, fields = hits[0]
        assert (fields["asset"], fields["signal"]) == (s.asset, s.signal)
        assert sub.kind == s.kind
    # A plant without frames needs no frame subscription (and the other way round).
    only_quality = parse_agent_config(agent_config_toml(small(vibration_assets=0)))
    assert [s.codec for s in only_quality.subscriptions] == ["json"]
    only_frames = parse_agent_config(agent_config_toml(small(quality_assets=0)))
    assert [s.codec for s in only_frames.subscriptions] == ["frame"]


def test_the_agent_config_alarms_on_the_faults_and_on_nothing_else() -> None:
    # The pipelines the agent would build for these signals, run offline over the same data.
    plant = Plant(seed=3, vibration_assets=2, quality_assets=2, extra_signals=2,
                  faults=standard_faults("motor-1", 120.0) + standard_faults("station-1", 120.0))
    config = parse_agent_config(agent_config_toml(plant))
    subs = {s.kind: s for s in config.subscriptions}
    truth = plant.ground_truth()
    for sid, (t, values) in series(plant, 400.0).items():
        asset, name = sid.split("/")
        pipe = SignalPipeline(subs["frame" if values.ndim == 2 else "scalar"]
                              .signal_spec(asset, name))
        raised = t[pipe.process(values).result.raised]
        if sid in truth:
            assert raised.size >= 1, sid
            assert truth[sid] <= raised[0] < truth[sid] + 120.0, (sid, raised)
        else:
            assert raised.size == 0, (sid, raised)


# --- the command line ---------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopfloor")
    add_parser(p.add_subparsers(dest="command"))
    return p


def test_defaults_describe_the_documented_plant() -> None:
    args = parser().parse_args(["simulate"])
    plant = plant_from_args(args)
    assert plant == Plant(
        faults=standard_faults("motor-1", 120.0) + standard_faults("station-1", 120.0))
    assert (args.host, args.port, args.speed, args.duration) == ("127.0.0.1", 1883, 1.0, None)
    healthy = plant_from_args(parser().parse_args(["simulate", "--fault-asset", "none"]))
    assert healthy.faults == ()
    one = parser().parse_args(["simulate", "--fault-asset", "station-2", "--fault-start", "30",
                               "--speed", "max", "--extra-signals", "4"])
    plant = plant_from_args(one)
    assert set(plant.ground_truth()) == {"station-2/diameter_mm", "station-2/torque_nm"}
    assert one.speed == math.inf
    assert len(plant.signals) == 2 + 4 + 4


@pytest.mark.parametrize("argv", [
    ["--port", "0"], ["--port", "x"], ["--duration", "0"], ["--duration", "-5"],
    ["--speed", "0"], ["--speed", "fast"], ["--frame-len", "32"], ["--sample-rate", "nan"],
    ["--frame-rate", "inf"], ["--vibration-assets", "-1"], ["--qos", "2"], ["--rate", "0"],
    ["--max-messages", "0"], ["--parts-per-second", "0"], ["--fault-start", "-1"],
])
def test_bad_option_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["simulate", *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_an_unknown_fault_asset_is_a_user_error() -> None:
    args = parser().parse_args(["simulate", "--fault-asset", "motor-3"])
    with pytest.raises(UserError, match="--fault-asset motor-3"):
        run(args)


def test_print_config_writes_the_agent_config(capsys: pytest.CaptureFixture[str]) -> None:
    args = parser().parse_args(["simulate", "--print-config", "--port", "1999",
                                "--sample-rate", "25600"])
    assert run(args) == 0
    config = parse_agent_config(capsys.readouterr().out)
    assert config.mqtt.port == 1999
    assert config.subscriptions[0].features["sample_rate"] == 25600.0


# --- publishing ---------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_publish_gives_up_on_a_broker_that_never_answers() -> None:
    with pytest.raises(ConnectionError, match="no MQTT broker"):
        publish(small(), "127.0.0.1", free_port(), connect_timeout=0.3, max_messages=1)


def test_publish_stops_at_once_when_asked_before_connecting() -> None:
    stop = threading.Event()
    stop.set()
    report = publish(small(), "127.0.0.1", free_port(), stop=stop, connect_timeout=5.0)
    assert (report.messages, report.stopped_by) == (0, "stop")


@pytest.mark.integration
def test_publish_delivers_the_generated_messages(
    mosquitto: Mosquitto, make_link: LinkFactory
) -> None:
    plant = small(faults=FAULTS, extra_signals=2)
    inbox = Inbox()
    link = make_link(link_settings(mosquitto, "sim-rx"), [("plant/#", 1)], inbox)
    assert link.wait_ready(10)
    report = publish(plant, mosquitto.host, mosquitto.port, t0=T0, max_messages=300,
                     realtime=False)
    assert (report.messages, report.stopped_by, report.lost) == (300, "max_messages", 0)
    sent = list(itertools.islice(plant.measurements(), 300))
    assert report.simulated_seconds == sent[-1].offset
    wanted: dict[str, list[bytes]] = defaultdict(list)
    for m in sent:
        topic, payload, _ = plant.encode(m, T0)
        wanted[topic].append(payload)
    assert report.payload_bytes == sum(len(p) for ps in wanted.values() for p in ps)
    assert inbox.wait_for(300)
    # MQTT keeps the order within a topic; compare topic by topic.
    received: dict[str, list[bytes]] = defaultdict(list)
    for topic, payload, _ in inbox.messages:
        received[topic].append(payload)
    assert received == wanted


@pytest.mark.integration
def test_publish_paces_by_the_plant_clock_and_the_rate_limit(mosquitto: Mosquitto) -> None:
    plant = small()
    paced = publish(plant, mosquitto.host, mosquitto.port, duration=3.0, speed=30.0)
    assert (paced.messages, paced.stopped_by) == (round(plant.message_rate * 3.0), "duration")
    # Never ahead of the plant's clock (a lower bound only: a slow machine may lag behind).
    assert paced.wall_seconds >= paced.simulated_seconds / 30.0
    limited = publish(plant, mosquitto.host, mosquitto.port, max_messages=40, realtime=False,
                      rate_limit=400.0)
    assert limited.messages == 40
    assert limited.wall_seconds >= 39 / 400.0


@pytest.mark.integration
def test_a_stop_event_ends_an_endless_run(mosquitto: Mosquitto, make_link: LinkFactory) -> None:
    inbox = Inbox()
    link = make_link(link_settings(mosquitto, "sim-stop"), [("plant/#", 1)], inbox)
    assert link.wait_ready(10)
    stop = threading.Event()

    def stop_after_50() -> None:
        inbox.wait_for(50)
        stop.set()

    watcher = threading.Thread(target=stop_after_50)
    watcher.start()
    report = publish(small(), mosquitto.host, mosquitto.port, speed=100.0, stop=stop)
    watcher.join()
    assert report.stopped_by == "stop"
    assert report.messages >= 50


@pytest.mark.integration
def test_the_command_ends_cleanly_on_sigterm(mosquitto: Mosquitto, make_link: LinkFactory
                                             ) -> None:
    inbox = Inbox()
    link = make_link(link_settings(mosquitto, "sim-cli"), [("plant/#", 1)], inbox)
    assert link.wait_ready(10)
    script = ("import argparse, sys\n"
              "from shopfloor.tools.simulate import add_parser, run\n"
              "p = argparse.ArgumentParser()\n"
              "add_parser(p.add_subparsers())\n"
              "sys.exit(run(p.parse_args(sys.argv[1:])))\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", script, "simulate", "--port", str(mosquitto.port),
         "--speed", "20", "--frame-len", "256"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert inbox.wait_for(20, timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped by stop" in err
