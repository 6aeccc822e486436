"""The binary vibration frame codec (``"frame"``): a little-endian frame in, one frame out.

What :func:`shopfloor.receiving.codecs.decode` calls for the codec ``"frame"`` (``_decode_frame``),
and the header layout (:data:`FRAME_HEADER`) that :func:`shopfloor.receiving.codecs.encode_frame`
writes. The layout and its rules are described in :mod:`shopfloor.receiving.codecs`, which
re-exports :data:`FRAME_HEADER`; kept apart from the JSON and Sparkplug codecs so that each format
is one module.
"""

from __future__ import annotations

import struct
from math import isfinite
from typing import Any

import numpy as np

from shopfloor.receiving.readings import (
    _MS_THRESHOLD,
    Decoded,
    Frame,
    Limits,
    Reading,
    _RejectError,
)

__all__ = ["FRAME_HEADER"]

#: The frame header: magic, version, sample type, reserved, rate, timestamp, scale, count.
FRAME_HEADER = struct.Struct("<4sBBHfdfI")
_MAGIC = b"SFVF"
_SAMPLE_TYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<f4"), 2: np.dtype("<i2")}


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
