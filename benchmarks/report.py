"""What a run leaves behind: ``results.json``, ``results.md``, PNG plots, and ``--compare``.

The JSON is the record (machine, then every figure); the markdown table and the plots are read
from it, so they never disagree with it. Plots draw on matplotlib's Agg canvas directly: no
pyplot, so no global figure state and no display needed.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA",
    "compare_lines",
    "load_results",
    "markdown",
    "write_json",
    "write_markdown",
    "write_plots",
]

SCHEMA = 1

#: Keys every figure in results.json has.
FIGURE_KEYS = (
    "key", "area", "name", "unit", "median", "min", "max", "reference", "reference_median",
    "reference_min", "reference_max", "ratio", "ratio_min", "ratio_max", "target",
    "target_text", "passed", "repeats", "note", "better",
)


def write_json(results: dict[str, Any], out: Path) -> Path:
    """Write ``results`` to ``out/results.json``."""
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def load_results(path: Path) -> dict[str, Any]:
    """Read a results.json, raising ValueError if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path} as benchmark results: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("figures"), list):
        raise ValueError(f"{path} has no 'figures' list: is it a benchmarks results.json?")
    for fig in data["figures"]:
        if not isinstance(fig, dict) or not {"key", "median", "ratio"} <= fig.keys():
            raise ValueError(f"{path}: a figure lacks key, median or ratio: {fig!r}")
    return data


def si(value: float) -> str:
    """Three significant digits with an SI prefix: 1.23 G, 456 k, 7.89."""
    if not math.isfinite(value) or value == 0.0:
        return f"{value:g}"
    exp = min(max(math.floor(math.log10(abs(value)) / 3), -3), 4)
    prefix = {-3: "n", -2: "µ", -1: "m", 0: "", 1: "k", 2: "M", 3: "G", 4: "T"}[exp]
    return f"{value / 1000.0**exp:.3g} {prefix}".rstrip()


def _verdict(fig: dict[str, Any]) -> str:
    if fig["passed"] is None:
        return ""
    return "met" if fig["passed"] else "**missed**"


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: a machine line, the figures table, warm-up times, skips."""
    m = results["machine"]
    v = m["versions"]
    lines = [
        f"Benchmarks ({m['mode']}, {m['repeats']} repeats) on {m['cpu']}, {m['cores']} cores; "
        f"Python {m['python']}, numpy {v['numpy']}, numba {v['numba']}, river {v['river']}; "
        f"commit {(m['git_commit'] or 'unknown')[:10]}{' (dirty)' if m['git_dirty'] else ''}, "
        f"{m['timestamp']}, {results['elapsed_s']:.0f} s.",
        "",
        "Figures are median [min - max] over the repeats. Ratio = how many times faster the "
        "subject is than its reference (subject rate / reference rate; for durations in s, "
        "reference time / subject time), the median of per-round ratios, subject and reference "
        "interleaved in each round. Targets are minimum ratios.",
        "",
        "| area | benchmark | median [min - max] | reference | reference median [min - max] "
        "| ratio | target | |",
        "|---|---|---|---|---|---:|---|---|",
    ]
    for f in results["figures"]:
        unit = f["unit"]
        value = f"{si(f['median'])} {unit} [{si(f['min'])} - {si(f['max'])}]"
        ref = f"{si(f['reference_median'])} [{si(f['reference_min'])} - {si(f['reference_max'])}]"
        target = f">= {f['target']:g} ({f['target_text']})" if f["target"] is not None else ""
        lines.append(
            f"| {f['area']} | {f['name']} | {value} | {f['reference']} | {ref} "
            f"| {f['ratio']:.3g} | {target} | {_verdict(f)} |"
        )
    notes = [f for f in results["figures"] if f["note"]]
    if notes:
        lines += ["", "Notes:", ""]
        seen: set[str] = set()
        for f in notes:
            text = f"- {f['area']}/{f['name']} vs {f['reference']}: {f['note']}"
            if text not in seen:
                seen.add(text)
                lines.append(text)
    first = sum(w["seconds"] for w in results["warmup"])
    lines += ["", f"First calls of the subjects (numba compile or cache load, plus one run; "
              f"{first:.1f} s in all):", "",
              "| area | case | seconds |", "|---|---|---:|"]
    lines += [f"| {w['area']} | {w['name']} | {w['seconds']:.3f} |" for w in results["warmup"]]
    if results["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['area']}/{s['name']}: {s['reason']}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], out: Path) -> Path:
    """Write :func:`markdown` to ``out/results.md``."""
    path = out / "results.md"
    path.write_text(markdown(results), encoding="utf-8")
    return path


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """``ratios.png``: every ratio (log scale) with its target; ``rates_<area>.png`` per area."""
    figures = results["figures"]
    if not figures:
        return []
    paths = [_plot_ratios(figures, out / "ratios.png")]
    for area in dict.fromkeys(f["area"] for f in figures):
        paths.append(_plot_rates([f for f in figures if f["area"] == area], area,
                                 out / f"rates_{area}.png"))
    return paths


def _canvas(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _plot_ratios(figures: Sequence[dict[str, Any]], path: Path) -> Path:
    # Long names are cut (the tables carry them whole): a label wider than the figure
    # collapses matplotlib's layout.
    labels = [textwrap.shorten(f"{f['area']}/{f['name']} vs {f['reference']}", 110,
                               placeholder=" ...") for f in figures]
    fig, ax = _canvas(11.0, 1.2 + 0.32 * len(figures))
    ys = list(range(len(figures)))[::-1]
    colours = ["tab:green" if f["passed"] else "tab:red" if f["passed"] is False else "tab:blue"
               for f in figures]
    ratios = [f["ratio"] for f in figures]
    errs = [[f["ratio"] - f["ratio_min"] for f in figures],
            [f["ratio_max"] - f["ratio"] for f in figures]]
    ax.barh(ys, ratios, color=colours, xerr=errs, capsize=2, height=0.7)
    for y, f in zip(ys, figures, strict=True):
        if f["target"] is not None:
            ax.plot([f["target"]] * 2, [y - 0.45, y + 0.45], color="black", linewidth=2.5)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel("times faster than the reference (log); black bar = target; "
                  "green met, red missed, blue no target")
    ax.set_title(f"shopfloor benchmarks ({figures[0]['repeats']} repeats, min-max whiskers)")
    fig.savefig(path)
    return path


def _plot_rates(figures: Sequence[dict[str, Any]], area: str, path: Path) -> Path:
    # One row per subject and per distinct reference, so a reference shared by several
    # figures is drawn once.
    rows: dict[str, tuple[float, float, float, bool]] = {}
    for f in figures:
        rows.setdefault(f"{f['name']} ({f['unit']})", (f["median"], f["min"], f["max"], True))
        rows.setdefault(f"  {f['reference']} [ref of {f['name']}]",
                        (f["reference_median"], f["reference_min"], f["reference_max"], False))
    fig, ax = _canvas(11.0, 1.2 + 0.3 * len(rows))
    ys = list(range(len(rows)))[::-1]
    vals = list(rows.values())
    ax.barh(ys, [v[0] for v in vals], height=0.7,
            color=["tab:orange" if v[3] else "tab:grey" for v in vals],
            xerr=[[v[0] - v[1] for v in vals], [v[2] - v[0] for v in vals]], capsize=2)
    ax.set_xscale("log")
    ax.set_yticks(ys, list(rows), fontsize=8)
    ax.set_xlabel("median with min-max (log; units in the labels); orange = shopfloor")
    ax.set_title(f"{area}: figures and their references")
    fig.savefig(path)
    return path


def compare_lines(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """One line per figure of either run: speed new/old and ratio-to-reference new/old.

    The ratio-to-reference change is the steadier regression signal across machines and
    days, because the reference absorbed the same conditions as the subject.
    """
    old_by_key = {f["key"]: f for f in old["figures"]}
    new_keys = {f["key"] for f in new["figures"]}
    om, nm = old.get("machine", {}), new["machine"]
    lines = [
        f"compare: new {nm.get('git_commit', '?')!s:.10} ({nm.get('mode')}) vs old "
        f"{om.get('git_commit', '?')!s:.10} ({om.get('mode')}, {om.get('timestamp')})",
        f"{'figure':<70} {'speed new/old':>13} {'ratio new/old':>13}",
    ]
    for f in new["figures"]:
        o = old_by_key.get(f["key"])
        if o is None:
            lines.append(f"{f['key']:<70} {'new':>13} {'':>13}")
            continue
        # Speed: > 1 is faster now, whether the figure is a rate or a duration.
        faster = f.get("better", "higher") == "higher"
        num, den = (f["median"], o["median"]) if faster else (o["median"], f["median"])
        rate = num / den if den else math.nan
        ratio = f["ratio"] / o["ratio"] if o["ratio"] else math.nan
        flag = "  <- slower" if rate < 0.8 or ratio < 0.8 else ""
        lines.append(f"{f['key']:<70} {rate:>13.3f} {ratio:>13.3f}{flag}")
    for o in old["figures"]:
        if o["key"] not in new_keys:
            lines.append(f"{o['key']:<70} {'not run':>13} {'':>13}")
    return lines
