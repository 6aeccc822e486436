"""Many agents for one Prometheus, and a central Prometheus over the sites (issue 12, item 4).

The simulated plant's signals are split over two agents on one Mosquitto: one owns the quality
stations' topics, the other the vibration frames. A real Prometheus runs the shipped
deploy/prometheus/prometheus-site.yml - rewritten only for 1 s intervals - with its targets file
listing the two agents (file-based service discovery) and the shipped rules. Every dashboard,
annotation, variable and rule query, with the Agent variable on both agents and on "All",
errs nowhere and has data (test_prometheus_live's check); Prometheus counts one agent for each
signal; each agent sees the other and shares nothing with it. A second Prometheus runs the
shipped prometheus-central.yml pointed at the first, and holds both agents' series under the
site's plant label. promtool checks both configs, the remote_write alternative uncommented too.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from broker import wait_until
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.tools.broker import Mosquitto
from shopfloor.tools.simulate import Plant, agent_config_toml, standard_faults
from test_prometheus_live import (
    EXTRA_CONFIG,
    FAULT_START,
    PROMETHEUS,
    PROMTOOL,
    Prometheus,
    check_every_query,
    publish_rejects,
    simulator_thread,
)

PROMETHEUS_DIR = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
SITE = PROMETHEUS_DIR / "prometheus-site.yml"
CENTRAL = PROMETHEUS_DIR / "prometheus-central.yml"


def split_config(text: str) -> tuple[str, str]:
    """The simulator's agent config as two agents' configs: the frame subscription's and the
    JSON subscription's (named site and line levels), each with the rest of the config."""
    head, frames, scalars = text.split("[[subscriptions]]")
    pinned = re.search(r'topic = "plant/(\w+)/(\w+)/\{asset\}/\{signal\}"', scalars)
    assert pinned, scalars
    scalars = scalars.replace(pinned[0], 'topic = "plant/{site}/{line}/{asset}/{signal}"')
    return (head.replace('client_id = "fleet"', 'client_id = "fleet-quality"')
            + "[[subscriptions]]" + scalars,
            head.replace('client_id = "fleet"', 'client_id = "fleet-vibration"')
            + "[[subscriptions]]" + frames)


def site_prometheus(workdir: Path, targets: list[str]) -> Prometheus:
    """The shipped site config at 1 s, beside the shipped rules and a targets file."""
    server = Prometheus(workdir, 0)
    text = SITE.read_text()
    text, n = re.subn(r"\b(scrape_interval|evaluation_interval): 15s", r"\1: 1s", text)
    assert n == 3
    text, n = re.subn(r"\bscrape_timeout: 10s", "scrape_timeout: 1s", text)
    assert n == 1
    server.config.write_text(text)
    (workdir / "rules").symlink_to(PROMETHEUS_DIR / "rules")
    (workdir / "targets").mkdir()
    # JSON is YAML: the format of targets/shopfloor-agents.yml, for these two agents.
    (workdir / "targets" / "agents.yml").write_text(
        json.dumps([{"targets": targets, "labels": {"area": "press-shop"}}]))
    return server


def central_prometheus(workdir: Path, site_port: int) -> Prometheus:
    """The shipped central config at 1 s, federating the site's Prometheus."""
    server = Prometheus(workdir, 0)
    text = CENTRAL.read_text()
    text, n = re.subn(r"\bscrape_interval: 30s", "scrape_interval: 1s", text)
    assert n == 2
    text, n = re.subn(r"\bevaluation_interval: 30s", "evaluation_interval: 1s", text)
    assert n == 1
    text, n = re.subn(r"\bscrape_timeout: 25s", "scrape_timeout: 1s", text)
    assert n == 1
    text, n = re.subn(r"(- targets:\n)(\s+- prometheus\.plant\d\.example:9090\n)+",
                      rf"\g<1>          - 127.0.0.1:{site_port}\n", text)
    assert n == 1, text
    server.config.write_text(text)
    return server


def values(server: Prometheus, query: str) -> list[tuple[dict[str, str], float]]:
    answer = server.api("query", query=query)
    assert answer["status"] == "success", (query, answer)
    return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]


def test_the_site_and_central_configs_and_the_remote_write_example_are_valid(
    tmp_path: Path,
) -> None:
    for binary in (PROMETHEUS, PROMTOOL):
        if not Path(binary).is_file():
            pytest.fail(f"{binary} is missing: `./dev.sh test` installs it (Debian package "
                        "prometheus)", pytrace=False)

    def check(config: Path) -> str:
        done = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "SUCCESS: 2 rule files found" in check(SITE)
    check(CENTRAL)
    # The commented remote_write block, uncommented, beside the rules the config loads.
    text = SITE.read_text()
    start = text.index("# remote_write:")
    block = [line.removeprefix("# ") for line in text[start:].splitlines()]
    assert all(line.startswith(" ") or line == "remote_write:" for line in block[1:]), block
    (tmp_path / "rules").symlink_to(PROMETHEUS_DIR / "rules")
    pushing = tmp_path / "prometheus-site.yml"
    pushing.write_text(text[:start] + "\n".join(block) + "\n")
    check(pushing)
    targets = (PROMETHEUS_DIR / "targets" / "shopfloor-agents.yml").read_text()
    assert re.search(r"^- targets:$", targets, re.M)
    assert not re.search(r"^\s+(site|line|instance):", targets, re.M), \
        "a target label must not take the name of an agent's label or identity"


@pytest.mark.integration
def test_one_prometheus_over_two_agents_and_a_central_one_over_the_site(
    mosquitto: Mosquitto, tmp_path: Path,
) -> None:
    plant = Plant(vibration_assets=1, quality_assets=2, parts_per_second=10.0,
                  faults=standard_faults("station-1", FAULT_START), seed=1)
    quality, vibration = split_config(agent_config_toml(
        plant, mosquitto.host, mosquitto.port, client_id="fleet", metrics_port=0))
    quality += EXTRA_CONFIG.format(state=json.dumps(str(tmp_path / "state")))
    agents = [Agent(parse_agent_config(text), CollectorRegistry())
              for text in (quality, vibration)]
    simulator, stop = simulator_thread(plant, mosquitto, "fleet-prometheus-sim")
    servers: list[Prometheus] = []
    try:
        for agent in agents:
            agent.start()
            assert agent.link.wait_ready(10), "an agent did not subscribe"
        simulator.start()
        publish_rejects(mosquitto, plant)
        instances = [f"127.0.0.1:{agent.metrics_port}" for agent in agents]
        site = site_prometheus(tmp_path / "site", instances)
        servers.append(site)
        site.start()
        # The quality stations' signals are on one agent, motor-1's frames on the other: the
        # Agent variable on both of them, and on All.
        check_every_query(site, "|".join(instances), {"site": plant.site, "line": plant.line},
                          agents=2)
        # One agent for every signal, as Prometheus sees it; each agent sees the other online
        # on the broker and shares no signal with it.
        # The recording rule sees a signal once it has scored within its window: the frame
        # signals' first scores can come after the queries above have data (a busy machine).
        rule = "signal:shopfloor_signal_scoring_agents:count5m"
        assert wait_until(lambda: {m["instance"] for m, _ in values(site, rule)}
                          == set(instances), 30), values(site, rule)
        counts = values(site, rule)
        assert {v for _, v in counts} == {1.0}, counts
        assert sorted(values(site, "shopfloor_fleet_peers"), key=str) == sorted(
            [({"__name__": "shopfloor_fleet_peers", "instance": i, "job": "shopfloor",
               "area": "press-shop"}, 1.0) for i in instances], key=str)
        assert values(site, "sum(shopfloor_signals_shared)") == [({}, 0.0)]

        central = central_prometheus(tmp_path / "central", site.port)
        servers.append(central)
        central.start()

        def federated() -> list[tuple[dict[str, str], float]]:
            return values(central, 'count by (instance, plant, job) (shopfloor_build_info)')

        want = sorted([({"instance": i, "plant": "plant1", "job": "shopfloor"}, 1.0)
                       for i in instances], key=str)
        assert wait_until(lambda: sorted(federated(), key=str) == want, 20), federated()
        # The recorded series come along (the central Prometheus loads no rules itself).
        recorded: list[Any] = values(
            central, 'count by (instance) (signal:shopfloor_signal_scoring_agents:count5m)')
        assert {m["instance"] for m, _ in recorded} == set(instances)
    finally:
        stop.set()
        simulator.join(15)
        for agent in agents:
            agent.stop()
        for server in servers:
            server.stop()
