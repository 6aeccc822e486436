"""Signals discovered on subscriptions get their asset's multivariate detector, as configured
signals do: the agent's default covers a correlation break between two discovered signals."""

from __future__ import annotations

import numpy as np

from shopfloor.agent.config import AgentConfig, parse_agent_config
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.pipeline import Plant

CONFIG = """
[mqtt]
host = "127.0.0.1"

[[subscriptions]]
topic = "plant/{asset}/{signal}"
codec = "json"

[agent]
asset_signals = 3
"""


def discovered_plant(text: str = CONFIG) -> tuple[Plant, AgentConfig]:
    config = parse_agent_config(text)
    plant = Plant(config.pipeline)
    sub = config.subscriptions[0]
    for name in ("force", "pressure", "speed", "torque"):
        plant.add_signal(sub.signal_spec("press-1", name), 0, config.asset_stage,
                         config.agent.asset_signals)
    plant.add_signal(sub.signal_spec("press-2", "force"), 0, config.asset_stage,
                     config.agent.asset_signals)
    return plant, config


def test_discovered_signals_share_an_asset_detector_up_to_the_cap() -> None:
    plant, _ = discovered_plant()
    assert set(plant.assets) == {"press-1"}  # press-2 has one signal
    assert plant.assets["press-1"].spec.signals == ("force", "pressure", "speed")
    assert plant.assets["press-1"].spec.stage.detector["kind"] == "mahalanobis"


def test_the_cap_zero_turns_it_off() -> None:
    plant, _ = discovered_plant(CONFIG.replace("asset_signals = 3", "asset_signals = 0"))
    assert plant.assets == {}


def test_a_correlation_break_between_discovered_signals_raises_the_asset_alarm() -> None:
    plant, _ = discovered_plant(CONFIG.replace("asset_signals = 3", "asset_signals = 2"))
    rng = np.random.default_rng(3)
    n = 1500
    load = rng.standard_normal(n)
    force = 10.0 + load
    pressure = 50.0 + 2.0 * load + 0.1 * rng.standard_normal(n)
    pressure[1200:] -= 2.0 * load[1200:]  # pressure stops following force
    t = np.arange(n, dtype=float)
    pipe = plant.assets["press-1"]
    rows = np.column_stack([force, pressure])
    result = pipe.process(rows, t).result
    raised = np.flatnonzero(result.raised)
    assert raised.size
    assert 1200 <= raised[0] < 1230
    assert not (result.state[:1200] == AlarmState.ACTIVE).any()
