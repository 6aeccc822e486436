"""Power cuts: kill -9 in steady state loses nothing that was checkpointed, and a kill during a
checkpoint write leaves a readable checkpoint or one that is cleanly discarded - never a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from broker import wait_until
from shopfloor.agent.checkpoints import FILE_NAME, Checkpointer
from shopfloor.agent.config import parse_agent_config
from shopfloor.agent.state import CheckpointError, read_checkpoint
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.scoring.pipeline import Plant
from shopfloor.tools.broker import Mosquitto

SIGNALS = ("press-1/force", "press-1/stroke", "oven-2/temp")
N = 400  # samples per signal and part


def agent_config(port: int, state: Path) -> str:
    return f"""
[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "crash-test"
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5
[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
detector = {{ kind = "cusum" }}
[defaults.alarm]
warmup = 50
[metrics]
port = 0
[state]
directory = "{state}"
checkpoint_interval = 1.0
"""


def part(k: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(100 + k)
    out = {}
    for sid in SIGNALS:
        x = rng.normal(10.0, 1.0, N)
        x[N // 2 : N // 2 + 20] += 6.0 * k  # part 1 carries a fault: alarms and paused learning
        out[sid] = x
    return out


def publish(port: int, data: dict[str, np.ndarray], t0: float) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="crash-test-pub")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = []
        for i in range(N):
            for sid, x in data.items():
                infos.append(client.publish(f"plant/{sid}", encode_json_scalar(t0 + i, x[i]), 1))
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "shopfloor", "run", "--config",
                                 str(config)], stdout=out, stderr=subprocess.STDOUT)


def scored(state_dir: Path) -> dict[str, int]:
    try:
        tree = read_checkpoint(state_dir / FILE_NAME).state
    except CheckpointError:
        return {}
    return {sid: int(s["state"]["scored"]) for sid, s in tree["signals"].items()}


def assert_same(a: Any, b: Any, where: str = "") -> None:
    """Bit-exact comparison of two state trees."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, where
        assert a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


def test_kill_9_then_restart_continues_exactly_from_the_checkpoint(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(agent_config(mosquitto.port, state))
    log = tmp_path / "agent.log"
    first = start_agent(config, log)
    try:
        assert wait_until(lambda: b"mqtt connected" in log.read_bytes(), 30), log.read_text()
        publish(mosquitto.port, part(1), 1.7e9)
        # Steady state: the periodic checkpoint has caught up with everything published.
        assert wait_until(lambda: scored(state) == dict.fromkeys(SIGNALS, N), 30), scored(state)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    saved = (state / FILE_NAME).read_bytes()

    # The reference: the same checkpoint restored in-process, fed part 2 without interruption.
    cfg = parse_agent_config(agent_config(mosquitto.port, state))
    reference = Plant(cfg.pipeline)
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / FILE_NAME).write_bytes(saved)
    # The three signals, and press-1's asset detector (its two signals were discovered).
    assert Checkpointer(cfg, reference, tmp_path / "ref", 60).restore() == len(SIGNALS) + 1
    second_part = part(2)
    for sid, x in second_part.items():
        reference.signals[sid].process(x)

    second = start_agent(config, log)
    try:
        assert wait_until(lambda: log.read_bytes().count(b"mqtt connected") >= 2, 30)
        assert b"restored 4 pipeline(s)" in log.read_bytes()
        publish(mosquitto.port, second_part, 1.7e9 + N)
        assert wait_until(lambda: scored(state) == dict.fromkeys(SIGNALS, 2 * N), 30), \
            scored(state)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]
    final = read_checkpoint(state / FILE_NAME).state["signals"]
    for sid in SIGNALS:
        assert_same(final[sid]["state"], reference.signals[sid].get_state(), sid)


WRITER = """
import os, sys, time
import numpy as np
from shopfloor.agent.state import write_checkpoint
# A slow SD card: each fsync takes 40 ms, so the kills below often land between the temporary
# file being written and the rename - the window that atomicity is about.
real_fsync = os.fsync
def slow_fsync(fd):
    time.sleep(0.04)
    real_fsync(fd)
os.fsync = slow_fsync
path = sys.argv[1]
rng = np.random.default_rng(0)
big = {"signals": {f"s{i}": {"table": rng.random((3, 2657)), "n": i} for i in range(60)}}
print("ready", flush=True)
k = 0
while True:
    big["signals"]["s0"]["n"] = k
    write_checkpoint(path, big, "h")
    k += 1
"""


def test_fifty_kills_during_checkpoint_writes_never_leave_a_broken_checkpoint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / FILE_NAME
    path.parent.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(7)
    readable = 0
    for _ in range(50):
        with subprocess.Popen([sys.executable, str(script), str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(float(rng.uniform(0.05, 0.5)))  # a write takes ~0.2 s: any phase of one
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        if path.exists():
            read_checkpoint(path)  # must not raise: the file is the old or the new one
            readable += 1
    assert readable >= 40  # most runs got at least one write done
    # Each temporary left behind is a write the kill interrupted: the test did hit writes.
    interrupted = [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    assert len(interrupted) >= 5, interrupted
    # What a kill leaves behind is a temporary, which the next start removes.
    cfg = parse_agent_config(agent_config(1883, path.parent))
    plant = Plant(cfg.pipeline)
    Checkpointer(cfg, plant, path.parent, 60).restore()
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
