"""Detectors, thresholds and alarms.

Detectors turn validated feature rows into scores (higher = more anomalous); thresholds turn
scores into exceedances; alarms turn exceedances into raised and cleared alarms with hysteresis.
Each piece keeps its state in a form that checkpoints and restores exactly.
"""

from __future__ import annotations

from shopfloor.detect.base import Detector, ScoreBatch, State

__all__ = ["Detector", "ScoreBatch", "State"]
