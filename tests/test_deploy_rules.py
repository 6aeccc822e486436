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
from shopfloor.agent.config import parse_agent_config
from shopfloor.tools.broker import INSTALL_HINT, find_mosquitto, free_port

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


def alert_blocks() -> list[tuple[str, str]]:
    """``(name, text)`` of each alerting rule, its text running to the next rule."""
    text = (PROMETHEUS_DIR / "rules" / "shopfloor-alerts.yml").read_text()
    return [(block.split()[0], block) for block in re.split(r"^\s*- alert:", text, flags=re.M)[1:]]


def alert_severities() -> list[tuple[str, str]]:
    """``(name, severity)`` of each alerting rule, in file order."""
    out = []
    for name, block in alert_blocks():
        m = re.search(r"^\s+severity: (\w+)$", block, re.M)
        assert m, f"{name}: no severity"
        out.append((name, m[1]))
    return out


def alert_test_cases() -> list[tuple[str, set[str]]]:
    """``(alertname, severities expected to fire)`` of each promtool alert test; an empty
    set is a test that it stays quiet."""
    text = "\n".join(p.read_text() for p in sorted((PROMETHEUS_DIR / "tests").glob("*.yml")))
    out = []
    for case in re.split(r"^\s*- eval_time:", text, flags=re.M)[1:]:
        m = re.search(r"^\s*alertname:\s*(\w+)\s*\n\s*exp_alerts:\s*(\[\])?", case, re.M)
        if not m:
            continue
        body = re.split(r"^\s*- (?:name|interval):", case[m.end():], flags=re.M)[0]
        severities = set() if m[2] else set(re.findall(r"^\s+severity: (\w+)$", body, re.M))
        assert m[2] or severities, f"{m[1]}: expected alerts without a severity"
        out.append((m[1], severities))
    return out


def test_alert_tests_evaluate_the_recording_rules_first() -> None:
    # Without group_eval_order promtool evaluates the groups in a random order, and an alert
    # that reads a recording rule sees now this minute's value, now the last one's: a flaky
    # test of any alert whose severity changes.
    text = (PROMETHEUS_DIR / "tests" / "shopfloor-alerts_test.yml").read_text()
    m = re.search(r"^group_eval_order:\n((?:\s+- \S+\n)+)", text, re.M)
    assert m, "no group_eval_order"
    groups = [g for name in ("shopfloor-recording.yml", "shopfloor-alerts.yml")
              for g in re.findall(r"^\s*- name: (\S+)\s*$",
                                  (PROMETHEUS_DIR / "rules" / name).read_text(), re.M)]
    assert re.findall(r"- (\S+)", m[1]) == groups


def test_every_alert_is_tested_firing_and_quiet() -> None:
    # An alert may be two rules of one name, one per severity (the anomaly alarms: critical
    # on strong evidence, warning otherwise): each severity must be seen firing.
    rules = alert_severities()
    assert len(set(rules)) == len(rules), "an alert name repeats with the same severity"
    cases = alert_test_cases()
    firing = {(name, severity) for name, severities in cases for severity in severities}
    quiet = {name for name, severities in cases if not severities}
    assert set(rules) - firing == set(), "never seen firing"
    assert {name for name, _ in rules} - quiet == set(), "never seen quiet"
    assert firing <= set(rules), "a test expects a severity that no rule gives"


def test_anomaly_alerts_take_their_severity_from_the_evidence() -> None:
    by_name: dict[str, set[str]] = {}
    for name, severity in alert_severities():
        by_name.setdefault(name, set()).add(severity)
    for name in ("ShopfloorSignalAlarm", "ShopfloorAssetAlarm", "ShopfloorVibrationZone"):
        assert by_name[name] == {"critical", "warning"}, name
    blocks = dict(alert_blocks())  # the last rule of each name: enough to find the records
    assert "signal:shopfloor_signal_severity:max10m" in blocks["ShopfloorSignalAlarm"]
    assert "asset:shopfloor_asset_severity:max10m" in blocks["ShopfloorAssetAlarm"]
    # Publishers' clock skew has its own alert, and the lag alert does not take it for lag.
    assert "shopfloor_clock_ahead_seconds" in blocks["ShopfloorClockAhead"]
    assert re.search(r"^\s+for: 10m$", blocks["ShopfloorClockAhead"], re.M)
    assert re.search(r"unless on \(instance, job\) max_over_time\(shopfloor_clock_ahead_seconds",
                     blocks["ShopfloorLagHigh"])


def test_every_recording_rule_is_unit_tested() -> None:
    text = "\n".join(p.read_text() for p in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    tested = set(re.findall(r"^\s*- expr:\s*(\S+)\s*$", text, re.M))
    assert set(rule_names("record")) <= tested


def test_alerts_carry_severity_category_summary_description_and_dashboard() -> None:
    # Each alert's block runs to the next rule; promtool has parsed the YAML already, so a
    # look at the text is enough to hold the conventions.
    blocks = alert_blocks()
    assert len(blocks) == len(rule_names("alert"))
    for name, block in blocks:
        assert re.search(r"^\s+severity: (critical|warning|info)$", block, re.M), name
        assert re.search(r"^\s+category: (anomaly|agent)$", block, re.M), name
        assert re.search(r"^\s+summary: ", block, re.M), name
        assert re.search(r"^\s+description: ", block, re.M), name
        # Where to look: test_alert_links.py checks the paths and their variables.
        assert re.search(r'^\s+dashboard: "', block, re.M), f"{name}: no dashboard link"
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
