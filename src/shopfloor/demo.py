"""``shopfloor demo``: the whole path on one machine, live.

A loopback Mosquitto on a free port, the simulated plant publishing to it (faster than real time
so the faults show within a minute), the agent with its metrics endpoint, and a live terminal
view until Ctrl-C (or ``--duration``). At the end it prints which signals alarmed and when,
against the simulator's ground truth. ``--offline`` replays a synthetic CSV instead, with no
broker at all.
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

from shopfloor.agent import Agent
from shopfloor.agent_config import parse_agent_config
from shopfloor.broker import INSTALL_HINT, BrokerError, Mosquitto, find_mosquitto, free_port
from shopfloor.embedded_broker import EmbeddedBroker
from shopfloor.errors import UserError
from shopfloor.liveview import AgentView, SignalView, run_view
from shopfloor.simulate import Plant, agent_config_toml, publish, standard_faults

__all__ = ["add_arguments", "demo_plant", "run_demo", "view_of"]

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


def view_of(agent: Agent) -> AgentView:
    """The live view's snapshot of the agent."""
    signals = [
        SignalView(asset=s.asset, signal=s.name, messages=s.messages, score=s.score,
                   threshold=s.threshold, state=s.state.name, alarms=s.alarms)
        for s in list(agent.worker.status.values())
    ]
    return AgentView(signals=signals, received=agent.ingest.received,
                     rejected=sum(agent.ingest.rejected.values()), dropped=agent.queue.dropped,
                     events=agent.events.published, uptime_s=time.time() - agent.start_time)


def run_demo(args: argparse.Namespace) -> int:
    if args.offline:
        from shopfloor.demo_offline import run_offline_demo

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
    agent.start()
    t0 = time.time()
    sim = threading.Thread(
        target=publish, name="simulator", daemon=True,
        kwargs={"plant": plant, "host": broker.host, "port": broker.port, "t0": t0,
                "realtime": True, "speed": args.speed, "stop": stop,
                "client_id": "shopfloor-demo-sim",
                "protocol": "3.1.1" if isinstance(broker, EmbeddedBroker) else "5"},
    )
    sim.start()
    kind = "embedded broker" if isinstance(broker, EmbeddedBroker) else "Mosquitto"
    print(f"shopfloor demo: {kind} 127.0.0.1:{broker.port}, metrics "
          f"http://127.0.0.1:{agent.metrics_port}/metrics, simulation x{args.speed:g}; "
          f"faults on motor-1 and station-2 from {FAULT_START:g} simulated seconds. "
          "Ctrl-C to stop.", flush=True)
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        run_view(lambda: view_of(agent), stop)
    finally:
        stop.set()
        sim.join(10)
        agent.stop()
    print(report(agent, plant.ground_truth(t0)))
    return 0


def report(agent: Agent, truth: dict[str, float]) -> str:
    """Which signals alarmed, against which the simulator made faulty."""
    lines = ["", f"{'signal':28} {'faulty from':>12}  alarms"]
    for sid, status in sorted(agent.worker.status.items()):
        start = truth.get(sid)
        when = "healthy" if start is None else time.strftime("%H:%M:%S", time.gmtime(start))
        lines.append(f"{sid:28} {when:>12}  {status.alarms}")
    missed = [s for s in truth if agent.worker.status.get(s) is None
              or agent.worker.status[s].alarms == 0]
    false = [s for s, st in agent.worker.status.items() if st.alarms and s not in truth]
    lines.append(f"faulty signals without an alarm: {', '.join(missed) or 'none'}; "
                 f"healthy signals with an alarm: {', '.join(false) or 'none'}")
    return "\n".join(lines)
