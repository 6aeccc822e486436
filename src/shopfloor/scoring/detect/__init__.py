"""Detectors, thresholds and alarms.

Detectors turn validated feature rows into scores (higher = more anomalous); thresholds turn
scores into exceedances; alarms turn exceedances into raised and cleared alarms with hysteresis.
Each piece keeps its state in a form that checkpoints and restores exactly.
"""

from __future__ import annotations

from shopfloor.scoring.detect.alarm import Alarm, AlarmBatch, AlarmState
from shopfloor.scoring.detect.base import Detector, ScoreBatch, State
from shopfloor.scoring.detect.gate import Reject, SampleGate
from shopfloor.scoring.detect.threshold import FixedThreshold, QuantileThreshold, Threshold

__all__ = [
    "Alarm",
    "AlarmBatch",
    "AlarmState",
    "Detector",
    "FixedThreshold",
    "QuantileThreshold",
    "Reject",
    "SampleGate",
    "ScoreBatch",
    "State",
    "Threshold",
]
