"""A seeded synthetic suite through shopfloor's default configuration: does each kind of
change raise an alarm, how soon, does the alarm end, and how often do healthy signals alarm.

Every case is one scalar signal (unit-variance healthy noise, one sample a second) through a
fresh :class:`~shopfloor.scoring.pipeline.Plant` built by ``default_config`` - the configuration a
plant gets without tuning. Changes start at sample ``change`` after a healthy stretch:

=========================  =====================================================  ==========
case                       what changes                                           expected
=========================  =====================================================  ==========
step                       +4 sigma, to the end                                   alarm
drift                      +0.005 sigma per sample, to the end                    alarm
spike                      5 samples at +10 sigma (a surge, a transient jam)      alarm
seasonal + step            a sinusoid (period 100 samples, 2 sigma) throughout,   alarm
                           +4 sigma from ``change``
gap + step                 6 hours without samples, then +4 sigma                 no lasting
                                                                                  alarm
stuck sensor               the value frozen at the last healthy one, to the end   alarm
clean control              nothing: independent normal noise                      no alarm
AR(1) control              nothing: autocorrelated noise, phi 0.9                 no alarm
outliers in healthy data   5 isolated samples at +6 sigma, 1,000+ samples apart   no alarm
=========================  =====================================================  ==========

Scores per case (:func:`score_case`, a plain function of the per-row arrays):

- detected: an alarm raised at or after ``change`` - within ``window`` samples for a
  one-sample change (a later alarm is not the spike's), anywhere after it for a sustained one;
  delay in samples from ``change`` to that raise;
- "exceeded": the score crossed the threshold in the same span, whether or not the alarm's
  hysteresis (3 exceedances in a row) let it raise - it tells "not seen" from "seen, not
  alarmed";
- false alarms: alarms raised on healthy rows (after the alarm's warm-up, before ``change``,
  and after a one-sample change's window), per 10,000 healthy samples;
- for sustained changes, whether the detecting alarm ended - cleared, or adopted the new level
  as a baseline - and how many seconds after its raise.

The expectations are what a plant would want, not what the defaults are known to do; the table
shows both. A spike is a short transient (5 samples: a pressure surge, a jam that frees
itself), which must alarm; a lone sample is an outlier, which must not (the outliers control):
the defaults need 3 exceedances in a row, which is what tells the two apart. After a 6-hour gap
a level change is as likely a restart at a new operating point as a fault: an alarm may be
raised, but it must end (by clearing or adopting), or the signal re-warms and raises none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.pipeline import Plant
from shopfloor.tools.replay import default_config

__all__ = [
    "EXPECT_ALARM",
    "EXPECT_ENDS",
    "EXPECT_QUIET",
    "FULL",
    "QUICK",
    "CaseResult",
    "Sizes",
    "SyntheticCase",
    "SyntheticReport",
    "ar1",
    "generate",
    "run_case",
    "run_synthetic",
    "score_case",
    "synthetic_markdown",
]

F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]

#: Epoch seconds of every case's first sample (a fixed date keeps runs identical).
START = 1_700_000_000.0
#: The gap of the gap + step case, seconds.
GAP_S = 6 * 3600.0
SEED = 20240611
#: What a case should do: raise an alarm; raise none; raise none that lasts to the end.
EXPECT_ALARM = "alarm"
EXPECT_QUIET = "no alarm"
EXPECT_ENDS = "no lasting alarm"
ASSET = "synthetic"
COLUMN = "x"


@dataclass(frozen=True, slots=True)
class Sizes:
    """Samples before a change, after it, and in each control."""

    healthy: int
    after: int
    control: int


#: Full run: controls of 60,000 healthy samples each (180,000 in all for the FA rate), and
#: 6,000 samples (seconds) after a change - longer than the hour after which the default alarm
#: adopts a persistent shift, so an alarm that ends only that way still ends inside the series.
FULL = Sizes(healthy=5_000, after=6_000, control=60_000)
QUICK = Sizes(healthy=1_000, after=1_500, control=6_000)


@dataclass(frozen=True, slots=True)
class SyntheticCase:
    """One generated signal and where its change is."""

    name: str
    times: F64  # epoch seconds
    values: F64
    change: int | None  # first changed sample; None for a control
    sustained: bool  # the change lasts to the end (its alarm should end: clear or adopt)
    window: int  # samples after ``change`` in which an alarm counts as detecting it
    expect: str  # EXPECT_ALARM, EXPECT_QUIET or EXPECT_ENDS


def regular_times(n: int, start: float = START, step: float = 1.0) -> F64:
    """``n`` sample times ``step`` seconds apart."""
    out: F64 = start + step * np.arange(n, dtype=np.float64)
    return out


def ar1(rng: np.random.Generator, n: int, phi: float) -> F64:
    """AR(1) noise with unit marginal variance, started in its stationary distribution."""
    if not -1.0 < phi < 1.0:
        raise ValueError(f"phi must be in (-1, 1) for a stationary AR(1); got {phi}")
    e = rng.normal(scale=math.sqrt(1.0 - phi * phi), size=n)
    x = np.empty(n)
    prev = rng.normal()
    for i in range(n):  # a recursion: each sample needs the previous one
        prev = phi * prev + e[i]
        x[i] = prev
    return x


def _changed(name: str, values: F64, sizes: Sizes, *, sustained: bool = True,
             window: int | None = None, times: F64 | None = None,
             expect: str = EXPECT_ALARM) -> SyntheticCase:
    n = values.size
    return SyntheticCase(name, regular_times(n) if times is None else times, values,
                         sizes.healthy, sustained, n - sizes.healthy if window is None else window,
                         expect)


def step_case(rng: np.random.Generator, sizes: Sizes, size: float = 4.0) -> SyntheticCase:
    x = rng.normal(size=sizes.healthy + sizes.after)
    x[sizes.healthy:] += size
    return _changed(f"step +{size:g} sigma", x, sizes)


def drift_case(rng: np.random.Generator, sizes: Sizes, slope: float = 0.005) -> SyntheticCase:
    x = rng.normal(size=sizes.healthy + sizes.after)
    x[sizes.healthy:] += slope * np.arange(1, sizes.after + 1)
    return _changed(f"drift +{slope:g} sigma/sample", x, sizes)


def spike_case(rng: np.random.Generator, sizes: Sizes, height: float = 10.0, width: int = 5,
               window: int = 10) -> SyntheticCase:
    x = rng.normal(size=sizes.healthy + sizes.after)
    x[sizes.healthy:sizes.healthy + width] += height
    return _changed(f"spike +{height:g} sigma, {width} samples", x, sizes, sustained=False,
                    window=window)


def seasonal_step_case(rng: np.random.Generator, sizes: Sizes, period: int = 100,
                       amplitude: float = 2.0, size: float = 4.0) -> SyntheticCase:
    n = sizes.healthy + sizes.after
    x = amplitude * np.sin(2.0 * np.pi * np.arange(n) / period) + rng.normal(size=n)
    x[sizes.healthy:] += size
    return _changed(f"seasonal (P={period}, {amplitude:g} sigma) + step +{size:g}", x, sizes)


def gap_step_case(rng: np.random.Generator, sizes: Sizes, gap: float = GAP_S,
                  size: float = 4.0) -> SyntheticCase:
    x = rng.normal(size=sizes.healthy + sizes.after)
    x[sizes.healthy:] += size
    t = regular_times(x.size)
    t[sizes.healthy:] += gap
    return _changed(f"gap {gap / 3600:g} h + step +{size:g}", x, sizes, times=t,
                    expect=EXPECT_ENDS)


def stuck_case(rng: np.random.Generator, sizes: Sizes) -> SyntheticCase:
    x = rng.normal(size=sizes.healthy + sizes.after)
    x[sizes.healthy:] = x[sizes.healthy - 1]
    return _changed("stuck sensor (frozen value)", x, sizes)


def _control(name: str, x: F64) -> SyntheticCase:
    return SyntheticCase(name, regular_times(x.size), x, None, False, 0, EXPECT_QUIET)


def clean_control(rng: np.random.Generator, sizes: Sizes) -> SyntheticCase:
    return _control("clean control", rng.normal(size=sizes.control))


def ar1_control(rng: np.random.Generator, sizes: Sizes, phi: float = 0.9) -> SyntheticCase:
    return _control(f"AR(1) control, phi {phi:g}", ar1(rng, sizes.control, phi))


def outliers_control(rng: np.random.Generator, sizes: Sizes, count: int = 5,
                     height: float = 6.0) -> SyntheticCase:
    x = rng.normal(size=sizes.control)
    # Evenly spread past the warm-up, each far from the next: isolated by construction.
    at = np.linspace(sizes.control * 0.1, sizes.control * 0.9, count).astype(np.intp)
    x[at] = height  # the value itself, not noise + height: exactly 6 sigma from the mean
    return _control(f"outliers in healthy data ({count} x {height:g} sigma)", x)


_MAKERS: tuple[Callable[[np.random.Generator, Sizes], SyntheticCase], ...] = (
    step_case, drift_case, spike_case, seasonal_step_case, gap_step_case, stuck_case,
    clean_control, ar1_control, outliers_control,
)


def generate(sizes: Sizes, seed: int = SEED) -> list[SyntheticCase]:
    """Every case, each from its own stream of ``seed`` (a case does not depend on others)."""
    return [make(np.random.default_rng([seed, k]), sizes) for k, make in enumerate(_MAKERS)]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """How the default configuration did on one case."""

    name: str
    expect: str
    sustained: bool
    detected: bool
    delay: int | None  # samples from the change to the detecting raise
    exceeded: bool  # the score crossed the threshold where a detection would count
    raises_in_change: int  # alarms raised where a detection would count (1 = no flapping)
    onset_lag_s: float | None  # the detecting alarm's onset minus the change's time
    false_alarms: int
    healthy_samples: int
    ended: str  # "cleared", "adopted", "no" (still ACTIVE at the end), "-" (not applicable)
    end_seconds: float | None  # from the detecting raise to the end of its alarm

    @property
    def fa_per_10k(self) -> float:
        """False alarms per 10,000 healthy samples (NaN without healthy samples)."""
        return 1e4 * self.false_alarms / self.healthy_samples if self.healthy_samples else math.nan

    @property
    def passed(self) -> bool:
        """As expected: a change detected; a control without any alarm; for a change that
        may or may not alarm, none raised or the detecting one ended."""
        if self.expect == EXPECT_ALARM:
            return self.detected
        if self.expect == EXPECT_QUIET:
            return self.false_alarms == 0
        return not self.detected or self.ended in ("cleared", "adopted")


def score_case(case: SyntheticCase, raised: Bools, cleared: Bools, adopted: Bools,
               exceeded: Bools, onset: F64, warmup: int) -> CaseResult:
    """Score one case from the monitor's per-row arrays (``warmup``: the alarm's warm-up)."""
    n = case.values.size
    for name, arr in (("raised", raised), ("cleared", cleared), ("adopted", adopted),
                      ("exceeded", exceeded), ("onset", onset)):
        if arr.shape != (n,):
            raise ValueError(f"{name} must have one entry per sample ({n}); got {arr.shape}")
    healthy = np.zeros(n, dtype=np.bool_)
    healthy[warmup:] = True
    detected, delay, seen, lag, ended, end_s, raises = False, None, False, None, "-", None, 0
    if case.change is not None:
        span = slice(case.change, min(n, case.change + case.window))
        healthy[case.change:] = False
        if not case.sustained:  # healthy again after a one-sample change's window
            healthy[max(span.stop, warmup):] = True
        hits = np.flatnonzero(raised[span])
        raises = int(hits.size)
        seen = bool(exceeded[span].any())
        if hits.size:
            k = case.change + int(hits[0])
            detected, delay = True, int(hits[0])
            if math.isfinite(onset[k]):
                lag = float(onset[k] - case.times[case.change])
            if case.sustained:
                ends = np.flatnonzero((cleared | adopted)[k:])
                if ends.size:
                    j = k + int(ends[0])
                    ended = "adopted" if adopted[j] else "cleared"
                    end_s = float(case.times[j] - case.times[k])
                else:
                    ended = "no"
                    end_s = float(case.times[-1] - case.times[k])
    return CaseResult(case.name, case.expect, case.sustained, detected, delay, seen, raises,
                      lag, int((raised & healthy).sum()), int(healthy.sum()), ended, end_s)


def run_case(case: SyntheticCase) -> CaseResult:
    """One case through a fresh plant with the default configuration, scored."""
    plant = Plant(default_config([COLUMN], ASSET))
    (sid,) = plant.signals
    batches, _ = plant.process({sid: case.values}, case.times)
    r = batches[sid].result
    with np.errstate(invalid="ignore"):
        exceeded = np.asarray(r.score > r.threshold, dtype=np.bool_)  # NaN never exceeds
    return score_case(case, r.raised, r.cleared, r.adopted, exceeded, r.onset,
                      plant.signals[sid].warmup)


@dataclass(frozen=True, slots=True)
class SyntheticReport:
    """The suite's results and how it was generated."""

    seed: int
    sizes: Sizes
    results: list[CaseResult]

    @property
    def control_false_alarms(self) -> tuple[int, int]:
        """False alarms and healthy samples pooled over the controls."""
        controls = [r for r in self.results if r.expect == EXPECT_QUIET]
        return (sum(r.false_alarms for r in controls), sum(r.healthy_samples for r in controls))


def run_synthetic(sizes: Sizes, seed: int = SEED,
                  progress: Callable[[str], None] = lambda msg: None) -> SyntheticReport:
    """Generate and run every case."""
    results = []
    for case in generate(sizes, seed):
        results.append(run_case(case))
        progress(f"synthetic {case.name}: detected {results[-1].detected}, "
                 f"{results[-1].false_alarms} false alarms")
    return SyntheticReport(seed, sizes, results)


def _opt(x: float | int | None, fmt: str = "{:g}") -> str:
    return "-" if x is None else fmt.format(x)


def synthetic_markdown(report: SyntheticReport) -> list[str]:
    """The synthetic section of ``quality.md`` (also printed to the console)."""
    s = report.sizes
    fa, healthy = report.control_false_alarms
    lines = [
        "## Synthetic suite (default configuration)", "",
        f"Seed {report.seed}; unit-variance noise at one sample a second; changes after "
        f"{s.healthy} healthy samples, {s.after} samples after them; controls of {s.control} "
        "samples. Delay: samples from the change to the alarm's raise (3 exceedances in a row "
        "make 2 the least). Exceeded: the score crossed the threshold where a detection would "
        "count. False alarms: raises on healthy rows after the alarm's warm-up. Alarm end: "
        "for sustained changes, whether the detecting alarm cleared or adopted the new level, "
        "seconds after its raise (`no`: still ACTIVE at the end, with the seconds it lasted "
        "so far). Alarms in the change: raises where a detection counts (more than 1: the "
        "alarm flapped). Onset - change: the detecting alarm's onset (its first exceedance, "
        "as the pipeline reports it) after the true change.", "",
        "| case | expected | detected | delay (samples) | exceeded | alarms in the change | "
        "onset - change (s) | false alarms / healthy samples | per 10k | alarm end | after (s) "
        "| as expected |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in report.results:
        lines.append(
            f"| {r.name} | {r.expect} | "
            f"{'yes' if r.detected else 'no'} | {_opt(r.delay)} | "
            f"{'-' if r.expect == EXPECT_QUIET else ('yes' if r.exceeded else 'no')} | "
            f"{'-' if r.expect == EXPECT_QUIET else r.raises_in_change} | "
            f"{_opt(r.onset_lag_s)} | {r.false_alarms} / {r.healthy_samples} | "
            f"{r.fa_per_10k:.2f} | {r.ended} | {_opt(r.end_seconds, '{:.0f}')} | "
            f"{'yes' if r.passed else 'NO'} |")
    rate = 1e4 * fa / healthy if healthy else math.nan
    lines += ["", f"Controls pooled: {fa} false alarms in {healthy} healthy samples "
              f"({rate:.2f} per 10,000).", ""]
    return lines

