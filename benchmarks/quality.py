"""Quality area: how well shopfloor detects real faults on public labelled data.

Not a timing area: every figure is one deterministic run (``repeats`` 1, min = max = median),
measured beside a published result where one exists. Two data sets, read from a folder outside
the repository (``--data DIR``, default ``../shared/data`` beside the repository root; its
``README.md`` states the protocol and the published results):

SKAB (``skab/valve1``, ``skab/valve2``)
    Pump test-bed experiments, one fresh plant per file, 400 training rows, the rest scored
    with SKAB's point-wise F1/FAR/MAR and NAB changepoint scores (:mod:`.quality_skab`,
    :mod:`.quality_metrics`). Figures: F1 beside the best published F1 (Conv-AE) and NAB
    standard beside the best published NAB (MSCRED); ratio = ours / theirs.
NAB (``nab/data``, ``nab/labels``)
    Univariate streams, one fresh plant with the default configuration per file, scored by
    our NAB scorer (:mod:`.quality_nab`; checked against ``<data>/../tools/nab_score.py``
    when that runs: it needs pandas, set ``NAB_SCORE_PYTHON`` to an interpreter with it).
    Figures: NAB standard of the likelihood and of the raised alarms beside Numenta HTM on
    the same 35 files (66.6); ratio = ours / HTM.
Synthetic (no data needed)
    A seeded suite of steps, drift, a spike, seasonality, a gap, a stuck sensor and healthy
    controls (:mod:`.quality_synthetic`): detected, delay, false alarms per 10,000 healthy
    samples, and whether a sustained change's alarm ends. A table, no figures.
CWRU (``cwru/*.npz``)
    A frame signal fitted on the healthy recording's start, then continued on its held-back
    part, on a healthy-to-healthy control join and on each seeded fault (:mod:`.quality_cwru`).
    Figures: alarms on the held-back part and on the control (target: none; ratio =
    1 / (1 + alarms)), seconds from the fault's start to the alarm (unit s, lower is better)
    beside the earliest possible alarm (ratio = earliest / ours), and the faults whose defect
    the diagnosis named right on the alarm's frame (ratio = right / faults).

Besides ``results.json``/``results.md`` the area writes ``quality.md`` with the full tables.
Run it alone with ``python -m benchmarks.quality [--data DIR] [--out DIR] [--quick]``; quick
takes 4 SKAB files, 5 NAB files, short synthetic series and 1 CWRU fault. A missing data
folder is a recorded skip, not a failure. The NAB and synthetic tables are printed too.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.harness import Bench, Figure, Mode, machine_info
from benchmarks.quality_cwru import FAULTS, HEALTHY_FILE, CwruReport, HealthyResult, run_cwru
from benchmarks.quality_data import read_skab, skab_files
from benchmarks.quality_nab import (
    ALARM,
    ANCHOR,
    LIKELIHOOD,
    QUICK_NAB,
    NabReport,
    NabScore,
    reference_tool,
    run_nab,
)
from benchmarks.quality_report import CHANGEPOINT, OUTLIER, ROWS, SkabReport, quality_markdown
from benchmarks.quality_skab import TRAIN_ROWS, run_skab, score, skab_configs
from benchmarks.quality_synthetic import (
    FULL,
    QUICK,
    SyntheticReport,
    run_synthetic,
)

__all__ = ["DEFAULT_DATA", "main", "run"]

ROOT = Path(__file__).resolve().parents[1]
#: Where the data folder is unless ``--data`` says otherwise.
DEFAULT_DATA = ROOT.parent / "shared" / "data"
#: Files of the quick run: two of each valve folder, and one fault.
QUICK_SKAB = ("valve1/0", "valve1/1", "valve2/0", "valve2/1")
QUICK_FAULTS = ("inner race (IR)",)


def run(bench: Bench, data: Path | None = None, out: Path | None = None) -> None:
    """Run the SKAB, NAB, synthetic and CWRU benchmarks, add their figures, and write
    ``quality.md``.

    ``out`` defaults to the ``--out`` of ``python -m benchmarks`` when that is the caller (the
    harness hands areas only ``bench``), so ``quality.md`` lands beside ``results.md``.
    """
    started = time.perf_counter()
    data = DEFAULT_DATA if data is None else data
    out = out if out is not None else _harness_out()
    skab = _skab(bench, data / "skab")
    nab = _nab(bench, data / "nab", out)
    synthetic = _synthetic(bench)
    cwru = _cwru(bench, data / "cwru")
    text = quality_markdown(data, bench.mode.name, skab, cwru, time.perf_counter() - started,
                            [s.reason for s in bench.skipped if s.area == bench.area],
                            nab=nab, synthetic=synthetic)
    bench.progress(text)  # the tables on the console too, not only in the files
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "quality.md").write_text(text, encoding="utf-8")
        bench.progress(f"[{bench.area}] wrote {out / 'quality.md'}")


def _skab(bench: Bench, folder: Path) -> SkabReport | None:
    paths = skab_files(folder)
    if bench.mode.quick:
        paths = [p for p in paths if f"{p.parent.name}/{p.stem}" in QUICK_SKAB]
    if not paths:
        bench.skip("SKAB", f"no SKAB experiments in {folder}/valve1 or valve2 (give --data DIR)")
        return None
    files = [read_skab(p) for p in paths]
    free = folder / "anomaly-free" / "anomaly-free.csv"
    healthy = read_skab(free, healthy=True) if free.is_file() else None
    if healthy is None:
        bench.skip("SKAB control", f"no {free}: no false-alarm control on healthy data")
    bench.progress(f"[{bench.area}] SKAB: {len(files)} files through "
                   f"{len(skab_configs(files[0].columns))} configurations")
    scores, shares, controls = run_skab(
        files, lambda msg: bench.progress(f"[{bench.area}] SKAB {msg}"), healthy)
    table = {label: scores[key] for label, key in ROWS.items()}
    n = [f.times.size - TRAIN_ROWS for f in files]
    table["always alarm"] = score(files, [np.ones(f.times.size, dtype=np.bool_) for f in files])
    table["never alarm"] = score(files, [np.zeros(f.times.size, dtype=np.bool_)
                                         for f in files])
    table["anomaly labels as output"] = score(files, [f.anomaly for f in files])
    subset = f"{len(files)} files, {sum(n)} test rows; published: 34 files, offline"
    best_f1, best_nab = OUTLIER[0], CHANGEPOINT[0]
    for label in ROWS:
        s = table[label]
        p = s.points
        _add(bench, f"SKAB F1, {label}", "F1", p.f1, f"{best_f1[0]} (published F1)", best_f1[1],
             p.f1 / best_f1[1], f"FAR {p.far:.2f} %, MAR {p.mar:.2f} % (published {best_f1[0]}: "
             f"{best_f1[2]} %, {best_f1[3]} %); ratio = F1 / published F1; {subset}")
        nab = s.nab
        _add(bench, f"SKAB NAB standard, {label}", "NAB", nab["standard"],
             f"{best_nab[0]} (published NAB)", best_nab[1], nab["standard"] / best_nab[1],
             f"low FP {nab['low_fp']:.2f}, low FN {nab['low_fn']:.2f} (published "
             f"{best_nab[0]}: {best_nab[2]}, {best_nab[3]}); ratio = NAB / published NAB; "
             f"{subset}")
    if "default" in controls:
        quiet, ref = 100.0 - controls["default"].far, 100.0 - best_f1[2]
        _add(bench, "SKAB control: healthy rows without an alarm, defaults", "%", quiet,
             f"{best_f1[0]} (published, 100 - FAR on the test rows)", ref, quiet / ref,
             "the anomaly-free recording in pieces as long as an experiment file, 400 training "
             "rows each: every alarm row there is a false one; ratio = ours / published")
    return SkabReport(files, table, shares, controls)


def _nab(bench: Bench, folder: Path, out: Path | None) -> NabReport | None:
    """NAB through the default pipeline, both detectors scored, the table on the console."""
    only = QUICK_NAB if bench.mode.quick else None
    report = run_nab(folder, only, out, lambda msg: bench.progress(f"[{bench.area}] {msg}"),
                     tool=reference_tool(folder.parent))
    if report is None:
        bench.skip("NAB", f"no labelled NAB files in {folder}/data and {folder}/labels "
                   "(give --data DIR)")
        return None
    subset = f"{len(report.files)} files, {report.scored_rows} scored rows"
    rows: tuple[tuple[str, dict[str, NabScore], str], ...] = (
        (f"NAB standard, {LIKELIHOOD}", report.optimised[LIKELIHOOD],
         f"best threshold per profile on the corpus (NAB's protocol); {report.likelihood_note}"),
        (f"NAB standard, {ALARM}", report.alarm_fixed,
         "raised alarms as detections, no threshold to pick"),
    )
    for name, by, how in rows:
        std = by["standard"]
        _add(bench, name, "NAB", std.score, ANCHOR[0], ANCHOR[1], std.score / ANCHOR[1],
             f"low FP {by['low FP'].score:.2f}, low FN {by['low FN'].score:.2f}; {how}; "
             f"{std.detected} of {std.windows} windows detected, {std.false_positives} "
             f"detections outside windows; ratio = ours / HTM; {subset}")
    return report


def _synthetic(bench: Bench) -> SyntheticReport:
    """The seeded synthetic suite (no data needed), its table on the console."""
    report = run_synthetic(QUICK if bench.mode.quick else FULL)
    return report


def _cwru(bench: Bench, folder: Path) -> CwruReport | None:
    needed = [HEALTHY_FILE, *FAULTS.values()]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        bench.skip("CWRU", f"{folder} lacks {', '.join(missing)} (give --data DIR)")
        return None
    report = run_cwru(folder, QUICK_FAULTS if bench.mode.quick else tuple(FAULTS))
    control = (f"joined where the slow waveform steps {report.join_step_ratio:.0f}x its largest "
               f"step in the fitted part; fed frames straddling the join (the old protocol) "
               f"it raised {report.straddling_alarms} alarm(s)")
    for label, h, how in (("held-back healthy part", report.held_back, "straight after the "
                           "fitted part"), ("healthy-to-healthy control join", report.control,
                                            control)):
        bench.progress(f"[{bench.area}] CWRU {label}: {h.alarms} alarms on {h.frames} frames")
        _cwru_control(bench, f"CWRU {label}: alarms", h, how)
    for r in report.faults:
        name = f"CWRU {r.fault}: seconds from the join to the alarm"
        if r.seconds_to_alarm is None:
            bench.skip(name, f"MISSED: no alarm in the {r.fault} recording")
            continue
        bench.progress(f"[{bench.area}] CWRU {r.fault}: alarm {r.seconds_to_alarm:.4f} s after "
                       f"the join, top feature {r.top_at_alarm}, defect named "
                       f"{r.defect_at_alarm} (truth {r.truth})")
        active = sum(n for _, n in r.named_while_active)
        right = dict(r.named_while_active).get(r.truth, 0)
        _add(bench, name, "s", r.seconds_to_alarm, "earliest possible (raise_after frames)",
             r.earliest_seconds, r.earliest_seconds / r.seconds_to_alarm,
             f"defect named at the alarm: {r.defect_at_alarm} (truth {r.truth}), and on "
             f"{right} of {active} frames while ACTIVE; top feature at the alarm: "
             f"{r.top_at_alarm}; ratio = earliest / ours", better="lower")
    right = sum(r.named_right for r in report.faults)
    n = len(report.faults)
    _add(bench, "CWRU faults whose defect is named right at the alarm", "faults", right,
         "faults streamed", n, right / n, "the diagnosis on the alarm's frame against the "
         "seeded fault (IR -> inner_race, B -> ball, OR -> outer_race); ratio = right / "
         "faults", better="higher")
    return report


def _cwru_control(bench: Bench, name: str, h: HealthyResult, how: str) -> None:
    """A healthy continuation's alarms as a figure with a target: none."""
    ratio = 1.0 / (1.0 + h.alarms)
    bench.add(Figure(
        area=bench.area, name=name, unit="alarms", median=h.alarms, min=h.alarms, max=h.alarms,
        reference="none expected", reference_median=0.0, reference_min=0.0, reference_max=0.0,
        ratio=ratio, ratio_min=ratio, ratio_max=ratio, target=1.0,
        target_text="no alarm on healthy data", passed=h.alarms == 0, repeats=1,
        note=f"{h.frames} frames, {how}; peak score / threshold {h.peak_margin:.2f}; "
        f"defects named: {', '.join(f'{d} {c}' for d, c in h.named)}; "
        "ratio = 1 / (1 + alarms)", better="lower",
    ))


def _add(bench: Bench, name: str, unit: str, value: float, reference: str, ref_value: float,
         ratio: float, note: str, better: str = "higher") -> None:
    bench.add(Figure(
        area=bench.area, name=name, unit=unit, median=value, min=value, max=value,
        reference=reference, reference_median=ref_value, reference_min=ref_value,
        reference_max=ref_value, ratio=ratio, ratio_min=ratio, ratio_max=ratio, repeats=1,
        note=note, better=better,
    ))


def _harness_out() -> Path | None:
    """``--out`` of ``python -m benchmarks`` if that is the running program, else None."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None or spec.name != "benchmarks.__main__":
        return None
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    return p.parse_known_args(sys.argv[1:])[0].out  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.quality``: the quality area alone, with its data folder."""
    from benchmarks.report import write_json, write_markdown

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Detection quality of shopfloor on SKAB, NAB and CWRU (public labelled "
        "data) and a synthetic suite.",
        epilog="Exit status: 0 after a run (a missing data set is reported as skipped); "
        "2 for bad arguments or a --data folder that is not there (nothing is written).",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                   help=f"the data folder with skab/, nab/ and cwru/ (default: {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help="directory for quality.md, results.json and results.md "
                   "(default: bench-results)")
    p.add_argument("--quick", action="store_true",
                   help="4 SKAB files, 5 NAB files, short synthetic series, 1 CWRU fault")
    args = p.parse_args(argv)
    # A mistyped --data ran the synthetic suite alone, exited 0 and overwrote the results.
    if not args.data.is_dir():
        p.error(f"--data {args.data}: no such folder (it holds skab/, nab/ and cwru/); "
                f"nothing was run or written")
    if not any((args.data / name).is_dir() for name in ("skab", "nab", "cwru")):
        p.error(f"--data {args.data}: holds none of skab/, nab/ and cwru/; nothing was run or "
                f"written")
    mode = Mode.of(args.quick)
    bench = Bench(mode, area="quality")
    started = time.perf_counter()
    machine = machine_info(mode)
    run(bench, data=args.data, out=args.out)
    results = {
        "schema": 1, "machine": machine, "areas": ["quality"],
        "elapsed_s": time.perf_counter() - started,
        "figures": [f.as_dict() for f in bench.figures],
        "warmup": [],
        "skipped": [{"area": s.area, "name": s.name, "reason": s.reason} for s in bench.skipped],
    }
    written = [write_json(results, args.out), write_markdown(results, args.out)]
    report = args.out / "quality.md"
    if report.exists():  # the tables themselves, not only where they went
        print(report.read_text(encoding="utf-8"))
    print(f"{len(bench.figures)} figures in {results['elapsed_s']:.1f} s; wrote "
          f"{args.out / 'quality.md'}, {', '.join(str(w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
