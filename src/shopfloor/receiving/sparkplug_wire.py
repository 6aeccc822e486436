"""The Sparkplug B protobuf wire format, read: data types and a small, non-recursive reader.

Only the part of the schema that carries measurements is read, from ``sparkplug_b.proto`` of
Eclipse Tahu (see :mod:`shopfloor.receiving.sparkplug` for the fields): :func:`_payload` splits a
``Payload`` into its timestamp, metrics and sequence number, :func:`_metric` reads one
``Metric`` and :func:`_quality` its ``Quality`` property, and :func:`_value` turns a metric's
raw value into a number by its data type. The data types (:class:`DataType`) and the wire
constants are shared with the writer (:mod:`shopfloor.receiving.sparkplug_encode`); what the
messages mean (topics, aliases, BIRTH and DEATH) is :mod:`shopfloor.receiving.sparkplug`'s, which
re-exports :class:`DataType` and :data:`GOOD_QUALITY`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum
from math import isfinite
from typing import Any, NamedTuple

from shopfloor.receiving.readings import _RejectError

__all__ = ["GOOD_QUALITY", "DataType"]


class DataType(IntEnum):
    """Sparkplug data types (the index listed at the top of ``Payload`` in the proto)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTYSET = 20
    PROPERTYSETLIST = 21


# (bits, signed) of the integer types; DateTime is a uint64 too, but a time, not a measurement.
_INTEGERS = {
    DataType.INT8: (8, True),
    DataType.INT16: (16, True),
    DataType.INT32: (32, True),
    DataType.INT64: (64, True),
    DataType.UINT8: (8, False),
    DataType.UINT16: (16, False),
    DataType.UINT32: (32, False),
    DataType.UINT64: (64, False),
}
_FLOATS = (DataType.FLOAT, DataType.DOUBLE)
_MASK64 = (1 << 64) - 1
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


#: The Sparkplug 3.0 ``Quality`` property's code for a value that may be trusted.
GOOD_QUALITY = 192
_QUALITY_KEY = b"Quality"


# --- wire-format reader ----------------------------------------------------------------------


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 70:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
    raise _Malformed("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterable[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varint/fixed types, bytes when delimited."""
    pos, end = 0, len(buf)
    value: Any
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Malformed("truncated fixed-size field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if size > end - pos:
                raise _Malformed(f"field {field} length {size} runs past the payload")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise _Malformed(f"wire type {wire} (groups are not used by Sparkplug)")
        yield field, wire, value


class _Read(NamedTuple):
    """A metric as read; ``field`` is the number of the value field (10..19), ``raw`` its value."""

    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: int | None
    is_null: bool
    field: int | None
    raw: Any
    quality: int | None


# Wire types (0 varint, 1 fixed64, 2 length-delimited, 5 fixed32) of Payload's fields 1..5
# and of Metric's fields 1..19; a known field with another wire type is malformed.
_PAYLOAD_WIRE = {1: 0, 2: 2, 3: 0, 4: 2, 5: 2}
_WIRE = dict(enumerate((2, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0, 5, 1, 0, 2, 2, 2, 2, 2), start=1))


def _metric(buf: bytes) -> _Read:
    name = alias = ts = datatype = kind = value = quality = None
    is_null = False
    for field, wire, raw in _fields(buf):
        if wire != _WIRE.get(field, wire):
            raise _Malformed(f"metric field {field} has wire type {wire}")
        if field == 1:
            name = raw.decode()  # UnicodeDecodeError is a ValueError: bad_sparkplug
        elif field == 2:
            alias = raw
        elif field == 3:
            ts = raw
        elif field == 4:
            datatype = raw
        elif field == 7:
            is_null = bool(raw)
        elif field == 9:
            quality = _quality(raw)
        elif 10 <= field <= 19:
            kind, value = field, raw
    return _Read(name, alias, ts, datatype, is_null, kind, value, quality)


def _quality(buf: bytes) -> int | None:
    """The ``Quality`` property of a metric's PropertySet: its integer, or None if absent or
    null. Keys and values are parallel lists; nothing below a PropertyValue is read."""
    keys: list[bytes] = []
    values: list[bytes] = []
    for field, wire, raw in _fields(buf):
        if field in (1, 2):
            if wire != 2:
                raise _Malformed(f"property set field {field} has wire type {wire}")
            (keys if field == 1 else values).append(raw)
    if _QUALITY_KEY not in keys:
        return None
    index = keys.index(_QUALITY_KEY)
    if index >= len(values):
        raise _Malformed("property set has fewer values than keys")
    code = None
    for field, wire, raw in _fields(values[index]):
        if field == 2 and raw:  # is_null
            return None
        if field in (3, 4):
            if wire != 0:
                raise _Malformed(f"Quality property field {field} has wire type {wire}")
            code = raw
    return -1 if code is None else code  # not an Int32 as the specification says: not GOOD


def _payload(buf: bytes, bound: tuple[str, int]
             ) -> tuple[int | None, list[_Read], int | None]:
    name, limit = bound
    timestamp: int | None = None
    seq: int | None = None
    metrics: list[_Read] = []
    for field, wire, raw in _fields(buf):
        if wire != _PAYLOAD_WIRE.get(field, wire):
            raise _Malformed(f"payload field {field} has wire type {wire}")
        if field == 1:
            timestamp = raw
        elif field == 2:
            if len(metrics) == limit:
                raise _RejectError("too_large", f"more than {name}={limit} metrics")
            metrics.append(_metric(raw))
        elif field == 3:
            seq = raw
    return timestamp, metrics, seq


def _value(name: str, datatype: int | None, kind: int | None, raw: Any) -> float | None:
    """The metric's number, or None for the types that are not measurements."""
    if datatype is None or datatype == DataType.UNKNOWN:
        datatype = {10: DataType.INT32, 11: DataType.INT64, 12: 9, 13: 10}.get(kind or 0, 0)
    if datatype in _INTEGERS:
        if kind not in (10, 11):
            raise _RejectError("wrong_type", f"metric {name!r}: integer type without int value")
        bits, signed = _INTEGERS[DataType(datatype)]
        number = raw & ((1 << bits) - 1)
        if signed and number >> (bits - 1):
            number -= 1 << bits
        return float(number)
    if datatype in _FLOATS:
        if kind not in (12, 13):
            raise _RejectError("wrong_type", f"metric {name!r}: float type without float value")
        number = (_F32 if kind == 12 else _F64).unpack(raw)[0]
        if not isfinite(number):
            raise _RejectError("non_finite", f"metric {name!r} is {number}")
        return float(number)
    return None
