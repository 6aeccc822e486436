"""The fault suite: the real agent (``python -m shopfloor run``) and a real Mosquitto on loopback,
put through what goes wrong on a shop floor, each scenario reporting its trials, its failed
checks, what was lost and its key figures.

``python -m benchmarks faults [--quick] [--out DIR] [--only LIST] [--seed N]``

====  ==========  ==============================================================  ===============
 #    name        fault                                                           module
====  ==========  ==============================================================  ===============
 1    hostile     hostile values and payloads, shipped example and bare configs   faults_hostile
 2    overload    floods by rate and by payload size; RSS against MemoryMax       faults_overload
 3    kill9       kill -9 at random moments under a QoS 1 stream, restarts        faults_crash
 4    sigterm     SIGTERM under overload, then a restart on the same state        faults_crash
 5    broker      broker SIGTERM restart and kill -9, shipped mosquitto.conf      faults_broker
 6    scrape      scrape storms on /metrics                                       faults_scrape
 7    tables      1,000+ fake Sparkplug BIRTHs; signal names past max_signals     faults_tables
 8    soak        the simulator with its faults at 80 % of measured capacity      faults_soak
====  ==========  ==============================================================  ===============

Shared by them: :mod:`.faults_rig` (outcomes, configurations), :mod:`.faults_procs` (agent,
broker, their files), :mod:`.faults_metrics` (/metrics, RSS), :mod:`.faults_traffic` (MQTT load).

``--quick`` runs small trial counts and a 2-minute soak (about 4 minutes on two cores); the
full form runs 20 kills, 5 SIGTERM trials and a 1-hour soak. The plain-text report goes to
standard output (one block per scenario, printed as each ends), progress to standard error,
and the whole record to ``DIR/faults.json``. Every agent WARNING and ERROR line is collected
per scenario (``agent_log_warnings``): a defect often shows there first.

Exit status: 0 after a run, even when a scenario fails (failures are reported, as the other
benchmarks report missed targets); 2 for bad arguments. Without mosquitto the run is a
recorded skip, exit 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.faults_broker import run_broker
from benchmarks.faults_crash import run_kill9, run_sigterm
from benchmarks.faults_hostile import run_hostile
from benchmarks.faults_overload import run_overload
from benchmarks.faults_rig import Env, Outcome
from benchmarks.faults_scrape import run_scrape
from benchmarks.faults_soak import run_soak
from benchmarks.faults_tables import run_tables
from benchmarks.harness import whole_number
from shopfloor.tools.broker import find_mosquitto

__all__ = ["SCENARIOS", "main", "parser", "report_lines"]

#: The scenarios in the order they run: name -> (title, runner).
SCENARIOS: dict[str, tuple[str, Callable[[Env], Outcome]]] = {
    "hostile": ("hostile values and payloads over MQTT", run_hostile),
    "overload": ("overload by rate and by payload size", run_overload),
    "kill9": ("agent kill -9 at random moments", run_kill9),
    "sigterm": ("SIGTERM under overload", run_sigterm),
    "broker": ("broker restart and kill -9", run_broker),
    "scrape": ("scrape storms on /metrics", run_scrape),
    "tables": ("filled tables: Sparkplug BIRTHs and signal names", run_tables),
    "soak": ("soak at 80 % of capacity with the simulator's faults", run_soak),
}
NAMES = tuple(SCENARIOS)
FILE_NAME = "faults.json"
_WARNING = re.compile(r"^\S+ (WARNING|ERROR|CRITICAL) (shopfloor[\w.]*) (.*)$")


def _selection(text: str) -> list[str]:
    """``--only``: scenario numbers (1-8) or names, comma-separated, run in suite order."""
    chosen = set()
    for part in (p.strip() for p in text.split(",")):
        if part.isdigit() and 1 <= int(part) <= len(NAMES):
            chosen.add(NAMES[int(part) - 1])
        elif part in SCENARIOS:
            chosen.add(part)
        else:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a scenario: use 1-{len(NAMES)} or {', '.join(NAMES)}")
    return [name for name in NAMES if name in chosen]


def parser() -> argparse.ArgumentParser:
    """The command line (bad arguments exit 2, as argparse does)."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks faults",
        description="Faults against the real agent and a real Mosquitto on loopback: hostile "
        "input, overload, kill -9, SIGTERM under load, broker restarts, scrape storms, "
        "filled tables, a soak. Each scenario reports trials, failures, loss, key figures.",
        epilog="Exit status: 0 after a run, even when a scenario fails (reported); 2 for bad "
        "arguments. Scenarios: " + ", ".join(f"{i} {n}" for i, n in enumerate(NAMES, 1)),
    )
    p.add_argument("--quick", action="store_true",
                   help="small trial counts and a 2-minute soak (about 4 minutes)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), metavar="DIR",
                   help=f"directory for {FILE_NAME} (default: bench-results)")
    p.add_argument("--only", type=_selection, metavar="LIST",
                   help="scenarios to run, by number or name, comma-separated (default: all)")
    p.add_argument("--seed", type=whole_number(0), default=1, metavar="N",
                   help="seed of the random kill moments and sample values (default: 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the scenarios, print the report, write the record; the exit code."""
    p = parser()
    args = p.parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {args.out}: {exc}")
    names = args.only or list(NAMES)
    started = time.monotonic()
    doc: dict[str, Any] = {
        "schema": 1, "suite": "faults", "mode": "quick" if args.quick else "full",
        "seed": args.seed, "selected": names,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(), "skipped": None, "scenarios": [],
    }
    binary = find_mosquitto()
    if binary is None:
        doc["skipped"] = "mosquitto is not installed (Debian package mosquitto)"
        print(f"faults: skipped ({doc['skipped']})")
    else:
        doc["machine"]["mosquitto"] = _mosquitto_version(binary)
        with tempfile.TemporaryDirectory(prefix="sfbench-faults-") as tmp:
            for number, name in ((NAMES.index(n) + 1, n) for n in names):
                outcome = _run(name, Env(binary, Path(tmp) / name, args.quick, args.seed,
                                         _progress))
                doc["scenarios"].append(outcome.as_dict())
                print("\n".join(report_lines(number, outcome)) + "\n", flush=True)
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    failed = [s["key"] for s in doc["scenarios"] if s["failures"] or s["error"]]
    doc["summary"] = {"scenarios": len(doc["scenarios"]), "failed": failed,
                      "failures": sum(s["failures"] for s in doc["scenarios"])}
    path = args.out / FILE_NAME
    path.write_text(json.dumps(_finite(doc), indent=2, allow_nan=False) + "\n",
                    encoding="utf-8")
    print(f"faults: {len(doc['scenarios'])} scenario(s) in {doc['elapsed_s']:.0f} s; "
          f"failed: {', '.join(failed) or 'none'}; wrote {path}")
    return 0


def _run(name: str, env: Env) -> Outcome:
    """One scenario; an exception is its failure (reported with its traceback's tail), never
    the end of the suite."""
    title, runner = SCENARIOS[name]
    env.work.mkdir(parents=True, exist_ok=True)
    _progress(f"[faults] {name}: {title}")
    started = time.monotonic()
    try:
        outcome = runner(env)
    except Exception as exc:
        # What the scenario found before it failed is kept; the error is its last finding.
        outcome = env.current if env.current is not None else Outcome(name, title)
        outcome.error = f"{type(exc).__name__}: {exc}"[:4000]
        outcome.failures += 1
        outcome.findings.append("ERROR " + "".join(
            traceback.format_exception(exc)[-3:])[-2000:])
    outcome.seconds = time.monotonic() - started
    outcome.figures["agent_log_warnings"] = _agent_warnings(env.work)
    _progress(f"[faults] {name}: {outcome.failures} failure(s) in {outcome.seconds:.1f} s")
    return outcome


def _agent_warnings(work: Path, keep: int = 12) -> list[dict[str, Any]]:
    """The distinct WARNING and ERROR lines of every agent log under ``work`` (numbers folded,
    so one line repeated with other counts is one entry), most frequent first."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for log in sorted(work.rglob("*.log")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            found = _WARNING.match(line)
            if found is None:
                continue
            level, logger, message = found.groups()
            key = (level, logger, re.sub(r"\d+(\.\d+)?", "N", message)[:160])
            entry = seen.setdefault(key, {"level": level, "logger": logger, "count": 0,
                                          "example": message[:300]})
            entry["count"] += 1
    return sorted(seen.values(), key=lambda e: -int(e["count"]))[:keep]


def report_lines(number: int, o: Outcome) -> list[str]:
    """The plain-text block of one scenario."""
    status = "ERROR" if o.error else ("FAILED" if o.failures else "ok")
    lines = [f"[{number}] {o.key}: {o.title} - {status} ({o.seconds:.1f} s)",
             f"    trials {o.trials}, failures {o.failures}",
             f"    lost: {o.lost}"]
    if o.checks:
        lines.append("    checks: " + ", ".join(
            f"{name} {'ok' if ok else 'FAILED'}" for name, ok in o.checks.items()))
    for key, value in o.figures.items():
        if key == "agent_log_warnings":
            continue
        lines.append(f"    {key}: {_compact(value)}")
    lines += [f"    {text}" for text in o.findings]
    lines += [f"    note: {text}" for text in o.notes]
    lines += [f"    trial: {_compact(row)}" for row in o.rows]
    for w in o.figures.get("agent_log_warnings", []):
        lines.append(f"    agent log {w['level']} x{w['count']}: {w['logger']} {w['example']}")
    return lines


def _compact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(_finite(value), separators=(", ", ": "))
    return str(value)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None: the record is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    # Not benchmarks.harness.machine_info: it asks git for the commit, and this suite runs
    # beside people committing.
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "system": platform.platform(), "load_average": round(os.getloadavg()[0], 2)}


def _mosquitto_version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (done.stdout or done.stderr).splitlines()
    return first[0].strip() if first else "unknown"


if __name__ == "__main__":
    sys.exit(main())
