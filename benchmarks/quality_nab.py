"""NAB (Numenta Anomaly Benchmark) through shopfloor, scored by our own NAB scorer.

Data: ``<data>/nab/data/<folder>/<file>.csv`` (``timestamp,value``) and the label windows in
``<data>/nab/labels/combined_windows.json`` (see the data folder's README). Each file is one
scalar signal through a fresh :class:`~shopfloor.scoring.pipeline.Plant` with shopfloor's default
configuration (``default_config([column], asset)``), the rows' timestamps as signal times.
Two outputs are scored as NAB detectors:

``shopfloor-likelihood``
    The monitor's per-row ``likelihood`` as NAB's ``anomaly_score``. Rows without one (NaN:
    before the signal has a likelihood) score 0. If the likelihood is NaN on every row of the
    corpus (the pipeline does not compute it yet), this detector falls back to the alarm's
    rising edge, and the report says so.
``shopfloor-alarm``
    1.0 on the rows where the alarm is raised, 0 elsewhere: what an operator is told. It needs
    no threshold and is scored at threshold 1 (the sweep's choice is shown beside it).

The scorer follows the reference ``shared/tools/nab_score.py`` (itself written from NAB's paper
and README) detail for detail, in small pure functions, vectorised:

- probation: rows ``i < min(floor(0.15 n), 750)`` of a file are not scored (a window that lies
  in it still counts, and can then only be missed);
- a label window ``[start, end]`` covers the rows whose timestamps lie in it (inclusive); a
  window with no rows is dropped; a row in several windows belongs to the first listed;
- the first detection in a window scores ``A_tp · σ(-(r - i + 1) / (r - l + 1)) / σ(-1)``
  with NAB's scaled sigmoid ``σ(y) = 2 / (1 + e^(5y)) - 1`` (``-1`` for ``y > 3``): ``A_tp``
  at the window's first row, falling towards 0 at its last; later detections in the window
  are ignored;
- a detection outside every window scores ``A_fp · σ(|r_prev - i| / (r_prev - l_prev))``,
  where ``prev`` is the last listed window that ended before the row: cheap right after a
  window, ``-A_fp`` far from it, and ``-A_fp`` when no window came before;
- a missed window scores ``-A_fn``;
- files are pooled and one threshold per detector and profile is chosen on the corpus itself
  (that is how NAB is defined): the one that maximises the raw total, ties to the higher;
  normalised ``100 · (S - S_null) / (S_perfect - S_null)``, ``S_null = -A_fn · windows``,
  ``S_perfect = A_tp · windows``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shopfloor.scoring.pipeline import Plant
from shopfloor.tools.replay import default_config

__all__ = [
    "ALARM",
    "LIKELIHOOD",
    "PROFILES",
    "PUBLISHED",
    "FileAlarms",
    "FileEvents",
    "NabFile",
    "NabProfile",
    "NabReport",
    "NabRun",
    "NabScore",
    "alarm_counts",
    "best_threshold",
    "detector_scores",
    "file_events",
    "nab_files",
    "nab_markdown",
    "optimised",
    "parse_reference_output",
    "perfect_scores",
    "probation_rows",
    "read_labels",
    "read_nab_csv",
    "reference_missing",
    "reference_python",
    "reference_scores",
    "reference_tool",
    "run_file",
    "run_nab",
    "scaled_sigmoid",
    "score_at",
    "window_rows",
    "write_scores",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

LIKELIHOOD = "shopfloor-likelihood"
ALARM = "shopfloor-alarm"
ASSET = "nab"
COLUMN = "value"
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class NabProfile:
    """Weights of one NAB profile (all positive; the signs are in the formulas)."""

    tp: float
    fp: float
    fn: float


#: NAB's three profiles, by the names the report uses (the reference calls them standard,
#: reward_low_FP_rate and reward_low_FN_rate).
PROFILES: dict[str, NabProfile] = {
    "standard": NabProfile(1.0, 0.11, 1.0),
    "low FP": NabProfile(1.0, 0.22, 1.0),
    "low FN": NabProfile(1.0, 0.11, 2.0),
}
_REFERENCE_NAMES = {"standard": "standard", "reward_low_FP_rate": "low FP",
                    "reward_low_FN_rate": "low FN"}
#: Published results: (who, corpus, standard, low FP, low FN); None where not published.
PUBLISHED: tuple[tuple[str, str, float, float | None, float | None], ...] = (
    ("ARTime", "whole corpus (58 files)", 74.85, 65.15, 80.36),
    ("Numenta HTM", "whole corpus (58 files)", 70.10, 63.21, 74.32),
    ("windowed Gaussian", "whole corpus (58 files)", 39.65, 20.87, 47.41),
    ("random (about)", "whole corpus (58 files)", 16.8, 5.8, 25.9),
    ("ARTime", "these 35 files (the issue)", 67.9, None, None),
    ("Numenta HTM", "these 35 files (the issue)", 66.6, None, None),
    ("windowed Gaussian", "these 35 files (the issue)", 22.0, None, None),
)
#: The anchor for the figures: Numenta HTM's standard score on the same 35 files.
ANCHOR = ("Numenta HTM on these 35 files (standard)", 66.6)
#: Files of the quick run: one of each kind, with and without windows.
QUICK_NAB = (
    "artificialNoAnomaly/art_daily_small_noise.csv",
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv",
    "realKnownCause/machine_temperature_system_failure.csv",
    "realKnownCause/nyc_taxi.csv",
)


# --- reading -------------------------------------------------------------------------------


def _micros(stamp: str) -> int:
    """A NAB timestamp (``YYYY-MM-DD hh:mm:ss[.ffffff]``, UTC) as integer microseconds.

    Integers, so that "inside a window" is an exact comparison, as the reference's
    datetime64 comparison is.
    """
    return (datetime.fromisoformat(stamp.strip()) - _EPOCH) // _MICROSECOND


def read_nab_csv(path: Path) -> tuple[list[str], I64, F64]:
    """A NAB data file: its timestamp strings, those as microseconds, and the values."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected the header timestamp,value; got {header}")
        rows = [r for r in reader if r]
    stamps = [r[0] for r in rows]
    micros = np.array([_micros(s) for s in stamps], dtype=np.int64)
    values = np.array([float(r[1]) for r in rows], dtype=np.float64)
    return stamps, micros, values


def read_labels(path: Path) -> dict[str, list[tuple[int, int]]]:
    """``combined_windows.json``: file (``folder/name.csv``) -> windows in microseconds."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: [(_micros(a), _micros(b)) for a, b in windows]
            for name, windows in raw.items()}


@dataclass(frozen=True, slots=True)
class NabFile:
    """One NAB series with its label windows (microseconds since the epoch)."""

    name: str  # folder/file.csv, as in the labels
    stamps: list[str]
    micros: I64
    values: F64
    windows: list[tuple[int, int]]

    @property
    def times(self) -> F64:
        """Signal times in epoch seconds (what the pipeline takes)."""
        out: F64 = self.micros / 1e6
        return out


def nab_files(root: Path, only: Sequence[str] | None = None) -> list[NabFile]:
    """The labelled files under ``root`` (``root/data``, ``root/labels``), in label order.

    Sorted by name, as the reference scorer iterates them; ``only`` keeps those names.
    """
    labels_path = root / "labels" / "combined_windows.json"
    if not labels_path.is_file():
        return []
    labels = read_labels(labels_path)
    out = []
    for name in sorted(labels):
        path = root / "data" / name
        if (only is not None and name not in only) or not path.is_file():
            continue
        stamps, micros, values = read_nab_csv(path)
        out.append(NabFile(name, stamps, micros, values, labels[name]))
    return out


# --- the scorer ----------------------------------------------------------------------------


def scaled_sigmoid(y: ArrayLike) -> F64:
    """NAB's scaled sigmoid ``2 / (1 + e^(5y)) - 1``, and exactly -1 for ``y > 3``."""
    v = np.asarray(y, dtype=np.float64)
    with np.errstate(over="ignore"):  # e^(5y) overflows to inf for huge y: the limit, -1
        s = 2.0 / (1.0 + np.exp(5.0 * v)) - 1.0
    out: F64 = np.where(v > 3.0, -1.0, s)
    return out


def probation_rows(n: int) -> int:
    """Rows at the start of an ``n``-row file that are not scored: 15 %, at most 750."""
    return min(math.floor(0.15 * n), 750)


def window_rows(micros: I64, windows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each window as (first row, last row) of the rows whose time lies in it, inclusive.

    Windows with no rows are dropped: they are neither detected nor missed.
    """
    out = []
    for start, end in windows:
        idx = np.flatnonzero((micros >= start) & (micros <= end))
        if idx.size:
            out.append((int(idx[0]), int(idx[-1])))
    return out


@dataclass(frozen=True, slots=True)
class FileEvents:
    """The scored rows of one file (after probation), ready for any threshold and profile."""

    scores: F64
    window: NDArray[np.intp]  # index into the file's windows, -1 outside every window
    tp: F64  # unweighted true-positive value of a detection in a window (0 outside)
    fp: F64  # unweighted false-positive value of a detection outside windows (0 inside)
    windows: int  # label windows with rows, probation or not


def file_events(scores: ArrayLike, micros: I64, windows: Sequence[tuple[int, int]]) -> FileEvents:
    """Per scored row: its score, window, and the value a detection there would have."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != micros.shape:
        raise ValueError(f"one score per row: {s.shape} scores for {micros.shape} rows")
    if not np.isfinite(s).all():
        raise ValueError("NAB scores must be finite (the threshold sweep orders them)")
    lims = window_rows(micros, windows)
    rows = np.arange(probation_rows(s.size), s.size)
    window = np.full(rows.size, -1, dtype=np.intp)
    for k in reversed(range(len(lims))):  # reversed: a row in several windows keeps the first
        lo, hi = lims[k]
        window[(rows >= lo) & (rows <= hi)] = k
    left = np.array([lo for lo, _ in lims], dtype=np.float64)
    right = np.array([hi for _, hi in lims], dtype=np.float64)
    inside = window >= 0
    tp = np.zeros(rows.size)
    w = window[inside]
    position = -(right[w] - rows[inside] + 1) / (right[w] - left[w] + 1)
    tp[inside] = scaled_sigmoid(position) / scaled_sigmoid(-1.0)
    # The window that ended last before each row (in label order, as the reference).
    prev = np.full(rows.size, -1, dtype=np.intp)
    for k, (_, hi) in enumerate(lims):
        prev[rows > hi] = k
    fp = np.zeros(rows.size)
    outside = ~inside
    fp[outside & (prev < 0)] = -1.0
    after = outside & (prev >= 0)
    p = prev[after]
    width = right[p] - left[p]
    with np.errstate(divide="ignore"):
        # A one-row window has width 0 (the reference divides by zero there): every row
        # after it is infinitely far in its units, so it costs the full -A_fp.
        distance = np.where(width > 0, np.abs(right[p] - rows[after]) / width, np.inf)
    fp[after] = scaled_sigmoid(distance)
    return FileEvents(s[rows], window, tp, fp, len(lims))


def _pool(files: Sequence[FileEvents]) -> tuple[F64, NDArray[np.intp], F64, F64, int]:
    """All files' rows in one corpus, window ids made unique across files."""
    ids, offset = [], 0
    for f in files:
        ids.append(np.where(f.window >= 0, f.window + offset, -1))
        offset += f.windows
    if not files:
        return np.empty(0), np.empty(0, dtype=np.intp), np.empty(0), np.empty(0), 0
    return (np.concatenate([f.scores for f in files]), np.concatenate(ids),
            np.concatenate([f.tp for f in files]), np.concatenate([f.fp for f in files]), offset)


def best_threshold(files: Sequence[FileEvents], profile: NabProfile) -> float:
    """The threshold with the highest raw total over the corpus (``inf``: detect nothing).

    Sweeps every distinct score from the highest down, as the reference does: each row's
    detection changes the total by its FP value, or (first in its window) by
    ``A_fn + A_tp · tp``, or (earlier than the window's best so far) by the tp gain. The
    highest threshold wins a tie, and ``inf`` (the null detector) wins unless beaten.
    """
    scores, window, tp, fp, n_windows = _pool(files)
    null = -profile.fn * n_windows
    if scores.size == 0:
        return math.inf
    order = np.argsort(-scores, kind="stable")
    s, w, tp, fp = scores[order], window[order], tp[order], fp[order]
    delta = np.where(w < 0, profile.fp * fp, 0.0)
    inside = np.flatnonzero(w >= 0)
    grouped = inside[np.argsort(w[inside], kind="stable")]  # per window, in sweep order
    for group in np.split(grouped, np.flatnonzero(np.diff(w[grouped])) + 1):
        if group.size == 0:
            continue
        best = np.maximum.accumulate(tp[group])
        gain = profile.tp * np.diff(best, prepend=best[0])
        gain[0] = profile.fn + profile.tp * best[0]
        delta[group] = gain
    # Starting the running sum from the null total adds in the reference's order.
    totals = np.cumsum(np.concatenate(([null], delta)))[1:]
    ends = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last row of each tie
    k = int(np.argmax(totals[ends]))
    return float(s[ends[k]]) if totals[ends[k]] > null else math.inf


@dataclass(frozen=True, slots=True)
class NabScore:
    """One detector's corpus score for one profile at one threshold."""

    score: float  # normalised: 0 = null detector, 100 = perfect
    threshold: float
    raw: float
    null: float
    perfect: float
    windows: int
    detected: int  # windows with a detection
    false_positives: int  # detections outside windows


def score_at(files: Sequence[FileEvents], profile: NabProfile, threshold: float) -> NabScore:
    """The corpus score when a row with ``score >= threshold`` is a detection."""
    scores, window, tp, fp, n_windows = _pool(files)
    if n_windows == 0:
        raise ValueError("the corpus has no label windows: NAB's normalisation is undefined")
    detect = scores >= threshold
    best = np.full(n_windows, -np.inf)
    hit = detect & (window >= 0)
    np.maximum.at(best, window[hit], tp[hit])
    found = np.isfinite(best)
    false = detect & (window < 0)
    raw = (profile.fp * float(fp[false].sum()) + profile.tp * float(best[found].sum())
           - profile.fn * int((~found).sum()))
    null, perfect = -profile.fn * n_windows, profile.tp * n_windows
    return NabScore(score=100.0 * (raw - null) / (perfect - null), threshold=threshold, raw=raw,
                    null=null, perfect=perfect, windows=n_windows, detected=int(found.sum()),
                    false_positives=int(false.sum()))


def optimised(files: Sequence[FileEvents], profile: NabProfile) -> NabScore:
    """NAB's score: at the corpus's best threshold for this profile."""
    return score_at(files, profile, best_threshold(files, profile))


# --- shopfloor as a NAB detector -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NabRun:
    """What the pipeline said about one file, per row."""

    name: str
    likelihood: F64
    raised: NDArray[np.bool_]


def run_file(f: NabFile) -> NabRun:
    """One file as one scalar signal through a fresh plant with the default configuration."""
    plant = Plant(default_config([COLUMN], ASSET))
    (sid,) = plant.signals
    batches, _ = plant.process({sid: f.values}, f.times)
    result = batches[sid].result
    return NabRun(f.name, result.likelihood.copy(), result.raised.copy())


def detector_scores(runs: Sequence[NabRun]) -> tuple[dict[str, list[F64]], str]:
    """Each detector's anomaly scores per file, and a note on how the likelihood was used."""
    alarm = [r.raised.astype(np.float64) for r in runs]
    rows = sum(r.likelihood.size for r in runs)
    missing = sum(int(np.isnan(r.likelihood).sum()) for r in runs)
    if rows and missing == rows:
        note = ("the pipeline's likelihood is NaN on every row (not computed yet): "
                f"{LIKELIHOOD} falls back to the alarm's rising edge, so it equals {ALARM}")
        return {LIKELIHOOD: [a.copy() for a in alarm], ALARM: alarm}, note
    likelihood = [np.clip(np.nan_to_num(r.likelihood, nan=0.0), 0.0, 1.0) for r in runs]
    # A Gaussian tail probability rounds to exactly 1.0 in float64 beyond ~8 sigma: those rows
    # tie, and no threshold can rank them (NAB's HTM entry scores a log of 1 - likelihood).
    saturated = sum(int((s == 1.0).sum()) for s in likelihood)
    note = (f"likelihood as computed by the pipeline; {missing} of {rows} rows had none "
            f"(NaN) and score 0; {saturated} rows are exactly 1.0 (saturated, so tied)")
    return {LIKELIHOOD: likelihood, ALARM: alarm}, note


def perfect_scores(f: NabFile) -> F64:
    """The sanity detector: 1.0 on each window's first scored row, 0 elsewhere."""
    out = np.zeros(f.values.size)
    first = probation_rows(f.values.size)
    for lo, hi in window_rows(f.micros, f.windows):
        if max(lo, first) <= hi:
            out[max(lo, first)] = 1.0
    return out


def write_scores(folder: Path, f: NabFile, scores: F64) -> Path:
    """``folder/<folder>/<file>.csv`` with NAB's ``timestamp`` and ``anomaly_score`` columns.

    Not the values: the data's licence keeps it out of anything we write (the reference
    reads only these two columns). ``repr`` of each float, so that the reference reads
    exactly the scores we scored.
    """
    if scores.shape != (len(f.stamps),):
        raise ValueError(f"{f.name}: {scores.shape} scores for {len(f.stamps)} rows")
    path = folder / f.name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["timestamp", "anomaly_score"])
        for stamp, s in zip(f.stamps, scores.tolist(), strict=True):
            w.writerow([stamp, repr(s)])
    return path


@dataclass(frozen=True, slots=True)
class FileAlarms:
    """One file's alarms against its windows, for the per-file table."""

    name: str
    rows: int
    windows: int  # windows with rows
    raised: int  # alarms raised anywhere, probation included
    raised_in_windows: int
    windows_alarmed: int  # windows with an alarm raised on a scored row


def alarm_counts(f: NabFile, raised: NDArray[np.bool_]) -> FileAlarms:
    """Where one file's alarms fell: in windows, outside, and how many windows got one."""
    inside = np.zeros(raised.size, dtype=np.bool_)
    lims = window_rows(f.micros, f.windows)
    first = probation_rows(raised.size)
    alarmed = 0
    for lo, hi in lims:
        inside[lo: hi + 1] = True
        alarmed += bool(raised[max(lo, first): hi + 1].any())
    return FileAlarms(f.name, raised.size, len(lims), int(raised.sum()),
                      int((raised & inside).sum()), alarmed)


# --- the reference scorer ------------------------------------------------------------------


def reference_python() -> str:
    """The interpreter for the reference (it needs pandas): ``NAB_SCORE_PYTHON`` or ours."""
    return os.environ.get("NAB_SCORE_PYTHON") or sys.executable


def reference_missing(tool: Path, python: str) -> str | None:
    """Why the reference scorer cannot run here, or None when it can."""
    if not tool.is_file():
        return f"the reference scorer {tool} is not there"
    probe = subprocess.run([python, "-c", "import numpy, pandas"], capture_output=True,
                           check=False, timeout=120)
    if probe.returncode != 0:
        return (f"{python} cannot import numpy and pandas, which the reference scorer needs "
                "(set NAB_SCORE_PYTHON to an interpreter that has them)")
    return None


def parse_reference_output(text: str) -> dict[str, tuple[float, float, int]]:
    """``standard: 12.34 (threshold 0.5000, files 35)`` lines -> profile: (score, thr, files)."""
    out = {}
    pattern = re.compile(r"^(\S+): (\S+) \(threshold (\S+), files (\d+)\)$")
    for line in text.splitlines():
        m = pattern.match(line.strip())
        if m and m.group(1) in _REFERENCE_NAMES:
            out[_REFERENCE_NAMES[m.group(1)]] = (float(m.group(2)), float(m.group(3)),
                                                 int(m.group(4)))
    return out


def reference_scores(tool: Path, python: str, data_dir: Path, labels: Path,
                     scores_dir: Path) -> dict[str, tuple[float, float, int]]:
    """Run the reference scorer as a subprocess on a folder of score files."""
    done = subprocess.run([python, str(tool), str(data_dir), str(labels), str(scores_dir)],
                          capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    parsed = parse_reference_output(done.stdout)
    if set(parsed) != set(PROFILES):
        raise RuntimeError(f"{tool}: unexpected output {done.stdout!r}")
    return parsed


# --- the benchmark -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NabReport:
    """What the NAB part measured."""

    files: list[str]
    rows: int
    scored_rows: int
    windows: int
    likelihood_note: str
    # detector -> profile -> score at the corpus's best threshold (NAB's definition)
    optimised: dict[str, dict[str, NabScore]]
    # the alarm output at its only meaningful threshold, 1 (a raised row is a detection)
    alarm_fixed: dict[str, NabScore]
    # the reference scorer's (score, threshold, files) per detector and profile, or why not
    reference: dict[str, dict[str, tuple[float, float, int]]]
    reference_note: str
    per_file: list[FileAlarms]

    @property
    def raised(self) -> int:
        """Alarms raised over the corpus."""
        return sum(f.raised for f in self.per_file)

    @property
    def raised_in_windows(self) -> int:
        """Alarms raised on rows inside label windows."""
        return sum(f.raised_in_windows for f in self.per_file)


def run_nab(root: Path, only: Sequence[str] | None, out: Path | None,
            progress: Callable[[str], None], tool: Path | None = None) -> NabReport | None:
    """Run every labelled file under ``root`` (``nab/``), score both detectors, and check the
    scores with the reference scorer ``tool`` when it can run. None without files.

    Score files go to ``out/nab-scores/<detector>/`` (a temporary folder without ``out``).
    """
    files = nab_files(root, only)
    if not files:
        return None
    runs = []
    for f in files:
        runs.append(run_file(f))
    scores, note = detector_scores(runs)
    scores["perfect (sanity)"] = [perfect_scores(f) for f in files]
    scores["null (sanity)"] = [np.zeros(f.values.size) for f in files]
    events = {name: [file_events(s, f.micros, f.windows) for s, f in zip(per, files, strict=True)]
              for name, per in scores.items()}
    optimised_scores = {name: {p: optimised(ev, prof) for p, prof in PROFILES.items()}
                        for name, ev in events.items()}
    alarm_fixed = {p: score_at(events[ALARM], prof, 1.0) for p, prof in PROFILES.items()}
    per_file = [alarm_counts(f, r.raised) for f, r in zip(files, runs, strict=True)]
    reference: dict[str, dict[str, tuple[float, float, int]]] = {}
    python = reference_python()
    why_not = reference_missing(tool, python) if tool is not None else "no reference scorer given"
    with tempfile.TemporaryDirectory(prefix="nab-scores-") as tmp:
        folder = (out / "nab-scores") if out is not None else Path(tmp)
        for name in (LIKELIHOOD, ALARM, "perfect (sanity)"):
            target = folder / name.split(" ")[0]
            for f, s in zip(files, scores[name], strict=True):
                write_scores(target, f, s)
            if why_not is None and tool is not None:
                progress(f"NAB: reference scorer on {name}")
                reference[name] = reference_scores(tool, python, root / "data",
                                                   root / "labels" / "combined_windows.json",
                                                   target)
    reference_note = (f"reference scorer {tool} run with {python}" if why_not is None
                      else f"reference scorer not run: {why_not}")
    if out is not None:
        reference_note += f"; the score files are in {out / 'nab-scores'}"
    return NabReport(
        files=[f.name for f in files],
        rows=sum(f.values.size for f in files),
        scored_rows=sum(e.scores.size for e in events[ALARM]),
        windows=sum(e.windows for e in events[ALARM]),
        likelihood_note=note,
        optimised=optimised_scores,
        alarm_fixed=alarm_fixed,
        reference=reference,
        reference_note=reference_note,
        per_file=per_file,
    )


def _cell(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _thr(x: float) -> str:
    return "never" if math.isinf(x) else f"{x:.4g}"


def nab_markdown(report: NabReport, folder: str = "nab") -> list[str]:
    """The NAB section of ``quality.md`` (also printed to the console)."""
    lines = [
        "## NAB (Numenta Anomaly Benchmark)", "",
        f"{len(report.files)} files of `{folder}/data` ({report.rows} rows, {report.scored_rows} "
        f"scored after probation, {report.windows} label windows). Each file is one scalar "
        "signal through a fresh plant with shopfloor's default configuration, timestamps as "
        "signal times. Scored by our NAB scorer (benchmarks/quality_nab.py). NAB's protocol "
        "picks the best threshold per detector and profile on the corpus itself - that is how "
        f"NAB is defined; `{ALARM}` (1 on the row an alarm is raised) has no threshold to "
        "pick and is scored at 1 (detections = raised alarms).", "",
        f"- {LIKELIHOOD}: {report.likelihood_note}.",
        f"- Alarms raised over the corpus: {report.raised}, of which {report.raised_in_windows} "
        "inside label windows (only the first in a window counts).", "",
        "| detector | NAB standard | NAB low FP | NAB low FN | threshold (std / low FP / low FN) "
        "| windows detected (std) | detections outside windows (std) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]

    def row(label: str, by: Mapping[str, NabScore]) -> str:
        s = by["standard"]
        thresholds = " / ".join(_thr(by[p].threshold) for p in PROFILES)
        return (f"| {label} | {by['standard'].score:.2f} | {by['low FP'].score:.2f} | "
                f"{by['low FN'].score:.2f} | {thresholds} | {s.detected} / {s.windows} | "
                f"{s.false_positives} |")

    lines.append(row(f"{LIKELIHOOD} (best threshold)", report.optimised[LIKELIHOOD]))
    lines.append(row(f"{ALARM} (threshold 1: raised alarms)", report.alarm_fixed))
    lines.append(row(f"{ALARM} (best threshold, for comparison)", report.optimised[ALARM]))
    for name in ("null (sanity)", "perfect (sanity)"):
        lines.append(row(name, report.optimised[name]))
    for who, corpus, std, low_fp, low_fn in PUBLISHED:
        lines.append(f"| {who} (published, {corpus}) | {std:.2f} | {_cell(low_fp)} | "
                     f"{_cell(low_fn)} | | | |")
    lines += ["", "The perfect detector flags each window's first scored row; it falls short "
              "of 100 only where a window lies in a file's probation (the first 15 %, at most "
              "750 rows), which no detector can score.", ""]
    lines += ["### Alarms per file", "",
              "Raised alarms (probation included) and label windows per file; a window counts "
              "as alarmed when an alarm is raised on one of its scored rows.", "",
              "| file | rows | windows | windows alarmed | alarms raised | of which in windows |",
              "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {a.name} | {a.rows} | {a.windows} | {a.windows_alarmed} | {a.raised} | "
              f"{a.raised_in_windows} |" for a in report.per_file]
    lines += [""]
    lines += ["### Our scorer against the reference scorer", "", f"{report.reference_note}.", ""]
    if report.reference:
        lines += ["| detector | profile | ours | reference | ours: threshold | reference: "
                  "threshold |", "|---|---|---:|---:|---:|---:|"]
        for name, by in report.reference.items():
            for p, (ref, thr, _) in by.items():
                ours = report.optimised[name][p]
                lines.append(f"| {name} | {p} | {ours.score:.2f} | {ref:.2f} | "
                             f"{_thr(ours.threshold)} | {_thr(thr)} |")
        lines.append("")
    return lines


def reference_tool(data: Path) -> Path:
    """``<data>/../tools/nab_score.py``, as the data folder's README names it."""
    return data.parent / "tools" / "nab_score.py"
