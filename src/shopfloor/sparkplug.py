"""Sparkplug B payloads: a small protobuf wire-format reader and writer, and the alias table.

Only the part of the schema that carries measurements is read, from ``sparkplug_b.proto`` of
Eclipse Tahu (repository eclipse/tahu, file ``sparkplug_b/sparkplug_b.proto``, proto2,
package ``org.eclipse.tahu.protobuf``): ``Payload`` {timestamp=1 uint64, metrics=2, seq=3
uint64, uuid=4, body=5} and ``Metric`` {name=1, alias=2 uint64, timestamp=3 uint64 (ms),
datatype=4 uint32, is_historical=5, is_transient=6, is_null=7, metadata=8, properties=9, and
the value oneof int_value=10 uint32, long_value=11 uint64, float_value=12 float,
double_value=13 double, boolean_value=14, string_value=15, bytes_value=16, dataset_value=17,
template_value=18, extension_value=19}. Every other field is skipped by its wire type. Of the
nested messages only a metric's ``PropertySet`` {keys=1 string, values=2 PropertyValue
{type=1, is_null=2, int_value=3 uint32, long_value=4 uint64, ...}} is read, one level deep and
for its ``Quality`` key only; metadata, datasets, templates and nested property sets are never
descended into, so a hostile payload cannot make the reader recurse.

How messages become readings (the codec ``"sparkplug"`` of :func:`shopfloor.codecs.decode`):

- Topics are ``spBv1.0/{group}/{type}/{edge}[/{device}]``. BIRTH messages register the
  metrics' names, aliases and data types for their (group, edge, device) and yield the values
  they carry; DATA messages may name metrics by alias only, and an alias the table does not
  know rejects the message as ``unknown_alias`` (until the node is born again). NBIRTH and
  NDEATH clear the node and all its devices, DDEATH one device. NCMD, DCMD and STATE carry no
  measurements: an empty list.
- Integer, long, float and double metrics become scalar samples named by the metric. Signed
  integers are read from their two's complement at the data type's width, whichever of
  ``int_value``/``long_value`` carries them (implementations disagree, Tahu issue #71); a
  metric without a data type in its message or its BIRTH is read as signed.
- Booleans are skipped like strings, bytes, datasets and templates: a valve's open/closed
  state is a real signal, but control charts and detectors on 0/1 say nothing useful, and
  the JSON codec also refuses booleans as numbers. ``bdSeq`` and ``Node Control/*``,
  ``Device Control/*`` metrics are protocol bookkeeping and are skipped too, as are null ones.
- A NaN or infinite float metric rejects the message (``non_finite``), as in JSON.
- A metric whose ``Quality`` property is not 192 (GOOD) - Sparkplug 3.0 names 0 BAD,
  192 GOOD and 500 STALE, as Ignition and OPC DA do - is a ``bad_quality`` reading: counted,
  never learned, while the message's other metrics are used. Sparkplug fixes the codes, so
  unlike a JSON gateway's flag (:func:`shopfloor.codecs.good_quality`, where OPC UA's 0 is
  Good) there is nothing to configure.
- A sample's time is the metric's timestamp, else the payload's, else the arrival time.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum
from math import isfinite
from typing import Any, NamedTuple

import numpy as np

from shopfloor.codecs import Decoded, Limits, Reading, Rejected, Samples, _RejectError

__all__ = [
    "GOOD_QUALITY",
    "MESSAGE_TYPES",
    "DataType",
    "Metric",
    "SparkplugAliases",
    "SparkplugTopic",
    "decode_sparkplug",
    "encode_data",
    "encode_dbirth",
    "encode_ddeath",
    "encode_nbirth",
    "encode_ndeath",
    "encode_payload",
    "parse_topic",
    "sparkplug_topic",
]


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
MESSAGE_TYPES = ("NBIRTH", "NDEATH", "NDATA", "NCMD", "DBIRTH", "DDEATH", "DDATA", "DCMD")
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")


class SparkplugTopic(NamedTuple):
    """The parts of a Sparkplug topic; ``device`` is None for node messages and STATE."""

    group: str
    message_type: str
    edge: str
    device: str | None


def parse_topic(topic: str) -> SparkplugTopic | None:
    """Split ``spBv1.0/{group}/{type}/{edge}[/{device}]`` (or ``spBv1.0/STATE/{host}``)."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[:2] == ["spBv1.0", "STATE"] and parts[2]:
        return SparkplugTopic("", "STATE", parts[2], None)
    if len(parts) not in (4, 5) or parts[0] != "spBv1.0" or not all(parts):
        return None
    kind = parts[2]
    if kind not in MESSAGE_TYPES or (len(parts) == 5) != kind.startswith("D"):
        return None
    return SparkplugTopic(parts[1], kind, parts[3], parts[4] if len(parts) == 5 else None)


def sparkplug_topic(group: str, message_type: str, edge: str, device: str | None = None) -> str:
    """The topic of a message, e.g. ``spBv1.0/plant1/DDATA/press-7/accel-1``."""
    levels = ["spBv1.0", group, message_type, edge] + ([device] if device else [])
    topic = "/".join(levels)
    if parse_topic(topic) is None:
        raise ValueError(f"{topic!r} is not a Sparkplug topic: check the type and device")
    return topic


class SparkplugAliases:
    """Metric names, aliases and data types per (group, edge node, device), bounded.

    Parameters
    ----------
    max_entries
        Most (group, edge, device) entries; a BIRTH for a new one beyond it is rejected.
    max_metrics
        Most metrics one BIRTH may register.
    max_aliases
        Most metrics over all entries, so that many full entries still fit in memory.
    max_node_devices
        Most entries of one edge node: a node that floods BIRTHs displaces its own entries,
        not the other nodes'.

    A BIRTH that finds the table (or its node) full evicts entries instead of being refused:
    those that never carried data first (oldest BIRTH first), then the least recently used.
    1,000 fake DBIRTHs used to fill the table for good, after which a real device's DBIRTH
    was refused and its DDATA never scored. Evictions are counted (``evicted``); an evicted
    device's DATA is ``unknown_alias`` until it is born again.

    Updated by :func:`decode_sparkplug` in the network thread only, so it needs no lock.

    Examples
    --------
    >>> from shopfloor.codecs import Limits, decode
    >>> aliases, limits = SparkplugAliases(), Limits()
    >>> birth = encode_dbirth(1767225600000, 0, [("rms_g", 1, DataType.FLOAT, 0.5)])
    >>> [r.metric for r in decode("sparkplug", birth, 0.0, limits, aliases,
    ...                           "spBv1.0/plant/DBIRTH/press-7/accel-1")]
    ['rms_g']
    >>> data = encode_data(1767225601000, 1, [(1, DataType.FLOAT, 0.75)])
    >>> [r] = decode("sparkplug", data, 0.0, limits, aliases, "spBv1.0/plant/DDATA/press-7/accel-1")
    >>> r.metric, r.data.values
    ('rms_g', array([0.75]))
    >>> decode("sparkplug", data, 0.0, limits, aliases, "spBv1.0/plant/DDATA/press-7/b").reason
    'unknown_alias'
    """

    def __init__(
        self, max_entries: int = 1000, max_metrics: int = 10_000, max_aliases: int = 100_000,
        max_node_devices: int = 256,
    ) -> None:
        for name, value in (
            ("max_entries", max_entries),
            ("max_metrics", max_metrics),
            ("max_aliases", max_aliases),
            ("max_node_devices", max_node_devices),
        ):
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.max_entries = max_entries
        self.max_metrics = max_metrics
        self.max_aliases = max_aliases
        self.max_node_devices = max_node_devices
        self.evicted = 0
        # (group, edge) -> device ("" for the node itself) -> (alias -> (name, type), name -> type)
        self._nodes: dict[tuple[str, str], dict[str, _Entry]] = {}
        # Per entry: the tick of its BIRTH and of its latest DATA (0: none yet).
        self._tick = 0
        self._born: dict[tuple[str, str, str], int] = {}
        self._used: dict[tuple[str, str, str], int] = {}
        # Host behaviour (shopfloor.sparkplug_host): each node's last sequence number, and the
        # nodes to ask for a rebirth (an unknown alias, a gap in the sequence, no NBIRTH seen).
        self._seq: dict[tuple[str, str], int] = {}
        self.wanted: dict[tuple[str, str], None] = {}
        self.gaps = 0  # sequence numbers that did not follow their node's last one

    def sequence(self, group: str, edge: str, kind: str, seq: int | None) -> None:
        """Follow a node's sequence numbers (0-255, one counter for the node and its devices,
        reset by NBIRTH); a gap, or DATA from a node whose NBIRTH this table never saw, asks
        for a rebirth."""
        node = (group, edge)
        if kind == "NBIRTH":
            self._seq[node] = 0 if seq is None else seq
            return
        if kind == "NDEATH":
            self._seq.pop(node, None)
            return
        if seq is None:
            return
        last = self._seq.get(node)
        if last is None or seq != (last + 1) % 256:
            self.gaps += last is not None
            self.wanted[node] = None
        if len(self._seq) >= 4 * self.max_entries and node not in self._seq:
            self._seq.clear()  # bounded: forgotten nodes are asked for a rebirth again
        self._seq[node] = seq

    def __len__(self) -> int:
        return sum(len(devices) for devices in self._nodes.values())

    @property
    def alias_count(self) -> int:
        """Metrics registered over all entries."""
        return sum(len(e.types) for d in self._nodes.values() for e in d.values())

    def register(
        self,
        group: str,
        edge: str,
        device: str | None,
        metrics: Iterable[tuple[str, int | None, int]],
    ) -> None:
        """Replace the entry of a BIRTH with its (name, alias, datatype) triples.

        Raises
        ------
        ValueError
            If the table or the entry would exceed its bounds (the entry is then left out).
        """
        entry = _Entry({}, {})
        for name, alias, datatype in metrics:
            entry.types[name] = datatype
            if alias is not None:
                entry.aliases[alias] = (name, datatype)
            if len(entry.types) > self.max_metrics:
                raise ValueError(f"BIRTH registers more than max_metrics={self.max_metrics}")
        if len(entry.types) > self.max_aliases:
            raise ValueError(f"BIRTH registers more than max_aliases={self.max_aliases}")
        key = device or ""
        self.clear(group, edge, key)  # a re-birth replaces its entry
        while len(self._nodes.get((group, edge), {})) >= self.max_node_devices:
            self._evict((group, edge))
        while len(self) >= self.max_entries or (
                self.alias_count + len(entry.types) > self.max_aliases):
            self._evict(None)
        self._nodes.setdefault((group, edge), {})[key] = entry
        self._tick += 1
        self._born[(group, edge, key)] = self._tick
        self._used[(group, edge, key)] = 0

    def _evict(self, node: tuple[str, str] | None) -> None:
        """Drop the least valuable entry (of ``node``, or of the whole table)."""
        keys = [k for k in self._born if node is None or k[:2] == node]
        # Never used before used; then the oldest BIRTH, or the least recent DATA.
        victim = min(keys, key=lambda k: (self._used[k] > 0, self._used[k] or self._born[k]))
        self.clear(*victim)
        self.evicted += 1

    def clear(self, group: str, edge: str, device: str | None = None) -> None:
        """Forget a device, or (device None) a node and all its devices."""
        if device is None:
            for key in self._nodes.pop((group, edge), {}):
                self._born.pop((group, edge, key), None)
                self._used.pop((group, edge, key), None)
        else:
            devices = self._nodes.get((group, edge))
            if devices is not None:
                devices.pop(device, None)
                self._born.pop((group, edge, device), None)
                self._used.pop((group, edge, device), None)
                if not devices:  # no empty dicts left behind by device churn
                    del self._nodes[(group, edge)]

    def lookup(self, group: str, edge: str, device: str | None, use: bool = True
               ) -> _Entry | None:
        """The entry of a (group, edge, device), if it was born. ``use``: a DATA message's
        lookup counts as use, which keeps the entry from eviction; a BIRTH's own must not (a
        flood of fake BIRTHs marked themselves used, and a live device was evicted first)."""
        entry = self._nodes.get((group, edge), {}).get(device or "")
        if entry is not None and use:
            self._tick += 1
            self._used[(group, edge, device or "")] = self._tick
        return entry


class _Entry(NamedTuple):
    aliases: dict[int, tuple[str, int]]
    types: dict[str, int]


class Metric(NamedTuple):
    """One metric to encode; ``name`` or ``alias`` (or both), ``value`` None for a null."""

    name: str | None
    alias: int | None
    datatype: int
    value: Any
    timestamp_ms: int | None = None
    quality: int | None = None  # the Quality property: 192 GOOD, 0 BAD, 500 STALE


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


def _skipped(name: str) -> bool:
    return name == "bdSeq" or name.startswith(("Node Control/", "Device Control/"))


def decode_sparkplug(
    payload: bytes,
    arrival: float,
    limits: Limits,
    aliases: SparkplugAliases | None,
    topic: str,
) -> Decoded:
    """Decode one Sparkplug B message (see the module docstring); call it via ``decode``."""
    try:
        return _decode(payload, arrival, limits, aliases, topic)
    except _RejectError as exc:
        return Rejected(exc.reason, exc.detail)


def _decode(
    payload: bytes, arrival: float, limits: Limits, aliases: SparkplugAliases | None, topic: str
) -> Decoded:
    where = parse_topic(topic)
    if where is None:
        return Rejected("bad_sparkplug", "topic is not spBv1.0/{group}/{type}/{edge}[/{device}]")
    kind = where.message_type
    if kind.endswith("DEATH"):
        if aliases is not None:
            aliases.clear(where.group, where.edge, where.device)
            seq = None
            if kind == "DDEATH":  # it counts in the node's sequence
                with contextlib.suppress(_Malformed, _RejectError, ValueError):
                    seq = _payload(payload, ("max_batch_values", 0))[2]
            aliases.sequence(where.group, where.edge, kind, seq)
        return []
    if kind in ("NCMD", "DCMD", "STATE"):
        return []
    if not payload:
        return Rejected("empty", f"empty {kind} payload")
    # Decoding here is pure Python, about 6 us a metric on the network thread: a 1 MB DDATA of
    # small metrics cost 0.28 s. No BIRTH may register more than max_metrics (10,000), so no
    # DATA can name more that are known: stop there (about 60 ms), whatever the payload cap.
    bound = ("max_batch_values", limits.max_batch_values)
    if aliases is not None and aliases.max_metrics < bound[1]:
        bound = ("max_metrics", aliases.max_metrics)
    try:
        timestamp, metrics, seq = _payload(payload, bound)
    except (_Malformed, ValueError) as exc:
        return Rejected("bad_sparkplug", f"{kind}: {exc}")
    if aliases is not None:
        aliases.sequence(where.group, where.edge, kind, seq)
    if kind.endswith("BIRTH"):
        born = [(m.name, m.alias, m.datatype or 0) for m in metrics if m.name is not None]
        if len(born) < len(metrics):
            return Rejected("bad_sparkplug", f"{kind} metric without a name")
        if aliases is not None:
            if kind == "NBIRTH":
                aliases.clear(where.group, where.edge)
            try:
                aliases.register(where.group, where.edge, where.device, born)
            except ValueError as exc:
                return Rejected("bad_sparkplug", str(exc))
    elif not metrics:
        return Rejected("empty", f"{kind} without metrics")
    entry = (aliases.lookup(where.group, where.edge, where.device,
                            use=not kind.endswith("BIRTH"))
             if aliases is not None else None)
    default_s = timestamp / 1000.0 if timestamp else arrival
    series: dict[str, tuple[list[float], list[float]]] = {}
    bad: list[Reading] = []
    for name, alias, ts, datatype, is_null, value_kind, raw, quality in metrics:
        if name is None:
            if alias is None:
                return Rejected("bad_sparkplug", f"{kind} metric with neither name nor alias")
            known = entry.aliases.get(alias) if entry is not None else None
            if known is None:
                if aliases is not None:  # the node is asked to be born again
                    aliases.wanted[(where.group, where.edge)] = None
                return Rejected("unknown_alias", f"alias {alias} not born on {topic}")
            name, born_type = known
            datatype = datatype or born_type
        elif not datatype and entry is not None:
            datatype = entry.types.get(name)
        if is_null or value_kind is None or _skipped(name):
            continue
        number = _value(name, datatype, value_kind, raw)
        if number is None:
            continue
        if quality is not None and quality != GOOD_QUALITY:
            word = {0: "BAD", 500: "STALE"}.get(quality, "not GOOD")
            bad.append(Reading(name, Rejected("bad_quality",
                                              f"metric {name!r} Quality {quality} ({word})")))
            continue
        times, values = series.setdefault(name, ([], []))
        times.append(ts / 1000.0 if ts else default_s)
        values.append(number)
    return [
        Reading(name, Samples(np.array(times, dtype=np.float64), np.array(values)))
        for name, (times, values) in series.items()
    ] + bad


# --- wire-format writer (simulator, tests) ---------------------------------------------------


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
