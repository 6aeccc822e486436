"""Every alert links to the dashboard that shows its cause, with its variables filled in.

The `dashboard` annotation of each alerting rule is a Grafana URL path (Alertmanager's
templates put Grafana's address before it): a signal's alerts open the Signal drill-down on
that signal, an asset's the Plant overview on that asset, an agent's the Agent health on that
agent. Here, statically, the path must name a dashboard that is provisioned, under the slug
Grafana gives its title, and set only variables that dashboard has, each from the alert's label
of the same name. promtool's unit tests (deploy/prometheus/tests) render each link for real
labels, site and line included.
"""

from __future__ import annotations

import re

import pytest

from test_dashboards import load_dashboards
from test_deploy_rules import alert_blocks

# A link's variables: the value is the alert's label of that name, as is for names the agent
# restricts to URL-safe characters (instance, asset, signal), escaped for the topic levels
# (site, line), which may hold anything but "/" and only exist in some configurations.
_PLAIN = r"var-(?P<name>\w+)=\{\{ \$labels\.(?P<label>\w+) \}\}"
_ESCAPED = (r"\{\{ with \$labels\.(?P<label>\w+) \}\}&var-(?P<name>\w+)="
            r"\{\{ \. \| urlquery \}\}\{\{ end \}\}")
_LINK = re.compile(r"/d/(?P<uid>[\w-]+)/(?P<slug>[\w-]+)\?(?P<query>.*)")
_IF_ELSE = re.compile(r"\{\{ if [^{}]+ \}\}(.*)\{\{ else \}\}(.*)\{\{ end \}\}")
# Which dashboard each kind of alert opens, and what it must select there.
WANTED = {
    "shopfloor-signal-drilldown": {"instance", "asset", "signal"},
    "shopfloor-plant-overview": {"instance", "asset"},
    "shopfloor-agent-health": {"instance"},
}
SIGNAL_ALERTS = {"ShopfloorSignalAlarm", "ShopfloorVibrationZone", "ShopfloorSamplesRejected",
                 "ShopfloorSignalSilent"}
ASSET_ALERTS = {"ShopfloorAssetAlarm"}


def slug(title: str) -> str:
    """The URL slug Grafana derives from a dashboard title."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def dashboard_link(block: str) -> str:
    m = re.search(r'^\s+dashboard: "(.*)"$', block, re.M)
    assert m, "no dashboard annotation"
    return m[1]


def links(value: str) -> list[tuple[str, str, str]]:
    """``(uid, slug, query)`` of each path in an annotation (an if/else has two)."""
    branches = _IF_ELSE.fullmatch(value)
    out = []
    for part in branches.groups() if branches else (value,):
        m = _LINK.fullmatch(part)
        assert m, f"not a /d/<uid>/<slug>?<variables> path: {part}"
        out.append((m["uid"], m["slug"], m["query"]))
    return out


def variables(query: str) -> dict[str, str]:
    """``variable -> label`` the query sets, checking that nothing else is in it."""
    out: dict[str, str] = {}
    rest = query
    for pattern in (_ESCAPED, _PLAIN):
        for m in re.finditer(pattern, rest):
            assert m["name"] not in out, f"var-{m['name']} twice in {query}"
            out[m["name"]] = m["label"]
        rest = re.sub(pattern, "", rest)
    assert re.fullmatch(r"&*", rest), f"unexpected text {rest!r} in {query}"
    return out


def test_the_link_reader_reads_both_forms() -> None:
    value = ("/d/u/s?var-instance={{ $labels.instance }}{{ with $labels.site }}&var-site="
             "{{ . | urlquery }}{{ end }}&var-asset={{ $labels.asset }}")
    assert links(value) == [("u", "s", value.split("?", 1)[1])]
    assert variables(links(value)[0][2]) == {"instance": "instance", "site": "site",
                                             "asset": "asset"}
    with pytest.raises(AssertionError, match="unexpected"):
        variables("var-asset={{ $labels.asset }}&from=now-1h")
    assert links("{{ if $labels.signal }}/d/a/b?var-x={{ $labels.x }}{{ else }}/d/c/d?"
                 "var-y={{ $labels.y }}{{ end }}") == [("a", "b", "var-x={{ $labels.x }}"),
                                                      ("c", "d", "var-y={{ $labels.y }}")]
    with pytest.raises(AssertionError, match="not a"):
        links("https://grafana/d/a/b?var-x=1")
    assert slug("shopfloor / Signal drill-down") == "shopfloor-signal-drill-down"


@pytest.mark.parametrize(("name", "block"), alert_blocks(),
                         ids=[f"{n}:{i}" for i, (n, _) in enumerate(alert_blocks())])
def test_every_alert_links_its_dashboard_with_its_labels(name: str, block: str) -> None:
    dashboards = {d["uid"]: d for d in load_dashboards().values()}
    found = links(dashboard_link(block))
    for uid, found_slug, query in found:
        assert uid in dashboards, f"{name}: no dashboard {uid}"
        assert found_slug == slug(dashboards[uid]["title"]), f"{name}: slug of {uid}"
        names = {v["name"] for v in dashboards[uid]["templating"]["list"]}
        chosen = variables(query)
        assert set(chosen) <= names, f"{name}: {uid} has no {set(chosen) - names}"
        assert all(var == label for var, label in chosen.items()), f"{name}: {chosen}"
        assert WANTED[uid] <= set(chosen), f"{name}: {uid} needs {WANTED[uid]}"
    uids = {uid for uid, _, _ in found}
    if name in SIGNAL_ALERTS:
        assert uids == {"shopfloor-signal-drilldown"}, name
    elif name in ASSET_ALERTS:
        assert uids == {"shopfloor-plant-overview"}, name
    elif name == "ShopfloorBaselineAdopted":  # a signal's adoption, or an asset detector's
        assert uids == {"shopfloor-signal-drilldown", "shopfloor-plant-overview"}, name
    else:
        assert re.search(r"^\s+category: agent$", block, re.M), name
        assert uids == {"shopfloor-agent-health"}, name
