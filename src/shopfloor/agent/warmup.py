"""Compile every kernel the configured pipelines use before the agent says it is ready.

Numba compiles a kernel on its first call (or loads it from ``NUMBA_CACHE_DIR``: ``cache=True``
everywhere), and a compile takes seconds. Left to the first message, that stall would hold up
the worker while the queue fills; worse, ``READY=1`` would be a promise the agent cannot keep.
So before ``READY``, each distinct pipeline of the configuration - every static signal, the
pipeline of signals discovered on each subscription, every asset - is built afresh and fed a
small seeded batch: healthy rows, a burst far out of line (so the alarm raises and the chain
takes its per-sample path too), then healthy rows again (so it clears). The pipelines that run
live are not touched: what the warm-up learns is thrown away.

Kernels compile per argument *types*, never per value, and every public kernel wrapper fixes
the dtypes and layouts it passes, so running each configured chain once compiles what it will
ever need. Pipelines that differ only in names, assets or valid ranges are warmed once.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from shopfloor.agent.config import AgentConfig
from shopfloor.config import AssetSpec, PipelineConfig, SignalSpec, StageSpec
from shopfloor.scoring.kernels.bank import order_steps
from shopfloor.scoring.pipeline import AssetPipeline, BankedSignal, Plant, Signal

__all__ = ["KernelCounts", "Warmup", "kernel_counts", "warm_up"]

log = logging.getLogger("shopfloor.agent.warmup")

# More than a detector's own warm-up (100 values; residual charts 200; assets 300) plus the
# tail threshold's calibration (200 scores), so every stage runs its calibrated path.
HEALTHY_ROWS = 512
BURST_ROWS = 8  # more than the alarm's default raise_after (3)
FRAME_LEN = 1024
_SEED = 20240601


@dataclass(frozen=True, slots=True)
class KernelCounts:
    """Compiled kernel signatures in this process, and how the numba cache served them."""

    signatures: int
    cache_hits: int
    cache_misses: int  # compiled here, and written to the cache when it is writable


@dataclass(frozen=True, slots=True)
class Warmup:
    """What :func:`warm_up` did."""

    pipelines: int  # distinct pipelines run
    seconds: float
    loaded: int  # kernel signatures loaded from the numba cache
    compiled: int  # kernel signatures compiled (the cache was empty or stale)
    failed: tuple[str, ...]  # pipelines whose warm-up raised (logged; the agent goes on)

    def describe(self) -> str:
        """One line for the log and ``systemctl status``."""
        text = (f"{self.pipelines} pipeline{'s' * (self.pipelines != 1)} warmed up in "
                f"{self.seconds:.1f} s "
                f"({self.loaded} kernels from the cache, {self.compiled} compiled)")
        return text + (f"; {len(self.failed)} failed" if self.failed else "")


def kernel_counts() -> KernelCounts:
    """Count compiled signatures of shopfloor's kernels loaded so far, with cache hits/misses."""
    from numba.core.registry import CPUDispatcher

    signatures = hits = misses = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith("shopfloor.scoring.kernels.") or module is None:
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and value.__module__ == name:
                signatures += len(value.signatures)
                hits += sum(value.stats.cache_hits.values())
                misses += sum(value.stats.cache_misses.values())
    return KernelCounts(signatures, hits, misses)


def warm_up(config: AgentConfig) -> Warmup:
    """Run each distinct pipeline of ``config`` once on a small seeded batch.

    A pipeline whose warm-up raises is logged and skipped: the live pipeline will meet the
    same code and report its own errors, and a warm-up must never keep the agent from
    starting.
    """
    started = time.perf_counter()
    before = kernel_counts()
    rng = np.random.default_rng(_SEED)
    count = 0
    failed: list[str] = []
    for label, build, data in _pipelines(config, rng):
        count += 1
        try:
            pipe = build()
            for batch in data:
                pipe.process(batch)
            if isinstance(pipe, BankedSignal):
                _warm_order_check()
        except Exception as exc:  # a warm-up failure must not stop the agent; logged below
            failed.append(label)
            log.warning("warm-up of %s failed (the live pipeline will meet this too): %s",
                        label, exc)
    after = kernel_counts()
    done = Warmup(
        pipelines=count,
        seconds=time.perf_counter() - started,
        loaded=after.cache_hits - before.cache_hits,
        compiled=after.cache_misses - before.cache_misses,
        failed=tuple(failed),
    )
    log.info("%s", done.describe())
    return done


def _pipelines(
    config: AgentConfig, rng: np.random.Generator
) -> Iterator[tuple[str, _Builder, list[NDArray[np.float64]]]]:
    """(label, builder, batches) for each distinct pipeline of the configuration."""
    seen: set[str] = set()
    specs = [(f"signal {s.id}", s) for s in config.pipeline.signals]
    specs += [
        (f"subscription {i} ({sub.template.filter})", sub.signal_spec("warmup", "warmup"))
        for i, sub in enumerate(config.subscriptions)
    ]
    for label, spec in specs:
        key = repr((spec.kind, _stage_key(spec), sorted(spec.features.items(), key=str)))
        if key not in seen:
            seen.add(key)
            yield label, _Builder(signal=spec), _signal_batches(spec, rng)
    assets = list(config.pipeline.assets)
    if config.asset_stage is not None and config.agent.asset_signals >= 2 and config.subscriptions:
        # The asset detector of discovered signals (two members: the kernels are the same).
        assets.append(AssetSpec("warmup", ("a", "b"), config.asset_stage))
    for asset in assets:
        key = repr(("asset", len(asset.signals), _stage_key(asset)))
        if key not in seen:
            seen.add(key)
            yield f"asset {asset.name}", _Builder(asset=asset), _asset_batches(asset, rng)


@dataclass(frozen=True, slots=True)
class _Builder:
    """A fresh pipeline, never one of the live ones."""

    signal: SignalSpec | None = None
    asset: AssetSpec | None = None

    def __call__(self) -> Signal | AssetPipeline:
        # The alarm's warm-up shortened, so the burst meets an armed alarm whatever the
        # configured warm-up: kernels compile per type, and no count changes a type.
        if self.signal is not None:
            spec = replace(self.signal, stage=_armed(self.signal.stage))
            # As the live plant holds it: a row of a bank where a bank can hold it (its
            # kernels, and the worker's order check, compile here then).
            return Plant(PipelineConfig(signals=(spec,), assets=())).signals[spec.id]
        assert self.asset is not None
        # Each signal contributes one column; which feature it is does not change the kernels.
        return AssetPipeline(replace(self.asset, stage=_armed(self.asset.stage)),
                             tuple(0 for _ in self.asset.signals))


def _warm_order_check() -> None:
    """The worker's time-order check of banked signals (kernels.bank.order_steps)."""
    one = np.zeros(1)
    order_steps(np.zeros(1, dtype=np.int64), one, one, one.copy(), one.copy(), 1.0,
                np.zeros(1, dtype=np.uint8))


def _armed(stage: StageSpec) -> StageSpec:
    return replace(stage, alarm={**stage.alarm, "warmup": HEALTHY_ROWS - 16})


def _stage_key(spec: SignalSpec | AssetSpec) -> str:
    stage = spec.stage
    return repr([sorted(dict(t).items(), key=str)
                 for t in (stage.detector, stage.threshold, stage.alarm)])


def _signal_batches(spec: SignalSpec, rng: np.random.Generator) -> list[NDArray[np.float64]]:
    low, high = spec.valid_range if spec.valid_range is not None else (-np.inf, np.inf)
    finite = np.isfinite(low) and np.isfinite(high)
    if spec.kind != "frame":
        centre = (low + high) / 2.0 if finite else 100.0
        spread = (high - low) / 1000.0 if finite else 1.0
        burst = centre + (400.0 * spread)  # 400 sigma, still inside the valid range
        healthy = centre + spread * rng.standard_normal(HEALTHY_ROWS)
        again = centre + spread * rng.standard_normal(HEALTHY_ROWS // 4)
        values = np.concatenate([healthy, np.full(BURST_ROWS, burst), again])
        values[HEALTHY_ROWS // 2] = np.nan  # a dropout: rejected, never learned
        return [values[:HEALTHY_ROWS], values[HEALTHY_ROWS:]]
    # Frames: a tone in a little noise, centred in the valid range (clipping would reject it).
    centre = (low + high) / 2.0 if finite else 0.0
    half = (high - low) / 2.0 if finite else 5.0
    rate = float(spec.features.get("sample_rate", 1.0))
    tone = np.sin(2.0 * np.pi * (rate / 16.0) * (np.arange(FRAME_LEN) / rate))

    def frames(n: int, amplitude: float) -> NDArray[np.float64]:
        noise = 0.05 * rng.standard_normal((n, FRAME_LEN))
        return np.ascontiguousarray(centre + amplitude * half * (tone + noise))

    healthy = frames(HEALTHY_ROWS, 0.1)
    healthy[1, :10] = np.nan  # a gap inside one frame: the gap-filling path
    return [healthy, np.vstack([frames(BURST_ROWS, 0.8), frames(HEALTHY_ROWS // 4, 0.1)])]


def _asset_batches(asset: AssetSpec, rng: np.random.Generator) -> list[NDArray[np.float64]]:
    d = len(asset.signals)
    healthy = 100.0 + rng.standard_normal((HEALTHY_ROWS, d))
    healthy[3, 0] = np.nan  # "no new value": the held value stands in
    burst = np.full((BURST_ROWS, d), 100.0)
    burst[:, 0] += 400.0
    again = 100.0 + rng.standard_normal((HEALTHY_ROWS // 4, d))
    return [healthy, np.vstack([burst, again])]
