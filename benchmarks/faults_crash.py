"""Fault scenarios 3 and 4: the agent killed with SIGKILL at random moments, and stopped
with SIGTERM under overload.

kill9
    A QoS 1 publisher sends samples with strictly increasing timestamps throughout; the agent
    (checkpoints every second) is killed with SIGKILL at a random moment of each run and
    started again on the same state directory; a last run drains everything and is stopped
    with SIGTERM. Must hold: every checkpoint reads back and is restored (no "unusable,
    starting cold" line, no ``*.bad`` file); the broker, logging every packet, saw every
    message it delivered to the agent acknowledged by the end and dropped none.
    Loss: a killed run's scored count is only known up to its last scrape (every 50 ms), so
    across kills it is "unaccounted <= X"; the final, SIGTERM-stopped run is exact.
sigterm
    QoS 1 batches faster than the agent takes them, then SIGTERM while they keep coming.
    Must hold: exit 0 within systemd's TimeoutStopSec, the final checkpoint written, and after
    a restart on the same state every published sample scored or counted (exact: both runs
    end with SIGTERM and checkpoints).
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path

from benchmarks.faults_metrics import Poller, settle
from benchmarks.faults_procs import (
    Agent,
    FaultBroker,
    Saved,
    broker_ledger,
    read_saved,
    start_agent,
    start_broker,
)
from benchmarks.faults_rig import (
    STOP_TIMEOUT,
    BenchError,
    Env,
    Outcome,
    bare_config,
)
from benchmarks.faults_traffic import SampleStream, wait_subscribed
from shopfloor.tools.broker import free_port

__all__ = ["run_kill9", "run_sigterm"]

# --- kill -9 -------------------------------------------------------------------------------------

KILL_RATE = 500.0  # QoS 1 messages/s: what a small line sends, well within the agent's means
KILL_SIGNALS = 8


def run_kill9(env: Env) -> Outcome:
    out = env.outcome("kill9", "agent kill -9 at random moments (QoS 1, restart on the same state)")
    trials = env.size(3, 20)
    rng = random.Random(env.seed)
    work = env.dir("kill9")
    state = work / "state"
    client = "faults-kill9"
    with contextlib.ExitStack() as stack:
        # Every packet logged: the broker's own account of deliveries and acknowledgements.
        broker = start_broker(env, "kill9", stack, extra=("log_type all",))
        port = free_port()
        config = work / "agent.toml"
        config.write_text(bare_config(broker.port, port, client, state=state,
                                      checkpoint_interval=1.0), encoding="utf-8")
        topics = [f"plant/s1/l1/kill/s{k}" for k in range(KILL_SIGNALS)]
        stream = SampleStream(broker.port, topics, KILL_RATE, client_id=f"{client}-pub")
        stack.callback(stream.finish, 5.0)
        seen = 0.0
        window = 0.0
        for k in range(trials + 1):
            before = read_saved(state, "kill/")
            agent = Agent(config, work / f"run{k:02d}.log", port)
            stack.callback(agent.close)
            if k == 0:
                # The session and its subscription must exist before the first message, or
                # the broker has nobody to keep it for; the kill is timed from here.
                agent.wait_connected(90.0)
                wait_subscribed(agent, broker.port, "plant/s1/l1/probe/p")
                stream.start()
            if k < trials:
                # Run 0 is timed from the stream's start, the others from their spawn.
                origin = time.monotonic() - 0.5 if k == 0 else agent.spawned
                seen_k, window_k = _killed_run(out, agent, before.scored, rng, k, origin)
                seen += seen_k
                window += window_k
            else:
                seen += _final_run(env, out, agent, stream, state, before.scored)
            _check_restore(out, agent, before, k, state)
        broker.stop()
        ledger = broker_ledger(broker.log_file.read_text(errors="replace"), client,
                               [f"{client}-pub"], topics="plant/")
    published = stream.acked
    unaccounted = published - seen
    out.trials = trials
    out.check("broker_every_delivery_acknowledged", ledger.open == 0,
              f"{ledger.open} messages the broker sent the agent were never PUBACKed")
    out.check("broker_dropped_none", ledger.dropped_notices == 0,
              f"the broker logged {ledger.dropped_notices} 'messages are being dropped' lines")
    out.check("broker_delivered_every_message", ledger.first_sends >= published,
              f"{published} published, {ledger.first_sends} delivered to the agent")
    out.figures.update({
        "published": published, "publish_rate": KILL_RATE, "signals": KILL_SIGNALS,
        "scored_seen": seen, "unaccounted_upper_bound": unaccounted,
        "scrape_window_estimate": round(window),
        "broker_ledger": {"received_from_publisher": ledger.received_from,
                          "first_deliveries": ledger.first_sends,
                          "redeliveries": ledger.resends, "pubacks": ledger.pubacks,
                          "never_acknowledged": ledger.open,
                          "dropped_notices": ledger.dropped_notices},
        "kills_during_checkpoint_write": sum(1 for r in out.rows if r.get("stray_temp")),
        "seed": env.seed,
    })
    out.lost = (f"unaccounted <= {unaccounted:.0f} of {published} (scrape windows: the last "
                f"scrape before each kill -9 is a lower bound; ~{window:.0f} estimated scored "
                f"inside them; {ledger.resends} redeliveries could be scored twice); broker "
                f"ledger exact: {ledger.open} never acknowledged, {ledger.dropped_notices} "
                "dropped")
    out.note("A PUBACK is an acknowledgement by the agent's contract (sent once a message's "
             "samples are scored or counted); the ledger proves the broker gave up no message "
             "without one. Killed runs' scoring is known only up to their last scrape.")
    return out


def _killed_run(out: Outcome, agent: Agent, start: float, rng: random.Random, k: int,
                origin: float) -> tuple[float, float]:
    """Run until a random moment, SIGKILL; (samples seen scored, estimate past the scrape)."""
    poller = Poller(agent.url, 0.05)
    poller.start()
    delay = rng.uniform(0.5, 4.0)  # from spawn: start-up, restore, connect and steady state
    time.sleep(max(0.0, origin + delay - time.monotonic()))
    alive = agent.alive
    killed = time.monotonic()
    agent.kill9()
    poller.finish()
    last = poller.last
    history = list(poller.history)
    seen = (last.scored() - start) if last is not None else 0.0
    window = 0.0
    if last is not None and len(history) >= 2:
        # The scoring rate over the last half second times the age of the last scrape.
        ref = next((s for s in reversed(history) if last.at - s.at >= 0.5), history[0])
        if last.at > ref.at:
            window = (last.scored() - ref.scored()) / (last.at - ref.at) * (killed - last.at)
    connected = any(s.value("shopfloor_mqtt_connected") == 1 for s in history)
    out.rows.append({"run": k, "kill_after_s": round(delay, 3), "alive_at_kill": alive,
                     "connected_before_kill": connected,
                     "scored_seen": seen, "scrape_age_ms": round(
                         1000 * (killed - last.at)) if last is not None else None,
                     "window_estimate": round(window)})
    out.check("alive_until_killed", alive, f"run {k} died before its kill: exit "
              f"{agent.proc.returncode}")
    return max(0.0, seen), window


def _final_run(env: Env, out: Outcome, agent: Agent, stream: SampleStream, state: Path,
               start: float) -> float:
    """Publish on for a second, stop the publisher, drain, SIGTERM: the exact count."""
    agent.wait_connected(90.0)
    time.sleep(1.0)
    if not stream.finish(60.0):
        out.check("publisher_acknowledged", False,
                  f"{stream.published - stream.acked} messages never acknowledged by the broker")
    settle(agent, 120.0, quiet=1.5)
    code, seconds = agent.terminate(STOP_TIMEOUT + 10.0)
    after = read_saved(state, "kill/")
    exact = after.scored - start
    stop = agent.stop_line()
    out.rows.append({"run": "final", "sigterm_exit": code, "sigterm_seconds": round(seconds, 2),
                     "scored_exact": exact, "stop_line": stop,
                     "rejected_in_lineage": after.rejected})
    out.check("final_sigterm_exit_0", code == 0, f"final run: exit {code} after {seconds:.1f} s")
    env.progress(f"[faults] kill9: final run scored {exact:.0f} (exact), exit {code}")
    return exact


def _check_restore(out: Outcome, agent: Agent, before: Saved, k: int, state: Path) -> None:
    """The checkpoint the run started from reads back, and the run's log does not say it was
    moved aside or refused; an interrupted write's temporary file is counted."""
    row = out.rows[-1]
    bad = agent.bad_checkpoint_lines()
    aside = sorted(p.name for p in state.glob("*.bad*")) if state.exists() else []
    row["checkpoint_at_start"] = before.status
    row["restored_line"] = agent.restored_line() is not None
    row["stray_temp"] = "temporary file(s) left by an interrupted checkpoint" in agent.text()
    out.check("checkpoint_readable", before.readable,
              f"run {k} started from a checkpoint that does not read back: {before.status}")
    out.check("checkpoint_restored", not bad and not aside,
              f"run {k}: {bad[:2]} {aside}")


# --- SIGTERM under overload ----------------------------------------------------------------------

OVERLOAD_SIGNALS = 20
OVERLOAD_VALUES = 1000  # samples per message: a Python publisher can then outrun the agent
#: Messages/s offered: 1.5 M samples/s, several times what the agent scores on two cores, for
#: a bounded time, so the backlog the restart drains stays bounded too.
OVERLOAD_RATE = 1200.0


def run_sigterm(env: Env) -> Outcome:
    out = env.outcome("sigterm", "SIGTERM under overload, then a restart on the same state")
    trials = env.size(1, 5)
    with contextlib.ExitStack() as stack:
        broker = start_broker(env, "sigterm", stack)
        for trial in range(trials):
            out.trials += 1
            _sigterm_trial(env, out, broker, trial)
    exact = [r for r in out.rows if r.get("lost_exact") is not None]
    lost = sum(float(r["lost_exact"]) for r in exact)
    never = sum(float(r["never_scored"]) for r in exact)
    out.lost = (f"{lost:.0f} samples lost uncounted over {len(exact)} trial(s) (exact); "
                f"{never:.0f} never scored, every one counted as a queue drop under overload "
                "(scored read from the SIGTERM checkpoints, drops from a scrape during the "
                "shutdown)")
    return out


def _sigterm_trial(env: Env, out: Outcome, broker: FaultBroker, trial: int) -> None:
    work = env.dir(f"sigterm/trial{trial}")
    state = work / "state"
    port = free_port()
    client = f"faults-sigterm-{trial}"
    text = bare_config(broker.port, port, client, state=state)
    overload = env.size(1.5, 5.0)
    # Quick: half the samples per message at two thirds of the rate, still several times what
    # the agent scores, and a third of the backlog for the restart to drain.
    values = env.size(OVERLOAD_VALUES // 2, OVERLOAD_VALUES)
    with contextlib.ExitStack() as stack:
        run1 = start_agent(work, "run1", text, port, stack)
        wait_subscribed(run1, broker.port, "plant/s1/l1/probe/p")
        # One signal per asset: no asset-level detector, so this measures the stop path, not
        # the multivariate detector (an alarm there takes the slow per-row path).
        topics = [f"plant/s1/l1/over{k:02d}/x" for k in range(OVERLOAD_SIGNALS)]
        stream = SampleStream(broker.port, topics, env.size(800.0, OVERLOAD_RATE),
                              client_id=f"{client}-pub", values=values, seed=env.seed + trial)
        stream.start()
        stack.callback(stream.finish, 5.0)
        poller = Poller(run1.url, 0.02)
        poller.start()
        stack.callback(poller.finish)
        time.sleep(overload)
        offered = stream.published * values / overload
        sent_at, sent_mono = time.time(), time.monotonic()
        code, seconds = run1.terminate(STOP_TIMEOUT + 10.0)
        poller.finish()
        # Intake closes at once on SIGTERM: a scrape asked for after that has the final drops.
        late = [s for s in poller.history if s.started > sent_mono + 0.02]
        s1 = late[-1] if late else poller.last
        if s1 is None:
            raise BenchError(f"trial {trial}: no scrape of the first run answered")
        time.sleep(0.5)  # still publishing while the agent is away: queued by the broker
        acked = stream.finish(60.0)
        stop = run1.stop_line()
        saved1 = read_saved(state, "over")
        run2 = start_agent(work, "run2", text, port, stack)
        s2 = settle(run2, 180.0, quiet=1.5)
        code2, _ = run2.terminate(STOP_TIMEOUT + 10.0)
        saved2 = read_saved(state, "over")
    published = stream.samples_acked
    dropped = (s1.dropped() + s2.dropped()) * values
    written = saved1.status == "ok" and saved1.mtime >= sent_at - 0.5
    # Each published sample is scored once (a redelivery of a scored one is rejected, and the
    # final checkpoints hold every score) or never; what is never scored must have been
    # counted as a drop. A drop can also be counted for a message whose PUBACK had not gone
    # out at the stop - the broker delivers it again and it is scored: counted, not lost.
    never = published - saved2.scored
    lost = max(0.0, never - dropped) if written and late else None
    before_stop = [s for s in poller.history if s.at <= sent_mono]
    rate = 0.0
    if len(before_stop) >= 2:
        a, b = before_stop[len(before_stop) // 2], before_stop[-1]
        rate = (b.scored() - a.scored()) / max(1e-9, b.at - a.at)
    out.rows.append({
        "trial": trial, "overload_s": overload, "offered_samples_per_s": round(offered),
        "scored_samples_per_s_under_load": round(rate),
        "queue_at_stop": before_stop[-1].value("shopfloor_queue_depth") if before_stop else None,
        "sigterm_exit": code, "seconds_to_exit": round(seconds, 2), "stop_line": stop,
        "left_with_broker": stop.get("left_with_broker"), "final_checkpoint": saved1.status,
        "checkpoint_written_at_stop": written, "drops_exact": bool(late),
        "published_samples": published, "scored_run1": saved1.scored,
        "scored_run2": saved2.scored - saved1.scored, "dropped_samples": dropped,
        "never_scored": never, "dropped_then_redelivered": max(0.0, dropped - never),
        "redeliveries_rejected": saved2.rejected, "restart_exit": code2, "lost_exact": lost})
    tag = f"trial {trial}"
    out.check("sigterm_exit_0", code == 0, f"{tag}: exit {code} after {seconds:.1f} s "
              f"({stop})")
    out.check("exit_within_timeout_stop_sec", code is not None and seconds <= STOP_TIMEOUT,
              f"{tag}: {seconds:.1f} s to exit; systemd kills after {STOP_TIMEOUT:g} s")
    out.check("final_checkpoint_written", written,
              f"{tag}: checkpoint {saved1.status}, written {saved1.mtime - sent_at:+.1f} s "
              "from SIGTERM; stop line checkpoint=" + stop.get("checkpoint", "?"))
    out.check("publisher_acknowledged", acked, f"{tag}: the broker did not acknowledge "
              f"{stream.published - stream.acked} messages")
    out.check("restart_scored_the_rest", lost == 0,
              f"{tag}: {lost} published samples neither scored nor counted as dropped after "
              "the restart")
    out.check("restart_sigterm_exit_0", code2 == 0, f"{tag}: the restart's SIGTERM: exit {code2}")
    env.progress(f"[faults] sigterm trial {trial}: exit {code} in {seconds:.2f} s, "
                 f"left_with_broker={stop.get('left_with_broker')}, lost {lost}")


