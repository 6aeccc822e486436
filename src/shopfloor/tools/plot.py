"""PNG plots of a replay: signals, asset score against threshold, alarm periods shaded.

matplotlib is an optional dependency (``shopfloor[plot]``): an edge device does not need it.
The Agg canvas is used directly, without pyplot, so no global figure state is touched.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.errors import InputError

__all__ = ["plot_replay"]

MAX_SIGNAL_PANELS = 8


def plot_replay(path: str | Path, chunks: list[Any], title: str = "shopfloor replay") -> None:
    """Draw what :func:`shopfloor.tools.replay.replay` collected in ``plot_rows`` into a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(
            "--plot needs matplotlib: install shopfloor with the 'plot' extra "
            "(pip install 'shopfloor[plot]')"
        ) from None
    if not chunks:
        raise InputError("nothing to plot: the data has no rows")
    times = np.concatenate([c[0] for c in chunks])
    signals = list(chunks[0][1])
    values = {s: np.concatenate([c[1][s] for c in chunks]) for s in signals}
    assets = list(chunks[0][2])
    scores = {
        a: (
            np.concatenate([c[2][a][0] for c in chunks]),
            np.concatenate([c[2][a][1] for c in chunks]),
        )
        for a in assets
    }
    anomaly = np.concatenate([c[3] for c in chunks])
    x: Any = times
    if len(times) and times.min() > 1e8:  # epoch seconds: show wall-clock time
        x = np.array([datetime.fromtimestamp(t, tz=UTC) for t in times.tolist()])
    shown = signals[:MAX_SIGNAL_PANELS]
    rows = len(shown) + len(assets)
    fig = Figure(figsize=(12, 1.6 * rows + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    spans = _spans(anomaly)
    for ax, sid in zip(axes, shown, strict=False):
        ax.plot(x, values[sid], lw=0.7, color="tab:blue")
        ax.set_ylabel(sid.split("/", 1)[-1], rotation=0, ha="right", fontsize=8)
        _shade(ax, x, spans)
    for ax, asset in zip(axes[len(shown) :], assets, strict=True):
        score, threshold = scores[asset]
        ax.plot(x, score, lw=0.7, color="black", label="score")
        finite = np.where(np.isfinite(threshold), threshold, np.nan)
        ax.plot(x, finite, lw=1.0, color="tab:red", ls="--", label="threshold")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylabel(f"{asset}\nscore", rotation=0, ha="right", fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
        _shade(ax, x, spans)
    more = (
        f" ({len(signals) - len(shown)} more signals not drawn)"
        if len(signals) > len(shown)
        else ""
    )
    fig.suptitle(f"{title}: alarms shaded{more}")
    out = Path(path)
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise InputError(f"cannot write plot: {exc.strerror or exc}", file=str(out)) from None


def _spans(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (ends - 1).tolist(), strict=True))


def _shade(ax: Any, x: Any, spans: list[tuple[int, int]]) -> None:
    for a, b in spans:
        ax.axvspan(x[a], x[b], color="tab:red", alpha=0.18, lw=0)
