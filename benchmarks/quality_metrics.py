"""SKAB's scores: point-wise F1, FAR and MAR, and the NAB-style changepoint score.

The point-wise ones (:class:`Confusion`, :func:`confusion`) are :mod:`shopfloor.tools.scores`'s,
shared with ``shopfloor replay``.

Both follow SKAB's leaderboard protocol (see the data folder's README): every test row of every
file is pooled for the point-wise scores; for the changepoint score each file contributes its
own windows, and the raw scores, null scores and perfect scores are summed over the files before
they are normalised to ``100 * (S - S_null) / (S_perfect - S_null)``.

The NAB details follow ``core/metrics.py`` of the SKAB repository (waico/SKAB, the file at
commit f3d94c49; it comes from their ``tsad`` library): ``single_detecting_boundaries``
(windows to the right of each changepoint, an overlap cut from the later window:
``intersection_mode="cut right window"``), ``extract_cp_confusion_matrix`` (window bounds
inclusive, only the first detection in a window counts, detections strictly between windows
are false positives) and ``my_scale`` (the "improved" position score: a tanh from ``A_tp`` at
the window's start down to ``A_fp`` at its end, read at ``int(position * 1000)`` of 1000
points). Times are seconds.

The window is the data README's ``[cp, cp + 60 s]`` (``anomaly_window_destination="righter"``,
as SKAB's "strict" leaderboard puts it after the changepoint); SKAB's own notebooks call the
same code with ``window_width="30S"`` centred on the changepoint, so the width is a parameter.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The point-wise scores live in the library (``shopfloor replay`` prints them too); they are
# re-exported here under the names the benchmark has always used.
from shopfloor.tools.scores import Confusion, as_labels, confusion

__all__ = [
    "NAB_PROFILES",
    "Confusion",
    "NabTally",
    "confusion",
    "nab_scores",
    "nab_tally",
    "nab_windows",
    "position_score",
    "predicted_changepoints",
]

#: (A_tp, A_fp, A_fn) of SKAB's three NAB profiles.
NAB_PROFILES: dict[str, tuple[float, float, float]] = {
    "standard": (1.0, -0.11, -1.0),
    "low_fp": (1.0, -0.22, -1.0),
    "low_fn": (1.0, -0.11, -2.0),
}

# my_scale's resolution: the position score is read off 1000 points of the tanh curve.
_DETAIL = 1000


def predicted_changepoints(times: ArrayLike, output: ArrayLike) -> NDArray[np.float64]:
    """Times of the rising and falling edges of a 0/1 output.

    The first row counts as an edge when the output is 1 there, as SKAB's notebooks do
    (``prediction_cp[0] = prediction[0]``): the scored part starts from "no alarm".
    """
    t = np.asarray(times, dtype=np.float64)
    out = as_labels(output, "output")
    if t.shape != out.shape:
        raise ValueError(f"times and output must have the same length; got {t.size} and "
                         f"{out.size}")
    edges = np.flatnonzero(np.diff(out.astype(np.int8), prepend=np.int8(0)) != 0)
    return t[edges]


def nab_windows(changepoints: ArrayLike, width: float = 60.0) -> list[tuple[float, float]]:
    """Windows ``[cp, cp + width]`` after each true changepoint, in time order.

    Where a window reaches into the next one, the next one starts where this one ends (SKAB's
    ``intersection_mode="cut right window"``), so the shared instant belongs to both.
    """
    if not (math.isfinite(width) and width > 0.0):
        raise ValueError(f"width must be a positive number of seconds; got {width!r}")
    cps = np.sort(np.asarray(changepoints, dtype=np.float64).ravel())
    windows = [[float(c), float(c) + width] for c in cps]
    for left, right in itertools.pairwise(windows):
        if left[1] >= right[0]:
            right[0] = left[1]
    return [(a, b) for a, b in windows]


@dataclass(frozen=True, slots=True)
class NabTally:
    """Detections sorted into windows: the first one's position in each window, and the rest.

    ``positions[i]`` is ``(t - start) / (end - start)`` of the first detection in window ``i``,
    or ``None`` when the window has none (a missed changepoint).
    """

    positions: tuple[float | None, ...]
    false_positives: int

    @property
    def missed(self) -> int:
        """Windows without a detection."""
        return sum(p is None for p in self.positions)

    def raw(self, profile: tuple[float, float, float]) -> tuple[float, float, float]:
        """``(S, S_null, S_perfect)`` of this file under ``(A_tp, A_fp, A_fn)``."""
        a_tp, a_fp, a_fn = profile
        score = a_fp * self.false_positives + a_fn * self.missed
        score += sum(position_score(p, a_tp, a_fp) for p in self.positions if p is not None)
        n = len(self.positions)
        return score, n * a_fn, n * a_tp


def nab_tally(windows: Sequence[tuple[float, float]], detections: ArrayLike) -> NabTally:
    """Sort ``detections`` (times) into ``windows`` as SKAB's ``extract_cp_confusion_matrix``.

    A detection inside a window (bounds included) is that window's if it is the first there,
    and otherwise ignored; a detection outside every window is a false positive.
    """
    t = np.sort(np.asarray(detections, dtype=np.float64).ravel())
    if not windows:
        return NabTally(positions=(), false_positives=int(t.size))
    positions: list[float | None] = []
    for start, end in windows:
        inside = t[(t >= start) & (t <= end)]
        if inside.size == 0:
            positions.append(None)
        else:
            positions.append((float(inside[0]) - start) / (end - start) if end > start else 0.0)
    fp = int(np.sum(t < windows[0][0]))
    for (_, end), (start, _) in itertools.pairwise(windows):
        fp += int(np.sum((t > end) & (t < start)))
    fp += int(np.sum(t > windows[-1][1]))
    return NabTally(positions=tuple(positions), false_positives=fp)


def position_score(position: float, a_tp: float, a_fp: float) -> float:
    """SKAB's ``my_scale`` (koef 1): ``A_tp`` at a window's start, ``A_fp`` at its end.

    The curve is ``(A_tp - A_fp)/2 * (1 - tanh(x)/tanh(pi/2)) + A_fp`` over 1000 points ``x``
    from ``-pi/2`` to ``pi/2``, read at index ``int(position * 1000)`` (the last point beyond).
    """
    x = np.linspace(-np.pi / 2, np.pi / 2, _DETAIL)
    half = (a_tp - a_fp) / 2.0
    y = half * -1.0 * np.tanh(x) / np.tanh(np.pi / 2) + half + a_fp
    return float(y[min(int(position * _DETAIL), _DETAIL - 1)])


def nab_scores(tallies: Iterable[NabTally]) -> dict[str, float]:
    """Normalised NAB score per profile over all files: 0 = null detector, 100 = perfect."""
    tallies = list(tallies)
    out: dict[str, float] = {}
    for name, profile in NAB_PROFILES.items():
        s = s_null = s_perfect = 0.0
        for tally in tallies:
            a, b, c = tally.raw(profile)
            s, s_null, s_perfect = s + a, s_null + b, s_perfect + c
        out[name] = 100.0 * (s - s_null) / (s_perfect - s_null) if s_perfect != s_null else 0.0
    return out
