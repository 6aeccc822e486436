"""SKAB through shopfloor's own pipeline: configurations, one fresh plant per file, scores.

Each experiment file is replayed through a fresh :class:`~shopfloor.scoring.pipeline.Plant` built
from a config dict, exactly as ``shopfloor replay`` does (every sensor column a scalar signal of one
asset ``pump``). Rows ``0 .. TRAIN_ROWS-1`` are the training part: they are fed so that the pipeline
learns, and whatever it alarms there is ignored; rows from ``TRAIN_ROWS`` on are scored. A row's
predicted label is the replay's ``anomaly`` (any alarm of the asset or of one of its signals
ACTIVE); the "asset" label uses only the asset-level detector's alarm.

Configurations, each with the library's defaults (no tuning on SKAB): the defaults are what a
plant runs, so they are what is measured. The alarm warm-up is the protocol's ``TRAIN_ROWS``
(400 rows: the default warm-up is 400 too, for its own reasons - see
:mod:`shopfloor.scoring.detect.alarm`).

``default``
    ``shopfloor.tools.replay.default_config``: z-score per signal (with its stuck-value check), the
    asset-level Mahalanobis detector on forecast residuals, pot thresholds at a false-alarm
    rate of 1e-3, the default alarm lifecycle.
``<family>``
    The same with another chart family per signal, at its defaults: ewma, cusum, robust_z,
    page_hinkley, western_electric - "every detector family with its defaults".
``hst``
    River's Half-Space Trees, library defaults, as the asset detector over all 8 signals (the
    signals keep the default z-score).

Each configuration also runs on SKAB's anomaly-free recording (:func:`control_far`), cut into
pieces as long as an experiment file with the same 400 training rows: a healthy control on
which every alarm is a false one, outside the scored files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.quality_data import SkabFile
from benchmarks.quality_metrics import (
    Confusion,
    NabTally,
    confusion,
    nab_scores,
    nab_tally,
    nab_windows,
    predicted_changepoints,
)
from shopfloor.config import PipelineConfig, config_from_dict
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.pipeline import Plant
from shopfloor.tools.replay import default_config

__all__ = [
    "ASSET",
    "FAMILIES",
    "TRAIN_ROWS",
    "WINDOW_S",
    "AlarmShare",
    "SkabScore",
    "control_far",
    "label_file",
    "run_skab",
    "score",
    "shares",
    "skab_configs",
]

ASSET = "pump"
#: Rows of each file that train (SKAB protocol).
TRAIN_ROWS = 400
#: Width of the NAB window after each true changepoint, seconds (the data README's protocol).
WINDOW_S = 60.0

Labels = dict[str, NDArray[np.bool_]]


#: Chart families measured per signal beside the default z-score.
FAMILIES = ("ewma", "cusum", "robust_z", "page_hinkley", "western_electric")


def skab_configs(columns: Sequence[str]) -> dict[str, PipelineConfig]:
    """The configurations of the module docstring, for SKAB's sensor ``columns``."""
    base = default_config(list(columns), ASSET)
    signals = [{"asset": s.asset, "name": s.name, "column": s.column} for s in base.signals]
    train = {"warmup": TRAIN_ROWS}

    def config(name: str, defaults: dict[str, Any]) -> PipelineConfig:
        return config_from_dict({"defaults": {"alarm": train, **defaults}, "signals": signals},
                                source=f"<quality: {name}>")

    configs = {"default": config("default", {})}
    for family in FAMILIES:
        configs[family] = config(family, {"detector": {"kind": family}})
    configs["hst"] = config("hst", {"asset_detector": {"kind": "hst"}})
    return configs


def control_far(config: PipelineConfig, healthy: SkabFile, length: int) -> Confusion:
    """Point-wise counts of ``config`` on a healthy recording cut into pieces of ``length`` rows
    (each a fresh plant with ``TRAIN_ROWS`` training rows): every alarm row is a false one."""
    out = Confusion(0, 0, 0, 0)
    for start in range(0, healthy.times.size - length + 1, length):
        part = slice(start, start + length)
        piece = replace(healthy, times=healthy.times[part] - healthy.times[start],
                        values={k: v[part] for k, v in healthy.values.items()},
                        anomaly=healthy.anomaly[part], changepoint=healthy.changepoint[part])
        label = label_file(config, piece)["any"]
        out += confusion(piece.anomaly[TRAIN_ROWS:], label[TRAIN_ROWS:])
    return out


def label_file(config: PipelineConfig, data: SkabFile) -> Labels:
    """Feed every row of ``data`` to a fresh plant; per row: ``any`` and ``asset`` alarm ACTIVE.

    The same steps as ``shopfloor replay`` (signals, then the asset row from their batches).
    Each signal's own alarm is there too, under its name, for the breakdown.
    """
    plant = Plant(config)
    n = data.times.size
    batches, assets = plant.process({sid: data.values[pipe.spec.column or pipe.spec.name]
                                     for sid, pipe in plant.signals.items()}, data.times)
    signal_active = np.zeros(n, dtype=np.bool_)
    out: Labels = {}
    for sid, batch in batches.items():
        out[plant.signals[sid].spec.name] = batch.result.state == AlarmState.ACTIVE
        signal_active |= out[plant.signals[sid].spec.name]
    asset_active = np.zeros(n, dtype=np.bool_)
    for asset in assets.values():
        asset_active |= asset.result.state == AlarmState.ACTIVE
    return {**out, "any": signal_active | asset_active, "asset": asset_active}


@dataclass(frozen=True, slots=True)
class SkabScore:
    """Scores of one labelling over all test rows of all files."""

    points: Confusion
    nab: dict[str, float]
    missed_changepoints: int
    false_changepoints: int
    changepoints: int


def score(files: Sequence[SkabFile], labels: Sequence[NDArray[np.bool_]]) -> SkabScore:
    """SKAB's scores of per-file row ``labels`` (training rows are left out here)."""
    points = Confusion(0, 0, 0, 0)
    tallies: list[NabTally] = []
    for data, label in zip(files, labels, strict=True):
        test = slice(TRAIN_ROWS, None)
        times = data.times[test]
        points += confusion(data.anomaly[test], label[test])
        windows = nab_windows(times[data.changepoint[test]], WINDOW_S)
        tallies.append(nab_tally(windows, predicted_changepoints(times, label[test])))
    return SkabScore(
        points=points,
        nab=nab_scores(tallies),
        missed_changepoints=sum(t.missed for t in tallies),
        false_changepoints=sum(t.false_positives for t in tallies),
        changepoints=sum(len(t.positions) for t in tallies),
    )


@dataclass(frozen=True, slots=True)
class AlarmShare:
    """One alarm's share of a configuration's labels, over the test rows of all files."""

    alarm: str  # a signal's name, or "asset"
    anomalous_rows: int  # test rows in a fault with this alarm ACTIVE
    normal_rows: int  # test rows outside faults with this alarm ACTIVE (false alarms)
    active_at_start: int  # files where it is already ACTIVE on the first test row


def shares(files: Sequence[SkabFile], labels: Sequence[Labels]) -> list[AlarmShare]:
    """Which alarms made a configuration's ``any`` label: rows per alarm, in and out of faults."""
    out = []
    for alarm in (k for k in labels[0] if k != "any"):
        inside = outside = start = 0
        for data, label in zip(files, labels, strict=True):
            active, fault = label[alarm][TRAIN_ROWS:], data.anomaly[TRAIN_ROWS:]
            inside += int(np.sum(active & fault))
            outside += int(np.sum(active & ~fault))
            start += int(active[:1].sum())
        out.append(AlarmShare(alarm, inside, outside, start))
    return out


def run_skab(
    files: Sequence[SkabFile], progress: Callable[[str], None], healthy: SkabFile | None = None
) -> tuple[dict[tuple[str, str], SkabScore], dict[str, list[AlarmShare]], dict[str, Confusion]]:
    """Score every configuration with both labellings: ``{(config, label): score}``, each
    configuration's alarm shares, and its counts on the ``healthy`` control (if given)."""
    if not files:
        return {}, {}, {}
    odd = [f.name for f in files if f.columns != files[0].columns]
    if odd:
        raise ValueError(f"SKAB files must share their sensor columns; {', '.join(odd)} differ "
                         f"from {files[0].name}")
    configs = skab_configs(files[0].columns)
    length = int(np.median([f.times.size for f in files]))
    out: dict[tuple[str, str], SkabScore] = {}
    breakdown: dict[str, list[AlarmShare]] = {}
    controls: dict[str, Confusion] = {}
    for name, config in configs.items():
        per_file = [label_file(config, data) for data in files]
        for label in ("any", "asset"):
            out[name, label] = score(files, [p[label] for p in per_file])
        breakdown[name] = shares(files, per_file)
        if healthy is not None and healthy.columns == files[0].columns:
            controls[name] = control_far(config, healthy, length)
        control = f", control FAR {controls[name].far:.1f} %" if name in controls else ""
        progress(f"{name}: F1 {out[name, 'any'].points.f1:.3f} (any alarm), "
                 f"{out[name, 'asset'].points.f1:.3f} (asset alarm){control}")
    return out, breakdown, controls
