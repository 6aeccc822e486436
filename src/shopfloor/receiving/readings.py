"""What decoding a message yields: readings of samples or frames, or a counted rejection.

The value types every codec returns (:class:`Samples`, :class:`Frame`, :class:`Reading`,
:class:`Rejected`, :data:`Decoded`), the bounds one message may cost (:class:`Limits`), the
bounded set of reasons a message is rejected for (:data:`REJECT_REASONS`) and the exception the
codecs raise internally (:class:`_RejectError`).

They live here, apart from the codecs, because both :mod:`shopfloor.receiving.codecs` (JSON, frames
and the dispatch by codec name) and :mod:`shopfloor.receiving.sparkplug` build on them: with the
types in ``codecs``, ``sparkplug`` had to import ``codecs`` while ``codecs`` dispatched to
``sparkplug``, an import cycle. Import them from :mod:`shopfloor.receiving.codecs` as before, or
from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "REJECT_REASONS",
    "Decoded",
    "Frame",
    "Limits",
    "Reading",
    "Rejected",
    "Samples",
]

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

_MS_THRESHOLD = 1e11  # epoch seconds reach 1e11 in the year 5138; anything above is ms


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
    """Raised inside the codecs and turned into :class:`Rejected` by
    :func:`shopfloor.receiving.codecs.decode`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
