"""systemd integration: the notify protocol, the warm-up before READY, the watchdog, the unit.

The notify tests bind a real unix datagram socket (a path, and an abstract ``@name``), hand it
to the code or to a ``python -m shopfloor run`` child as ``$NOTIFY_SOCKET``, and read what
arrives, with the sender's pid from the kernel (``SCM_CREDENTIALS``, what ``NotifyAccess=main``
checks). The agent talks to a real Mosquitto on loopback. The unit file is checked offline with
``systemd-analyze`` (``verify`` and ``security --offline=true``, systemd 250 or later).

Waits are bounded and wait for an event, never for a time, except one: that no ping arrives
while the worker is stuck is watched for a window of many ping periods.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.publish as paho_publish
import pytest

from shopfloor.agent.systemd import (
    PING_FRACTION,
    Notification,
    Notifier,
    NotifyListener,
    notify,
    socket_address,
    watchdog_interval,
)
from shopfloor.receiving.codecs import encode_json_scalar
from shopfloor.tools.broker import INSTALL_HINT, Mosquitto, find_mosquitto

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "shopfloor-agent.service"
EXEC_START = "/opt/shopfloor/venv/bin/shopfloor"
WATCHDOG_USEC = 1_000_000  # pings at most every 0.25 s
T0 = 1_750_000_000.0


# --- the protocol, in process ---------------------------------------------------------------


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifyListener]:
    name = (str(tmp_path / "notify") if request.param == "path"
            else f"@shopfloor-test/{os.getpid()}/{tmp_path.name}")
    with NotifyListener(name) as lst:
        yield lst


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@x/y") == "\0x/y"
    for bad in ("", "@", "relative/path", "vsock:2:9999"):
        assert socket_address(bad) is None, bad


def test_notify_without_a_socket_is_a_no_op() -> None:
    assert notify("READY=1", {}) is False
    notifier = Notifier(environ={"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None  # no socket, nobody to ping
    assert notifier.ready("x") is notifier.status("x") is notifier.stopping() is False
    assert notifier.watchdog() is False


def test_notify_reaches_the_socket_from_this_process(listener: NotifyListener) -> None:
    env = {"NOTIFY_SOCKET": listener.name}
    assert notify("READY=1\nSTATUS=all good", env)
    got = listener.wait_for("READY", "1", timeout=10)
    assert got is not None
    assert got.fields == {"READY": "1", "STATUS": "all good"}
    assert got.pid == os.getpid()


def test_notifier_sends_one_line_statuses(listener: NotifyListener) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": listener.name})
    assert notifier.status("two\nlines")
    assert notifier.ready()
    assert notifier.stopping("bye")
    assert listener.wait_for("STOPPING", "1", timeout=10) is not None
    assert [n.fields for n in listener.received] == [
        {"STATUS": "two lines"}, {"READY": "1"}, {"STOPPING": "1", "STATUS": "bye"}]


def test_an_undeliverable_notification_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "gone"
    NotifyListener(str(gone)).close()
    assert notify("READY=1", {"NOTIFY_SOCKET": str(gone)}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1"}) is False
    assert "cannot notify systemd" in caplog.text
    assert "not a unix socket" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "2500000"}, 2.5),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "4242"}, 2.5),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_pings_are_rate_limited(listener: NotifyListener) -> None:
    now = [100.0]
    statuses: list[int] = []

    def status() -> str:
        statuses.append(1)
        return f"ping {len(statuses)}"

    notifier = Notifier(environ={"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "8000000"},
                        clock=lambda: now[0])
    assert notifier.watchdog_interval == 8.0
    gap = 8.0 * PING_FRACTION
    sent = []
    for t in (0.0, 0.1, gap - 0.01, gap, gap + 0.5, 2 * gap, 10 * gap):
        now[0] = 100.0 + t
        sent.append(notifier.watchdog(status))
    assert sent == [True, False, False, True, False, True, True]
    assert len(statuses) == 4  # the status text is made only for pings that go out
    assert notifier.pings == 4
    assert listener.wait_for("STATUS", "ping 4", timeout=10) is not None
    assert [n.fields["WATCHDOG"] for n in listener.received] == ["1"] * 4


# --- the agent under a pretend service manager ------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(f"mosquitto is not installed: {INSTALL_HINT}", pytrace=False)
    mosquitto = Mosquitto(binary, tmp_path_factory.mktemp("broker"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def agent_toml(broker: Mosquitto, client_id: str) -> str:
    """One JSON subscription: z-score, quantile threshold and alarm kernels, quick to compile.

    /metrics on port 0: the kernel's pick, which no other process can take first.
    """
    return f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
keepalive = 5
reconnect_min_delay = 0.1
reconnect_max_delay = 0.5

[agent]
shutdown_timeout = 3.0

[metrics]
port = 0

[[subscriptions]]
topic = "plant/{{asset}}/{{signal}}"
codec = "json"
detector = {{ kind = "zscore", min_samples = 20 }}
alarm = {{ warmup = 20 }}
"""


# Runs the agent as `shopfloor run` does, with Worker.process blocking forever on the first
# batch that holds a sample of a signal named "stuck": a worker hung inside a batch.
STUCK_WORKER = """
import sys, threading
from shopfloor.agent import worker
from shopfloor.cli import main

process = worker.Worker.process

def process_or_hang(self, items):
    if any(item.signal.endswith("/stuck") for item in items):
        print("WORKER STUCK", file=sys.stderr, flush=True)
        threading.Event().wait()
    return process(self, items)

worker.Worker.process = process_or_hang
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


@dataclass
class Run:
    """An agent child process and the notifications it sent."""

    proc: subprocess.Popen[bytes]
    listener: NotifyListener
    log_file: Path
    started: float

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def wait(self, key: str, value: str | None = None, after: int = 0,
             timeout: float = 60.0) -> Notification:
        deadline = time.monotonic() + timeout
        got = None
        while got is None and time.monotonic() < deadline:
            got = self.listener.wait_for(key, value, timeout=0.5, after=after)
            if got is None and self.proc.poll() is not None:
                break  # it will not come from a process that has exited
        got = got or self.listener.wait_for(key, value, timeout=0.0, after=after)
        assert got is not None, (f"no {key}={value} (exit code {self.proc.poll()}):\n"
                                 f"{self.log()[-3000:]}")
        return got

    def index(self, notification: Notification) -> int:
        return self.listener.received.index(notification)


@pytest.fixture
def start_agent(
    broker: Mosquitto, tmp_path: Path
) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(socket_name: str, cache: Path | None = None, *, stuck_worker: bool = False,
              config_text: str | None = None) -> Run:
        n = len(runs)
        config = tmp_path / f"agent{n}.toml"
        config.write_text(config_text or agent_toml(broker, f"systemd-test-{n}"))
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID", "NUMBA_CACHE_DIR")}
        env.update(NOTIFY_SOCKET=socket_name, WATCHDOG_USEC=str(WATCHDOG_USEC))
        if cache is not None:
            env["NUMBA_CACHE_DIR"] = str(cache)
        argv = ([sys.executable, "-c", STUCK_WORKER, str(config)] if stuck_worker
                else [sys.executable, "-m", "shopfloor", "run", "--config", str(config)])
        listener = NotifyListener(socket_name)
        log_file = tmp_path / f"agent{n}.log"
        with log_file.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        run = Run(proc, listener, log_file, time.monotonic())
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait(10)
        run.listener.close()


def publish(broker: Mosquitto, messages: list[tuple[str, bytes]]) -> None:
    paho_publish.multiple([{"topic": t, "payload": p, "qos": 1} for t, p in messages],
                          hostname=broker.host, port=broker.port, client_id="", keepalive=5)


@pytest.mark.integration
def test_ready_only_after_warm_up_then_stopping_on_sigterm(
    start_agent: Callable[..., Run], tmp_path: Path
) -> None:
    cache = tmp_path / "numba-cache"  # empty: every kernel is compiled before READY
    run = start_agent(str(tmp_path / "notify"), cache)
    ready = run.wait("READY", "1", timeout=180)
    # READY promises a listening /metrics and compiled kernels: both hold the moment it arrives.
    port = re.search(r"/metrics on port (\d+)", ready.fields["STATUS"])
    assert port is not None, ready.fields
    with socket.create_connection(("127.0.0.1", int(port[1])), timeout=5):
        pass
    # The default signals score in banks (their chain is one kernel, and the worker's order
    # check another); the asset detector of discovered signals charts forecast residuals.
    for kernel in ("bank.bank_steps", "bank.order_steps", "forecast._kernel",
                   "likelihood._kernel"):
        assert list(cache.glob(f"*/{kernel}-*.nbi")), f"{kernel} not compiled at READY"
    before = [n.fields for n in run.listener.received[: run.index(ready)]]
    assert before[0]["STATUS"].startswith("loading ")
    assert before[-1]["STATUS"].startswith("warming up")
    assert not any("WATCHDOG" in f or "READY" in f for f in before)
    compiled = re.search(r"\((\d+) kernels from the cache, (\d+) compiled\)",
                         ready.fields["STATUS"])
    assert compiled is not None, ready.fields
    assert int(compiled[1]) == 0
    assert int(compiled[2]) > 0

    run.wait("WATCHDOG", "1", after=run.index(ready))
    run.proc.send_signal(signal.SIGTERM)
    stopping = run.wait("STOPPING", "1")
    assert run.proc.wait(30) == 0
    assert "agent stopped: drained=True flushed=True" in run.log()
    everything = run.listener.received
    assert {n.pid for n in everything} == {run.proc.pid}  # NotifyAccess=main would accept all
    assert everything.index(stopping) > run.index(ready)
    assert sum("READY" in n.fields for n in everything) == 1


@pytest.mark.integration
def test_pings_while_idle_and_busy_stop_when_the_worker_is_stuck(
    start_agent: Callable[..., Run], broker: Mosquitto, tmp_path: Path
) -> None:
    run = start_agent(f"@shopfloor-test/{os.getpid()}/{tmp_path.name}", stuck_worker=True)
    ready = run.wait("READY", "1", timeout=180)
    # Idle (nothing published): the worker loop still turns, so pings keep coming.
    at = run.index(ready)
    for _ in range(3):
        at = run.index(run.wait("WATCHDOG", "1", after=at + 1))
    # Busy: pings go on, and the status they carry counts the messages.
    publish(broker, [("plant/press/force", encode_json_scalar(T0 + i, 100.0 + i % 3))
                     for i in range(5)])
    run.wait("STATUS", "running: 5 messages, 1 signals, 0 in alarm", after=at)
    # Stuck inside a batch: not one more ping, however long we watch.
    publish(broker, [("plant/press/stuck", encode_json_scalar(T0, 1.0))])
    deadline = time.monotonic() + 60
    while "WORKER STUCK" not in run.log():
        assert run.proc.poll() is None, run.log()[-3000:]
        assert time.monotonic() < deadline, run.log()[-3000:]
        time.sleep(0.02)
    stuck_at = time.monotonic()
    window = 12 * WATCHDOG_USEC / 1e6 * PING_FRACTION  # a dozen ping periods
    time.sleep(window)
    late = [n for n in run.listener.received if "WATCHDOG" in n.fields and n.time > stuck_at]
    assert late == [], late
    assert run.proc.poll() is None  # hung, not dead: exactly what the watchdog is for


@pytest.mark.integration
def test_an_invalid_config_exits_2_without_ready(
    start_agent: Callable[..., Run], broker: Mosquitto, tmp_path: Path
) -> None:
    bad = agent_toml(broker, "systemd-bad").replace('"zscore"', '"zscor"')
    run = start_agent(str(tmp_path / "notify"), config_text=bad)
    assert run.proc.wait(60) == 2
    assert "zscor" in run.log()
    assert not any("READY" in n.fields for n in run.listener.received)


# --- the warm-up compiles everything the pipelines need later ----------------------------------

WARMUP_COMPLETENESS = """
import json, sys
import numpy as np
from shopfloor.agent.config import parse_agent_config
from shopfloor.scoring.pipeline import Plant
from shopfloor.agent.warmup import kernel_counts, warm_up

config = parse_agent_config(sys.stdin.read())
warmed = warm_up(config)
before = kernel_counts().signatures
plant = Plant(config.pipeline)
rng = np.random.default_rng(7)
rows = {}
for sid, pipe in plant.signals.items():
    if pipe.frames is None:
        values = 50.0 + rng.standard_normal(400)
        values[300:310] += 40.0  # a fault: alarms raise and clear, the per-sample path runs
        values[5] = np.nan
        pipe.process(values)
    else:
        frames = 0.1 * rng.standard_normal((300, 2048))
        frames[200:210] *= 20.0
        pipe.process(frames)
for pipe in plant.assets.values():
    x = 50.0 + rng.standard_normal((400, len(pipe.spec.signals)))
    x[300:310, 0] += 40.0
    pipe.process(x)
print(json.dumps({"pipelines": warmed.pipelines, "failed": list(warmed.failed),
                  "before": before, "after": kernel_counts().signatures}))
"""

EVERY_KIND = """
[mqtt]
host = "127.0.0.1"

[[signals]]
asset = "press"
name = "force"
valid_range = [0.0, 100.0]

[[signals]]
asset = "press"
name = "temp"
detector = { kind = "cusum" }
threshold = { kind = "fixed", value = 5.0 }

[[signals]]
asset = "press"
name = "speed"
detector = { kind = "western_electric" }

[[signals]]
asset = "line"
name = "a"
detector = { kind = "ewma", baseline = "welford" }

[[signals]]
asset = "line"
name = "b"
detector = { kind = "page_hinkley" }

[[signals]]
asset = "line"
name = "c"
detector = { kind = "robust_z" }

[[signals]]
asset = "line"
name = "d"
detector = { kind = "flatline" }

[[signals]]
asset = "pump"
name = "vibration"
kind = "frame"
features = { sample_rate = 12000.0, shaft_hz = 29.0, defect_orders = { bpfo = 3.58 } }

[[assets]]
name = "press"
signals = ["force", "temp", "speed"]
"""


def test_after_warm_up_the_pipelines_compile_nothing_more() -> None:
    # A fresh interpreter: in this one, earlier tests have compiled kernels already.
    done = subprocess.run([sys.executable, "-c", WARMUP_COMPLETENESS], input=EVERY_KIND,
                          capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["failed"] == []
    assert result["pipelines"] == 10  # 8 signals (all specs differ), 2 assets (3 and 4 wide)
    assert result["before"] > 0
    assert result["after"] == result["before"], "a kernel compiled after the warm-up"


# --- the unit file ----------------------------------------------------------------------------


def _systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed (Debian package systemd)", pytrace=False)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    major = int(re.match(r"systemd (\d+)", version.stdout).group(1))  # type: ignore[union-attr]
    assert major >= 250, f"systemd {major}: `security --offline` needs 250 or later"
    return binary


def test_unit_verifies(tmp_path: Path) -> None:
    # `verify` insists that ExecStart's program exists, and it resolves the units the agent
    # needs (sysinit.target, network-online.target): so it runs against a scratch root holding
    # the distribution's units, the unit exactly as shipped, and an executable stand-in at the
    # installer's path.
    binary = _systemd_analyze()
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    program = root / EXEC_START.lstrip("/")
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    done = subprocess.run([binary, "verify", f"--root={root}", UNIT.name],
                          capture_output=True, text=True, timeout=60, check=False)
    # Unknown keys and bad values are only warnings: any output at all is a failure here.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    program.unlink()  # the check above can fail: without the program, verify says so
    done = subprocess.run([binary, "verify", f"--root={root}", UNIT.name],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "is not executable" in done.stderr


def test_unit_exposure_is_at_most_2() -> None:
    binary = _systemd_analyze()
    done = subprocess.run([binary, "security", "--offline=true", "--no-pager", str(UNIT)],
                          capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found[1]) <= 2.0, done.stdout


def _settings(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_unit_says_what_the_issue_asks() -> None:
    s = _settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify"
    assert one["ExecStart"] == f"{EXEC_START} run --config /etc/shopfloor/agent.toml"
    assert "NUMBA_CACHE_DIR=%C/shopfloor" in one["Environment"].split()
    assert one["CacheDirectory"] == one["StateDirectory"] == one["ConfigurationDirectory"] \
        == "shopfloor"
    assert one["LoadCredential"] == "mqtt-password:/etc/shopfloor/mqtt-password"
    assert one["DynamicUser"] == "yes"
    assert one["Restart"] == "on-failure"
    for key in ("WatchdogSec", "StartLimitBurst", "MemoryMax", "SystemCallFilter"):
        assert one[key], key
    assert one["CapabilityBoundingSet"] == ""
    assert one["ProtectSystem"] == "strict"
    # Numba's JIT needs writable executable memory; ProcSubset=pid hides /proc/stat.
    assert "MemoryDenyWriteExecute" not in s
    assert "ProcSubset" not in s
    from shopfloor.agent.config import AgentSettings

    stop = float(one["TimeoutStopSec"].removesuffix("s"))
    assert stop > AgentSettings().shutdown_timeout
