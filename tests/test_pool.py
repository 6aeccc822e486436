"""Scoring processes (issue 12, item 3): ``agent.workers`` above 1.

Which process owns a signal, the setting, and the agent with two scoring processes against a
real Mosquitto: every message scored, per-signal state in one process, and kill -9 of one
scoring process noticed, restarted from the checkpoint, losing nothing it held unacknowledged.
The same agent under a real Prometheus, every dashboard and rule query answered, is in
test_prometheus_live.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from broker import wait_until
from shopfloor.agent.config import default_workers, parse_agent_config, usable_memory
from shopfloor.agent.pool import ScoringPool
from shopfloor.agent.scorer import owner
from shopfloor.errors import ConfigError
from shopfloor.receiving.codecs import Samples, encode_json_scalar
from shopfloor.receiving.ingest import BoundedQueue, Item
from shopfloor.tools.broker import Mosquitto, free_port
from test_agent_integration import (
    AgentFactory,
    AgentProcess,
    publish_paced,
    publish_qos1,
    start_agent,
)

__all__ = ["start_agent"]  # the fixture, used by name

T0 = 1_750_000_000.0
ASSETS = [f"press-{k:02d}" for k in range(12)]


def test_an_assets_signals_share_one_owner_whatever_the_process_hash_seed() -> None:
    keys = ["press-01/force", "press-01/temp{site=s1,line=l2}", "press-01{site=s1,line=l2}",
            "press-01/force{site=s1,line=l2}", "press-01"]
    here = [owner(k, 3) for k in keys]
    assert here[1] == here[2] == here[3]  # one asset with its labels: one process
    assert here[0] == here[4]
    script = ("import sys; from shopfloor.agent.scorer import owner; "
              f"print([owner(k, 3) for k in {keys!r}])")
    for seed in ("1", "2"):  # str hashes differ between these interpreters; owners may not
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
        assert out.strip() == str(here)


@pytest.mark.parametrize("count", [2, 3, 4])
def test_assets_spread_evenly_over_the_processes(count: int) -> None:
    shares = Counter(owner(f"asset-{k}/vibration", count) for k in range(2000))
    assert set(shares) == set(range(count))
    assert max(shares.values()) / min(shares.values()) < 1.2, shares


def test_the_workers_setting() -> None:
    base = '[mqtt]\nhost = "127.0.0.1"\n[[subscriptions]]\ntopic = "p/{asset}/{signal}"\n'
    assert parse_agent_config(base + "[agent]\nworkers = 3\n").workers == 3
    # 0 (the default) picks from the usable cores; conftest pins those to CI's 2.
    assert parse_agent_config(base).workers == 1
    for bad in ("65", "-1", '"auto"', "1.5"):
        with pytest.raises(ConfigError, match=r"agent\.workers"):
            parse_agent_config(base + f"[agent]\nworkers = {bad}\n")
    big = 64 << 30
    assert [default_workers(c, big) for c in (1, 2, 3, 4, 6, 8, 64)] == [1, 1, 1, 2, 4, 4, 4]
    # Memory decides too: the unit's MemoryMax=512M holds no second process, 1 GiB two.
    assert [default_workers(8, m << 20) for m in (512, 799, 800, 1024, 2048)] == [1, 1, 2, 2, 4]
    assert 0 < usable_memory() <= 1 << 62


def config(broker: Mosquitto, state: Path, client_id: str = "pool") -> str:
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
keepalive = 5
clean_start = false
session_expiry = 300

[agent]
workers = 2
batch_max = 50  # many batches in flight while a process is killed

[metrics]
port = {free_port()}

[state]
directory = "{state}"
checkpoint_interval = 1.0

[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"
detector = {{ kind = "zscore", min_samples = 20 }}
alarm = {{ warmup = 20 }}
"""


def messages(start: int, count: int, value: float = 100.0) -> list[tuple[str, bytes]]:
    """``count`` samples for each asset's ``force``, alternating healthy noise about value."""
    return [(f"plant/{asset}/force", encode_json_scalar(T0 + i, value + (i % 7) * 0.1))
            for i in range(start, start + count) for asset in ASSETS]


def scorer_pids(log: str) -> dict[int, int]:
    """Scoring process index -> pid, the latest the log names."""
    return {int(i): int(pid) for i, pid in re.findall(r"scoring process (\d) ready: pid (\d+)",
                                                      log)}


def total(agent: AgentProcess, name: str) -> float:
    """``name`` summed over its series."""
    return sum(v for (n, _), v in agent.metrics().items() if n == name)


@pytest.mark.integration
def test_kill_9_of_a_scoring_process_is_noticed_restarted_and_loses_nothing_unacknowledged(
    mosquitto: Mosquitto, start_agent: AgentFactory, tmp_path: Path
) -> None:
    text = config(mosquitto, tmp_path / "state")
    agent = start_agent(text, "pool")
    assert agent.wait_log("scoring process 1 ready", timeout=120), agent.tail()
    assert agent.wait_log("mqtt connected", timeout=30), agent.tail()
    first = messages(0, 40)
    publish_paced(mosquitto, first, agent.received)
    scored = "shopfloor_signal_samples_scored_total"
    assert wait_until(lambda: total(agent, scored) == len(first), 30), agent.tail()
    # Each asset's signal is in one process, and both processes have some.
    pids = scorer_pids(agent.log())
    assert sorted(pids) == [0, 1]
    assert {owner(f"{a}/force", 2) for a in ASSETS} == {0, 1}
    assert wait_until((tmp_path / "state" / "pipelines.ckpt").exists, 10)
    time.sleep(1.5)  # a checkpoint with every signal past its warm-up

    # Kill one scoring process while a second stream flows (QoS 1, batches in flight).
    second = messages(40, 60)
    publisher = threading.Thread(target=publish_qos1, args=(mosquitto, second), daemon=True)
    publisher.start()
    assert wait_until(lambda: agent.received() >= len(first) + 100, 30)
    os.kill(pids[1], signal.SIGKILL)
    publisher.join(60)
    assert agent.wait_log("scoring process 1 (pid", timeout=30), agent.tail()
    died = re.search(rf"scoring process 1 \(pid {pids[1]}\) died \(exit code -9\).*it held "
                     r"(\d+) unacknowledged", agent.log())
    assert died, agent.tail()
    assert agent.wait_log("scoring process 1 ready", count=2, timeout=120), agent.tail()
    assert scorer_pids(agent.log())[1] != pids[1]
    assert wait_until(lambda: agent.received() == len(first) + len(second), 30)
    assert total(agent, "shopfloor_scoring_restarts_total") == 1.0
    assert total(agent, "shopfloor_scoring_batches_lost_total") == 0.0
    # Restored from the checkpoint: the restarted process's signals are not warming up again.
    assert wait_until(lambda: total(agent, "shopfloor_queue_depth") == 0, 30)
    assert total(agent, "shopfloor_signal_warming_up") == 0.0, agent.tail()

    # A clean stop: nothing left unscored or unacknowledged...
    assert agent.stop()[0] == 0, agent.tail()
    drained, flushed, processed = agent.stopped_line()
    assert processed >= len(first) + len(second)  # the held batches were scored again
    assert drained
    assert flushed
    assert re.search(r"left_with_broker=0 lost=0", agent.log())
    # ... which the broker confirms: the same session, started again, is sent nothing.
    again = start_agent(text, "pool-again")
    assert again.wait_log("mqtt connected", timeout=120), again.tail()
    time.sleep(2.0)
    assert again.received() == 0.0, "the broker redelivered messages nobody acknowledged"
    assert math.isfinite(total(again, "shopfloor_signals"))
    assert again.stop()[0] == 0


def test_a_process_that_keeps_dying_at_start_is_restarted_ever_more_slowly(
        tmp_path: Path) -> None:
    """The OOM killer, or a broken cache, kills a scoring process as soon as it is up: it is
    started again after 1 s, then 3 s, ... (not in a tight loop), and counted each time."""
    base = '[mqtt]\nhost = "127.0.0.1"\n[[subscriptions]]\ntopic = "p/{asset}/{signal}"\n'
    cfg = parse_agent_config(base + "[agent]\nworkers = 2\n")
    pool = ScoringPool(cfg, BoundedQueue(cfg.agent.queue_size, cfg.agent.drop_policy), 2)
    pool.start()
    try:
        took = []
        for _ in range(2):
            pid = pool.pids[1]
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            assert wait_until(partial(_replaced, pool, pid), 60)
            took.append(time.monotonic() - killed)
        assert pool.restarts == 2
        assert took[0] >= 1.0  # the first back-off
        assert took[1] >= 3.0  # the second, longer
    finally:
        pool.close()


def _replaced(pool: ScoringPool, pid: int) -> bool:
    """Process 1 is a new one, and ready (a pid is known once it is)."""
    return pool.pids[1] not in (pid, 0)


def test_the_stop_flag_reaches_the_scoring_processes() -> None:
    """Once the agent's drain deadline passes, a batch a scoring process is working on is
    abandoned at its next chunk (left unacknowledged with the broker), as with one worker."""
    base = '[mqtt]\nhost = "127.0.0.1"\n[[subscriptions]]\ntopic = "p/{asset}/{signal}"\n'
    cfg = parse_agent_config(base + "[agent]\nworkers = 2\n")
    queue = BoundedQueue(cfg.agent.queue_size, cfg.agent.drop_policy)
    pool = ScoringPool(cfg, queue, 2)
    pool.start()
    try:
        now = time.time()
        items = [Item(f"{asset}/x", 0, (), Samples(np.array([now - 10.0]), np.array([1.0])), now)
                 for asset in ASSETS]
        pool.stopping.set()
        for index in range(2):
            pool._hand(index, [i for i in items if owner(i.signal, 2) == index], [])
        assert pool.settle(30)
        assert pool.abandoned == len(items)
        assert pool.processed == 0
    finally:
        pool.close()
