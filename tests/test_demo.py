"""The README's first command: ``shopfloor demo`` runs the whole path and finds the faults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shopfloor.cli import main


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_live_demo_alarms_on_the_faulty_signals_only(tmp_path: Path, broker: str) -> None:
    # 20x: the faults begin 15 s into the run; 30 s leaves room for a slow CI machine.
    done = subprocess.run(
        [sys.executable, "-m", "shopfloor", "demo", "--duration", "30", "--speed", "20",
         "--metrics-port", "0", "--broker", broker],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "faulty signals without an alarm: none; healthy signals with an alarm: none" in out, (
        out[-2000:] + done.stderr[-2000:])
    assert "drained=True flushed=True" in done.stderr
    assert ("embedded broker" if broker == "embedded" else "Mosquitto 127.0.0.1") in out


def test_offline_demo_writes_csv_plot_and_report(tmp_path: Path,
                                                 capsys: object) -> None:
    assert main(["demo", "--offline", "--out", str(tmp_path / "d")]) == 0
    for name in ("pump.csv", "scores.csv", "replay.png"):
        assert (tmp_path / "d" / name).stat().st_size > 1000
