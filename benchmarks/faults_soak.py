"""Fault scenario 8: a soak with the simulator and its faults.

soak
    The simulator (``shopfloor simulate``, with its bearing, drift, shift and outlier faults)
    for 1 hour (quick: 2 minutes) at 80 % of the capacity measured first by a short ramp of
    paced JSON scalars. Reported: RSS slope (MiB/hour, least squares), publish-to-score lag
    p50/p99 (``shopfloor_lag_seconds``), drops, worker errors, alarms. Must hold: the agent
    lives, no worker errors, RSS under MemoryMax, SIGTERM exits 0.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.agent_procs import ROOT, Peer, rss_bytes
from benchmarks.faults_metrics import Scrape, settle
from benchmarks.faults_procs import (
    Agent,
    start_agent,
    start_broker,
)
from benchmarks.faults_rig import (
    MEMORY_MAX,
    MIB,
    STOP_TIMEOUT,
    BenchError,
    Env,
    Outcome,
)
from shopfloor.tools.broker import HOST, free_port

__all__ = ["run_soak"]

RAMP_START = 2000.0
RAMP_SIGNALS = 100
EXTRA_SIGNALS = 96  # with the simulator's four quality signals: 100 scalar signals


def run_soak(env: Env) -> Outcome:
    from shopfloor.tools.simulate import Plant, agent_config_toml, standard_faults

    out = env.outcome("soak", "soak at 80 % of measured capacity with the simulator's faults")
    duration = env.size(120.0, 3600.0)
    fault_start = env.size(30.0, 600.0)
    work = env.dir("soak")
    with contextlib.ExitStack() as stack:
        broker = start_broker(env, "soak", stack)
        port = free_port()
        plant = Plant(site="site1", line="line1", extra_signals=EXTRA_SIGNALS,
                      faults=(*standard_faults("motor-1", fault_start),
                              *standard_faults("station-1", fault_start)), seed=env.seed)
        text = agent_config_toml(plant, broker.host, broker.port, client_id="faults-soak",
                                 metrics_port=port)
        text += f'\n[state]\ndirectory = "{work / "state"}"\n'
        agent = start_agent(work, "agent", text, port, stack)
        capacity, ramp = _capacity(env, agent, broker.port, work, stack)
        target = 0.8 * capacity
        frames = plant.vibration_assets * plant.frame_rate
        scalars = plant.quality_assets * 2 + EXTRA_SIGNALS
        pps = max(0.001, (target - frames) / scalars)
        argv = [sys.executable, "-m", "shopfloor", "simulate", "--host", HOST, "--port",
                str(broker.port), "--duration", f"{duration:g}", "--seed", str(env.seed),
                "--extra-signals", str(EXTRA_SIGNALS), "--parts-per-second", f"{pps:.3f}",
                "--fault-start", f"{fault_start:g}"]
        log = (work / "simulate.log").open("ab")
        stack.callback(log.close)
        env.progress(f"[faults] soak: capacity {capacity:.0f} msgs/s, simulating "
                     f"{target:.0f} msgs/s for {duration:g} s")
        sim = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        stack.callback(_stop, sim)
        samples = _sample(env, agent, sim, duration)
        sim_code = sim.wait(60.0)
        final = settle(agent, 120.0, quiet=1.0)
        alive = agent.alive
        code, stop_s = agent.terminate(STOP_TIMEOUT + 10.0)
    sim_line = [line for line in (work / "simulate.log").read_text(errors="replace")
                .splitlines() if "sent " in line]
    _soak_report(out, samples, final, capacity, target, duration, ramp, sim_line)
    out.trials = 1
    out.check("agent_alive", alive, f"the agent died: exit {agent.proc.returncode}")
    out.check("simulator_exit_0", sim_code == 0, f"the simulator exited {sim_code}")
    out.check("sigterm_exit_0", code == 0, f"SIGTERM after the soak: exit {code} after "
              f"{stop_s:.1f} s")
    out.figures["sigterm_exit"] = code
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)


def _capacity(env: Env, agent: Agent, broker_port: int, work: Path,
              stack: contextlib.ExitStack) -> tuple[float, list[dict[str, float]]]:
    """Paced JSON scalars over 100 signals, doubling until the agent falls behind (scores
    under 90 % of what is offered, or drops): the best rate it kept up with, or - saturated
    from the start - what it scored."""
    publisher = Peer("publisher", broker_port, work / "publisher.log")
    stack.callback(publisher.close)
    step = env.size(2.0, 5.0)
    rate, steps = RAMP_START, []
    best = 0.0
    for _ in range(6):
        before = agent.metrics()
        sent = publisher.ask(timeout=step + 30.0, op="flood", prefix="plant/site1/line1/ramp",
                             kind="json", signals=RAMP_SIGNALS, rate=rate, seconds=step)
        after = agent.metrics()
        scored = (after.scored() - before.scored()) / step
        dropped = after.dropped() - before.dropped()
        steps.append({"offered": round(sent["sent"] / sent["seconds"]),
                      "scored": round(scored), "dropped": dropped})
        settle(agent, 60.0, quiet=0.5)
        if scored < 0.9 * sent["sent"] / sent["seconds"] or dropped:
            best = best or scored
            break
        best = scored
        rate *= 2.0
    return best, steps


def _sample(env: Env, agent: Agent, sim: subprocess.Popen[bytes], duration: float
            ) -> list[tuple[float, int, Scrape]]:
    """(seconds since the start, RSS bytes, scrape) every few seconds while the simulator
    runs; bounded by ``duration`` plus a minute."""
    period = env.size(2.0, 15.0)
    start = time.monotonic()
    samples: list[tuple[float, int, Scrape]] = []
    while sim.poll() is None and time.monotonic() - start < duration + 60.0:
        if not agent.alive:
            break
        try:
            samples.append((time.monotonic() - start, rss_bytes(agent.pid), agent.metrics()))
        except (OSError, BenchError):
            break
        time.sleep(period)
    return samples


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative ``le`` counts (linear in a bucket)."""
    edges = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for edge in edges:
        count = buckets[edge]
        if count >= rank:
            if math.isinf(edge):
                return lower
            inside = count - below
            return lower + (edge - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = edge, count
    return lower


def _lag_buckets(s: Scrape) -> dict[float, float]:
    return {float(labels["le"]): v
            for labels, v in s.series.get("shopfloor_lag_seconds_bucket", ())}


def _soak_report(out: Outcome, samples: list[tuple[float, int, Scrape]], final: Scrape,
                 capacity: float, target: float, duration: float,
                 ramp: list[dict[str, float]], sim_line: list[str]) -> None:
    if len(samples) < 3:
        out.check("soak_sampled", False, f"only {len(samples)} samples of the agent")
        return
    warm = samples[max(1, len(samples) // 5):]  # the first fifth warms up (caches, pipelines)
    t = np.array([x[0] for x in warm]) / 3600.0
    rss = np.array([x[1] for x in warm]) / MIB
    slope = float(np.polyfit(t, rss, 1)[0]) if len(warm) >= 2 else float("nan")
    first, last = warm[0][2], samples[-1][2]
    lag0, lag1 = _lag_buckets(first), _lag_buckets(last)
    window = {edge: lag1[edge] - lag0.get(edge, 0.0) for edge in lag1}
    p50, p99 = _quantile(window, 0.5), _quantile(window, 0.99)
    seconds = samples[-1][0] - warm[0][0]
    received = last.value("shopfloor_messages_received_total") - first.value(
        "shopfloor_messages_received_total")
    peak = max(x[1] for x in samples)
    errors = final.value("shopfloor_worker_errors_total")
    alarms = final.value("shopfloor_signal_alarms_raised_total") + final.value(
        "shopfloor_asset_alarms_raised_total")
    out.figures.update({
        "duration_s": duration, "capacity_msgs_per_s": round(capacity),
        "ramp": ramp, "target_msgs_per_s": round(target),
        "achieved_msgs_per_s": round(received / seconds) if seconds > 0 else None,
        "simulator": sim_line[-1].strip() if sim_line else None,
        "rss_start_mib": round(samples[0][1] / MIB, 1), "rss_end_mib": round(
            samples[-1][1] / MIB, 1), "rss_peak_mib": round(peak / MIB, 1),
        "rss_slope_mib_per_hour": round(slope, 1),
        "lag_p50_s": None if p50 is None else round(p50, 4),
        "lag_p99_s": None if p99 is None else round(p99, 4),
        "dropped": final.dropped(), "worker_errors": errors,
        "alarms_raised": alarms, "events_published": final.value(
            "shopfloor_events_published_total"),
        "samples": len(samples), "load_average": round(os.getloadavg()[0], 2)})
    out.lost = f"{final.dropped():.0f} messages dropped by the queue (counted)"
    out.check("no_worker_errors", errors == 0, f"{errors:.0f} worker errors")
    out.check("rss_under_memory_max", peak < MEMORY_MAX, f"peak RSS {peak / MIB:.0f} MiB")
    if final.dropped():
        out.note(f"{final.dropped():.0f} messages dropped at 80 % of the capacity measured by "
                 "the ramp: the simulator's own CPU competes with the agent on this machine")
