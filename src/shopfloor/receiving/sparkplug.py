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

How messages become readings (the codec ``"sparkplug"`` of
:func:`shopfloor.receiving.codecs.decode`):

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
  unlike a JSON gateway's flag (:func:`shopfloor.receiving.codecs.good_quality`, where OPC UA's 0 is
  Good) there is nothing to configure.
- A sample's time is the metric's timestamp, else the payload's, else the arrival time.

The parts: this module holds the topics and the decoder of messages into readings;
:mod:`shopfloor.receiving.sparkplug_wire` the protobuf reader and data types,
:mod:`shopfloor.receiving.sparkplug_encode` the writer, :mod:`shopfloor.receiving.sparkplug_aliases`
the alias table, and :mod:`shopfloor.receiving.readings` the value types, shared with
:mod:`shopfloor.receiving.codecs` (which dispatches here and so is not imported by any of them).
Everything is re-exported here.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np

from shopfloor.receiving.readings import Decoded, Limits, Reading, Rejected, Samples, _RejectError
from shopfloor.receiving.sparkplug_aliases import SparkplugAliases
from shopfloor.receiving.sparkplug_encode import (
    Metric,
    encode_data,
    encode_dbirth,
    encode_ddeath,
    encode_nbirth,
    encode_ndeath,
    encode_payload,
)
from shopfloor.receiving.sparkplug_wire import GOOD_QUALITY, DataType, _Malformed, _payload, _value

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

# The alias table's examples decode through this module: they run with its doctests, as they
# did when the table was defined here.
__test__ = {"SparkplugAliases": SparkplugAliases}

MESSAGE_TYPES = ("NBIRTH", "NDEATH", "NDATA", "NCMD", "DBIRTH", "DDEATH", "DDATA", "DCMD")


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
