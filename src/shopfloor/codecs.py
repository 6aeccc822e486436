"""Payload codecs: untrusted MQTT bytes in, samples or a counted rejection out.

:func:`decode` is what the MQTT network thread calls for every message. It never raises:
anything it cannot use comes back as :class:`Rejected` with a reason from
:data:`REJECT_REASONS` (a bounded set, so it can label a metric) and a detail for a
rate-limited log line. Limits (:class:`Limits`) are checked before any parsing.

JSON (codec ``"json"``, UTF-8)
------------------------------
``{"ts": T, "value": v}``
    One sample; without ``ts`` it is stamped with the arrival time.
``v``
    A bare number, stamped with the arrival time.
``{"ts": T, "values": [v0, v1, ...], "rate": Hz}``
    Samples at ``T + i / rate``; ``rate`` is required, ``ts`` defaults to the arrival time.
``[{"ts": T0, "value": v0}, {"ts": T1, "value": v1}, ...]``
    A list of records, kept in the order given.

The time may also go by ``timestamp`` or ``time`` (gateways' names; two of them in one object
are ``wrong_type``). ``T`` is epoch seconds (above 1e11 read as milliseconds, 1e14
microseconds, 1e17 nanoseconds) or an ISO 8601 string (without a zone it is UTC); times before
1970 are ``wrong_type``. Values
are JSON numbers: ``true``/``false``, strings and ``null`` are ``wrong_type``; ``NaN``,
``Infinity`` and numbers that overflow a float64 are ``non_finite``. Other keys (a unit, a
quality flag under another key) are ignored; an object with both ``value`` and ``values`` is
``wrong_type``. A quality flag under ``quality`` or ``q`` (OPC UA gateways) that is not good
(see :func:`good_quality`) makes the message ``bad_quality``: counted, never learned.

Binary vibration frame (codec ``"frame"``, little-endian)
---------------------------------------------------------
====== ==== ======= ==========================================================
offset size type    field
====== ==== ======= ==========================================================
0      4    bytes   magic ``b"SFVF"``
4      1    uint8   version, 1
5      1    uint8   sample type: 1 = float32, 2 = int16
6      2    uint16  reserved, 0
8      4    float32 sample rate, Hz (finite, > 0)
12     8    float64 first sample's time, epoch seconds (0 = arrival; <= 1e11)
20     4    float32 scale: physical value = raw sample × scale (finite, != 0)
24     4    uint32  sample count N (>= 2)
28     N×s          samples (s = 4 for float32, 2 for int16)
====== ==== ======= ==========================================================

The payload must be exactly ``28 + N×s`` bytes: shorter is ``truncated``, longer is
``bad_header``. A NaN or infinite float32 sample is a sensor dropout: it reaches the frame as
NaN and the feature stage counts it; a non-finite rate, timestamp or scale is ``bad_header``.

Sparkplug B (codec ``"sparkplug"``) is in :mod:`shopfloor.sparkplug`.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from math import isfinite
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from shopfloor.sparkplug import SparkplugAliases

__all__ = [
    "CODECS",
    "FRAME_HEADER",
    "QUALITY_KEYS",
    "REJECT_REASONS",
    "TIME_KEYS",
    "Decoded",
    "Frame",
    "Limits",
    "Reading",
    "Rejected",
    "Samples",
    "decode",
    "decode_json_document",
    "encode_frame",
    "encode_json_batch",
    "encode_json_scalar",
    "good_quality",
    "number",
    "time_of",
]

CODECS = ("json", "frame", "sparkplug")
REJECT_REASONS = (
    "too_large",
    "not_utf8",
    "bad_json",
    "too_deep",
    "non_finite",
    "wrong_type",
    "truncated",
    "bad_header",
    "bad_sparkplug",
    "unknown_alias",
    "empty",
    "bad_quality",
)

#: Keys of a quality flag in the default JSON forms (OPC UA gateways: Kepware's "q").
QUALITY_KEYS = ("quality", "q")

#: The frame header: magic, version, sample type, reserved, rate, timestamp, scale, count.
FRAME_HEADER = struct.Struct("<4sBBHfdfI")
_MAGIC = b"SFVF"
_SAMPLE_TYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("<i2")}
_MS_THRESHOLD = 1e11  # epoch seconds reach 1e11 in the year 5138; anything above is ms
#: The slowest batch rate taken: one sample a day (a batch is samples of one burst).
MIN_BATCH_RATE = 1.0 / 86400.0


@dataclass(frozen=True, slots=True)
class Samples:
    """Scalar samples of one signal: epoch seconds (UTC) and finite values, both (n,)."""

    timestamps: NDArray[np.float64]
    values: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Frame:
    """One vibration frame: first-sample time, sample rate (Hz), samples in physical units.

    ``samples`` (L,) may hold NaN where the sensor dropped out.
    """

    timestamp: float
    sample_rate: float
    samples: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Reading:
    """What one message says about one signal; ``metric`` names it (Sparkplug) or is None.

    ``data`` is :class:`Rejected` for one signal's samples that a message marks unusable while
    its other signals are fine (a Sparkplug metric of bad quality): counted, never learned.
    """

    metric: str | None
    data: Samples | Frame | Rejected


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that cannot be used: ``reason`` from :data:`REJECT_REASONS`, human ``detail``."""

    reason: str
    detail: str


#: An empty list is a valid message without samples (a Sparkplug DEATH, for instance).
Decoded: TypeAlias = list[Reading] | Rejected


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one message may cost to decode.

    Parameters
    ----------
    max_payload_bytes
        Larger payloads are ``too_large`` before anything is parsed.
    max_json_depth
        Deeper JSON nesting is ``too_deep``; the batch forms need 2.
    max_batch_values
        More values (or frame samples, or Sparkplug metrics) in one message are ``too_large``.
    """

    max_payload_bytes: int = 1_048_576
    max_json_depth: int = 8
    max_batch_values: int = 100_000

    def __post_init__(self) -> None:
        for name, low in (("max_payload_bytes", 1), ("max_json_depth", 2), ("max_batch_values", 2)):
            value = getattr(self, name)
            if type(value) is not int or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class _RejectError(Exception):
    """Raised inside the codecs and turned into :class:`Rejected` by :func:`decode`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


_FALLBACK_REASON = {"json": "bad_json", "frame": "bad_header", "sparkplug": "bad_sparkplug"}


def decode(
    codec: str,
    payload: bytes,
    arrival: float,
    limits: Limits,
    context: SparkplugAliases | None = None,
    topic: str = "",
) -> Decoded:
    """Decode one message's payload; never raises.

    Parameters
    ----------
    codec
        One of :data:`CODECS`.
    payload
        The message bytes, untrusted.
    arrival
        Epoch seconds at which the message arrived: the time of samples that carry none.
    limits
        Size, depth and count bounds.
    context
        Sparkplug only: the alias table, updated by BIRTH and DEATH messages. Without one,
        metrics are resolved by name only.
    topic
        Sparkplug only: the MQTT topic, which names group, message type, edge node and device.

    Returns
    -------
    list[Reading] | Rejected
        The readings (possibly none), or why the message was rejected.

    Examples
    --------
    >>> limits = Limits()
    >>> [reading] = decode("json", b'{"ts": 1767225600, "value": 21.5}', 1767225601.0, limits)
    >>> reading.data.timestamps, reading.data.values
    (array([1.7672256e+09]), array([21.5]))
    >>> decode("json", b'{"value": NaN}', 1767225601.0, limits)
    Rejected(reason='non_finite', detail='JSON constant NaN is not a finite number')
    >>> frame = encode_frame(1767225600.0, 25600.0, [0.5, -1.0, 0.25, 0.0])
    >>> decode("frame", frame[:-2], 1767225601.0, limits).reason
    'truncated'
    """
    try:
        if len(payload) > limits.max_payload_bytes:
            return Rejected(
                "too_large", f"{len(payload)} bytes > max_payload_bytes={limits.max_payload_bytes}"
            )
        if codec == "json":
            return _decode_json(payload, arrival, limits)
        if codec == "frame":
            return _decode_frame(payload, arrival, limits)
        if codec == "sparkplug":
            # Imported here: sparkplug builds on this module's types.
            from shopfloor.sparkplug import decode_sparkplug

            return decode_sparkplug(payload, arrival, limits, context, topic)
        return Rejected("wrong_type", f"unknown codec {codec!r}; use one of {CODECS}")
    except _RejectError as exc:
        return Rejected(exc.reason, exc.detail)
    except Exception as exc:  # the network thread must survive any payload
        reason = _FALLBACK_REASON.get(codec, "wrong_type")
        return Rejected(reason, f"unexpected {type(exc).__name__} while decoding")


# --- JSON ------------------------------------------------------------------------------------


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


# --- binary frames ---------------------------------------------------------------------------


def _decode_frame(payload: bytes, arrival: float, limits: Limits) -> Decoded:
    if not payload:
        raise _RejectError("empty", "empty payload")
    if len(payload) < FRAME_HEADER.size:
        raise _RejectError("truncated", f"{len(payload)} bytes, the header alone is 28")
    magic, version, kind, reserved, rate, ts, scale, count = FRAME_HEADER.unpack_from(payload)
    if magic != _MAGIC or version != 1 or reserved != 0:
        raise _RejectError(
            "bad_header", f"magic {magic!r}, version {version}, reserved {reserved}: "
            "expected b'SFVF', 1, 0"
        )
    dtype = _SAMPLE_TYPES.get(kind)
    if dtype is None:
        raise _RejectError("bad_header", f"sample type {kind}: expected 1 (float32) or 2 (int16)")
    if not (isfinite(rate) and rate > 0.0 and isfinite(ts) and 0.0 <= ts <= _MS_THRESHOLD):
        raise _RejectError(
            "bad_header", f"sample rate {rate!r} or timestamp {ts!r} (epoch seconds) invalid"
        )
    if not isfinite(scale) or scale == 0.0:
        raise _RejectError("bad_header", f"scale {scale!r} must be finite and non-zero")
    if count < 2:
        raise _RejectError("bad_header", f"sample count {count} < 2")
    if count > limits.max_batch_values:
        raise _RejectError(
            "too_large", f"{count} samples > max_batch_values={limits.max_batch_values}"
        )
    expected = FRAME_HEADER.size + count * dtype.itemsize
    if len(payload) != expected:
        reason = "truncated" if len(payload) < expected else "bad_header"
        raise _RejectError(reason, f"{len(payload)} bytes, header says {expected}")
    samples = np.frombuffer(payload, dtype, count, FRAME_HEADER.size).astype(np.float64)
    if kind == 1:
        samples[np.isinf(samples)] = np.nan  # a dropout, like NaN: the frame contract says NaN
    if scale != 1.0:
        samples *= scale
    return [Reading(None, Frame(ts if ts > 0.0 else arrival, rate, samples))]


# --- encoders (simulator, tests) -------------------------------------------------------------


def _finite(value: float, name: str) -> float:
    value = float(value)
    if not isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def encode_json_scalar(ts: float, value: float) -> bytes:
    """``{"ts": ts, "value": value}`` as compact UTF-8 JSON; both must be finite."""
    # repr of a finite float is valid JSON and much cheaper than json.dumps.
    return f'{{"ts":{_finite(ts, "ts")!r},"value":{_finite(value, "value")!r}}}'.encode()


def encode_json_batch(ts: float, values: ArrayLike, rate: float) -> bytes:
    """``{"ts": ts, "rate": rate, "values": [...]}``: sample i was taken at ts + i / rate."""
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError("values must be finite: JSON has no NaN (send frames for dropouts)")
    if _finite(rate, "rate") <= 0.0:
        raise ValueError(f"rate must be > 0, got {rate!r}")
    body = ",".join(map(repr, array.tolist()))
    return f'{{"ts":{_finite(ts, "ts")!r},"rate":{float(rate)!r},"values":[{body}]}}'.encode()


def encode_frame(
    ts: float,
    sample_rate: float,
    samples: ArrayLike,
    sample_type: Literal["int16", "float32"] = "int16",
    scale: float | None = None,
) -> bytes:
    """A binary vibration frame (see the module docstring for the header).

    Parameters
    ----------
    ts
        Epoch seconds of the first sample; 0 lets the receiver stamp it on arrival.
    sample_rate
        Hz, > 0.
    samples
        (L,) physical values, L >= 2. Only float32 frames can carry NaN dropouts.
    sample_type
        ``"int16"`` (half the bytes; quantisation error at most scale / 2) or ``"float32"``.
    scale
        Physical value per raw unit. By default int16 frames use the data's peak / 32767, so
        the full range is used, and float32 frames use 1.
    """
    array = np.asarray(samples, dtype=np.float64).ravel()
    if array.size < 2:
        raise ValueError(f"a frame needs at least 2 samples, got {array.size}")
    if _finite(sample_rate, "sample_rate") <= 0.0 or _finite(ts, "ts") < 0.0:
        raise ValueError("sample_rate must be > 0 and ts >= 0 (0 = stamp on arrival)")
    if sample_type not in ("int16", "float32"):
        raise ValueError(f"sample_type must be 'int16' or 'float32', got {sample_type!r}")
    if sample_type == "int16" and not np.isfinite(array).all():
        raise ValueError("int16 frames cannot carry NaN or inf; use sample_type='float32'")
    if scale is None:
        peak = float(np.abs(array).max()) if sample_type == "int16" else 0.0
        scale = peak / 32767.0 if peak > 0.0 else 1.0
    step = float(np.float32(_finite(scale, "scale")))  # the scale the receiver will read
    if step == 0.0 or not isfinite(step):
        raise ValueError(f"scale must be finite and non-zero as a float32, got {scale!r}")
    if sample_type == "float32":
        kind, raw = 1, (array / step if step != 1.0 else array).astype("<f4")
    else:
        scaled = np.rint(array / step)
        if np.abs(scaled).max() > 32767.0:
            raise ValueError(f"samples exceed ±32767 x scale={step!r}; pass a larger scale")
        kind, raw = 2, scaled.astype("<i2")
    header = FRAME_HEADER.pack(_MAGIC, 1, kind, 0, sample_rate, ts, step, array.size)
    return header + raw.tobytes()
