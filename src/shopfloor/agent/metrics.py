"""Prometheus metrics of the agent, read from its state at scrape time.

Per-message work stays out of the hot path: the custom collector walks the worker's signal
status, the ingest and queue counters and the MQTT link when Prometheus scrapes, so a message
costs no metric update at all. Only the two histograms (batch processing time and lag) are
observed by the worker, once per batch. Nothing here touches the global registry: the agent
passes its own.

Label sets are bounded: signals by the agent's signal cap, reasons by fixed sets, and a signal
silent for ``stale_after`` seconds drops out of the exposition (its model stays in memory).
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numba
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from shopfloor import __version__
from shopfloor.agent.checkpoints import Checkpointer
from shopfloor.agent.config import AgentConfig
from shopfloor.agent.events import EventSink
from shopfloor.agent.fleet import Fleet
from shopfloor.agent.pool import ScoringPool
from shopfloor.agent.worker import Worker
from shopfloor.receiving.ingest import BoundedQueue, Ingest
from shopfloor.receiving.mqtt import MqttLink
from shopfloor.scoring.detect.alarm import AlarmState


class AgentParts(Protocol):
    """What the metrics read of the agent (:class:`shopfloor.agent.run.Agent` has them all): a
    protocol, so that this module needs nothing of the agent's and the agent imports it."""

    config: AgentConfig
    start_time: float
    last_checkpoint: float | None
    worker_errors: int
    queue: BoundedQueue
    ingest: Ingest
    link: MqttLink
    events: EventSink
    fleet: Fleet
    checkpoints: Checkpointer | None
    worker: Worker | ScoringPool

__all__ = ["AgentCollector", "AgentMetrics"]

# Lag spans a fast LAN (ms) to a backlog after a reconnect (minutes).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    # A batch that takes longer is what starves the systemd watchdog (WatchdogSec=30): up to a
    # minute, so such batches show instead of hiding in the largest bucket.
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class AgentMetrics:
    """Everything the agent exports, registered in ``registry``."""

    def __init__(
        self,
        agent: AgentParts,
        registry: CollectorRegistry,
        stale_after: float = 3600.0,
        process: bool = True,
    ) -> None:
        self.registry = registry
        self.processing = Histogram(
            "shopfloor_processing_duration_seconds",
            "Time to run the pipelines over one batch.",
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.lag = Histogram(
            "shopfloor_lag_seconds",
            "From a sample's own timestamp to the moment it was scored (a sample stamped "
            "ahead of the agent's clock counts as 0: see shopfloor_clock_ahead_*).",
            registry=registry,
            buckets=LAG_BUCKETS,
        )
        # A publisher whose clock runs ahead made lags negative (a sum of -2.5e6 s in the
        # demo), which broke the lag panels and alert: such samples are counted, and how far
        # ahead is a gauge of its own.
        self.ahead = Counter(
            "shopfloor_clock_ahead_samples",
            "Messages whose latest sample was stamped later than the agent's clock when scored "
            "(publisher clock skew), of those whose lag is measured: up to 64 per signal and "
            "batch.",
            registry=registry,
        )
        self.ahead_seconds = Gauge(
            "shopfloor_clock_ahead_seconds",
            "How far ahead of the agent's clock the latest batch's samples were stamped, at "
            "most (0: none ahead). Check NTP on the publishers when it stays above a second.",
            registry=registry,
        )
        registry.register(AgentCollector(agent, stale_after))
        if process:
            ProcessCollector(namespace="", registry=registry)

    def observe_batch(self, duration: float, lags: list[float]) -> None:
        """Called by the worker once per batch."""
        self.processing.observe(duration)
        ahead = 0.0
        count = 0
        for lag in lags:
            if lag < 0.0:
                ahead = max(ahead, -lag)
                count += 1
                lag = 0.0
            self.lag.observe(lag)
        if count:
            self.ahead.inc(count)
        self.ahead_seconds.set(ahead)


class AgentCollector(Collector):
    """Builds the metric families from the agent's state on every scrape."""

    def __init__(self, agent: AgentParts, stale_after: float) -> None:
        self.agent = agent
        self.stale_after = stale_after

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        a = self.agent
        now = time.time()
        yield from self._signals(now)
        yield from self._assets()
        received = CounterMetricFamily("shopfloor_messages_received", "MQTT messages received.")
        received.add_metric([], a.ingest.received)
        yield received
        rejected = CounterMetricFamily(
            "shopfloor_messages_rejected",
            "Messages refused before any pipeline, by reason.",
            labels=["reason"],
        )
        reasons = dict(a.ingest.rejected)
        if a.worker.evicted_items:  # queued, then its signal was evicted before scoring
            reasons["evicted"] = a.worker.evicted_items
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([reason], count)
        yield rejected
        evicted = CounterMetricFamily(
            "shopfloor_signals_evicted",
            "Signals evicted from the full signal table to admit a new one, by reason "
            "(never_valid: no valid sample yet; idle: silent for agent.evict_idle_after).",
            labels=["reason"],
        )
        for reason, count in a.ingest.admitted.evictions.items():
            evicted.add_metric([reason], count)
        yield evicted
        dropped = CounterMetricFamily(
            "shopfloor_messages_dropped",
            "Decoded messages dropped because the queue was full, by the bound it reached "
            "(items, bytes or samples).",
            labels=["reason"],
        )
        for reason, count in a.queue.drops.items():  # a fixed set: DROP_REASONS
            dropped.add_metric([reason], count)
        yield dropped
        yield _gauge("shopfloor_queue_depth", "Items waiting for the worker.", len(a.queue))
        yield _gauge("shopfloor_queue_capacity", "The queue's bound.", a.queue.capacity)
        yield _gauge("shopfloor_queue_bytes", "Memory held by the queued items.", a.queue.bytes)
        yield _gauge("shopfloor_queue_capacity_bytes", "The queue's bound in bytes.",
                     a.queue.max_bytes)
        yield _gauge("shopfloor_queue_samples", "Samples waiting for the worker.",
                     a.queue.samples)
        yield _gauge("shopfloor_queue_capacity_samples", "The queue's bound in samples.",
                     a.queue.max_samples)
        yield _gauge("shopfloor_signals", "Signals with a pipeline.", a.worker.signal_count)
        yield _gauge("shopfloor_signals_max", "The signal cap.", a.config.agent.max_signals)
        yield _gauge(
            "shopfloor_mqtt_connected", "1 while connected to the broker.", float(a.link.connected)
        )
        reconnects = CounterMetricFamily(
            "shopfloor_mqtt_reconnects", "Connections made after the first."
        )
        reconnects.add_metric([], a.link.reconnects)
        yield reconnects
        for name, help_text, value in (
            ("shopfloor_mqtt_connect_failures", "Connection attempts that failed (TCP, TLS, "
             "refused CONNACK); the log names the cause.", a.link.connect_failures),
            ("shopfloor_mqtt_subscribe_failures", "Subscriptions the broker refused.",
             a.link.subscribe_failed),
            ("shopfloor_mqtt_callback_errors", "Messages whose handler raised (logged).",
             a.link.callback_errors),
            ("shopfloor_sparkplug_births_evicted", "Sparkplug BIRTH entries evicted from the "
             "full alias table (never used first, then least recently used).",
             a.ingest.aliases.evicted),
        ):
            counter = CounterMetricFamily(name, help_text)
            counter.add_metric([], value)
            yield counter
        events = CounterMetricFamily("shopfloor_events_published", "Anomaly events published.")
        events.add_metric([], a.events.published)
        yield events
        failed = CounterMetricFamily(
            "shopfloor_events_failed", "Anomaly events that could not be published."
        )
        failed.add_metric([], a.events.failed)
        yield failed
        if a.checkpoints is not None:
            ckfail = CounterMetricFamily("shopfloor_checkpoint_failures",
                                         "Checkpoint writes the disk refused (logged).")
            ckfail.add_metric([], a.checkpoints.failed)
            yield ckfail
        errors = CounterMetricFamily(
            "shopfloor_worker_errors", "Batches, or one signal's part of one, the worker failed on "
            "(logged; the rest goes on)."
        )
        errors.add_metric([], a.worker_errors + a.worker.signal_errors)
        yield errors
        checkpoint = a.last_checkpoint
        if checkpoint is not None:
            yield _gauge(
                "shopfloor_checkpoint_last_timestamp_seconds",
                "When the pipelines' state was last written to disk.",
                checkpoint,
            )
        yield _gauge("shopfloor_start_time_seconds", "When the agent started.", a.start_time)
        info = InfoMetricFamily("shopfloor_build", "Versions of shopfloor and its engines.")
        info.add_metric(
            [],
            {
                "version": __version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
                "numba": numba.__version__,
            },
        )
        yield info
        yield from _scoring(a.worker)
        yield from a.fleet.collect()  # what it announces, and the signals it shares

    def _signals(self, now: float) -> Iterator[object]:
        # The topic's other named levels too (site, line, ...): two lines' station-1/torque
        # are two signals. Bounded: the names come from the templates, not from the topics.
        names = self.agent.config.label_names
        labels = ["asset", "signal", *names]
        fam: dict[str, Any] = {
            "score": GaugeMetricFamily(
                "shopfloor_signal_score",
                "Latest anomaly score (higher = more anomalous).",
                labels=labels,
            ),
            "threshold": GaugeMetricFamily(
                "shopfloor_signal_threshold",
                "Threshold in force for the latest score.",
                labels=labels,
            ),
            "likelihood": GaugeMetricFamily(
                "shopfloor_signal_likelihood",
                "Anomaly likelihood of the latest score, 0 to 1: how improbable the recent "
                "scores are against the signal's long-run scores.",
                labels=labels,
            ),
            "active": GaugeMetricFamily(
                "shopfloor_signal_alarm_active",
                "1 while the signal's alarm is raised.",
                labels=labels,
            ),
            "warming": GaugeMetricFamily(
                "shopfloor_signal_warming_up",
                "1 while the signal is still learning before alarms.",
                labels=labels,
            ),
            "value": GaugeMetricFamily(
                "shopfloor_signal_value", "Latest accepted value of a scalar signal.",
                labels=labels,
            ),
            "feature": GaugeMetricFamily(
                "shopfloor_signal_feature", "Latest features of a vibration frame signal.",
                labels=[*labels, "feature"],
            ),
            # One series per frame signal; the defect label takes one of 7 fixed names.
            "defect": InfoMetricFamily(
                "shopfloor_signal_defect",
                "The defect the latest frame of a vibration signal points to (none: no "
                "evidence).",
                labels=labels,
            ),
            "zone": GaugeMetricFamily(
                "shopfloor_signal_iso_zone",
                "ISO 20816-3 zone of the latest frame's velocity rms: 1 = A, 2 = B, 3 = C, 4 = D.",
                labels=labels,
            ),
            "last": GaugeMetricFamily(
                "shopfloor_signal_last_sample_timestamp_seconds",
                "Timestamp of the latest sample.",
                labels=labels,
            ),
            "raised": CounterMetricFamily(
                "shopfloor_signal_alarms_raised", "Alarms raised.", labels=labels
            ),
            "adopted": CounterMetricFamily(
                "shopfloor_signal_baselines_adopted",
                "Alarms that ended by adopting the shifted level as the new baseline.",
                labels=labels,
            ),
            "silent": GaugeMetricFamily(
                "shopfloor_signal_silent",
                "1 while the signal has sent nothing for agent.silence_intervals of its own "
                "message intervals (its silence alarm).",
                labels=labels,
            ),
            "scored": CounterMetricFamily(
                "shopfloor_signal_samples_scored", "Samples (or frames) scored.", labels=labels
            ),
            # What dashboards need to print a value: its unit (the config's) and kind.
            "info": InfoMetricFamily(
                "shopfloor_signal", "A signal's unit of measure and kind.", labels=labels
            ),
            "rejected": CounterMetricFamily(
                "shopfloor_signal_samples_rejected",
                "Samples (or frames) refused, by reason.",
                labels=[*labels, "reason"],
            ),
        }
        worker = self.agent.worker
        for sid, status in list(worker.status.items()):
            if now - status.last_arrival > self.stale_after and not status.silent:
                # Gone quiet without a silence alarm (too few messages to know its rate): its
                # series go away; the model stays for when it returns. A signal in silence
                # alarm keeps them, its alarm state included, until it speaks again.
                continue
            lv = [status.asset, status.name, *(status.labels.get(n, "") for n in names)]
            if math.isfinite(status.score):
                fam["score"].add_metric(lv, status.score)
            if not math.isnan(status.threshold):
                fam["threshold"].add_metric(lv, status.threshold)
            if math.isfinite(status.likelihood):  # NaN until a sample is scored: no sample
                fam["likelihood"].add_metric(lv, status.likelihood)
            fam["active"].add_metric(lv, float(status.state == AlarmState.ACTIVE))
            fam["silent"].add_metric(lv, float(status.silent))
            fam["warming"].add_metric(lv, float(status.state == AlarmState.WARMING_UP))
            if math.isfinite(status.value):
                fam["value"].add_metric(lv, status.value)
            for feature, value in status.features.items():
                if math.isfinite(value):
                    fam["feature"].add_metric([*lv, feature], value)
            if status.defect is not None:
                fam["defect"].add_metric(lv, {"defect": status.defect})
            if status.iso_zone:
                fam["zone"].add_metric(lv, status.iso_zone)
            if math.isfinite(status.last_time):
                fam["last"].add_metric(lv, status.last_time)
            fam["raised"].add_metric(lv, status.alarms)
            fam["adopted"].add_metric(lv, status.adopted)
            counts = worker.signal_counts(sid)
            if counts is not None:
                fam["info"].add_metric(lv, {"unit": counts.unit, "kind": counts.kind})
                fam["scored"].add_metric(lv, counts.scored)
                for reason, count in sorted(counts.rejected.items()):
                    fam["rejected"].add_metric([*lv, reason], count)
        yield from fam.values()

    def _assets(self) -> Iterator[object]:
        names = self.agent.config.label_names
        asset_labels = ["asset", *names]
        score = GaugeMetricFamily(
            "shopfloor_asset_score", "Latest asset-level score.", labels=asset_labels
        )
        active = GaugeMetricFamily(
            "shopfloor_asset_alarm_active",
            "1 while the asset-level alarm is raised.",
            labels=asset_labels,
        )
        likelihood = GaugeMetricFamily(
            "shopfloor_asset_likelihood",
            "Anomaly likelihood of the latest asset-level score, 0 to 1.",
            labels=asset_labels,
        )
        raised = CounterMetricFamily(
            "shopfloor_asset_alarms_raised", "Asset-level alarms raised.", labels=asset_labels
        )
        adopted = CounterMetricFamily(
            "shopfloor_asset_baselines_adopted",
            "Asset-level alarms that ended by adopting the shifted level as the new baseline.",
            labels=asset_labels,
        )
        top = InfoMetricFamily(
            "shopfloor_asset_alarm_top_signal",
            "The signal that contributed most to the asset's last alarm.",
            labels=asset_labels,
        )
        for status in list(self.agent.worker.asset_status.values()):
            lv = [status.asset, *(status.labels.get(n, "") for n in names)]
            if math.isfinite(status.score):
                score.add_metric(lv, status.score)
            if math.isfinite(status.likelihood):
                likelihood.add_metric(lv, status.likelihood)
            active.add_metric(lv, float(status.state == AlarmState.ACTIVE))
            raised.add_metric(lv, status.alarms)
            adopted.add_metric(lv, status.adopted)
            if status.top is not None:
                top.add_metric(lv, {"signal": status.top})
        yield from (score, likelihood, active, raised, adopted, top)


def _scoring(worker: object) -> Iterator[object]:
    """The scoring processes (agent.workers above 1): how many, their restarts, the batches
    given up, and each one's memory (the process_* series are the receiving process's)."""
    if not isinstance(worker, ScoringPool):
        yield _gauge("shopfloor_scoring_processes", "Scoring processes (0: the agent's own "
                     "process scores).", 0)
        return
    yield _gauge("shopfloor_scoring_processes", "Scoring processes (0: the agent's own "
                 "process scores).", worker.count)
    restarts = CounterMetricFamily(
        "shopfloor_scoring_restarts", "Scoring processes that died (or hung) and were started "
        "again from the last checkpoint.")
    restarts.add_metric([], worker.restarts)
    yield restarts
    lost = CounterMetricFamily(
        "shopfloor_scoring_batches_lost", "Batches in flight at two deaths of their scoring "
        "process: acknowledged without being scored.")
    lost.add_metric([], worker.batches_lost)
    yield lost
    rss = GaugeMetricFamily("shopfloor_scoring_resident_memory_bytes",
                            "Resident memory of each scoring process.", labels=["process"])
    for index, pid in enumerate(worker.pids):
        size = _resident_bytes(pid)
        if size is not None:
            rss.add_metric([str(index)], size)
    yield rss


def _resident_bytes(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return float(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # gone, or not Linux
        return None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g
