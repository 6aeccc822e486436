"""The alarm state machine as one sequential loop: exceedances in, states and a learn mask out.

One step per sample, in time order; see :class:`shopfloor.detect.alarm.Alarm` for the rules.
The whole machine lives in six int64 counters (:data:`N_STATE`), updated in place, so a batch
split or a checkpoint in the middle of an alarm changes nothing.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from shopfloor.kernels._jit import strict_kernel

__all__ = [
    "ACTIVE",
    "COOLDOWN",
    "NORMAL",
    "N_STATE",
    "WARMING_UP",
    "alarm_steps",
    "new_alarm_state",
]

# State codes, shared with shopfloor.detect.alarm.AlarmState.
WARMING_UP = 0
NORMAL = 1
ACTIVE = 2
COOLDOWN = 3

# Counters: samples seen, current state, consecutive exceedances, consecutive non-exceedances
# while active, cooldown samples left, consecutive samples withheld from learning.
_SEEN, _STATE, _RUN, _QUIET, _COOL, _PAUSED = range(6)
N_STATE = 6


def new_alarm_state() -> NDArray[np.int64]:
    """Counters of an alarm that has seen nothing."""
    st = np.zeros(N_STATE, dtype=np.int64)
    st[_STATE] = WARMING_UP
    return st


@strict_kernel
def _alarm_kernel(
    exceed: NDArray[np.bool_], st: NDArray[np.int64],
    warmup: int, raise_after: int, clear_after: int, cooldown: int,
    pause_learning: bool, max_pause: int,
    state_out: NDArray[np.uint8], raised: NDArray[np.bool_], cleared: NDArray[np.bool_],
    learn: NDArray[np.bool_], withheld: NDArray[np.bool_],
) -> None:
    for i in range(exceed.shape[0]):
        e = exceed[i]
        raised[i] = False
        cleared[i] = False
        withheld[i] = False
        seen = st[_SEEN]
        st[_SEEN] = seen + 1
        if seen < warmup:
            # Exceedances are ignored while the model is young, and everything is learned.
            st[_STATE] = WARMING_UP
            state_out[i] = WARMING_UP
            learn[i] = True
            continue
        state = st[_STATE]
        if state == WARMING_UP or (state == COOLDOWN and st[_COOL] == 0):
            state = NORMAL
        judged_in = state
        if state == ACTIVE:
            st[_QUIET] = 0 if e else st[_QUIET] + 1
            if st[_QUIET] >= clear_after:
                cleared[i] = True
                st[_QUIET] = 0
                st[_RUN] = 0
                st[_COOL] = cooldown
                state = COOLDOWN if cooldown > 0 else NORMAL
        else:
            # Runs keep counting through a cooldown, so a fault that outlasts it is raised as
            # soon as the cooldown ends; only NORMAL may raise.
            st[_RUN] = st[_RUN] + 1 if e else 0
            if state == COOLDOWN:
                st[_COOL] -= 1
            elif st[_RUN] >= raise_after:
                raised[i] = True
                st[_QUIET] = 0
                state = ACTIVE
        st[_STATE] = state
        state_out[i] = state
        if not pause_learning:
            learn[i] = True
        elif e or state == ACTIVE:
            if st[_PAUSED] < max_pause:
                learn[i] = False
                st[_PAUSED] += 1
                # An exceedance withheld outside an alarm (a lone false alarm, or a sample
                # leading up to a raise) is still evidence about the score's tail.
                withheld[i] = e and judged_in != ACTIVE
            else:
                learn[i] = True  # paused long enough: what persists is the new normal
        else:
            learn[i] = True
            st[_PAUSED] = 0


def alarm_steps(
    exceed: NDArray[np.bool_], state: NDArray[np.int64], *,
    warmup: int, raise_after: int, clear_after: int, cooldown: int,
    pause_learning: bool, max_pause: int,
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_],
           NDArray[np.bool_]]:
    """Run the alarm over ``exceed`` (shape (n,), bool), updating ``state`` in place.

    Parameters are those of :class:`shopfloor.detect.alarm.Alarm` (validated there).

    Returns
    -------
    state, raised, cleared, learn, withheld
        Shape (n,) each: state code after each sample (uint8), whether the sample raised or
        cleared an alarm, whether it may be learned, and whether it is an exceedance withheld
        from learning outside an alarm.
    """
    if not isinstance(exceed, np.ndarray) or exceed.dtype != np.bool_ or exceed.ndim != 1:
        raise TypeError("exceed must be a 1-D bool numpy array; use np.asarray(score > threshold)")
    if not isinstance(state, np.ndarray) or state.dtype != np.int64 or state.shape != (N_STATE,):
        raise ValueError(f"state must be an int64 array of shape ({N_STATE},); create it with "
                         "new_alarm_state()")
    if not (state.flags.c_contiguous and state.flags.writeable):
        raise ValueError("state is updated in place: it must be C-contiguous and writeable")
    n = exceed.shape[0]
    codes = np.empty(n, dtype=np.uint8)
    raised = np.empty(n, dtype=np.bool_)
    cleared = np.empty(n, dtype=np.bool_)
    learn = np.empty(n, dtype=np.bool_)
    withheld = np.empty(n, dtype=np.bool_)
    _alarm_kernel(np.ascontiguousarray(exceed), state, int(warmup), int(raise_after),
                  int(clear_after), int(cooldown), bool(pause_learning), int(max_pause),
                  codes, raised, cleared, learn, withheld)
    return codes, raised, cleared, learn, withheld
