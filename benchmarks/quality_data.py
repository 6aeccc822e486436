"""Reading the benchmark data (SKAB CSV, CWRU ``.npz``) and preparing vibration streams.

The data lives outside the repository (see ``README.md`` of the data folder); nothing here
downloads anything. The decimator is NumPy only, because SciPy is not a dependency of
shopfloor: a Kaiser-windowed sinc low-pass, then every ``factor``-th sample.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "SKAB_LABELS",
    "SkabFile",
    "decimate",
    "frames",
    "lowpass_taps",
    "read_cwru",
    "read_skab",
    "skab_files",
]

F64 = NDArray[np.float64]

#: SKAB's label columns (everything else after ``datetime`` is a sensor).
SKAB_LABELS = ("anomaly", "changepoint")


@dataclass(frozen=True, slots=True)
class SkabFile:
    """One SKAB experiment: sensor columns, labels, and seconds since its first row."""

    name: str
    times: F64  # seconds since the first row (the datetime column, taken as UTC)
    columns: tuple[str, ...]
    values: dict[str, F64]
    anomaly: NDArray[np.bool_]
    changepoint: NDArray[np.bool_]


def skab_files(root: Path, folders: tuple[str, ...] = ("valve1", "valve2")) -> list[Path]:
    """The experiment CSVs under ``root/<folder>``, numerically ordered (0, 1, ..., 15)."""
    found: list[Path] = []
    for folder in folders:
        paths = (root / folder).glob("*.csv")
        found += sorted(paths, key=lambda p: (int(p.stem) if p.stem.isdigit() else math.inf,
                                              p.stem))
    return found


def read_skab(path: Path, healthy: bool = False) -> SkabFile:
    """Read one ``;``-separated SKAB CSV (``datetime``, sensors, ``anomaly``, ``changepoint``).

    ``healthy``: the file has no label columns (``anomaly-free/anomaly-free.csv``); every row
    is normal.
    """
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=";")
        header = [h.strip() for h in next(reader)]
        rows = [r for r in reader if r]
    if healthy:
        header += [label for label in SKAB_LABELS if label not in header]
        rows = [r + ["0"] * (len(header) - len(r)) for r in rows]
    missing = [c for c in ("datetime", *SKAB_LABELS) if c not in header]
    if missing:
        raise ValueError(f"{path}: not a SKAB file, it lacks {', '.join(missing)}")
    at = {h: i for i, h in enumerate(header)}
    stamps = [datetime.fromisoformat(r[at["datetime"]]).replace(tzinfo=UTC).timestamp()
              for r in rows]
    times = np.array(stamps, dtype=np.float64)
    sensors = tuple(h for h in header if h != "datetime" and h not in SKAB_LABELS)

    def column(name: str) -> F64:
        return np.array([float(r[at[name]]) for r in rows], dtype=np.float64)

    return SkabFile(
        name=f"{path.parent.name}/{path.stem}",
        times=times - times[0] if times.size else times,
        columns=sensors,
        values={c: column(c) for c in sensors},
        anomaly=column("anomaly") == 1.0,
        changepoint=column("changepoint") == 1.0,
    )


def read_cwru(path: Path, channel: str = "DE") -> F64:
    """One accelerometer channel (in g) of a CWRU ``.npz`` as a 1-D float64 array."""
    with np.load(path) as data:
        if channel not in data.files:
            raise ValueError(f"{path}: no channel {channel!r}; it has {', '.join(data.files)}")
        return np.ascontiguousarray(data[channel], dtype=np.float64).ravel()


def lowpass_taps(factor: int, attenuation_db: float = 80.0, passband: float = 0.8) -> F64:
    """Kaiser-windowed sinc low-pass for decimation by ``factor`` (odd length, unit DC gain).

    Flat to ``passband`` × the new Nyquist frequency and ``attenuation_db`` down from the new
    Nyquist frequency on, so nothing that would alias into the kept band survives. Kaiser's
    formulas give the window's beta and the length for that attenuation and transition.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise ValueError(f"factor must be an integer >= 2; got {factor!r}")
    if not 0.0 < passband < 1.0:
        raise ValueError(f"passband must be a fraction of the new Nyquist in (0, 1); got "
                         f"{passband!r}")
    if not attenuation_db > 21.0:
        raise ValueError(f"attenuation_db must be > 21 dB; got {attenuation_db!r}")
    nyquist = 0.5 / factor  # new Nyquist frequency, in cycles per input sample
    transition = (1.0 - passband) * nyquist
    cutoff = nyquist - transition / 2.0
    a = attenuation_db
    beta = 0.1102 * (a - 8.7) if a > 50.0 else 0.5842 * (a - 21.0) ** 0.4 + 0.07886 * (a - 21.0)
    n = math.ceil((a - 7.95) / (2.285 * 2.0 * math.pi * transition)) + 1
    n += 1 - n % 2  # odd: a whole-sample delay, so the output lines up with input samples
    k = np.arange(n) - (n - 1) / 2.0
    taps: F64 = 2.0 * cutoff * np.sinc(2.0 * cutoff * k) * np.kaiser(n, beta)
    out: F64 = taps / float(taps.sum())
    return out


def decimate(x: ArrayLike, factor: int) -> F64:
    """Low-pass (:func:`lowpass_taps`) then keep every ``factor``-th sample.

    Only fully-overlapped outputs are kept (no zero padding at the ends), so the first and last
    ``len(taps) // 2`` input samples are lost rather than faded: sample ``j`` of the output is
    input sample ``len(taps) // 2 + j * factor`` filtered.
    """
    v = np.asarray(x, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"x must be 1-D; got shape {v.shape}")
    taps = lowpass_taps(factor)
    if v.size < taps.size:
        raise ValueError(f"x needs at least {taps.size} samples to decimate; got {v.size}")
    windows = np.lib.stride_tricks.sliding_window_view(v, taps.size)[::factor]
    out: F64 = np.ascontiguousarray(windows @ taps[::-1])
    return out


def frames(x: ArrayLike, length: int, hop: int) -> F64:
    """Frames ``x[k*hop : k*hop + length]`` for every whole frame, shape (n, length)."""
    v = np.asarray(x, dtype=np.float64)
    if length < 2 or hop < 1:
        raise ValueError(f"need length >= 2 and hop >= 1; got {length} and {hop}")
    if v.size < length:
        return np.empty((0, length))
    return np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(v, length)[::hop])
