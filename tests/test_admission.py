"""The signal table that junk cannot fill for good (issue 10, defect 8).

Before: 1,000 junk topics took every slot of ``agent.max_signals``, a real signal that came
later was never scored, and a restart restored the junk from the checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shopfloor.agent.checkpoints import Checkpointer
from shopfloor.agent.worker import Worker
from shopfloor.receiving.admission import GRACE, Admission
from shopfloor.receiving.codecs import Limits, Rejected, decode, encode_json_scalar
from shopfloor.receiving.sparkplug import DataType, SparkplugAliases, encode_data, encode_dbirth
from shopfloor.scoring.pipeline import Plant
from test_agent_unit import SL, T0, make_config, make_ingest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_table_evicts_the_never_valid_after_their_grace_then_the_long_silent() -> None:
    clock = Clock()
    table = Admission(["cfg/static"], max_signals=4, idle_after=3600, clock=clock)
    assert [table.admit(s) for s in ("j/1", "j/2", "real/a")] == [True] * 3
    table.prove("real/a")
    assert not table.admit("j/3")  # full, and the junk is still within its grace
    clock.now += GRACE
    assert table.admit("j/3")  # evicts j/1, the oldest never-valid one
    assert table.take_evicted() == ["j/1"]
    table.prove("j/2")  # j/2 turns out real
    table.prove("j/3")
    clock.now += 60
    assert not table.admit("new/x")  # every discovered signal is proven and active
    clock.now += 3600 - 60
    table.admit("j/3")  # j/3 and real/a keep talking; j/2 fell silent
    table.admit("real/a")
    assert table.admit("new/x")  # evicts the least recently active: j/2
    assert "j/2" not in table
    assert "real/a" in table
    assert "cfg/static" in table  # configured signals are never evicted
    assert table.evictions == {"never_valid": 1, "idle": 1}
    assert len(table) == 4


def test_an_evicted_signal_admitted_again_before_the_worker_looks_keeps_its_pipeline() -> None:
    clock = Clock()
    table = Admission([], max_signals=1, idle_after=10, clock=clock)
    table.admit("a/x")
    table.prove("a/x")
    clock.now += 10
    assert table.admit("b/y")
    clock.now += 10
    table.prove("b/y")
    assert table.admit("a/x")  # back, evicting b/y
    assert table.take_evicted() == ["b/y"]  # a/x is in again: its pipeline stays


def test_junk_topics_cannot_keep_a_real_signal_out_and_are_not_restored(tmp_path: Path) -> None:
    ingest, queue = make_ingest(max_signals=20, queue_size=100_000)
    config = ingest.config
    clock = Clock()
    ingest.admitted._now = clock  # the table's clock, moved by hand
    plant = Plant(config.pipeline)
    worker = Worker(config, plant, queue, admission=ingest.admitted)

    def publish(topic: str, value: float, n: int = 1) -> None:
        for i in range(n):
            ingest.on_message(topic, encode_json_scalar(T0 + i, value), T0)
        while worker.run_once(timeout=0.0):
            pass

    # A flood of 1,000 junk names whose values no pipeline accepts (1e300 is implausible).
    for n in range(1000):
        publish(f"plant/s/l/junk-{n}/x", 1e300)
    assert ingest.rejected["signal_cap"] == 980
    publish("plant/s/l/press-1/force", 100.0)  # within the junk's grace: refused, counted
    assert ingest.rejected["signal_cap"] == 981
    clock.now += GRACE
    publish("plant/s/l/press-1/force", 100.0, n=30)
    assert "press-1/force" + SL in plant.signals
    assert plant.signals["press-1/force" + SL].scored == 30
    assert len(plant.signals) <= 20
    assert ingest.admitted.evictions["never_valid"] == 1
    # An hour later press-1 has been silent as long as the junk, but junk leaves first.
    clock.now += 3600
    publish("plant/s/l/press-2/force", 5.0, n=3)
    assert "press-2/force" + SL in plant.signals
    assert "press-1/force" + SL in plant.signals
    assert ingest.admitted.evictions == {"never_valid": 2, "idle": 0}
    # A checkpoint of this table: a restart restores the real signals, not the junk.
    checkpoints = Checkpointer(config, plant, tmp_path, 60)
    assert checkpoints.write()
    table = Admission((), 20, 3600)
    fresh = Plant(config.pipeline)
    Checkpointer(config, fresh, tmp_path, 60).restore(table)
    assert set(table) == {"press-1/force" + SL, "press-2/force" + SL}
    assert set(fresh.signals) == {"press-1/force" + SL, "press-2/force" + SL}


def test_a_restored_table_still_bounds_and_evicts() -> None:
    config = make_config(max_signals=2)
    table = Admission((s.id for s in config.pipeline.signals), 2, 3600)
    table.add("a/x", proven=True)
    table.add("b/y", proven=True)
    assert not table.admit("c/z")  # both restored ones count as active just now


def test_sparkplug_decoding_stops_at_the_alias_tables_metric_bound() -> None:
    # A 1 MB DDATA of small metrics cost 0.28 s of network-thread CPU; no BIRTH can register
    # more than max_metrics, so no DATA can carry more that are known.
    aliases = SparkplugAliases(max_metrics=100)
    limits = Limits(max_payload_bytes=1 << 20, max_batch_values=100_000)
    birth = encode_dbirth(1, 0, [(f"m{i}", i, DataType.DOUBLE, 0.0) for i in range(100)])
    assert not isinstance(decode("sparkplug", birth, T0, limits, aliases,
                                 "spBv1.0/g/DBIRTH/e/d"), Rejected)
    values = np.arange(101, dtype=float)
    big = encode_data(2, 1, [(i, DataType.DOUBLE, float(v)) for i, v in enumerate(values)])
    out = decode("sparkplug", big, T0, limits, aliases, "spBv1.0/g/DDATA/e/d")
    assert isinstance(out, Rejected)
    assert (out.reason, out.detail) == ("too_large", "more than max_metrics=100 metrics")
    ok = encode_data(2, 1, [(i, DataType.DOUBLE, float(v)) for i, v in enumerate(values[:100])])
    readings = decode("sparkplug", ok, T0, limits, aliases, "spBv1.0/g/DDATA/e/d")
    assert not isinstance(readings, Rejected)
    assert len(readings) == 100
