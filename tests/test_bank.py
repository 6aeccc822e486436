"""Signal banks (issue 12, item 1): a bank's results equal the per-signal pipeline's bit for
bit, for any batching and interleaving of signals, with rejects, alarms, adoptions, gaps,
backwards times and checkpoint/restore; a stage a bank cannot hold is refused."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.config import (
    DEFAULT_ALARM,
    DEFAULT_DETECTOR,
    DEFAULT_THRESHOLD,
    SignalSpec,
    StageSpec,
)
from shopfloor.scoring.bank import ScalarBank
from shopfloor.scoring.monitor import MonitorBatch
from shopfloor.scoring.pipeline import BankedSignal, SignalPipeline

DEFAULT = StageSpec(dict(DEFAULT_DETECTOR), dict(DEFAULT_THRESHOLD), dict(DEFAULT_ALARM))
# Small warm-ups and calibration, so a few hundred samples reach alarms and adoptions.
QUICK = StageSpec(
    {"kind": "zscore", "min_samples": 10, "alpha": 0.02},
    {"kind": "pot", "false_alarm_rate": 0.02, "calibration": 50, "level": 0.75},
    {"warmup": 20, "raise_after": 2, "clear_after": 4, "cooldown": 2, "max_pause": 60,
     "adapt_after": 40.0, "gap_reset": 30.0},
)
# A fixed threshold (the agent benchmark's latency signals use one).
FIXED = StageSpec({"kind": "zscore", "min_samples": 20},
                  {"kind": "fixed", "value": 4.0},
                  {"raise_after": 1, "clear_after": 1, "warmup": 20, "adapt_after": 40.0})
FIELDS = MonitorBatch.__slots__


def spec(i: int, stage: StageSpec, valid_range: tuple[float, float] | None = None
         ) -> SignalSpec:
    return SignalSpec("press-1", f"s{i}", "scalar", stage, valid_range=valid_range)


def signal_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a step, a stuck run, rejects, a long gap and a backwards time."""
    x = rng.normal(10.0, 1.0, n)
    x[int(0.27 * n) : int(0.27 * n) + 3] += 9.0  # a spike: raises and clears
    x[n // 3 : n // 3 + n // 6] += 8.0  # a step: raises, and is adopted
    x[int(0.6 * n) : int(0.6 * n) + 15] = x[int(0.6 * n)]  # a stuck transmitter, re-warmed
    for k in rng.choice(n, size=max(1, n // 40), replace=False):
        x[k] = rng.choice([np.nan, np.inf, -np.inf, 1e300, 250.0])
    x[n // 5] = np.nan  # at least one reject in every signal
    t = 1_767_225_600.0 + np.arange(n, dtype=np.float64)
    t[2 * n // 3 :] += 100.0  # longer than QUICK's gap_reset
    t[n // 4] -= 5.0  # one sample back in time
    return x, t


def run_reference(stage: StageSpec, data: list[tuple[np.ndarray, np.ndarray]],
                  splits: list[list[int]], valid: tuple[float, float] | None
                  ) -> tuple[list[SignalPipeline], list[dict[str, np.ndarray]]]:
    """Each signal through its own pipeline, in its own batch split."""
    pipes, outs = [], []
    for i, (x, t) in enumerate(data):
        pipe = SignalPipeline(spec(i, stage, valid))
        parts: dict[str, list[np.ndarray]] = {name: [] for name in (*FIELDS, "reason")}
        edges = [0, *splits[i], len(x)]
        for a, b in itertools.pairwise(edges):
            batch = pipe.process(x[a:b], t[a:b])
            for name in FIELDS:
                parts[name].append(getattr(batch.result, name))
            parts["reason"].append(batch.reason)
        pipes.append(pipe)
        outs.append({k: np.concatenate(v) for k, v in parts.items()})
    return pipes, outs


def interleave(rng: np.random.Generator, lengths: list[int]) -> np.ndarray:
    """A random arrival order: each signal's samples stay in their own order."""
    order = np.concatenate([np.full(n, i) for i, n in enumerate(lengths)])
    rng.shuffle(order)
    return order


def run_bank(bank: ScalarBank, data: list[tuple[np.ndarray, np.ndarray]], order: np.ndarray,
             cuts: list[int], rows: list[int]) -> list[dict[str, np.ndarray]]:
    """The interleaved samples through the bank in drains cut at ``cuts``; per-signal outputs."""
    pos = np.zeros(len(data), dtype=np.int64)
    index = np.empty(len(order), dtype=np.int64)
    for k, i in enumerate(order):
        index[k] = pos[i]
        pos[i] += 1
    values = np.array([data[i][0][j] for i, j in zip(order, index, strict=True)])
    times = np.array([data[i][1][j] for i, j in zip(order, index, strict=True)])
    row_of = np.array(rows)[order]
    parts: list[dict[str, list[np.ndarray]]] = [
        {name: [] for name in (*FIELDS, "reason")} for _ in data]
    edges = [0, *cuts, len(order)]
    for a, b in itertools.pairwise(edges):
        batch = bank.process(row_of[a:b], values[a:b], times[a:b])
        for i in range(len(data)):
            mine = order[a:b] == i
            for name in FIELDS:
                parts[i][name].append(getattr(batch.result, name)[mine])
            parts[i]["reason"].append(batch.reason[mine])
    return [{k: np.concatenate(v) for k, v in p.items()} for p in parts]


def assert_same(bank_out: dict[str, np.ndarray], ref: dict[str, np.ndarray], what: str) -> None:
    for name, expected in ref.items():
        got = bank_out[name]
        assert got.dtype == expected.dtype or name == "state", (what, name, got.dtype)
        # Bit for bit: the same floats, NaN where NaN (rules are the detector's, 0 here).
        np.testing.assert_array_equal(got, expected, err_msg=f"{what}: {name}")


def assert_state_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        assert set(a) == set(b), (where, sorted(a), sorted(b))
        for k in a:
            assert_state_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
        assert np.asarray(a).dtype == np.asarray(b).dtype, where
    else:
        assert a == b, (where, a, b)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), signals=st.integers(1, 4),
       length=st.integers(60, 260), drains=st.integers(1, 12), ranged=st.booleans())
def test_a_bank_equals_the_pipelines_bit_for_bit(
    seed: int, signals: int, length: int, drains: int, ranged: bool
) -> None:
    rng = np.random.default_rng(seed)
    valid = (-50.0, 200.0) if ranged else None
    data = [signal_data(rng, int(length * rng.uniform(0.5, 1.0))) for _ in range(signals)]
    splits = [sorted(rng.choice(np.arange(1, len(x)), size=min(3, len(x) - 1), replace=False)
                     .tolist()) for x, _ in data]
    stage = FIXED if seed % 3 == 0 else QUICK
    pipes, ref = run_reference(stage, data, splits, valid)
    bank = ScalarBank(stage, capacity=1)  # grows as signals join
    rows = [bank.add(spec(i, stage, valid)) for i in range(signals)]
    order = interleave(rng, [len(x) for x, _ in data])
    cuts = sorted(rng.choice(np.arange(1, len(order)), size=min(drains, len(order) - 1),
                             replace=False).tolist())
    out = run_bank(bank, data, order, cuts, rows)
    for i in range(signals):
        assert_same(out[i], ref[i], f"signal {i}")
        sid = pipes[i].spec.id
        assert_state_equal(bank.get_state(sid), pipes[i].get_state(), sid)
    # The property would hold vacuously without alarms, rejects and gaps: the data has them.
    every = {k: np.concatenate([r[k] for r in ref]) for k in ref[0]}
    assert every["reason"].any()


def test_the_data_reaches_every_part_of_the_chain() -> None:
    # The control of the property test: alarms raise, clear and adopt, gaps re-warm.
    rng = np.random.default_rng(7)
    data = [signal_data(rng, 260) for _ in range(3)]
    _, ref = run_reference(QUICK, data, [[50], [100], [7]], None)
    every = {k: np.concatenate([r[k] for r in ref]) for k in ref[0]}
    assert every["raised"].sum() >= 3
    assert every["cleared"].any()
    assert every["adopted"].any()
    assert (~every["learned"] & (every["reason"] == 0)).any()
    assert np.isfinite(every["threshold"]).any()
    assert (every["likelihood"][np.isfinite(every["likelihood"])] != 0.5).any()


@pytest.mark.parametrize("stage", [DEFAULT, QUICK, FIXED], ids=["default", "quick", "fixed"])
def test_a_long_run_with_a_restore_in_the_middle(stage: StageSpec) -> None:
    # Long enough for the memories that short runs never reach (the likelihood's 2,000
    # samples, the stuck watch's 1 / alpha).
    rng = np.random.default_rng(11)
    n = 3000
    data = [signal_data(rng, n) for _ in range(3)]
    pipes, ref = run_reference(stage, data, [[1000, 2000]] * 3, None)
    bank = ScalarBank(stage)
    rows = [bank.add(spec(i, stage)) for i in range(3)]
    order = interleave(rng, [n] * 3)
    half = len(order) // 2
    first = run_bank(bank, data, order[:half], [half // 3], rows)
    # A checkpoint in the middle restores into a new bank, rows in another order.
    saved = {sid: bank.get_state(sid) for sid in bank.ids}
    again = ScalarBank(stage)
    rows2 = [0, 0, 0]
    for i in (2, 0, 1):
        rows2[i] = again.add(spec(i, stage))
        again.set_state(spec(i, stage).id, saved[spec(i, stage).id])
    rest = [(x[(order[:half] == i).sum():], t[(order[:half] == i).sum():])
            for i, (x, t) in enumerate(data)]
    second = run_bank(again, rest, order[half:], [], rows2)
    for i in range(3):
        joined = {k: np.concatenate([first[i][k], second[i][k]]) for k in first[i]}
        assert_same(joined, ref[i], f"signal {i}")
        assert_state_equal(again.get_state(pipes[i].spec.id), pipes[i].get_state())
    every = {k: np.concatenate([r[k] for r in ref]) for k in ref[0]}
    assert every["raised"].any()  # the default chain did raise on the steps


def test_a_pipeline_continues_from_a_bank_row_and_back() -> None:
    rng = np.random.default_rng(3)
    x, t = signal_data(rng, 400)
    ref = SignalPipeline(spec(0, QUICK)).process(x, t)
    bank = ScalarBank(QUICK)
    bank.add(spec(0, QUICK))
    head = bank.process(np.zeros(150, dtype=np.int64), x[:150], t[:150])
    pipe = SignalPipeline(spec(0, QUICK))
    pipe.set_state(bank.get_state(spec(0, QUICK).id))  # the signal leaves the bank
    middle = pipe.process(x[150:300], t[150:300])
    bank.set_state(spec(0, QUICK).id, pipe.get_state())  # and comes back
    tail = bank.process(np.zeros(100, dtype=np.int64), x[300:], t[300:])
    for name in FIELDS:
        joined = np.concatenate([getattr(head.result, name), getattr(middle.result, name),
                                 getattr(tail.result, name)])
        np.testing.assert_array_equal(joined, getattr(ref.result, name), err_msg=name)


def test_removing_a_row_keeps_the_others() -> None:
    rng = np.random.default_rng(5)
    bank = ScalarBank(QUICK)
    for i in range(3):
        bank.add(spec(i, QUICK))
    x = rng.normal(0.0, 1.0, (3, 100))
    t = np.arange(100, dtype=np.float64)
    for i in range(3):
        bank.process(np.full(100, i), x[i], t)
    kept = bank.get_state(spec(2, QUICK).id)
    bank.remove(spec(0, QUICK).id)
    assert bank.ids == [spec(2, QUICK).id, spec(1, QUICK).id]
    assert_state_equal(bank.get_state(spec(2, QUICK).id), kept)
    assert bank.add(spec(0, QUICK)) == 2
    assert bank.get_state(spec(0, QUICK).id)["scored"] == 0


@pytest.mark.parametrize("stage", [
    StageSpec({"kind": "ewma"}, dict(DEFAULT_THRESHOLD), {}),
    StageSpec({"kind": "zscore", "forecast": True}, dict(DEFAULT_THRESHOLD), {}),
    StageSpec({"kind": "zscore"}, {"kind": "quantile", "false_alarm_rate": 0.001}, {}),
])
def test_stages_a_bank_cannot_hold_stay_pipelines(stage: StageSpec) -> None:
    assert not ScalarBank.accepts(spec(0, stage))
    with pytest.raises(ValueError, match="bank holds"):
        ScalarBank(stage)
    assert ScalarBank.accepts(spec(0, DEFAULT))
    assert not ScalarBank.accepts(SignalSpec("m", "accel", "frame", DEFAULT))


def test_a_bad_checkpoint_entry_is_refused_and_leaves_the_row() -> None:
    bank = ScalarBank(QUICK)
    bank.add(spec(0, QUICK))
    bank.process(np.zeros(30, dtype=np.int64), np.arange(30.0), np.arange(30.0))
    before = bank.get_state(spec(0, QUICK).id)
    bad = bank.get_state(spec(0, QUICK).id)
    bad["monitor"]["threshold"] = {"tail": np.zeros(3)}
    with pytest.raises(ValueError, match="tail state"):
        bank.set_state(spec(0, QUICK).id, bad)
    assert_state_equal(bank.get_state(spec(0, QUICK).id), before)


# --- the worker: banks against pipelines, message for message -------------------------------

WORKER_CONFIG = """
[mqtt]
host = "127.0.0.1"
[agent]
max_signals = 100
[defaults.detector]
kind = "zscore"
min_samples = 10
alpha = 0.02
[defaults.threshold]
kind = "pot"
false_alarm_rate = 0.02
calibration = 50
level = 0.75
[defaults.alarm]
warmup = 20
raise_after = 2
clear_after = 4
max_pause = 60
adapt_after = 40.0
[[subscriptions]]
topic = "plant/{line}/{asset}/{signal}"
codec = "json"
[[subscriptions]]
topic = "vib/{line}/{asset}/{signal}"
codec = "frame"
features = { sample_rate = 2560.0, shaft_hz = 25.0, shaft_orders = [1.0, 2.0] }
"""


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), per_drain=st.integers(10, 80))
def test_the_worker_with_banks_tells_what_it_tells_with_pipelines(seed: int,
                                                                  per_drain: int) -> None:
    # Same messages, same drains: the same events, statuses, counts and checkpoint entries,
    # through the bank path (order check, chunked scoring, status and event bookkeeping).
    import time

    from shopfloor.agent.config import parse_agent_config
    from shopfloor.agent.worker import AlarmChange, SignalStatus, Worker
    from shopfloor.receiving.codecs import encode_frame, encode_json_batch, encode_json_scalar
    from shopfloor.receiving.ingest import BoundedQueue, Ingest
    from shopfloor.scoring.pipeline import Plant

    config = parse_agent_config(WORKER_CONFIG, source="banks.toml")
    rng = np.random.default_rng(seed)
    t0 = time.time() - 10_000.0
    messages: list[tuple[str, bytes]] = []
    clock: dict[str, float] = {}
    for k in range(600):
        topic = f"plant/l{k % 2}/press-{(k // 2) % 3}/s{rng.integers(2)}"
        t = clock.get(topic, t0) + 1.0
        value = float(rng.normal(10.0, 1.0) + (9.0 if 300 <= k < 420 else 0.0))
        if rng.random() < 0.05:  # a redelivery, or a sample from the past
            t -= float(rng.choice([0.0, 3.0]))
        else:
            clock[topic] = t
        if k % 3 == 0:  # a vibration frame (its length changes once: two frame runs)
            frame = rng.standard_normal(256 if k < 540 else 128) * (4.0 if k >= 420 else 1.0)
            messages.append((topic.replace("plant/", "vib/"), encode_frame(t, 2560.0, frame)))
        elif rng.random() < 0.1:  # a batch message of three samples
            messages.append((topic, encode_json_batch(t, [value, value + 0.5, value], 1.0)))
            clock[topic] = t + 2.0
        else:
            messages.append((topic, encode_json_scalar(t, value)))
    outcomes = []
    for banks in (True, False):
        queue = BoundedQueue(10_000, "drop_oldest")
        ingest = Ingest(config, queue)
        changes: list[AlarmChange] = []
        worker = Worker(config, Plant(config.pipeline, banks=banks), queue,
                        on_change=changes.append)
        for start in range(0, len(messages), per_drain):
            for topic, payload in messages[start:start + per_drain]:
                ingest.on_message(topic, payload, t0)
            worker.process(queue.get_batch(10_000, 0.0))
        statuses = {sid: SignalStatus(**{k: getattr(s, k) for k in SignalStatus.__slots__
                                         if k not in ("last_arrival", "interval")})
                    for sid, s in worker.status.items()}
        states = {sid: p.get_state() for sid, p in worker.plant.signals.items()}
        counts = {sid: (p.scored, dict(p.rejected)) for sid, p in worker.plant.signals.items()}
        outcomes.append((changes, statuses, states, counts, worker.plant))
    banked, reference = outcomes
    assert all(isinstance(p, BankedSignal) for p in banked[4].signals.values())
    assert sum(p.frames is not None for p in banked[4].signals.values()) >= 2
    # The events, field for field, each signal's in order (a drain's signals may take turns
    # differently: a bank's go together).
    def per_signal(changes: list[AlarmChange]) -> list[AlarmChange]:
        return sorted(changes, key=lambda c: (c.asset, c.signal or "", sorted(c.labels.items())))

    assert per_signal(banked[0]) == per_signal(reference[0])
    assert banked[1].keys() == reference[1].keys()
    for sid in reference[1]:
        assert repr(banked[1][sid]) == repr(reference[1][sid]), sid
        assert banked[3][sid][0] == reference[3][sid][0], sid
        assert {k: v for k, v in banked[3][sid][1].items() if v} == \
            {k: v for k, v in reference[3][sid][1].items() if v}, sid
        a, b = banked[2][sid], reference[2][sid]
        a["rejected"] = {k: v for k, v in a["rejected"].items() if v}
        b["rejected"] = {k: v for k, v in b["rejected"].items() if v}
        assert_state_equal(a, b, sid)
    assert any(c.kind == "raised" and c.features is None for c in reference[0])
    assert any(c.kind == "raised" and c.features is not None for c in reference[0])


# --- frame banks ------------------------------------------------------------------------------

FRAME_FEATURES = {"sample_rate": 2560.0, "shaft_hz": 25.0,
                  "defect_orders": {"bpfo": 3.5, "bpfi": 5.4}, "iso_group": "group1_flexible"}


def frame_spec(i: int, stage: StageSpec = QUICK,
               valid_range: tuple[float, float] | None = None) -> SignalSpec:
    return SignalSpec("motor-1", f"accel{i}", "frame", stage, valid_range=valid_range,
                      features=FRAME_FEATURES)


def frame_data(rng: np.random.Generator, n: int, length: int = 256
               ) -> tuple[np.ndarray, np.ndarray]:
    """Vibration frames with a developing fault, dropouts, a clipped and a lost frame."""
    t = np.arange(length) / 2560.0
    x = (0.3 * np.sin(2 * np.pi * 25.0 * t)[None, :]
         + 0.05 * rng.standard_normal((n, length)))
    x[n // 2 :] += 0.4 * np.sin(2 * np.pi * 87.5 * t)[None, :]  # an outer-race line appears
    x[n // 5, :10] = np.nan  # a few dropouts: scored, power rescaled
    x[n // 4, :] = np.nan  # all lost: missing_samples
    x[n // 3, 5] = 9.0  # clipped against a valid range of +-5
    times = 1_767_225_600.0 + np.arange(n) * 0.1
    return x, times


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), signals=st.integers(1, 3), drains=st.integers(1, 6),
       ranged=st.booleans())
def test_a_frame_bank_equals_the_pipelines_bit_for_bit(seed: int, signals: int, drains: int,
                                                         ranged: bool) -> None:
    from shopfloor.scoring.bank import FrameBank

    rng = np.random.default_rng(seed)
    valid = (-5.0, 5.0) if ranged else None
    data = [frame_data(rng, int(rng.integers(60, 140))) for _ in range(signals)]
    bank = FrameBank(QUICK, FRAME_FEATURES, capacity=1)
    rows = [bank.add(frame_spec(i, QUICK, valid)) for i in range(signals)]
    order = interleave(rng, [len(x) for x, _ in data])
    cuts = sorted(rng.choice(np.arange(1, len(order)), size=min(drains, len(order) - 1),
                             replace=False).tolist())
    pos = np.zeros(signals, dtype=np.int64)
    index = np.empty(len(order), dtype=np.int64)
    for k, i in enumerate(order):
        index[k], pos[i] = pos[i], pos[i] + 1
    frames = np.stack([data[i][0][j] for i, j in zip(order, index, strict=True)])
    times = np.array([data[i][1][j] for i, j in zip(order, index, strict=True)])
    row_of = np.array(rows)[order]
    got: list[dict[str, list[np.ndarray]]] = [{} for _ in range(signals)]
    for a, b in itertools.pairwise([0, *cuts, len(order)]):
        batch = bank.process(row_of[a:b], frames[a:b], times[a:b])
        assert batch.features is not None
        assert batch.diagnosis is not None
        for i in range(signals):
            mine = order[a:b] == i
            parts = got[i]
            for name in FIELDS:
                parts.setdefault(name, []).append(getattr(batch.result, name)[mine])
            parts.setdefault("reason", []).append(batch.reason[mine])
            parts.setdefault("features", []).append(batch.features[mine])
            for name in ("defect", "zone", "ratio"):
                parts.setdefault(name, []).append(getattr(batch.diagnosis, name)[mine])
    for i, (x, t) in enumerate(data):
        pipe = SignalPipeline(frame_spec(i, QUICK, valid))
        ref = pipe.process(x, t)
        assert ref.diagnosis is not None
        expected = {**{name: getattr(ref.result, name) for name in FIELDS},
                    "reason": ref.reason, "features": ref.features,
                    "defect": ref.diagnosis.defect, "zone": ref.diagnosis.zone,
                    "ratio": ref.diagnosis.ratio}
        for name, want in expected.items():
            np.testing.assert_array_equal(np.concatenate(got[i][name]), want,
                                          err_msg=f"signal {i}: {name}")
        assert_state_equal(bank.get_state(pipe.spec.id), pipe.get_state(), pipe.spec.id)
    reasons = np.concatenate([np.concatenate(g["reason"]) for g in got])
    assert (reasons == 4).any()  # missing_samples: the control reaches the gate's paths


def test_frame_signals_join_frame_banks_by_stage_and_features() -> None:
    from shopfloor.config import PipelineConfig
    from shopfloor.scoring.bank import FrameBank
    from shopfloor.scoring.pipeline import Plant

    other = {**FRAME_FEATURES, "sample_rate": 5120.0}
    specs = [frame_spec(0), frame_spec(1),
             SignalSpec("motor-2", "accel", "frame", QUICK, features=other)]
    plant = Plant(PipelineConfig(signals=tuple(specs), assets=()))
    banks = {id(p.bank) for p in plant.signals.values() if isinstance(p, BankedSignal)}
    assert len(banks) == 2
    assert all(isinstance(p.bank, FrameBank) for p in plant.signals.values()
               if isinstance(p, BankedSignal))


def test_without_times_a_bank_row_keeps_the_pipelines_sample_clock() -> None:
    # Replay and the tests feed samples without times: one second apart after the last one.
    from shopfloor.config import PipelineConfig
    from shopfloor.scoring.pipeline import Plant

    rng = np.random.default_rng(13)
    x = rng.normal(10.0, 1.0, 300)
    x[150:170] += 9.0
    banked = Plant(PipelineConfig(signals=(spec(0, QUICK),), assets=())).signals[spec(0, QUICK).id]
    assert isinstance(banked, BankedSignal)
    reference = SignalPipeline(spec(0, QUICK))
    for part in (x[:100], x[100:], x[:50]):
        got, want = banked.process(part), reference.process(part)
        for name in FIELDS:
            np.testing.assert_array_equal(getattr(got.result, name), getattr(want.result, name),
                                          err_msg=name)
    assert banked.last_time == reference.last_time == 350.0


def test_a_drain_whose_every_sample_the_gate_refuses_is_counted_not_an_error() -> None:
    # Found by CI: a chunk without one accepted sample made the bank path fail, and every
    # signal of the bank lost its batch.
    from shopfloor.agent.config import parse_agent_config
    from shopfloor.agent.worker import Worker
    from shopfloor.receiving.codecs import encode_json_scalar
    from shopfloor.receiving.ingest import BoundedQueue, Ingest
    from shopfloor.scoring.pipeline import Plant

    config = parse_agent_config(WORKER_CONFIG.replace(
        'codec = "json"\n', 'codec = "json"\nvalid_range = [0.0, 100.0]\n', 1), source="b.toml")
    queue = BoundedQueue(1000, "drop_oldest")
    ingest = Ingest(config, queue)
    worker = Worker(config, Plant(config.pipeline), queue)
    for k in range(3):
        ingest.on_message(f"plant/l0/press-{k}/force", encode_json_scalar(1e9 + k, 500.0), 0.0)
    worker.process(queue.get_batch(100, 0.0))
    assert worker.signal_errors == 0
    assert all(p.rejected == {"out_of_range": 1} for p in worker.plant.signals.values())
    assert all(isinstance(p, BankedSignal) for p in worker.plant.signals.values())
