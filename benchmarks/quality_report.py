"""``quality.md``: the SKAB and CWRU tables, next to SKAB's published results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.quality_cwru import FRAME_LEN, SAMPLE_RATE, CwruReport
from benchmarks.quality_data import SkabFile
from benchmarks.quality_metrics import Confusion
from benchmarks.quality_nab import NabReport, nab_markdown
from benchmarks.quality_skab import TRAIN_ROWS, WINDOW_S, AlarmShare, SkabScore
from benchmarks.quality_synthetic import SyntheticReport, synthetic_markdown

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
ROWS: dict[str, tuple[str, str]] = {
    "(a) defaults (z-score signals + asset), any alarm": ("default", "any"),
    "(b) defaults, asset Mahalanobis alarm only": ("default", "asset"),
    "(c) ewma signals + asset, any alarm": ("ewma", "any"),
    "(d) cusum signals + asset, any alarm": ("cusum", "any"),
    "(e) robust_z signals + asset, any alarm": ("robust_z", "any"),
    "(f) page_hinkley signals + asset, any alarm": ("page_hinkley", "any"),
    "(g) western_electric signals + asset, any alarm": ("western_electric", "any"),
    "(h) hst asset + z-score signals, any alarm": ("hst", "any"),
    "(h') hst asset alarm only": ("hst", "asset"),
}


@dataclass(frozen=True, slots=True)
class SkabReport:
    """What the SKAB part measured: the files, a score per table row, and alarm shares."""

    files: list[SkabFile]
    table: dict[str, SkabScore]  # row label (ROWS keys and reference rows) -> score
    shares: dict[str, list[AlarmShare]]  # configuration -> its alarms' shares
    controls: dict[str, Confusion] = field(default_factory=dict)  # config -> anomaly-free


def quality_markdown(
    data: Path,
    mode: str,
    skab: SkabReport | None,
    cwru: CwruReport | None,
    seconds: float,
    skipped: Sequence[str],
    *,
    nab: NabReport | None = None,
    synthetic: SyntheticReport | None = None,
) -> str:
    """The whole ``quality.md``."""
    lines = [f"# Detection quality ({mode})", "",
             f"Data: `{data}`. Run time {seconds:.1f} s.", ""]
    lines += _skab(skab) if skab else ["SKAB: not run (see skipped).", ""]
    lines += nab_markdown(nab) if nab else ["NAB: not run (see skipped).", ""]
    lines += synthetic_markdown(synthetic) if synthetic else []
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
        "Control FAR: the same configuration on SKAB's anomaly-free recording (never scored by "
        "the protocol), cut into pieces as long as an experiment file with the same 400 "
        "training rows; every alarm row there is a false one. It is the figure to judge a "
        "false-alarm rate by: it holds no fault whose aftermath an alarm could overlap.", "",
        "| detector | F1 | FAR % | MAR % | control FAR % | TP | FP | TN | FN |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in table.items():
        p = s.points
        config, labelling = ROWS.get(label, ("", ""))
        control = skab.controls.get(config) if labelling == "any" else None
        far0 = "" if control is None else f"{control.far:.2f}"
        lines.append(f"| {_who(label)} | {p.f1:.3f} | {p.far:.2f} | {p.mar:.2f} | {far0} | "
                     f"{p.tp} | {p.fp} | {p.tn} | {p.fn} |")
    lines += [f"| {name} (published) | {f1:.2f} | {far:.2f} | {mar:.2f} | | | | | |"
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


def _cwru(report: CwruReport) -> list[str]:
    hop = report.hop
    fit_s = ((report.fit_frames - 1) * hop + FRAME_LEN) / SAMPLE_RATE
    lines = [
        "## CWRU bearing faults (drive end, 0.007 in, 1797 rpm)", "",
        f"The healthy recording (48 kHz, decimated by 4 with a Kaiser-windowed sinc low-pass) "
        f"gives {report.healthy_seconds:.2f} s at {SAMPLE_RATE / 1000:g} kHz. Frames of "
        f"{FRAME_LEN} samples every {hop} samples ({100 * (1 - hop / FRAME_LEN):.1f} % overlap, "
        f"so that the library's default alarm warm-up of {report.warmup_frames} frames and a "
        f"quarter more fit in the fitted part; overlapping frames are not independent, so the "
        f"{fit_s:.2f} s fitted are worth about {fit_s * SAMPLE_RATE / FRAME_LEN:.0f} "
        f"independent frames). One plant is fitted on the first {fit_s:.2f} s "
        f"({report.fit_frames} frames, of which {report.warmup_frames} warm-up) and its state "
        "restored into a fresh plant for each "
        "continuation below. Every continuation starts a new frame grid at its first sample, "
        "so no scored frame straddles a join; delays count from the first frame of the fault "
        "(frame 1). The settings and what they were picked on are listed in "
        "`benchmarks/quality_cwru.py`.", "",
        "### Healthy continuations (no alarm expected)", "",
        "| continuation | frames | alarms | frames ACTIVE | peak score / threshold "
        "| defects named | peak evidence ratio (names from 4) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for h in (report.held_back, report.control):
        named = ", ".join(f"{d} ({c})" for d, c in h.named)
        lines.append(f"| {h.name} | {h.frames} | {h.alarms} | {h.active_frames} | "
                     f"{h.peak_margin:.2f} | {named} | {h.peak_evidence:.2f} |")
    lines += [
        "", f"Alarms in the fitted part after its warm-up: {report.fit_alarms}. The held-back "
        "part runs on straight after the fitted part. The control continues with the healthy "
        f"recording from {report.control_start_seconds:.3f} s, chosen, among the starts within "
        "one shaft turn two frames into the held-back part, where the waveform's slow part "
        f"(below 90 Hz) steps by the most across the join: {1000 * report.join_step:.2f} mg, "
        f"{report.join_step_ratio:.0f} times the largest step between neighbouring samples of "
        "the fitted part, so a detector of steps in the waveform fires there. Fed frames that "
        "straddle the join (the grid running on across it, as the old protocol did), this "
        f"pipeline raised {report.straddling_alarms} alarm(s) on the control. Either way no "
        "scored frame here holds a splice: a sensor never sends one, and a protocol that feeds "
        "one measures the splice as much as the fault. A held-back part of this length bounds "
        "the false-alarm rate only loosely.",
        "", "### Faults (an alarm expected, and the defect named)", "",
        "| fault | frames to alarm | seconds to alarm | earliest possible s | score / threshold "
        "| top feature at alarm | defect named at alarm | truth | ISO zone at alarm "
        "| defects named while ACTIVE |",
        "|---|---:|---:|---:|---:|---|---|---|---|---|",
    ]
    for r in report.faults:
        frames = "never" if r.frames_to_alarm is None else str(r.frames_to_alarm)
        secs = "-" if r.seconds_to_alarm is None else f"{r.seconds_to_alarm:.4f}"
        named = ", ".join(f"{d} ({c})" for d, c in r.named_while_active)
        mark = "" if r.named_right else " (wrong)"
        lines.append(f"| {r.fault} | {frames} | {secs} | {r.earliest_seconds:.4f} | "
                     f"{r.margin:.1f} | {r.top_at_alarm} | {r.defect_at_alarm}{mark} | "
                     f"{r.truth} | {r.zone_at_alarm} | {named} |")
    lines += ["", "Seconds run from the fault's first sample to the end of the alarm frame, when "
              "a live agent has it; the earliest possible is `raise_after` frames. Score / "
              "threshold is the median over the fault frames. The defect is the diagnosis of "
              "the alarm's frame against the healthy levels learned in the fitted part; the "
              "last column counts its answers over all frames with the alarm ACTIVE, which "
              "shows how steady it is. The ISO zone is for machine group 2, rigid (the test "
              "motor, 1.5 kW, is below ISO 20816-3's scope: shown, not judged). These seeded "
              "faults raise the vibration energy several-fold, so any energy feature finds them "
              "at once: detection here tests the frame path and false alarms more than "
              "sensitivity; naming the defect is the harder part (ball faults are the hardest "
              "to name from the envelope, as Smith and Randall's CWRU benchmark study, MSSP "
              "2015, also found). The diagnosis' rule that a cage-frequency line with a risen "
              "ball-spin line is a ball defect was written after seeing this B recording's "
              "features, so the B row is not an unseen test of the naming."]
    return [*lines, ""]
