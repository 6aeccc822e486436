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

Sparkplug B (codec ``"sparkplug"``) is in :mod:`shopfloor.receiving.sparkplug`.

The parts: this module holds the dispatch by codec name (:func:`decode`) and the encoders the
simulator and the tests use; the JSON decoder is :mod:`shopfloor.receiving.json_codec`, the frame
decoder :mod:`shopfloor.receiving.frame_codec`, and the value types, limits and reject reasons,
which Sparkplug shares, :mod:`shopfloor.receiving.readings`. None of them imports this module, so it
can import :mod:`shopfloor.receiving.sparkplug` at its top. Everything is re-exported here, as
before the split.
"""

from __future__ import annotations

from math import isfinite
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

# The value types, the JSON and frame codecs and Sparkplug live in modules of their own (none of
# which imports this one); the names other code imports from here are re-exported.
from shopfloor.receiving.frame_codec import _MAGIC, FRAME_HEADER, _decode_frame
from shopfloor.receiving.json_codec import (
    QUALITY_KEYS,
    TIME_KEYS,
    _decode_json,
    decode_json_document,
    good_quality,
    number,
    time_of,
)
from shopfloor.receiving.readings import (
    REJECT_REASONS,
    Decoded,
    Frame,
    Limits,
    Reading,
    Rejected,
    Samples,
)
from shopfloor.receiving.readings import _RejectError as _RejectError  # re-exported (jsonfields)
from shopfloor.receiving.sparkplug import SparkplugAliases, decode_sparkplug

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
            return decode_sparkplug(payload, arrival, limits, context, topic)
        return Rejected("wrong_type", f"unknown codec {codec!r}; use one of {CODECS}")
    except _RejectError as exc:
        return Rejected(exc.reason, exc.detail)
    except Exception as exc:  # the network thread must survive any payload
        reason = _FALLBACK_REASON.get(codec, "wrong_type")
        return Rejected(reason, f"unexpected {type(exc).__name__} while decoding")

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
