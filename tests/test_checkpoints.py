"""The agent's checkpoints: restore-and-continue equals an uninterrupted run; a changed signal
starts cold alone; a damaged file means a cold start with a log line, never a crash."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from shopfloor.agent.checkpoints import Checkpointer
from shopfloor.agent.config import AgentConfig, parse_agent_config
from shopfloor.agent.state import read_checkpoint, write_checkpoint
from shopfloor.receiving.admission import Admission
from shopfloor.scoring.pipeline import Plant

CONFIG = """
[mqtt]
client_id = "ckpt"
[[signals]]
asset = "press-1"
name = "force"
detector = { kind = "cusum" }
[[signals]]
asset = "press-1"
name = "stroke"
[[subscriptions]]
topic = "plant/{asset}/{signal}"
detector = { kind = "hst" }
[defaults.alarm]
warmup = 20
"""


def build(text: str = CONFIG) -> tuple[AgentConfig, Plant]:
    config = parse_agent_config(text)
    return config, Plant(config.pipeline)


def stream(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, n)
    x[n // 2 : n // 2 + 30] += 5.0
    return x


def run(plant: Plant, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for sid, x in parts.items():
        if sid not in plant.signals:
            asset, name = sid.split("/")
            cfg = parse_agent_config(CONFIG)
            plant.add_signal(cfg.subscriptions[0].signal_spec(asset, name), 0)
        out[sid] = plant.signals[sid].process(x).result.score
    out["asset"] = plant.assets["press-1"].process(
        np.column_stack([parts["press-1/force"], parts["press-1/stroke"]])).result.score
    return out


def test_restore_then_continue_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    data = {"press-1/force": stream(900, 1), "press-1/stroke": stream(900, 2),
            "oven-2/temp": stream(900, 3)}
    cut = 470
    _, whole = build()
    expected = run(whole, data)
    config, first = build()
    head = run(first, {k: v[:cut] for k, v in data.items()})
    Checkpointer(config, first, tmp_path, 60).write()
    config, second = build()
    admitted = Admission((), 1000, 3600)
    assert Checkpointer(config, second, tmp_path, 60).restore(admitted) == 4
    assert set(admitted) == {"press-1/force", "press-1/stroke", "oven-2/temp"}
    assert second.signals["oven-2/temp"].subscription == 0
    tail = run(second, {k: v[cut:] for k, v in data.items()})
    for key, value in expected.items():
        np.testing.assert_array_equal(np.concatenate([head[key], tail[key]]), value, err_msg=key)


def test_a_changed_signal_starts_cold_and_the_others_keep_their_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, first = build()
    run(first, {"press-1/force": stream(300, 1), "press-1/stroke": stream(300, 2)})
    Checkpointer(config, first, tmp_path, 60).write()
    changed = CONFIG.replace('detector = { kind = "cusum" }', 'detector = { kind = "ewma" }')
    config, second = build(changed)
    with caplog.at_level(logging.INFO):
        restored = Checkpointer(config, second, tmp_path, 60).restore()
    # stroke and the asset: the asset's inputs are the signals' values, which force's new
    # detector does not change.
    assert restored == 2
    assert "press-1/force: configuration changed" in caplog.text
    assert second.signals["press-1/stroke"].scored == 300
    assert second.signals["press-1/force"].scored == 0


def test_a_damaged_checkpoint_means_a_cold_start_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, first = build()
    run(first, {"press-1/force": stream(100, 1), "press-1/stroke": stream(100, 2)})
    ck = Checkpointer(config, first, tmp_path, 60)
    ck.write()
    data = bytearray(ck.path.read_bytes())
    data[-5] ^= 0xFF
    ck.path.write_bytes(bytes(data))
    (tmp_path / ".pipelines.ckpt.999.tmp").write_bytes(b"half a write")
    config, second = build()
    with caplog.at_level(logging.INFO):
        assert Checkpointer(config, second, tmp_path, 60).restore() == 0
    assert "checksum mismatch" in caplog.text
    assert "starting cold" in caplog.text
    assert not ck.path.exists()
    assert len(list(tmp_path.glob("pipelines.ckpt.*.bad"))) == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_changed_input_of_the_asset_starts_the_asset_cold(tmp_path: Path) -> None:
    config, first = build()
    run(first, {"press-1/force": stream(300, 1), "press-1/stroke": stream(300, 2)})
    Checkpointer(config, first, tmp_path, 60).write()
    changed = CONFIG.replace('name = "stroke"', 'name = "stroke"\nvalid_range = [-100.0, 100.0]')
    config, second = build(changed)
    assert Checkpointer(config, second, tmp_path, 60).restore() == 1  # force alone
    assert second.assets["press-1"].scored == 0


@pytest.mark.parametrize(("name", "tree", "why"), [
    ("signals as a list", {"signals": [], "assets": {}}, "signals is a list"),
    ("an entry that is not a table", {"signals": {"press-1/force": 3}, "assets": {}},
     "not a table"),
    ("a string subscription index",
     {"signals": {"plant/x": {"spec": "s", "subscription": "0", "state": {}}}, "assets": {}},
     "subscription is '0'"),
    ("no state table", {"signals": {"press-1/force": {"spec": "s"}}, "assets": {}},
     "lacks its spec hash"),
    ("not a table at all", [1, 2], "not a table"),
])
def test_a_checkpoint_with_a_valid_checksum_and_a_wrong_structure_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, tree: object, why: str
) -> None:
    # Each of these ended in a traceback at every start (a crash loop under systemd).
    config, plant = build()
    ck = Checkpointer(config, plant, tmp_path, 60)
    write_checkpoint(ck.path, tree, ck.config_hash)
    with caplog.at_level(logging.INFO):
        assert Checkpointer(config, plant, tmp_path, 60).restore() == 0, name
    assert why in caplog.text
    assert "starting cold" in caplog.text
    assert not ck.path.exists()
    assert len(list(tmp_path.glob("pipelines.ckpt.*.bad"))) == 1


def test_a_state_that_breaks_half_way_leaves_that_signal_fresh_and_the_others_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config, first = build()
    run(first, {"press-1/force": stream(300, 1), "press-1/stroke": stream(300, 2)})
    ck = Checkpointer(config, first, tmp_path, 60)
    ck.write()
    tree = read_checkpoint(ck.path).state
    # The monitor restores, then "scored" is nonsense: the signal must not keep half of it.
    tree["signals"]["press-1/force"]["state"]["scored"] = [1, 2]
    write_checkpoint(ck.path, tree, ck.config_hash)
    config, second = build()
    with caplog.at_level(logging.INFO):
        restored = Checkpointer(config, second, tmp_path, 60).restore()
    assert restored == 2  # stroke and the asset
    assert "press-1/force: saved state refused" in caplog.text
    fresh = Plant(config.pipeline).signals["press-1/force"].get_state()
    assert second.signals["press-1/force"].get_state()["scored"] == fresh["scored"] == 0
    assert second.signals["press-1/stroke"].scored == 300


def test_a_checkpoint_that_inflates_past_the_bound_is_refused_without_inflating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopfloor.agent import state as state_module

    config, plant = build()
    ck = Checkpointer(config, plant, tmp_path, 60)
    # 64 MiB of zeros: a few tens of kilobytes on disk.
    write_checkpoint(ck.path, {"signals": {}, "assets": {},
                               "pad": np.zeros(8 * 1024 * 1024)}, ck.config_hash)
    assert ck.path.stat().st_size < 500_000
    monkeypatch.setattr(state_module, "MAX_BLOB_INFLATED", 1024 * 1024)
    assert Checkpointer(config, plant, tmp_path, 60).restore() == 0
    assert len(list(tmp_path.glob("pipelines.ckpt.*.bad"))) == 1
