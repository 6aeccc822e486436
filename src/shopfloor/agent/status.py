"""What the agent knows of its signals and assets, and the alarm changes it reports.

The worker writes these; events, metrics, the fleet status, the live view and the scoring
processes' reports read them. Apart from the worker so that its bank path
(:mod:`shopfloor.agent.worker_banks`) and the scoring processes can use them without
importing the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from shopfloor.config import signal_id
from shopfloor.scoring.detect.alarm import AlarmState

__all__ = ["AlarmChange", "AssetStatus", "SignalCounts", "SignalStatus", "SignalTable"]


@dataclass(slots=True)
class SignalStatus:
    """What the agent knows of a signal now (for the live view, metrics and state topics)."""

    asset: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    messages: int = 0
    score: float = math.nan
    threshold: float = math.nan
    state: AlarmState = AlarmState.WARMING_UP
    alarms: int = 0
    last_time: float = math.nan  # timestamp of the latest sample
    last_arrival: float = math.nan
    # The latest accepted sample: its value (scalar signals) or its feature row (frames).
    value: float = math.nan
    features: dict[str, float] = field(default_factory=dict)
    likelihood: float = math.nan  # anomaly likelihood of the latest scored sample, in [0, 1]
    adopted: int = 0  # alarms that ended by adopting the shifted level as the new baseline
    onset: float = math.nan  # signal time the latest alarm started (its first exceedance)
    # Frame signals: the latest scored frame's suspected defect and ISO zone (1..4 = A..D).
    defect: str | None = None
    iso_zone: int = 0
    # Silence watch: the signal's own message interval (seconds, EWMA of arrival gaps), and
    # whether it has been silent for silence_intervals of them.
    interval: float = math.nan
    silent: bool = False

    @property
    def sid(self) -> str:
        return signal_id(self.asset, self.name, tuple(self.labels.items()))


@dataclass(frozen=True, slots=True)
class SignalCounts:
    """What metrics read of a signal's pipeline: its unit and kind, samples scored, samples
    refused by reason, and the samples its warm-up takes."""

    unit: str
    kind: str
    scored: int
    rejected: dict[str, int]
    warmup: int


class SignalTable(Protocol):
    """What the worker asks of the agent's signal table (:class:`~shopfloor.receiving.admission.
    Admission`, or a scoring process's :class:`~shopfloor.agent.scorer.Share` of it)."""

    def __contains__(self, sid: object) -> bool: ...
    def take_evicted(self) -> list[str]: ...
    def prove(self, sid: str) -> None: ...


@dataclass(slots=True)
class AssetStatus:
    """The asset-level detector's latest word."""

    asset: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # a discovered asset's topic labels
    score: float = math.nan
    state: AlarmState = AlarmState.WARMING_UP
    alarms: int = 0
    top: str | None = None  # the signal that contributed most to the latest alarm
    likelihood: float = math.nan
    adopted: int = 0
    onset: float = math.nan


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """An alarm raised, cleared or ended by adoption, with what an anomaly event needs."""

    kind: str  # "raised", "cleared" or "baseline_adopted"
    scope: str  # "signal" or "asset"
    asset: str
    signal: str | None  # None for an asset-level alarm
    labels: dict[str, str]
    ts: float
    score: float
    threshold: float
    value: float | None  # scalar signals
    features: dict[str, float] | None  # frame signals
    top: str | None  # feature (frame signals) or signal (assets) that contributed most
    rules: int  # Western Electric bitmask, 0 if none
    likelihood: float  # anomaly likelihood at this sample; NaN if unknown
    onset: float  # signal time the alarm started (first exceedance); NaN if unknown
    defect: str | None = None  # frame signals: the defect this frame points to
    iso_zone: str | None = None  # frame signals: ISO 20816-3 zone "A".."D" of its velocity
