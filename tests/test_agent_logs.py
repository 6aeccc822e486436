"""The agent's log stays readable under a flapping signal: alarm lines are rate-limited per
signal (every event still goes out), with a count of what was held back."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import ALARM_LOG_INTERVAL, Agent
from shopfloor.agent.worker import AlarmChange
from shopfloor.receiving.codecs import encode_json_scalar

CONFIG = """
[mqtt]
host = "127.0.0.1"
[agent]
asset_signals = 0
[[subscriptions]]
topic = "plant/{asset}/{signal}"
detector = { kind = "zscore", min_samples = 10 }
alarm = { warmup = 20, clear_after = 1 }
"""


def test_a_flapping_signal_writes_one_alarm_line_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 2,330 alarm lines in 3.5 minutes came from 4 flapping signals.
    agent = Agent(parse_agent_config(CONFIG), CollectorRegistry())
    events: list[str] = []
    inner = agent.worker.on_change

    def counted(change: AlarmChange) -> None:
        events.append(change.kind)
        inner(change)

    agent.worker.on_change = counted
    rng = np.random.default_rng(1)
    t0 = 1_750_000_000.0
    values = 10.0 + rng.standard_normal(600)
    values[300::6] += 30.0  # three far values in a row every six samples: raise, then clear
    values[301::6] += 30.0
    values[302::6] += 30.0
    with caplog.at_level(logging.INFO, logger="shopfloor.agent.run"):
        for i, v in enumerate(values):
            agent.ingest.on_message("plant/press-1/force", encode_json_scalar(t0 + i, v), t0)
        while agent.worker.run_once(timeout=0.0):
            pass
    lines = [r for r in caplog.records if r.getMessage().startswith("alarm ")]
    assert len(events) >= 40  # every raise and clear is an event
    assert 1 <= len(lines) <= 2  # the run takes far less than ALARM_LOG_INTERVAL
    assert ALARM_LOG_INTERVAL >= 5.0
