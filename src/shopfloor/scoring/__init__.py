"""Scoring: what a sample goes through once queued.

Signal banks (``bank``) and per-signal pipelines (``pipeline``), frame features
(``features``, ``diagnosis``), the monitor that turns scores into alarms (``monitor``),
the detectors, thresholds and alarms (``detect``) and the Numba kernels under them all
(``kernels``).
"""
