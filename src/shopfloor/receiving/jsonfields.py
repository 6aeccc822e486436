"""JSON as gateways publish it: objects of several fields, values at a path, quality flags.

Zigbee2MQTT, Tasmota, Telegraf's JSON serializer and Node-RED publish one object with several
measurements (``{"temperature": 21.3, "humidity": 40, "battery": 97}``), often nested
(``{"ENERGY": {"Power": 12}}``); OPC UA gateways (Kepware, Ignition) add a quality flag. A
subscription says how to read them (:class:`JsonLayout`):

``value = "ENERGY.Power"``
    The signal's value is at this dotted path; the object's time keys (``ts``, ``timestamp``,
    ``time``, at the top level) give its time.
``fields = true`` (or a list of names)
    Every numeric top-level field (or each one named) is a signal named by its key; the time
    keys are the time, not signals; other values (text, objects, booleans) are skipped.
``quality = "q"``
    A flag at this path says whether the sample may be trusted (see
    :func:`shopfloor.receiving.codecs.good_quality`); a bad one makes the message ``bad_quality``:
    counted, never learned.

The default JSON forms (:mod:`shopfloor.receiving.codecs`) read a ``quality`` or ``q`` key the same
way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shopfloor.receiving.codecs import (
    TIME_KEYS,
    Decoded,
    Limits,
    Reading,
    Rejected,
    Samples,
    _RejectError,
    decode_json_document,
    good_quality,
    number,
    time_of,
)

__all__ = ["JsonLayout", "decode_layout"]


@dataclass(frozen=True, slots=True)
class JsonLayout:
    """How one subscription reads a JSON object (see the module docstring)."""

    value: tuple[str, ...] = ()  # path to the value; empty: not this form
    fields: bool | tuple[str, ...] = False  # True: every numeric field; names: those
    quality: tuple[str, ...] = ()  # path to a quality flag; empty: none

    @property
    def active(self) -> bool:
        return bool(self.value or self.fields)


def decode_layout(payload: bytes, arrival: float, limits: Limits, layout: JsonLayout
                  ) -> Decoded:
    """Readings of one gateway object; never raises."""
    if len(payload) > limits.max_payload_bytes:  # before any parsing, as decode() does
        return Rejected("too_large", f"{len(payload)} bytes > max_payload_bytes="
                        f"{limits.max_payload_bytes}")
    try:
        doc = decode_json_document(payload, limits)
        if type(doc) is not dict:
            raise _RejectError("wrong_type", f"expected a JSON object, got {type(doc).__name__}")
        if layout.quality:
            flag = _at(doc, layout.quality)
            if not good_quality(flag):
                raise _RejectError("bad_quality", f"quality {str(flag)[:40]!r}")
        ts = time_of(doc, arrival)
        if layout.value:
            value = number(_at(doc, layout.value), ".".join(layout.value))
            return [Reading(None, _one(ts, value))]
        wanted = layout.fields if isinstance(layout.fields, tuple) else None
        readings = []
        for key, raw in doc.items():
            if key in TIME_KEYS or (wanted is not None and key not in wanted):
                continue
            if type(raw) in (int, float):
                readings.append(Reading(key, _one(ts, number(raw, key))))
        if wanted is not None and not readings:
            raise _RejectError("wrong_type", f"none of the fields {', '.join(wanted)}")
        if len(readings) > limits.max_batch_values:
            raise _RejectError("too_large", f"more than max_batch_values="
                               f"{limits.max_batch_values} fields")
        return readings
    except _RejectError as exc:
        return Rejected(exc.reason, exc.detail)


def _at(doc: dict[str, Any], path: tuple[str, ...]) -> object:
    node: object = doc
    for part in path:
        if type(node) is not dict or part not in node:
            raise _RejectError("wrong_type", f"no {'.'.join(path)!r} in the object")
        node = node[part]
    return node


def _one(ts: float, value: float) -> Samples:
    return Samples(np.array([ts]), np.array([value]))
