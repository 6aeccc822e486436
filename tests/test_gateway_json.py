"""JSON as real gateways publish it (issue 11, item 5): objects of several fields, a value at
a path, quality flags. Before, ``{"temp": 21.3, "hum": 40}`` was ``wrong_type`` and a bad
OPC UA quality was learned like any sample."""

from __future__ import annotations

import json

import pytest

from shopfloor.agent.config import parse_agent_config
from shopfloor.errors import ConfigError
from shopfloor.receiving.codecs import Limits, Rejected, decode, good_quality
from shopfloor.receiving.ingest import BoundedQueue, Ingest
from shopfloor.receiving.jsonfields import JsonLayout, decode_layout

T0 = 1_767_225_600.0
BASE = '[mqtt]\nhost = "127.0.0.1"\n'


def ingest_for(subscription: str) -> tuple[Ingest, BoundedQueue]:
    config = parse_agent_config(BASE + "[[subscriptions]]\n" + subscription, source="t.toml")
    queue = BoundedQueue(1000, "drop_oldest")
    return Ingest(config, queue), queue


def test_zigbee2mqtt_fields_become_signals_named_by_their_keys() -> None:
    ingest, queue = ingest_for('topic = "zigbee2mqtt/{asset}"\nfields = true\n')
    payload = {"temperature": 21.3, "humidity": 40, "battery": 97, "linkquality": 120,
               "contact": True, "update": {"state": "idle"}, "time": T0}
    ingest.on_message("zigbee2mqtt/room-1", json.dumps(payload).encode(), T0 + 5)
    items = queue.get_batch(10, 0.0)
    got = {i.signal: (float(i.data.timestamps[0]), float(i.data.values[0]))  # type: ignore[union-attr]
           for i in items}
    assert got == {"room-1/temperature": (T0, 21.3), "room-1/humidity": (T0, 40.0),
                   "room-1/battery": (T0, 97.0), "room-1/linkquality": (T0, 120.0)}


def test_named_fields_only_and_a_tasmota_value_path() -> None:
    ingest, queue = ingest_for('topic = "z/{asset}"\nfields = ["temperature"]\n')
    ingest.on_message("z/room-2", b'{"temperature": 20.5, "humidity": 41}', T0)
    assert [i.signal for i in queue.get_batch(10, 0.0)] == ["room-2/temperature"]
    ingest, queue = ingest_for('topic = "tele/{asset}/SENSOR"\nsignal = "power"\n'
                               'value = "ENERGY.Power"\n')
    ingest.on_message("tele/plug-1/SENSOR",
                      b'{"Time": "2026-01-01T00:00:00", "ENERGY": {"Power": 12, "Voltage": 230}}',
                      T0)
    [item] = queue.get_batch(10, 0.0)
    assert (item.signal, float(item.data.values[0])) == ("plug-1/power", 12.0)  # type: ignore[union-attr]


@pytest.mark.parametrize(("flag", "good"), [
    (True, True), (False, False), ("Good", True), ("GOOD_LOCAL_OVERRIDE", True),
    ("Bad_SensorFailure", False), ("uncertain", False), (0, True), (192, True),
    (0x80000000, False), (0x40000000, False), (None, False), (1.0, False),
])
def test_quality_flags_of_opc_ua_gateways(flag: object, good: bool) -> None:
    assert good_quality(flag) is good
    out = decode("json", json.dumps({"ts": T0, "value": 1.0, "q": flag}).encode(), T0,
                 Limits())
    assert (not isinstance(out, Rejected)) is good
    if not good:
        assert isinstance(out, Rejected)
        assert out.reason == "bad_quality"


def test_a_bad_quality_sample_is_counted_and_never_learned() -> None:
    ingest, queue = ingest_for('topic = "opc/{asset}/{signal}"\nvalue = "v"\nquality = "q"\n')
    for q in (True, False, True):
        ingest.on_message("opc/press-1/force", json.dumps({"v": 5.0, "q": q}).encode(), T0)
    assert len(queue.get_batch(10, 0.0)) == 2
    assert ingest.rejected["bad_quality"] == 1


def test_layouts_are_bounded_like_every_payload() -> None:
    limits = Limits(max_payload_bytes=2048, max_batch_values=10)
    many = json.dumps({f"f{i}": float(i) for i in range(11)}).encode()
    out = decode_layout(many, T0, limits, JsonLayout(fields=True))
    assert isinstance(out, Rejected)
    assert out.reason == "too_large"
    big = b'{"a": 1, "pad": "' + b"x" * 4096 + b'"}'
    out = decode_layout(big, T0, limits, JsonLayout(fields=True))
    assert isinstance(out, Rejected)
    assert out.reason == "too_large"
    out = decode_layout(b'{"a": NaN}', T0, limits, JsonLayout(fields=True))
    assert isinstance(out, Rejected)
    assert out.reason == "non_finite"


@pytest.mark.parametrize(("extra", "key"), [
    ('value = "a"\nfields = true\n', "fields"),
    ('codec = "frame"\nfields = true\n', "fields"),
    ('quality = "q"\n', "quality"),
    ('value = "a..b"\n', "value"),
    ('fields = "yes"\n', "fields"),
])
def test_layout_mistakes_are_config_errors(extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_agent_config(BASE + '[[subscriptions]]\ntopic = "x/{asset}/{signal}"\n' + extra,
                           source="t.toml")
    assert err.value.key == f"subscriptions[0].{key}"
