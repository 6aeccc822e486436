"""The Sparkplug B protobuf wire format, written: payloads for the simulator and the tests.

:func:`encode_payload` writes a ``Payload`` of :class:`Metric` rows (each with its data type,
value, timestamp and ``Quality`` property), and :func:`encode_nbirth`, :func:`encode_dbirth`,
:func:`encode_data`, :func:`encode_ndeath` and :func:`encode_ddeath` the messages an edge node
sends. The agent itself only reads Sparkplug (:mod:`shopfloor.receiving.sparkplug_wire`); the writer
is its own module so that the reader stays small. :mod:`shopfloor.receiving.sparkplug` re-exports
all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from shopfloor.receiving.sparkplug_wire import (
    _F32,
    _F64,
    _INTEGERS,
    _MASK64,
    _QUALITY_KEY,
    DataType,
)

__all__ = [
    "Metric",
    "encode_data",
    "encode_dbirth",
    "encode_ddeath",
    "encode_nbirth",
    "encode_ndeath",
    "encode_payload",
]


class Metric(NamedTuple):
    """One metric to encode; ``name`` or ``alias`` (or both), ``value`` None for a null."""

    name: str | None
    alias: int | None
    datatype: int
    value: Any
    timestamp_ms: int | None = None
    quality: int | None = None  # the Quality property: 192 GOOD, 0 BAD, 500 STALE



def _put_varint(out: bytearray, value: int) -> None:
    value &= _MASK64  # negative numbers as their 64-bit two's complement, as protobuf does
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_int(out: bytearray, field: int, value: int) -> None:
    _put_varint(out, field << 3)
    _put_varint(out, value)


def _put_bytes(out: bytearray, field: int, data: bytes) -> None:
    _put_varint(out, field << 3 | 2)
    _put_varint(out, len(data))
    out += data


def _encode_metric(metric: Metric, with_datatype: bool) -> bytes:
    name, alias, datatype, value, ts, quality = metric
    out = bytearray()
    if name is not None:
        _put_bytes(out, 1, name.encode())
    if alias is not None:
        _put_int(out, 2, alias)
    if ts is not None:
        _put_int(out, 3, ts)
    if with_datatype:
        _put_int(out, 4, int(datatype))
    if quality is not None:  # PropertySet {keys: ["Quality"], values: [{type: Int32, int}]}
        code = bytearray()
        _put_int(code, 1, DataType.INT32)
        _put_int(code, 3, quality)
        properties = bytearray()
        _put_bytes(properties, 1, _QUALITY_KEY)
        _put_bytes(properties, 2, bytes(code))
        _put_bytes(out, 9, bytes(properties))
    if value is None:
        _put_int(out, 7, 1)
    elif datatype in _INTEGERS:
        wide = datatype in (DataType.INT64, DataType.UINT64)
        _put_int(out, 11 if wide else 10, int(value) & (_MASK64 if wide else 0xFFFFFFFF))
    elif datatype == DataType.DATETIME:
        _put_int(out, 11, int(value))
    elif datatype == DataType.FLOAT:
        _put_varint(out, 12 << 3 | 5)
        out += _F32.pack(value)
    elif datatype == DataType.DOUBLE:
        _put_varint(out, 13 << 3 | 1)
        out += _F64.pack(value)
    elif datatype == DataType.BOOLEAN:
        _put_int(out, 14, int(bool(value)))
    elif datatype in (DataType.STRING, DataType.TEXT, DataType.UUID):
        _put_bytes(out, 15, str(value).encode())
    elif datatype in (DataType.BYTES, DataType.FILE):
        _put_bytes(out, 16, bytes(value))
    else:
        raise ValueError(f"datatype {datatype} cannot be encoded here: use a scalar type")
    return bytes(out)


def encode_payload(
    timestamp_ms: int | None,
    seq: int | None,
    metrics: Sequence[Metric | tuple[str | None, int | None, int, Any]],
    *,
    with_datatype: bool = True,
) -> bytes:
    """A Sparkplug B ``Payload``: metrics as (name, alias, datatype, value[, timestamp_ms])."""
    out = bytearray()
    if timestamp_ms is not None:
        _put_int(out, 1, timestamp_ms)
    for metric in metrics:
        _put_bytes(out, 2, _encode_metric(Metric(*metric), with_datatype))
    if seq is not None:
        _put_int(out, 3, seq)
    return bytes(out)


def encode_nbirth(
    timestamp_ms: int, metrics: Sequence[tuple[str, int | None, int, Any]], bd_seq: int = 0
) -> bytes:
    """An NBIRTH (seq 0) with ``bdSeq`` and ``Node Control/Rebirth`` before the node's metrics."""
    control = [("bdSeq", None, DataType.UINT64, bd_seq), ("Node Control/Rebirth", None, 11, False)]
    return encode_payload(timestamp_ms, 0, [*control, *metrics])


def encode_dbirth(
    timestamp_ms: int, seq: int, metrics: Sequence[tuple[str, int | None, int, Any]]
) -> bytes:
    """A DBIRTH: each metric's (name, alias, datatype, value)."""
    return encode_payload(timestamp_ms, seq, metrics)


def encode_data(
    timestamp_ms: int, seq: int, metrics: Sequence[tuple[int, int, Any]]
) -> bytes:
    """An NDATA or DDATA by alias only: (alias, datatype, value); the type stays off the wire."""
    rows = [Metric(None, alias, datatype, value) for alias, datatype, value in metrics]
    return encode_payload(timestamp_ms, seq, rows, with_datatype=False)


def encode_ndeath(bd_seq: int) -> bytes:
    """An NDEATH (the node's MQTT will): its ``bdSeq`` only."""
    return encode_payload(None, None, [("bdSeq", None, DataType.UINT64, bd_seq)])


def encode_ddeath(timestamp_ms: int, seq: int) -> bytes:
    """A DDEATH: timestamp and sequence number, no metrics."""
    return encode_payload(timestamp_ms, seq, [])
