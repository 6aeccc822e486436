"""A seeded synthetic pump, with labelled faults, for the demo and for tests.

Five signals sampled once a second, physically coupled (flow follows pressure, motor current
follows flow) with slow process wander, and six faults of the kinds plants meet: a pressure step,
vibration spikes, a slow temperature drift, a vibration variance change, a stuck flow sensor and
a correlation break between flow and current (each value normal on its own). Nothing is
downloaded: the same seed always gives the same file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = ["FAULTS", "Fault", "bearing_frames", "pump_example", "write_pump_example"]

SIGNALS = ("pressure_bar", "flow_m3h", "current_a", "temperature_c", "vibration_rms_g")
START_EPOCH = 1_767_225_600  # 2026-01-01 00:00:00 UTC


@dataclass(frozen=True, slots=True)
class Fault:
    """A labelled fault: rows [start, end) of the example."""

    name: str
    signal: str
    start: int
    end: int


FAULTS = (
    Fault("pressure step", "pressure_bar", 2000, 2300),
    Fault("vibration spikes", "vibration_rms_g", 3000, 3012),
    Fault("temperature drift", "temperature_c", 4000, 5000),
    Fault("vibration variance change", "vibration_rms_g", 5500, 6000),
    Fault("stuck flow sensor", "flow_m3h", 6500, 6800),
    Fault("flow-current correlation break", "current_a", 7200, 7600),
)


def pump_example(
    seed: int = 7, rows: int = 8000
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8]]:
    """Return (epoch seconds (n,), values (n, 5) in ``SIGNALS`` order, labels (n,))."""
    if rows < 8000:
        raise ValueError("rows must be at least 8000 so that every fault fits")
    rng = np.random.default_rng(seed)
    t = np.arange(rows, dtype=np.float64)
    # Slow process wander (AR(1) with a ~10 min memory) drives the coupled hydraulic signals.
    wander = np.zeros(rows)
    e = rng.normal(0.0, 0.02, rows)
    for i in range(1, rows):
        wander[i] = 0.998 * wander[i - 1] + e[i]
    pressure = 5.0 + wander + rng.normal(0.0, 0.05, rows)
    flow = 12.0 + 2.0 * (pressure - 5.0) + rng.normal(0.0, 0.08, rows)
    current = 7.5 + 0.4 * (flow - 12.0) + rng.normal(0.0, 0.03, rows)
    temperature = 41.0 + 0.5 * np.sin(2 * np.pi * t / 3600.0) + rng.normal(0.0, 0.05, rows)
    vibration = 0.12 + rng.normal(0.0, 0.004, rows)
    labels = np.zeros(rows, dtype=np.int8)
    for f in FAULTS:
        labels[f.start : f.end] = 1
    s = slice(FAULTS[0].start, FAULTS[0].end)
    # A valve partly closed downstream: pressure rises while flow falls, against their usual
    # coupling; each stays within the range the process wander covers.
    pressure[s] += 0.35
    flow[s] -= 0.6
    current[s] -= 0.4 * 0.6
    spikes = rng.choice(np.arange(FAULTS[1].start, FAULTS[1].end), size=4, replace=False)
    vibration[spikes] += rng.uniform(0.04, 0.08, size=4)  # impacts
    d = FAULTS[2]
    temperature[d.start : d.end] += np.linspace(0.0, 4.0, d.end - d.start)  # failing cooling
    temperature[d.end :] += 4.0 * np.exp(-np.arange(rows - d.end) / 200.0)  # cools back down
    v = FAULTS[3]
    vibration[v.start : v.end] += rng.normal(0.0, 0.012, v.end - v.start)  # looseness
    k = FAULTS[4]
    flow[k.start : k.end] = flow[k.start]  # transmitter frozen at its last reading
    c = FAULTS[5]
    # Current decouples from flow (a slipping coupling): each value stays within its usual range.
    current[c.start : c.end] = (
        7.5 + rng.normal(0.0, 0.03, c.end - c.start) - 0.4 * (flow[c.start : c.end] - 12.0)
    )
    values = np.column_stack([pressure, flow, current, temperature, vibration])
    return START_EPOCH + t, values, labels


def write_pump_example(path: str | Path, seed: int = 7, rows: int = 8000) -> Path:
    """Write the example as CSV: ``time`` (ISO 8601, UTC), the signals, and an ``anomaly`` label."""
    from datetime import UTC, datetime

    times, values, labels = pump_example(seed, rows)
    out = Path(path)
    with out.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["time", *SIGNALS, "anomaly"])
        for ts, row, label in zip(times.tolist(), values.tolist(), labels.tolist(), strict=True):
            stamp = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
            w.writerow([stamp, *(format(x, ".6f") for x in row), label])
    return out


def bearing_frames(
    rng: np.random.Generator,
    start_frame: int,
    n_frames: int,
    *,
    frame_len: int = 2048,
    sample_rate: float = 12_000.0,
    shaft_hz: float = 29.95,
    defect_order: float = 3.5848,
    severity: float = 0.0,
    resonance_hz: float = 3_000.0,
) -> NDArray[np.float64]:
    """Acceleration frames (g) of a running bearing, shape (n_frames, frame_len).

    A healthy machine: shaft-rate harmonics plus broadband noise. A defect (``severity`` > 0,
    in g) adds an impact each time a rolling element passes it, at ``defect_order`` × shaft
    speed; each impact rings the housing's resonance and decays within a millisecond or two,
    which is what the envelope spectrum demodulates. Frames continue one time axis from
    ``start_frame``, so consecutive calls join without a phase jump.
    """
    n = n_frames * frame_len
    t = (start_frame * frame_len + np.arange(n)) / sample_rate
    x = 0.10 * np.sin(2 * np.pi * shaft_hz * t) + 0.03 * np.sin(2 * np.pi * 2 * shaft_hz * t + 0.4)
    x += rng.normal(0.0, 0.05, n)
    if severity > 0.0:
        period = 1.0 / (defect_order * shaft_hz)
        since = np.mod(t, period)  # time since the latest impact
        ring = np.exp(-since / 0.0008) * np.sin(2 * np.pi * resonance_hz * since)
        # Impact strength wanders from one rolling element to the next, as in real bearings.
        strength = 1.0 + 0.2 * rng.standard_normal(int(t[-1] / period) + 2)
        x += severity * strength[(t // period).astype(np.int64)] * ring
    return x.reshape(n_frames, frame_len)
