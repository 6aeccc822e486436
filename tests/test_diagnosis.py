"""The diagnosis names what a frame points to, and the ISO zone of its velocity.

Synthetic frames (numpy, seeded) of a machine at 29.95 Hz sampled at 12 kHz: shaft-rate
harmonics in broadband noise when healthy; a defect adds decaying 3 kHz rings at its
repetition rate (inner-race impacts also swing with the shaft, as the defect turns through the
load zone); unbalance and misalignment raise the 1x and 2x components. Every test learns a
healthy baseline first.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.events import event_document, load_schema
from shopfloor.agent.run import Agent
from shopfloor.agent.worker import AlarmChange
from shopfloor.config import config_from_dict
from shopfloor.errors import ConfigError
from shopfloor.receiving.codecs import Frame
from shopfloor.receiving.ingest import Item
from shopfloor.scoring.diagnosis import (
    DEFECTS,
    ISO_20816_3,
    ZONES,
    FrameDiagnosis,
    iso_zone,
    split_frame_options,
)
from shopfloor.scoring.features import BEARING_6205_2RS, FrameFeatures
from shopfloor.scoring.pipeline import Plant

FS, SHAFT, LEN = 12_000.0, 29.95, 2048
FEATURES: dict[str, Any] = {
    "sample_rate": FS, "shaft_hz": SHAFT, "defect_orders": dict(BEARING_6205_2RS),
    "shaft_orders": [1.0, 2.0],
}


def machine(rng: np.random.Generator, start: int, n: int, *, one_x: float = 0.10,
            two_x: float = 0.03, defect_order: float | None = None, severity: float = 0.3,
            shaft_swing: float = 0.0) -> NDArray[np.float64]:
    """Frames ``start .. start + n`` of one continuous time axis, shape (n, LEN), in g."""
    t = (start * LEN + np.arange(n * LEN)) / FS
    x = one_x * np.sin(2 * np.pi * SHAFT * t) + two_x * np.sin(2 * np.pi * 2 * SHAFT * t + 0.4)
    x += rng.normal(0.0, 0.05, t.size)
    if defect_order is not None:
        period = 1.0 / (defect_order * SHAFT)
        since = np.mod(t, period)
        hit = t - since  # when the latest impact struck
        strength = 1.0 + 0.2 * rng.standard_normal(int(t[-1] / period) + 2)
        swing = 1.0 + shaft_swing * np.cos(2 * np.pi * SHAFT * hit)
        ring = np.exp(-since / 0.0008) * np.sin(2 * np.pi * 3000.0 * since)
        x += severity * strength[(t // period).astype(np.int64)] * swing * ring
    return x.reshape(n, LEN)


@pytest.fixture(scope="module")
def features() -> FrameFeatures:
    return FrameFeatures(**FEATURES)


def learned(features: FrameFeatures, rng: np.random.Generator) -> FrameDiagnosis:
    d = FrameDiagnosis(features.names)
    rows = features.compute(machine(rng, 0, 120)).values
    out = d.process(rows, np.ones(len(rows), dtype=np.bool_))
    assert (out.defect == 0).all()  # learning, then healthy: nothing to name
    return d


CASES = {
    "outer_race": {"defect_order": BEARING_6205_2RS["bpfo"]},
    "inner_race": {"defect_order": BEARING_6205_2RS["bpfi"], "shaft_swing": 0.8},
    "unbalance": {"one_x": 0.6},
    "misalignment": {"two_x": 0.25},
}


@pytest.mark.parametrize("defect", CASES)
def test_each_defect_is_named_after_a_healthy_baseline(features: FrameFeatures,
                                                       defect: str) -> None:
    rng = np.random.default_rng(sorted(CASES).index(defect))
    d = learned(features, rng)
    faulty = features.compute(machine(rng, 120, 20, **CASES[defect])).values
    out = d.process(faulty, np.zeros(20, dtype=np.bool_))  # an alarm: nothing is learned
    assert [DEFECTS[c] for c in out.defect] == [defect] * 20
    assert (out.ratio >= 4.0).all()


def test_healthy_frames_are_named_none(features: FrameFeatures) -> None:
    rng = np.random.default_rng(10)
    d = learned(features, rng)
    rows = features.compute(machine(rng, 120, 400)).values
    out = d.process(rows, np.ones(400, dtype=np.bool_))
    assert (out.defect == 0).all()
    # The largest of 2400 healthy readings (400 frames, 6 features) stays under 3x, short of
    # the 4x needed: the margin is real, not luck.
    assert np.nanmax(out.ratio) < 3.0
    assert np.isfinite(out.ratio).all()


def test_nothing_is_named_before_min_samples_and_refused_rows_are_not_learned() -> None:
    names = ("velocity_rms_mm_s", "env_bpfo", "env_bpfi")
    d = FrameDiagnosis(names, min_samples=3)
    healthy = np.array([[1.0, 0.1, 0.1]] * 3)
    fault = np.array([[1.0, 1.0, 0.1]])
    early = d.process(np.vstack([fault, healthy]), np.array([False, True, True, True]))
    assert early.defect.tolist() == [0, 0, 0, 0]  # nothing learned yet at the fault
    assert np.isnan(early.ratio[:3]).all()
    # The refused fault row taught nothing: the level is exactly the healthy one.
    assert d.get_state()["level"][:, 0].tolist() == [3.0, 3.0]
    np.testing.assert_allclose(d.get_state()["level"][:, 1], math.log(0.1), rtol=1e-15)
    late = d.process(np.vstack([fault, [[1.0, 0.39, 0.1]], [[1.0, 0.41, 0.1]]]),
                     np.zeros(3, dtype=np.bool_))
    assert [DEFECTS[c] for c in late.defect] == ["outer_race", "none", "outer_race"]
    np.testing.assert_allclose(late.ratio, [10.0, 3.9, 4.1], rtol=1e-12)


def test_a_cage_line_with_a_risen_ball_line_is_a_ball_defect() -> None:
    names = ("env_bsf", "env_ftf", "env_bpfi")
    d = FrameDiagnosis(names, min_samples=1)
    d.process(np.array([[0.1, 0.1, 0.1]]), np.ones(1, dtype=np.bool_))
    rows = np.array([
        [0.25, 0.5, 0.1],  # FTF 5x, BSF 2.5x (over sqrt(4) = 2): the ball's cage modulation
        [0.15, 0.5, 0.1],  # FTF 5x alone: the cage
        [0.5, 0.45, 0.1],  # BSF leads: the ball
        [0.1, 0.1, np.nan],  # a missing feature carries no evidence
        [np.nan, np.nan, np.nan],
    ])
    out = d.process(rows, np.zeros(len(rows), dtype=np.bool_))
    assert [DEFECTS[c] for c in out.defect] == ["ball", "cage", "ball", "none", "none"]
    assert math.isnan(out.ratio[-1])


@pytest.mark.parametrize("group", sorted(ISO_20816_3))
def test_zone_boundaries(group: str) -> None:
    ab, bc, cd = ISO_20816_3[group]
    v = np.array([0.0, np.nextafter(ab, 0.0), ab, np.nextafter(bc, 0.0), bc,
                  np.nextafter(cd, 0.0), cd, 100.0, np.nan, math.inf])
    assert [ZONES[z] for z in iso_zone(v, group)] == [
        "A", "A", "B", "B", "C", "C", "D", "D", "unknown", "unknown"]


def test_the_zone_table_is_iso_20816_3_annex_a() -> None:
    assert ISO_20816_3 == {
        "group1_rigid": (2.3, 4.5, 7.1), "group1_flexible": (3.5, 7.1, 11.0),
        "group2_rigid": (1.4, 2.8, 4.5), "group2_flexible": (2.3, 4.5, 7.1),
    }
    # A velocity read by the feature stage lands in the zone its value says.
    t = np.arange(LEN) / FS
    amplitude = 3.0 * math.sqrt(2) * 2 * np.pi * 100.0 / 9806.65  # 3.0 mm/s rms at 100 Hz
    ff = FrameFeatures(FS, stats=("rms",))
    row = ff.compute(amplitude * np.sin(2 * np.pi * 100.0 * t)).values
    zones = {g: ZONES[FrameDiagnosis(ff.names, iso_group=g).process(
        row, np.zeros(1, dtype=np.bool_)).zone[0]] for g in ISO_20816_3}
    assert zones == {"group1_rigid": "B", "group1_flexible": "A", "group2_rigid": "C",
                     "group2_flexible": "B"}


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="iso_group"):
        FrameDiagnosis(("rms",), iso_group="group3")
    with pytest.raises(ValueError, match="min_ratio"):
        FrameDiagnosis(("rms",), min_ratio=1.0)
    with pytest.raises(ValueError, match="alpha"):
        FrameDiagnosis(("rms",), alpha=0.0)
    with pytest.raises(ValueError, match="min_samples"):
        FrameDiagnosis(("rms",), min_samples=0)
    with pytest.raises(ValueError, match="shape"):
        FrameDiagnosis(("rms", "env_bpfo")).process(np.ones((2, 3)), np.ones(2, dtype=bool))
    # Without diagnostic features or velocity it still answers, with none and unknown.
    out = FrameDiagnosis(("rms",)).process(np.ones((2, 1)), np.ones(2, dtype=bool))
    assert out.defect.tolist() == [0, 0]
    assert out.zone.tolist() == [0, 0]


def test_state_restores_exactly_and_batches_do_not_matter(features: FrameFeatures) -> None:
    rng = np.random.default_rng(11)
    rows = features.compute(np.vstack([
        machine(rng, 0, 80), machine(rng, 80, 30, defect_order=BEARING_6205_2RS["bpfo"])
    ])).values
    learn = np.ones(len(rows), dtype=np.bool_)
    learn[85:] = False  # as if the alarm paused learning
    whole = FrameDiagnosis(features.names)
    one = whole.process(rows, learn)
    split = FrameDiagnosis(features.names)
    parts = [split.process(rows[a:b], learn[a:b]) for a, b in ((0, 1), (1, 49), (49, 50),
                                                                (50, 110))]
    np.testing.assert_array_equal(np.concatenate([p.defect for p in parts]), one.defect)
    np.testing.assert_array_equal(np.concatenate([p.ratio for p in parts]), one.ratio)
    np.testing.assert_array_equal(split.get_state()["level"], whole.get_state()["level"])
    # Checkpoint at row 60, restore into a fresh diagnosis, continue: the same answers.
    first = FrameDiagnosis(features.names)
    first.process(rows[:60], learn[:60])
    saved = first.get_state()
    saved_copy = saved["level"].copy()
    first.process(rows[60:], learn[60:])  # the live object moves on; the checkpoint must not
    np.testing.assert_array_equal(saved["level"], saved_copy)
    restored = FrameDiagnosis(features.names)
    restored.set_state(saved)
    tail = restored.process(rows[60:], learn[60:])
    np.testing.assert_array_equal(tail.defect, one.defect[60:])
    np.testing.assert_array_equal(tail.ratio, one.ratio[60:])
    assert {DEFECTS[c] for c in one.defect[86:]} == {"outer_race"}
    with pytest.raises(ValueError, match="features"):
        FrameDiagnosis(("env_bpfo",)).set_state(saved)


def plant(**extra: Any) -> Plant:
    return Plant(config_from_dict({"signals": [
        {"asset": "pump-7", "name": "de_accel", "kind": "frame", "valid_range": [-50.0, 50.0],
         "features": {**FEATURES, **extra}, "alarm": {"warmup": 100}},
        {"asset": "pump-7", "name": "flow"},
    ]}, source="test"))


def test_the_pipeline_names_the_defect_at_the_alarm_and_checkpoints_the_diagnosis() -> None:
    rng = np.random.default_rng(12)
    p = plant(iso_group="group1_flexible")
    pipe = p.signals["pump-7/de_accel"]
    healthy = pipe.process(machine(rng, 0, 300))
    assert healthy.diagnosis is not None
    assert not healthy.result.raised.any()
    assert (healthy.diagnosis.defect == 0).all()
    # 1x of 0.10 g at 29.95 Hz is 3.7 mm/s: zone B of a large machine on a soft foundation.
    assert {ZONES[z] for z in healthy.diagnosis.zone} == {"B"}
    assert p.signals["pump-7/flow"].process(np.ones(3)).diagnosis is None
    saved = p.get_state()
    assert "diagnosis" in saved["signals"]["pump-7/de_accel"]
    fault = machine(rng, 300, 60, defect_order=BEARING_6205_2RS["bpfo"])
    fault[5, 10] = 99.0  # clipped: refused by the gate, so no diagnosis either
    faulty = pipe.process(fault)
    assert faulty.diagnosis is not None
    raised = np.flatnonzero(faulty.result.raised)
    assert raised.size == 1, raised
    assert raised[0] < 10, raised
    assert DEFECTS[faulty.diagnosis.defect[raised[0]]] == "outer_race"
    assert (faulty.diagnosis.defect[faulty.reason == 0] == DEFECTS.index("outer_race")).all()
    assert (faulty.diagnosis.defect[5], faulty.diagnosis.zone[5]) == (0, 0)
    # The restored pipeline says the same, frame by frame.
    again = plant(iso_group="group1_flexible")
    again.set_state(saved)
    replayed = again.signals["pump-7/de_accel"].process(fault)
    assert replayed.diagnosis is not None
    np.testing.assert_array_equal(replayed.diagnosis.defect, faulty.diagnosis.defect)
    np.testing.assert_array_equal(replayed.diagnosis.ratio, faulty.diagnosis.ratio)
    # A checkpoint from before the diagnosis restores the rest; the diagnosis starts afresh.
    old = p.get_state()
    del old["signals"]["pump-7/de_accel"]["diagnosis"]
    cold = plant(iso_group="group1_flexible")
    cold.set_state(old)
    cold_pipe = cold.signals["pump-7/de_accel"]
    assert cold_pipe.scored == pipe.scored
    assert cold_pipe.get_state()["diagnosis"]["level"][:, 0].tolist() == [0.0] * 6


def test_a_bad_iso_group_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="iso_group") as info:
        plant(iso_group="group3")
    assert "features.iso_group" in str(info.value)
    assert split_frame_options({"sample_rate": 1.0, "iso_group": "x"}) == (
        {"sample_rate": 1.0}, {"iso_group": "x"})


AGENT = """
[mqtt]
host = "127.0.0.1"
port = 1
client_id = "diagnosis-unit"
[[subscriptions]]
topic = "plant/{asset}/{signal}"
[metrics]
port = 0
[[signals]]
asset = "motor-1"
name = "vib-de"
kind = "frame"
alarm = { warmup = 100 }
[signals.features]
sample_rate = 12000.0
shaft_hz = 29.95
shaft_orders = [1.0, 2.0]
defect_orders = { bpfi = 5.4152, bpfo = 3.5848, bsf = 4.7135, ftf = 0.39828 }
"""


def test_events_and_metrics_name_the_defect_and_the_zone() -> None:
    registry = CollectorRegistry()
    agent = Agent(parse_agent_config(AGENT), registry)
    changes: list[AlarmChange] = []
    agent.worker.on_change = changes.append
    rng = np.random.default_rng(13)
    now = time.time()
    frames = np.vstack([machine(rng, 0, 250),
                        machine(rng, 250, 20, defect_order=BEARING_6205_2RS["bpfi"],
                                shaft_swing=0.8)])
    for k, samples in enumerate(frames):
        agent.queue.put(Item("motor-1/vib-de", -1, (), Frame(now - 300 + k * LEN / FS, FS,
                                                             samples), now))
    while agent.worker.run_once(timeout=0.0):
        pass
    raised = [c for c in changes if c.kind == "raised"]
    assert len(raised) == 1
    assert (raised[0].defect, raised[0].iso_zone) == ("inner_race", "C")
    doc = event_document(raised[0], "diagnosis-unit")
    Draft202012Validator(load_schema()).validate(doc)
    assert (doc["defect"], doc["iso_zone"]) == ("inner_race", "C")
    labels = {"asset": "motor-1", "signal": "vib-de"}
    get = registry.get_sample_value
    assert get("shopfloor_signal_defect_info", {**labels, "defect": "inner_race"}) == 1.0
    assert get("shopfloor_signal_iso_zone", labels) == 3.0  # 3.7 mm/s: C for group 2 rigid
    text = generate_latest(registry).decode()
    assert text.count("shopfloor_signal_defect_info{") == 1  # one series per signal
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `./dev.sh test` installs it (Debian prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
