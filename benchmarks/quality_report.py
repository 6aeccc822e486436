"""``quality.md``: the SKAB and CWRU tables, next to SKAB's published results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.quality_cwru import FRAME_HOP, FRAME_LEN, SAMPLE_RATE, CwruResult
from benchmarks.quality_data import SkabFile
from benchmarks.quality_skab import TRAIN_ROWS, WINDOW_S, AlarmShare, SkabScore

__all__ = ["CHANGEPOINT", "OUTLIER", "ROWS", "SkabReport", "quality_markdown"]

#: SKAB's published outlier results (F1, FAR %, MAR %), as the data README quotes them.
OUTLIER: tuple[tuple[str, float, float, float], ...] = (
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.6),
    ("Isolation forest", 0.29, 2.56, 82.89),
)
#: SKAB's published changepoint results (NAB standard, low FP, low FN).
CHANGEPOINT: tuple[tuple[str, float, float, float], ...] = (
    ("MSCRED", 32.42, 16.53, 40.28),
    ("Isolation forest", 26.16, 19.5, 30.82),
    ("T-squared+Q (PCA)", 25.35, 14.51, 31.33),
    ("Conv-AE", 23.61, 21.54, 27.55),
)
#: Table rows of shopfloor: label -> (configuration, labelling) of :mod:`.quality_skab`.
#: (cusum, asset) is not listed: the asset detector is the default one, so it equals (b).
ROWS: dict[str, tuple[str, str]] = {
    "(a) defaults, warm-up = training rows, any alarm": ("default", "any"),
    "(a0) replay defaults as they are (warm-up 100), any alarm": ("replay-default", "any"),
    "(b) asset Mahalanobis alarm only (as a)": ("default", "asset"),
    "(c) CUSUM per signal + asset, any alarm": ("cusum", "any"),
    "(d) HST per asset, asset alarm only": ("hst", "asset"),
    "(d') HST asset + z-score signals, any alarm": ("hst", "any"),
}


@dataclass(frozen=True, slots=True)
class SkabReport:
    """What the SKAB part measured: the files, a score per table row, and alarm shares."""

    files: list[SkabFile]
    table: dict[str, SkabScore]  # row label (ROWS keys and reference rows) -> score
    shares: dict[str, list[AlarmShare]]  # configuration -> its alarms' shares


def quality_markdown(
    data: Path,
    mode: str,
    skab: SkabReport | None,
    cwru: list[CwruResult] | None,
    seconds: float,
    skipped: Sequence[str],
) -> str:
    """The whole ``quality.md``."""
    lines = [f"# Detection quality ({mode})", "",
             f"Data: `{data}`. Run time {seconds:.1f} s.", ""]
    lines += _skab(skab) if skab else ["SKAB: not run (see skipped).", ""]
    lines += _cwru(cwru) if cwru else ["CWRU: not run (see skipped).", ""]
    if skipped:
        lines += ["## Skipped", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(lines) + "\n"


def _skab(skab: SkabReport) -> list[str]:
    files, table = skab.files, skab.table
    rows = sum(f.times.size - TRAIN_ROWS for f in files)
    lines = [
        "## SKAB (valve1, valve2)", "",
        f"{len(files)} files ({', '.join(f.name for f in files)}), {rows} test rows. Each file is "
        f"a fresh plant; rows 0-{TRAIN_ROWS - 1} train (alarms there are ignored), the rest are "
        "scored, pooled over all files. The published methods are offline or semi-supervised, "
        "fitted per file on the training rows, and scored on all 34 files of SKAB; shopfloor "
        "learns online from the same rows and we have 20 of the files, so the comparison is "
        "indicative. Three reference outputs are scored on our files: `always alarm` and "
        "`never alarm` show what a detector gets for free (about half the test rows are "
        "anomalous, so always alarming has F1 near 0.7), and `anomaly labels as output` is the "
        "perfect point-wise detector: its NAB score is the ceiling for an alarm-like output, "
        "because SKAB marks changepoints inside a fault too (valve1/0: 573, 630, 917, 974 for "
        "one fault from 573 to 974) and only an output that toggles there can hit them.", "",
        "### Outlier detection (point-wise)", "",
        "| detector | F1 | FAR % | MAR % | TP | FP | TN | FN |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in table.items():
        p = s.points
        lines.append(f"| {_who(label)} | {p.f1:.3f} | {p.far:.2f} | {p.mar:.2f} | {p.tp} | "
                     f"{p.fp} | {p.tn} | {p.fn} |")
    lines += [f"| {name} (published) | {f1:.2f} | {far:.2f} | {mar:.2f} | | | | |"
              for name, f1, far, mar in OUTLIER]
    lines += [
        "", "### Changepoint detection (NAB)", "",
        f"Predicted changepoints are the rising and falling edges of the 0/1 output over the "
        f"test rows (a 1 on the first test row counts as a rising edge, as in SKAB's "
        f"notebooks); each true changepoint opens a window [cp, cp + {WINDOW_S:g} s], cut "
        "where it overlaps the previous one; the first detection in a window scores by SKAB's "
        "scaled tanh (`my_scale` in SKAB's core/metrics.py), detections outside windows cost "
        "A_fp, missed windows A_fn. The window follows the data README; SKAB's notebooks "
        "use 30 s centred on the changepoint, which scores differently.", "",
        "| detector | NAB standard | NAB low FP | NAB low FN | missed / changepoints | "
        "false detections |", "|---|---:|---:|---:|---:|---:|",
    ]
    for label, s in table.items():
        n = s.nab
        lines.append(f"| {_who(label)} | {n['standard']:.2f} | {n['low_fp']:.2f} | "
                     f"{n['low_fn']:.2f} | {s.missed_changepoints} / {s.changepoints} | "
                     f"{s.false_changepoints} |")
    lines += [f"| {name} (published) | {a:.2f} | {b:.2f} | {c:.2f} | | |"
              for name, a, b, c in CHANGEPOINT]
    lines += [
        "", "### Which alarms fire", "",
        "Test rows with each alarm ACTIVE, inside and outside the labelled faults, and the files "
        "whose alarm was already ACTIVE on the first test row (raised while training and not "
        "cleared: learning pauses during an alarm). Alarms never ACTIVE are left out.", "",
        "| configuration | alarm | rows in faults | rows outside faults | ACTIVE at first test "
        "row |", "|---|---|---:|---:|---:|",
    ]
    for config, alarms in skab.shares.items():
        for a in alarms:
            if a.anomalous_rows or a.normal_rows:
                lines.append(f"| {config} | {a.alarm} | {a.anomalous_rows} | {a.normal_rows} | "
                             f"{a.active_at_start} / {len(files)} |")
    return [*lines, ""]


def _who(label: str) -> str:
    return f"shopfloor {label}" if label.startswith("(") else f"{label} (reference)"


def _cwru(results: list[CwruResult]) -> list[str]:
    r0 = results[0]
    lines = [
        "## CWRU bearing faults (drive end, 0.007 in, 1797 rpm)", "",
        f"The healthy recording (48 kHz, decimated by 4 with a Kaiser-windowed sinc low-pass) "
        f"gives {r0.healthy_seconds:.2f} s at {SAMPLE_RATE / 1000:g} kHz, then the faulty "
        f"recording follows. Frames of {FRAME_LEN} samples every {FRAME_HOP} samples "
        f"({100 * (1 - FRAME_HOP / FRAME_LEN):.1f} % overlap): without overlap the healthy part "
        f"would be only {int(r0.healthy_seconds * SAMPLE_RATE) // FRAME_LEN} frames, fewer than "
        f"the alarm's warm-up and the z-score's min_samples (100 each, kept at their defaults). "
        f"Of the {r0.healthy_frames} healthy frames the first {r0.warmup_frames} "
        f"({(r0.warmup_frames - 1) * FRAME_HOP / SAMPLE_RATE + FRAME_LEN / SAMPLE_RATE:.2f} s "
        f"of signal, strongly overlapping) train; the remaining "
        f"{r0.healthy_frames - r0.warmup_frames} are scored for false alarms, a small sample: "
        f"0 alarms there bounds the false-alarm rate only loosely.", "",
        "| fault | frames to alarm | seconds to alarm | earliest possible s | alarms on healthy "
        "| healthy frames ACTIVE | score / threshold | top feature at alarm "
        "| top features while ACTIVE |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        frames = "never" if r.frames_to_alarm is None else str(r.frames_to_alarm)
        secs = "-" if r.seconds_to_alarm is None else f"{r.seconds_to_alarm:.4f}"
        if r.active_at_join:
            frames += " (already ACTIVE from the healthy part)"
        tops = ", ".join(f"{name} ({count})" for name, count in r.top_while_active)
        lines.append(f"| {r.fault} | {frames} | {secs} | {r.earliest_seconds:.4f} | "
                     f"{r.healthy_alarms} / {r.healthy_frames - r.warmup_frames} frames | "
                     f"{r.healthy_active_frames} | {r.margin:.1f} | {r.top_at_alarm} | {tops} |")
    lines += ["", "Frames to alarm count from the first frame holding faulty samples (1); "
              "seconds run from the join to the end of the alarm frame, when a live agent has "
              "it. The earliest possible is `raise_after` (3) frames. Score / threshold is the "
              "median over the faulty frames: how far past its threshold the fault drives the "
              "detector. "
              "These seeded faults raise the vibration energy several-fold, so any energy feature "
              "finds them at once: this stream tests the frame path and false alarms on healthy "
              "data more than sensitivity."]
    return [*lines, ""]
