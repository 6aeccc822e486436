"""Sparkplug B: the wire-format reader against independently built payloads, aliases, limits.

The reader is checked against bytes assembled by hand from ``sparkplug_b.proto`` (Eclipse
Tahu) and, where the ``protobuf`` package happens to be installed, against messages it
serialises; our own encoder is only used for round trips.
"""

from __future__ import annotations

import doctest
import importlib
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.receiving import sparkplug
from shopfloor.receiving.codecs import Limits, Reading, Rejected, Samples, decode
from shopfloor.receiving.sparkplug import (
    DataType,
    Metric,
    SparkplugAliases,
    SparkplugTopic,
    encode_data,
    encode_dbirth,
    encode_ddeath,
    encode_nbirth,
    encode_ndeath,
    encode_payload,
    parse_topic,
    sparkplug_topic,
)

LIMITS = Limits()
ARRIVAL = 1_767_225_700.0
TS_MS = 1_767_225_600_000
NODE = "spBv1.0/plant/{}/press-7"
DEVICE = "spBv1.0/plant/{}/press-7/accel-1"


def run(
    payload: bytes,
    topic: str,
    aliases: SparkplugAliases | None = None,
    limits: Limits = LIMITS,
) -> list[Reading] | Rejected:
    return decode("sparkplug", payload, ARRIVAL, limits, aliases, topic)


def readings(
    payload: bytes, topic: str, aliases: SparkplugAliases | None = None
) -> dict[str, Samples]:
    out = run(payload, topic, aliases)
    assert isinstance(out, list), out
    result = {}
    for reading in out:
        assert reading.metric is not None
        assert isinstance(reading.data, Samples)
        result[reading.metric] = reading.data
    return result


def rejected(payload: bytes, topic: str, aliases: SparkplugAliases | None = None) -> str:
    out = run(payload, topic, aliases)
    assert isinstance(out, Rejected), out
    assert out.detail
    return out.reason


def values(found: dict[str, Samples]) -> dict[str, list[float]]:
    return {name: s.values.tolist() for name, s in found.items()}


# --- independent payloads ---------------------------------------------------------------------

# A DBIRTH written byte by byte from sparkplug_b.proto. A key byte is field << 3 | wire type
# (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32); lengths and integers are varints.
HAND_BIRTH = b"".join(
    bytes(part)
    for part in [
        [0x08, 0x80, 0xD0, 0xEA, 0xB6, 0xB7, 0x33],  # Payload.timestamp = 1767225600000
        # Payload.metrics: Metric{name="temp", alias=5, datatype=9 Float, float_value=41.5}
        [0x12, 15],  # 6 + 2 + 2 + 5 bytes
        [0x0A, 0x04, *b"temp", 0x10, 0x05, 0x20, 0x09, 0x65, 0x00, 0x00, 0x26, 0x42],
        # Metric{name="speed", alias=6, timestamp=1767225601500, datatype=3 Int32,
        # int_value=-12}: -12 as uint32 two's complement = 0xFFFFFFF4 = varint f4 ff ff ff 0f
        [0x12, 24],  # 7 + 2 + 7 + 2 + 6 bytes
        [0x0A, 0x05, *b"speed", 0x10, 0x06, 0x18, 0xDC, 0xDB, 0xEA, 0xB6, 0xB7, 0x33],
        [0x20, 0x03, 0x50, 0xF4, 0xFF, 0xFF, 0xFF, 0x0F],
        # Metric{name="valve", alias=7, datatype=11 Boolean, boolean_value=true}: skipped
        [0x12, 13, 0x0A, 0x05, *b"valve", 0x10, 0x07, 0x20, 0x0B, 0x70, 0x01],
        # Metric{name="load", alias=8, datatype=10 Double, double_value=-0.25}
        [0x12, 19, 0x0A, 0x04, *b"load", 0x10, 0x08, 0x20, 0x0A],  # 6 + 2 + 2 + 9 bytes
        [0x69, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xD0, 0xBF],
        [0x18, 0x03],  # Payload.seq = 3
    ]
)


def test_hand_assembled_birth() -> None:
    aliases = SparkplugAliases()
    found = readings(HAND_BIRTH, DEVICE.format("DBIRTH"), aliases)
    assert values(found) == {"temp": [41.5], "speed": [-12.0], "load": [-0.25]}
    assert found["temp"].timestamps.tolist() == [1_767_225_600.0]
    assert found["speed"].timestamps.tolist() == [1_767_225_601.5]  # its own timestamp
    # DDATA by alias only, also by hand: Metric{alias=6, int_value=7}, Metric{alias=8, double}.
    data = bytes([0x12, 0x04, 0x10, 0x06, 0x50, 0x07, 0x12, 0x0B, 0x10, 0x08, 0x69])
    data += struct.pack("<d", 1.5) + bytes([0x18, 0x04])
    found = readings(data, DEVICE.format("DDATA"), aliases)
    assert values(found) == {"speed": [7.0], "load": [1.5]}
    assert found["speed"].timestamps.tolist() == [ARRIVAL]  # no timestamp in the payload


def protobuf_file(package: str) -> tuple[Any, Any, Callable[[str], Any]]:
    """Google's protobuf package, to check our reader against its encoder: the field
    descriptor type, an empty proto2 file to declare messages in, and a function that
    compiles the file and returns one of its message classes by full name. protobuf is a
    development dependency only, imported by name (it has no type stubs here)."""
    descriptor_pb2: Any = importlib.import_module("google.protobuf.descriptor_pb2")
    descriptor_pool: Any = importlib.import_module("google.protobuf.descriptor_pool")
    message_factory: Any = importlib.import_module("google.protobuf.message_factory")
    proto = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package,
                                               syntax="proto2")

    def compiled(name: str) -> Any:
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return descriptor_pb2.FieldDescriptorProto, proto, compiled


def test_reader_against_the_protobuf_package() -> None:
    field, proto, compiled = protobuf_file("t")
    payload_type = proto.message_type.add(name="Payload")
    metric_type = payload_type.nested_type.add(name="Metric")
    metric_type.oneof_decl.add(name="value")
    for name, number, kind, oneof in [
        ("name", 1, field.TYPE_STRING, False),
        ("alias", 2, field.TYPE_UINT64, False),
        ("timestamp", 3, field.TYPE_UINT64, False),
        ("datatype", 4, field.TYPE_UINT32, False),
        ("is_null", 7, field.TYPE_BOOL, False),
        ("int_value", 10, field.TYPE_UINT32, True),
        ("long_value", 11, field.TYPE_UINT64, True),
        ("float_value", 12, field.TYPE_FLOAT, True),
        ("double_value", 13, field.TYPE_DOUBLE, True),
        ("boolean_value", 14, field.TYPE_BOOL, True),
        ("string_value", 15, field.TYPE_STRING, True),
    ]:
        f = metric_type.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
        if oneof:
            f.oneof_index = 0
    payload_type.field.add(name="timestamp", number=1, type=field.TYPE_UINT64, label=1)
    payload_type.field.add(
        name="metrics", number=2, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
        type_name=".t.Payload.Metric",
    )
    payload_type.field.add(name="seq", number=3, type=field.TYPE_UINT64, label=1)
    payload_type.field.add(name="uuid", number=4, type=field.TYPE_STRING, label=1)
    payload_class = compiled("t.Payload")
    message = payload_class(timestamp=TS_MS, seq=1, uuid="ignored")
    message.metrics.add(name="temp", alias=1, datatype=9, float_value=21.5)
    message.metrics.add(name="count", alias=2, datatype=8, long_value=2**40)
    message.metrics.add(name="delta", alias=3, datatype=2, int_value=(-300) & 0xFFFFFFFF)
    message.metrics.add(name="label", alias=4, datatype=12, string_value="x")
    message.metrics.add(name="gone", alias=5, datatype=10, is_null=True)
    found = readings(message.SerializeToString(), NODE.format("NBIRTH"), SparkplugAliases())
    assert values(found) == {"temp": [21.5], "count": [2.0**40], "delta": [-300.0]}


# --- message types and the alias table --------------------------------------------------------


def birth(aliases: SparkplugAliases) -> None:
    payload = encode_nbirth(TS_MS, [("rpm", 1, DataType.UINT32, 1450), ("temp", 2, 9, 40.5)])
    assert values(readings(payload, NODE.format("NBIRTH"), aliases)) == {
        "rpm": [1450.0],
        "temp": [40.5],
    }  # bdSeq and Node Control/Rebirth are bookkeeping, not signals


def test_birth_then_data_by_alias() -> None:
    aliases = SparkplugAliases()
    birth(aliases)
    data = encode_data(TS_MS + 1000, 1, [(2, DataType.FLOAT, 41.0), (1, DataType.UINT32, 1460)])
    found = readings(data, NODE.format("NDATA"), aliases)
    assert values(found) == {"temp": [41.0], "rpm": [1460.0]}
    assert found["rpm"].timestamps.tolist() == [TS_MS / 1000 + 1.0]


def test_data_by_name_needs_no_birth() -> None:
    data = encode_payload(TS_MS, 5, [("flow", None, DataType.DOUBLE, 3.25)])
    assert values(readings(data, NODE.format("NDATA"))) == {"flow": [3.25]}
    assert values(readings(data, NODE.format("NDATA"), SparkplugAliases())) == {"flow": [3.25]}


def test_unknown_alias_until_born() -> None:
    aliases = SparkplugAliases()
    data = encode_data(TS_MS, 1, [(1, DataType.UINT32, 1)])
    assert rejected(data, NODE.format("NDATA"), aliases) == "unknown_alias"
    assert rejected(data, NODE.format("NDATA"), None) == "unknown_alias"
    birth(aliases)
    assert values(readings(data, NODE.format("NDATA"), aliases)) == {"rpm": [1.0]}
    # Another node, and a device of the same node, have tables of their own.
    assert rejected(data, "spBv1.0/plant/NDATA/press-8", aliases) == "unknown_alias"
    assert rejected(data, "spBv1.0/other/NDATA/press-7", aliases) == "unknown_alias"
    assert rejected(data, DEVICE.format("DDATA"), aliases) == "unknown_alias"


def test_death_forgets_and_birth_replaces() -> None:
    aliases = SparkplugAliases()
    birth(aliases)
    dbirth = encode_dbirth(TS_MS, 1, [("accel_rms", 1, DataType.FLOAT, 0.5)])
    readings(dbirth, DEVICE.format("DBIRTH"), aliases)
    assert len(aliases) == 2
    ddata = encode_data(TS_MS, 2, [(1, DataType.FLOAT, 0.75)])
    assert values(readings(ddata, DEVICE.format("DDATA"), aliases)) == {"accel_rms": [0.75]}
    assert run(encode_ddeath(TS_MS, 3), DEVICE.format("DDEATH"), aliases) == []
    assert len(aliases) == 1
    assert rejected(ddata, DEVICE.format("DDATA"), aliases) == "unknown_alias"
    readings(dbirth, DEVICE.format("DBIRTH"), aliases)
    # NDEATH takes the node's devices with it; it is processed even with a garbage payload.
    assert run(b"\xff\xff", NODE.format("NDEATH"), aliases) == []
    assert len(aliases) == 0
    # A new NBIRTH starts a new session: devices must be born again.
    readings(dbirth, DEVICE.format("DBIRTH"), aliases)
    birth(aliases)
    assert len(aliases) == 1
    # A rebirth with other aliases replaces the old ones.
    rebirth = encode_nbirth(TS_MS, [("rpm", 7, DataType.UINT32, 1)], bd_seq=1)
    readings(rebirth, NODE.format("NBIRTH"), aliases)
    data = encode_data(TS_MS, 1, [(1, DataType.UINT32, 5)])
    assert rejected(data, NODE.format("NDATA"), aliases) == "unknown_alias"
    assert run(encode_ndeath(1), NODE.format("NDEATH"), aliases) == []


@pytest.mark.parametrize(
    "topic", [NODE.format("NCMD"), DEVICE.format("DCMD"), "spBv1.0/STATE/scada-1"]
)
def test_commands_and_state_carry_no_samples(topic: str) -> None:
    assert run(b'{"online": true}', topic, SparkplugAliases()) == []


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("spBv1.0/g/NDATA/e", SparkplugTopic("g", "NDATA", "e", None)),
        ("spBv1.0/g/DBIRTH/e/d", SparkplugTopic("g", "DBIRTH", "e", "d")),
        ("spBv1.0/STATE/host", SparkplugTopic("", "STATE", "host", None)),
        ("spBv1.0/g/NDATA/e/d", None),  # node message with a device
        ("spBv1.0/g/DDATA/e", None),  # device message without one
        ("spBv1.0/g/XDATA/e", None),
        ("spAv1.0/g/NDATA/e", None),
        ("spBv1.0//NDATA/e", None),
        ("spBv1.0/g/DDATA/e/d/x", None),
        ("plant/line/asset/signal", None),
        ("", None),
    ],
)
def test_topics(topic: str, parsed: SparkplugTopic | None) -> None:
    assert parse_topic(topic) == parsed


def test_topic_builder() -> None:
    assert sparkplug_topic("g", "DDATA", "e", "d") == "spBv1.0/g/DDATA/e/d"
    assert sparkplug_topic("g", "NBIRTH", "e") == "spBv1.0/g/NBIRTH/e"
    with pytest.raises(ValueError, match="not a Sparkplug topic"):
        sparkplug_topic("g", "DDATA", "e")


def test_bad_topic_is_bad_sparkplug() -> None:
    data = encode_payload(TS_MS, 0, [("x", None, 9, 1.0)])
    assert rejected(data, "plant/a/b", SparkplugAliases()) == "bad_sparkplug"


# --- values, types and times ------------------------------------------------------------------

INTEGER_CASES = [
    (DataType.INT8, -128), (DataType.INT8, 127), (DataType.INT16, -32768), (DataType.INT16, 1),
    (DataType.INT32, -(2**31)), (DataType.INT32, 2**31 - 1), (DataType.INT64, -(2**63)),
    (DataType.INT64, 2**53), (DataType.UINT8, 255), (DataType.UINT16, 65535),
    (DataType.UINT32, 2**32 - 1), (DataType.UINT64, 2**64 - 1),
]  # fmt: skip


@pytest.mark.parametrize(("datatype", "value"), INTEGER_CASES)
def test_integer_round_trip(datatype: DataType, value: int) -> None:
    payload = encode_payload(TS_MS, 0, [("x", None, datatype, value)])
    assert values(readings(payload, NODE.format("NDATA"))) == {"x": [float(value)]}


def metric_bytes(*fields: bytes) -> bytes:
    body = b"".join(fields)
    return bytes([0x12, len(body)]) + body


@pytest.mark.parametrize(
    ("datatype", "value_field", "expected"),
    [
        # Int8 -1 as protobuf writes a negative int32: sign-extended to 10 bytes.
        (1, b"\x50" + b"\xff" * 9 + b"\x01", -1.0),
        # Int8 -1 as its uint8 bit pattern, Int16 -2 as uint16: read at the type's width.
        (1, b"\x50\xff\x01", -1.0),
        (2, b"\x50\xfe\xff\x03", -2.0),
        # UInt32 in long_value, as older Tahu and Ignition send it (Sparkplug issue #102).
        (7, b"\x58\xff\xff\xff\xff\x0f", 4294967295.0),
        # Int32 in long_value, sign-extended.
        (3, b"\x58" + b"\xff" * 9 + b"\x01", -1.0),
        # No datatype at all: int_value read as signed Int32, float_value as a float.
        (None, b"\x50\xf4\xff\xff\xff\x0f", -12.0),
        (None, b"\x65" + struct.pack("<f", 2.5), 2.5),
        (0, b"\x69" + struct.pack("<d", -7.0), -7.0),
    ],
)
def test_integer_encodings_seen_in_the_field(
    datatype: int | None, value_field: bytes, expected: float
) -> None:
    typed = b"" if datatype is None else bytes([0x20, datatype])
    payload = metric_bytes(b"\x0a\x01x", typed, value_field)
    assert values(readings(payload, NODE.format("NDATA"))) == {"x": [expected]}


def test_non_measurements_are_skipped() -> None:
    metrics: list[tuple[str | None, int | None, int, Any]] = [
        ("valve_open", None, DataType.BOOLEAN, True),
        ("operator", None, DataType.STRING, "ana"),
        ("note", None, DataType.TEXT, "x"),
        ("image", None, DataType.BYTES, b"\x00\x01"),
        ("built", None, DataType.DATETIME, TS_MS),
        ("offline", None, DataType.DOUBLE, None),  # is_null
        ("bdSeq", None, DataType.UINT64, 3),
        ("Device Control/Scan Rate", None, DataType.INT32, 100),
        ("pressure", None, DataType.DOUBLE, 4.5),
    ]
    payload = encode_payload(TS_MS, 0, metrics)
    assert values(readings(payload, NODE.format("NDATA"))) == {"pressure": [4.5]}
    only_skipped = encode_payload(TS_MS, 0, metrics[:-1])
    assert run(only_skipped, NODE.format("NDATA")) == []


def test_data_without_datatype_uses_the_birth() -> None:
    aliases = SparkplugAliases()
    payload = encode_dbirth(TS_MS, 0, [("dp", 3, DataType.INT16, -5), ("ok", 4, 11, True)])
    assert values(readings(payload, DEVICE.format("DBIRTH"), aliases)) == {"dp": [-5.0]}
    # encode_data leaves the datatype off the wire: -6 as Int16 only via the birth.
    data = encode_data(TS_MS, 1, [(3, DataType.INT16, -6), (4, DataType.BOOLEAN, False)])
    assert values(readings(data, DEVICE.format("DDATA"), aliases)) == {"dp": [-6.0]}
    # By name, without a datatype: the birth's type too.
    by_name = metric_bytes(b"\x0a\x02dp", b"\x50\xf9\xff\x03")  # -7 as uint16
    assert values(readings(by_name, DEVICE.format("DDATA"), aliases)) == {"dp": [-7.0]}


def test_timestamps_metric_then_payload_then_arrival() -> None:
    metrics = [
        Metric("a", None, DataType.DOUBLE, 1.0, TS_MS + 250),
        Metric("b", None, DataType.DOUBLE, 2.0),
    ]
    found = readings(encode_payload(TS_MS, 0, metrics), NODE.format("NDATA"))
    assert found["a"].timestamps.tolist() == [(TS_MS + 250) / 1000]
    assert found["b"].timestamps.tolist() == [TS_MS / 1000]
    found = readings(encode_payload(None, 0, metrics), NODE.format("NDATA"))
    assert found["b"].timestamps.tolist() == [ARRIVAL]


def test_repeated_metric_becomes_one_series() -> None:
    metrics = [Metric("a", None, DataType.FLOAT, float(i), TS_MS + i) for i in range(5)]
    found = readings(encode_payload(TS_MS, 0, metrics), NODE.format("NDATA"))
    assert values(found) == {"a": [0.0, 1.0, 2.0, 3.0, 4.0]}
    np.testing.assert_array_equal(found["a"].timestamps, (TS_MS + np.arange(5)) / 1000)


def test_unknown_fields_are_skipped_by_wire_type() -> None:
    unknown = (
        b"\xa0\x01\x05"  # field 20 varint
        + b"\xa9\x01" + b"\0" * 8  # field 21 fixed64
        + b"\xb2\x01\x03abc"  # field 22 length-delimited
        + b"\xbd\x01" + b"\0" * 4  # field 23 fixed32
    )  # fmt: skip
    metric = (
        b"\x0a\x01x\x20\x0a"
        + b"\x28\x01\x30\x01"  # is_historical, is_transient
        + b"\x42\x02\x10\x01"  # metadata {content_type...}: a nested message, skipped
        + b"\x4a\x03\x0a\x01k"  # properties {keys: "k"}
        + unknown
        + b"\x69" + struct.pack("<d", 9.5)
    )  # fmt: skip
    payload = (
        bytes([0x12, len(metric)]) + metric
        + b"\x22\x04uuid\x2a\x02\x00\x01"  # uuid, body
        + unknown
    )  # fmt: skip
    assert values(readings(payload, NODE.format("NDATA"))) == {"x": [9.5]}


# --- rejections -------------------------------------------------------------------------------

ONE = metric_bytes(b"\x0a\x01x\x20\x0a\x69" + struct.pack("<d", 1.0))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x08", "bad_sparkplug"),  # truncated varint
        (b"\x08" + b"\xff" * 10 + b"\x01", "bad_sparkplug"),  # varint longer than 10 bytes
        (b"\x12\x05\x0a", "bad_sparkplug"),  # length runs past the end
        (b"\x12\xff\xff\xff\xff\x0f", "bad_sparkplug"),  # a 4 GiB length
        (b"\x0b\x0c", "bad_sparkplug"),  # wire type 3 (start group)
        (b"\x00\x01", "bad_sparkplug"),  # field number 0
        (b"\x0a\x01\x00", "bad_sparkplug"),  # timestamp as length-delimited
        (b"\x10\x01", "bad_sparkplug"),  # metrics as a varint
        (metric_bytes(b"\x0a\x02\xff\xfe"), "bad_sparkplug"),  # name is not UTF-8
        (metric_bytes(b"\x12\x01x"), "bad_sparkplug"),  # alias as length-delimited
        (metric_bytes(b"\x0a\x01x\x65\x00\x00"), "bad_sparkplug"),  # truncated float
        (metric_bytes(b"\x20\x09\x65\x00\x00\x80\x3f"), "bad_sparkplug"),  # neither name nor alias
        (metric_bytes(b"\x0a\x01x\x20\x09\x65" + struct.pack("<f", float("nan"))), "non_finite"),
        (metric_bytes(b"\x0a\x01x\x20\x0a\x69" + struct.pack("<d", float("-inf"))), "non_finite"),
        (metric_bytes(b"\x0a\x01x\x20\x09\x7a\x01a"), "wrong_type"),  # Float carrying a string
        (metric_bytes(b"\x0a\x01x\x20\x03\x69" + b"\0" * 8), "wrong_type"),  # Int32 as a double
        (b"", "empty"),
        (b"\x08\x01\x18\x01", "empty"),  # DATA without metrics
        (ONE * 5, "too_large"),
    ],
)
def test_rejections(payload: bytes, reason: str) -> None:
    out = run(payload, NODE.format("NDATA"), SparkplugAliases(), Limits(max_batch_values=4))
    assert isinstance(out, Rejected), out
    assert out.reason == reason


def test_birth_metric_without_name_is_bad() -> None:
    payload = encode_payload(TS_MS, 0, [(None, 1, DataType.DOUBLE, 1.0)])
    assert rejected(payload, NODE.format("NBIRTH"), SparkplugAliases()) == "bad_sparkplug"


def test_birth_without_metrics_is_valid_and_empty() -> None:
    aliases = SparkplugAliases()
    assert run(encode_payload(TS_MS, 0, []), DEVICE.format("DBIRTH"), aliases) == []
    assert len(aliases) == 1


# --- bounds of the alias table ----------------------------------------------------------------


def test_alias_table_entries_are_bounded_by_evicting_the_least_used() -> None:
    aliases = SparkplugAliases(max_entries=2)
    dbirth = encode_dbirth(TS_MS, 0, [("x", 1, DataType.FLOAT, 1.0)])
    ddata = encode_data(TS_MS, 1, [(1, DataType.FLOAT, 2.0)])
    for device in ("a", "b"):
        readings(dbirth, f"spBv1.0/g/DBIRTH/e/{device}", aliases)
    readings(ddata, "spBv1.0/g/DDATA/e/a", aliases)  # a carries data, b never did
    readings(dbirth, "spBv1.0/g/DBIRTH/e/c", aliases)  # the table is full: b goes
    assert len(aliases) == 2
    assert aliases.evicted == 1
    out = run(ddata, "spBv1.0/g/DDATA/e/b", aliases)
    assert isinstance(out, Rejected)
    assert out.reason == "unknown_alias"
    readings(ddata, "spBv1.0/g/DDATA/e/a", aliases)  # a kept its aliases
    readings(dbirth, "spBv1.0/g/DBIRTH/e/a", aliases)  # a rebirth replaces, evicts nothing
    assert aliases.evicted == 1


def test_fake_births_cannot_lock_a_real_device_out() -> None:
    # 1,000 fake DBIRTHs used to fill the table for good: a real device's DBIRTH was then
    # refused and its DDATA never scored.
    aliases = SparkplugAliases(max_entries=100, max_node_devices=20)
    dbirth = encode_dbirth(TS_MS, 0, [("x", 1, DataType.FLOAT, 1.0)])
    for i in range(1000):
        readings(dbirth, f"spBv1.0/g/DBIRTH/attacker-{i % 7}/fake-{i}", aliases)
    assert len(aliases) <= 100
    assert aliases.evicted >= 900
    readings(encode_dbirth(TS_MS, 0, [("rms_g", 5, DataType.FLOAT, 0.1)]),
             "spBv1.0/plant/DBIRTH/press-7/accel-1", aliases)
    got = readings(encode_data(TS_MS, 1, [(5, DataType.FLOAT, 0.4)]),
                   "spBv1.0/plant/DDATA/press-7/accel-1", aliases)
    assert list(got) == ["rms_g"]
    # One node's flood displaces its own entries first: another node's device stays.
    for i in range(100):
        readings(dbirth, f"spBv1.0/g/DBIRTH/attacker-0/more-{i}", aliases)
    assert aliases.lookup("plant", "press-7", "accel-1") is not None


def test_a_live_device_born_before_a_flood_of_fake_births_keeps_its_aliases() -> None:
    # The fault suite's finding: each BIRTH's own lookup counted as use, so 1,200 fake
    # DBIRTHs all looked used and the live device, least recently used, was evicted.
    aliases = SparkplugAliases(max_entries=100, max_node_devices=20)
    readings(encode_dbirth(TS_MS, 0, [("rms_g", 5, DataType.FLOAT, 0.1)]),
             "spBv1.0/plant/DBIRTH/press-7/accel-1", aliases)
    readings(encode_data(TS_MS, 1, [(5, DataType.FLOAT, 0.4)]),
             "spBv1.0/plant/DDATA/press-7/accel-1", aliases)
    dbirth = encode_dbirth(TS_MS, 0, [("x", 1, DataType.FLOAT, 1.0)])
    for i in range(1200):
        readings(dbirth, f"spBv1.0/g/DBIRTH/attacker-{i % 6}/fake-{i}", aliases)
    got = readings(encode_data(TS_MS, 2, [(5, DataType.FLOAT, 0.5)]),
                   "spBv1.0/plant/DDATA/press-7/accel-1", aliases)
    assert list(got) == ["rms_g"]


def test_metrics_per_entry_and_in_total_are_bounded() -> None:
    aliases = SparkplugAliases(max_entries=10, max_metrics=3, max_aliases=5)
    three = [(f"m{i}", i, DataType.FLOAT, 1.0) for i in range(3)]
    four = encode_dbirth(TS_MS, 0, [*three, ("m3", 3, 9, 1.0)])
    out = run(four, DEVICE.format("DBIRTH"), aliases)
    assert isinstance(out, Rejected)
    assert "max_metrics=3" in out.detail
    readings(encode_dbirth(TS_MS, 0, three), "spBv1.0/g/DBIRTH/e/a", aliases)
    readings(encode_dbirth(TS_MS, 0, three), "spBv1.0/g/DBIRTH/e/a", aliases)  # replaces
    assert aliases.alias_count == 3
    # Three more would make 6 > 5: the older entry makes room.
    readings(encode_dbirth(TS_MS, 0, three), "spBv1.0/g/DBIRTH/e/b", aliases)
    assert aliases.alias_count == 3
    assert aliases.lookup("g", "e", "a") is None
    assert aliases.evicted == 1


def test_device_churn_leaves_nothing_behind() -> None:
    aliases = SparkplugAliases(max_entries=2)
    dbirth = encode_dbirth(TS_MS, 0, [("x", 1, DataType.FLOAT, 1.0)])
    for i in range(1000):
        readings(dbirth, f"spBv1.0/g/DBIRTH/edge-{i}/d", aliases)
        assert run(b"", f"spBv1.0/g/DDEATH/edge-{i}/d", aliases) == []
    assert len(aliases) == 0
    assert not aliases._nodes  # no empty per-node dicts pile up either


@pytest.mark.parametrize("name", ["max_entries", "max_metrics", "max_aliases"])
def test_alias_table_parameters_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        SparkplugAliases(**{name: 0})


# --- round trips ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.one_of(
            st.tuples(st.just(DataType.INT8), st.integers(-(2**7), 2**7 - 1)),
            st.tuples(st.just(DataType.INT16), st.integers(-(2**15), 2**15 - 1)),
            st.tuples(st.just(DataType.INT32), st.integers(-(2**31), 2**31 - 1)),
            st.tuples(st.just(DataType.INT64), st.integers(-(2**63), 2**63 - 1)),
            st.tuples(st.just(DataType.UINT32), st.integers(0, 2**32 - 1)),
            st.tuples(st.just(DataType.UINT64), st.integers(0, 2**64 - 1)),
            st.tuples(st.just(DataType.FLOAT), st.floats(width=32, allow_nan=False,
                                                         allow_infinity=False)),
            st.tuples(st.just(DataType.DOUBLE), st.floats(allow_nan=False, allow_infinity=False)),
        ),
        min_size=1,
        max_size=20,
    ),
    seq=st.integers(0, 255),
)
def test_birth_and_data_round_trip(rows: list[tuple[DataType, Any]], seq: int) -> None:
    aliases = SparkplugAliases()
    born = [(f"m{i}", i + 100, datatype, value) for i, (datatype, value) in enumerate(rows)]
    expected = {f"m{i}": [float(value)] for i, (_, value) in enumerate(rows)}
    assert values(readings(encode_dbirth(TS_MS, seq, born), DEVICE.format("DBIRTH"), aliases)) == (
        expected
    )
    data = encode_data(TS_MS + 1, seq, [(i + 100, d, v) for i, (d, v) in enumerate(rows)])
    assert values(readings(data, DEVICE.format("DDATA"), aliases)) == expected


def test_encoder_refuses_structured_types() -> None:
    with pytest.raises(ValueError, match="cannot be encoded"):
        encode_payload(TS_MS, 0, [("d", None, DataType.DATASET, {})])


def test_docstring_examples() -> None:
    assert doctest.testmod(sparkplug, raise_on_error=True).attempted >= 5


# --- the Quality property (issue 11, item 5) ---------------------------------------------------

# Metric{name="temp", datatype=10 Double, double_value=70.5,
#        properties=PropertySet{keys=["engUnit", "Quality"],
#                               values=[{type=12 String, string_value="C"},
#                                       {type=3 Int32, int_value=<code>}]}}, by hand.
def hand_metric_with_quality(code: int) -> bytes:
    unit = b"\x08\x0c\x42\x01C"  # PropertyValue{type=12, string_value="C"}
    quality = b"\x08\x03\x18" + bytes([code]) if code < 128 else (
        b"\x08\x03\x18" + bytes([code & 0x7F | 0x80, code >> 7]))
    props = (b"\x0a\x07engUnit\x0a\x07Quality"
             + bytes([0x12, len(unit)]) + unit + bytes([0x12, len(quality)]) + quality)
    metric = (b"\x0a\x04temp\x20\x0a" + bytes([0x4A, len(props)]) + props
              + b"\x69" + struct.pack("<d", 70.5))
    return bytes([0x12, len(metric)]) + metric


def test_a_metric_of_bad_or_stale_quality_is_rejected_alone() -> None:
    good = metric_bytes(b"\x0a\x03rpm\x20\x0a\x69" + struct.pack("<d", 1450.0))
    for code, word in ((0, "BAD"), (500, "STALE"), (64, "not GOOD")):
        out = run(good + hand_metric_with_quality(code), NODE.format("NDATA"))
        assert isinstance(out, list), out
        by_name = {r.metric: r.data for r in out}
        assert isinstance(by_name["rpm"], Samples)  # the message's other metric is used
        assert by_name["rpm"].values.tolist() == [1450.0]
        assert by_name["temp"] == Rejected("bad_quality", f"metric 'temp' Quality {code} ({word})")
    assert values(readings(good + hand_metric_with_quality(192), NODE.format("NDATA"))) == {
        "rpm": [1450.0], "temp": [70.5]}


def test_quality_read_from_a_protobuf_package_property_set() -> None:
    field, proto, compiled = protobuf_file("q")
    payload_type = proto.message_type.add(name="Payload")
    value_type = payload_type.nested_type.add(name="PropertyValue")
    for name, number, kind in [("type", 1, field.TYPE_UINT32), ("is_null", 2, field.TYPE_BOOL),
                               ("int_value", 3, field.TYPE_UINT32),
                               ("long_value", 4, field.TYPE_UINT64),
                               ("string_value", 8, field.TYPE_STRING)]:
        value_type.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    set_type = payload_type.nested_type.add(name="PropertySet")
    set_type.field.add(name="keys", number=1, type=field.TYPE_STRING, label=field.LABEL_REPEATED)
    set_type.field.add(name="values", number=2, type=field.TYPE_MESSAGE,
                       label=field.LABEL_REPEATED, type_name=".q.Payload.PropertyValue")
    metric_type = payload_type.nested_type.add(name="Metric")
    for name, number, kind in [("name", 1, field.TYPE_STRING), ("datatype", 4, field.TYPE_UINT32),
                               ("double_value", 13, field.TYPE_DOUBLE)]:
        metric_type.field.add(name=name, number=number, type=kind, label=field.LABEL_OPTIONAL)
    metric_type.field.add(name="properties", number=9, type=field.TYPE_MESSAGE,
                          label=field.LABEL_OPTIONAL, type_name=".q.Payload.PropertySet")
    payload_type.field.add(name="metrics", number=2, type=field.TYPE_MESSAGE,
                           label=field.LABEL_REPEATED, type_name=".q.Payload.Metric")
    payload_class = compiled("q.Payload")
    message = payload_class()
    cases: list[tuple[str, dict[str, Any] | None]] = [
        ("ok", {"int_value": 192}), ("long", {"long_value": 192}), ("stale", {"int_value": 500}),
        ("null", {"is_null": True}), ("text", {"string_value": "Good"}), ("none", None)]
    for name, quality in cases:
        metric = message.metrics.add(name=name, datatype=10, double_value=1.0)
        if quality is not None:
            metric.properties.keys.append("Quality")
            metric.properties.values.add(type=3, **quality)
    out = run(message.SerializeToString(), NODE.format("NDATA"))
    assert isinstance(out, list)
    kinds = {r.metric: type(r.data).__name__ for r in out}
    # A null Quality says nothing; a string one is not the Int32 the specification asks for.
    assert kinds == {"ok": "Samples", "long": "Samples", "null": "Samples", "none": "Samples",
                     "stale": "Rejected", "text": "Rejected"}


@pytest.mark.parametrize("code", [0, 192, 500])
def test_quality_round_trips_through_our_encoder(code: int) -> None:
    payload = encode_payload(TS_MS, 0, [Metric("temp", 1, DataType.FLOAT, 21.5, None, code)])
    out = run(payload, NODE.format("NDATA"))
    assert isinstance(out, list)
    assert isinstance(out[0].data, Samples if code == sparkplug.GOOD_QUALITY else Rejected)


def test_a_malformed_property_set_rejects_the_message() -> None:
    props = b"\x08\x01"  # keys as a varint: not what sparkplug_b.proto says
    metric = b"\x0a\x01x\x20\x0a" + bytes([0x4A, len(props)]) + props + b"\x69" + bytes(8)
    assert rejected(bytes([0x12, len(metric)]) + metric, NODE.format("NDATA")) == "bad_sparkplug"
