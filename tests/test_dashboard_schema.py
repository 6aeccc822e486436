"""The dashboards as Grafana 10 and 11 load them, checked without a Grafana server.

No Grafana runs in the test environment. Every dashboard is validated against Grafana's
dashboard model as a JSON Schema: grafana_schema.py, our re-statement of the Grafana
Foundation SDK's generated schemas (the dashboard, the panel kinds we use, Prometheus
queries). It has the keys of that model with their types, enums and required lists, and
rejects keys the model does not have; the negative tests below show it catching what a hand
edit breaks. This file adds what a schema cannot say: panel types and transformations
Grafana has, a grid of 24 columns without overlaps, unique panel ids, datasources that are
provisioned, variables that are defined before they are used. And the conventions of these
dashboards: every panel says what it shows when it has nothing (``noValue``) and in which
unit, the values of a signal are printed in the signal's own unit (from
``shopfloor_signal_info``), alarm raises are annotations, alarm states a state timeline.
That every query runs against a real Prometheus is test_prometheus_live.py's job; that
every metric exists, test_dashboards.py's.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft7Validator

from grafana_schema import DASHBOARD_SCHEMA, PANEL_KINDS
from test_dashboards import (
    DASHBOARDS,
    DATASOURCE,
    DEPLOY,
    annotation_queries,
    load_dashboards,
    metric_names,
    panels,
)

# Panel plugins built into Grafana 10 and 11.
PANEL_TYPES = frozenset(
    {
        "alertlist",
        "annolist",
        "barchart",
        "bargauge",
        "candlestick",
        "canvas",
        "dashlist",
        "datagrid",
        "flamegraph",
        "gauge",
        "geomap",
        "heatmap",
        "histogram",
        "logs",
        "news",
        "nodeGraph",
        "piechart",
        "row",
        "stat",
        "state-timeline",
        "status-history",
        "table",
        "text",
        "timeseries",
        "traces",
        "trend",
        "xychart",
    }
)
TRANSFORMATIONS = frozenset(
    {
        "calculateField",
        "concatenate",
        "configFromData",
        "convertFieldType",
        "extractFields",
        "filterByRefId",
        "filterByValue",
        "filterFieldsByName",
        "formatString",
        "formatTime",
        "groupBy",
        "groupingToMatrix",
        "heatmap",
        "histogram",
        "joinByField",
        "joinByLabels",
        "labelsToFields",
        "limit",
        "merge",
        "organize",
        "partitionByValues",
        "prepareTimeSeries",
        "reduce",
        "renameByRegex",
        "rowsToFields",
        "seriesToColumns",
        "seriesToRows",
        "sortBy",
        "spatial",
        "timeSeriesTable",
    }
)
FIELD_MATCHERS = frozenset(
    {
        "byName",
        "byRegexp",
        "byType",
        "byFrameRefID",
        "byValue",
        "byNames",
        "numeric",
        "time",
        "first",
        "firstTimeField",
    }
)
VARIABLE_TYPES = frozenset(
    {"query", "datasource", "custom", "constant", "interval", "textbox", "adhoc"}
)
# Variables Grafana defines itself (dashboard, time range, data links, field display).
BUILTIN_VARIABLES = frozenset(
    {
        "__all",
        "__interval",
        "__interval_ms",
        "__rate_interval",
        "__rate_interval_ms",
        "__range",
        "__range_s",
        "__range_ms",
        "__from",
        "__to",
        "__timezone",
        "__dashboard",
        "__org",
        "__user",
        "__url_time_range",
        "__data",
        "__field",
        "__series",
        "__value",
        "__name",
        "__cell",
        "timeFilter",
        "__timeFilter",
    }
)
# The units these dashboards use, as Grafana names them, and its custom forms.
UNITS = frozenset(
    {
        "none",
        "short",
        "s",
        "ms",
        "percentunit",
        "percent",
        "bytes",
        "cps",
        "velocitymms",
        "dateTimeAsIso",
        "dateTimeFromNow",
    }
)
CUSTOM_UNIT = re.compile(r"^(suffix|prefix|si|count|currency|time):.+$")
REDUCERS = frozenset(
    {
        "lastNotNull",
        "last",
        "first",
        "firstNotNull",
        "min",
        "max",
        "mean",
        "sum",
        "count",
        "range",
        "delta",
        "diff",
        "allValues",
    }
)
GRAFANA_BUILTIN_DATASOURCE = {"type": "grafana", "uid": "-- Grafana --"}
# $name, ${name}, ${name:format}, ${__data.fields.x} and the old [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def strings(node: Any) -> Iterator[str]:
    """Every string anywhere in a JSON document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def datasource_refs(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(where, value)`` of every ``datasource`` key anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield where, value
            yield from datasource_refs(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from datasource_refs(value, f"{where}[{i}]")


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of the provisioned datasources (the YAML read as its lines say)."""
    out: dict[str, str] = {}
    for path in sorted((DEPLOY / "grafana/provisioning/datasources").glob("*.yml")):
        for entry in re.split(r"^\s*- name:", path.read_text(), flags=re.M)[1:]:
            uid = re.search(r"^\s*uid:\s*(\S+)\s*$", entry, re.M)
            kind = re.search(r"^\s*type:\s*(\S+)\s*$", entry, re.M)
            assert uid, f"{path}: a datasource without a uid"
            assert kind, f"{path}: a datasource without a type"
            out[uid[1]] = kind[1]
    return out


def unit_ok(unit: Any) -> bool:
    return isinstance(unit, str) and (unit in UNITS or bool(CUSTOM_UNIT.match(unit)))


def all_panels() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, d in load_dashboards().items():
        for p in panels(d):
            yield f"{name}: {p.get('title')!r}", d, p


# --- Grafana's schema --------------------------------------------------------------------------

VALIDATOR = Draft7Validator(DASHBOARD_SCHEMA)


def schema_errors(document: Any) -> list[str]:
    """Every way ``document`` breaks Grafana's dashboard schema, each at its JSON path."""
    out = []
    for error in sorted(VALIDATOR.iter_errors(document), key=lambda e: e.json_path):
        line = f"{error.json_path}: {error.message}"
        if error.context:  # of an anyOf: say which alternative came closest, and why not
            closest = jsonschema.exceptions.best_match(error.context)
            line += f" (closest: {closest.json_path}: {closest.message})"
        out.append(line)
    return out


def test_the_schema_is_a_draft7_json_schema() -> None:
    Draft7Validator.check_schema(DASHBOARD_SCHEMA)


@pytest.mark.parametrize("name", sorted(p.name for p in DASHBOARDS.glob("*.json")))
def test_the_dashboard_matches_grafanas_schema(name: str) -> None:
    errors = schema_errors(load_dashboards()[name])
    assert not errors, f"{name} breaks Grafana's dashboard schema:\n" + "\n".join(errors)


def test_the_schema_knows_the_options_of_every_panel_type_used() -> None:
    # Else a new kind of panel would have its options and custom field config unchecked.
    for where, _, p in all_panels():
        assert p["type"] in PANEL_KINDS, f"{where}: add the {p['type']} kind to grafana_schema"


# A mistake put into the drill-down (it has a panel of every kind), and the JSON path of
# the error the schema must report for it.
Mistake = Callable[[dict[str, Any]], str]


def _first(d: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    i, panel = next((i, p) for i, p in enumerate(d["panels"]) if p["type"] == kind)
    return f"$.panels[{i}]", panel


def _misspelled_panel_key(d: dict[str, Any]) -> str:
    where, p = _first(d, "timeseries")
    p["gridpos"] = p.pop("gridPos")
    return where


def _grid_width_as_a_string(d: dict[str, Any]) -> str:
    where, p = _first(d, "stat")
    p["gridPos"]["w"] = str(p["gridPos"]["w"])
    return f"{where}.gridPos.w"


def _unknown_variable_hide(d: dict[str, Any]) -> str:
    d["templating"]["list"][1]["hide"] = 5  # 0 label and value, 1 value only, 2 nothing
    return "$.templating.list[1].hide"


def _unknown_timeseries_option(d: dict[str, Any]) -> str:
    where, p = _first(d, "timeseries")
    p["options"]["legendMode"] = "table"  # it is options.legend.displayMode
    return f"{where}.options"


def _unknown_stat_color_mode(d: dict[str, Any]) -> str:
    where, p = _first(d, "stat")
    p["options"]["colorMode"] = "background-solid"  # it is background_solid
    return f"{where}.options.colorMode"


def _misspelled_custom_field_config(d: dict[str, Any]) -> str:
    where, p = _first(d, "state-timeline")
    custom = p["fieldConfig"]["defaults"]["custom"]
    custom["fillopacity"] = custom.pop("fillOpacity")
    return f"{where}.fieldConfig.defaults.custom"


def _misspelled_prometheus_target_key(d: dict[str, Any]) -> str:
    where, p = _first(d, "table")
    p["targets"][0]["legendformat"] = p["targets"][0].pop("legendFormat")
    return f"{where}.targets[0]"


def _threshold_step_without_color(d: dict[str, Any]) -> str:
    where, p = _first(d, "stat")
    del p["fieldConfig"]["defaults"]["thresholds"]["steps"][0]["color"]
    return f"{where}.fieldConfig.defaults.thresholds.steps[0]"


def _unknown_mapping_type(d: dict[str, Any]) -> str:
    where, p = _first(d, "state-timeline")
    p["fieldConfig"]["defaults"]["mappings"][0]["type"] = "values"
    return f"{where}.fieldConfig.defaults.mappings[0].type"


def _annotation_key_of_another_datasource(d: dict[str, Any]) -> str:
    # Prometheus's annotation fields are allowed beside a Prometheus query only.
    i, a = next((i, a) for i, a in enumerate(d["annotations"]["list"]) if a.get("builtIn"))
    a["titleFormat"] = "{{asset}}"
    return f"$.annotations.list[{i}]"


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        pytest.param(_misspelled_panel_key, "'gridpos' was unexpected", id="panel-key"),
        pytest.param(_grid_width_as_a_string, "is not of type 'integer'", id="gridPos.w-type"),
        pytest.param(_unknown_variable_hide, "5 is not one of [0, 1, 2]", id="variable-hide"),
        pytest.param(_unknown_timeseries_option, "'legendMode' was unexpected", id="ts-option"),
        pytest.param(_unknown_stat_color_mode, "'background-solid' is not one of", id="stat"),
        pytest.param(_misspelled_custom_field_config, "'fillopacity' was unexpected", id="custom"),
        pytest.param(
            _misspelled_prometheus_target_key,
            "'legendformat' was unexpected",
            id="prometheus-target",
        ),
        pytest.param(
            _threshold_step_without_color, "'color' is a required property", id="threshold"
        ),
        pytest.param(_unknown_mapping_type, "'values' is not one of", id="mapping-type"),
        pytest.param(
            _annotation_key_of_another_datasource, "'titleFormat' was unexpected", id="annotation"
        ),
    ],
)
def test_the_schema_rejects_a_broken_dashboard(mistake: Mistake, message: str) -> None:
    d = copy.deepcopy(load_dashboards()["shopfloor-signal-drilldown.json"])
    where = mistake(d)
    errors = schema_errors(d)
    assert any(e.startswith(f"{where}: ") and message in e for e in errors), errors


# --- the file and the dashboard ----------------------------------------------------------------


def test_files_keep_their_formatting() -> None:
    # Two-space JSON as json.dumps writes it: diffs stay readable, and a dashboard exported
    # from Grafana has to be tidied before it lands.
    for path in sorted(DASHBOARDS.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", path


# Optional in Grafana's schema (which checks their types), always set in ours.
DASHBOARD_KEYS = (
    "uid",
    "title",
    "description",
    "tags",
    "timezone",
    "editable",
    "graphTooltip",
    "schemaVersion",
    "version",
    "time",
    "refresh",
    "templating",
    "annotations",
    "links",
    "panels",
)


def test_dashboards_have_the_keys_grafana_reads() -> None:
    for name, d in load_dashboards().items():
        missing = [key for key in DASHBOARD_KEYS if key not in d]
        assert not missing, f"{name}: {missing}"
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]), name
        assert d["timezone"] in ("", "browser", "utc"), name
        assert re.fullmatch(r"(\d+[smhd])?", d["refresh"]), name
        assert "list" in d["templating"], name
        assert "list" in d["annotations"], name


PANEL_KEYS = (
    "id",
    "type",
    "title",
    "description",
    "gridPos",
    "datasource",
    "fieldConfig",
    "options",
    "targets",
)


def test_panels_are_of_known_types_with_the_keys_grafana_reads() -> None:
    for where, _, p in all_panels():
        missing = [key for key in PANEL_KEYS if key not in p]
        assert not missing, f"{where}: {missing}"
        assert p["type"] in PANEL_TYPES, f"{where}: no panel type {p['type']!r} in Grafana"
        assert p["title"].strip(), where
        assert p["description"].strip(), f"{where}: say what the panel shows"
        refs = [t["refId"] for t in p["targets"]]
        assert len(set(refs)) == len(refs) > 0, f"{where}: refIds must be unique"
        for t in p["targets"]:
            assert t["expr"].strip(), where
            if t.get("format") == "table":
                assert t.get("instant") is True, f"{where} [{t['refId']}]: a table is instant"


def test_panels_have_unique_ids_and_fit_the_grid_without_overlapping() -> None:
    for name, d in load_dashboards().items():
        # Integers, 1 <= w <= 24, h >= 1 and x < 24 are the schema's to check.
        ids = [p["id"] for p in panels(d)]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        assert all(i > 0 for i in ids), name
        cells: dict[tuple[int, int], str] = {}
        for p in panels(d):
            where = f"{name}: {p['title']}"
            g = p["gridPos"]
            assert min(g["x"], g["y"]) >= 0, where
            assert g["x"] + g["w"] <= 24, f"{where} is wider than the grid"
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    assert (x, y) not in cells, f"{where} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = p["title"]


def test_every_datasource_is_the_provisioned_one_or_grafanas_own() -> None:
    provisioned = provisioned_datasources()
    for name, d in load_dashboards().items():
        ds = next(v for v in d["templating"]["list"] if v["name"] == "datasource")
        # The variable offers every datasource of the provisioned one's type, and defaults to it.
        assert provisioned.get(ds["current"]["value"]) == ds["query"] == DATASOURCE["type"], name
        for where, ref in datasource_refs(d):
            if ref == GRAFANA_BUILTIN_DATASOURCE:
                assert where.startswith(".annotations.list["), f"{name}{where}"
                continue
            assert ref == DATASOURCE, f"{name}{where}: {ref}"
        builtin = [a for a in d["annotations"]["list"] if a.get("builtIn")]
        assert [a["datasource"] for a in builtin] == [GRAFANA_BUILTIN_DATASOURCE], name


def test_every_variable_used_is_defined_before_its_use() -> None:
    for name, d in load_dashboards().items():
        defined: list[str] = []
        for v in d["templating"]["list"]:
            assert v["type"] in VARIABLE_TYPES, f"{name}: ${v['name']}"
            assert re.fullmatch(r"[A-Za-z_]\w*", v["name"]), name
            used = {a or b or c for text in strings(v) for a, b, c in _VARIABLE.findall(text)}
            unknown = used - set(defined) - BUILTIN_VARIABLES
            assert not unknown, f"{name}: ${v['name']} uses {unknown} before they are defined"
            if v["type"] == "query":
                assert v["definition"] == v["query"]["query"], f"{name}: ${v['name']}"
                assert v["refresh"] in (1, 2), f"{name}: ${v['name']} is never refreshed"
                if v["includeAll"]:
                    assert v.get("allValue") == ".*", f"{name}: ${v['name']}"
            assert v["name"] not in defined, f"{name}: ${v['name']} defined twice"
            defined.append(v["name"])
        rest = {k: val for k, val in d.items() if k != "templating"}
        used = {a or b or c for text in strings(rest) for a, b, c in _VARIABLE.findall(text)}
        unknown = used - set(defined) - BUILTIN_VARIABLES
        assert not unknown, f"{name}: undefined variables {unknown}"


def test_links_set_only_variables_their_dashboard_has() -> None:
    dashboards = {d["uid"]: d for d in load_dashboards().values()}
    for where, _, p in all_panels():
        for link in p["fieldConfig"]["defaults"].get("links", []):
            m = re.match(r"^/d/([\w-]+)/[\w-]+\?(.*)$", link["url"])
            assert m, f"{where}: {link['url']}"
            assert m[1] in dashboards, f"{where}: {link['url']}"
            names = {v["name"] for v in dashboards[m[1]]["templating"]["list"]}
            for var in re.findall(r"(?:^|&)var-(\w+)=", m[2]):
                assert var in names, f"{where}: {m[1]} has no variable {var}"


# --- what a panel shows -------------------------------------------------------------------------


def test_every_panel_says_what_it_shows_when_there_is_nothing() -> None:
    # Every panel here can be empty: before the first sample, for a signal without the feature
    # (a scalar has no ISO zone, an asset with one signal no asset detector), or for filters
    # that match nothing. "No data" alone reads as a broken dashboard.
    for where, _, p in all_panels():
        no_value = p["fieldConfig"]["defaults"].get("noValue")
        assert isinstance(no_value, str), f"{where} has no noValue"
        assert no_value.strip(), f"{where} has an empty noValue"


def test_every_panel_has_a_unit_grafana_knows() -> None:
    for where, _, p in all_panels():
        assert unit_ok(p["fieldConfig"]["defaults"].get("unit")), f"{where}: unit"
        for override in p["fieldConfig"]["overrides"]:
            assert override["matcher"]["id"] in FIELD_MATCHERS, where
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert unit_ok(prop["value"]), f"{where}: {prop['value']}"


def test_field_config_and_options_are_well_formed() -> None:
    # The shapes, modes and enums are the schema's; these are the values it cannot check.
    for where, _, p in all_panels():
        defaults = p["fieldConfig"]["defaults"]
        steps = defaults.get("thresholds", {"mode": "absolute", "steps": [{"value": None}]})
        values = [s["value"] for s in steps["steps"]]
        assert values[0] is None, f"{where}: the base threshold step has no value"
        assert values[1:] == sorted(values[1:]), f"{where}: thresholds out of order"
        for transformation in p.get("transformations", []):
            assert transformation["id"] in TRANSFORMATIONS, f"{where}: {transformation['id']}"
        if p["type"] == "stat":
            assert set(p["options"]["reduceOptions"]["calcs"]) <= REDUCERS, where


# The series whose values are in the signal's own unit, and where that unit is exported.
VALUE_METRICS = frozenset({"shopfloor_signal_value", "shopfloor_signal_feature"})
UNIT_JOIN = re.compile(r"group_left\s*\(\s*unit\s*\)\s*shopfloor_signal_info\b")


def _matchers(expr: str, metric: str) -> set[str]:
    """The label matchers of every selector of ``metric`` in ``expr``, less any on feature."""
    found = re.findall(rf"\b{re.escape(metric)}\{{([^{{}}]*)\}}", expr)
    assert found, f"{metric} without matchers in {expr}"
    out = {m.strip() for group in found for m in group.split(",")}
    return {m for m in out if not m.startswith("feature")}


def test_signal_values_are_shown_in_the_signals_unit() -> None:
    # The agent exports each signal's unit as a label of shopfloor_signal_info, not with the
    # value. A panel shows it either by Grafana's "Config from query results" transformation
    # (the unit column of an instant table query of shopfloor_signal_info, for the same
    # signals, sets the unit of the value fields) or by joining the unit in as a label.
    checked = 0
    for where, _, p in all_panels():
        targets = {t["refId"]: t for t in p["targets"]}
        for t in p["targets"]:
            values = metric_names(t["expr"]) & VALUE_METRICS
            if not values:
                continue
            checked += 1
            if UNIT_JOIN.search(t["expr"]):
                continue
            configs = [
                tr["options"]
                for tr in p.get("transformations", [])
                if tr["id"] == "configFromData"
                and tr["options"].get("applyTo") == {"id": "byFrameRefID", "options": t["refId"]}
            ]
            assert len(configs) == 1, f"{where} [{t['refId']}] shows values without a unit"
            config = configs[0]
            assert {"fieldName": "unit", "handlerKey": "unit"} in config["mappings"], where
            info = targets[config["configRefId"]]
            assert metric_names(info["expr"]) == {"shopfloor_signal_info"}, where
            assert (info.get("format"), info.get("instant")) == ("table", True), where
            for metric in values:
                assert _matchers(info["expr"], "shopfloor_signal_info") == _matchers(
                    t["expr"], metric
                ), f"{where}: the unit of other signals"
    assert checked >= 4


def test_the_drilldown_opens_on_the_signals_state_and_value() -> None:
    d = load_dashboards()["shopfloor-signal-drilldown.json"]
    by_y = sorted(panels(d), key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    top_row = [p for p in by_y if p["gridPos"]["y"] == 0]
    assert top_row[0]["title"] == "Alarm"
    shows = {name for p in top_row for t in p["targets"] for name in metric_names(t["expr"])}
    assert {
        "shopfloor_signal_value",
        "signal:shopfloor_signal_severity:max10m",
        "shopfloor_signal_likelihood",
        "shopfloor_signal_iso_zone",
    } <= shows
    # Right below the stats, the value over time, the full width.
    below = next(p for p in by_y if p["gridPos"]["y"] > 0)
    assert below["type"] == "timeseries"
    assert below["gridPos"]["w"] == 24
    assert "shopfloor_signal_value" in metric_names(below["targets"][0]["expr"])


STATES = {"-1": "learning", "0": "normal", "1": "alarm", "2": "ALARM (critical)"}


@pytest.mark.parametrize(
    ("dashboard", "by"),
    [
        ("shopfloor-plant-overview.json", "max by (site, line, asset)"),
        ("shopfloor-signal-drilldown.json", ""),
    ],
)
def test_alarm_states_are_a_state_timeline(dashboard: str, by: str) -> None:
    d = load_dashboards()[dashboard]
    timelines = [p for p in panels(d) if p["type"] == "state-timeline"]
    assert len(timelines) == 1, dashboard
    p = timelines[0]
    expr = p["targets"][0]["expr"]
    assert expr.startswith(by), expr
    assert {
        "shopfloor_signal_alarm_active",
        "signal:shopfloor_signal_severity:max10m",
        "shopfloor_signal_warming_up",
    } <= metric_names(expr)
    # Asset-level alarms count too, with their own severity.
    assert any(
        "asset:shopfloor_asset_severity:max10m" in metric_names(t["expr"]) for t in p["targets"]
    )
    mapped = {
        value: option["text"]
        for m in p["fieldConfig"]["defaults"]["mappings"]
        for value, option in m["options"].items()
    }
    assert mapped == STATES


def test_alarm_raises_are_annotations() -> None:
    for name, d in load_dashboards().items():
        if name == "shopfloor-agent-health.json":
            continue
        queries = dict(annotation_queries(d))
        raised = [
            (where, expr)
            for where, expr in queries.items()
            if "shopfloor_signal_alarms_raised_total" in metric_names(expr)
        ]
        assert len(raised) == 1, name
        # increase() rather than changes(): an agent restart resets the counter, no raise.
        assert raised[0][1].startswith("increase("), name
        assert raised[0][1].endswith(" > 0"), name
        for a in d["annotations"]["list"]:
            assert {"name", "datasource", "enable", "iconColor"} <= set(a), name
            if "expr" in a:
                assert a["enable"] is True, name
                assert a["datasource"] == DATASOURCE, name
                assert "{{asset}}/{{signal}}" in a["titleFormat"], name
                assert set(a["tagKeys"].split(",")) == {"asset", "signal"}, name
