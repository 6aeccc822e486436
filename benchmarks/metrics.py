"""Metrics area: what a /metrics scrape costs at the signal cap, and what metrics cost a message.

An in-process :class:`shopfloor.agent.run.Agent` (never started: no broker, no HTTP server) holds
2,000 scalar signals, each fed 200 samples through its worker, so every per-signal series is
there with finite values. Its registry is what ``/metrics`` serves.

====================================================  ==========================================
subject                                               reference
====================================================  ==========================================
render /metrics (``generate_latest`` on the agent's   a plain registry holding the same series
registry: scrape-time collector, histograms,          (one ordinary ``Gauge`` per sample name,
process collector)                                    same labels and values)
worker batch, metrics histograms observed             the same batch, ``on_batch`` a no-op
per message: histograms + a scrape every 15 s          per message, ``on_batch`` a no-op, no
amortised at 2,000 messages/s                          scrape
====================================================  ==========================================

The per-message figures drive the worker as the agent does: each batch is one 50 ms drain of
the queue at 2,000 messages/s (the cap's 2,000 signals at 1 sample/s), 100 single-sample
messages of 100 distinct signals. They cover the worker only (not MQTT or decoding), so the
metrics' share of the whole agent's per-message cost is lower still than the share shown.
Alarm events and state messages go nowhere (``on_change``/``on_state`` no-ops): with no broker
they would only be refused, which is not what a live agent pays.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness import Bench, Case, Figure, _time, agree
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.agent.worker import Worker
from shopfloor.receiving.codecs import Samples
from shopfloor.receiving.ingest import Item

__all__ = ["build_agent", "plain_registry", "run"]

SIGNALS = 2_000  # the cap the figures are for
SIGNALS_PER_ASSET = 40
HISTORY = 200  # samples per signal before timing: past warm-up, so thresholds are finite
MESSAGE_RATE = 2_000.0  # messages/s: every signal at 1 sample/s
DRAIN_S = 0.05  # the worker's drain period the batches stand for
SCRAPE_INTERVAL_S = 15.0

CONFIG = """
[mqtt]
host = "127.0.0.1"
client_id = "sfbench-metrics"

[metrics]
port = 0

[agent]
max_signals = {signals}
workers = 1  # the scrape's cost, one process's statuses

[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"
"""


def signal_id(i: int) -> str:
    """The ``asset/signal`` name of signal ``i``: 40 signals per asset."""
    return f"cell-{i // SIGNALS_PER_ASSET}/q{i % SIGNALS_PER_ASSET}"


def build_agent(signals: int, history: int, seed: int = 20240504) -> Agent:
    """An agent (not started) whose worker has scored ``history`` samples of each signal."""
    agent = Agent(parse_agent_config(CONFIG.format(signals=signals), source="bench.toml"),
                  CollectorRegistry())
    assert isinstance(agent.worker, Worker), "the config says workers = 1"
    agent.worker.on_change = lambda change: None
    agent.worker.on_state = lambda status: None
    rng = np.random.default_rng(seed)
    now = time.time()
    stamps = now - history + np.arange(history, dtype=np.float64)
    items = [Item(signal_id(i), 0, (), Samples(stamps, rng.normal(10.0, 1.0, history)), now)
             for i in range(signals)]
    agent.worker.process(items)
    return agent


def plain_registry(exposition: str) -> CollectorRegistry:
    """Every sample of ``exposition`` as a child of an ordinary ``Gauge`` in a new registry."""
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            gauge = gauges.get(sample.name)
            if gauge is None:
                gauge = Gauge(sample.name, family.documentation or sample.name,
                              labelnames=sorted(sample.labels), registry=registry)
                gauges[sample.name] = gauge
            (gauge.labels(**sample.labels) if sample.labels else gauge).set(sample.value)
    return registry


def series(exposition: bytes) -> int:
    """Sample lines in an exposition."""
    return sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))


def run(bench: Bench) -> None:
    """The scrape figure and the two per-message figures."""
    agent = bench.first_call("build the agent (2,000 signals)",
                             lambda: build_agent(SIGNALS, HISTORY))
    scrape = _scrape(bench, agent)
    _per_message(bench, agent, scrape)


def _scrape(bench: Bench, agent: Agent) -> float:
    """Render time of /metrics against the plain registry; returns the median seconds."""
    text = generate_latest(agent.registry)
    plain = plain_registry(text.decode())
    n = series(text)
    agree("/metrics", "plain Gauges", series(generate_latest(plain)), n)
    fig, = bench.compare(
        Case(f"render /metrics, {SIGNALS} signals", lambda: generate_latest(agent.registry),
             None, unit="s",
             note=f"{n} series ({len(text) / 1024:.0f} KiB), scrape-time collector + histograms "
             "+ process collector"),
        [Case("plain registry, same series as Gauges", lambda: generate_latest(plain), None,
              unit="s")],
    )
    return fig.median


def _batches(signals: int) -> list[list[Item]]:
    """One 50 ms drain per batch, each signal once per second: 100 distinct signals a batch."""
    per_batch = round(MESSAGE_RATE * DRAIN_S)
    rng = np.random.default_rng(7)
    now = time.time()
    out = []
    for start in range(0, signals, per_batch):
        out.append([Item(signal_id(i), 0, (), Samples(np.array([now]),
                                                      rng.normal(10.0, 1.0, 1)), now)
                    for i in range(start, min(signals, start + per_batch))])
    return out


def _per_message(bench: Bench, agent: Agent, scrape_s: float) -> None:
    """Batches with the histograms vs with ``on_batch`` a no-op, interleaved per round; then the
    same with a scrape every 15 s spread over the messages in between."""
    worker = agent.worker
    assert isinstance(worker, Worker)
    observe = agent.metrics.observe_batch
    batches = _batches(SIGNALS)
    per_batch = len(batches[0])
    turn = [0]

    def batch(on_batch: Callable[[float, list[float]], None]) -> Callable[[], None]:
        def go() -> None:
            worker.on_batch = on_batch
            worker.process(batches[turn[0] % len(batches)])
            turn[0] += 1
        return go

    with_metrics, without = batch(observe), batch(lambda duration, lags: None)
    bench.first_call("worker batch, metrics histograms observed", with_metrics)
    once = min(_time(with_metrics, 1), _time(without, 1))
    calls = max(len(batches), int(bench.mode.min_time / once) + 1)
    calls += -calls % len(batches)  # whole cycles: every round sees every signal equally often
    rounds = bench.mode.repeats
    t_with, t_without, t_scrape = [], [], []
    for _ in range(rounds):
        t_with.append(_time(with_metrics, calls) / (calls * per_batch))
        t_without.append(_time(without, calls) / (calls * per_batch))
        t_scrape.append(_time(lambda: generate_latest(agent.registry), 1))
    worker.on_batch = observe
    between = MESSAGE_RATE * SCRAPE_INTERVAL_S  # messages per scrape interval
    with_scrape = [w + s / between for w, s in zip(t_with, t_scrape, strict=True)]
    us = 1e6
    hist_share = _share(t_with, t_without)
    total_share = _share(with_scrape, t_without)
    setting = (f"batches of {per_batch} messages of distinct signals (a 50 ms drain at "
               f"{MESSAGE_RATE:.0f} msgs/s), {SIGNALS} signals")
    _add(bench, "worker batch, metrics histograms observed", "messages/s",
         [1.0 / t for t in t_with], "worker batch, on_batch a no-op",
         [1.0 / t for t in t_without], "higher",
         f"{setting}; histograms' share of the worker's per-message cost "
         f"{hist_share:.1f}% (median of rounds; noise is of the same order)")
    _add(bench, "per message: histograms + a scrape every 15 s", "µs/message",
         [t * us for t in with_scrape], "per message, no metrics", [t * us for t in t_without],
         "lower",
         f"{setting}; a scrape ({statistics.median(t_scrape) * 1e3:.1f} ms here, "
         f"{scrape_s * 1e3:.1f} ms in the render figure) spread over the "
         f"{between:.0f} messages of {SCRAPE_INTERVAL_S:.0f} s adds "
         f"{statistics.median(t_scrape) / between * us:.2f} µs a message; metrics' share of "
         f"the worker's per-message cost {total_share:.1f}%")
    bench.progress(f"[{bench.area}] metrics' share per message: histograms {hist_share:.1f}%, "
                   f"with scrapes every {SCRAPE_INTERVAL_S:.0f} s {total_share:.1f}%")


def _share(subject: list[float], reference: list[float]) -> float:
    """Median over rounds of (subject - reference) / subject, in percent (noise can make it < 0)."""
    return statistics.median(100.0 * (s - r) / s for s, r in zip(subject, reference, strict=True))


def _add(bench: Bench, name: str, unit: str, subject: list[float], reference: str,
         values: list[float], better: str, note: str) -> None:
    """A figure from rounds measured here; the ratio is per round, "times better" as always."""
    ratios = [s / r if better == "higher" else r / s
              for s, r in zip(subject, values, strict=True)]
    bench.add(Figure(
        area=bench.area, name=name, unit=unit,
        median=statistics.median(subject), min=min(subject), max=max(subject),
        reference=reference, reference_median=statistics.median(values),
        reference_min=min(values), reference_max=max(values),
        ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        repeats=len(subject), note=note, better=better,
    ))
