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
Learning
    With ``pause_learning``, a sample is withheld from learning (``learn`` False) while an
    alarm is active or when the sample itself exceeds, so neither a fault nor the samples
    leading up to its raise are learned as normal. The pause is bounded: after ``max_pause``
    consecutive withheld samples, learning resumes (until a sample arrives that neither
    exceeds nor belongs to an active alarm), so a genuine new normal is learned in the end and
    its alarm clears. Warm-up samples, and every sample when ``pause_learning`` is False, are
    learned.

``AlarmBatch.withheld`` marks the exceedances withheld from learning *outside* an active alarm
(lone false alarms and the samples leading up to a raise). A quantile threshold that never
learns its own exceedances sees a tail cut off at the threshold and drifts down; pass this mask
to :meth:`shopfloor.detect.threshold.QuantileThreshold.apply` so it can count them.

Defaults, for a plant engineer: ``raise_after = 3`` (one lone exceedance at a 1e-3 false-alarm
rate is routine; three in a row by chance is about 1e-9), ``clear_after = 10`` (a fault that
flickers around the threshold stays one alarm instead of many), ``cooldown = 0`` (the
hysteresis already suppresses chatter; set it for signals that flap), ``warmup = 100`` (the
detectors' own baselines need about that many samples before a score means anything), and
``max_pause = 3600``: one hour at one sample a second, long enough that an operator sees and
acts on a real fault before it is learned away, finite so a permanent change (a new tool, a
recalibrated sensor) becomes normal within the hour. Scale it with your sample rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopfloor.kernels import alarm as _kernel

__all__ = ["Alarm", "AlarmBatch", "AlarmState"]


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
    withheld
        The sample exceeded and was withheld from learning outside an active alarm; a
        quantile threshold should still count it (see the module docstring).
    """

    state: NDArray[np.uint8]
    raised: NDArray[np.bool_]
    cleared: NDArray[np.bool_]
    learn: NDArray[np.bool_]
    withheld: NDArray[np.bool_]


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
        Consecutive withheld samples after which learning resumes, >= 1.

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
        warmup: int = 100,
        pause_learning: bool = True,
        max_pause: int = 3600,
    ) -> None:
        _check_int("raise_after", raise_after, 1)
        _check_int("clear_after", clear_after, 1)
        _check_int("cooldown", cooldown, 0)
        _check_int("warmup", warmup, 0)
        _check_int("max_pause", max_pause, 1)
        if not isinstance(pause_learning, bool | np.bool_):
            raise ValueError(f"pause_learning must be true or false; got {pause_learning!r}")
        self.raise_after = int(raise_after)
        self.clear_after = int(clear_after)
        self.cooldown = int(cooldown)
        self.warmup = int(warmup)
        self.pause_learning = bool(pause_learning)
        self.max_pause = int(max_pause)
        self._counters: NDArray[np.int64] | None = None

    def update(self, exceed: Any) -> AlarmBatch:
        """Step the alarm through ``exceed`` (shape (n,), bool), in order."""
        arr = np.asarray(exceed)
        if arr.dtype != np.bool_:
            raise TypeError(f"exceed must be bool (score > threshold); got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"exceed must have shape (n,); got {arr.shape}")
        if self._counters is None:
            self._counters = _kernel.new_alarm_state()
        state, raised, cleared, learn, withheld = _kernel.alarm_steps(
            arr, self._counters, warmup=self.warmup, raise_after=self.raise_after,
            clear_after=self.clear_after, cooldown=self.cooldown,
            pause_learning=self.pause_learning, max_pause=self.max_pause,
        )
        return AlarmBatch(state, raised, cleared, learn, withheld)

    def step(self, exceed: bool) -> tuple[AlarmState, bool, bool, bool]:
        """One sample: ``(state, raised, cleared, learn)``."""
        b = self.update(np.array([bool(exceed)]))
        return AlarmState(int(b.state[0])), bool(b.raised[0]), bool(b.cleared[0]), bool(b.learn[0])

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

    def get_state(self) -> NDArray[np.int64]:
        """The machine's counters (a copy, shape (6,), int64): seen, state, run, quiet run,
        cooldown left, paused."""
        if self._counters is None:
            return _kernel.new_alarm_state()
        return self._counters.copy()

    def set_state(self, state: NDArray[np.int64]) -> None:
        """Restore what :meth:`get_state` returned; the alarm then continues exactly."""
        arr = np.asarray(state)
        if arr.dtype != np.int64 or arr.shape != (_kernel.N_STATE,):
            raise ValueError(f"alarm state must be an int64 array of shape ({_kernel.N_STATE},) "
                             f"from Alarm.get_state(); got {arr.dtype} {arr.shape}")
        if int(arr[1]) not in {s.value for s in AlarmState} or bool((arr < 0).any()):
            raise ValueError(f"alarm state holds an unknown state code or a negative counter: "
                             f"{arr.tolist()}")
        self._counters = np.array(arr, dtype=np.int64, copy=True)

    def __repr__(self) -> str:
        return (f"Alarm(raise_after={self.raise_after}, clear_after={self.clear_after}, "
                f"cooldown={self.cooldown}, warmup={self.warmup}, "
                f"pause_learning={self.pause_learning}, max_pause={self.max_pause})")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
