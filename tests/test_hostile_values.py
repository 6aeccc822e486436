"""Extreme but legal values through what a user meets - the shipped example config and a bare
default subscription - never crash the worker, never blind a detector, and are counted.

Before: ``{"value": 1e300}`` on a scalar signal without a valid range ended the agent with a
segmentation fault (an out-of-bounds write in the quantile threshold), and one 1e299 during
the warm-up left z-score, EWMA and CUSUM blind to a later 8-sigma step for good.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfloor.agent.config import AgentConfig, load_agent_config, parse_agent_config
from shopfloor.agent.worker import AlarmChange, Worker
from shopfloor.config import config_from_dict
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.receiving.ingest import BoundedQueue, Ingest
from shopfloor.scoring.pipeline import Plant

EXAMPLE = Path(__file__).resolve().parents[1] / "edge" / "agent.example.toml"
BARE = """
[mqtt]
host = "127.0.0.1"
[[subscriptions]]
topic = "plant/{site}/{line}/{asset}/{signal}"
codec = "json"
"""
T0 = 1_750_000_000.0
HOSTILE = (1e300, 1.7e308, -1e305, 1e14, -1e14, 5e-324)


def feed(config: AgentConfig, values: np.ndarray) -> tuple[Worker, list[AlarmChange]]:
    queue = BoundedQueue(100_000, "drop_oldest")
    changes: list[AlarmChange] = []
    worker = Worker(config, Plant(config.pipeline), queue, on_change=changes.append)
    ingest = Ingest(config, queue)
    for i, v in enumerate(values):
        ingest.on_message("plant/s1/l1/press-4/force", encode_json_scalar(T0 + i, float(v)),
                          T0 + i)
        if i % 97 == 0:
            while worker.run_once(timeout=0.0):
                pass
    while worker.run_once(timeout=0.0):
        pass
    return worker, changes


@pytest.mark.parametrize("source", ["example", "bare"])
def test_hostile_values_are_counted_and_a_later_step_still_alarms(source: str) -> None:
    config = (load_agent_config(EXAMPLE) if source == "example"
              else parse_agent_config(BARE, source="bare.toml"))
    rng = np.random.default_rng(4)
    values = 20.0 + rng.standard_normal(1400)
    values[150:150 + len(HOSTILE)] = HOSTILE  # during the warm-up, when everything is learned
    values[700:700 + len(HOSTILE)] = HOSTILE  # and after it
    values[1200:] += 8.0
    worker, changes = feed(config, values)  # a batch that raised would raise here
    pipe = next(p for p in worker.plant.signals.values()
                if (p.spec.asset, p.spec.name) == ("press-4", "force"))
    rejected = sum(pipe.rejected.values())
    assert rejected >= 6  # 1e300, 1.7e308 and -1e305 twice: counted, never learned
    assert set(pipe.rejected) <= {"implausible", "out_of_range"}
    state = pipe.get_state()["monitor"]["detector"]["stats"]
    assert np.isfinite(state).all()
    raised = [c.ts - T0 for c in changes if c.kind == "raised" and c.signal == "force"]
    assert any(1200 <= t < 1210 for t in raised), raised


@pytest.mark.parametrize("kind", ["zscore", "ewma", "cusum", "robust_z", "western_electric"])
def test_one_extreme_value_in_the_warmup_does_not_blind_a_chart(kind: str) -> None:
    rng = np.random.default_rng(5)
    for extreme in (1e299, 1e14):
        x = 20.0 + rng.standard_normal(2000)
        x[120] = extreme
        x[1500:] += 8.0
        plant = Plant(config_from_dict({"defaults": {"detector": {"kind": kind}},
                                        "signals": [{"asset": "a", "name": "s"}]}, source="x"))
        result = plant.signals["a/s"].process(x, T0 + np.arange(2000.0)).result
        raised = np.flatnonzero(result.raised)
        assert raised.size, (kind, extreme)
        assert 1500 <= raised[-1] < 1520 or any(1500 <= r < 1520 for r in raised), (kind, raised)
