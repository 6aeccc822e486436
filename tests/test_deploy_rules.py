"""deploy/ checked by the tools that will run it: promtool for Prometheus, Mosquitto, the agent.

promtool and mosquitto come from Debian's packages (`./dev.sh test` installs them); a missing
one fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from broker import wait_until
from shopfloor.agent_config import parse_agent_config
from shopfloor.broker import INSTALL_HINT, find_mosquitto, free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMTOOL = "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in deploy/prometheus (where the config's relative rule paths start)."""
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} is missing: `./dev.sh test` installs it (Debian package "
                    "prometheus)", pytrace=False)
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=120, check=False)


def rule_names(kind: str) -> list[str]:
    """Names of the ``alert`` or ``record`` rules, in file order."""
    return [m[1] for p in sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
            for m in re.finditer(rf"^\s*- {kind}:\s*(\S+)\s*$", p.read_text(), re.M)]


def test_the_example_config_and_its_rule_files_are_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 2 rule files found" in done.stdout, done.stdout


def test_the_rules_are_valid_and_lint_clean() -> None:
    files = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in PROMETHEUS_DIR.glob("rules/*.yml"))
    done = promtool("check", "rules", "--lint=all", "--lint-fatal", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    counted = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", done.stdout))
    assert counted == len(rule_names("alert")) + len(rule_names("record")) > 0


def test_the_rule_unit_tests_pass() -> None:
    files = sorted(str(p.relative_to(PROMETHEUS_DIR)) for p in PROMETHEUS_DIR.glob("tests/*.yml"))
    assert files
    done = promtool("test", "rules", *files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAILED" not in done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    text = "\n".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    cases = re.findall(r"alertname:\s*(\w+)\s*\n\s*exp_alerts:\s*(\[\])?", text)
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    alerts = set(rule_names("alert"))
    assert len(alerts) == len(rule_names("alert")), "alert names repeat"
    assert alerts - firing == set(), "never seen firing"
    assert alerts - quiet == set(), "never seen quiet"
    assert {name for name, _ in cases} <= alerts, "a test names an alert that does not exist"


def test_every_recording_rule_is_unit_tested() -> None:
    text = "\n".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    tested = set(re.findall(r"^\s*- expr:\s*(\S+)\s*$", text, re.M))
    assert set(rule_names("record")) <= tested


def test_alerts_carry_severity_category_summary_and_description() -> None:
    # Each alert's block runs to the next rule; promtool has parsed the YAML already, so a
    # look at the text is enough to hold the conventions.
    text = (PROMETHEUS_DIR / "rules" / "shopfloor-alerts.yml").read_text()
    blocks = re.split(r"^\s*- alert:", text, flags=re.M)[1:]
    assert len(blocks) == len(rule_names("alert"))
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"^\s+severity: (critical|warning|info)$", block, re.M), name
        assert re.search(r"^\s+category: (anomaly|agent)$", block, re.M), name
        assert re.search(r"^\s+summary: ", block, re.M), name
        assert re.search(r"^\s+description: ", block, re.M), name
        assert "{{ $labels." in block, f"{name}: annotations should name the instance or signal"


def compose_agent_config() -> str:
    """The agent configuration inlined in deploy/compose.yaml (``configs: content: |``)."""
    lines = (DEPLOY / "compose.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "content: |")
    column = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= column:
            break
        body.append(line)
    return textwrap.dedent("\n".join(body))


def test_the_compose_agent_config_is_valid_and_scraped_where_prometheus_looks() -> None:
    config = parse_agent_config(compose_agent_config(), source="deploy/compose.yaml")
    assert (config.mqtt.host, config.mqtt.port) == ("mosquitto", 1883)
    assert config.metrics.host == "0.0.0.0"  # reachable from the Prometheus container
    assert f'"agent:{config.metrics.port}"' in (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert config.state.directory == "/var/lib/shopfloor"
    assert any(a.name == "station-1" for a in config.pipeline.assets)


# MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s, empty client id.
CONNECT = bytes([0x10, 12, 0, 4, *b"MQTT", 4, 0x02, 0, 60, 0, 0])
CONNACK_ACCEPTED = bytes([0x20, 2, 0, 0])


def connack(port: int) -> bool:
    """True if a broker on ``port`` accepts an MQTT connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(CONNECT)
            return s.recv(4) == CONNACK_ACCEPTED
    except OSError:
        return False


def test_the_example_mosquitto_config_runs_and_persists(tmp_path: Path) -> None:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(f"mosquitto is not installed: {INSTALL_HINT}", pytrace=False)
    port = free_port()
    text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert re.search(r"^persistence true$", text, re.M)
    # Only where it listens and writes changes for the test (and, as root, who it runs as).
    text = re.sub(r"^persistence_location .*$", f"persistence_location {tmp_path}/", text,
                  flags=re.M)
    text = re.sub(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    text += f"\nuser {pwd.getpwuid(os.getuid()).pw_name}\n"
    (tmp_path / "mosquitto.conf").write_text(text)
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(tmp_path / "mosquitto.conf")],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # A CONNACK, not just an open port: the broker's loop (and its SIGTERM handler, which
        # saves the database) is running.
        assert wait_until(lambda: connack(port) or proc.poll() is not None, 10)
        assert proc.poll() is None, (tmp_path / "log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    assert (tmp_path / "mosquitto.db").is_file(), (tmp_path / "log").read_text()
