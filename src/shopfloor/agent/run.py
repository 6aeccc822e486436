"""``shopfloor run``: the edge agent.

The paho network thread runs :class:`~shopfloor.receiving.ingest.Ingest` (decode, route, enqueue);
one worker thread drains the bounded queue through the pipelines and hands alarm changes to the
event sink; the main thread waits for SIGTERM or SIGINT and then stops things in order: intake
closes, the queue drains, events are flushed, the connection closes - all within
``agent.shutdown_timeout``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from shopfloor.agent.checkpoints import Checkpointer
from shopfloor.agent.config import AgentConfig, metrics_listen_error
from shopfloor.agent.events import EventSink
from shopfloor.agent.fleet import Fleet
from shopfloor.agent.metrics import AgentMetrics
from shopfloor.agent.metrics_server import MetricsServer, ServerSettings, TlsFileError
from shopfloor.agent.pool import ScoringPool
from shopfloor.agent.systemd import Notifier
from shopfloor.agent.warmup import warm_up
from shopfloor.agent.worker import AlarmChange, SignalStatus, Worker
from shopfloor.config import asset_id, signal_id
from shopfloor.logs import RateLimitedLog
from shopfloor.receiving.ingest import BoundedQueue, Ingest
from shopfloor.receiving.mqtt import MqttLink, MqttSettings, Presence, TlsSettings, read_password
from shopfloor.receiving.sparkplug_host import SparkplugHost, host_state
from shopfloor.scoring.detect.alarm import AlarmState
from shopfloor.scoring.pipeline import Plant

__all__ = ["Agent"]

log = logging.getLogger("shopfloor.agent.run")
#: Seconds between two alarm log lines of one signal (its events all go out on MQTT).
ALARM_LOG_INTERVAL = 10.0
#: Seconds a thread may hold the GIL while another waits for it (see Agent.run).
SWITCH_INTERVAL = 0.001


class Agent:
    """Everything the agent runs, built from one validated configuration."""

    def __init__(self, config: AgentConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.start_time = time.time()
        self.last_checkpoint: float | None = None
        self.queue = BoundedQueue(config.agent.queue_size, config.agent.drop_policy,
                                  config.agent.queue_bytes, config.agent.queue_samples)
        self.plant = Plant(config.pipeline)
        self.ingest = Ingest(config, self.queue)
        # What this agent owns, announced in its retained status, and who else scores what.
        self.fleet = Fleet(config.client_id, config.events.status_topic, config.events.prefix,
                           [s.template.filter for s in config.subscriptions], config.fleet,
                           stale_after=config.metrics.stale_after)
        m = config.mqtt
        self.link = MqttLink(
            MqttSettings(
                host=m.host,
                port=m.port,
                protocol="5" if m.protocol == "5" else "3.1.1",
                client_id=config.client_id,
                keepalive=m.keepalive,
                username=m.username or None,
                password=read_password(m.password_file or None, m.password_credential or None),
                tls=TlsSettings(
                    ca_file=m.ca_file or None,
                    cert_file=m.cert_file or None,
                    key_file=m.key_file or None,
                )
                if (m.tls or m.ca_file or m.cert_file)
                else None,
                clean_start=m.clean_start,
                session_expiry=m.session_expiry,
                reconnect_min_delay=m.reconnect_min_delay,
                reconnect_max_delay=m.reconnect_max_delay,
                receive_maximum=m.receive_maximum,
                presence=_presence(config, self.fleet),
            ),
            subscriptions=[(s.template.filter, s.qos) for s in config.subscriptions]
            + ([(self.fleet.peer_filter, 1)] if self.fleet.watching else []),
            on_message=self.fleet.route(self.ingest.on_message),
        )
        self.fleet.publish = self.link.update_presence
        # Sparkplug nodes whose aliases or sequence we lost are asked to be born again (NCMD,
        # QoS 0 as Sparkplug asks), from the network thread that decoded their DATA.
        self.ingest.sparkplug = SparkplugHost(lambda t, p: self.link.publish(t, p, qos=0))
        e = config.events
        self.events = EventSink(
            self.link, e.prefix, e.topic, e.state_topic, e.qos, agent=config.client_id
        )
        # One worker thread in this process, or scoring processes behind the same surface.
        self.worker: Worker | ScoringPool = (
            Worker(config, self.plant, self.queue, on_change=self._alarm_changed,
                   on_state=self._state_changed, admission=self.ingest.admitted)
            if config.workers == 1 else
            ScoringPool(config, self.queue, config.workers, on_change=self._alarm_changed,
                        on_state=self._state_changed, admission=self.ingest.admitted))
        directory = config.state.resolved()
        self.checkpoints = (Checkpointer(config, self.plant, directory,
                                         config.state.checkpoint_interval)
                            if directory is not None else None)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = AgentMetrics(self, self.registry, stale_after=config.metrics.stale_after)
        self.worker.on_batch = self.metrics.observe_batch
        self.metrics_server: MetricsServer | None = None
        self._errors = RateLimitedLog(log)
        # Alarm lines per signal at most every ALARM_LOG_INTERVAL s (the events all go out): a
        # flapping signal wrote 2,330 lines in 3.5 minutes from 4 signals. Keys are signal ids,
        # bounded by agent.max_signals.
        self._alarm_lines = RateLimitedLog(log, interval=ALARM_LOG_INTERVAL)
        self.worker_errors = 0  # batches that raised (logged, counted, the worker goes on)
        self._worker_thread: threading.Thread | None = None
        self._stop_worker = threading.Event()
        self.on_progress: Callable[[], None] = lambda: None  # the systemd watchdog hooks here
        # Inside a long batch too: every chunk of pipeline work is a sign of life.
        self.worker.heartbeat = lambda: self.on_progress()

    def start(self) -> None:
        """Restore checkpoints, start the worker and the connection (a broker that is down is
        retried)."""
        # Only levels every subscription names can place events (the config check's rule):
        # the others are no advice one could follow (the shipped example warned each start).
        subs = self.config.subscriptions
        common = [n for n in self.config.label_names if all(n in s.label_names for s in subs)]
        missing = [n for n in common if f"{{{n}}}" not in self.config.events.state_topic]
        if missing:
            log.warning("events.state_topic %r lacks %s: signals that differ only in those "
                        "levels share one retained state topic (their events tell them apart "
                        "by their labels); add them to the template",
                        self.config.events.state_topic,
                        ", ".join(f"{{{n}}}" for n in missing))
        if isinstance(self.worker, ScoringPool):
            self.worker.start()  # before the restore: each process restores its own share
        if self.checkpoints is not None:
            if isinstance(self.worker, ScoringPool):
                self.worker.restore(self.ingest.admitted)
            else:
                self.checkpoints.restore(self.ingest.admitted)
        else:
            log.warning("no state directory ([state] directory or $STATE_DIRECTORY): what the "
                        "pipelines learn is lost on restart")
        m = self.config.metrics
        # Listen before the worker starts: a port taken since the preflight check ends the
        # start as a config error (exit 2, the key to change) with nothing left running.
        try:
            self.metrics_server = MetricsServer(self.registry, _server_settings(self.config))
        except OSError as exc:
            raise metrics_listen_error(self.config, exc) from None
        except TlsFileError as exc:  # a file changed since the config was checked
            raise self.config.error(f"metrics.{exc.key}", str(exc)) from None
        self.metrics_server.start()
        if m.basic_auth_user and not m.cert_file:
            log.warning("metrics: basic auth without TLS sends the password in clear text; "
                        "set cert_file and key_file unless the network is yours alone")
        self._worker_thread = threading.Thread(
            target=self._work, name="shopfloor-worker", daemon=True
        )
        self._worker_thread.start()
        log.info(
            "metrics at %s://%s:%d/metrics",
            "https" if m.cert_file else "http",
            m.host,
            self.metrics_port,
        )
        self.link.start()
        log.info(
            "agent started: client_id=%s broker=%s:%d subscriptions=%s",
            self.config.client_id,
            self.config.mqtt.host,
            self.config.mqtt.port,
            ",".join(s.template.filter for s in self.config.subscriptions),
        )

    def _work(self) -> None:
        watched = 0.0
        while not self._stop_worker.is_set():
            try:
                self.worker.run_once(timeout=0.2)
                if time.monotonic() - watched >= 1.0:  # O(signals): once a second is plenty
                    watched = time.monotonic()
                    self.worker.watch_silence(time.time())
                # The worker alone reads its signal table; the fleet looks once a second.
                self.fleet.tick(list(self.worker.status.values()), time.time())
                if self.checkpoints is not None and self.checkpoints.due():
                    self._checkpoint()
            except Exception:  # a bug in one batch must not kill the worker (the loop counts)
                self.worker_errors += 1
                self._errors.log(logging.ERROR, "worker", "worker batch failed; continuing",
                                 exc_info=True)
            # Every turn is a sign of life, busy or idle (an idle turn ends after 0.2 s): a
            # worker stuck inside a batch or a checkpoint stops turning, and so stops the pings.
            self.on_progress()

    def _checkpoint(self) -> bool:
        assert self.checkpoints is not None
        if isinstance(self.worker, ScoringPool):
            tree = self.worker.tree()  # the scoring processes' parts, written as one file
            if tree is None:
                self.checkpoints.failed += 1
                return False
            written = self.checkpoints.write_tree(tree)
        else:
            written = self.checkpoints.write()
        if not written:
            return False
        self.last_checkpoint = self.checkpoints.last_written
        return True

    @property
    def metrics_port(self) -> int:
        """The port /metrics is served on (the real one when the config says 0)."""
        return self.metrics_server.port if self.metrics_server else 0

    def stop(self) -> bool:
        """Stop intake, drain, write the final checkpoint, flush events, disconnect.

        True - exit status 0 - only if nothing taken was lost: every message was scored or
        is still the broker's (QoS 1/2 messages are acknowledged only once scored), the final
        checkpoint is written and every event was acknowledged. Intake closes at once (new
        messages stay with the broker); the queue drains until ``agent.shutdown_timeout``;
        then a batch in progress is abandoned at its next chunk, so the checkpoint always
        follows, with the worker stopped.
        """
        timeout = self.config.agent.shutdown_timeout
        deadline = time.monotonic() + timeout
        # The drain may not take it all: events still need their acknowledgements, and a
        # broker busy with a flood takes a while (an overloaded drain left 0.5 s to flush them,
        # and the agent exited 1 with its events unconfirmed). What is not drained stays with
        # the broker anyway.
        drain_until = deadline - min(2.0, 0.2 * timeout)
        self.ingest.closed = True
        while ((len(self.queue) or self.queue.in_hand) and self._worker_alive()
               and time.monotonic() < drain_until):
            time.sleep(0.01)
        self.worker.stopping.set()
        self._stop_worker.set()
        if self._worker_thread is not None:
            # Abandoning takes one chunk of work (milliseconds): wait a little past the
            # deadline rather than lose the checkpoint.
            self._worker_thread.join(max(1.0, deadline - time.monotonic()))
        worker_done = not self._worker_alive()
        if isinstance(self.worker, ScoringPool):  # the batches handed out: answered or not
            worker_done = self.worker.settle(max(1.0, deadline - time.monotonic())) and \
                worker_done
        left = self.queue.take_all()  # never scored
        lost = sum(1 for item in left if item.receipt is None)  # QoS 0: nobody has them now
        checkpointed = True
        if self.checkpoints is not None:
            if worker_done:
                checkpointed = self._checkpoint()  # the worker is done: the plant is ours
            else:
                checkpointed = False
                log.error("the worker did not stop within the shutdown timeout: no final "
                          "checkpoint (what it learned since %s is lost)",
                          "the last one" if self.last_checkpoint else "the start")
        if isinstance(self.worker, ScoringPool):
            self.worker.close()
        flushed = bool(self.link.stop(max(0.5, deadline - time.monotonic())))
        if self.metrics_server is not None:
            self.metrics_server.close()  # within a second, whatever its connections do
        # Drained: nothing taken was left unscored - not a message in the queue, not a batch
        # abandoned half-way (the queue alone being empty said drained=True for those).
        drained = worker_done and not left and not self.worker.abandoned
        log.info(
            "agent stopped: drained=%s flushed=%s processed=%d left_with_broker=%d lost=%d "
            "checkpoint=%s",
            drained,
            flushed,
            self.worker.processed,
            # Taken but not scored (unacknowledged), and refused since intake closed.
            self.link.owed + self.ingest.deferred,
            lost,
            "none" if self.checkpoints is None else "written" if checkpointed else "FAILED",
        )
        if lost:
            log.warning("%d QoS 0 message(s) were still queued at the stop and are lost "
                        "(use QoS 1 subscriptions to leave them with the broker)", lost)
        return worker_done and checkpointed and flushed and not lost

    def _worker_alive(self) -> bool:
        return self._worker_thread is not None and self._worker_thread.is_alive()

    def run(self, stop: threading.Event, notifier: Notifier | None = None) -> int:
        """Warm up, start, run until ``stop`` is set (by a signal handler), stop; exit code 0
        on a clean stop. ``notifier`` tells systemd how far it got (``Type=notify``)."""
        notify = notifier if notifier is not None else Notifier(environ={})
        notify.status("warming up: compiling the pipelines' kernels")
        # Before READY: no compile stall on the first message (scoring processes warm up as
        # they start).
        warmed = warm_up(self.config).describe() if isinstance(self.worker, Worker) else ""
        # What start-up made (modules, compiled kernels, the warm-up's objects) lives as long
        # as the process: out of the garbage collector's sight, a full collection no longer
        # walks it, which took a scored sample's latency past 10 ms now and then.
        gc.collect()
        gc.freeze()
        # The network thread releases the GIL for every packet it reads and must take it back
        # from the worker thread, which keeps it up to the switch interval: at the default
        # 5 ms the messages queued in the socket behind a busy worker waited in 5 ms steps.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if notify.watchdog_interval is not None:

            def ping() -> None:  # on every turn of the worker loop; the notifier rate-limits
                notify.watchdog(self._status_line)

            self.on_progress = ping
        self.start()
        if isinstance(self.worker, ScoringPool):
            warmed = self.worker.describe()
        notify.ready(f"running: {warmed}; /metrics on port {self.metrics_port}")
        stop.wait()
        notify.stopping("stopping: draining the queue and flushing events")
        return 0 if self.stop() else 1

    def _status_line(self) -> str:
        # Called from the worker thread, which alone writes the statuses.
        alarms = sum(s.state == AlarmState.ACTIVE for s in list(self.worker.status.values()))
        return (f"running: {self.worker.processed} messages, {len(self.worker.status)} "
                f"signals, {alarms} in alarm")

    def _alarm_changed(self, change: AlarmChange) -> None:
        self.events.alarm(change)
        labels = tuple(change.labels.items())
        # The whole identity: two lines' station-1/torque are two signals, logged apart.
        who = (signal_id(change.asset, change.signal, labels) if change.signal
               else f"asset {asset_id(change.asset, labels)}")
        self._alarm_lines.log(
            logging.INFO,
            who,
            "alarm %s: %s score=%.3g threshold=%.3g",
            change.kind,
            who,
            change.score,
            change.threshold,
        )

    def _state_changed(self, status: SignalStatus) -> None:
        self.events.state(
            status.asset,
            status.name,
            status.state,
            status.score,
            status.threshold,
            status.last_time,
            status.labels,
            status.likelihood,
        )


def _server_settings(config: AgentConfig) -> ServerSettings:
    # [metrics] holds every field of the server's settings (and stale_after, which is ours).
    return ServerSettings(**{f.name: getattr(config.metrics, f.name)
                             for f in dataclasses.fields(ServerSettings)})


def _presence(config: AgentConfig, fleet: Fleet) -> tuple[Presence, ...]:
    """The agent's presence messages (see EventSettings.status_topic: the fleet's status,
    which lists what the agent owns), and a Sparkplug host application's STATE (Sparkplug 3.0
    requires it to be the will, so it comes first)."""
    agent = config.client_id
    if any(c in agent for c in "/+#"):
        raise config.error("mqtt.client_id", "names the agent's status topic level: no '/', "
                           "'+' or '#'")
    presence: tuple[Presence, ...] = (fleet.presence(),)
    host = config.mqtt.sparkplug_host_id
    if host:
        presence = (host_state(host, int(time.time() * 1000)), *presence)
    return presence
