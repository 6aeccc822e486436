"""Metrics: a live agent's /metrics passes promtool, labels stay bounded, silence expires."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from broker import wait_until
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.receiving.codecs import Samples, encode_json_scalar
from shopfloor.receiving.ingest import Item
from shopfloor.tools.broker import Mosquitto


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `./dev.sh test` installs it (Debian package prometheus)"
    return found


def config_text(port: int, extra: str = "") -> str:
    return f"""
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "metrics-test"
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5
[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
[metrics]
port = 0
{extra}
[agent]
max_signals = 20
[defaults.alarm]
warmup = 10
"""


def feed(agent: Agent, signal: str, values: np.ndarray, t0: float) -> None:
    """Put samples straight onto the agent's queue, as ingest would."""
    agent.ingest.admitted.add(signal)
    ts = t0 + np.arange(len(values), dtype=float)
    agent.queue.put(Item(signal, 0, (), Samples(ts, values), time.time()))


def scrape(agent: Agent) -> str:
    url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def agent(mosquitto: Mosquitto) -> object:
    a = Agent(parse_agent_config(config_text(mosquitto.port)), CollectorRegistry())
    a.start()
    yield a
    a.stop()


def test_live_metrics_pass_promtool_and_carry_the_signals(agent: Agent, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    feed(agent, "press-1/force", rng.normal(10, 1, 200), time.time() - 200)
    feed(agent, "press-1/force", np.array([10.0, 40.0, 41.0, 42.0, 43.0]), time.time())
    assert wait_until(lambda: agent.worker.processed >= 2, 10)
    assert wait_until(lambda: agent.link.connected, 10)
    text = scrape(agent)
    (tmp_path / "m.txt").write_text(text)
    done = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", done.stdout  # promtool prints nothing for clean metrics
    assert done.stderr.strip() == "", done.stderr
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    key = (("asset", "press-1"), ("signal", "force"))
    assert samples[("shopfloor_signal_samples_scored_total", key)] == 205
    assert samples[("shopfloor_signal_alarm_active", key)] == 1.0
    assert samples[("shopfloor_signal_alarms_raised_total", key)] == 1
    assert samples[("shopfloor_mqtt_connected", ())] == 1.0
    assert samples[("shopfloor_queue_capacity", ())] == 10_000
    assert ("shopfloor_lag_seconds_count", ()) in samples
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    assert any(name == "shopfloor_build_info" for name, _ in samples)


# An asset whose two signals step together and stay shifted: each signal's alarm and the
# asset's are raised, then adopted 20 s (of signal time) after their onset.
ADOPTING = """
[mqtt]
host = "127.0.0.1"
port = 1
client_id = "metrics-unit"
[[subscriptions]]
topic = "plant/{asset}/{signal}"
[metrics]
port = 0
[defaults.detector]
kind = "zscore"
min_samples = 10
[defaults.alarm]
warmup = 30
adapt_after = 20.0
[[signals]]
asset = "press-1"
name = "force"
[[signals]]
asset = "press-1"
name = "pressure"
[[signals]]
asset = "press-2"
name = "force"
valid_range = [0.0, 100.0]
[[assets]]
name = "press-1"
detector = { kind = "mahalanobis", min_samples = 30 }
"""


def test_likelihood_and_adoptions_are_exported_per_signal_and_asset() -> None:
    # A fresh registry and an agent that is never started: the collector reads what the
    # worker wrote, fed through ingest and the queue as the MQTT thread would.
    registry = CollectorRegistry()
    agent = Agent(parse_agent_config(ADOPTING), registry)
    rng = np.random.default_rng(5)
    now = time.time()  # arrival: a signal silent for stale_after drops out of the exposition
    t0 = now - 200.0
    for i in range(120):
        load = rng.standard_normal()
        shift = 10.0 if i >= 70 else 0.0
        force = 10.0 + load + shift
        pressure = 50.0 + 2.0 * load + 0.1 * rng.standard_normal() + 2.0 * shift
        agent.ingest.on_message("plant/press-1/force", encode_json_scalar(t0 + i, force), now)
        agent.ingest.on_message("plant/press-1/pressure", encode_json_scalar(t0 + i, pressure),
                                now)
    while agent.worker.run_once(timeout=0.0):
        pass
    get = registry.get_sample_value
    for name in ("force", "pressure"):
        labels = {"asset": "press-1", "signal": name}
        status = agent.worker.status[f"press-1/{name}"]
        assert get("shopfloor_signal_alarms_raised_total", labels) == 1.0
        assert get("shopfloor_signal_baselines_adopted_total", labels) == 1.0
        likelihood = get("shopfloor_signal_likelihood", labels)
        assert likelihood is not None
        assert likelihood == status.likelihood
        assert 0.0 <= likelihood <= 1.0
    asset = agent.worker.asset_status["press-1"]
    assert get("shopfloor_asset_alarms_raised_total", {"asset": "press-1"}) == 1.0
    assert get("shopfloor_asset_baselines_adopted_total", {"asset": "press-1"}) == 1.0
    asset_likelihood = get("shopfloor_asset_likelihood", {"asset": "press-1"})
    assert asset_likelihood is not None
    assert asset_likelihood == asset.likelihood
    assert 0.0 <= asset_likelihood <= 1.0
    # A signal that has no likelihood (its only sample was refused, so nothing was scored)
    # exports no sample rather than NaN, and its counters start at zero.
    agent.ingest.on_message("plant/press-2/force", encode_json_scalar(now, 1000.0), now)
    agent.worker.run_once(timeout=0.0)
    refused = {"asset": "press-2", "signal": "force", "reason": "out_of_range"}
    assert get("shopfloor_signal_samples_rejected_total", refused) == 1.0
    fresh = {"asset": "press-2", "signal": "force"}
    assert math.isnan(agent.worker.status["press-2/force"].likelihood)
    assert get("shopfloor_signal_likelihood", fresh) is None
    assert get("shopfloor_signal_baselines_adopted_total", fresh) == 0.0


def test_silent_signals_drop_out_of_the_exposition(mosquitto: Mosquitto) -> None:
    a = Agent(parse_agent_config(config_text(mosquitto.port, "stale_after = 1.0")),
              CollectorRegistry())
    a.start()
    try:
        feed(a, "press-1/force", np.ones(5), time.time())
        assert wait_until(lambda: a.worker.processed >= 1, 10)
        assert 'signal="force"' in scrape(a)
        assert wait_until(lambda: 'signal="force"' not in scrape(a), 5)
        assert "press-1/force" in a.plant.signals  # the model stays for when it speaks again
    finally:
        a.stop()


def test_signal_cap_bounds_the_series(agent: Agent) -> None:
    for i in range(200):
        agent.ingest.on_message(f"plant/m{i}/v", b"1.0", time.time())
    assert agent.ingest.rejected["signal_cap"] == 180
    assert wait_until(lambda: len(agent.plant.signals) == 20, 10)
    text = scrape(agent)
    assert len({line.split('signal="')[1].split('"')[0] + line.split('asset="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("shopfloor_signal_score{")}) <= 20


def test_mqtt_fault_counters_are_exported() -> None:
    registry = CollectorRegistry()
    agent = Agent(parse_agent_config(ADOPTING), registry)
    agent.link.connect_failures, agent.link.subscribe_failed, agent.link.callback_errors = 3, 2, 1
    get = registry.get_sample_value
    assert get("shopfloor_mqtt_connect_failures_total") == 3.0
    assert get("shopfloor_mqtt_subscribe_failures_total") == 2.0
    assert get("shopfloor_mqtt_callback_errors_total") == 1.0
    assert get("shopfloor_sparkplug_births_evicted_total") == 0.0


def test_samples_stamped_ahead_of_the_clock_count_as_no_lag_and_show_the_skew(
    agent: Agent,
) -> None:
    # A publisher 120 s ahead made shopfloor_lag_seconds negative (sum -2.5e6 in the demo).
    feed(agent, "press-2/force", np.full(30, 10.0), time.time() + 120)
    assert wait_until(lambda: agent.worker.processed >= 1)
    samples = {s.name: s.value for f in text_string_to_metric_families(scrape(agent))
               for s in f.samples}
    assert samples["shopfloor_lag_seconds_sum"] >= 0.0
    assert samples["shopfloor_clock_ahead_samples_total"] == 1  # one message, measured
    assert 140 < samples["shopfloor_clock_ahead_seconds"] <= 150  # its latest: +120 +29


def test_a_signals_unit_from_the_config_is_exported_for_the_dashboards(
    mosquitto: Mosquitto,
) -> None:
    extra = 'unit = "N.m"\nunits = { temp = "degC" }'
    text = config_text(mosquitto.port).replace(
        'topic = "plant/{asset}/{signal}"\n', f'topic = "plant/{{asset}}/{{signal}}"\n{extra}\n')
    agent = Agent(parse_agent_config(text), CollectorRegistry())
    agent.start()
    try:
        for name in ("torque", "temp"):
            agent.ingest.on_message(f"plant/press-1/{name}", b"1.0", time.time())
        assert wait_until(lambda: agent.worker.processed >= 2)
        info = {s.labels["signal"]: s.labels["unit"]
                for f in text_string_to_metric_families(scrape(agent)) for s in f.samples
                if s.name == "shopfloor_signal_info"}
    finally:
        agent.stop()
    assert info == {"torque": "N.m", "temp": "degC"}
