"""``python -m benchmarks {kernels,detectors,all} [--quick] [--out DIR] [--compare OLD.json]
[--repeats N]``.

Exit codes: 0 after a run (targets are reported, not enforced), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import AREAS
from benchmarks.harness import Bench, Mode, machine_info, whole_number
from benchmarks.report import (
    compare_lines,
    load_results,
    write_json,
    write_markdown,
    write_plots,
)


def parser() -> argparse.ArgumentParser:
    """The command line (bad arguments exit 2, as argparse does)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Throughput of shopfloor's kernels and detectors, each beside its "
        "reference (np.sum, np.fft.rfft, NumPy, pure Python, River called directly).",
        epilog="Exit status: 0 after a run, even when a target is missed (targets are "
        "reported, not enforced); 2 for bad arguments.",
    )
    p.add_argument("area", choices=[*AREAS, "all", "quality", "faults"],
                   help="what to measure; all = every throughput area; quality = detection "
                   "quality on the public data sets (--data DIR); faults = the fault suite "
                   "against the real agent and Mosquitto (python -m benchmarks faults -h)")
    p.add_argument("--quick", action="store_true",
                   help="small workloads and few repeats (under a minute for all)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help="directory for results.json, results.md and the plots "
                   "(default: bench-results)")
    p.add_argument("--compare", type=Path, metavar="OLD.json",
                   help="an earlier results.json: print new/old per figure")
    p.add_argument("--repeats", type=whole_number(1), metavar="N",
                   help="interleaved rounds per benchmark (default 5 quick, 15 full)")
    return p


def run(areas: Sequence[str], mode: Mode) -> dict[str, Any]:
    """Run ``areas`` and return the results document (see :mod:`benchmarks.report`)."""
    started = time.perf_counter()
    bench = Bench(mode)
    machine = machine_info(mode)
    for name in areas:
        bench.area = name
        module = importlib.import_module(f"benchmarks.{name}")
        area_start = time.perf_counter()
        module.run(bench)
        bench.progress(f"[{name}] done in {time.perf_counter() - area_start:.1f} s")
    return {
        "schema": 1,
        "machine": machine,
        "areas": list(areas),
        "elapsed_s": time.perf_counter() - started,
        "figures": [f.as_dict() for f in bench.figures],
        "warmup": [{"area": w.area, "name": w.name, "seconds": w.seconds} for w in bench.warmups],
        "skipped": [{"area": s.area, "name": s.name, "reason": s.reason} for s in bench.skipped],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run, write, compare; return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["quality"]:
        # Detection quality needs the public data sets beside the clone, so it is not part of
        # `all` (which must run anywhere); it has its own options (--data).
        from benchmarks import quality

        return quality.main(args_list[1:])
    if args_list[:1] == ["faults"]:
        # The fault suite reports outcomes, not figures, and has its own options (--only).
        from benchmarks import faults

        return faults.main(args_list[1:])
    p = parser()
    args = p.parse_args(argv)
    old = None
    if args.compare is not None:
        try:
            old = load_results(args.compare)
        except ValueError as exc:
            p.error(str(exc))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {args.out}: {exc}")
    areas = list(AREAS) if args.area == "all" else [args.area]
    results = run(areas, Mode.of(args.quick, args.repeats))
    written = [write_json(results, args.out), write_markdown(results, args.out),
               *write_plots(results, args.out)]
    missed = [f["key"] for f in results["figures"] if f["passed"] is False]
    print(f"{len(results['figures'])} figures in {results['elapsed_s']:.1f} s; "
          f"targets missed: {len(missed)}; wrote {', '.join(str(w) for w in written)}")
    for key in missed:
        print(f"  target missed: {key}")
    if old is not None:
        print("\n".join(compare_lines(results, old)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
