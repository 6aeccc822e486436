"""The default scalar chain for many signals in one compiled pass: a signal bank.

Signals that share a stage configuration keep their state as rows of a few arrays (struct of
arrays), and a drain's samples - any number per signal, any interleaving - go through
:func:`bank_steps` in arrival order. Per sample the chain is exactly the per-signal one
(:class:`shopfloor.scoring.pipeline.SignalPipeline` with
:class:`shopfloor.scoring.monitor.Monitor`): gate, a long gap re-warms, the z-score with its
stuck-value surprise is scored before learning, the threshold in force, the alarm's step, the
threshold and the detector learn what the alarm lets them, an adoption re-warms, then the
likelihood. Each step is the very function the per-signal kernels loop over (``z_step``,
``flatline_step``, ``tail_learn``, the alarm kernel, ``likelihood_step``), so a bank's scores equal
the per-signal reference bit for bit; the Python around a signal (its objects, its batch's arrays,
the monitor's speculation and rollback) is what a bank saves.

State per row (float64 unless said): ``z`` (d x 3: count, mean, spread per feature),
``flat`` (d x 4: count, last value, repeat probability, run), ``tail``
(``N_HEAD + calibration``), ``counters`` (int64, 6) and ``times`` (3) of the alarm, ``like``
(the likelihood's ring), ``fresh`` (bool: the detector has learned nothing since it was built
or reset, as the per-signal detector's lazy state says), ``low``/``high`` (the valid range,
+-inf for none), ``scored`` and ``rejected`` (int64 counts, the latter by
:class:`shopfloor.scoring.detect.gate.Reject` code), ``last_value`` (the first column of the
latest accepted value).

:func:`order_steps` is the worker's check that a sample moves its signal's time on, for a
bank's rows at once (see :meth:`shopfloor.agent.worker.Worker._in_order`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.gate import MAX_MAGNITUDE, Reject
from shopfloor.scoring.kernels._jit import strict_kernel
from shopfloor.scoring.kernels.alarm import ACTIVE, NORMAL, WARMING_UP, alarm_kernel
from shopfloor.scoring.kernels.likelihood import likelihood_step
from shopfloor.scoring.kernels.robust import flatline_step, sigma_of_surprise_one
from shopfloor.scoring.kernels.stats import z_step
from shopfloor.scoring.kernels.tail import THRESHOLD_AT, tail_learn

__all__ = ["DUPLICATE", "FUTURE", "LATE", "PARAMS", "bank_steps", "order_steps"]

#: The chain's parameters, in the order of the ``params`` array :func:`bank_steps` takes.
PARAMS = (
    "alpha", "z_alpha", "min_samples", "stuck",  # detector (z_alpha 0.0 selects Welford)
    "calibration", "rate", "level", "keep", "skip", "rise", "initial", "floor",  # threshold
    "warmup", "raise_after", "clear_after", "cooldown", "pause_learning", "max_pause",
    "adapt_after", "gap_reset",  # alarm
    "like_alpha",  # likelihood
    "fixed",  # a fixed threshold's value; NaN: the peaks-over-threshold one
)
_NAN_CODE, _INF_CODE = int(Reject.NAN), int(Reject.INF)
_RANGE_CODE, _HUGE_CODE = int(Reject.OUT_OF_RANGE), int(Reject.IMPLAUSIBLE)
_STATE, _SEEN = 1, 0  # alarm counters (shopfloor.scoring.kernels.alarm)
_LAST = 2  # alarm times
#: order_steps' verdicts (0: the sample moves its signal's time on).
DUPLICATE, LATE, FUTURE = 1, 2, 3


@strict_kernel
def _rewarm(z: NDArray[np.float64], flat: NDArray[np.float64],
            fresh: NDArray[np.bool_], r: int) -> None:
    """The detector of row ``r`` forgets what it learned (an adoption, a long gap)."""
    for j in range(z.shape[1]):
        z[r, j, 0] = 0.0
        z[r, j, 1] = 0.0
        z[r, j, 2] = 0.0
        flat[r, j, 0] = 0.0
        flat[r, j, 1] = np.nan
        flat[r, j, 2] = 0.0
        flat[r, j, 3] = 0.0
    fresh[r] = True


@strict_kernel
def bank_steps(
    rows: NDArray[np.int64], values: NDArray[np.float64], times: NDArray[np.float64],
    z: NDArray[np.float64], flat: NDArray[np.float64], tail: NDArray[np.float64],
    counters: NDArray[np.int64], alarm_times: NDArray[np.float64], like: NDArray[np.float64],
    fresh: NDArray[np.bool_], low: NDArray[np.float64], high: NDArray[np.float64],
    scored: NDArray[np.int64], rejected: NDArray[np.int64], last_value: NDArray[np.float64],
    params: NDArray[np.float64], reason: NDArray[np.uint8], score: NDArray[np.float64],
    threshold: NDArray[np.float64],
    top: NDArray[np.int64], state: NDArray[np.uint8], raised: NDArray[np.bool_],
    cleared: NDArray[np.bool_], adopted: NDArray[np.bool_], learned: NDArray[np.bool_],
    onset: NDArray[np.float64], likelihood: NDArray[np.float64], withheld: NDArray[np.bool_],
    gate: bool,
) -> None:
    """Score rows ``values[i]`` (d features each: one for a scalar signal) of bank rows
    ``rows[i]`` at ``times[i]``, in order, updating the rows' state in place; per-sample
    results go to the output arrays (length n each). With ``gate`` the samples are checked as
    :class:`~shopfloor.scoring.detect.gate.SampleGate` checks scalars; without it ``reason`` comes
    in filled (frames are checked before their features are computed)."""
    alpha, z_alpha, min_samples, stuck = params[0], params[1], int(params[2]), params[3] > 0.0
    cal, rate, level, keep = int(params[4]), params[5], params[6], params[7]
    skip, rise, initial, floor = params[8], params[9], params[10], params[11]
    warmup, raise_after, clear_after = int(params[12]), int(params[13]), int(params[14])
    cooldown, pause, max_pause = int(params[15]), params[16] > 0.0, int(params[17])
    adapt_after, gap_reset, like_alpha, fixed = params[18], params[19], params[20], params[21]
    tail_kind = math.isnan(fixed)
    exceed = np.empty(1, dtype=np.bool_)  # one sample's input to the alarm kernel
    when = np.empty(1, dtype=np.float64)
    d = values.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        t = times[i]
        code = int(reason[i])
        if gate:  # shopfloor.scoring.detect.gate.SampleGate, one scalar at a time
            v = values[i, 0]
            code = 0
            if math.isnan(v):
                code = _NAN_CODE
            elif math.isinf(v):
                code = _INF_CODE
            elif abs(v) > MAX_MAGNITUDE:
                code = _HUGE_CODE
            elif v < low[r] or v > high[r]:
                code = _RANGE_CODE
            reason[i] = code
        raised[i] = False
        adopted[i] = False
        learned[i] = False
        cleared[i] = False
        if code:
            rejected[r, code] += 1
            score[i] = np.nan
            threshold[i] = np.nan
            top[i] = -1
            onset[i] = np.nan
            likelihood[i] = np.nan
            # The state in force (an alarm that has seen nothing is warming up, or normal).
            if counters[r, _SEEN] == 0:
                state[i] = WARMING_UP if warmup > 0 else NORMAL
            else:
                state[i] = counters[r, _STATE]
            continue
        scored[r] += 1
        last_value[r] = values[i, 0]
        # A sample more than gap_reset after every one before it: the alarm in force ends,
        # the runs start afresh and the detector re-warms (Alarm.resume, Monitor.process).
        ended = False
        if math.isfinite(gap_reset) and t - alarm_times[r, _LAST] > gap_reset:
            if counters[r, _SEEN] > 0:
                ended = counters[r, _STATE] == ACTIVE
                if counters[r, _STATE] != WARMING_UP:
                    counters[r, _STATE] = NORMAL
                for k in range(2, counters.shape[1]):
                    counters[r, k] = 0
            alarm_times[r, 0] = np.nan
            alarm_times[r, 1] = np.nan
            alarm_times[r, _LAST] = t
            _rewarm(z, flat, fresh, r)
        # Score before learning (ZScoreDetector.score_learn with max_abs_column): the largest
        # |z| over the columns (or the stuck-value sigma, where larger), the first one at it.
        fresh[r] = False
        s = 0.0
        best = -1
        for j in range(d):
            v = values[i, j]
            zv = z_step(z[r, j, 0], z[r, j, 1], z[r, j, 2], v, False, z_alpha, min_samples)[0]
            if stuck:
                surprise = flatline_step(flat[r, j, 0], flat[r, j, 1], flat[r, j, 2],
                                         flat[r, j, 3], v, False, alpha, min_samples)[0]
                frozen = sigma_of_surprise_one(surprise)
                if frozen > abs(zv):
                    zv = frozen
            if abs(zv) > s:  # NaN compares False: no evidence
                s = abs(zv)
                best = j
        # The threshold in force (TailThreshold.apply), then the alarm's step.
        if tail_kind:
            h = tail[r, THRESHOLD_AT]
            if math.isinf(h) and not math.isnan(initial):
                h = initial
            if not math.isnan(floor):
                h = max(h, floor)
        else:
            h = fixed
        exceed[0] = s > h
        when[0] = t
        at = slice(i, i + 1)
        alarm_kernel(exceed, when, counters[r], alarm_times[r], warmup, raise_after,
                     clear_after, cooldown, pause, max_pause, adapt_after, state[at],
                     raised[at], cleared[at], adopted[at], learned[at], withheld[at], onset[at])
        learn, adopt = learned[i], adopted[i]
        # What the alarm lets be learned: the threshold (withheld exceedances count too), the
        # detector (its run of repeats moves either way), and a re-warm after an adoption.
        if tail_kind:
            tail_learn(tail[r], s, learn and not adopt, withheld[i], cal, rate, level, keep,
                       skip, rise)
        for j in range(d):
            v = values[i, j]
            if learn:
                _, z[r, j, 0], z[r, j, 1], z[r, j, 2] = z_step(
                    z[r, j, 0], z[r, j, 1], z[r, j, 2], v, True, z_alpha, min_samples)
            if stuck:
                _, flat[r, j, 0], flat[r, j, 1], flat[r, j, 2], flat[r, j, 3] = flatline_step(
                    flat[r, j, 0], flat[r, j, 1], flat[r, j, 2], flat[r, j, 3], v, learn, alpha,
                    min_samples)
        if adopt:
            _rewarm(z, flat, fresh, r)
        score[i] = s
        threshold[i] = h
        top[i] = best
        cleared[i] = cleared[i] or ended
        likelihood[i] = likelihood_step(s, h, like[r], like_alpha)


@strict_kernel
def order_steps(
    rows: NDArray[np.int64], times: NDArray[np.float64], values: NDArray[np.float64],
    latest: NDArray[np.float64], holder: NDArray[np.float64], horizon: float,
    verdict: NDArray[np.uint8],
) -> None:
    """Which samples move their row's time on, in arrival order: a sample stamped after
    ``horizon`` is FUTURE; one older than the row's latest time is LATE; one at that time with
    the value of the sample that set it is a DUPLICATE (a redelivery). ``latest`` (the rows'
    latest scored times) and ``holder`` (the values at them) are scratch copies, updated."""
    for i in range(rows.shape[0]):
        r = rows[i]
        t = times[i]
        if t > horizon:
            verdict[i] = FUTURE
            continue
        before = latest[r]
        if t < before:
            verdict[i] = LATE
            continue
        verdict[i] = DUPLICATE if t == before and values[i] == holder[r] else 0
        latest[r] = t
        holder[r] = values[i]
