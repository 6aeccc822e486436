"""Timing: every subject measured side by side with its references, interleaved, repeated.

A benchmark is a *subject* (the shopfloor code) and one or more *references* (``np.sum``, a
NumPy or pure-Python equivalent, River called directly), each a :class:`Case`: a callable that
processes ``work`` units (samples, rows) per call. :meth:`Bench.compare` warms every case (the
first call compiles or loads the numba cache, and is reported separately), calibrates how many
calls make one timing long enough to read, then times the cases round-robin
(A, B, C, A, B, C, ...) so that whatever the shared machine does meanwhile hits all of them.

Each subject/reference pair becomes one :class:`Figure`: the subject's rate (median, min, max
over the repeats), the reference's, and their ratio: how many times faster the subject is
(rate over rate, or for durations the reference's time over the subject's). The ratio is the
median of the per-round ratios (each round's A against the same round's B), which cancels slow
drifts in machine speed better than a ratio of medians. Targets are reported, never enforced.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

__all__ = [
    "Bench",
    "Case",
    "Figure",
    "Mode",
    "ReferenceMismatch",
    "Skipped",
    "Target",
    "Warmup",
    "add_rounds",
    "agree",
    "machine_info",
]


@dataclass(frozen=True, slots=True)
class Mode:
    """How hard to measure: ``quick`` for tests and a first look, ``full`` for the record."""

    name: str
    repeats: int
    min_time: float  # seconds one timing should last at least (calls are batched to reach it)

    @classmethod
    def of(cls, quick: bool, repeats: int | None = None) -> Mode:
        """The quick or full mode, with ``repeats`` overridden when given."""
        base = cls("quick", 5, 0.02) if quick else cls("full", 15, 0.15)
        return cls(base.name, repeats or base.repeats, base.min_time)

    @property
    def quick(self) -> bool:
        """True in quick mode: areas pick their small workloads."""
        return self.name == "quick"


@dataclass(frozen=True, slots=True)
class Case:
    """One timed callable: ``run()`` processes ``work`` units per call, reported in ``unit``.

    With ``work=None`` the figure is the duration of one call (``unit`` "s", lower is better),
    for things that are not throughputs: a start-up, a scrape, a round trip. ``note`` says what
    the case is when the name alone does not (a subset, a layout).
    """

    name: str
    run: Callable[[], object]
    work: float | None
    unit: str = "samples/s"
    note: str = ""

    def value(self, calls: int, seconds: float) -> float:
        """The case's figure for ``calls`` calls that took ``seconds``."""
        return seconds / calls if self.work is None else self.work * calls / seconds


@dataclass(frozen=True, slots=True)
class Target:
    """The issue's goal for a ratio: ``ratio >= minimum``, with the issue's wording."""

    minimum: float
    text: str


@dataclass(slots=True)
class Figure:
    """One subject measured against one reference (see the module docstring)."""

    area: str
    name: str
    unit: str
    median: float
    min: float
    max: float
    reference: str
    reference_median: float
    reference_min: float
    reference_max: float
    ratio: float
    ratio_min: float
    ratio_max: float
    target: float | None = None
    target_text: str = ""
    passed: bool | None = None
    repeats: int = 0
    note: str = ""
    better: str = "higher"  # "higher" for rates, "lower" for durations

    @property
    def key(self) -> str:
        """Identity across runs, for ``--compare``."""
        return f"{self.area}/{self.name} vs {self.reference}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the key first."""
        return {"key": self.key, **asdict(self)}


@dataclass(frozen=True, slots=True)
class Warmup:
    """The first call of a case: numba compile (or cache load) plus one run, in seconds."""

    area: str
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Skipped:
    """A benchmark that could not run, and why (a module under test not there yet)."""

    area: str
    name: str
    reason: str


@dataclass(slots=True)
class Bench:
    """Collects the figures of one run; areas call :meth:`compare` (or :meth:`add`)."""

    mode: Mode
    progress: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    figures: list[Figure] = field(default_factory=list)
    warmups: list[Warmup] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    area: str = ""

    def size(self, quick: int, full: int) -> int:
        """Pick the workload size of the mode."""
        return quick if self.mode.quick else full

    def skip(self, name: str, reason: str) -> None:
        """Record a benchmark that cannot run in this tree, and say so on stderr."""
        self.skipped.append(Skipped(self.area, name, reason))
        self.progress(f"[{self.area}] {name}: skipped ({reason})")

    def add(self, figure: Figure) -> None:
        """Record a figure measured by other means (a whole process, a server)."""
        self.figures.append(figure)

    def compare(
        self,
        subject: Case,
        references: Sequence[Case],
        targets: Sequence[Target | None] = (),
    ) -> list[Figure]:
        """Time ``subject`` against each reference, interleaved; one figure per reference.

        ``targets[i]`` (optional) is the goal for ``subject / references[i]``.
        """
        if not references:
            raise ValueError("a figure needs at least one reference to be measured against")
        cases = [subject, *references]
        durations = subject.work is None
        if any((c.work is None) != durations for c in references):
            raise ValueError(f"{subject.name}: subject and references must all be rates or all "
                             "durations (work=None), or their ratio means nothing")
        self.progress(f"[{self.area}] {subject.name} vs {', '.join(r.name for r in references)}")
        calls = [self._warm(c, record=c is subject) for c in cases]
        rates: list[list[float]] = [[] for _ in cases]
        for _ in range(self.mode.repeats):
            for i, case in enumerate(cases):
                rates[i].append(case.value(calls[i], _time(case.run, calls[i])))
        out = []
        for i, ref in enumerate(references, start=1):
            target = targets[i - 1] if i - 1 < len(targets) else None
            # Always "times faster than the reference", so that higher is better.
            pairs = zip(rates[0], rates[i], strict=True)
            ratios = [b / a if durations else a / b for a, b in pairs]
            ratio = statistics.median(ratios)
            notes = "; ".join(n for n in (subject.note, ref.note) if n)
            fig = Figure(
                area=self.area,
                name=subject.name,
                unit=subject.unit,
                median=statistics.median(rates[0]),
                min=min(rates[0]),
                max=max(rates[0]),
                reference=ref.name,
                reference_median=statistics.median(rates[i]),
                reference_min=min(rates[i]),
                reference_max=max(rates[i]),
                ratio=ratio,
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                target=target.minimum if target else None,
                target_text=target.text if target else "",
                passed=(ratio >= target.minimum) if target else None,
                repeats=self.mode.repeats,
                note=notes,
                better="lower" if durations else "higher",
            )
            self.figures.append(fig)
            out.append(fig)
        return out

    def first_call(self, name: str, run: Callable[[], T]) -> T:
        """Call ``run`` once and record how long it took as the first call of case ``name``.

        Areas use it for the call that checks a subject against its reference, which is the
        one that compiles (or loads the numba cache), so that the compile time is reported.
        """
        start = time.perf_counter()
        result = run()
        self._record_first(name, time.perf_counter() - start)
        return result

    def _record_first(self, name: str, seconds: float) -> None:
        if not any(w.area == self.area and w.name == name for w in self.warmups):
            self.warmups.append(Warmup(self.area, name, seconds))

    def _warm(self, case: Case, *, record: bool) -> int:
        """First call (recorded for subjects: references compile nothing of ours), then the
        number of calls that makes one timing readable."""
        first = _time(case.run, 1)
        if record:
            self._record_first(case.name, first)
        once = _time(case.run, 1)
        return max(1, math.ceil(self.mode.min_time / max(once, 1e-7)))


class ReferenceMismatch(AssertionError):
    """A reference does not compute what its subject computes, so their ratio means nothing."""


def agree(
    subject: str, reference: str, actual: Any, desired: Any, *, rtol: float = 0.0,
    atol: float = 0.0,
) -> None:
    """Check, before timing, that ``reference`` gives what ``subject`` gives.

    Exact equality when both tolerances are 0; NaN equals NaN. Raises
    :class:`ReferenceMismatch` naming both and the remedy.
    """
    try:
        if rtol == 0.0 and atol == 0.0:
            np.testing.assert_array_equal(actual, desired)
        else:
            np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)
    except AssertionError as exc:
        raise ReferenceMismatch(
            f"{reference!r} disagrees with {subject!r}, so timing one against the other would "
            f"compare different work. If {subject!r} changed its definition on purpose, update "
            f"the reference in the benchmarks area module.\n{exc}"
        ) from None


def _time(run: Callable[[], object], calls: int) -> float:
    """Seconds for ``calls`` calls, with the garbage collector held off as ``timeit`` does."""
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter() - start
    finally:
        if gc_was_on:
            gc.enable()
    return max(elapsed, 1e-9)


def machine_info(mode: Mode) -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, versions, commit, time, mode.

    ``OPENBLAS_CORETYPE`` is reported because it changes NumPy's speed on some processors; it
    is read, never set.
    """
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in ("numpy", "numba", "river", "matplotlib")},
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode.name,
        "repeats": mode.repeats,
        "min_time_s": mode.min_time,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (bad ones exit 2, as argparse does)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    return parse


def add_rounds(bench: Bench, name: str, unit: str, subject: list[float], against: str,
               reference: list[float], target: Target | None, note: str, *,
               lower: bool = False) -> None:
    """A figure from per-round values measured outside :meth:`Bench.compare` (whole
    processes, rounds of a rig): the ratio is "times better than the reference" - for
    ``lower`` figures the reference's value over the subject's - the median of the rounds'."""
    ratios = [r / s if lower else s / r for s, r in zip(subject, reference, strict=True)]
    ratio = statistics.median(ratios)
    bench.add(Figure(
        area=bench.area, name=name, unit=unit,
        median=statistics.median(subject), min=min(subject), max=max(subject),
        reference=against, reference_median=statistics.median(reference),
        reference_min=min(reference), reference_max=max(reference),
        ratio=ratio, ratio_min=min(ratios), ratio_max=max(ratios),
        target=target.minimum if target else None, target_text=target.text if target else "",
        passed=(ratio >= target.minimum) if target else None, repeats=len(subject), note=note,
        better="lower" if lower else "higher",
    ))
