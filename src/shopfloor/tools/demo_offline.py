"""``shopfloor demo --offline``: the detection path on a synthetic pump CSV, no broker needed.

It writes the seeded example, replays it through the same pipeline the agent runs, draws the
plot and prints, per injected fault, whether an alarm was raised and how many seconds after the
fault began, and how many alarms were raised on healthy data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from shopfloor.errors import UserError
from shopfloor.tools.replay import ReplayOptions, replay
from shopfloor.tools.synthetic import FAULTS, write_pump_example

__all__ = ["detection_report", "run_offline_demo"]


def run_offline_demo(out_dir: Path) -> int:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create: {exc.strerror or exc}", file=str(out_dir)) from None
    data = write_pump_example(out_dir / "pump.csv")
    scores = out_dir / "scores.csv"
    plot_rows: list[object] = []
    options = ReplayOptions(exclude=("anomaly",), asset="pump")
    with scores.open("w", encoding="utf-8", newline="") as fh:
        summary = replay(data, fh, None, options, plot_rows)
    png = out_dir / "replay.png"
    try:
        from shopfloor.tools.plot import plot_replay

        plot_replay(png, plot_rows, title="synthetic pump")
    except UserError as exc:  # matplotlib missing: the demo still shows the detection report
        print(f"(no plot: {exc})")
        png = None  # type: ignore[assignment]
    print(detection_report(scores, data))
    print(f"\n{summary.rows} rows replayed. Files: {data}, {scores}" + (f", {png}" if png else ""))
    return 0


def detection_report(scores: Path, data: Path) -> str:
    """Per fault: detected or not and the delay; plus alarm rows outside any fault."""
    with scores.open(encoding="utf-8") as fh:
        anomaly = np.array([int(r["anomaly"]) for r in csv.DictReader(fh)], dtype=bool)
    with data.open(encoding="utf-8") as fh:
        labels = np.array([int(r["anomaly"]) for r in csv.DictReader(fh)], dtype=bool)
    lines = [f"{'fault':34} {'rows':>11}  detected  delay"]
    for f in FAULTS:
        # An alarm may legitimately persist a little after a fault ends; look in the window only.
        hits = np.flatnonzero(anomaly[f.start : f.end])
        delay = f"{hits[0]:>4d} s" if hits.size else "    -"
        lines.append(
            f"{f.name:34} {f.start:>5}-{f.end:<5}  {'yes' if hits.size else 'no ':>8}  {delay}"
        )
    rises = np.flatnonzero(np.diff(anomaly.astype(np.int8), prepend=0) == 1)
    false_alarms = int(np.sum(~labels[rises]))
    lines.append(
        f"alarms raised outside faults: {false_alarms} "
        f"({int(np.sum(anomaly & ~labels))} of {int(np.sum(~labels))} healthy rows)"
    )
    return "\n".join(lines)
