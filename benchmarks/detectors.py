"""Detectors area: rows per second through ``score_learn``, and the River adapters' overhead.

Every detector kind in :data:`shopfloor.scoring.detect.registry.DETECTORS` is built with its
defaults and fed seeded rows in batches of :data:`BATCH` (what the agent's worker hands a pipeline),
one ``score_learn`` call per batch, every row learned:

==============================  ===========================================  ================
subject                         reference                                    target (ratio)
==============================  ===========================================  ================
chart kinds, d = 1              the same detector fed one row per call       reported
``zscore``, ``page_hinkley``    River's nearest (StandardAbsoluteDeviation,  reported
                                ``drift.PageHinkley``): not the same maths
``mahalanobis`` (asset), d = 8  one row per call; NumPy per row (inverse)    reported
River adapters, d = 4           River called directly on the same dicts      >= 0.83
                                (``score_one`` then ``learn_one``)           (<= 20 % overhead)
``FixedThreshold``              ``np.where`` per batch                       reported
``QuantileThreshold``           one score per call; River's P-square         reported
                                ``stats.Quantile`` (not the same estimate)
``Alarm``                       pure Python; one sample per call (``step``)  reported
==============================  ===========================================  ================

The River, ``np.where``, pure-Python alarm and NumPy asset references are checked against
their subject on the benchmark's rows before they are timed. Timed calls keep feeding the same
rows to the same objects, so subject and reference carry identical models through every round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.harness import Bench, Case, Target, agree

__all__ = ["BATCH", "run"]

F64 = NDArray[np.float64]
#: Rows per ``score_learn`` call.
BATCH = 256
RIVER_KINDS = ("hst", "oneclass_svm", "gaussian")
RIVER_TARGET = Target(0.83, "River adapter overhead <= 20% of River called directly")


def run(bench: Bench) -> None:
    """Measure every detector kind in the registry, then the thresholds and the alarm."""
    from shopfloor.scoring.detect import registry

    rng = np.random.default_rng(20240503)
    for kind in registry.DETECTORS:
        try:
            cls = registry.resolve(registry.DETECTORS, kind)
        except ImportError as exc:
            bench.skip(kind, f"not importable yet: {exc}")
            continue
        if kind == "mahalanobis":
            _asset(bench, cls, rng)
        elif kind in RIVER_KINDS:
            _river(bench, kind, cls, rng)
        else:
            _chart(bench, kind, cls, rng)
    try:
        from shopfloor.scoring.detect.alarm import Alarm
        from shopfloor.scoring.detect.threshold import FixedThreshold, QuantileThreshold
    except ImportError as exc:
        bench.skip("thresholds and alarm", f"not importable yet: {exc}")
        return
    _thresholds(bench, FixedThreshold, QuantileThreshold, rng)
    _alarm(bench, Alarm, rng)


def _batched(det: Any, x: F64) -> Callable[[], object]:
    learn = np.ones(x.shape[0], dtype=np.bool_)
    starts = range(0, x.shape[0], BATCH)

    def feed() -> object:
        return [det.score_learn(x[i : i + BATCH], learn[i : i + BATCH]) for i in starts]

    return feed


def _row_by_row(det: Any, x: F64) -> Callable[[], object]:
    rows = [x[i : i + 1] for i in range(x.shape[0])]
    one = np.ones(1, dtype=np.bool_)
    return lambda: [det.score_learn(r, one) for r in rows]


def _scores(batches: Any) -> F64:
    return np.concatenate([b.score for b in batches])


def _chart(bench: Bench, kind: str, cls: type, rng: np.random.Generator) -> None:
    n = bench.size(51_200, 512_000)
    x = (10.0 + rng.standard_normal((n, 1))).round(3)  # a gauge with 0.001 resolution
    small = x[:2000]
    det = cls()
    bench.first_call(kind, _batched(det, x))
    refs = [Case("one row per call", _row_by_row(cls(), small), small.shape[0],
                 unit="rows/s", note=f"{small.shape[0]} rows, one score_learn call each")]
    river_ref = _river_nearest(kind, small)
    if river_ref is not None:
        refs.append(river_ref)
    bench.compare(
        Case(kind, _batched(det, x), n, unit="rows/s",
             note=f"d=1, batches of {BATCH}, every row learned, default parameters"),
        refs,
    )


def _river_nearest(kind: str, x: F64) -> Case | None:
    """River's closest per-sample tool for the same job (different arithmetic, unchecked)."""
    import river.anomaly
    import river.drift

    values = x[:, 0].tolist()
    if kind == "zscore":
        sad: Any = river.anomaly.StandardAbsoluteDeviation()

        def sad_run() -> object:
            for v in values:  # a supervised-style scorer: it models y, x is unused
                sad.score_one(None, v)
                sad.learn_one(None, v)
            return None

        return Case("river StandardAbsoluteDeviation", sad_run, len(values), unit="rows/s",
                    note="River's nearest tool, not the same arithmetic")
    if kind == "page_hinkley":
        ph: Any = river.drift.PageHinkley()
        return Case("river drift.PageHinkley", lambda: [ph.update(v) for v in values],
                    len(values), unit="rows/s",
                    note="River's nearest tool, not the same arithmetic")
    return None


def _asset(bench: Bench, cls: type, rng: np.random.Generator) -> None:
    d = 8
    n = bench.size(25_600, 256_000)
    latent = rng.standard_normal((n, 2))
    x = latent @ rng.standard_normal((2, d)) + 0.3 * rng.standard_normal((n, d))
    small = x[:1500]
    # The reference is Hotelling's T² of the values: the detector on values, not residuals.
    det = cls(forecast=False)
    got = _scores(bench.first_call("mahalanobis (asset)", _batched(det, small)))
    want = numpy_hotelling(small, det.half_life, det.ridge, det.min_variance, det.min_samples)
    # The kernel's ridge is refreshed about once per half-life and shrinks between refreshes;
    # the reference recomputes it every row. At ridge 1e-6 that moves T² by ~1e-6 at most.
    agree("mahalanobis", "numpy per row", want, got, rtol=1e-4, atol=1e-9)
    det = cls(forecast=False)
    bench.compare(
        Case("mahalanobis (asset)", _batched(det, x), n, unit="rows/s",
             note=f"d={d}, batches of {BATCH}, every row learned, default parameters"),
        [
            Case("one row per call", _row_by_row(cls(), small), small.shape[0], unit="rows/s",
                 note=f"{small.shape[0]} rows"),
            Case("numpy per row", lambda: numpy_hotelling(
                small, det.half_life, det.ridge, det.min_variance, det.min_samples),
                small.shape[0], unit="rows/s",
                note=f"{small.shape[0]} rows, np.linalg.inv of the covariance for each"),
        ],
    )


def numpy_hotelling(
    x: F64, half_life: float, ridge: float, min_variance: float, min_samples: int
) -> F64:
    """Prequential T² with an exponentially forgetting mean and covariance, NumPy per row."""
    lam = 2.0 ** (-1.0 / half_life) if math.isfinite(half_life) else 1.0
    d = x.shape[1]
    weight, mean, cov = 0.0, np.zeros(d), np.zeros((d, d))
    out = np.zeros(x.shape[0])
    for i, row in enumerate(x):
        delta = row - mean
        if i >= min_samples:
            var = np.diag(cov)
            precision = np.linalg.inv(cov + np.diag(ridge * var + min_variance))
            out[i] = delta @ precision @ delta
        weight = lam * weight + 1.0
        mean = mean + delta / weight
        cov = (1.0 - 1.0 / weight) * (cov + np.outer(delta, delta) / weight)
    return out


def _river(bench: Bench, kind: str, cls: type, rng: np.random.Generator) -> None:
    d = 4
    n = bench.size(1024, 8192)
    latent = rng.standard_normal((n, 1))
    x = latent @ np.ones((1, d)) + 0.5 * rng.standard_normal((n, d))
    dicts = [dict(zip(range(d), row, strict=True)) for row in x.tolist()]
    adapter = cls()
    score_direct, run_direct = _river_direct(kind, adapter, d)
    name = f"{kind} (river adapter)"
    got = _scores(bench.first_call(name, _batched(adapter, x)))
    agree(kind, "river direct", got, [score_direct(r) for r in dicts], rtol=1e-12)
    bench.compare(
        Case(name, _batched(adapter, x), n, unit="rows/s",
             note=f"d={d}, batches of {BATCH}, every row learned, default parameters"),
        [Case("river direct", lambda: run_direct(dicts), n, unit="rows/s",
              note="score_one then learn_one on prebuilt dicts, River's own pipeline")],
        [RIVER_TARGET],
    )


def _river_direct(
    kind: str, adapter: Any, d: int
) -> tuple[Callable[[dict[int, float]], float], Callable[[list[dict[int, float]]], object]]:
    """The River model an adapter stands for, built from the adapter's parameters.

    Returns ``step(x) -> score`` (score_one then learn_one, the score in the adapter's sign
    convention, for the check) and ``run(dicts)`` (the timed loop, River's scores as they are).
    """
    from river import anomaly, feature_extraction, optim, preprocessing

    a = adapter
    if kind == "hst":
        model: Any = preprocessing.MinMaxScaler(window_size=a.scaler_window_size or None) | (
            anomaly.HalfSpaceTrees(n_trees=a.n_trees, height=a.height,
                                   window_size=a.window_size, seed=a.seed))
        sign = 1.0
    elif kind == "oneclass_svm":
        svm = anomaly.OneClassSVM(nu=a.nu, optimizer=optim.SGD(a.learning_rate),
                                  intercept_lr=a.intercept_lr)
        model = (preprocessing.StandardScaler(window_size=a.scaler_window_size or None)
                 | feature_extraction.RBFSampler(gamma=a.gamma, n_components=a.n_components,
                                                 seed=a.seed)
                 | svm)
        sign = -1.0
    elif kind == "gaussian":
        scorer: Any = anomaly.GaussianScorer  # River leaves its __init__ untyped
        scorers = [scorer(window_size=a.window_size or None, grace_period=a.grace_period)
                   for _ in range(d)]

        def gaussian_step(x: dict[int, float]) -> float:
            best = max(s.score_one(None, x[j]) for j, s in enumerate(scorers))
            for j, s in enumerate(scorers):
                s.learn_one(None, x[j])
            return float(best)

        return gaussian_step, lambda dicts: [gaussian_step(x) for x in dicts]
    else:  # pragma: no cover - a River kind this benchmark does not know yet
        raise ValueError(f"no direct River reference for detector kind {kind!r}")

    def step(x: dict[int, float]) -> float:
        score = model.score_one(x)
        if sign < 0:  # the adapter reports 1 - (margin + intercept), before learning the row
            score = 1.0 - (score + svm.intercept)
        model.learn_one(x)
        return float(score)

    def run_direct(dicts: list[dict[int, float]]) -> object:
        for x in dicts:
            model.score_one(x)
            model.learn_one(x)
        return None

    return step, run_direct


def _thresholds(bench: Bench, fixed: Any, quantile: Any, rng: np.random.Generator) -> None:
    import river.stats

    n = bench.size(51_200, 512_000)
    scores = np.abs(rng.standard_normal(n))
    small = scores[:5000]
    starts = range(0, n, BATCH)

    def batched(threshold: Any) -> Callable[[], object]:
        return lambda: [threshold.apply(scores[i : i + BATCH], True) for i in starts]

    def one_per_call(threshold: Any) -> Callable[[], object]:
        values = small.tolist()
        return lambda: [threshold.apply(v, True) for v in values]

    limit = 3.29  # |N(0, 1)| exceeds it with probability 1e-3
    def numpy_where() -> list[F64]:
        return [np.where(np.isfinite(scores[i : i + BATCH]), limit, np.inf) for i in starts]

    got: Any = bench.first_call("fixed threshold", batched(fixed(limit)))
    agree("fixed threshold", "numpy where", np.concatenate(got), np.concatenate(numpy_where()))
    note = f"batches of {BATCH}, every score learned"
    bench.compare(
        Case("fixed threshold", batched(fixed(limit)), n, note=note, unit="scores/s"),
        [Case("numpy where", numpy_where, n, unit="scores/s",
              note=f"np.where per batch of {BATCH}")],
    )
    p2: Any = river.stats.Quantile(1.0 - 1e-3)
    values = small.tolist()

    def river_quantile() -> object:
        for v in values:
            p2.get()
            p2.update(v)
        return None

    bench.first_call("quantile threshold", batched(quantile()))
    bench.compare(
        Case("quantile threshold", batched(quantile()), n, unit="scores/s",
             note=f"{note}, false_alarm_rate=1e-3 (forgetting histogram)"),
        [
            Case("one score per call", one_per_call(quantile()), small.size, unit="scores/s",
                 note=f"{small.size} scores"),
            Case("river stats.Quantile", river_quantile, small.size, unit="scores/s",
                 note="River's P-square estimator: no forgetting, not the same estimate"),
        ],
    )


def _alarm(bench: Bench, alarm: Any, rng: np.random.Generator) -> None:
    n = bench.size(51_200, 512_000)
    exceed = rng.random(n) < 0.01  # lone false alarms, and a fault every 5000 samples
    for start in range(1000, n, 5000):
        exceed[start : start + 60] = True
    small = exceed[:20_000]
    starts = range(0, n, BATCH)

    def batched(a: Any) -> Callable[[], object]:
        return lambda: [a.update(exceed[i : i + BATCH]) for i in starts]

    params: dict[str, Any] = {"raise_after": 3, "clear_after": 10, "cooldown": 20, "warmup": 100,
              "pause_learning": True, "max_pause": 40}
    got = bench.first_call("alarm", lambda: alarm(**params).update(small))
    want = python_alarm(small.tolist(), **params)
    for name, column in zip(("state", "raised", "cleared", "learn", "withheld"), want,
                            strict=True):
        agree(f"alarm ({name})", "pure python", getattr(got, name), column)
    stepper = alarm(**params)
    few = small[:5000].tolist()

    def one_per_call() -> object:
        return [stepper.step(e) for e in few]

    bench.compare(
        Case("alarm", batched(alarm(**params)), n, unit="samples/s",
             note=f"batches of {BATCH}; 1 % lone exceedances, a 60-sample fault every 5000"),
        [
            Case("pure python", lambda: python_alarm(small.tolist(), **params), small.size,
                 note=f"{small.size} samples"),
            Case("one sample per call", one_per_call, 5000, note="5000 samples"),
        ],
    )


def python_alarm(
    exceed: list[bool], *, raise_after: int, clear_after: int, cooldown: int, warmup: int,
    pause_learning: bool, max_pause: int, adapt_after: float = 3600.0,
) -> tuple[list[int], list[bool], list[bool], list[bool], list[bool]]:
    """The alarm rules of :mod:`shopfloor.scoring.detect.alarm`, one sample at a time in pure
    Python, on the sample clock (sample i at i + 1 seconds).

    Returns state codes, raised, cleared, learn and withheld, one entry per sample.
    """
    warming, normal, active, cooling = 0, 1, 2, 3
    state, run, quiet, cool_left, lasted = warming, 0, 0, 0, 0
    run_start = onset = 0.0
    states: list[int] = []
    raised_at: list[bool] = []
    cleared_at: list[bool] = []
    learned: list[bool] = []
    withheld: list[bool] = []
    for seen, e in enumerate(exceed):
        now = seen + 1.0
        if seen < warmup:
            states.append(warming)
            raised_at.append(False)
            cleared_at.append(False)
            learned.append(True)
            withheld.append(False)
            continue
        raised = cleared = adopted = False
        if state == warming or (state == cooling and cool_left == 0):
            state = normal
        was_active = state == active
        if was_active:
            quiet = 0 if e else quiet + 1
            lasted += 1
            if quiet >= clear_after:
                cleared, cool_left = True, cooldown
                state = cooling if cooldown > 0 else normal
            elif lasted >= max_pause or now - onset >= adapt_after:
                adopted, cool_left, state = True, 0, normal
            if cleared or adopted:
                quiet = run = lasted = 0
        else:
            if e and run == 0:
                run_start = now
            run = run + 1 if e else 0
            if state == cooling:
                cool_left -= 1
            elif run >= raise_after:
                raised, quiet, lasted, onset, state = True, 0, 0, run_start, active
        held = pause_learning and (state == active or (e and not adopted))
        states.append(state)
        raised_at.append(raised)
        cleared_at.append(cleared)
        learned.append(not held)
        withheld.append(held and e and not was_active)
    return states, raised_at, cleared_at, learned, withheld
