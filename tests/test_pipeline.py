"""The pipeline is one code path: batch splits, pause-learning feedback and checkpoints never
change a score."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest

from shopfloor.config import StageSpec, config_from_dict
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.detect.registry import DETECTORS
from shopfloor.scoring.monitor import Monitor, MonitorBatch
from shopfloor.scoring.pipeline import Plant

SCALAR_KINDS = sorted(k for k in DETECTORS if k != "mahalanobis")
RIVER_KINDS = {"hst", "oneclass_svm", "gaussian"}


def faulty_stream(n: int, d: int = 1, seed: int = 3) -> np.ndarray:
    """Noise with a step, a spike burst and a drift, so alarms rise and clear."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n, d))
    x[n // 4 : n // 4 + n // 10] += 6.0
    x[n // 2 : n // 2 + 5] += 12.0
    x[3 * n // 4 :] += np.linspace(0.0, 8.0, n - 3 * n // 4)[:, None]
    return x


def stage(kind: str, pause: bool = True) -> StageSpec:
    return StageSpec(
        detector={"kind": kind},
        threshold={"kind": "quantile", "false_alarm_rate": 0.01},
        alarm={
            "warmup": 50,
            "raise_after": 2,
            "clear_after": 5,
            "cooldown": 3,
            "pause_learning": pause,
            "max_pause": 40,
        },
    )


def reference(monitor: Monitor, x: np.ndarray) -> dict[str, np.ndarray]:
    """Sample by sample, the plain way: score on a throw-away copy, then learn as the alarm says."""
    out: dict[str, list[Any]] = {k: [] for k in ("score", "threshold", "state", "learned")}
    for i in range(len(x)):
        row = x[i : i + 1]
        # Row models score without moving their state (their contract); a deep copy of a forest
        # per sample would make this test take a minute.
        probe = monitor.detector if monitor.detector.row_model else copy.deepcopy(monitor.detector)
        score = probe.score_learn(row, np.zeros(1, dtype=bool)).score
        threshold = monitor.threshold.apply(score, np.zeros(1, dtype=bool))
        alarm = monitor.alarm.update(score > threshold)
        monitor.detector.score_learn(row, alarm.learn & ~alarm.adopted)
        monitor.threshold.apply(score, alarm.learn & ~alarm.adopted, alarm.withheld)
        if alarm.adopted[0]:  # the shift is the new normal: the detector re-warms
            monitor.detector.reset()
        for k, v in (
            ("score", score[0]),
            ("threshold", threshold[0]),
            ("state", alarm.state[0]),
            ("learned", alarm.learn[0]),
        ):
            out[k].append(v)
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "kind", ["zscore", "ewma", "cusum", "western_electric", "robust_z", "hst", "gaussian"]
)
def test_batched_monitor_equals_per_sample_reference(kind: str) -> None:
    x = faulty_stream(700 if kind in RIVER_KINDS else 1500)
    ref = reference(Monitor.from_spec(stage(kind), 1), x)
    assert (ref["state"] == AlarmState.ACTIVE).any(), "the stream must exercise alarms"
    assert not ref["learned"].all(), "and pause learning"
    got = Monitor.from_spec(stage(kind), 1).process(x)
    np.testing.assert_array_equal(got.score, ref["score"])
    np.testing.assert_array_equal(got.threshold, ref["threshold"])
    np.testing.assert_array_equal(got.state, ref["state"])
    np.testing.assert_array_equal(got.learned, ref["learned"])


def _fields(b: MonitorBatch) -> dict[str, np.ndarray]:
    return {name: getattr(b, name) for name in MonitorBatch.__slots__}


@pytest.mark.parametrize("pause", [True, False])
def test_random_batch_splits_change_nothing(pause: bool) -> None:
    x = faulty_stream(3000, d=3, seed=9)
    whole = _fields(Monitor.from_spec(stage("zscore", pause), 3).process(x))
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=60, replace=False))
    m = Monitor.from_spec(stage("zscore", pause), 3)
    parts = [_fields(m.process(chunk)) for chunk in np.split(x, cuts)]
    for name, value in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[name] for p in parts]), value, err_msg=name)


def plant_config(kind: str) -> Any:
    signals = [{"asset": "m", "name": f"s{i}", "detector": {"kind": kind}} for i in range(3)]
    return config_from_dict(
        {
            "defaults": {
                "threshold": {"kind": "quantile", "false_alarm_rate": 0.01},
                "alarm": {
                    "warmup": 50,
                    "raise_after": 2,
                    "clear_after": 5,
                    "pause_learning": True,
                    "max_pause": 40,
                },
            },
            "signals": signals,
        },
        source="test",
    )


def run_plant(plant: Plant, x: np.ndarray) -> dict[str, np.ndarray]:
    batches = {sid: plant.signals[sid].process(x[:, i]) for i, sid in enumerate(plant.signals)}
    asset = plant.assets["m"].process(plant.asset_row("m", batches)).result
    out = {f"{sid}.{k}": v for sid, b in batches.items() for k, v in _fields(b.result).items()}
    out.update({f"asset.{k}": v for k, v in _fields(asset).items()})
    return out


@pytest.mark.parametrize("kind", SCALAR_KINDS)
def test_checkpoint_restore_continue_equals_uninterrupted(kind: str) -> None:
    n = 600 if kind in RIVER_KINDS else 2400
    x = faulty_stream(n, d=3, seed=5)
    x[n // 3, 1] = np.nan  # a dropout on one signal: rejected, held for the asset vector
    cut = n // 2 + 7  # inside an alarm episode for most detectors
    full = Plant(plant_config(kind))
    expected = run_plant(full, x)
    first = Plant(plant_config(kind))
    head = run_plant(first, x[:cut])
    # Through pickle, as a checkpoint file would carry it: nothing may alias live state.
    state = pickle.loads(pickle.dumps(first.get_state()))
    run_plant(first, x[cut:])  # the original goes on; the saved state must not move with it
    second = Plant(plant_config(kind))
    second.set_state(state)
    tail = run_plant(second, x[cut:])
    for key, value in expected.items():
        np.testing.assert_array_equal(np.concatenate([head[key], tail[key]]), value, err_msg=key)
    assert full.signals["m/s1"].rejected == {"nan": 1}
    assert second.signals["m/s1"].rejected == {"nan": 1}
