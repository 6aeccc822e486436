"""The alarm state machine against a per-sample reference and a declarative statement of its rules.

Two independent checks: :class:`ReferenceAlarm`, a plain-Python loop written from the rules in
:mod:`shopfloor.detect.alarm`, compared exactly; and :func:`check_rules`, which states every
rule as a property of the whole output (no state machine at all) and is run by hypothesis.
"""

from __future__ import annotations

import doctest
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.detect import alarm as alarm_module
from shopfloor.detect.alarm import Alarm, AlarmBatch, AlarmState
from shopfloor.kernels import alarm as kernel

W, N, A, C = (int(s) for s in (AlarmState.WARMING_UP, AlarmState.NORMAL, AlarmState.ACTIVE,
                                AlarmState.COOLDOWN))


class ReferenceAlarm:
    """One sample at a time, the plain way."""

    def __init__(self, raise_after: int = 3, clear_after: int = 10, cooldown: int = 0,
                 warmup: int = 100, pause_learning: bool = True, max_pause: int = 3600) -> None:
        self.p = (raise_after, clear_after, cooldown, warmup, pause_learning, max_pause)
        self.t = 0
        self.state = W
        self.run = self.quiet = self.cool = self.paused = 0

    def step(self, e: bool) -> tuple[int, bool, bool, bool, bool]:
        raise_after, clear_after, cooldown, warmup, pause, max_pause = self.p
        t = self.t
        self.t += 1
        if t < warmup:
            return W, False, False, True, False
        if self.state == W or (self.state == C and self.cool == 0):
            self.state = N
        was_active = self.state == A
        raised = cleared = False
        if was_active:
            self.quiet = 0 if e else self.quiet + 1
            if self.quiet == clear_after:
                cleared, self.quiet, self.run, self.cool = True, 0, 0, cooldown
                self.state = C if cooldown else N
        else:
            self.run = self.run + 1 if e else 0
            if self.state == C:
                self.cool -= 1
            elif self.run >= raise_after:
                raised, self.quiet, self.state = True, 0, A
        learn, withheld = True, False
        if pause and (e or self.state == A):
            if self.paused < max_pause:
                self.paused += 1
                learn, withheld = False, e and not was_active
        elif pause:
            self.paused = 0
        return self.state, raised, cleared, learn, withheld


def reference(exceed: NDArray[np.bool_], **params: Any) -> dict[str, NDArray[Any]]:
    ref = ReferenceAlarm(**params)
    rows = [ref.step(bool(e)) for e in exceed]
    cols = list(zip(*rows, strict=True)) if rows else [()] * 5
    names = ("state", "raised", "cleared", "learn", "withheld")
    dtypes = (np.uint8, bool, bool, bool, bool)
    return {k: np.array(c, dtype=d) for k, c, d in zip(names, cols, dtypes, strict=True)}


def as_dict(b: AlarmBatch) -> dict[str, NDArray[Any]]:
    return {k: getattr(b, k) for k in AlarmBatch.__slots__}


def assert_batches_equal(got: dict[str, NDArray[Any]], want: dict[str, NDArray[Any]]) -> None:
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert got[k].dtype == want[k].dtype, k


def run_lengths(x: NDArray[np.bool_], value: bool, start: int) -> NDArray[np.int64]:
    """Consecutive samples equal to ``value`` ending at each t, not counting before ``start``."""
    out = np.zeros(len(x), dtype=np.int64)
    for t in range(start, len(x)):
        out[t] = out[t - 1] + 1 if x[t] == value and t > start else int(x[t] == value)
    return out


def check_rules(exceed: NDArray[np.bool_], b: dict[str, NDArray[Any]], *, raise_after: int,
                clear_after: int, cooldown: int, warmup: int, pause_learning: bool,
                max_pause: int) -> None:
    """Every rule of the alarm, stated over the whole output."""
    n = len(exceed)
    state, raised, cleared, learn, withheld = (b[k] for k in
                                               ("state", "raised", "cleared", "learn", "withheld"))
    t = np.arange(n)
    prev = np.concatenate([[W], state[:-1]]).astype(np.uint8)
    # Warm-up: exactly the first `warmup` samples, never alarming, always learned.
    assert ((state == W) == (t < warmup)).all()
    assert not (raised | cleared | withheld)[t < warmup].any()
    assert learn[t < warmup].all()
    # Raises and clears alternate, starting with a raise; ACTIVE is exactly raise..before clear.
    events = np.flatnonzero(raised | cleared)
    assert not (raised & cleared).any()
    assert (raised[events[::2]]).all()
    assert (cleared[events[1::2]]).all()
    active = np.cumsum(raised.astype(int) - cleared.astype(int)) == 1
    assert ((state == A) == active).all()
    # A raise happens exactly when raise_after consecutive post-warm-up exceedances end at t,
    # no alarm is active, and no clear happened within the cooldown.
    run = run_lengths(exceed, True, warmup)
    last_clear = np.full(n, -(10**9))
    for c in np.flatnonzero(cleared):
        last_clear[c:] = c
    may_raise = (t >= warmup) & (prev != A) & (t > last_clear + cooldown) & (run >= raise_after)
    np.testing.assert_array_equal(raised, may_raise)
    # A clear happens exactly when clear_after non-exceedances in a row end an active stretch.
    quiet = run_lengths(exceed, False, warmup)
    np.testing.assert_array_equal(cleared, (prev == A) & (quiet >= clear_after))
    # COOLDOWN from each clear through the next `cooldown` samples; NORMAL otherwise.
    cool = (t >= warmup) & (t <= last_clear + cooldown) & (cooldown > 0) & ~active
    np.testing.assert_array_equal(state == C, cool)
    assert ((state == N) == ((t >= warmup) & ~active & ~cool)).all()
    # Learning: a held sample (exceeding, or in an alarm) is withheld unless it is past the
    # first max_pause samples of its held stretch; everything is learned without pause_learning.
    if not pause_learning:
        assert learn.all()
        assert not withheld.any()
        return
    hold = (t >= warmup) & (exceed | active)
    stretch = run_lengths(hold, True, 0) * hold
    np.testing.assert_array_equal(learn, ~hold | (stretch > max_pause))
    np.testing.assert_array_equal(withheld, ~learn & exceed & (prev != A) & (t >= warmup))


PARAMS: dict[str, Any] = {"raise_after": 2, "clear_after": 3, "cooldown": 4, "warmup": 5,
                          "pause_learning": True, "max_pause": 6}


def runs_stream(rng: np.random.Generator, n: int, p_true: float = 0.4) -> NDArray[np.bool_]:
    """Exceedances in runs of 1-12 samples, so hysteresis, cooldown and max_pause all happen."""
    out: list[bool] = []
    while len(out) < n:
        out += [bool(rng.random() < p_true)] * int(rng.integers(1, 13))
    return np.array(out[:n], dtype=bool)


@pytest.mark.parametrize("params", [
    PARAMS,
    {},
    {**PARAMS, "cooldown": 0, "raise_after": 1, "clear_after": 1},
    {**PARAMS, "pause_learning": False},
    {**PARAMS, "warmup": 0, "max_pause": 1},
])
def test_matches_reference_on_random_streams(params: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    exceed = runs_stream(rng, 5000)
    got = as_dict(Alarm(**params).update(exceed))
    want = reference(exceed, **params)
    assert_batches_equal(got, want)
    names = ("raise_after", "clear_after", "cooldown", "warmup", "pause_learning", "max_pause")
    full: dict[str, Any] = dict(zip(names, ReferenceAlarm(**params).p, strict=True))
    check_rules(exceed, got, **full)
    assert got["raised"].any() or params.get("warmup", 100) >= 5000


alarm_params: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries({
    "raise_after": st.integers(1, 4), "clear_after": st.integers(1, 4),
    "cooldown": st.integers(0, 5), "warmup": st.integers(0, 10),
    "pause_learning": st.booleans(), "max_pause": st.integers(1, 8),
})
exceed_runs = st.lists(st.tuples(st.booleans(), st.integers(1, 10)), max_size=40)


@settings(max_examples=100, deadline=None)
@given(params=alarm_params, runs=exceed_runs)
def test_property_rules_hold(params: dict[str, Any], runs: list[tuple[bool, int]]) -> None:
    exceed = np.array([v for v, k in runs for _ in range(k)], dtype=bool)
    got = as_dict(Alarm(**params).update(exceed))
    check_rules(exceed, got, **params)
    assert_batches_equal(got, reference(exceed, **params))


@settings(max_examples=50, deadline=None)
@given(params=alarm_params, runs=exceed_runs, seed=st.integers(0, 2**32 - 1))
def test_property_batch_splits_change_nothing(
    params: dict[str, Any], runs: list[tuple[bool, int]], seed: int
) -> None:
    exceed = np.array([v for v, k in runs for _ in range(k)], dtype=bool)
    whole_alarm = Alarm(**params)
    whole = as_dict(whole_alarm.update(exceed))
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.integers(0, len(exceed) + 1, size=int(rng.integers(0, 8))))
    split_alarm = Alarm(**params)
    parts = [as_dict(split_alarm.update(p)) for p in np.split(exceed, cuts)]
    for k, v in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), v, err_msg=k)
    np.testing.assert_array_equal(split_alarm.get_state(), whole_alarm.get_state())


def test_checkpoint_restore_continue_equals_uninterrupted() -> None:
    exceed = runs_stream(np.random.default_rng(1), 3000)
    whole = as_dict(Alarm(**PARAMS).update(exceed))
    for cut in (0, 7, 1234, 1500, 2999, 3000):
        first = Alarm(**PARAMS)
        head = as_dict(first.update(exceed[:cut]))
        saved = pickle.loads(pickle.dumps(first.get_state()))
        first.update(exceed[cut:])  # the live alarm goes on; the saved state must not move
        second = Alarm(**PARAMS)
        second.set_state(saved)
        tail = as_dict(second.update(exceed[cut:]))
        for k, v in whole.items():
            np.testing.assert_array_equal(np.concatenate([head[k], tail[k]]), v, err_msg=k)


def test_state_survives_mid_alarm() -> None:
    a = Alarm(raise_after=2, clear_after=3, warmup=0)
    a.update(np.array([True, True]))
    assert a.active
    assert a.state is AlarmState.ACTIVE
    b = Alarm(raise_after=2, clear_after=3, warmup=0)
    b.set_state(a.get_state())
    assert b.active
    assert b.step(False) == (AlarmState.ACTIVE, False, False, False)
    assert b.step(False) == (AlarmState.ACTIVE, False, False, False)
    assert b.step(False) == (AlarmState.NORMAL, False, True, True)


def test_fault_is_withheld_then_learned_after_max_pause() -> None:
    a = Alarm(raise_after=3, clear_after=10, warmup=0, max_pause=50)
    b = a.update(np.ones(200, dtype=bool))  # a permanent change
    assert b.raised[2]
    assert not b.learn[:50].any()
    assert b.learn[50:].all()  # learning resumes while the alarm stays
    assert (b.state[2:] == A).all()
    np.testing.assert_array_equal(np.flatnonzero(b.withheld), [0, 1, 2])  # the lead-up only


def test_initial_state_and_empty_batches() -> None:
    assert Alarm().state is AlarmState.WARMING_UP
    assert Alarm(warmup=0).state is AlarmState.NORMAL
    assert not Alarm().active
    a = Alarm()
    b = a.update(np.zeros(0, dtype=bool))
    assert b.state.shape == (0,)
    assert b.state.dtype == np.uint8
    np.testing.assert_array_equal(a.get_state(), kernel.new_alarm_state())


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"raise_after": 0}, "raise_after"), ({"clear_after": 0}, "clear_after"),
    ({"cooldown": -1}, "cooldown"), ({"warmup": -1}, "warmup"), ({"max_pause": 0}, "max_pause"),
    ({"raise_after": 2.5}, "raise_after"), ({"warmup": True}, "warmup"),
    ({"pause_learning": "yes"}, "pause_learning"),
])
def test_rejects_bad_parameters(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Alarm(**kwargs)


def test_rejects_bad_input_and_state() -> None:
    a = Alarm()
    with pytest.raises(TypeError, match="bool"):
        a.update(np.array([0.5, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        a.update(np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="int64"):
        a.set_state(np.zeros(6, dtype=np.int32))
    with pytest.raises(ValueError, match="state code"):
        a.set_state(np.array([0, 9, 0, 0, 0, 0], dtype=np.int64))
    with pytest.raises(TypeError, match="bool"):
        kernel.alarm_steps(np.ones(3), kernel.new_alarm_state(), warmup=0, raise_after=1,  # type: ignore[arg-type]
                           clear_after=1, cooldown=0, pause_learning=True, max_pause=1)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(alarm_module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
