"""The JSON codec (``"json"``): a message's UTF-8 JSON in, readings of scalar samples out.

What :func:`shopfloor.receiving.codecs.decode` calls for the codec ``"json"`` (``_decode_json``),
with the pieces that gateway field mappings (:mod:`shopfloor.receiving.jsonfields`) reuse: the
size-, encoding- and depth-checked parse (:func:`decode_json_document`), numbers (:func:`number`),
times (:func:`time_of`, :data:`TIME_KEYS`) and quality flags (:func:`good_quality`,
:data:`QUALITY_KEYS`). The accepted forms are described in :mod:`shopfloor.receiving.codecs`, which
re-exports the public names; kept apart from the binary frame codec and the Sparkplug codec so that
each format is one module.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from math import isfinite
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.receiving.readings import (
    _MS_THRESHOLD,
    Decoded,
    Limits,
    Reading,
    Samples,
    _RejectError,
)

__all__ = [
    "MIN_BATCH_RATE",
    "QUALITY_KEYS",
    "TIME_KEYS",
    "decode_json_document",
    "good_quality",
    "number",
    "time_of",
]

#: Keys of a quality flag in the default JSON forms (OPC UA gateways: Kepware's "q").
QUALITY_KEYS = ("quality", "q")

#: The slowest batch rate taken: one sample a day (a batch is samples of one burst).
MIN_BATCH_RATE = 1.0 / 86400.0


def _reject_constant(token: str) -> Any:
    raise _RejectError("non_finite", f"JSON constant {token} is not a finite number")


# One decoder for all messages: json.loads with a hook would build a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)
# A JSON string, or an unterminated one up to the end: matching always succeeds once started,
# so stripping strings is linear even for hostile input (no retry from every quote).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)


def _nesting_depth(payload: bytes) -> int:
    """Deepest bracket nesting outside strings, without recursion (``[`` × 1 MB is fine)."""
    code = np.frombuffer(_JSON_STRING.sub(b"", payload), dtype=np.uint8)
    step = ((code == 0x5B) | (code == 0x7B)).astype(np.int32)
    step -= (code == 0x5D) | (code == 0x7D)
    return int(np.cumsum(step).max(initial=0))


def _decode_json(payload: bytes, arrival: float, limits: Limits) -> Decoded:
    doc = decode_json_document(payload, limits)
    if type(doc) is dict:
        for key in QUALITY_KEYS:  # as OPC UA gateways send it: a bad sample is never learned
            if key in doc and not good_quality(doc[key]):
                raise _RejectError("bad_quality", f"{key} {str(doc[key])[:40]!r}")
        if "value" in doc:
            if "values" in doc:
                raise _RejectError("wrong_type", 'both "value" and "values" given')
            ts = time_of(doc, arrival)
            value = number(doc["value"], "value")
            return [Reading(None, Samples(np.array([ts]), np.array([value])))]
        if "values" in doc:
            return [Reading(None, _batch(doc, arrival, limits))]
        raise _RejectError("wrong_type", 'object has neither "value" nor "values"')
    if type(doc) is list:
        return [Reading(None, _records(doc, arrival, limits))]
    value = number(doc, "payload")
    return [Reading(None, Samples(np.array([arrival]), np.array([value])))]


def good_quality(flag: object) -> bool:
    """Whether a quality flag says the sample may be trusted: ``true``, a string starting with
    "good" (any case), or an OPC UA status code whose severity bits (the top two of 32) are 00
    - so 0 (Good) and OPC DA's 192 (0xC0). Anything else is bad (or uncertain)."""
    if flag is True:
        return True
    if type(flag) is int:
        return 0 <= flag < 1 << 32 and flag >> 30 == 0
    if type(flag) is str:
        return flag.strip().lower().startswith("good")
    return False


def decode_json_document(payload: bytes, limits: Limits) -> Any:
    """The parsed JSON of a payload, its size, encoding and depth checked (raises
    :class:`_RejectError`)."""
    if not payload or payload.isspace():
        raise _RejectError("empty", "empty payload")
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        raise _RejectError("not_utf8", f"invalid UTF-8 at byte {exc.start}") from None
    # Nesting cannot exceed the number of brackets, so a scalar message never pays for the scan.
    if payload.count(b"[") + payload.count(b"{") > limits.max_json_depth:
        depth = _nesting_depth(payload)
        if depth > limits.max_json_depth:
            raise _RejectError(
                "too_deep", f"nesting depth {depth} > max_json_depth={limits.max_json_depth}"
            )
    try:
        return _JSON.decode(text)
    except ValueError as exc:  # JSONDecodeError, or an integer literal too long to convert
        raise _RejectError("bad_json", str(exc)[:120]) from None


def number(value: object, what: str) -> float:
    """A finite float from a JSON number; booleans are not numbers."""
    if type(value) is float:
        if not isfinite(value):  # 1e400 parses to inf
            raise _RejectError("non_finite", f"{what} overflows a float64")
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise _RejectError("non_finite", f"{what} overflows a float64") from None
    raise _RejectError("wrong_type", f"{what} is {type(value).__name__}, expected a number")


#: Keys a sample's time goes by, as gateways name it (Node-RED and Telegraf say "timestamp" or
#: "time"): ``{"timestamp": T, "value": v}`` was silently stamped on arrival.
TIME_KEYS = ("ts", "timestamp", "time")


def time_of(doc: dict[str, Any], arrival: float) -> float:
    """The time a JSON object gives under one of :data:`TIME_KEYS`, else ``arrival``."""
    found = [k for k in TIME_KEYS if k in doc]
    if len(found) > 1:
        raise _RejectError("wrong_type", f"times under both {found[0]!r} and {found[1]!r}")
    return _timestamp(doc[found[0]]) if found else arrival


def _timestamp(ts: object) -> float:
    """Epoch seconds from seconds, milliseconds (> 1e11), microseconds (> 1e14), nanoseconds
    (> 1e17) or an ISO 8601 string."""
    if type(ts) is str:
        if len(ts) > 64:
            raise _RejectError("wrong_type", "ts string longer than 64 characters")
        try:
            when = datetime.fromisoformat(ts)
        except ValueError:
            raise _RejectError("wrong_type", f"ts {ts!r} is not ISO 8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    else:
        seconds = number(ts, "ts")
        # The unit from the magnitude: seconds stay below 1e11 until the year 5138, and
        # milliseconds, microseconds and nanoseconds of any time since 1973 are above 1e11,
        # 1e14 and 1e17 (gateways send all four; microseconds were read as milliseconds).
        if seconds > 1e17:
            seconds /= 1e9
        elif seconds > 1e14:
            seconds /= 1e6
        elif seconds > _MS_THRESHOLD:
            seconds /= 1000.0
    if seconds < 0.0:
        raise _RejectError("wrong_type", f"ts {ts!r} is before 1970")
    return seconds


def _values_array(values: list[Any], limits: Limits) -> NDArray[np.float64]:
    if not values:
        raise _RejectError("empty", "no values")
    if len(values) > limits.max_batch_values:
        raise _RejectError(
            "too_large", f"{len(values)} values > max_batch_values={limits.max_batch_values}"
        )
    # np.array would turn True into 1.0 and "1.5" into 1.5: check the JSON types first.
    if not set(map(type, values)) <= {int, float}:
        raise _RejectError("wrong_type", "values must all be numbers")
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        raise _RejectError("non_finite", "a value overflows a float64") from None
    if not np.isfinite(array).all():
        raise _RejectError("non_finite", "a value overflows a float64")
    return array


def _batch(doc: dict[str, Any], arrival: float, limits: Limits) -> Samples:
    values = doc["values"]
    if type(values) is not list:
        raise _RejectError("wrong_type", '"values" must be a list of numbers')
    array = _values_array(values, limits)
    if "rate" not in doc:
        raise _RejectError("wrong_type", 'a "values" batch needs "rate" (Hz)')
    rate = number(doc["rate"], "rate")
    if not rate >= MIN_BATCH_RATE:
        # A rate of 5e-324 made the second sample's time infinite.
        raise _RejectError("wrong_type", f"rate {rate!r} must be >= {MIN_BATCH_RATE:g} Hz")
    start = time_of(doc, arrival)
    timestamps = start + np.arange(array.size, dtype=np.float64) / rate
    return Samples(timestamps, array)


def _records(doc: list[Any], arrival: float, limits: Limits) -> Samples:
    if not doc:
        raise _RejectError("empty", "empty list of records")
    if len(doc) > limits.max_batch_values:
        raise _RejectError(
            "too_large", f"{len(doc)} records > max_batch_values={limits.max_batch_values}"
        )
    timestamps = np.empty(len(doc))
    values = np.empty(len(doc))
    for i, record in enumerate(doc):
        if type(record) is not dict or "value" not in record:
            raise _RejectError("wrong_type", f'record {i} is not an object with "value"')
        timestamps[i] = time_of(record, arrival)
        values[i] = number(record["value"], f"record {i} value")
    return Samples(timestamps, values)
