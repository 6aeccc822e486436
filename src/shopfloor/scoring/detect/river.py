"""River anomaly models behind the shopfloor :class:`~shopfloor.scoring.detect.base.Detector`
contract.

River is imported when one of these detectors is constructed, never when this module is
imported: a deployment that configures no River model does not pay its import time (about a
second) and memory (about 110 MB). Nothing in shopfloor imports River at module level.

Each adapter turns a batch into per-row feature dicts keyed ``0 .. d−1`` (built with one
``dict(zip(...))`` per row), puts the scaler each model needs in front, and reproduces exactly
what the equivalent River pipeline (``scaler | model``, ``score_one`` then ``learn_one``) would
give. Known River 0.26 traps, handled here:

- one NaN or inf poisons scalers and models for good: a row with a non-finite value scores NaN
  and is never learned (the pipeline's gate filters them first; this is a second line);
- River's threshold filters are not used (``ThresholdFilter(protect_anomaly_detector=False)``
  never learns); thresholds are shopfloor's;
- pickles do not load across River versions: :meth:`get_state` records the version and
  :meth:`set_state` refuses a state written by another one.
"""

from __future__ import annotations

import math
import pickle
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import (
    Detector,
    ScoreBatch,
    State,
    as_feature_matrix,
    as_learn_mask,
)

__all__ = ["GaussianScorerDetector", "HalfSpaceTreesDetector", "OneClassSVMDetector"]

_NAN = math.nan


def _import_river() -> Any:
    """Import River on demand (see the module docstring) with a remedy if it is missing."""
    try:
        import river
        import river.anomaly
        import river.feature_extraction
        import river.optim
        import river.preprocessing
    except ImportError as exc:  # pragma: no cover - River is a declared dependency
        raise ImportError(
            "River detector kinds (hst, oneclass_svm, gaussian) need the 'river' package: "
            "install it, or configure a detector kind that does not use River"
        ) from exc
    return river


def _check_int(name: str, value: int, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}]; got {value!r}")


def _number(name: str, value: object) -> float:
    # Config values arrive untyped; a string must fail with the parameter's name, not a
    # comparison TypeError.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number; got {value!r}")
    return float(value)


def _check_positive(name: str, value: float) -> float:
    value = _number(name, value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return value


class _RiverDetector(Detector):
    """Batch plumbing, feature dicts and checkpointing shared by the River adapters."""

    row_model = True  # pure scoring, per-row Python anyway, pickled state

    def _init_runtime(self) -> None:
        _import_river()  # fail at configuration time, not on the first sample
        self._model: Any = None
        self._keys: tuple[int, ...] = ()

    def _build(self, river: Any, n_features: int) -> Any:
        """The River object(s) for ``n_features`` features (picklable as one object)."""
        raise NotImplementedError

    def _run(
        self, rows: list[list[float]], learn: list[bool], finite: list[bool]
    ) -> tuple[list[float], NDArray[np.int64] | list[int]]:
        """Score then learn each row in order; return scores and the top column per row."""
        raise NotImplementedError

    def score_learn(self, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> ScoreBatch:
        """Score each row, then learn it where ``learn``; non-finite rows score NaN, unlearned."""
        rows = as_feature_matrix(x)
        n, d = rows.shape
        mask = as_learn_mask(learn, n)
        if d < 1:
            raise ValueError("x must have at least one feature column")
        if self._model is None:
            self._model = self._build(_import_river(), d)
            self._keys = tuple(range(d))
        elif d != len(self._keys):
            raise ValueError(
                f"x has {d} features but this detector learned {len(self._keys)}; keep the "
                "feature list fixed or start a new detector"
            )
        finite = cast(list[bool], np.isfinite(rows).all(axis=1).tolist())
        score, top = self._run(rows.tolist(), cast(list[bool], mask.tolist()), finite)
        return ScoreBatch(
            score=np.array(score, dtype=np.float64), top=np.asarray(top, dtype=np.int64)
        )

    def get_state(self) -> State:
        """Kind, River version, feature count and the pickled River model(s)."""
        river = _import_river()
        model = b"" if self._model is None else pickle.dumps(self._model, pickle.HIGHEST_PROTOCOL)
        return {
            "kind": self.kind,
            "river_version": str(river.__version__),
            "n_features": len(self._keys),
            "model": model,
        }

    def set_state(self, state: State) -> None:
        """Restore :meth:`get_state` output written by the same kind and River version."""
        river = _import_river()
        if state.get("kind") != self.kind:
            raise ValueError(f"state is of kind {state.get('kind')!r}, not {self.kind!r}")
        saved, running = state.get("river_version"), str(river.__version__)
        if saved != running:
            raise ValueError(
                f"state was written by River {saved} but River {running} is installed; River "
                "models do not load across versions: delete this checkpoint to relearn, or "
                f"install River {saved}"
            )
        model, n_features = state.get("model"), state.get("n_features")
        if not isinstance(model, bytes) or not isinstance(n_features, int) or n_features < 0:
            raise ValueError("state needs 'model' (bytes) and 'n_features' (int >= 0)")
        if not model:
            self._model, self._keys = None, ()
            return
        # Checkpoints are written by this agent to its own state directory; they are trusted as
        # much as the code itself.
        self._model = pickle.loads(model)  # noqa: S301
        self._keys = tuple(range(n_features))


class HalfSpaceTreesDetector(_RiverDetector):
    """River's Half-Space Trees behind a running min-max scaler.

    HST assumes features in [0, 1], so a ``MinMaxScaler`` learns each feature's range first.
    The score is River's (in [0, 1], higher = more anomalous); it is 0 until ``window_size``
    rows have been learned. Not attributable: ``top`` is −1.

    Parameters
    ----------
    n_trees
        Number of trees (>= 1).
    height
        Height of each tree (1 to 16); a tree has ``2^(height+1) − 1`` nodes.
    window_size
        Rows per reference window of node masses (>= 1).
    seed
        Seed of the tree construction.
    scaler_window_size
        Rows over which the scaler tracks min and max; 0 tracks the whole stream (a single
        learned outlier then stretches the range for good).

    Notes
    -----
    HST measures how empty a region of the learned range is, so it catches unseen
    combinations of otherwise normal values (a load that does not match the current). It does
    not tell "just past the largest value seen" from "far past it": both land in the same
    edge cells. Pair it with a chart or the Gaussian scorer for extreme values.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = HalfSpaceTreesDetector(window_size=50)
    >>> batch = det.score_learn(rng.random((200, 2)), np.ones(200, dtype=bool))
    >>> batch.score.shape, float(batch.score[0]), int(batch.top[0])
    ((200,), 0.0, -1)
    """

    kind = "hst"

    def __init__(
        self,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        scaler_window_size: int = 0,
    ) -> None:
        _check_int("n_trees", n_trees, 1)
        _check_int("height", height, 1, 16)
        _check_int("window_size", window_size, 1)
        _check_int("seed", seed, 0)
        _check_int("scaler_window_size", scaler_window_size, 0)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.scaler_window_size = scaler_window_size
        self._init_runtime()

    def _build(self, river: Any, n_features: int) -> Any:
        scaler = river.preprocessing.MinMaxScaler(window_size=self.scaler_window_size or None)
        hst = river.anomaly.HalfSpaceTrees(
            n_trees=self.n_trees, height=self.height, window_size=self.window_size, seed=self.seed
        )
        return (scaler, hst)

    def _run(
        self, rows: list[list[float]], learn: list[bool], finite: list[bool]
    ) -> tuple[list[float], NDArray[np.int64]]:
        scaler, hst = self._model
        keys, transform, learn_scaler = self._keys, scaler.transform_one, scaler.learn_one
        score_one, learn_one = hst.score_one, hst.learn_one
        out = [_NAN] * len(rows)
        for i, row in enumerate(rows):
            if finite[i]:
                x = dict(zip(keys, row, strict=True))
                out[i] = score_one(transform(x))
                if learn[i]:
                    learn_scaler(x)
                    learn_one(transform(x))
        return out, np.full(len(rows), -1, dtype=np.int64)


class OneClassSVMDetector(_RiverDetector):
    """River's online one-class SVM on random Fourier features of standardised rows.

    The chain is ``StandardScaler | RBFSampler | OneClassSVM``. The RBF features matter: on
    centred data a linear one-class SVM has nothing to separate from the origin and its score
    stays near 0 whatever the row. River's ``score_one`` is the margin ``w·φ(x)``, which is
    *high for normal rows*; the score here is ``1 − (w·φ(x) + b)``, positive outside the learned
    support (about a fraction ``nu`` of learned rows), higher = more anomalous. Not
    attributable: ``top`` is −1.

    Parameters
    ----------
    nu
        Expected fraction of rows outside the support, in (0, 1].
    learning_rate
        Step of the SGD optimiser of the weights (> 0).
    intercept_lr
        Step of the intercept (>= 0; 0 freezes it).
    gamma
        RBF kernel width on standardised features (> 0).
    n_components
        Random features per input feature (>= 1); cost grows linearly with it.
    seed
        Seed of the random features.
    scaler_window_size
        Rows over which the scaler tracks mean and variance; 0 tracks the whole stream.

    Notes
    -----
    River's ``RBFSampler`` draws its random features per input feature, so the kernel is a sum
    of one-dimensional RBF kernels: the model sees values far from anything learned on some
    feature, not unseen combinations of normal values (use ``hst`` or ``mahalanobis`` for those).
    """

    kind = "oneclass_svm"

    def __init__(
        self,
        nu: float = 0.1,
        learning_rate: float = 0.01,
        intercept_lr: float = 0.01,
        gamma: float = 1.0,
        n_components: int = 30,
        seed: int = 42,
        scaler_window_size: int = 0,
    ) -> None:
        nu, intercept_lr = _number("nu", nu), _number("intercept_lr", intercept_lr)
        if not (0.0 < nu <= 1.0):
            raise ValueError(f"nu must be in (0, 1]; got {nu!r}")
        learning_rate = _check_positive("learning_rate", learning_rate)
        if not (math.isfinite(intercept_lr) and intercept_lr >= 0.0):
            raise ValueError(f"intercept_lr must be a finite number >= 0; got {intercept_lr!r}")
        gamma = _check_positive("gamma", gamma)
        _check_int("n_components", n_components, 1)
        _check_int("seed", seed, 0)
        _check_int("scaler_window_size", scaler_window_size, 0)
        self.nu = nu
        self.learning_rate = learning_rate
        self.intercept_lr = intercept_lr
        self.gamma = gamma
        self.n_components = n_components
        self.seed = seed
        self.scaler_window_size = scaler_window_size
        self._init_runtime()

    def _build(self, river: Any, n_features: int) -> Any:
        scaler = river.preprocessing.StandardScaler(window_size=self.scaler_window_size or None)
        rbf = river.feature_extraction.RBFSampler(
            gamma=self.gamma, n_components=self.n_components, seed=self.seed
        )
        svm = river.anomaly.OneClassSVM(
            nu=self.nu,
            optimizer=river.optim.SGD(self.learning_rate),
            intercept_lr=self.intercept_lr,
        )
        return (scaler, rbf, svm)

    def _run(
        self, rows: list[list[float]], learn: list[bool], finite: list[bool]
    ) -> tuple[list[float], NDArray[np.int64]]:
        scaler, rbf, svm = self._model
        keys, scale, learn_scaler = self._keys, scaler.transform_one, scaler.learn_one
        features, margin, learn_one = rbf.transform_one, svm.score_one, svm.learn_one
        out = [_NAN] * len(rows)
        for i, row in enumerate(rows):
            if finite[i]:
                x = dict(zip(keys, row, strict=True))
                # River's score_one is w·φ alone; the hinge loss trains w·φ + b >= 1 on normal
                # rows, so 1 − (w·φ + b) > 0 means outside the learned support.
                out[i] = 1.0 - (margin(features(scale(x))) + svm.intercept)
                if learn[i]:
                    learn_scaler(x)
                    learn_one(features(scale(x)))
        return out, np.full(len(rows), -1, dtype=np.int64)


class GaussianScorerDetector(_RiverDetector):
    """River's univariate ``GaussianScorer``, one per feature column.

    Each column's score is ``2·|Φ(z) − 0.5|`` in [0, 1] (0 during the grace period). For
    several columns the row's score is the largest column score and ``top`` that column (−1
    while every column scores 0). Two deviations from plain River, both where River's score is
    exactly 1.0:

    - a column that has been exactly constant (σ = 0) scores 0 at its constant value instead of
      River's 1.0 (River's CDF divides by zero and reports the extreme), and still 1 off it;
    - the score saturates at 1.0 beyond about 8σ, so among saturated columns ``top`` names the
      one with the largest ``|x − μ| / σ``.

    Parameters
    ----------
    window_size
        Rows of the rolling window the Gaussian is fitted on; 0 fits the whole stream.
    grace_period
        Rows to learn before scoring (>= 2, and <= window_size when a window is set).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = GaussianScorerDetector(grace_period=10)
    >>> _ = det.score_learn(rng.normal(size=(100, 2)), np.ones(100, dtype=bool))
    >>> batch = det.score_learn(np.array([[0.0, 9.0]]), np.zeros(1, dtype=bool))
    >>> float(batch.score[0]) > 0.99, int(batch.top[0])
    (True, 1)
    """

    kind = "gaussian"

    def nominal_threshold(self, false_alarm_rate: float, d: int) -> float | None:
        # River scores 2|F(x) - 1/2| for the fitted normal F: uniform on [0, 1] when healthy.
        return 1.0 - false_alarm_rate / d

    def __init__(self, window_size: int = 0, grace_period: int = 100) -> None:
        _check_int("window_size", window_size, 0)
        _check_int("grace_period", grace_period, 2)
        if window_size and grace_period > window_size:
            raise ValueError(
                f"grace_period ({grace_period}) must not exceed window_size ({window_size}): "
                "a rolling fit never holds more than window_size rows, so it would never score"
            )
        self.window_size = window_size
        self.grace_period = grace_period
        self._init_runtime()

    def _build(self, river: Any, n_features: int) -> Any:
        return [
            river.anomaly.GaussianScorer(
                window_size=self.window_size or None, grace_period=self.grace_period
            )
            for _ in range(n_features)
        ]

    def _run(
        self, rows: list[list[float]], learn: list[bool], finite: list[bool]
    ) -> tuple[list[float], list[int]]:
        scorers = self._model
        # Unbound methods mapped over the columns keep the per-row loop in C: the scorers are
        # so cheap that Python-level bookkeeping would otherwise double their cost.
        score_one, learn_one = type(scorers[0]).score_one, type(scorers[0]).learn_one
        nones = [None] * len(scorers)
        out, top = [_NAN] * len(rows), [-1] * len(rows)
        for i, row in enumerate(rows):
            if not finite[i]:
                continue
            cols = list(map(score_one, scorers, nones, row))
            best = max(cols)
            if best >= 1.0:
                best, top[i] = self._saturated(row, cols)
            elif best > 0.0:
                top[i] = cols.index(best)
            out[i] = best
            if learn[i]:
                for _ in map(learn_one, scorers, nones, row):
                    pass
        return out, top

    def _saturated(self, row: list[float], cols: list[float]) -> tuple[float, int]:
        """Score and top of a row where some column scored 1.0 (see the class docstring)."""
        best, best_j, best_z = 0.0, -1, -1.0
        for j, (v, s) in enumerate(zip(row, cols, strict=True)):
            if s < 1.0:
                if s > best and best < 1.0:
                    best, best_j = s, j
                continue
            gaussian = self._model[j].gaussian
            sigma, mu = gaussian.sigma, gaussian.mu
            if sigma == 0.0 and v == mu:
                continue  # a constant column at its constant value
            z = abs(v - mu) / sigma if sigma > 0.0 else math.inf
            if best < 1.0 or z > best_z:
                best, best_j, best_z = 1.0, j, z
        return best, best_j
