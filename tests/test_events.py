"""Anomaly events and retained states: the JSON Schema, the documents, topics and publishing."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from datetime import datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry, Resource

from broker import Inbox, LinkFactory, Mosquitto, link_settings, wait_until
from shopfloor.agent.events import (
    EVENT_KINDS,
    SCHEMA_URI,
    AnomalyEvent,
    EventSink,
    event_document,
    load_schema,
    severity,
    state_document,
)
from shopfloor.config import NAME_PATTERN
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.detect.rules import RULES
from shopfloor.scoring.diagnosis import DEFECTS, ZONES

SCHEMA = load_schema()


def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(datetime.fromisoformat(value))


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    if "date-time" not in checker.checkers:
        # jsonschema checks date-time only with its optional rfc3339 package; fall back on
        # the standard library so the format is checked either way.
        checker.checks("date-time", raises=ValueError)(_date_time)
    return checker


REGISTRY: Registry[Any] = Registry().with_resource(SCHEMA_URI, Resource.from_contents(SCHEMA))
EVENTS = Draft202012Validator(SCHEMA, format_checker=_format_checker())
STATES = Draft202012Validator({"$ref": f"{SCHEMA_URI}#/$defs/state"}, registry=REGISTRY,
                              format_checker=_format_checker())

SCALAR = AnomalyEvent(kind="raised", asset="press-4", signal="force", ts=1_700_000_000.25,
                      score=7.5, threshold=3.0, value=412.0, rules=0b0011,
                      labels={"site": "lyon", "line": "L2"}, likelihood=0.9993,
                      onset=1_700_000_000.25 - 2.0)
FRAME = AnomalyEvent(kind="cleared", asset="pump-1", signal="vib-de", ts=1_700_000_100.0,
                     score=1.0, threshold=3.0, features={"rms": 0.8, "kurtosis": math.nan},
                     top="rms")
ASSET = AnomalyEvent(kind="raised", asset="pump-1", signal=None, ts=1_700_000_200.0,
                     score=20.0, threshold=12.0, features={"flow": 3.2, "pressure": 1.1},
                     top="pressure")
# The level of press-4's force moved at onset and stayed there for the alarm's adapt_after
# (an hour): it is the new normal now.
ADOPTED = AnomalyEvent(kind="baseline_adopted", asset="press-4", signal="force",
                       ts=1_700_003_600.5, score=5.0, threshold=3.2, value=415.0,
                       labels={"site": "lyon", "line": "L2"}, likelihood=0.12,
                       onset=1_700_000_000.25 - 2.0)


class FakeLink:
    """Records publishes; ``accept`` decides what publish() returns."""

    client_id = "agent-7"

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.accept = True

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        if self.accept:
            self.sent.append((topic, payload, qos, retain))
        return self.accept


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == SCHEMA_URI


@pytest.mark.parametrize("event", [SCALAR, FRAME, ASSET, ADOPTED],
                         ids=["scalar", "frame", "asset", "adopted"])
def test_events_validate_against_the_schema(event: AnomalyEvent) -> None:
    doc = event_document(event, "agent-7")
    EVENTS.validate(doc)
    assert doc["schema"] == "shopfloor.anomaly/1"
    assert doc["time"].endswith("Z")
    assert datetime.fromisoformat(doc["time"]).timestamp() == pytest.approx(event.ts, abs=1e-3)
    assert doc["scope"] == ("asset" if event.signal is None else "signal")


def test_event_fields_say_what_happened() -> None:
    doc = event_document(SCALAR, "agent-7")
    assert doc["time"] == "2023-11-14T22:13:20.250Z"
    assert (doc["value"], doc["score"], doc["threshold"]) == (412.0, 7.5, 3.0)
    assert "features" not in doc
    assert doc["rules"] == ["beyond_3_sigma", "two_of_three_beyond_2_sigma"]
    assert doc["labels"] == {"site": "lyon", "line": "L2"}
    assert doc["severity"] == "critical"
    frame = event_document(FRAME, "agent-7")
    assert frame["features"] == {"rms": 0.8, "kurtosis": None}  # NaN is not JSON
    assert "value" not in frame
    asset = event_document(ASSET, "agent-7")
    assert (asset["signal"], asset["top"], asset["labels"]) == (None, "pressure", {})


def test_events_carry_the_likelihood_and_the_alarms_onset() -> None:
    doc = event_document(SCALAR, "agent-7")
    assert (doc["kind"], doc["event"]) == ("raised", "raised")
    assert doc["likelihood"] == 0.9993
    assert doc["onset"] == "2023-11-14T22:13:18.250Z"  # two samples before the raise
    frame = event_document(FRAME, "agent-7")  # neither known: null, not left out
    assert (frame["kind"], frame["event"], frame["likelihood"], frame["onset"]) == (
        "cleared", "cleared", None, None)
    # An onset that is no time at all is left out, not the alarm (as a likelihood out of
    # [0, 1] is, below).
    lost = AnomalyEvent("raised", "a", "s", 0.0, 2.0, 1.0, value=1.0, onset=1e300)
    assert event_document(lost, "x")["onset"] is None


def test_an_adopted_baseline_is_a_clear_that_says_why() -> None:
    doc = event_document(ADOPTED, "agent-7")
    # kind stays within what consumers of the first version know: the alarm ended.
    assert (doc["kind"], doc["event"]) == ("cleared", "baseline_adopted")
    assert (doc["score"], doc["threshold"], doc["value"]) == (5.0, 3.2, 415.0)
    assert doc["likelihood"] == 0.12  # the shift is no longer news
    assert (doc["time"], doc["onset"]) == ("2023-11-14T23:13:20.500Z", "2023-11-14T22:13:18.250Z")
    assert doc["severity"] == "warning"  # its own score (< 2 x 3.2): no raise was seen
    frame = event_document(AnomalyEvent(
        kind="baseline_adopted", asset="pump-1", signal="vib-de", ts=1.0, score=4.0,
        threshold=3.0, features={"rms": 1.4}, top="rms", likelihood=0.5, onset=0.5), "a")
    EVENTS.validate(frame)
    assert (frame["features"], frame["onset"]) == ({"rms": 1.4}, "1970-01-01T00:00:00.500Z")


@pytest.mark.parametrize(("likelihood", "expected"), [
    (0.0, 0.0), (1.0, 1.0), (0.5, 0.5), (None, None), (math.nan, None), (math.inf, None),
    (1.0 + 1e-9, None), (-1e-12, None)])
def test_a_likelihood_outside_0_1_is_sent_as_null_and_the_event_still_goes(
        likelihood: float | None, expected: float | None) -> None:
    event = AnomalyEvent("raised", "a", "s", 0.0, 2.0, 1.0, value=1.0, likelihood=likelihood)
    doc = event_document(event, "x")
    EVENTS.validate(doc)
    assert doc["likelihood"] == expected
    state = state_document("a", "s", "active", 2.0, 1.0, 0.0, "x", likelihood=likelihood)
    STATES.validate(state)
    assert state["likelihood"] == expected


def test_events_of_agents_before_likelihood_onset_and_event_still_validate() -> None:
    # The fields were added within version 1: older agents' messages stay valid.
    doc = event_document(SCALAR, "agent-7")
    for key in ("event", "likelihood", "onset"):
        del doc[key]
    EVENTS.validate(doc)
    state = state_document("pump-1", "vib-de", "normal", 1.0, 3.0, 1.0, "agent-7")
    del state["likelihood"]
    STATES.validate(state)
    # None of them became required: the version stays.
    assert not {"event", "likelihood", "onset"} & set(SCHEMA["required"])
    assert "likelihood" not in SCHEMA["$defs"]["state"]["required"]


def test_severity_is_critical_from_twice_the_threshold() -> None:
    assert severity(5.99, 3.0) == "warning"
    assert severity(6.0, 3.0) == "critical"
    assert severity(100.0, 0.0) == "warning"  # no ratio without a positive threshold
    assert severity(-1.0, -2.0) == "warning"


def _valid() -> dict[str, Any]:
    return event_document(SCALAR, "agent-7")


def _set(doc: dict[str, Any], key: str, value: Any) -> None:
    doc[key] = value


BAD_EVENTS = {
    "missing score": lambda d: d.pop("score"),
    "unknown kind": lambda d: _set(d, "kind", "acknowledged"),
    "asset scope with a signal": lambda d: _set(d, "scope", "asset"),
    "signal scope without a signal": lambda d: _set(d, "signal", None),
    "value and features": lambda d: _set(d, "features", {"rms": 1.0}),
    "neither value nor features": lambda d: d.pop("value"),
    "local time": lambda d: _set(d, "time", "2023-11-14T23:13:20+01:00"),
    "impossible date": lambda d: _set(d, "time", "2023-13-45T25:61:00Z"),
    "unknown field": lambda d: _set(d, "extra", 1),
    "unknown rule": lambda d: _set(d, "rules", ["beyond_4_sigma"]),
    "asset with a slash": lambda d: _set(d, "asset", "press/4"),
    "string score": lambda d: _set(d, "score", "7.5"),
    "too many labels": lambda d: _set(d, "labels", {f"l{i}": "x" for i in range(17)}),
    "other version": lambda d: _set(d, "schema", "shopfloor.anomaly/2"),
    "unknown event": lambda d: _set(d, "event", "acknowledged"),
    "adoption called a raise": lambda d: _set(d, "event", "baseline_adopted"),
    "raise called a clear": lambda d: _set(d, "event", "cleared"),
    "likelihood above 1": lambda d: _set(d, "likelihood", 1.5),
    "negative likelihood": lambda d: _set(d, "likelihood", -0.1),
    "string likelihood": lambda d: _set(d, "likelihood", "0.9"),
    "onset in local time": lambda d: _set(d, "onset", "2023-11-14T23:13:18+01:00"),
    "onset in seconds": lambda d: _set(d, "onset", 1_700_000_000.0),
}


@pytest.mark.parametrize("mutate", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_the_schema_rejects_bad_events(mutate: Any) -> None:
    doc = copy.deepcopy(_valid())
    mutate(doc)
    with pytest.raises(ValidationError):
        EVENTS.validate(doc)


def test_schema_names_match_the_code() -> None:
    assert SCHEMA["$defs"]["name"]["pattern"] == NAME_PATTERN.pattern
    assert SCHEMA["properties"]["rules"]["items"]["enum"] == [hit.name for hit in RULES]
    state_enum = SCHEMA["$defs"]["state"]["properties"]["state"]["enum"]
    assert state_enum == [s.name.lower() for s in AlarmState]
    assert SCHEMA["properties"]["event"]["enum"] == list(EVENT_KINDS)
    assert SCHEMA["properties"]["defect"]["enum"] == list(DEFECTS)
    assert SCHEMA["properties"]["iso_zone"]["enum"] == list(ZONES[1:])


def test_frame_events_name_the_defect_and_the_iso_zone() -> None:
    diagnosed = dataclasses.replace(FRAME, kind="raised", defect="outer_race", iso_zone="C")
    doc = event_document(diagnosed, "agent-7")
    EVENTS.validate(doc)
    assert (doc["defect"], doc["iso_zone"]) == ("outer_race", "C")
    # Without a diagnosis (scalar signals, older agents) the fields are absent, not null.
    assert "defect" not in event_document(FRAME, "agent-7")
    assert "iso_zone" not in event_document(SCALAR, "agent-7")
    # An unknown name drops the annotation; the alarm itself is still sent.
    odd = event_document(dataclasses.replace(diagnosed, defect="gearbox", iso_zone="E"), "x")
    EVENTS.validate(odd)
    assert "defect" not in odd
    assert "iso_zone" not in odd
    for bad in ({"defect": "gearbox"}, {"iso_zone": "unknown"}):
        with pytest.raises(ValidationError):
            EVENTS.validate({**doc, **bad})


def test_unrepresentable_events_are_refused_by_the_builder() -> None:
    with pytest.raises(ValueError, match="finite"):
        event_document(AnomalyEvent("raised", "a", "s", 0.0, math.nan, 1.0, value=1.0), "x")
    with pytest.raises(ValueError, match="signal name"):
        event_document(AnomalyEvent("raised", "a", "_asset", 0.0, 2.0, 1.0, value=1.0), "x")
    with pytest.raises(ValueError, match="needs its value"):
        event_document(AnomalyEvent("raised", "a", "s", 0.0, 2.0, 1.0), "x")
    with pytest.raises(ValueError, match="kind must be one of"):
        event_document(AnomalyEvent("adopted", "a", "s", 0.0, 2.0, 1.0, value=1.0), "x")


def test_states_validate_and_bad_states_do_not() -> None:
    doc = state_document("pump-1", "vib-de", "active", 4.2, math.inf, 1_700_000_000.0,
                         "agent-7", {"site": "lyon"})
    STATES.validate(doc)
    assert (doc["threshold"], doc["likelihood"]) == (None, None)
    with_likelihood = state_document("pump-1", "vib-de", "active", 4.2, 3.0, 1_700_000_000.0,
                                     "agent-7", likelihood=0.97)
    STATES.validate(with_likelihood)
    assert with_likelihood["likelihood"] == 0.97
    with_likelihood["likelihood"] = 1.01
    with pytest.raises(ValidationError):
        STATES.validate(with_likelihood)
    STATES.validate(state_document("pump-1", None, "normal", None, 3.0, 1.0, "agent-7"))
    doc["state"] = "alarming"
    with pytest.raises(ValidationError):
        STATES.validate(doc)
    with pytest.raises(ValueError, match="state must be one of"):
        state_document("pump-1", "x", "alarming", 1.0, 1.0, 1.0, "agent-7")


def test_sink_topics_payloads_and_severity_of_the_clear() -> None:
    link = FakeLink()
    sink = EventSink(link, "acme/shopfloor", "{prefix}/{site}/{asset}/{signal}/anomaly")
    assert sink.alarm(SCALAR)
    topic, payload, qos, retain = link.sent[-1]
    assert (topic, qos, retain) == ("acme/shopfloor/lyon/press-4/force/anomaly", 1, False)
    assert payload == json.dumps(json.loads(payload), separators=(",", ":")).encode()
    cleared = AnomalyEvent(kind="cleared", asset="press-4", signal="force", ts=SCALAR.ts + 60,
                           score=0.5, threshold=3.0, value=300.0, labels=SCALAR.labels)
    assert sink.alarm(cleared)
    doc = json.loads(link.sent[-1][1])
    EVENTS.validate(doc)
    assert (doc["kind"], doc["severity"]) == ("cleared", "critical")  # the raise's severity
    assert sink.alarm(cleared)
    assert json.loads(link.sent[-1][1])["severity"] == "warning"  # no open alarm any more
    # An adoption ends the alarm like a clear: it repeats the raise's severity (critical, where
    # its own score is a warning), and closes it.
    assert sink.alarm(SCALAR)
    assert sink.alarm(ADOPTED)
    topic, payload, qos, retain = link.sent[-1]
    assert (topic, qos, retain) == ("acme/shopfloor/lyon/press-4/force/anomaly", 1, False)
    doc = json.loads(payload)
    EVENTS.validate(doc)
    assert (doc["kind"], doc["event"], doc["severity"]) == ("cleared", "baseline_adopted",
                                                            "critical")
    assert sink.alarm(cleared)
    assert json.loads(link.sent[-1][1])["severity"] == "warning"
    default = EventSink(link)
    assert default.alarm(ASSET)
    assert link.sent[-1][0] == "shopfloor/pump-1/_asset/anomaly"
    assert json.loads(link.sent[-1][1])["agent"] == "agent-7"


@pytest.mark.parametrize("level", ["l+1", "#", "a/b", ""])
def test_sink_refuses_labels_that_are_not_one_clean_level(level: str) -> None:
    link = FakeLink()
    sink = EventSink(link, topic_template="{prefix}/{line}/{asset}/{signal}/anomaly")
    event = AnomalyEvent(kind="raised", asset="a", signal="s", ts=0.0, score=2.0,
                         threshold=1.0, value=1.0, labels={"line": level})
    assert not sink.alarm(event)
    assert (sink.failed, sink.published, link.sent) == (1, 0, [])


@pytest.mark.parametrize(
    ("prefix", "topic", "state_topic", "words"),
    [
        ("shopfloor", "{prefix}/#", "{prefix}/{asset}/{signal}/state", "invalid topics"),
        ("shopfloor", "{prefix}/{}/x", "{prefix}/{asset}/{signal}/state", "named"),
        ("shopfloor", "{prefix}/{asset}/anomaly", "{prefix}/{asset}/state", "overwrite"),
        ("shop+floor", "{prefix}/{asset}/{signal}", "{prefix}/{asset}/{signal}/state", "prefix"),
        ("shopfloor", "$SYS/{asset}/{signal}", "{prefix}/{asset}/{signal}/state", "invalid"),
    ],
)
def test_bad_topic_templates_are_refused_at_construction(
    prefix: str, topic: str, state_topic: str, words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        EventSink(FakeLink(), prefix, topic, state_topic)


def test_states_are_published_retained_and_only_on_change() -> None:
    link = FakeLink()
    sink = EventSink(link)
    sequence: list[str | AlarmState] = ["normal", "normal", AlarmState.ACTIVE, "active", "normal"]
    published = [sink.state("pump-1", "vib", s, 1.0, 3.0, 10.0 + i)
                 for i, s in enumerate(sequence)]
    assert published == [True, False, True, False, True]
    assert [json.loads(p)["state"] for _, p, _, _ in link.sent] == ["normal", "active", "normal"]
    assert all(retain for _, _, _, retain in link.sent)
    assert link.sent[0][0] == "shopfloor/pump-1/vib/state"
    assert sink.state("pump-1", None, "active", 1.0, 3.0, 20.0)  # the asset's own state
    assert link.sent[-1][0] == "shopfloor/pump-1/_asset/state"
    link.accept = False
    assert not sink.state("pump-1", "vib", "cooldown", 1.0, 3.0, 30.0)
    link.accept = True  # a failed state is not remembered: the next call sends it
    assert sink.state("pump-1", "vib", "cooldown", 1.0, 3.0, 31.0)
    assert (sink.states_published, sink.states_failed) == (5, 1)


@pytest.mark.integration
def test_events_and_retained_states_through_a_broker(
    mosquitto: Mosquitto, make_link: LinkFactory
) -> None:
    early = Inbox()
    watcher = make_link(link_settings(mosquitto, "dashboard"), [("shopfloor/#", 1)], early)
    assert watcher.wait_ready(10)
    link = make_link(link_settings(mosquitto, "agent-7"))
    assert link.wait_ready(10)
    sink = EventSink(link)
    assert sink.alarm(SCALAR)
    for state in ["warming_up", "normal", "normal", "active"]:
        sink.state("press-4", "force", state, 7.5, 3.0, SCALAR.ts)
    assert link.stop(timeout=5)
    assert early.wait_for(4)
    assert wait_until(lambda: len(early.messages) == 4)  # 1 event + 3 state changes
    topic, payload, _ = early.messages[0]
    assert topic == "shopfloor/press-4/force/anomaly"
    EVENTS.validate(json.loads(payload))
    for _, state_payload, _ in early.messages[1:]:
        STATES.validate(json.loads(state_payload))
    # A dashboard that connects later still gets the current state, retained by the broker.
    late = Inbox()
    assert make_link(link_settings(mosquitto, "late"), [("shopfloor/+/+/state", 1)],
                     late).wait_ready(10)
    assert late.wait_for(1)
    assert late.messages[0][0] == "shopfloor/press-4/force/state"
    assert json.loads(late.messages[0][1])["state"] == "active"
