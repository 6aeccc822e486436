"""Agent area, scoring processes: an agent with ``agent.workers = 2`` against one with 1.

Both run at once on one Mosquitto (as systemd runs them), each subscribed to its own prefix,
and are fed the same scoring-heavy load in alternating rounds: int16 frames of 1024 samples
with envelope (bearing defect) and shaft-order features, round-robin over :data:`SIGNALS`
vibration sensors, one asset each (a plant's motors, pumps and fans). The figure is frames/s
scored, saturated, 2 workers over 1; target 1.5 on a 2-core machine.

The control that must not move: the same agents on scalar JSON over 100 signals, where the
receiving process is the bottleneck and a second scoring process cannot help (its figure is
reported, with no target): a 2-worker agent that looked faster there would be measuring
something else.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.agent_peers import FRAME_LEN, SAMPLE_RATE
from benchmarks.agent_procs import AgentProcess, BenchError, Peer, rss_bytes
from benchmarks.agent_rig import AgentSide, Rig, Side, Sizes, add_figure, mid, saturated_rounds
from benchmarks.harness import Bench, Target

__all__ = ["SIGNALS", "TARGET", "run_workers"]

SIGNALS = 100
TARGET = Target(1.5, "2 scoring processes >= 1.5x one, scoring-heavy frames, 2 cores")
ONE = "agent, 1 worker"


def config(broker_port: int, metrics_port: int, workers: int) -> str:
    """An agent owning ``sfbench/w<workers>/#``: one asset per sensor, as
    ``sfbench/w2/frame/motor/s007`` names the asset ``s007`` of line ``motor``."""
    return f"""
[mqtt]
host = "127.0.0.1"
port = {broker_port}
client_id = "sfbench-w{workers}"
clean_start = true
session_expiry = 0

[agent]
workers = {workers}

[events]
prefix = "sfbench-events-w{workers}"

[metrics]
host = "127.0.0.1"
port = {metrics_port}

[[subscriptions]]
topic = "sfbench/w{workers}/json/{{line}}/{{asset}}"
codec = "json"
signal = "value"

# After the JSON one: the first template that matches a topic wins.
[[subscriptions]]
topic = "sfbench/w{workers}/{{signal}}/{{line}}/{{asset}}"
codec = "frame"
features = {{ sample_rate = {SAMPLE_RATE!r}, shaft_hz = 24.7, shaft_orders = [1.0, 2.0, 3.0], \
defect_orders = {{ bpfo = 3.5848, bpfi = 5.4152, bsf = 2.357, ftf = 0.3983 }} }}
"""


def run_workers(bench: Bench, broker_port: int, publisher: Peer, observer: Peer, work: Path,
                free_port: int, free_port_2: int) -> None:
    """Start the two agents, measure frames and the scalar control, stop them."""
    agents = []
    try:
        for workers, port in ((2, free_port), (1, free_port_2)):
            path = work / f"agent-w{workers}.toml"
            path.write_text(config(broker_port, port, workers), encoding="utf-8")
            agents.append(AgentProcess(path, work / f"agent-w{workers}.log", port))
        for agent in agents:
            agent.wait_connected(120.0)
        sides: tuple[Side, Side] = (AgentSide(agents[0], "agent, 2 workers", "sfbench/w2"),
                                    AgentSide(agents[1], ONE, "sfbench/w1"))
        rig = Rig(publisher, observer)
        for side in sides:
            _until_subscribed(rig, side)
        sizes = Sizes(bench.mode.quick)
        # One batch of these frames can outlast a quick window (0.15 s) when a round starts
        # with a burst: windows of half a second at least, or a busy agent reads as a dead one.
        sizes.step, sizes.warm = max(sizes.step, 1.0), max(sizes.warm, 0.2)
        sizes.window = max(sizes.window, 0.5)
        label = f"int16 frames of {FRAME_LEN}, envelope + shaft orders"
        bench.progress(f"[{bench.area}] {label}: 2 scoring processes vs 1")
        two, one = saturated_rounds(bench, rig, sides, sizes, "frame", label, SIGNALS)
        note = (f"{SIGNALS} sensors of one asset each, round-robin; {sizes.window:g} s windows; "
                f"2 workers offered {mid([r.offered for r in two]):.0f}/s, saturated in "
                f"{sum(r.saturated for r in two)}/{len(two)} rounds; RSS of the 2-worker "
                f"agent with its scoring processes {_tree_rss(agents[0].pid):.0f} MiB, of the "
                f"1-worker agent {rss_bytes(agents[1].pid) / 2**20:.0f} MiB")
        add_figure(bench, f"{label}, 2 scoring processes", "frames/s",
                   [r.rate for r in two], [r.rate for r in one], TARGET, note, against=ONE)
        bench.progress(f"[{bench.area}] scalar JSON control: 2 scoring processes vs 1")
        two, one = saturated_rounds(bench, rig, sides, sizes, "json", "scalar JSON (control)",
                                    SIGNALS)
        add_figure(bench, "scalar JSON, 2 scoring processes (control: receiving-bound)",
                   "msgs/s", [r.rate for r in two], [r.rate for r in one], None,
                   f"{SIGNALS} signals; the receiving process is the bottleneck here, so no "
                   f"gain is expected", against=ONE)
    finally:
        for agent in agents:
            agent.close()


def _until_subscribed(rig: Rig, side: Side) -> None:
    deadline = time.monotonic() + 30.0
    before = side.snap().received
    while side.snap().received == before:
        if time.monotonic() > deadline:
            raise BenchError(f"{side.name} received nothing within 30 s of connecting")
        rig.publisher.ask(op="flood", prefix=f"{side.prefix}/json/line", kind="json",
                          signals=10, rate=100.0, seconds=0.05)
        time.sleep(0.05)


def _tree_rss(pid: int) -> float:
    """MiB of resident memory of ``pid`` and its children (the scoring processes)."""
    total = rss_bytes(pid)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        total += rss_bytes(int(child))
    return total / 2**20
