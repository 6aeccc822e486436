"""Checkpoints: exact round trips, atomic writes, and refusal of anything damaged."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.agent.state import (
    CheckpointError,
    clean_temporaries,
    discard,
    read_checkpoint,
    write_checkpoint,
)

STATE: dict[str, Any] = {
    "signals": {
        "press-1/force": {
            "spec": "abc",
            "arr": np.array([1.5, np.nan, np.inf, -0.0, 1e-310]),
            "ints": np.arange(6, dtype=np.int64).reshape(2, 3),
            "empty": np.empty((0, 4)),
            "model": b"\x80\x04opaque river bytes",
            "n": 12,
            "x": 0.1 + 0.2,
            "nan": float("nan"),
            "none": None,
            "flag": True,
            "list": [1, "two", np.float64(3.0)],
        }
    },
    "assets": {},
}


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    path = tmp_path / "p.ckpt"
    write_checkpoint(path, STATE, "hash1")
    back = read_checkpoint(path, "hash1")
    got = back.state["signals"]["press-1/force"]
    want = STATE["signals"]["press-1/force"]
    for key in ("arr", "ints", "empty"):
        assert got[key].dtype == want[key].dtype
        assert got[key].shape == want[key].shape
        assert got[key].tobytes() == want[key].tobytes()  # every bit, NaN payloads and -0.0
        assert got[key].flags.writeable  # a restored detector may update it in place
    assert got["model"] == want["model"]
    assert got["x"] == want["x"]
    assert np.isnan(got["nan"])
    assert (got["n"], got["none"], got["flag"], got["list"]) == (12, None, True, [1, "two", 3.0])
    assert back.header["config_hash"] == "hash1"
    assert set(back.header["versions"]) == {"shopfloor", "numpy", "numba", "river"}


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "header", "pad", "empty"])
def test_damaged_files_are_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "p.ckpt"
    write_checkpoint(path, STATE, "h")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-10] ^= 0x40
    elif damage == "magic":
        data[0:3] = b"XXX"
    elif damage == "header":
        data[12:20] = b"{{{{{{{{"
    elif damage == "pad":
        data += b"\0"
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_objects_that_cannot_be_stored_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_checkpoint(tmp_path / "p", {"x": object()}, "h")
    with pytest.raises(TypeError):
        write_checkpoint(tmp_path / "p", {1: 2}, "h")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_write_replaces_atomically_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "p.ckpt"
    write_checkpoint(path, {"v": 1}, "h")
    inode = os.stat(path).st_ino
    write_checkpoint(path, {"v": 2}, "h")
    assert read_checkpoint(path).state == {"v": 2}
    assert os.stat(path).st_ino != inode  # a new file renamed over, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["p.ckpt"]


def test_stray_temporaries_are_cleaned_and_bad_files_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".p.ckpt.123.tmp").write_bytes(b"half")
    assert clean_temporaries(tmp_path) == 1
    path = tmp_path / "p.ckpt"
    path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        moved = discard(path, "bad magic")
    assert moved is not None
    assert moved.exists()
    assert not path.exists()
    assert "starting cold" in caplog.text
