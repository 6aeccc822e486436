"""A real Prometheus scrapes a real agent, and every dashboard and rule query returns data.

The simulated plant publishes through a real Mosquitto, faster than real time, with faults on
station-1 so that signal and asset alarms exist; one unreadable payload and one clipped frame
make both kinds of reject. Its scalar topics name their site and line as template levels, its
frame topics do not, so the dashboards' optional site and line variables meet both kinds of
configuration. Prometheus (the Debian binary, on loopback) scrapes the agent every second and
evaluates the recording and alert rules of deploy/prometheus/rules every second. Then every
panel and annotation query of every dashboard, with the dashboard variables substituted (with
concrete values - a scalar signal on its site and line, a frame signal on "All" of them, and a
query must return data for one of those - and with Grafana's "All"), every variable query,
and every rule Prometheus loaded, are evaluated through its HTTP API: none may error, and each
must return data; the queries a panel reads its unit from must return the focused scalar's
unit. The agent's /metrics, with every family present, passes `promtool check metrics`
silently.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry

from broker import free_port, wait_until
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.pool import ScoringPool
from shopfloor.agent.run import Agent
from shopfloor.receiving.codecs import encode_frame, encode_json_scalar
from shopfloor.tools.broker import Mosquitto
from shopfloor.tools.simulate import FRAME_SCALE, Plant, agent_config_toml, publish, standard_faults
from test_dashboards import (
    RULES,
    all_rules,
    annotation_queries,
    load_dashboards,
    panel_queries,
    panels,
    variable_queries,
)

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

# The one series allowed to be absent. The agent exports the time of its last checkpoint only
# once it has written one; the state directory below makes it write one a second, but an
# expression that mentions this series must only evaluate without error, not return data
# (ShopfloorCheckpointNeverWritten returns data exactly when the series is absent).
ALLOWED_ABSENT = "shopfloor_checkpoint_last_timestamp_seconds"

# Grafana's built-in variables, as it expands them for a short time range and a 1 s scrape.
BUILTINS = {"__rate_interval": "15s", "__interval": "5s", "__range": "1m"}
# station-1's torque steps by 4 sigma at the fault: its alarm, and station-1's asset alarm.
# motor-1's accelerometer frames: features, an ISO zone, a suspected defect. Its topics have no
# site or line level: "All" for those. station-1 is a configured asset, which the agent knows
# by its name alone: its asset-level series carry no site or line, and show under "All" of
# them only, as a third set of concrete values.
SCALAR_FOCUS = {"asset": "station-1", "signal": "torque_nm"}
FRAME_FOCUS = {"asset": "motor-1", "signal": "accel", "site": ".*", "line": ".*"}
TORQUE_UNIT = "N.m"
ALL = {"instance": ".*", "site": ".*", "line": ".*", "asset": ".*", "signal": ".*"}  # allValue
FAULT_START = 30.0  # simulated seconds: 300 parts of baseline at 10 a second
SPEED = 5.0  # simulated seconds per second: the fault starts 6 s into the run
DATA_TIMEOUT = 45.0  # seconds for every query to have data (about 15 s on a 2-core machine)

# Static signals: station-1 gets the asset-level (multivariate) detector, and its torque a
# valid range (a healthy torque is 12 +- 0.15 N m) so that a sample can be refused; checkpoints on.
EXTRA_CONFIG = """
[state]
directory = {state}
checkpoint_interval = 1.0

[[signals]]
asset = "station-1"
name = "diameter_mm"

[[signals]]
asset = "station-1"
name = "torque_nm"
valid_range = [0.0, 100.0]
unit = "N.m"
"""


def substitute(expr: str, values: dict[str, str]) -> str:
    """Expand ``$name`` and ``${name}`` as Grafana would; an unknown variable is an error."""
    known = {**BUILTINS, **values}

    def value(m: re.Match[str]) -> str:
        name = m[1] or m[2]
        assert name in known, f"unknown variable ${name} in {expr}"
        return known[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


# A comparison with a number literal that filters a whole operand: followed by the end, a
# closing parenthesis or a set operator. `a > 2 * b` compares with an expression and stays.
_FILTER = re.compile(
    r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?"
    r"(?=\s*(?:\)|$|\b(?:and|or|unless)\b))",
    re.I,
)


def without_filters(expr: str) -> str:
    """An alert expression without its comparisons with constants and its ``unless`` clauses.

    ``up == 0`` returns nothing while the agent is healthy; ``up`` must return data. What is
    left selects every series the alert could fire on: ``a unless b`` is part of ``a``, so the
    clause goes (to the end of its parentheses), rather than losing its own comparisons, which
    would remove more. Applied to the expressions as Prometheus prints them (``/api/v1/rules``),
    so the operators are spelt one way. Strings are untouched: a comparison needs a number
    after it.
    """
    return _FILTER.sub("", _without_unless(expr))


def _without_unless(expr: str) -> str:
    out: list[str] = []
    depth = 0
    skip_below: int | None = None  # dropping an unless clause until depth falls below this
    i = 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":  # a string: copied or skipped whole
            end = i + 1
            while end < len(expr) and expr[end] != c:
                end += 2 if expr[end] == "\\" and c != "`" else 1
            if skip_below is None:
                out.append(expr[i:end + 1])
            i = end + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if skip_below is not None and depth < skip_below:
                skip_below = None
        m = re.match(r"\bunless\b", expr[i:]) if skip_below is None else None
        if m and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:")):
            skip_below = depth
            while out and out[-1].isspace():
                out.pop()
            continue
        if skip_below is None:
            out.append(c)
        i += 1
    return "".join(out)


class Prometheus:
    """One Prometheus process on 127.0.0.1, its storage and log in ``workdir``."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.workdir = workdir
        self.port = 0
        self.log = workdir / "prometheus.log"
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True)
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES / "*.yml")],
            "scrape_configs": [{
                "job_name": "shopfloor",  # as in deploy/prometheus/prometheus.yml
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }],
        }))

    def start(self, timeout: float = 20.0) -> None:
        # A port free a moment ago may be taken by the time Prometheus binds it: try others.
        for _ in range(3):
            self.port = free_port()
            with self.log.open("ab") as log:
                self._proc = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={self.config}",
                     f"--storage.tsdb.path={self.workdir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            wait_until(lambda: not self.running or self._ready(), timeout)
            if self.running and self._ready():
                return
            self.stop()
            if "address already in use" not in self.log.read_text():
                break
        raise AssertionError(f"Prometheus did not start:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/-/ready"
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/``path``; an error answer (HTTP 400, 422) is returned, not raised."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
        answer: dict[str, Any] = json.loads(body)
        return answer

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def has_data(answer: dict[str, Any], label: str | None = None) -> bool:
    """A successful answer with at least one finite value (and ``label``, if given)."""
    result = answer["data"]["result"]
    return any(math.isfinite(float(r["value"][1])) and (label is None or label in r["metric"])
               for r in result)


def publish_rejects(broker: Mosquitto, plant: Plant) -> None:
    """A payload no codec reads, a torque and a frame past their valid ranges."""
    prefix = f"plant/{plant.site}/{plant.line}"
    frame = np.zeros(plant.frame_len)
    frame[0] = 3.25  # inside int16 full scale, outside valid_range [-3.2, 3.2]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="prometheus-live-rejects")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        sent = [client.publish(f"{prefix}/station-2/torque_nm", b"not json", qos=1),
                client.publish(f"{prefix}/station-1/torque_nm",
                               encode_json_scalar(time.time(), 1000.0), qos=1),
                client.publish(f"{prefix}/motor-1/accel/frame",
                               encode_frame(time.time(), plant.sample_rate, frame, "int16",
                                            FRAME_SCALE), qos=1)]
        for info in sent:
            info.wait_for_publish(5)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_comparisons_with_constants_are_removed_only_where_they_filter() -> None:
    assert without_filters('up{job="shopfloor"} == 0') == 'up{job="shopfloor"}'
    assert without_filters("time() - c > 900") == "time() - c"
    assert without_filters("(time() - s > 1800) unless c") == "(time() - s)"
    assert without_filters("a > 30 unless on (i) max_over_time(b[5m]) > 1") == "a"
    assert without_filters("(a > 1 unless b > 2) and c > 3") == "(a) and c"
    assert without_filters('x{r="unless"} > 1 unless y') == 'x{r="unless"}'
    assert without_filters("unlessx > 1") == "unlessx"
    assert without_filters("a > 0 and rate(b[2m]) == 0") == "a and rate(b[2m])"
    assert without_filters('x{le="0.5", r!="1"} / y > 0.01') == 'x{le="0.5", r!="1"} / y'
    assert without_filters("a > 2 * b") == "a > 2 * b"
    assert substitute('r(x{a=~"$asset"}[$__rate_interval])', {"asset": "m"}) == 'r(x{a=~"m"}[15s])'
    with pytest.raises(AssertionError, match="unknown variable"):
        substitute("x[$nope]", {})



def simulator_thread(plant: Plant, mosquitto: Mosquitto, client_id: str
                     ) -> tuple[threading.Thread, threading.Event]:
    """The simulated plant publishing in real time at SPEED (not started), and its stop."""
    stop = threading.Event()
    return threading.Thread(
        target=publish, name="simulator", daemon=True,
        kwargs={"plant": plant, "host": mosquitto.host, "port": mosquitto.port,
                "realtime": True, "speed": SPEED, "stop": stop, "client_id": client_id},
    ), stop

@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-scoring-processes"])
def test_prometheus_evaluates_every_dashboard_and_rule_query_with_data(
    mosquitto: Mosquitto, tmp_path: Path, workers: int
) -> None:
    """With one process, and with two scoring processes behind one /metrics (issue 12):
    the same dashboards and rules, each signal's series from the process that owns it."""
    for binary in (PROMETHEUS, PROMTOOL):
        if not Path(binary).is_file():
            pytest.fail(f"{binary} is missing: `./dev.sh test` installs it (Debian package "
                        "prometheus)", pytrace=False)
    plant = Plant(vibration_assets=1, quality_assets=2, parts_per_second=10.0,
                  faults=standard_faults("station-1", FAULT_START), seed=1)
    text = agent_config_toml(plant, mosquitto.host, mosquitto.port, client_id="prometheus-live",
                             metrics_port=0)
    # The scalar topics' site and line become template levels, and so labels of their signals.
    pinned = f'topic = "plant/{plant.site}/{plant.line}/{{asset}}/{{signal}}"'
    assert pinned in text
    text = text.replace(pinned, 'topic = "plant/{site}/{line}/{asset}/{signal}"')
    text += EXTRA_CONFIG.format(state=json.dumps(str(tmp_path / "state")))
    text = text.replace("[agent]\n", f"[agent]\nworkers = {workers}\n", 1)
    agent = Agent(parse_agent_config(text), CollectorRegistry())
    simulator, stop = simulator_thread(plant, mosquitto, "prometheus-live-sim")
    server: Prometheus | None = None
    try:
        agent.start()
        assert wait_until(lambda: agent.link.connected, 10), "the agent did not connect"
        simulator.start()
        publish_rejects(mosquitto, plant)
        server = Prometheus(tmp_path / "prometheus", agent.metrics_port)
        server.start()
        instance = f"127.0.0.1:{agent.metrics_port}"
        check_every_query(server, instance, {"site": plant.site, "line": plant.line})
        # Now that every family is present (asset alarms, rejects, checkpoints), the exposition
        # passes promtool's lint with nothing to say.
        with urllib.request.urlopen(f"http://{instance}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        done = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition,
                              capture_output=True, text=True, timeout=30, check=False)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done
        if workers > 1:  # the plant's assets were spread: every process scored some
            assert isinstance(agent.worker, ScoringPool)
            assert all(n > 0 for n in agent.worker.processed_by), agent.worker.processed_by
            assert 'shopfloor_scoring_processes 2.0' in exposition
    finally:
        stop.set()
        simulator.join(15)
        agent.stop()
        if server is not None:
            server.stop()


def unit_queries(dashboard: dict[str, Any]) -> set[str]:
    """Where (as panel_queries names it) each query is that a panel reads its unit from."""
    return {f"{dashboard['uid']}: {p['title']} [{tr['options']['configRefId']}]"
            for p in panels(dashboard) for tr in p.get("transformations", [])
            if tr["id"] == "configFromData"}


# (where, alternative exprs of which one must have data, label the answer must carry, data
# required at all)
Check = tuple[str, list[str], str | None, bool]


def check_every_query(server: Prometheus, instance: str, levels: dict[str, str],
                      agents: int = 1) -> None:
    """Evaluate everything until each query has data or DATA_TIMEOUT passes; errors fail.

    ``instance`` is the agents' instance, or a regex of several (test_fleet_prometheus.py: the
    focused signals are then on different agents), ``agents`` how many are scraped."""
    scalar = {"instance": instance, **levels, **SCALAR_FOCUS}
    configured_asset = {**scalar, "site": ".*", "line": ".*"}
    frame = {"instance": instance, **FRAME_FOCUS}
    concrete = (scalar, configured_asset, frame)
    checks: list[Check] = []
    for dashboard in load_dashboards().values():
        units = unit_queries(dashboard)
        for where, expr in panel_queries(dashboard):
            need = ALLOWED_ABSENT not in expr
            checks.append((f"{where} (concrete)", [substitute(expr, v) for v in concrete],
                           "unit" if where in units else None, need))
            checks.append((f"{where} (All)", [substitute(expr, ALL)], None, need))
        for where, expr in annotation_queries(dashboard):
            # An annotation marks events: without its comparison it must still select data.
            for name, values in (("concrete", concrete), ("All", (ALL,))):
                exprs = [substitute(expr, v) for v in values]
                checks.append((f"{where} ({name})", exprs, None, False))
                checks.append((f"{where} without its comparisons ({name})",
                               [without_filters(e) for e in exprs], None, True))
        for where, expr, label in variable_queries(dashboard):
            checks.append((f"{where} (concrete)", [substitute(expr, scalar)], label, True))
            checks.append((f"{where} (All)", [substitute(expr, ALL)], label, True))
    expected = {name for _, name, _ in all_rules()}
    deadline = time.monotonic() + DATA_TIMEOUT
    while True:
        rules = [r for g in server.api("rules")["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} == expected, "Prometheus did not load every rule"
        rule_checks: list[Check] = []
        for r in rules:
            need = ALLOWED_ABSENT not in r["query"]
            alert = r["type"] == "alerting"
            # An alert's own expression may be empty while all is well; without its
            # comparisons it must not.
            rule_checks.append((f"rule {r['name']}", [r["query"]], None, need and not alert))
            if alert:
                assert without_filters(r["query"]) != r["query"], f"{r['name']} filters nothing"
                rule_checks.append((f"rule {r['name']} without its comparisons",
                                    [without_filters(r["query"])], None, need))
        missing = []
        for where, exprs, wanted_label, need in checks + rule_checks:
            answers = [server.api("query", query=expr) for expr in exprs]
            for expr, answer in zip(exprs, answers, strict=True):
                assert answer["status"] == "success", f"{where}: {expr}\n{answer}"
            if need and not any(has_data(a, wanted_label) for a in answers):
                missing.append(f"{where}: {' | '.join(exprs)}")
        unhealthy = [f"rule {r['name']}: {r['health']} {r.get('lastError', '')}"
                     for r in rules if r["health"] != "ok"]
        if not (missing or unhealthy) or time.monotonic() > deadline:
            print(f"data after {DATA_TIMEOUT - deadline + time.monotonic():.1f} s")
            break
        time.sleep(1.0)
    assert not unhealthy, "\n".join(unhealthy)
    assert not missing, f"no data after {DATA_TIMEOUT:g} s:\n" + "\n".join(missing)
    up = server.api("query", query='up{job="shopfloor"}')["data"]["result"]
    assert [r["value"][1] for r in up] == ["1"] * agents, up
