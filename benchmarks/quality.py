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
CWRU (``cwru/*.npz``)
    Healthy bearing then a seeded fault, as a stream of vibration frames (:mod:`.quality_cwru`).
    Figures: seconds from the join to the alarm (unit s, lower is better) beside the earliest
    possible alarm; ratio = earliest / ours.

Besides ``results.json``/``results.md`` the area writes ``quality.md`` with the full tables.
Run it alone with ``python -m benchmarks.quality [--data DIR] [--out DIR] [--quick]``; quick
takes 4 SKAB files and 1 CWRU fault. A missing data folder is a recorded skip, not a failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.harness import Bench, Figure, Mode, machine_info
from benchmarks.quality_cwru import FAULTS, HEALTHY_FILE, CwruResult, run_fault
from benchmarks.quality_data import read_skab, skab_files
from benchmarks.quality_report import CHANGEPOINT, OUTLIER, ROWS, SkabReport, quality_markdown
from benchmarks.quality_skab import TRAIN_ROWS, run_skab, score

__all__ = ["DEFAULT_DATA", "main", "run"]

ROOT = Path(__file__).resolve().parents[1]
#: Where the data folder is unless ``--data`` says otherwise.
DEFAULT_DATA = ROOT.parent / "shared" / "data"
#: Files of the quick run: two of each valve folder, and one fault.
QUICK_SKAB = ("valve1/0", "valve1/1", "valve2/0", "valve2/1")
QUICK_FAULTS = ("inner race (IR)",)


def run(bench: Bench, data: Path | None = None, out: Path | None = None) -> None:
    """Run the SKAB and CWRU benchmarks, add their figures, and write ``quality.md``.

    ``out`` defaults to the ``--out`` of ``python -m benchmarks`` when that is the caller (the
    harness hands areas only ``bench``), so ``quality.md`` lands beside ``results.md``.
    """
    started = time.perf_counter()
    data = DEFAULT_DATA if data is None else data
    out = out if out is not None else _harness_out()
    skab = _skab(bench, data / "skab")
    cwru = _cwru(bench, data / "cwru")
    text = quality_markdown(data, bench.mode.name, skab, cwru, time.perf_counter() - started,
                            [s.reason for s in bench.skipped if s.area == bench.area])
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "quality.md").write_text(text, encoding="utf-8")
        bench.progress(f"[{bench.area}] wrote {out / 'quality.md'}")
    else:
        bench.progress(text)


def _skab(bench: Bench, folder: Path) -> SkabReport | None:
    paths = skab_files(folder)
    if bench.mode.quick:
        paths = [p for p in paths if f"{p.parent.name}/{p.stem}" in QUICK_SKAB]
    if not paths:
        bench.skip("SKAB", f"no SKAB experiments in {folder}/valve1 or valve2 (give --data DIR)")
        return None
    files = [read_skab(p) for p in paths]
    bench.progress(f"[{bench.area}] SKAB: {len(files)} files through 3 configurations")
    scores, shares = run_skab(files, lambda msg: bench.progress(f"[{bench.area}] SKAB {msg}"))
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
    return SkabReport(files, table, shares)


def _cwru(bench: Bench, folder: Path) -> list[CwruResult] | None:
    needed = [HEALTHY_FILE, *FAULTS.values()]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        bench.skip("CWRU", f"{folder} lacks {', '.join(missing)} (give --data DIR)")
        return None
    faults = QUICK_FAULTS if bench.mode.quick else tuple(FAULTS)
    results = []
    for fault in faults:
        r = run_fault(folder, fault)
        results.append(r)
        name = f"CWRU {fault}: seconds from the join to the alarm"
        if r.seconds_to_alarm is None:
            bench.skip(name, f"no alarm in the {fault} recording after the join")
            continue
        bench.progress(f"[{bench.area}] CWRU {fault}: alarm {r.seconds_to_alarm:.4f} s after "
                       f"the join, top feature {r.top_at_alarm}")
        _add(bench, name, "s", r.seconds_to_alarm, "earliest possible (raise_after frames)",
             r.earliest_seconds, r.earliest_seconds / r.seconds_to_alarm,
             f"{r.healthy_alarms} alarms on {r.healthy_frames - r.warmup_frames} scored healthy "
             f"frames; top feature at the alarm: {r.top_at_alarm}; ratio = earliest / ours",
             better="lower")
    return results


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
        description="Detection quality of shopfloor on SKAB and CWRU (public labelled data).",
        epilog="Exit status: 0 after a run (a missing data set is reported as skipped); "
        "2 for bad arguments.",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                   help=f"the data folder with skab/ and cwru/ (default: {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help="directory for quality.md, results.json and results.md "
                   "(default: bench-results)")
    p.add_argument("--quick", action="store_true", help="4 SKAB files and 1 CWRU fault")
    args = p.parse_args(argv)
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
    print(f"{len(bench.figures)} figures in {results['elapsed_s']:.1f} s; wrote "
          f"{args.out / 'quality.md'}, {', '.join(str(w) for w in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
