"""``shopfloor demo``: the whole path on one machine, live.

A loopback Mosquitto on a free port, the simulated plant publishing to it (faster than real time
so the faults show within a minute), the agent with its metrics endpoint, and a live terminal
view until Ctrl-C (or ``--duration``). At the end it prints which signals alarmed and when,
against the simulator's ground truth (see :mod:`shopfloor.tools.demo_summary` for how a fault that
had not begun, or had barely begun, is told from a miss). Times are printed on the wall clock,
as the log lines are: the simulator's own clock runs ``--speed`` times faster. ``--offline``
replays a synthetic CSV instead, with no broker at all.
"""

from __future__ import annotations

import argparse
import math
import signal
import tempfile
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.run import Agent
from shopfloor.agent.worker import AlarmChange
from shopfloor.errors import UserError
from shopfloor.tools.broker import INSTALL_HINT, BrokerError, Mosquitto, find_mosquitto, free_port
from shopfloor.tools.demo_summary import DemoClock, SignalSeen, report_text
from shopfloor.tools.embedded_broker import EmbeddedBroker
from shopfloor.tools.liveview import AgentView, AlarmLog, AssetView, SignalView, run_view
from shopfloor.tools.simulate import Plant, agent_config_toml, publish, standard_faults

__all__ = ["add_arguments", "demo_plant", "log_alarms", "report", "run_demo", "view_of"]

FAULT_START = 300.0  # simulated seconds: baselines have 600 samples at 2 a second by then


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=float, metavar="SECONDS",
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--speed", type=float, default=10.0, metavar="X",
                   help="simulated seconds per wall-clock second (default: 10)")
    p.add_argument("--metrics-port", type=int, default=9817,
                   help="port of the agent's /metrics (default: 9817; 0 = any free port)")
    p.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto",
                   help="auto: Mosquitto when installed, else an embedded broker (the 'demo' "
                   "extra; MQTT 3.1.1)")
    p.add_argument("--offline", action="store_true",
                   help="replay a synthetic pump CSV instead (no broker needed)")
    p.add_argument("--out", default="shopfloor-demo",
                   help="folder for the offline demo's files (default: shopfloor-demo)")


def demo_plant() -> Plant:
    """Two motors and two quality stations; motor-1 and station-2 develop faults."""
    faults = (*standard_faults("motor-1", FAULT_START), *standard_faults("station-2", FAULT_START))
    return Plant(vibration_assets=2, quality_assets=2, faults=faults, seed=7)


def view_of(agent: Agent, alarms: AlarmLog | None = None) -> AgentView:
    """The live view's snapshot of the agent (and of ``alarms``, see :func:`log_alarms`)."""
    signals = [
        SignalView(asset=s.asset, signal=s.name, messages=s.messages, score=s.score,
                   threshold=s.threshold, state=s.state.name, alarms=s.alarms,
                   labels=tuple(s.labels.items()))
        for s in list(agent.worker.status.values())
    ]
    assets = [AssetView(asset=a.asset, score=a.score, state=a.state.name, alarms=a.alarms,
                        labels=tuple(a.labels.items()))
              for a in list(agent.worker.asset_status.values())]
    return AgentView(signals=signals, received=agent.ingest.received,
                     rejected=sum(agent.ingest.rejected.values()), dropped=agent.queue.dropped,
                     events=agent.events.published, uptime_s=time.time() - agent.start_time,
                     assets=assets, alarms=alarms.recent() if alarms is not None else ())


def log_alarms(agent: Agent, alarms: AlarmLog) -> None:
    """Copy every alarm change of ``agent`` into ``alarms`` (call before ``agent.start()``).

    The agent's alarm log lines are rate-limited per signal, and on a terminal the view's next
    redraw wipes them anyway: the view keeps its own bounded copy of every change.
    """
    forward = agent.worker.on_change  # the agent's own: events and log lines

    def on_change(change: AlarmChange) -> None:
        forward(change)
        alarms.add(change.kind, change.asset, change.signal, change.score, change.threshold,
                   tuple(change.labels.items()))

    agent.worker.on_change = on_change


def run_demo(args: argparse.Namespace) -> int:
    if args.offline:
        from shopfloor.tools.demo_offline import run_offline_demo

        return run_offline_demo(Path(args.out))
    if args.duration is not None and not args.duration > 0:
        raise UserError("--duration must be a number of seconds > 0")
    if not (math.isfinite(args.speed) and 0.1 <= args.speed <= 1000):
        raise UserError("--speed must be between 0.1 and 1000")
    binary = find_mosquitto() if args.broker != "embedded" else None
    if binary is None and args.broker == "mosquitto":
        raise UserError(f"--broker mosquitto: Mosquitto is not installed; {INSTALL_HINT}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="shopfloor-demo-") as work:
        broker: Mosquitto | EmbeddedBroker = (
            Mosquitto(binary, Path(work), persistence=False) if binary else EmbeddedBroker())
        try:
            broker.start()
        except BrokerError as exc:
            raise UserError(f"cannot start Mosquitto: {exc}") from None
        try:
            return _run(broker, args, stop)
        finally:
            broker.stop()


def _run(broker: Mosquitto | EmbeddedBroker, args: argparse.Namespace,
         stop: threading.Event) -> int:
    plant = demo_plant()
    metrics_port = args.metrics_port if args.metrics_port else free_port()
    toml = agent_config_toml(plant, broker.host, broker.port, client_id="shopfloor-demo",
                             metrics_port=metrics_port)
    if isinstance(broker, EmbeddedBroker):  # it speaks MQTT 3.1.1 only
        toml = toml.replace('protocol = "5"', 'protocol = "3.1.1"')
    config = parse_agent_config(toml, source="<demo config>")
    agent = Agent(config, CollectorRegistry())
    alarms = AlarmLog()
    log_alarms(agent, alarms)
    agent.start()
    t0 = time.time()
    clock = DemoClock(t0, args.speed)
    sim = threading.Thread(
        target=publish, name="simulator", daemon=True,
        kwargs={"plant": plant, "host": broker.host, "port": broker.port, "t0": t0,
                "realtime": True, "speed": args.speed, "stop": stop,
                "client_id": "shopfloor-demo-sim",
                "protocol": "3.1.1" if isinstance(broker, EmbeddedBroker) else "5"},
    )
    sim.start()
    kind = "embedded broker" if isinstance(broker, EmbeddedBroker) else "Mosquitto"
    # On the wall clock, as the log lines: the simulator's own clock runs --speed times faster.
    faults = f"faults on motor-1 and station-2 from {clock.format(t0 + FAULT_START)}"
    into = f"{FAULT_START / args.speed:g} s in"
    print(f"shopfloor demo: {kind} 127.0.0.1:{broker.port}, metrics "
          f"http://127.0.0.1:{agent.metrics_port}/metrics, simulation x{args.speed:g}; "
          f"{faults} ({into}, at {FAULT_START:g} simulated seconds). Ctrl-C to stop.",
          flush=True)
    # The terminal view clears the screen: its title repeats what matters, within 80 columns.
    title = (f"shopfloor demo x{args.speed:g}  metrics http://127.0.0.1:{agent.metrics_port}"
             f"/metrics  Ctrl-C to stop\n{faults} ({into})")
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        run_view(lambda: view_of(agent, alarms), stop, title=title)
    finally:
        stop.set()
        stopped = time.time()
        sim.join(10)
        agent.stop()
    print(report(agent, plant, clock, end=clock.stamp(stopped)))
    return 0


def report(agent: Agent, plant: Plant, clock: DemoClock, end: float = math.nan) -> str:
    """Which signals alarmed, against the faults the simulator had begun by ``end``.

    ``end`` is the simulated stamp the run reached; it only matters for a faulty signal the
    agent never scored.
    """
    rates = {s.id: s.rate for s in plant.signals}
    seen: list[SignalSeen] = []
    plain: dict[str, str] = {}
    for sid, status in list(agent.worker.status.items()):
        plain[sid] = f"{status.asset}/{status.name}"  # the simulator's ids carry no labels
        counts = agent.worker.signal_counts(sid)
        seen.append(SignalSeen(
            sid, status.alarms, status.onset, status.last_time,
            rate=rates.get(plain[sid], math.inf),  # not the simulator's: no grace to give
            warmup=counts.warmup if counts is not None else 0))
    return report_text(seen, plant.ground_truth(clock.t0), clock, key=plain, end=end)
