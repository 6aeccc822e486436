"""The alarm state machine as one sequential loop: exceedances in, states and a learn mask out.

One step per sample, in time order (the signal banks call :func:`alarm_kernel` on one sample
at a time, so both agree to the bit); see :class:`shopfloor.scoring.detect.alarm.Alarm` for the
rules. The whole machine lives in six int64 counters (:data:`N_STATE`) and three signal times
(:data:`N_TIMES`), updated in place, so a batch split or a checkpoint in the middle of an alarm
changes nothing.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels._jit import strict_kernel

__all__ = [
    "ACTIVE",
    "COOLDOWN",
    "NORMAL",
    "N_STATE",
    "N_TIMES",
    "WARMING_UP",
    "alarm_kernel",
    "alarm_steps",
    "new_alarm_state",
    "new_alarm_times",
]

# State codes, shared with shopfloor.scoring.detect.alarm.AlarmState.
WARMING_UP = 0
NORMAL = 1
ACTIVE = 2
COOLDOWN = 3

# Counters: samples seen, current state, consecutive exceedances, consecutive non-exceedances
# while active, cooldown samples left, samples the active alarm has lasted.
_SEEN, _STATE, _RUN, _QUIET, _COOL, _LASTED = range(6)
N_STATE = 6
# Times (signal seconds): start of the current run of exceedances, onset of the active alarm,
# the latest time seen (times that go backwards do not move it).
_RUN_START, _ONSET, _LAST = range(3)
N_TIMES = 3


def new_alarm_state() -> NDArray[np.int64]:
    """Counters of an alarm that has seen nothing."""
    st = np.zeros(N_STATE, dtype=np.int64)
    st[_STATE] = WARMING_UP
    return st


def new_alarm_times() -> NDArray[np.float64]:
    """Times of an alarm that has seen nothing (NaN: none yet)."""
    return np.full(N_TIMES, np.nan)


@strict_kernel
def alarm_kernel(
    exceed: NDArray[np.bool_], times: NDArray[np.float64], st: NDArray[np.int64],
    tt: NDArray[np.float64],
    warmup: int, raise_after: int, clear_after: int, cooldown: int,
    pause_learning: bool, max_pause: int, adapt_after: float,
    state_out: NDArray[np.uint8], raised: NDArray[np.bool_], cleared: NDArray[np.bool_],
    adopted: NDArray[np.bool_], learn: NDArray[np.bool_], withheld: NDArray[np.bool_],
    onset: NDArray[np.float64],
) -> None:
    for i in range(exceed.shape[0]):
        e = exceed[i]
        raised[i] = False
        cleared[i] = False
        adopted[i] = False
        withheld[i] = False
        onset[i] = np.nan
        # Signal time never runs backwards here: a late sample does not shorten an alarm.
        t = times[i]
        if math.isfinite(t) and not t < tt[_LAST]:
            tt[_LAST] = t
        now = tt[_LAST]
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
            onset[i] = tt[_ONSET]
            st[_QUIET] = 0 if e else st[_QUIET] + 1
            st[_LASTED] += 1
            if st[_QUIET] >= clear_after:
                cleared[i] = True
            elif st[_LASTED] >= max_pause or now - tt[_ONSET] >= adapt_after:
                # The shift has outlasted what a fault is allowed to: it is the new normal.
                # (NaN times never adopt by time; the sample bound still holds.)
                adopted[i] = True
            if cleared[i] or adopted[i]:
                st[_QUIET] = 0
                st[_RUN] = 0
                st[_LASTED] = 0
                st[_COOL] = cooldown if cleared[i] else 0
                state = COOLDOWN if cleared[i] and cooldown > 0 else NORMAL
        else:
            # Runs keep counting through a cooldown, so a fault that outlasts it is raised as
            # soon as the cooldown ends; only NORMAL may raise.
            if e:
                if st[_RUN] == 0:
                    tt[_RUN_START] = now
                st[_RUN] += 1
            else:
                st[_RUN] = 0
            if state == COOLDOWN:
                st[_COOL] -= 1
            elif st[_RUN] >= raise_after:
                raised[i] = True
                st[_QUIET] = 0
                st[_LASTED] = 0
                tt[_ONSET] = tt[_RUN_START]
                onset[i] = tt[_ONSET]
                state = ACTIVE
        st[_STATE] = state
        state_out[i] = state
        # Withheld: an exceedance outside an alarm (a lone false alarm, or the samples leading
        # up to a raise) and every sample of an active alarm. Bounded by the alarm's own end:
        # it clears, or its shift is adopted after ``max_pause`` samples / ``adapt_after``
        # seconds since its onset - a quiet stretch inside the alarm does not restart that.
        if pause_learning and (state == ACTIVE or (e and not adopted[i])):
            learn[i] = False
            withheld[i] = e and judged_in != ACTIVE
        else:
            learn[i] = True


def alarm_steps(
    exceed: NDArray[np.bool_], times: NDArray[np.float64], state: NDArray[np.int64],
    alarm_times: NDArray[np.float64], *,
    warmup: int, raise_after: int, clear_after: int, cooldown: int,
    pause_learning: bool, max_pause: int, adapt_after: float,
) -> tuple[NDArray[np.uint8], NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_],
           NDArray[np.bool_], NDArray[np.bool_], NDArray[np.float64]]:
    """Run the alarm over ``exceed`` (shape (n,), bool) at signal ``times`` (n,) seconds,
    updating ``state`` and ``alarm_times`` in place.

    Parameters are those of :class:`shopfloor.scoring.detect.alarm.Alarm` (validated there).

    Returns
    -------
    state, raised, cleared, adopted, learn, withheld, onset
        Shape (n,) each: state code after each sample (uint8); whether the sample raised,
        cleared, or ended the alarm by adopting its shift as the new normal; whether it may be
        learned; whether it is an exceedance withheld from learning outside an alarm; and the
        onset time of the alarm in force (NaN where none is).
    """
    if not isinstance(exceed, np.ndarray) or exceed.dtype != np.bool_ or exceed.ndim != 1:
        raise TypeError("exceed must be a 1-D bool numpy array; use np.asarray(score > threshold)")
    n = exceed.shape[0]
    if not isinstance(times, np.ndarray) or times.dtype != np.float64 or times.shape != (n,):
        raise TypeError(f"times must be a float64 numpy array of shape ({n},) like exceed")
    if not isinstance(state, np.ndarray) or state.dtype != np.int64 or state.shape != (N_STATE,):
        raise ValueError(f"state must be an int64 array of shape ({N_STATE},); create it with "
                         "new_alarm_state()")
    if (not isinstance(alarm_times, np.ndarray) or alarm_times.dtype != np.float64
            or alarm_times.shape != (N_TIMES,)):
        raise ValueError(f"alarm_times must be a float64 array of shape ({N_TIMES},); create "
                         "it with new_alarm_times()")
    for arr in (state, alarm_times):
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            raise ValueError("alarm state is updated in place: it must be C-contiguous and "
                             "writeable")
    codes = np.empty(n, dtype=np.uint8)
    raised = np.empty(n, dtype=np.bool_)
    cleared = np.empty(n, dtype=np.bool_)
    adopted = np.empty(n, dtype=np.bool_)
    learn = np.empty(n, dtype=np.bool_)
    withheld = np.empty(n, dtype=np.bool_)
    onset = np.empty(n, dtype=np.float64)
    alarm_kernel(np.ascontiguousarray(exceed), np.ascontiguousarray(times), state, alarm_times,
                  int(warmup), int(raise_after), int(clear_after), int(cooldown),
                  bool(pause_learning), int(max_pause), float(adapt_after),
                  codes, raised, cleared, adopted, learn, withheld, onset)
    return codes, raised, cleared, adopted, learn, withheld, onset
