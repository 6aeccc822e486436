"""Grafana dashboards and Prometheus rules: valid, stable, and only about metrics that exist.

The metric names the agent exports are read from a live scrape of an in-process agent that
was made to export every family it has (a signal in alarm, an asset detector, rejects of both
kinds, a checkpoint), never from a list kept here: renaming a metric in the agent breaks this
test until the dashboards and rules follow.

The helpers that walk dashboards and rule files are shared with test_dashboard_schema.py,
test_alert_links.py and test_prometheus_live.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from broker import wait_until
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.receiving.codecs import Frame, Samples
from shopfloor.receiving.ingest import Item
from shopfloor.tools.broker import Mosquitto

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "rules"
PROMTOOL = "/usr/bin/promtool"

# Links, bookmarks and the data links between dashboards use these: they must not change.
EXPECTED_UIDS = {
    "shopfloor-plant-overview.json": "shopfloor-plant-overview",
    "shopfloor-signal-drilldown.json": "shopfloor-signal-drilldown",
    "shopfloor-agent-health.json": "shopfloor-agent-health",
}
VARIABLES = ("datasource", "instance", "site", "line", "asset", "signal")
# Topic levels a template may name besides asset and signal: optional ("All" is ".*", which
# also matches a series without the label).
OPTIONAL_LEVELS = ("site", "line")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Written by Prometheus itself for every scrape target, not by the agent.
PROMETHEUS_SERIES = frozenset({"up"})


# --- reading dashboards and rules ------------------------------------------------------------


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` of every panel target."""
    return [(f"{dashboard['uid']}: {p['title']} [{t['refId']}]", t["expr"])
            for p in panels(dashboard) for t in p.get("targets", [])]


def annotation_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, expr)`` of every Prometheus annotation (the built-in one has none)."""
    return [(f"{dashboard['uid']}: annotation {a['name']}", a["expr"])
            for a in dashboard["annotations"]["list"] if "expr" in a]


LABEL_VALUES = re.compile(r"^label_values\((?P<expr>.+),\s*(?P<label>\w+)\s*\)$", re.S)


def variable_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(where, series expr, label)`` of every ``label_values(expr, label)`` variable."""
    out = []
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        query = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = LABEL_VALUES.match(query.strip())
        assert m, f"{dashboard['uid']}: variable {v['name']}: not label_values(...): {query}"
        out.append((f"{dashboard['uid']}: ${v['name']}", m["expr"], m["label"]))
    return out


_KEY = re.compile(r"^(?P<indent>\s*(?:-\s+)?)(?P<key>expr|record|alert):\s*(?P<value>.*)$")


def rule_entries(path: Path) -> list[tuple[str, str, str]]:
    """``(kind, name, expr)`` of each rule in a rule file, ``kind`` "record" or "alert".

    A reader for the YAML these files use (there is no YAML library in the environment):
    ``record:``/``alert:`` names and ``expr:`` as a plain or quoted one-liner or a block
    scalar (``|``, ``>`` with optional ``-``). Anything else is an error, and
    ``test_the_rule_reader_finds_every_rule`` holds the count against promtool's.
    """
    lines = path.read_text().splitlines()
    entries: list[tuple[str, str, str]] = []
    name: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        m = _KEY.match(lines[i])
        i += 1
        if not m:
            continue
        key, value = m["key"], m["value"].strip()
        if key in ("record", "alert"):
            name = (key, value)
            continue
        column = len(m["indent"])
        body = []
        while i < len(lines) and (not lines[i].strip()
                                  or len(lines[i]) - len(lines[i].lstrip()) > column):
            body.append(lines[i].strip())
            i += 1
        if value in ("|", "|-", ">", ">-"):
            expr = "\n".join(body).strip()
        elif value[:1] in ("'", '"'):
            quote = value[0]
            if not value.endswith(quote) or len(value) < 2 or body:
                raise AssertionError(f"{path}: unsupported expr: {value}")
            expr = value[1:-1]
            expr = expr.replace("''", "'") if quote == "'" else (
                expr.replace('\\"', '"').replace("\\\\", "\\"))
        else:
            if not value or value[0] in "[{&*!%@`":
                raise AssertionError(f"{path}: unsupported expr: {value!r}")
            expr = " ".join([value, *body])  # a plain scalar may continue on indented lines
        assert name is not None, f"{path}: expr before any record/alert"
        entries.append((*name, expr))
        name = None
    return entries


def all_rules() -> list[tuple[str, str, str]]:
    return [e for p in sorted(RULES.glob("*.yml")) for e in rule_entries(p)]


def recorded_names() -> set[str]:
    return {name for kind, name, _ in all_rules() if kind == "record"}


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "by", "without", "on",
                       "ignoring", "group_left", "group_right", "inf", "nan"})


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strings, label matchers, range selectors and grouping label lists are removed first, so
    what remains as a bare identifier is a metric name, a function (followed by a paren) or a
    keyword. A selector by ``{__name__=...}`` is refused rather than missed.
    """
    assert "__name__" not in expr, f"select metrics by name, not by __name__: {expr}"
    rest = _STRING.sub('""', expr)
    rest = _MATCHERS.sub("", rest)
    rest = _RANGE.sub("", rest)
    rest = _GROUPING.sub("", rest)
    assert "$" not in rest, f"a variable outside a label matcher or range: {expr}"
    return {m[1] for m in _IDENT.finditer(rest)
            if not m[2] and m[1].lower() not in _KEYWORDS}


def everything_queried() -> list[tuple[str, str]]:
    """``(where, expr)`` of every panel, variable and rule expression in deploy/."""
    out: list[tuple[str, str]] = []
    for dashboard in load_dashboards().values():
        out += panel_queries(dashboard)
        out += annotation_queries(dashboard)
        out += [(where, expr) for where, expr, _ in variable_queries(dashboard)]
    out += [(f"rule {name}", expr) for _, name, expr in all_rules()]
    return out


# --- the names the agent exports, from a live scrape ------------------------------------------


def _config(port: int, state: Path) -> str:
    return f"""
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "dashboards-test"
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5
[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
[[subscriptions]]
topic = "vib/{{asset}}/{{signal}}"
codec = "frame"
features = {{ sample_rate = 12000.0 }}
[metrics]
port = 0
[state]
directory = "{state}"
checkpoint_interval = 1.0
[[signals]]
asset = "press-1"
name = "force"
[[signals]]
asset = "press-1"
name = "stroke"
"""


@pytest.fixture
def exported_names(mosquitto: Mosquitto, tmp_path: Path) -> set[str]:
    """Sample names on a live /metrics once every family the agent has is present."""
    agent = Agent(parse_agent_config(_config(mosquitto.port, tmp_path / "state")),
                  CollectorRegistry())
    agent.start()
    try:
        # Healthy long enough for the default warm-ups to end before the fault: the asset's
        # detector scores after 300 rows (forecasters chosen on 100, covariance on 200), its
        # pot threshold calibrates on the next 200, and the alarms' warm-up is 400 samples.
        healthy, n = 600, 650
        rng = np.random.default_rng(11)
        ts = time.time() - n + np.arange(float(n))
        x = rng.normal(0.0, 1.0, (n, 2))
        x[healthy:] += (8.0, -8.0)  # both signals and the asset alarm
        x[healthy + 10, 0] = np.nan  # a sample rejected by the signal's gate
        for j, name in enumerate(("force", "stroke")):
            agent.queue.put(Item(f"press-1/{name}", 0, (), Samples(ts, x[:, j]), time.time()))
        agent.ingest.on_message("elsewhere/x", b"1", time.time())  # a rejected message
        frame = Frame(time.time(), 12_000.0, rng.normal(0.0, 0.1, 2048))  # frame features
        agent.ingest.admitted.add("pump-1/accel")
        agent.queue.put(Item("pump-1/accel", 1, (), frame, time.time()))
        assert wait_until(lambda: agent.worker.processed >= 3, 10)
        assert wait_until(lambda: agent.last_checkpoint is not None, 10)
        url = f"http://127.0.0.1:{agent.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        agent.stop()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


# --- tests ------------------------------------------------------------------------------------


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names(
        'sum by (asset) (rate(a_total{x="{b}", y=~"$asset"}[$__rate_interval])) '
        "/ on (instance) group_left (signal) c:d:ratio"
    ) == {"a_total", "c:d:ratio"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))") == {
        "h_bucket"}
    assert metric_names("time() - max(ts_seconds offset 5m) > 1e3 and on() vector(1)") == {
        "ts_seconds"}
    assert metric_names('up{job="x"} == 0 unless count_values("by", v) or w') == {"up", "v", "w"}
    with pytest.raises(AssertionError):
        metric_names('{__name__="hidden"}')
    with pytest.raises(AssertionError):
        metric_names("rate(x[5m]) * $factor")


def test_the_rule_reader_reads_each_scalar_form(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text("""groups:
  - name: g
    rules:
      - record: a:plain
        expr: sum(x)
          by (y)
      - alert: Quoted
        expr: 'z{k="v"} > 0'
        for: 1m
      - alert: DoubleQuoted
        expr: "q{k=\\"v\\"} == 1"
      - record: a:block
        expr: |
          a
          / b
""")
    assert rule_entries(rules) == [
        ("record", "a:plain", "sum(x) by (y)"),
        ("alert", "Quoted", 'z{k="v"} > 0'),
        ("alert", "DoubleQuoted", 'q{k="v"} == 1'),
        ("record", "a:block", "a\n/ b"),
    ]
    rules.write_text("- record: r\n  expr: [not, promql]\n")
    with pytest.raises(AssertionError, match="unsupported"):
        rule_entries(rules)


def test_the_rule_reader_finds_every_rule() -> None:
    # promtool counts the rules with Prometheus' own parser; the reader must see as many.
    done = subprocess.run([_promtool(), "check", "rules", *map(str, sorted(RULES.glob("*.yml")))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    counted = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", done.stdout))
    rules = all_rules()
    assert len(rules) == counted > 0
    assert all(expr.strip() for _, _, expr in rules)


def test_dashboards_are_json_with_their_stable_unique_uids() -> None:
    dashboards = load_dashboards()
    assert {n: d["uid"] for n, d in dashboards.items()} == EXPECTED_UIDS
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(titles)) == len(titles)
    for name, d in dashboards.items():
        assert d["id"] is None, f"{name}: provisioned dashboards carry no database id"
        assert d["schemaVersion"] >= 39, name
        assert "shopfloor" in d["tags"], name  # the dashboards' links list them by tag
        assert d["editable"] is False, name  # provisioned read-only: edit the file


# A selector with matchers: the metric name and what is between the braces.
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\{([^{}]*)\}")


def test_every_dashboard_has_the_templated_variables() -> None:
    provisioned = re.search(r"^\s*uid:\s*(\S+)\s*$",
                            (DEPLOY / "grafana/provisioning/datasources/shopfloor-prometheus.yml")
                            .read_text(), re.M)
    assert provisioned
    for name, d in load_dashboards().items():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert tuple(variables) == VARIABLES, name
        ds = variables["datasource"]
        assert (ds["type"], ds["query"]) == ("datasource", "prometheus"), name
        assert ds["current"]["value"] == provisioned[1], f"{name}: defaults to another uid"
        for var in VARIABLES[1:]:
            assert variables[var]["type"] == "query", name
            assert variables[var]["datasource"] == DATASOURCE, name
        queries = {where.split("$")[1]: (expr, label) for where, expr, label in
                   variable_queries(d)}
        assert {v: label for v, (_, label) in queries.items()} == {
            v: v for v in VARIABLES[1:]}
        assert queries["instance"][0] == "shopfloor_build_info", name
        # Each variable narrows the next: agents, then sites, lines, assets and signals, all
        # read from the signals' scores.
        for i, var in enumerate(VARIABLES[2:], start=2):
            expr = queries[var][0]
            assert metric_names(expr) == {"shopfloor_signal_score"}, f"{name}: ${var}"
            for before in VARIABLES[1:i]:
                assert f'{before}=~"${before}"' in expr, f"{name}: ${var} ignores ${before}"
        for var in OPTIONAL_LEVELS:
            v = variables[var]
            assert (v["includeAll"], v["allValue"]) == (True, ".*"), f"{name}: ${var}"
            assert v["current"]["value"] == ["$__all"], f"{name}: ${var} must default to All"
        # Every query is filtered by the agents chosen, and every per-signal or per-asset
        # series by the site, line and asset too.
        for where, expr in panel_queries(d) + annotation_queries(d):
            assert "$instance" in expr, f"{where} ignores the instance variable"
            for metric, matchers in _SELECTOR.findall(expr):
                if metric.startswith(("shopfloor_signal_", "shopfloor_asset_", "signal:",
                                      "asset:")):
                    for var in ("instance", *OPTIONAL_LEVELS, "asset"):
                        assert f'{var}=~"${var}"' in matchers, f"{where}: {metric} ignores ${var}"


def test_the_drilldown_is_about_one_signal() -> None:
    d = load_dashboards()["shopfloor-signal-drilldown.json"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    # One asset and one signal at a time: the value panels print that signal's unit.
    for var in ("asset", "signal"):
        assert (variables[var]["multi"], variables[var]["includeAll"]) == (False, False), var
    for where, expr in panel_queries(d) + annotation_queries(d):
        for metric, matchers in _SELECTOR.findall(expr):
            if metric.startswith(("shopfloor_signal_", "signal:")):
                assert 'signal=~"$signal"' in matchers, f"{where}: {metric} ignores $signal"


def test_data_links_open_dashboards_that_exist() -> None:
    uids = set(EXPECTED_UIDS.values())
    links = [link["url"] for d in load_dashboards().values() for p in panels(d)
             for link in p["fieldConfig"]["defaults"].get("links", [])]
    assert links
    for url in links:
        m = re.match(r"^/d/([\w-]+)/", url)
        assert m, url
        assert m[1] in uids, url
        assert "var-asset=" in url, url
        assert "var-signal=" in url, url


def test_every_recording_rule_is_used_by_a_dashboard_or_an_alert() -> None:
    used = set().union(*(metric_names(expr) for _, expr in everything_queried()))
    assert recorded_names() <= used, recorded_names() - used


def test_every_queried_metric_is_exported_by_the_agent_or_recorded(
    exported_names: set[str],
) -> None:
    known = exported_names | recorded_names() | PROMETHEUS_SERIES
    unknown = [(where, name) for where, expr in everything_queried()
               for name in sorted(metric_names(expr)) if name not in known]
    assert not unknown, "\n".join(f"{where}: {name} is neither exported nor recorded"
                                  for where, name in unknown)
    # The scrape is complete enough to be worth checking against.
    assert {"shopfloor_asset_alarm_top_signal_info", "shopfloor_messages_rejected_total",
            "shopfloor_signal_samples_rejected_total", "process_cpu_seconds_total",
            "shopfloor_checkpoint_last_timestamp_seconds"} <= exported_names


def _promtool() -> str:
    if not Path(PROMTOOL).is_file():
        pytest.fail(f"{PROMTOOL} is missing: `./dev.sh test` installs it (Debian package "
                    "prometheus)", pytrace=False)
    return PROMTOOL
