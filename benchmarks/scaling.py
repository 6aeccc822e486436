"""Scaling area: cost per sample and per frame as the number of signals grows (issue 6).

Messages go the agent's way, in process: real payloads (``encode_json_scalar``, int16
``encode_frame``) into :meth:`shopfloor.receiving.ingest.Ingest.on_message` (topic match, decode,
signal cap, queue), one drain of the queue, :meth:`shopfloor.agent.worker.Worker.process` (grouping,
pipelines, alarm bookkeeping). Each timed call is one batch: the messages that arrive in 50 ms at a
fixed total rate, spread round-robin over the signals, so with more signals a batch holds fewer
samples of each and the per-signal overhead shows.

=================================================  ==========================================
subject                                            reference
=================================================  ==========================================
scalar JSON, N signals (2,000 msgs/s total,        scalar JSON, 1 signal (the same batches,
100 messages a batch)                              all of one signal)
int16 frames of 2048 at 12 kHz, N sensors          the same frames, 1 sensor
(200 frames/s total, 10 a batch)
memory per frame pipeline (after warm-up)          memory per scalar pipeline
state per scalar signal, each scalar detector      the default chain (z-score, in a bank)
memory per scalar signal in the agent              the default chain's state
worker, 1,000 signals one sample each per drain    worker, 1 signal, the same 1,000 samples
(ingest untimed; with and without the asset        in one drain
detectors of discovered signals)
=================================================  ==========================================

N is 10, 100 and 1,000 (quick: 10 and 100). Every pipeline is past its warm-up before it is
timed (its detector and threshold have learned), as in a running plant. Default stages: the
z-score detector, the peaks-over-threshold tail threshold, the alarm; frames get the 16
default features. Each message moves its signal's time on, so every sample is scored.
Memory is what :mod:`tracemalloc` sees allocated per pipeline (NumPy arrays included) once
the pipeline has scored its warm-up batch; the process itself (interpreter, NumPy, Numba,
about 160 MiB) comes on top.
"""

from __future__ import annotations

import dataclasses
import statistics
import struct
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from benchmarks.harness import Bench, Case, Figure, Target
from shopfloor.agent.config import AgentConfig, parse_agent_config
from shopfloor.agent.worker import Worker
from shopfloor.receiving.codecs import encode_frame, encode_json_scalar
from shopfloor.receiving.ingest import BoundedQueue, Ingest, Item
from shopfloor.scoring.pipeline import Plant

__all__ = ["CORE_SHARE", "Feed", "run"]

T0 = 1_750_000_000.0
DRAIN_S = 0.05
SCALAR_RATE = 2_000.0  # messages/s in total
FRAME_RATE = 200.0  # frames/s in total: 34 sensors streaming 12 kHz without a gap
FRAME_LEN = 2048
SAMPLE_RATE = 12_000.0
CORE_SHARE = 0.5  # 50% headroom: plan to load one core half
WARM_SAMPLES = 500  # past the alarm warm-up (400) and the detector's (100)
WARM_FRAMES = 450
KIB = 1024.0
FRAME_TS_OFFSET = 12  # the first sample's time in the frame header (codecs.FRAME_HEADER)

CONFIG = """
[agent]
max_signals = {signals}
queue_size = 100000
batch_max = 100000

[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"

[[subscriptions]]
topic = "vib/{{asset}}/{{signal}}"
codec = "frame"
features = {{ sample_rate = {rate} }}
"""


def config(signals: int, asset_signals: int | None = None) -> AgentConfig:
    """JSON scalars on ``plant/...``, 12 kHz frames on ``vib/...``; room for ``signals``;
    ``asset_signals`` overrides how many discovered signals join their asset's detector."""
    text = CONFIG.format(signals=max(signals, 1), rate=SAMPLE_RATE)
    if asset_signals is not None:
        text = text.replace("[agent]\n", f"[agent]\nasset_signals = {asset_signals}\n", 1)
    return parse_agent_config(text, source="bench.toml")


class Feed:
    """``signals`` signals of one kind behind an ingest, a queue and a worker.

    :meth:`batch` puts the next ``per_batch`` payloads (round-robin over the signals) through
    ingest and hands the queue's drain to the worker, as one turn of the agent's loop does.
    """

    def __init__(self, kind: str, signals: int, per_batch: int, seed: int,
                 asset_signals: int | None = None) -> None:
        cfg = config(signals, asset_signals)
        self.queue = BoundedQueue(cfg.agent.queue_size, cfg.agent.drop_policy)
        self.ingest = Ingest(cfg, self.queue)
        self.worker = Worker(cfg, Plant(cfg.pipeline), self.queue)
        self.per_batch = per_batch
        prefix = "plant" if kind == "scalar" else "vib"
        self.topics = [f"{prefix}/asset-{i // 50}/s{i % 50}" for i in range(signals)]
        rng = np.random.default_rng(seed)
        self.kind = kind
        # Every message moves its signal's time on: the worker drops a sample older than one
        # it has scored (out_of_order), so a ring of payloads with fixed stamps would, after
        # its first turn, time the rejection instead of the pipelines. Stamps are written per
        # message (JSON encoded anew, 8 bytes written into the frame header: a microsecond at most).
        self.values = [float(v) for v in rng.normal(50.0, 2.0, 997)]
        self.frames: list[bytearray] = []
        if kind == "frame":
            t = np.arange(FRAME_LEN) / SAMPLE_RATE
            self.frames = [
                bytearray(encode_frame(T0, SAMPLE_RATE, 0.3 * np.sin(2 * np.pi * 29.5 * t + i)
                                       + 0.05 * rng.standard_normal(FRAME_LEN)))
                for i in range(31)
            ]
        self._next = 0

    def payload(self, j: int) -> bytes:
        """Message ``j``: sample ``j // signals`` of signal ``j % signals``, gap-free in time."""
        k = j // len(self.topics)
        if self.kind == "scalar":
            return encode_json_scalar(T0 + k, self.values[j % 997])
        frame = self.frames[j % 31]
        struct.pack_into("<d", frame, FRAME_TS_OFFSET, T0 + k * FRAME_LEN / SAMPLE_RATE)
        return bytes(frame)

    def batch(self) -> None:
        """One drain's worth of messages, from payload to pipeline."""
        start = self._next
        topics = self.topics
        for j in range(start, start + self.per_batch):
            self.ingest.on_message(topics[j % len(topics)], self.payload(j), T0)
        self._next = start + self.per_batch
        self.worker.process(self.queue.get_batch(len(self.queue) + 1, 0.0))

    def drain(self) -> list[Item]:
        """The next ``per_batch`` messages through ingest, left in the queue's drain."""
        start = self._next
        for j in range(start, start + self.per_batch):
            self.ingest.on_message(self.topics[j % len(self.topics)], self.payload(j), T0)
        self._next = start + self.per_batch
        return self.queue.get_batch(len(self.queue) + 1, 0.0)

    def warm(self, rounds: int) -> None:
        """Every signal past its warm-up: ``rounds`` messages each, in big batches."""
        for _ in range(rounds * len(self.topics) // self.per_batch + 1):
            self.batch()
        # The control: every sample was scored; a feed the worker refuses measures nothing.
        refused = {sid: dict(p.rejected) for sid, p in self.worker.plant.signals.items()
                   if sum(p.rejected.values())}
        if refused or len(self.worker.plant.signals) != len(self.topics):
            raise RuntimeError(f"the scaling feed was not scored as sent: {refused}")


def run(bench: Bench) -> None:
    """Scalar and frame scaling figures, capacity notes, memory per pipeline."""
    counts = (1, 10, 100) if bench.mode.quick else (1, 10, 100, 1000)
    scalar = _series(bench, "scalar", counts, round(SCALAR_RATE * DRAIN_S), WARM_SAMPLES,
                     "scalar JSON", "samples/s", "sample")
    frame = _series(bench, "frame", counts, round(FRAME_RATE * DRAIN_S), WARM_FRAMES,
                    f"int16 frames of {FRAME_LEN} at {SAMPLE_RATE / 1e3:g} kHz", "frames/s",
                    "frame")
    _memory(bench)
    _state_per_kind(bench)
    for assets in (0, None):
        _worker_only(bench, signals=1000, assets=assets)
    bench.progress(f"[{bench.area}] one core at {CORE_SHARE:.0%}: "
                   f"{CORE_SHARE / scalar:,.0f} quality signals at 1 sample/s, "
                   f"{CORE_SHARE / frame:,.0f} frames/s "
                   f"({CORE_SHARE / frame / (SAMPLE_RATE / FRAME_LEN):,.0f} sensors streaming "
                   f"{SAMPLE_RATE / 1e3:g} kHz without a gap)")


def _series(bench: Bench, kind: str, counts: tuple[int, ...], per_batch: int, warm: int,
            label: str, unit: str, what: str) -> float:
    """One figure per signal count against 1 signal; returns seconds per item at the most."""
    one = Feed(kind, 1, per_batch, seed=1)
    bench.first_call(f"{label}, 1 signal", lambda: one.warm(warm))
    reference = Case(f"{label}, 1 signal", one.batch, per_batch, unit=unit)
    seconds = 0.0
    for n in counts[1:]:
        feed = Feed(kind, n, per_batch, seed=n)
        feed.warm(warm)
        fig, = bench.compare(Case(f"{label}, {n} signals", feed.batch, per_batch, unit=unit),
                             [reference])
        seconds = 1.0 / fig.median
        fig.note = _capacity_note(kind, n, per_batch, seconds, 1.0 / fig.reference_median, what)
    return seconds


def _capacity_note(kind: str, n: int, per_batch: int, seconds: float, one: float,
                   what: str) -> str:
    us = 1e6
    text = (f"{seconds * us:.1f} µs per {what} ({one * us:.1f} at 1 signal); "
            f"batches of {per_batch} through ingest (decode) and the worker")
    fits = CORE_SHARE / seconds
    if kind == "scalar":
        return f"{text}; half a core holds {fits:,.0f} signals at 1 sample/s"
    per_sensor = SAMPLE_RATE / FRAME_LEN
    return (f"{text}; half a core holds {fits:,.0f} frames/s: {fits:,.0f} sensors at 1 frame/s "
            f"or {fits / per_sensor:,.0f} streaming {SAMPLE_RATE / 1e3:g} kHz "
            f"({per_sensor:.2f} frames/s)")


WORKER_TARGET = Target(0.5, "1,000 signals one sample each per drain >= 0.5x one signal "
                             "batched (issue 12)")


def _worker_only(bench: Bench, signals: int, assets: int | None) -> None:
    """The worker alone (ingest untimed): ``signals`` signals one sample each per drain of
    1,000 messages, against one signal with the same 1,000 samples in one drain."""
    per = 1000
    subject = Feed("scalar", signals, per, seed=2, asset_signals=assets)
    reference = Feed("scalar", 1, per, seed=2, asset_signals=assets)
    for feed in (subject, reference):
        feed.warm(WARM_SAMPLES)
    drains = bench.size(5, 20)
    rates: list[list[float]] = [[], []]
    for _ in range(bench.mode.repeats):
        for k, feed in enumerate((subject, reference)):  # interleaved, as bench.compare does
            spent = 0.0
            for _ in range(drains):
                items = feed.drain()
                started = time.perf_counter()
                feed.worker.process(items)
                spent += time.perf_counter() - started
            rates[k].append(drains * per / spent)
    ratios = [a / b for a, b in zip(*rates, strict=True)]
    kind = "no asset detector" if assets == 0 else "default asset detectors"
    name = f"worker, {signals:,} scalar signals, one sample each a drain, {kind}"
    ratio = statistics.median(ratios)
    bench.add(Figure(
        area=bench.area, name=name, unit="samples/s",
        median=statistics.median(rates[0]), min=min(rates[0]), max=max(rates[0]),
        reference=f"worker, 1 signal, its {per:,} samples in one drain ({kind})",
        reference_median=statistics.median(rates[1]), reference_min=min(rates[1]),
        reference_max=max(rates[1]), ratio=ratio, ratio_min=min(ratios),
        ratio_max=max(ratios), repeats=bench.mode.repeats,
        target=WORKER_TARGET.minimum if assets == 0 else None,
        target_text=WORKER_TARGET.text if assets == 0 else "",
        passed=ratio >= WORKER_TARGET.minimum if assets == 0 else None,
        note=f"{1e6 / statistics.median(rates[0]):.2f} µs a sample in the worker "
             f"({1e6 / statistics.median(rates[1]):.2f} at 1 signal; issue 12's target <= 3); "
             f"ingest untimed; signals in banks (shopfloor.scoring.bank)",
    ))


def pipeline_bytes(kind: str, signals: int) -> float:
    """Bytes :mod:`tracemalloc` sees per pipeline after each has scored its warm-up batch."""
    cfg = config(signals)
    plant = Plant(cfg.pipeline)
    sub = 0 if kind == "scalar" else 1
    rng = np.random.default_rng(5)
    if kind == "scalar":
        data: Callable[[], np.ndarray] = lambda: rng.normal(50.0, 2.0, WARM_SAMPLES)  # noqa: E731
    else:
        data = lambda: rng.standard_normal((WARM_FRAMES, FRAME_LEN))  # noqa: E731
    batches = [data() for _ in range(signals)]  # allocated before counting starts
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(signals):
            pipe = plant.add_signal(cfg.subscriptions[sub].signal_spec("asset", f"s{i}"), sub)
            pipe.process(batches[i])
        # Results of the last batch are garbage now; what stays is the pipelines.
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / signals


def agent_signal_bytes(signals: int) -> float:
    """Bytes :mod:`tracemalloc` sees per scalar signal the agent's ingest and worker hold
    (pipeline or bank row, status, signal table, routes) once each signal has sent one
    message; no asset detectors, so the figure is the signal's own."""
    feed = Feed("scalar", signals, signals, seed=9, asset_signals=0)
    Feed("scalar", 2, 2, seed=9, asset_signals=0).batch()  # compiled before counting
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed.batch()  # one message per signal: each gets its pipeline or bank row
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(feed.worker.plant.signals) == signals
    return (after - before) / signals


def detector_bytes(detector: str, signals: int) -> float:
    """Bytes per scalar signal of one detector kind with the default threshold and alarm,
    each past its warm-up: a bank row for the default chain, else a pipeline of objects."""
    cfg = config(signals)
    spec0 = cfg.subscriptions[0].signal_spec("asset", "s0")
    stage = dataclasses.replace(spec0.stage, detector={"kind": detector})
    rng = np.random.default_rng(5)
    batches = [rng.normal(50.0, 2.0, WARM_SAMPLES) for _ in range(signals)]
    # Compiled (or loaded from the cache) before counting: that memory is the process's.
    Plant(cfg.pipeline).add_signal(dataclasses.replace(spec0, stage=stage), 0).process(
        batches[0])
    plant = Plant(cfg.pipeline)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(signals):
            spec = dataclasses.replace(spec0, name=f"s{i}", stage=stage)
            plant.add_signal(spec, 0).process(batches[i])
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / signals


#: Scalar detector kinds whose state per signal is reported (River's are models, not state).
SCALAR_KINDS = ("zscore", "ewma", "cusum", "page_hinkley", "robust_z", "flatline",
                "western_electric")


def _state_per_kind(bench: Bench) -> None:
    n = bench.size(200, 1000)
    rounds = bench.mode.repeats
    default = [detector_bytes("zscore", n) for _ in range(rounds)]
    for kind in SCALAR_KINDS[1:]:
        mine = [detector_bytes(kind, n) for _ in range(rounds)]
        ratios = [a / b for a, b in zip(default, mine, strict=True)]
        bench.add(Figure(
            area=bench.area, name=f"state per scalar signal, detector {kind}", unit="B",
            median=statistics.median(mine), min=min(mine), max=max(mine),
            reference="state per scalar signal, the default chain (zscore, in a bank)",
            reference_median=statistics.median(default), reference_min=min(default),
            reference_max=max(default), ratio=statistics.median(ratios),
            ratio_min=min(ratios), ratio_max=max(ratios), repeats=rounds, better="lower",
            note=f"tracemalloc over {n} signals past their warm-up; pot threshold and alarm "
                 "as by default; a pipeline of objects each (only the default chain banks)",
        ))
    n_agent = bench.size(2000, 10_000)
    agent = [agent_signal_bytes(n_agent) for _ in range(rounds)]
    ratios = [a / b for a, b in zip(default, agent, strict=True)]
    bench.add(Figure(
        area=bench.area, name="memory per scalar signal in the agent (ingest and worker)",
        unit="B", median=statistics.median(agent), min=min(agent), max=max(agent),
        reference="state per scalar signal, the default chain (zscore, in a bank)",
        reference_median=statistics.median(default), reference_min=min(default),
        reference_max=max(default), ratio=statistics.median(ratios), ratio_min=min(ratios),
        ratio_max=max(ratios), repeats=rounds, better="lower",
        note=f"tracemalloc over {n_agent:,} signals, one message each: "
             f"{statistics.median(agent) * 10_000 / 2**20:.0f} MiB for 10,000 signals "
             "(issue 12's target: <= 60 MB; <= 4 KiB of state each)",
    ))


def _memory(bench: Bench) -> None:
    n = bench.size(20, 50)
    rounds = bench.mode.repeats
    scalar = [pipeline_bytes("scalar", n) / KIB for _ in range(rounds)]
    frame = [pipeline_bytes("frame", n) / KIB for _ in range(rounds)]
    ratios = [s / f for s, f in zip(scalar, frame, strict=True)]
    bench.add(Figure(
        area=bench.area, name="memory per frame pipeline", unit="KiB",
        median=statistics.median(frame), min=min(frame), max=max(frame),
        reference="memory per scalar pipeline", reference_median=statistics.median(scalar),
        reference_min=min(scalar), reference_max=max(scalar),
        ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        repeats=rounds, better="lower",
        note=f"tracemalloc over {n} pipelines each, after a warm-up batch ({WARM_SAMPLES} "
        f"samples; {WARM_FRAMES} frames of {FRAME_LEN}); default stages (z-score, pot "
        "threshold, alarm)",
    ))

