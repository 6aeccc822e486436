"""Grafana's dashboard JSON model as a JSON Schema (draft-07), for checking our dashboards.

Written from the JSON Schemas that the Grafana Foundation SDK generates from Grafana's own
CUE kinds, repository ``grafana/grafana-foundation-sdk``, as read at these commits:

- ``jsonschema/dashboard.jsonschema.json`` at 003f478c48fa9b19bfaca86e11deef1d71d2f1e2
  (Dashboard, Panel, RowPanel, GridPos, FieldConfigSource, FieldConfig, DataSourceRef,
  VariableModel, AnnotationQuery, DashboardLink, Threshold, ValueMapping and the rest);
- ``jsonschema/timeseries.jsonschema.json`` at 19ec1c5a457a77df990ed2969c614575be601d33;
- ``jsonschema/stat.jsonschema.json`` at 0f5c219242bd439ef2a561af33475378f50be101;
- ``jsonschema/statetimeline.jsonschema.json`` at 009c8f2eb08c15750c5d2514c99b563753db5254;
- ``jsonschema/table.jsonschema.json`` at 046e46e51d0f298423f9c44eb63dfab73a740159;
- ``jsonschema/prometheus.jsonschema.json`` at 19ec1c5a457a77df990ed2969c614575be601d33
  (the query, or target, of a Prometheus panel).

This module is a re-statement, not a copy: no upstream file is vendored. It says, in our own
words and helpers, what those schemas declare for the parts of the model our dashboards use:
the property names and their types, the enums, the ``required`` lists and which objects are
closed (``additionalProperties: false``). Descriptions and defaults are left out. Where the
SDK lets anything through (a panel's ``targets`` entry is any DataQuery, a transformation's
``options`` any object, ``fieldConfig.defaults.custom`` whatever the panel plugin declares),
so does this schema, and the panel kinds and datasources it knows narrow that down:
``options`` and ``fieldConfig.defaults.custom`` of ``timeseries``, ``stat``,
``state-timeline`` and ``table`` panels, and the targets of Prometheus.

Unions with a tag (a panel or a row, the four value mappings, a panel's kind) are written as
``if``/``then`` on the tag rather than as ``anyOf``: the same documents pass, and an error
names the property at fault instead of "not valid under any of the given schemas".

Where this schema differs from the SDK's JSON Schema, and why. Each case is a value Grafana
itself writes and reads, which the JSON Schema rendering loses; the SDK's own TypeScript types
(``typescript/src/dashboard/types.gen.ts``) or Grafana's CUE source of the kind
(``grafana/grafana``, ``kinds/dashboard/dashboard_kind.cue``) say so:

- ``null`` is allowed for the dashboard ``id`` (``number | null`` in the SDK's types,
  ``int64 | null`` in Grafana's CUE; a provisioned dashboard has no id of its own), for a
  threshold step's ``value`` (``number | null``: the base step is -Infinity, which JSON
  writes as null) and for a range mapping's ``from``/``to`` (``number | null``).
- Fields typed as anything in the SDK's types and CUE (``any``, ``_``), which the JSON Schema
  renders as "an object", stay anything: a field matcher's ``options`` (``"state"`` for
  ``byName``), an override property's ``value`` (``"velocitymms"`` for ``unit``), the values
  inside an object ``query`` of a variable.
- Grafana's CUE leaves VariableModel and AnnotationQuery open (``...``: "datasources spread
  their query into the base object"), the SDK's JSON Schema closes them. They stay closed
  here, with the keys Grafana writes there for what our dashboards use: ``definition`` of a
  query variable (the query as text, shown in the variables list), and the Prometheus
  annotation fields ``expr``, ``step``, ``titleFormat``, ``textFormat``, ``tagKeys`` and
  ``useValueForTime`` (declared on AnnotationQuery by later versions of the SDK) when the
  annotation's datasource is Prometheus. The ``target`` of a Prometheus annotation is a
  Prometheus query; of any other, the SDK's AnnotationTarget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Schema = dict[str, Any]

# --- helpers for the shapes that repeat -------------------------------------------------------

STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
NUMBER: Schema = {"type": "number"}
INTEGER: Schema = {"type": "integer"}
ANYTHING: Schema = {}
ANY_OBJECT: Schema = {"type": "object"}  # open: any keys, any values
NUMBER_OR_NULL: Schema = {"type": ["number", "null"]}


def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def enum(*values: Any) -> Schema:
    return {"enum": list(values)}


def closed(properties: Schema, required: Iterable[str] = ()) -> Schema:
    """An object with only these properties (``additionalProperties: false``)."""
    schema: Schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def either(*alternatives: Schema) -> Schema:
    return {"anyOf": list(alternatives)}


def has(path: tuple[str, ...], value: Any) -> Schema:
    """A condition: the document has ``value`` at the key path ``path``."""
    schema: Schema = {"const": value}
    for key in reversed(path):
        schema = {"type": "object", "required": [key], "properties": {key: schema}}
    return schema


def at(path: tuple[str, ...], schema: Schema) -> Schema:
    """A constraint on the value at ``path``, if it is there."""
    for key in reversed(path):
        schema = {"properties": {key: schema}}
    return schema


# --- the dashboard (dashboard.jsonschema.json) ------------------------------------------------

DASHBOARD: Schema = closed(
    {
        "id": {"type": ["integer", "null"]},
        "uid": STRING,
        "title": STRING,
        "description": STRING,
        "revision": INTEGER,
        "gnetId": STRING,
        "tags": array(STRING),
        "timezone": STRING,  # an IANA zone, "browser" or "utc"
        "editable": BOOLEAN,
        "graphTooltip": ref("DashboardCursorSync"),
        "time": closed({"from": STRING, "to": STRING}, required=["from", "to"]),
        "timepicker": ref("TimePickerConfig"),
        "fiscalYearStartMonth": {"type": "integer", "exclusiveMaximum": 12},
        "liveNow": BOOLEAN,
        "weekStart": STRING,
        "refresh": either(STRING, {"const": False}),
        "schemaVersion": INTEGER,
        "version": INTEGER,
        "panels": array(ref("PanelOrRow")),
        "templating": closed({"list": array(ref("VariableModel"))}),
        "annotations": ref("AnnotationContainer"),
        "links": array(ref("DashboardLink")),
        # Only a snapshot has one; its shape is not restated here.
        "snapshot": ANY_OBJECT,
    },
    required=["schemaVersion", "templating", "annotations"],
)

TIME_PICKER: Schema = closed(
    {"hidden": BOOLEAN, "refresh_intervals": array(STRING), "time_options": array(STRING)},
    required=["hidden", "refresh_intervals", "time_options"],
)

DASHBOARD_LINK: Schema = closed(
    {
        "title": STRING,
        "type": enum("link", "dashboards"),
        "icon": STRING,
        "tooltip": STRING,
        "url": STRING,  # for type "link"
        "tags": array(STRING),  # for type "dashboards"
        "asDropdown": BOOLEAN,
        "targetBlank": BOOLEAN,
        "includeVars": BOOLEAN,
        "keepTime": BOOLEAN,
    },
    required=[
        "title", "type", "icon", "tooltip", "tags",
        "asDropdown", "targetBlank", "includeVars", "keepTime",
    ],
)  # fmt: skip

DATASOURCE_REF: Schema = closed({"type": STRING, "uid": STRING})

# --- variables ---------------------------------------------------------------------------------

VARIABLE_MODEL: Schema = closed(
    {
        "type": enum(
            "query", "adhoc", "constant", "datasource", "interval", "textbox", "custom", "system"
        ),
        "name": STRING,
        "label": STRING,
        "hide": ref("VariableHide"),
        "skipUrlSync": BOOLEAN,
        "description": STRING,
        # A string, or the datasource's variable query: an object of anything.
        "query": either(STRING, ANY_OBJECT),
        # Not in the SDK's schema: see the module docstring.
        "definition": STRING,
        "datasource": ref("DataSourceRef"),
        "current": ref("VariableOption"),
        "multi": BOOLEAN,
        "options": array(ref("VariableOption")),
        "refresh": ref("VariableRefresh"),
        "sort": ref("VariableSort"),
        "includeAll": BOOLEAN,
        "allValue": STRING,
        "regex": STRING,
    },
    required=["type", "name"],
)

STRING_OR_STRINGS: Schema = either(STRING, array(STRING))
VARIABLE_OPTION: Schema = closed(
    {"selected": BOOLEAN, "text": STRING_OR_STRINGS, "value": STRING_OR_STRINGS},
    required=["text", "value"],
)

# --- annotations -------------------------------------------------------------------------------

ANNOTATION_QUERY_PROPERTIES: Schema = {
    "name": STRING,
    "datasource": ref("DataSourceRef"),
    "enable": BOOLEAN,
    "hide": BOOLEAN,
    "iconColor": STRING,
    "filter": closed({"exclude": BOOLEAN, "ids": array(INTEGER)}, required=["ids"]),
    "target": ref("AnnotationTarget"),
    "type": STRING,  # of the built-in "-- Grafana --" annotation: "dashboard"
    "builtIn": NUMBER,  # 1 for the built-in annotation
}
ANNOTATION_QUERY_REQUIRED = ["name", "datasource", "enable", "iconColor"]
# What the Prometheus datasource keeps beside the query (see the module docstring).
PROMETHEUS_ANNOTATION_PROPERTIES: Schema = {
    "expr": STRING,
    "step": STRING,
    "titleFormat": STRING,
    "textFormat": STRING,
    "tagKeys": STRING,  # label names, comma-separated
    "useValueForTime": BOOLEAN,
    "target": ref("PrometheusDataQuery"),
}

ANNOTATION_QUERY: Schema = {
    "if": has(("datasource", "type"), "prometheus"),
    "then": closed(
        ANNOTATION_QUERY_PROPERTIES | PROMETHEUS_ANNOTATION_PROPERTIES,
        required=ANNOTATION_QUERY_REQUIRED,
    ),
    "else": closed(ANNOTATION_QUERY_PROPERTIES, required=ANNOTATION_QUERY_REQUIRED),
}

# The query of the built-in "-- Grafana --" datasource.
ANNOTATION_TARGET: Schema = closed(
    {"limit": INTEGER, "matchAny": BOOLEAN, "tags": array(STRING), "type": STRING},
    required=["limit", "matchAny", "tags", "type"],
)

# --- panels ------------------------------------------------------------------------------------

PANEL_OR_ROW: Schema = {
    "if": has(("type",), "row"),
    "then": ref("RowPanel"),
    "else": ref("Panel"),
}

ROW_PANEL: Schema = closed(
    {
        "type": {"const": "row"},
        "collapsed": BOOLEAN,
        "title": STRING,
        "datasource": ref("DataSourceRef"),
        "gridPos": ref("GridPos"),
        "id": INTEGER,
        "panels": array(ref("Panel")),
        "repeat": STRING,
    },
    required=["type", "collapsed", "id", "panels"],
)

GRID_POS: Schema = closed(
    {
        "h": {"type": "integer", "exclusiveMinimum": 0},
        "w": {"type": "integer", "exclusiveMinimum": 0, "maximum": 24},
        "x": {"type": "integer", "exclusiveMaximum": 24},
        "y": INTEGER,
        "static": BOOLEAN,
    },
    required=["h", "w", "x", "y"],
)

PANEL_PROPERTIES: Schema = {
    "type": {"type": "string", "minLength": 1},  # the panel plugin's id
    "id": INTEGER,
    "pluginVersion": STRING,
    "tags": array(STRING),
    "targets": array(ANY_OBJECT),  # DataQuery: whatever the datasource reads
    "title": STRING,
    "description": STRING,
    "transparent": BOOLEAN,
    "datasource": ref("DataSourceRef"),
    "gridPos": ref("GridPos"),
    "links": array(ref("DashboardLink")),
    "repeat": STRING,
    "repeatDirection": enum("h", "v"),
    "maxPerRow": NUMBER,
    "maxDataPoints": NUMBER,
    "transformations": array(ref("DataTransformerConfig")),
    "interval": STRING,
    "timeFrom": STRING,
    "timeShift": STRING,
    "hideTimeOverride": BOOLEAN,
    "libraryPanel": closed({"name": STRING, "uid": STRING}, required=["name", "uid"]),
    "options": ANY_OBJECT,  # narrowed by the panel kinds below
    "fieldConfig": ref("FieldConfigSource"),
}

MATCHER_CONFIG: Schema = closed({"id": STRING, "options": ANYTHING}, required=["id"])

DATA_TRANSFORMER_CONFIG: Schema = closed(
    {
        "id": STRING,
        "disabled": BOOLEAN,
        "filter": ref("MatcherConfig"),
        "options": ANY_OBJECT,  # depends on the transformation
    },
    required=["id", "options"],
)

FIELD_CONFIG_SOURCE: Schema = closed(
    {
        "defaults": ref("FieldConfig"),
        "overrides": array(
            closed(
                {
                    "matcher": ref("MatcherConfig"),
                    "properties": array(closed({"id": STRING, "value": ANYTHING}, required=["id"])),
                },
                required=["matcher", "properties"],
            )
        ),
    },
    required=["defaults", "overrides"],
)

FIELD_CONFIG: Schema = closed(
    {
        "displayName": STRING,
        "displayNameFromDS": STRING,
        "description": STRING,
        "path": STRING,
        "writeable": BOOLEAN,
        "filterable": BOOLEAN,
        "unit": STRING,  # a unit id of Grafana's, or suffix:, prefix:, si:, count:, ...
        "decimals": NUMBER,
        "min": NUMBER,
        "max": NUMBER,
        "mappings": array(ref("ValueMapping")),
        "thresholds": ref("ThresholdsConfig"),
        "color": ref("FieldColor"),
        "links": array(ANY_OBJECT),  # data links
        "noValue": STRING,
        "custom": ANY_OBJECT,  # narrowed by the panel kinds below
    }
)

FIELD_COLOR: Schema = closed(
    {
        "mode": enum(
            "thresholds", "palette-classic", "palette-classic-by-name",
            "continuous-GrYlRd", "continuous-RdYlGr", "continuous-BlYlRd", "continuous-YlRd",
            "continuous-BlPu", "continuous-YlBl", "continuous-blues", "continuous-reds",
            "continuous-greens", "continuous-purples", "fixed", "shades",
        ),
        "fixedColor": STRING,
        "seriesBy": enum("min", "max", "last"),
    },
    required=["mode"],
)  # fmt: skip

THRESHOLDS_CONFIG: Schema = closed(
    {
        "mode": enum("absolute", "percentage"),
        # Sorted by value; the first is the base, -Infinity, null in JSON.
        "steps": array(closed({"value": NUMBER_OR_NULL, "color": STRING}, ["value", "color"])),
    },
    required=["mode", "steps"],
)

# --- value mappings ----------------------------------------------------------------------------

VALUE_MAPPING_RESULT: Schema = closed(
    {"text": STRING, "color": STRING, "icon": STRING, "index": INTEGER}
)


def mapping(kind: str, options: Schema) -> Schema:
    return closed({"type": {"const": kind}, "options": options}, required=["type", "options"])


MAPPINGS: dict[str, Schema] = {
    # Keyed by the value to match.
    "value": mapping(
        "value", {"type": "object", "additionalProperties": ref("ValueMappingResult")}
    ),
    "range": mapping(
        "range",
        closed(
            {"from": NUMBER_OR_NULL, "to": NUMBER_OR_NULL, "result": ref("ValueMappingResult")},
            required=["from", "to", "result"],
        ),
    ),
    "regex": mapping(
        "regex",
        closed(
            {"pattern": STRING, "result": ref("ValueMappingResult")},
            required=["pattern", "result"],
        ),
    ),
    "special": mapping(
        "special",
        closed(
            {
                "match": enum("true", "false", "null", "nan", "null+nan", "empty"),
                "result": ref("ValueMappingResult"),
            },
            required=["match", "result"],
        ),
    ),
}

VALUE_MAPPING: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": enum(*MAPPINGS)},
    "allOf": [{"if": has(("type",), kind), "then": schema} for kind, schema in MAPPINGS.items()],
}

# --- what the panel kinds share (their schemas repeat these) ----------------------------------

VIZ_LEGEND_OPTIONS: Schema = closed(
    {
        "displayMode": enum("list", "table", "hidden"),
        "placement": enum("bottom", "right"),
        "showLegend": BOOLEAN,
        "asTable": BOOLEAN,
        "isVisible": BOOLEAN,
        "sortBy": STRING,
        "sortDesc": BOOLEAN,
        "width": NUMBER,
        "calcs": array(STRING),  # reducer ids
    },
    required=["displayMode", "placement", "showLegend", "calcs"],
)

VIZ_TOOLTIP_OPTIONS: Schema = closed(
    {
        "mode": enum("single", "multi", "none"),
        "sort": enum("asc", "desc", "none"),
        "maxWidth": NUMBER,
        "maxHeight": NUMBER,
    },
    required=["mode", "sort"],
)

HIDE_SERIES_CONFIG: Schema = closed(
    {"tooltip": BOOLEAN, "legend": BOOLEAN, "viz": BOOLEAN}, required=["tooltip", "legend", "viz"]
)

VISIBILITY_MODE: Schema = enum("auto", "never", "always")
TIME_ZONES: Schema = array(STRING)  # tz database names


def graph_field_config_properties() -> Schema:
    """The line, fill, point and axis settings of timeseries (and of a table's sparkline)."""
    return {
        "drawStyle": enum("line", "bars", "points"),
        "gradientMode": enum("none", "opacity", "hue", "scheme"),
        "thresholdsStyle": closed(
            {"mode": enum("off", "line", "dashed", "area", "line+area", "dashed+area", "series")},
            required=["mode"],
        ),
        "lineColor": STRING,
        "lineWidth": NUMBER,
        "lineInterpolation": enum("linear", "smooth", "stepBefore", "stepAfter"),
        "lineStyle": closed(
            {"fill": enum("solid", "dash", "dot", "square"), "dash": array(NUMBER)}
        ),
        "fillColor": STRING,
        "fillOpacity": NUMBER,
        "showPoints": VISIBILITY_MODE,
        "pointSize": NUMBER,
        "pointColor": STRING,
        "axisPlacement": enum("auto", "top", "right", "bottom", "left", "hidden"),
        "axisColorMode": enum("text", "series"),
        "axisLabel": STRING,
        "axisWidth": NUMBER,
        "axisSoftMin": NUMBER,
        "axisSoftMax": NUMBER,
        "axisGridShow": BOOLEAN,
        "scaleDistribution": closed(
            {
                "type": enum("linear", "log", "ordinal", "symlog"),
                "log": NUMBER,
                "linearThreshold": NUMBER,
            },
            required=["type"],
        ),
        "axisCenteredZero": BOOLEAN,
        "barAlignment": enum(-1, 0, 1),
        "barWidthFactor": NUMBER,
        "stacking": closed({"mode": enum("none", "normal", "percent"), "group": STRING}),
        "hideFrom": HIDE_SERIES_CONFIG,
        "transform": enum("constant", "negative-Y"),
        # false/true, or the longest gap (ms) still connected.
        "spanNulls": either(BOOLEAN, NUMBER),
        "fillBelowTo": STRING,
        "pointSymbol": STRING,
        "axisBorderShow": BOOLEAN,
        "barMaxWidth": NUMBER,
        "insertNulls": either(BOOLEAN, INTEGER),
    }


# --- the panel kinds: options and fieldConfig.defaults.custom ----------------------------------

# timeseries.jsonschema.json
TIMESERIES_OPTIONS: Schema = closed(
    {"timezone": TIME_ZONES, "legend": VIZ_LEGEND_OPTIONS, "tooltip": VIZ_TOOLTIP_OPTIONS},
    required=["legend", "tooltip"],
)
TIMESERIES_FIELD_CONFIG: Schema = closed(graph_field_config_properties())

# stat.jsonschema.json (it declares no custom field config)
STAT_OPTIONS: Schema = closed(
    {
        "graphMode": enum("none", "line", "area"),
        "colorMode": enum("value", "background", "background_solid", "none"),
        "justifyMode": enum("auto", "center"),
        "textMode": enum("auto", "value", "value_and_name", "name", "none"),
        "wideLayout": BOOLEAN,
        "showPercentChange": BOOLEAN,
        "reduceOptions": closed(
            {
                "values": BOOLEAN,  # every row, or...
                "limit": NUMBER,
                "calcs": array(STRING),  # ...one value by these reducers
                "fields": STRING,  # which fields; "" for the numeric ones
            },
            required=["calcs"],
        ),
        "text": closed({"titleSize": NUMBER, "valueSize": NUMBER, "percentSize": NUMBER}),
        "percentChangeColorMode": enum("standard", "inverted", "same_as_value"),
        "orientation": enum("auto", "vertical", "horizontal"),
    },
    required=[
        "graphMode", "colorMode", "justifyMode", "textMode", "wideLayout",
        "showPercentChange", "reduceOptions", "percentChangeColorMode", "orientation",
    ],
)  # fmt: skip

# statetimeline.jsonschema.json
STATE_TIMELINE_OPTIONS: Schema = closed(
    {
        "showValue": VISIBILITY_MODE,
        "rowHeight": {"type": "number", "maximum": 1},
        "mergeValues": BOOLEAN,
        "alignValue": enum("center", "left", "right"),
        "legend": VIZ_LEGEND_OPTIONS,
        "tooltip": VIZ_TOOLTIP_OPTIONS,
        "timezone": TIME_ZONES,
        "perPage": {"type": "number", "minimum": 1},
    },
    required=["showValue", "rowHeight", "legend", "tooltip"],
)
STATE_TIMELINE_FIELD_CONFIG: Schema = closed(
    {
        "lineWidth": {"type": "integer", "maximum": 10},
        "hideFrom": HIDE_SERIES_CONFIG,
        "fillOpacity": {"type": "integer", "maximum": 100},
    }
)

# table.jsonschema.json
TABLE_CELL_DISPLAY_MODE: Schema = enum(
    "auto", "color-text", "color-background", "color-background-solid", "gradient-gauge",
    "lcd-gauge", "json-view", "basic", "image", "gauge", "sparkline", "data-links", "custom",
)  # fmt: skip


def cell_options(**properties: Schema) -> Schema:
    """One kind of table cell; each kind's ``type`` may be any display mode."""
    return closed({"type": TABLE_CELL_DISPLAY_MODE, **properties}, required=["type"])


TABLE_CELL_OPTIONS: Schema = either(
    cell_options(wrapText=BOOLEAN),  # auto
    cell_options(  # sparkline
        **graph_field_config_properties()
        | {"hideValue": BOOLEAN, "insertNulls": either(BOOLEAN, NUMBER)}
    ),
    cell_options(  # gauge
        mode=enum("basic", "lcd", "gradient"), valueDisplayMode=enum("color", "text", "hidden")
    ),
    cell_options(  # color-background
        mode=enum("basic", "gradient"), applyToRow=BOOLEAN, wrapText=BOOLEAN
    ),
    cell_options(wrapText=BOOLEAN),  # color-text
    cell_options(),  # image
    cell_options(),  # data-links
    cell_options(),  # json-view
)

TABLE_OPTIONS: Schema = closed(
    {
        "frameIndex": NUMBER,  # which frame of the result is shown
        "showHeader": BOOLEAN,
        "showTypeIcons": BOOLEAN,
        "sortBy": array(closed({"displayName": STRING, "desc": BOOLEAN}, ["displayName"])),
        "footer": closed(
            {
                "show": BOOLEAN,
                "reducer": array(STRING),  # one reducer id
                "fields": array(STRING),
                "enablePagination": BOOLEAN,
                "countRows": BOOLEAN,
            },
            required=["show", "reducer"],
        ),
        "cellHeight": enum("sm", "md", "lg", "auto"),
    },
    required=["frameIndex", "showHeader"],
)
TABLE_FIELD_CONFIG: Schema = closed(
    {
        "width": NUMBER,
        "minWidth": NUMBER,
        "align": enum("auto", "left", "right", "center"),
        "displayMode": TABLE_CELL_DISPLAY_MODE,  # deprecated for cellOptions
        "cellOptions": TABLE_CELL_OPTIONS,
        "hidden": BOOLEAN,
        "inspect": BOOLEAN,
        "filterable": BOOLEAN,
        "hideHeader": BOOLEAN,
    },
    required=["align", "inspect"],
)

# Panel plugin id -> (options, fieldConfig.defaults.custom or None where it declares none).
PANEL_KINDS: dict[str, tuple[Schema, Schema | None]] = {
    "timeseries": (TIMESERIES_OPTIONS, TIMESERIES_FIELD_CONFIG),
    "stat": (STAT_OPTIONS, None),
    "state-timeline": (STATE_TIMELINE_OPTIONS, STATE_TIMELINE_FIELD_CONFIG),
    "table": (TABLE_OPTIONS, TABLE_FIELD_CONFIG),
}


def panel_kind(plugin: str, options: Schema, custom: Schema | None) -> Schema:
    then = at(("options",), options)
    if custom is not None:
        then["properties"] |= at(("fieldConfig", "defaults", "custom"), custom)["properties"]
    return {"if": has(("type",), plugin), "then": then}


# --- the query of a Prometheus panel (prometheus.jsonschema.json) -----------------------------

PROMETHEUS_DATA_QUERY: Schema = closed(
    {
        "expr": STRING,  # the PromQL
        "instant": BOOLEAN,
        "range": BOOLEAN,
        "exemplar": BOOLEAN,
        "editorMode": enum("code", "builder"),
        "format": enum("time_series", "table", "heatmap"),
        "legendFormat": STRING,
        "intervalFactor": NUMBER,  # deprecated
        "scope": closed({"matchers": STRING}, required=["matchers"]),
        "refId": STRING,
        "hide": BOOLEAN,
        "queryType": STRING,
        "datasource": ANY_OBJECT,  # for mixed panels; left open upstream
        "interval": STRING,
    },
    required=["expr"],
)

IS_PROMETHEUS = has(("datasource", "type"), "prometheus")

# A target with a Prometheus datasource of its own, or without one in a Prometheus panel.
PROMETHEUS_TARGETS: list[Schema] = [
    at(("targets",), {"items": {"if": IS_PROMETHEUS, "then": ref("PrometheusDataQuery")}}),
    {
        "if": IS_PROMETHEUS,
        "then": at(
            ("targets",),
            {
                "items": {
                    "if": {"not": {"required": ["datasource"]}},
                    "then": ref("PrometheusDataQuery"),
                }
            },
        ),
    },
]

PANEL: Schema = closed(PANEL_PROPERTIES, required=["type"]) | {
    "allOf": [
        *(panel_kind(plugin, *schemas) for plugin, schemas in PANEL_KINDS.items()),
        *PROMETHEUS_TARGETS,
    ]
}

# --- the whole -----------------------------------------------------------------------------------

DASHBOARD_SCHEMA: Schema = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "$ref": "#/definitions/Dashboard",
    "definitions": {
        "Dashboard": DASHBOARD,
        "DashboardCursorSync": enum(0, 1, 2),  # off, shared crosshair, shared tooltip
        "TimePickerConfig": TIME_PICKER,
        "DashboardLink": DASHBOARD_LINK,
        "DataSourceRef": DATASOURCE_REF,
        "VariableModel": VARIABLE_MODEL,
        "VariableOption": VARIABLE_OPTION,
        "VariableHide": enum(0, 1, 2),  # label and value, value only, nothing
        "VariableRefresh": enum(0, 1, 2),  # never, on load, on time range change
        "VariableSort": enum(*range(9)),  # none, alphabetical, numerical, ... natural desc
        "AnnotationContainer": closed({"list": array(ref("AnnotationQuery"))}),
        "AnnotationQuery": ANNOTATION_QUERY,
        "AnnotationTarget": ANNOTATION_TARGET,
        "PanelOrRow": PANEL_OR_ROW,
        "Panel": PANEL,
        "RowPanel": ROW_PANEL,
        "GridPos": GRID_POS,
        "MatcherConfig": MATCHER_CONFIG,
        "DataTransformerConfig": DATA_TRANSFORMER_CONFIG,
        "FieldConfigSource": FIELD_CONFIG_SOURCE,
        "FieldConfig": FIELD_CONFIG,
        "FieldColor": FIELD_COLOR,
        "ThresholdsConfig": THRESHOLDS_CONFIG,
        "ValueMapping": VALUE_MAPPING,
        "ValueMappingResult": VALUE_MAPPING_RESULT,
        "PrometheusDataQuery": PROMETHEUS_DATA_QUERY,
    },
}
