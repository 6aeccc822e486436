"""The README's first command: ``shopfloor demo`` runs the whole path and finds the faults."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from shopfloor.cli import main

FAULTY = ("motor-1/accel", "station-2/diameter_mm", "station-2/torque_nm")
DEMO = [sys.executable, "-m", "shopfloor", "demo", "--metrics-port", "0"]


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_live_demo_alarms_on_the_faulty_signals_only(tmp_path: Path, broker: str) -> None:
    # 20x: the faults begin 15 s into the run; 30 s leaves room for a slow CI machine.
    done = subprocess.run(
        [*DEMO, "--duration", "30", "--speed", "20", "--broker", broker],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert ("faulty signals without an alarm: none; healthy signals with an alarm: none; "
            "faults not judged: none") in out, out[-2000:] + done.stderr[-2000:]
    for s in FAULTY:
        assert re.search(rf"^{s} .* detected", out, re.MULTILINE), out[-2000:]
    assert "drained=True flushed=True" in done.stderr
    assert ("embedded broker" if broker == "embedded" else "Mosquitto 127.0.0.1") in out


def assert_not_started(out: str, err: str) -> None:
    """The faults were all still to come: none is a miss, each says so, on the log's clock."""
    assert ("faulty signals without an alarm: none; healthy signals with an alarm: none; "
            "faults not judged: motor-1/accel (not started), station-2/diameter_mm "
            "(not started), station-2/torque_nm (not started)") in out, out[-2000:] + err[-2000:]
    started = re.search(r"^(\S+) INFO shopfloor\.agent\.run agent started", err, re.MULTILINE)
    assert started is not None, err[-2000:]
    log_time = datetime.strptime(started[1], "%Y-%m-%dT%H:%M:%S%z")
    for s in FAULTY:
        row = re.search(rf"^{s}\s+(\S+)\s+0\s+not started: the demo stopped", out, re.MULTILINE)
        assert row is not None, out[-2000:]
        # The faults start 300 simulated seconds in: 30 s on the wall clock at x10, which is
        # the clock (and the format) of the log lines.
        delay = (datetime.strptime(row[1], "%Y-%m-%dT%H:%M:%S%z") - log_time).total_seconds()
        assert 28 <= delay <= 32, (row[0], started[0])


def test_a_demo_stopped_before_the_faults_reports_no_miss(tmp_path: Path) -> None:
    done = subprocess.run([*DEMO, "--duration", "4", "--speed", "10"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_not_started(done.stdout, done.stderr)


def test_ctrl_c_before_the_faults_reports_no_miss(tmp_path: Path) -> None:
    demo = subprocess.Popen([*DEMO, "--speed", "10"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert demo.stdout is not None
        banner = demo.stdout.readline()  # printed once the Ctrl-C handler is in place
        assert "Ctrl-C to stop" in banner
        time.sleep(2.0)
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 0, err[-3000:]
    assert_not_started(banner + out, err)


def test_offline_demo_writes_csv_plot_and_report(tmp_path: Path,
                                                 capsys: object) -> None:
    assert main(["demo", "--offline", "--out", str(tmp_path / "d")]) == 0
    for name in ("pump.csv", "scores.csv", "replay.png"):
        assert (tmp_path / "d" / name).stat().st_size > 1000
