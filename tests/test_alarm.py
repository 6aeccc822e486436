"""The alarm state machine against a per-sample reference and a declarative statement of its rules.

Two independent checks: :class:`ReferenceAlarm`, a plain-Python loop written from the rules in
:mod:`shopfloor.scoring.detect.alarm`, compared exactly; and :func:`check_rules`, which states every
rule as a property of the whole output (no state machine at all) and is run by hypothesis.
"""

from __future__ import annotations

import doctest
import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from shopfloor.scoring.detect import alarm as alarm_module
from shopfloor.scoring.detect.alarm import Alarm, AlarmBatch, AlarmState
from shopfloor.scoring.kernels import alarm as kernel

W, N, A, C = (int(s) for s in (AlarmState.WARMING_UP, AlarmState.NORMAL, AlarmState.ACTIVE,
                                AlarmState.COOLDOWN))


class ReferenceAlarm:
    """One sample at a time, the plain way."""

    def __init__(self, raise_after: int = 3, clear_after: int = 10, cooldown: int = 0,
                 warmup: int = 400, pause_learning: bool = True, max_pause: int = 100_000,
                 adapt_after: float = 3600.0, gap_reset: float = 21600.0) -> None:
        self.p = (raise_after, clear_after, cooldown, warmup, pause_learning, max_pause,
                  adapt_after)
        self.seen = 0
        self.state = W
        self.run = self.quiet = self.cool = self.lasted = 0
        self.run_start = self.onset = self.last = float("nan")

    def step(self, e: bool, t: float) -> tuple[Any, ...]:
        raise_after, clear_after, cooldown, warmup, pause, max_pause, adapt_after = self.p
        if not t < self.last:
            self.last = t
        seen = self.seen
        self.seen += 1
        nan = float("nan")
        if seen < warmup:
            return W, False, False, True, False, False, nan
        if self.state == W or (self.state == C and self.cool == 0):
            self.state = N
        was_active = self.state == A
        raised = cleared = adopted = False
        onset = nan
        if was_active:
            onset = self.onset
            self.quiet = 0 if e else self.quiet + 1
            self.lasted += 1
            if self.quiet >= clear_after:
                cleared, self.cool = True, cooldown
                self.state = C if cooldown else N
            elif self.lasted >= max_pause or self.last - self.onset >= adapt_after:
                adopted, self.cool, self.state = True, 0, N
            if cleared or adopted:
                self.quiet = self.run = self.lasted = 0
        else:
            if e and self.run == 0:
                self.run_start = self.last
            self.run = self.run + 1 if e else 0
            if self.state == C:
                self.cool -= 1
            elif self.run >= raise_after:
                raised, self.quiet, self.lasted, self.state = True, 0, 0, A
                self.onset = onset = self.run_start
        held = pause and (self.state == A or (e and not adopted))
        return (self.state, raised, cleared, not held, held and e and not was_active, adopted,
                onset)


NAMES = ("state", "raised", "cleared", "learn", "withheld", "adopted", "onset")


def reference(exceed: NDArray[np.bool_], times: NDArray[np.float64] | None = None,
              **params: Any) -> dict[str, NDArray[Any]]:
    ref = ReferenceAlarm(**params)
    t = np.arange(1.0, len(exceed) + 1.0) if times is None else times
    rows = [ref.step(bool(e), float(ti)) for e, ti in zip(exceed, t, strict=True)]
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(NAMES)
    dtypes = (np.uint8, bool, bool, bool, bool, bool, np.float64)
    return {k: np.array(c, dtype=d) for k, c, d in zip(NAMES, cols, dtypes, strict=True)}


def as_dict(b: AlarmBatch) -> dict[str, NDArray[Any]]:
    return {k: getattr(b, k) for k in AlarmBatch.__slots__}


def assert_batches_equal(got: dict[str, NDArray[Any]], want: dict[str, NDArray[Any]]) -> None:
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        assert got[k].dtype == want[k].dtype, k


def check_rules(exceed: NDArray[np.bool_], b: dict[str, NDArray[Any]], *, raise_after: int,
                clear_after: int, cooldown: int, warmup: int, pause_learning: bool,
                max_pause: int, adapt_after: float = 3600.0) -> None:
    """Every rule of the alarm, stated over the whole output (sample clock: t = index + 1)."""
    n = len(exceed)
    state, raised, cleared, learn, withheld, adopted, onset = (b[k] for k in NAMES)
    t = np.arange(n)
    prev = np.concatenate([[W], state[:-1]]).astype(np.uint8)
    # Warm-up: exactly the first `warmup` samples, never alarming, always learned.
    assert ((state == W) == (t < warmup)).all()
    assert not (raised | cleared | withheld | adopted)[t < warmup].any()
    assert learn[t < warmup].all()
    # Raises alternate with ends (a clear or an adoption), starting with a raise; ACTIVE is
    # exactly raise..before its end.
    ended = cleared | adopted
    assert not (cleared & adopted).any()
    events = np.flatnonzero(raised | ended)
    assert not (raised & ended).any()
    assert (raised[events[::2]]).all()
    assert (ended[events[1::2]]).all()
    active = np.cumsum(raised.astype(int) - ended.astype(int)) == 1
    assert ((state == A) == active).all()
    # Runs of exceedances (after warm-up, restarting at each end of an alarm) and the times
    # they started; the onset of an alarm is the start of the run that raised it.
    run = np.zeros(n, dtype=np.int64)
    quiet = np.zeros(n, dtype=np.int64)
    for i in range(warmup, n):
        fresh = i == warmup or ended[i - 1]
        run[i] = (0 if fresh else run[i - 1]) + 1 if exceed[i] else 0
        quiet[i] = (0 if fresh or raised[i - 1] else quiet[i - 1]) + 1 if not exceed[i] else 0
    last_clear = np.full(n, -(10**9))
    for c in np.flatnonzero(cleared):
        last_clear[c:] = c
    may_raise = (t >= warmup) & (prev != A) & (t > last_clear + cooldown) & (run >= raise_after)
    np.testing.assert_array_equal(raised, may_raise)
    # A clear: clear_after non-exceedances in a row in an active stretch.
    np.testing.assert_array_equal(cleared, (prev == A) & (quiet >= clear_after))
    # An adoption: an active stretch that has not cleared and has lasted max_pause samples
    # or adapt_after seconds since its onset.
    since_raise = np.zeros(n, dtype=np.int64)
    alarm_onset = np.full(n, np.nan)
    for r in np.flatnonzero(raised):
        stop = np.flatnonzero(ended[r + 1:])
        end = r + 1 + int(stop[0]) if stop.size else n - 1
        since_raise[r:end + 1] = t[r:end + 1] - r
        alarm_onset[r:end + 1] = float(r - run[r] + 2)  # sample clock: index + 1
    want_adopt = (prev == A) & ~cleared & ((since_raise >= max_pause)
                                           | (t + 1.0 - alarm_onset >= adapt_after))
    np.testing.assert_array_equal(adopted, want_adopt)
    np.testing.assert_array_equal(onset, np.where(active | ended, alarm_onset, np.nan))
    # COOLDOWN from each clear through the next `cooldown` samples; NORMAL otherwise.
    cool = (t >= warmup) & (t <= last_clear + cooldown) & (cooldown > 0) & ~active
    np.testing.assert_array_equal(state == C, cool)
    assert ((state == N) == ((t >= warmup) & ~active & ~cool)).all()
    # Learning: an exceedance, or any sample of an active alarm, is withheld (the alarm's end
    # bounds the pause); everything is learned without pause_learning.
    if not pause_learning:
        assert learn.all()
        assert not withheld.any()
        return
    hold = (t >= warmup) & (active | (exceed & ~adopted))
    np.testing.assert_array_equal(learn, ~hold)
    np.testing.assert_array_equal(withheld, hold & exceed & (prev != A))


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
    {**PARAMS, "max_pause": 100, "adapt_after": 7.5},
])
def test_matches_reference_on_random_streams(params: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    exceed = runs_stream(rng, 5000)
    got = as_dict(Alarm(**params).update(exceed))
    want = reference(exceed, **params)
    assert_batches_equal(got, want)
    names = ("raise_after", "clear_after", "cooldown", "warmup", "pause_learning", "max_pause",
             "adapt_after")
    full: dict[str, Any] = dict(zip(names, ReferenceAlarm(**params).p, strict=True))
    check_rules(exceed, got, **full)
    assert got["raised"].any() or params.get("warmup", 100) >= 5000


alarm_params: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries({
    "raise_after": st.integers(1, 4), "clear_after": st.integers(1, 4),
    "cooldown": st.integers(0, 5), "warmup": st.integers(0, 10),
    "pause_learning": st.booleans(), "max_pause": st.integers(1, 8),
    "adapt_after": st.sampled_from([2.0, 5.5, 3600.0]),
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
    for k, v in whole_alarm.get_state().items():
        np.testing.assert_array_equal(split_alarm.get_state()[k], v)


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


def test_sustained_shift_is_adopted_after_adapt_after_seconds() -> None:
    # A permanent change at 1 sample per 10 s: held back for 600 s of signal time from the
    # first exceedance, then adopted; never an alarm that lasts past adapt_after.
    a = Alarm(raise_after=3, clear_after=10, warmup=0, adapt_after=600.0)
    times = 10.0 * np.arange(200)
    b = a.update(np.ones(200, dtype=bool), times)
    assert b.raised[2]
    assert b.onset[2] == 0.0
    assert np.flatnonzero(b.adopted).tolist() == [60, 121, 182]  # 600 s after each onset
    assert not b.learn[:60].any()
    assert b.learn[60]  # the adopting sample is the first of the new normal
    np.testing.assert_array_equal(np.flatnonzero(b.withheld), [0, 1, 2, 61, 62, 63, 122, 123,
                                                               124, 183, 184, 185])


def test_quiet_stretch_inside_an_alarm_does_not_restart_the_clock() -> None:
    # Exceedances with short quiet stretches (fewer than clear_after) in between: one alarm,
    # adopted adapt_after seconds after its onset whatever the quiet stretches.
    pattern = np.array(([True] * 5 + [False] * 4) * 30, dtype=bool)
    b = Alarm(raise_after=3, clear_after=5, warmup=0, adapt_after=100.0).update(pattern)
    assert b.raised.sum() >= 1
    first = int(np.flatnonzero(b.raised)[0])
    assert int(np.flatnonzero(b.adopted)[0]) == first - 2 + 100


def test_backwards_time_does_not_shorten_or_extend_an_alarm() -> None:
    times = np.array([0.0, 1.0, 2.0, 3.0, -50.0, 4.0, 5.0, 6.0])
    b = Alarm(raise_after=1, clear_after=10, warmup=0, adapt_after=5.0).update(
        np.ones(8, dtype=bool), times)
    assert np.flatnonzero(b.adopted).tolist() == [6]  # 5 s after the onset at 0.0


def test_gap_detection_and_resume() -> None:
    a = Alarm(raise_after=1, clear_after=10, warmup=0, gap_reset=100.0)
    a.update(np.ones(3, dtype=bool), np.array([0.0, 1.0, 2.0]))
    assert a.active
    assert not a.is_gap(50.0)
    assert a.is_gap(103.0)
    assert a.resume(103.0) is True
    assert a.state is AlarmState.NORMAL
    assert a.last_time == 103.0
    assert Alarm(gap_reset=math.inf).is_gap(1e300) is False


def test_initial_state_and_empty_batches() -> None:
    assert Alarm().state is AlarmState.WARMING_UP
    assert Alarm(warmup=0).state is AlarmState.NORMAL
    assert not Alarm().active
    a = Alarm()
    b = a.update(np.zeros(0, dtype=bool))
    assert b.state.shape == (0,)
    assert b.state.dtype == np.uint8
    np.testing.assert_array_equal(a.get_state()["counters"], kernel.new_alarm_state())


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"raise_after": 0}, "raise_after"), ({"clear_after": 0}, "clear_after"),
    ({"cooldown": -1}, "cooldown"), ({"warmup": -1}, "warmup"), ({"max_pause": 0}, "max_pause"),
    ({"raise_after": 2.5}, "raise_after"), ({"warmup": True}, "warmup"),
    ({"pause_learning": "yes"}, "pause_learning"), ({"adapt_after": 0.0}, "adapt_after"),
    ({"gap_reset": -1.0}, "gap_reset"), ({"adapt_after": "1h"}, "adapt_after"),
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
        kernel.alarm_steps(np.ones(3), np.zeros(3), kernel.new_alarm_state(),  # type: ignore[arg-type]
                           kernel.new_alarm_times(), warmup=0, raise_after=1, clear_after=1,
                           cooldown=0, pause_learning=True, max_pause=1, adapt_after=1.0)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(alarm_module, raise_on_error=False)
    assert result.attempted > 0
    assert result.failed == 0
