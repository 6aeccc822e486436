"""Alarms: exceedances in, raised and cleared alarms with hysteresis out, and a learn mask.

Per sample ``t`` of one signal the pipeline computes ``exceed_t = score_t > threshold_t`` and
asks the alarm what happens next. The rules, in the order they apply:

Warm-up
    The first ``warmup`` samples the alarm sees are WARMING_UP: their exceedances are ignored
    (they do not start a run either) and every one of them is learned.
Raise
    In NORMAL, ``raise_after`` consecutive exceedances raise an alarm on the last of them
    (``raised``), and the state becomes ACTIVE.
Clear
    In ACTIVE, ``clear_after`` consecutive non-exceedances clear it on the last of them
    (``cleared``). The alarm's memory of the fault starts afresh.
Cooldown
    After a clear, the next ``cooldown`` samples cannot raise. The state is COOLDOWN from the
    clearing sample to the last of those, so a dashboard sees ACTIVE -> COOLDOWN -> NORMAL
    and knows that re-raising is suppressed. Exceedances during the cooldown still count
    towards a run: a fault that outlasts the cooldown is raised as soon as it ends. With
    ``cooldown = 0`` the state goes straight back to NORMAL and COOLDOWN never appears.
Adopt
    In ACTIVE, once the alarm has lasted ``adapt_after`` seconds of signal time since its onset
    (its first exceedance), or ``max_pause`` samples, and has not cleared, the shift is taken as
    the new normal: the sample is marked ``adopted``, the alarm ends (NORMAL, no cooldown), and
    the pipeline re-warms the detector's baseline on what comes next (see
    :class:`shopfloor.scoring.monitor.Monitor`). A quiet stretch inside the alarm does not restart
    that clock, so a long alarm always ends.
Learning
    With ``pause_learning``, a sample is withheld from learning (``learn`` False) while an
    alarm is active or when the sample itself exceeds, so neither a fault nor the samples
    leading up to its raise are learned as normal. The pause is bounded by the alarm's end:
    it clears, or its shift is adopted. Warm-up samples, and every sample when
    ``pause_learning`` is False, are learned.
Gaps
    A gap in signal time longer than ``gap_reset`` seconds ends an active alarm (``cleared`` on
    the first sample after the gap) and re-warms the detector instead of comparing across the
    gap; the monitor applies it (:meth:`Alarm.resume`) before it scores that sample.

``AlarmBatch.withheld`` marks the exceedances withheld from learning *outside* an active alarm
(lone false alarms and the samples leading up to a raise). A quantile threshold that never
learns its own exceedances sees a tail cut off at the threshold and drifts down; pass this mask
to :meth:`shopfloor.scoring.detect.threshold.QuantileThreshold.apply` so it can count them.

Defaults, for a plant engineer: ``raise_after = 3`` (one lone exceedance at a 1e-3 false-alarm
rate is routine; three in a row by chance is about 1e-9), ``clear_after = 10`` (a fault that
flickers around the threshold stays one alarm instead of many), ``cooldown = 0`` (the
hysteresis already suppresses chatter; set it for signals that flap), ``warmup = 400`` (a
residual chart's forecaster chooses its weight on 100 samples and its baseline learns on the
next 100 before a score means anything, and the tail threshold calibrates on the 200 scores
after that), ``adapt_after = 3600`` seconds: long
enough that an operator sees and acts on a real fault before it becomes the new normal, short
enough that a permanent change (a new tool, a recalibrated sensor) stops alarming within the
hour; ``max_pause = 100000`` samples, a backstop for streams without real times (28 hours at
1 Hz); and ``gap_reset = 21600`` seconds: a network blip or a break compares across the gap,
a weekend or a maintenance stop (over six hours) re-warms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.kernels import alarm as _kernel

__all__ = ["Alarm", "AlarmBatch", "AlarmState", "sample_clock"]


class AlarmState(IntEnum):
    """What an alarm is doing after a sample (stored as uint8 in :class:`AlarmBatch`)."""

    WARMING_UP = _kernel.WARMING_UP
    NORMAL = _kernel.NORMAL
    ACTIVE = _kernel.ACTIVE
    COOLDOWN = _kernel.COOLDOWN


@dataclass(frozen=True, slots=True)
class AlarmBatch:
    """What the alarm says about each sample of a batch (all arrays of shape (n,)).

    Attributes
    ----------
    state
        uint8 :class:`AlarmState` code after the sample.
    raised
        The sample raised an alarm.
    cleared
        The sample cleared an alarm.
    learn
        The sample may be learned (by the detector and the threshold).
    adopted
        The sample ended the alarm by adopting its shift as the new normal.
    onset
        Signal time of the first exceedance of the alarm in force (NaN where none is).
    withheld
        The sample exceeded and was withheld from learning outside an active alarm; a
        quantile threshold should still count it (see the module docstring).
    """

    state: NDArray[np.uint8]
    raised: NDArray[np.bool_]
    cleared: NDArray[np.bool_]
    learn: NDArray[np.bool_]
    withheld: NDArray[np.bool_]
    adopted: NDArray[np.bool_]
    onset: NDArray[np.float64]


class Alarm:
    """Hysteresis alarm over a stream of exceedances, with warm-up, cooldown and pause-learning.

    Parameters
    ----------
    raise_after
        Consecutive exceedances that raise an alarm, >= 1.
    clear_after
        Consecutive non-exceedances that clear it, >= 1.
    cooldown
        Samples after a clear during which no alarm is raised, >= 0.
    warmup
        Samples at the start whose exceedances are ignored, >= 0.
    pause_learning
        Withhold exceeding samples and samples during an alarm from learning.
    max_pause
        Samples an alarm may last before its shift is adopted as the new normal, >= 1.
    adapt_after
        Seconds of signal time from an alarm's onset after which its shift is adopted, > 0
        (``inf``: by samples only).
    gap_reset
        A gap in signal time longer than this (seconds, > 0; ``inf``: never) ends an active
        alarm and re-warms the signal.

    Examples
    --------
    >>> import numpy as np
    >>> alarm = Alarm(raise_after=2, clear_after=2, warmup=1)
    >>> batch = alarm.update(np.array([True, True, True, False, False, False]))
    >>> [AlarmState(s).name for s in batch.state]
    ['WARMING_UP', 'NORMAL', 'ACTIVE', 'ACTIVE', 'NORMAL', 'NORMAL']
    >>> batch.learn.tolist()
    [True, False, False, False, True, True]
    """

    def __init__(
        self,
        raise_after: int = 3,
        clear_after: int = 10,
        cooldown: int = 0,
        warmup: int = 400,
        pause_learning: bool = True,
        max_pause: int = 100_000,
        adapt_after: float = 3600.0,
        gap_reset: float = 21600.0,
    ) -> None:
        _check_int("raise_after", raise_after, 1)
        _check_int("clear_after", clear_after, 1)
        _check_int("cooldown", cooldown, 0)
        _check_int("warmup", warmup, 0)
        _check_int("max_pause", max_pause, 1)
        _check_seconds("adapt_after", adapt_after)
        _check_seconds("gap_reset", gap_reset)
        if not isinstance(pause_learning, bool | np.bool_):
            raise ValueError(f"pause_learning must be true or false; got {pause_learning!r}")
        self.raise_after = int(raise_after)
        self.clear_after = int(clear_after)
        self.cooldown = int(cooldown)
        self.warmup = int(warmup)
        self.pause_learning = bool(pause_learning)
        self.max_pause = int(max_pause)
        self.adapt_after = float(adapt_after)
        self.gap_reset = float(gap_reset)
        self._counters: NDArray[np.int64] | None = None
        self._times: NDArray[np.float64] = _kernel.new_alarm_times()

    def update(self, exceed: Any, times: Any = None) -> AlarmBatch:
        """Step the alarm through ``exceed`` (shape (n,), bool) at signal ``times`` (n,)
        seconds, in order. Without times each sample is one second after the last one."""
        arr = np.asarray(exceed)
        if arr.dtype != np.bool_:
            raise TypeError(f"exceed must be bool (score > threshold); got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"exceed must have shape (n,); got {arr.shape}")
        if self._counters is None:
            self._counters = _kernel.new_alarm_state()
        t = self.sample_clock(len(arr)) if times is None else np.asarray(times, dtype=np.float64)
        state, raised, cleared, adopted, learn, withheld, onset = _kernel.alarm_steps(
            arr, t, self._counters, self._times, warmup=self.warmup,
            raise_after=self.raise_after, clear_after=self.clear_after, cooldown=self.cooldown,
            pause_learning=self.pause_learning, max_pause=self.max_pause,
            adapt_after=self.adapt_after,
        )
        return AlarmBatch(state, raised, cleared, learn, withheld, adopted, onset)

    def sample_clock(self, n: int) -> NDArray[np.float64]:
        """Times for ``n`` samples that carry none: one second apart after the last time."""
        seen = 0 if self._counters is None else int(self._counters[0])
        return sample_clock(self.last_time, seen, n)

    def step(self, exceed: bool, time: float | None = None) -> tuple[AlarmState, bool, bool, bool]:
        """One sample: ``(state, raised, cleared, learn)``."""
        b = self.update(np.array([bool(exceed)]), None if time is None else np.array([time]))
        return AlarmState(int(b.state[0])), bool(b.raised[0]), bool(b.cleared[0]), bool(b.learn[0])

    @property
    def last_time(self) -> float:
        """The latest signal time seen (NaN before any)."""
        return float(self._times[2])

    def is_gap(self, time: float) -> bool:
        """``time`` comes more than ``gap_reset`` seconds after the latest time seen."""
        return bool(time - self.last_time > self.gap_reset)  # NaN: False

    def resume(self, time: float) -> bool:
        """Start again after a gap at ``time``: an active alarm ends (the return value says
        whether one did) and the runs start afresh; the warm-up is not repeated."""
        was_active = self.active
        if self._counters is not None:
            self._counters[1] = AlarmState.NORMAL if self.state != AlarmState.WARMING_UP \
                else AlarmState.WARMING_UP
            self._counters[2:] = 0
        self._times[:] = np.nan
        self._times[2] = time
        return was_active

    @property
    def state(self) -> AlarmState:
        """State after the most recent sample (before any: WARMING_UP, or NORMAL if no warm-up)."""
        if self._counters is None:
            return AlarmState.WARMING_UP if self.warmup > 0 else AlarmState.NORMAL
        return AlarmState(int(self._counters[1]))

    @property
    def active(self) -> bool:
        """An alarm is raised and not yet cleared."""
        return self.state == AlarmState.ACTIVE

    def get_state(self) -> dict[str, NDArray[Any]]:
        """The machine's state, as copies: ``counters`` (shape (6,), int64: seen, state, run,
        quiet run, cooldown left, samples the alarm has lasted) and ``times`` (shape (3,),
        float64: start of the current run, onset of the active alarm, latest time)."""
        counters = _kernel.new_alarm_state() if self._counters is None else self._counters
        return {"counters": counters.copy(), "times": self._times.copy()}

    def set_state(self, state: dict[str, Any] | NDArray[np.int64]) -> None:
        """Restore what :meth:`get_state` returned; the alarm then continues exactly.

        A bare counters array (checkpoints of version 0.1) restores with no times known.
        """
        times = _kernel.new_alarm_times()
        if isinstance(state, dict):
            if set(state) != {"counters", "times"}:
                raise ValueError(f"alarm state must have keys counters and times; got "
                                 f"{sorted(state)}")
            times = np.array(state["times"], dtype=np.float64, copy=True)
            if times.shape != (_kernel.N_TIMES,):
                raise ValueError(f"alarm times must have shape ({_kernel.N_TIMES},); got "
                                 f"{times.shape}")
            state = state["counters"]
        arr = np.asarray(state)
        if arr.dtype != np.int64 or arr.shape != (_kernel.N_STATE,):
            raise ValueError(f"alarm state must be an int64 array of shape ({_kernel.N_STATE},) "
                             f"from Alarm.get_state(); got {arr.dtype} {arr.shape}")
        if int(arr[1]) not in {s.value for s in AlarmState} or bool((arr < 0).any()):
            raise ValueError(f"alarm state holds an unknown state code or a negative counter: "
                             f"{arr.tolist()}")
        self._counters = np.array(arr, dtype=np.int64, copy=True)
        self._times = times

    def __repr__(self) -> str:
        return (f"Alarm(raise_after={self.raise_after}, clear_after={self.clear_after}, "
                f"cooldown={self.cooldown}, warmup={self.warmup}, "
                f"pause_learning={self.pause_learning}, max_pause={self.max_pause}, "
                f"adapt_after={self.adapt_after}, gap_reset={self.gap_reset})")


def sample_clock(last_time: float, seen: int, n: int) -> NDArray[np.float64]:
    """Times for ``n`` samples that carry none, after an alarm that has seen ``seen`` samples
    up to ``last_time`` (NaN: none with a time): one second apart after the last time."""
    start = (float(seen) if math.isnan(last_time) else last_time) + 1.0
    return start + np.arange(n, dtype=np.float64)


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number of seconds > 0 (inf: never); got {value!r}")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
