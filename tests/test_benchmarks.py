"""The benchmark suite runs end to end and leaves a complete, well-formed record.

One ``python -m benchmarks all --quick`` run (a subprocess, as a user runs it) is shared by the
tests. Nothing here asserts a speed: the machine is shared and noisy, and targets are reported,
not enforced. What is asserted is that every figure is there, finite and positive, with its
reference, and that the command line behaves.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shopfloor.tools.broker import find_mosquitto

ROOT = Path(__file__).resolve().parents[1]
#: The agent and startup areas need a broker; without one they record a skip instead of figures.
AGENT = find_mosquitto() is not None

FIGURE_KEYS = {
    "key", "area", "name", "unit", "median", "min", "max", "reference", "reference_median",
    "reference_min", "reference_max", "ratio", "ratio_min", "ratio_max", "target",
    "target_text", "passed", "repeats", "note", "better",
}
POSITIVE = ("median", "min", "max", "reference_median", "reference_min", "reference_max",
            "ratio", "ratio_min", "ratio_max")


def _bench(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    # -W error: a warning in the suite (a division by zero in a reference) is a bug.
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "benchmarks", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    done = _bench("all", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return out, results, done.stderr


def test_progress_is_reported_on_stderr(quick: tuple[Path, dict[str, Any], str]) -> None:
    _, _, stderr = quick
    assert "[kernels] frame_stats vs np.sum" in stderr
    assert "[detectors] done in" in stderr
    assert "[agent] done in" in stderr
    assert "[startup] done in" in stderr
    assert "[metrics] done in" in stderr
    assert "[scaling] one core at 50%:" in stderr


def test_machine_info_is_recorded(quick: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = quick
    m = results["machine"]
    assert m["mode"] == "quick"
    assert m["cpu"]
    assert m["cores"] >= 1
    assert m["python"].count(".") == 2
    for package in ("numpy", "numba", "river"):
        assert m["versions"][package], package
    assert m["timestamp"].endswith("+00:00")
    assert m["git_commit"] is None or len(m["git_commit"]) == 40
    assert results["areas"] == ["kernels", "detectors", "agent", "startup", "metrics", "scaling"]
    assert results["elapsed_s"] > 0.0


def test_every_figure_is_complete_finite_and_positive(
    quick: tuple[Path, dict[str, Any], str],
) -> None:
    _, results, _ = quick
    figures = results["figures"]
    assert len({f["key"] for f in figures}) == len(figures), "figure keys must be unique"
    for f in figures:
        assert set(f) == FIGURE_KEYS, f["key"]
        for name in POSITIVE:
            assert math.isfinite(f[name]), (f["key"], name, f[name])
            assert f[name] > 0.0, (f["key"], name, f[name])
        assert f["min"] <= f["median"] <= f["max"], f["key"]
        assert f["reference_min"] <= f["reference_median"] <= f["reference_max"], f["key"]
        assert f["ratio_min"] <= f["ratio"] <= f["ratio_max"], f["key"]
        # Whole-process starts are slow (a cold one compiles): 2 rounds quick.
        assert f["repeats"] == (2 if f["area"] == "startup" else 5), f["key"]
        # Rates (per second) are better higher; durations, CPU and memory lower.
        assert f["better"] == ("higher" if f["unit"].endswith("/s") else "lower"), f["key"]
        if f["target"] is None:
            assert f["passed"] is None
        else:
            assert f["passed"] == (f["ratio"] >= f["target"]), f["key"]
    for w in results["warmup"]:
        assert math.isfinite(w["seconds"]), w
        assert w["seconds"] > 0.0, w


def test_issue_targets_are_all_measured(quick: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = quick
    targets = {f["key"]: f["target"] for f in results["figures"] if f["target"] is not None}
    assert targets["kernels/frame_stats vs np.sum"] == 0.5
    assert targets["kernels/rfft + spectral features vs np.fft.rfft"] == 0.8
    for kernel in ("welford_z", "ewma_chart", "cusum"):
        assert targets[f"kernels/{kernel} (d=1) vs numpy vectorised"] == 10.0
    for kind in ("hst", "oneclass_svm", "gaussian"):
        assert targets[f"detectors/{kind} (river adapter) vs river direct"] == 0.83
    names = {(f["area"], f["name"]) for f in results["figures"]}
    for kind in ("zscore", "ewma", "cusum", "mahalanobis (asset)", "fixed threshold",
                 "quantile threshold", "alarm"):
        assert ("detectors", kind) in names
    assert ("kernels", "FrameFeatures") in names
    assert ("metrics", "render /metrics, 2000 signals") in names
    assert ("metrics", "per message: histograms + a scrape every 15 s") in names
    for signals in (10, 100):  # quick mode; a full run adds 1,000
        assert ("scaling", f"scalar JSON, {signals} signals") in names
        assert ("scaling", f"int16 frames of 2048 at 12 kHz, {signals} signals") in names
    assert ("scaling", "memory per frame pipeline") in names
    if AGENT:
        reference = "bare paho subscriber"
        assert targets[f"agent/scalar JSON, detection on vs {reference}"] == 0.8
        assert targets[f"agent/int16 frames of 1024, features + detection vs {reference}"] == 0.8
        for label in ("p50", "p99", "p99.9"):
            for broker in ("", ", set_tcp_nodelay"):
                assert ("agent", f"latency {label}, publish to anomaly event at 2000 msgs/s"
                        f"{broker}") in names
        assert ("agent", "RSS, scalar JSON saturated") in names
        assert targets["startup/READY, warm Numba cache vs target (1.5 s)"] == 1.0
        assert targets["startup/VmRSS at READY, no River detector vs target (120 MB)"] == 1.0
        assert ("startup", "VmRSS at READY, River detector (hst)") in names
        assert results["skipped"] == [], results["skipped"]
    else:
        assert [s["area"] for s in results["skipped"]] == ["agent", "startup"], results["skipped"]


def test_markdown_table_has_a_row_per_figure(quick: tuple[Path, dict[str, Any], str]) -> None:
    out, results, _ = quick
    text = (out / "results.md").read_text(encoding="utf-8")
    assert "| area | benchmark | median [min - max] | reference |" in text
    rows = [line for line in text.splitlines()
            if line.startswith(tuple(f"| {area} |" for area in results["areas"]))]
    figure_rows = [r for r in rows if r.count("|") >= 9]
    assert len(figure_rows) == len(results["figures"])
    assert results["machine"]["cpu"] in text


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plots_are_real_pngs(quick: tuple[Path, dict[str, Any], str]) -> None:
    out, _, _ = quick
    areas = ("kernels", "detectors", *(("agent", "startup") if AGENT else ()), "metrics",
             "scaling")
    for name in ("ratios.png", *(f"rates_{area}.png" for area in areas)):
        path = out / name
        width, height = _png_size(path)
        assert width >= 400, (name, width)
        assert height >= 200, (name, height)
        assert path.stat().st_size > 10_000, name  # a drawn chart, not a blank canvas


def test_compare_lists_every_figure(
    quick: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    out, results, _ = quick
    done = _bench("kernels", "--quick", "--repeats", "1", "--out", str(tmp_path),
                  "--compare", str(out / "results.json"))
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    for f in results["figures"]:
        assert any(line.startswith(f["key"]) for line in lines), f["key"]
    # Detector figures were not run this time and must say so rather than vanish.
    assert any(line.startswith("detectors/") and "not run" in line for line in lines)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["engines"],
        ["all", "--repeats", "0"],
        ["all", "--repeats", "many"],
        ["all", "--frobnicate"],
        ["all", "--compare", "/nonexistent/results.json"],
    ],
    ids=["no-area", "unknown-area", "zero-repeats", "word-repeats", "unknown-flag",
         "missing-compare"],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    done = _bench(*args, timeout=60.0)
    assert done.returncode == 2, (args, done.stdout, done.stderr)
    assert "usage:" in done.stderr


def test_compare_with_a_file_that_is_not_results_exits_2(tmp_path: Path) -> None:
    bogus = tmp_path / "old.json"
    bogus.write_text(json.dumps({"figures": "none"}), encoding="utf-8")
    done = _bench("kernels", "--quick", "--compare", str(bogus), timeout=60.0)
    assert done.returncode == 2
    assert "figures" in done.stderr


HARNESS_SCRIPT = """
import json
from benchmarks import harness
from benchmarks.harness import Bench, Case, Mode, ReferenceMismatch, Target, agree
from benchmarks.report import compare_lines

# A clock that reads what each case's run() returns as its seconds per call: the ratio
# arithmetic is checked without timing anything.
harness._time = lambda run, calls: run() * calls
bench = Bench(Mode.of(True, 3), progress=lambda msg: None)
bench.area = "startup"
short, long = (lambda: 0.001), (lambda: 0.004)
rate = Case("rate", short, 10.0, unit="items/s")
duration = Case("fast start", short, None, unit="s")
try:
    bench.compare(duration, [rate])
except ValueError:
    mixed = "refused"
fig, = bench.compare(duration, [Case("slow start", long, None, unit="s")], [Target(1.5, "t")])
try:
    agree("kernel", "reference", [1.0, 2.0], [1.0, 2.5], rtol=1e-9)
except ReferenceMismatch as exc:
    mismatch = str(exc)
doc = {"machine": {}, "figures": [fig.as_dict()]}
old = {"machine": {}, "figures": [dict(fig.as_dict(), median=fig.median * 2)]}
print(json.dumps({"fig": fig.as_dict(), "mixed": mixed, "mismatch": mismatch,
                  "compare": compare_lines(doc, old)}))
"""


def test_durations_compare_as_times_faster_and_mismatches_are_named() -> None:
    done = subprocess.run([sys.executable, "-W", "error", "-c", HARNESS_SCRIPT], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    fig = out["fig"]
    assert fig["better"] == "lower"
    assert fig["unit"] == "s"
    assert fig["key"] == "startup/fast start vs slow start"
    # A duration's ratio is the reference's time over the subject's: 4 ms / 1 ms.
    assert fig["ratio"] == pytest.approx(4.0)
    assert fig["median"] == pytest.approx(0.001)
    assert fig["reference_median"] == pytest.approx(0.004)
    assert fig["passed"] is True
    assert out["mixed"] == "refused"
    assert "'reference' disagrees with 'kernel'" in out["mismatch"]
    # The old run took twice as long per call: the new one is twice as fast.
    assert out["compare"][-1].split()[-2] == "2.000"
