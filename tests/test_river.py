"""River adapters: lazy import, equality with plain River, state, refusal and detection.

River models are slow in pure Python, so every stream here is a few thousand rows at most.
"""

from __future__ import annotations

import ast
import importlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from shopfloor.scoring.detect.base import Detector
from shopfloor.scoring.detect.river import (
    GaussianScorerDetector,
    HalfSpaceTreesDetector,
    OneClassSVMDetector,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "shopfloor"


def stream(seed: int, n: int = 1500, d: int = 3) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * [1.0, 10.0, 0.1][:d] + [5.0, -20.0, 300.0][:d]


def two_state_stream(seed: int, n: int = 3000) -> NDArray[np.float64]:
    """A machine that alternates between idle and running: load %, current (A), temp (°C)."""
    rng = np.random.default_rng(seed)
    running = rng.random(n) < 0.5
    centre = np.where(running[:, None], [[80.0, 4.0, 75.0]], [[20.0, 1.5, 60.0]])
    return centre + rng.normal(size=(n, 3)) * [2.0, 0.1, 1.0]


def dicts(x: NDArray[np.float64]) -> list[dict[int, float]]:
    return [dict(enumerate(row)) for row in x.tolist()]


def make(kind: str) -> Detector:
    if kind == "hst":
        return HalfSpaceTreesDetector(n_trees=5, height=6, window_size=100, seed=3)
    if kind == "oneclass_svm":
        return OneClassSVMDetector(n_components=10, seed=3)
    return GaussianScorerDetector(grace_period=30)


KINDS = ["hst", "oneclass_svm", "gaussian"]


# -- River stays out until asked for -------------------------------------------------------------


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_module_does_not_import_river() -> None:
    out = run_python(
        "import sys\n"
        "import shopfloor.scoring.detect.river\n"
        "print('river' in sys.modules, any(m.startswith('river.') for m in sys.modules))\n"
        "shopfloor.scoring.detect.river.HalfSpaceTreesDetector()\n"
        "print('river' in sys.modules)\n"
    )
    assert out.splitlines() == ["False False", "True"]


def module_level_imports(tree: ast.AST) -> list[str]:
    """Modules imported by code that runs at import time (function bodies excluded)."""
    names: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        stack.extend(ast.iter_child_nodes(node))
    return names


def test_no_shopfloor_module_imports_river_at_import_time() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(n == "river" or n.startswith("river.") for n in module_level_imports(tree)):
            offenders.append(str(path.relative_to(SRC)))
    assert offenders == []
    # The scan sees module-level and nested imports but not those inside functions.
    probe = "import os\nimport river\nif 1:\n    from river import x\ndef f():\n    import river\n"
    assert sorted(module_level_imports(ast.parse(probe))) == ["os", "river", "river"]


# -- equal to River itself -----------------------------------------------------------------------


def river_reference(kind: str, x: NDArray[np.float64], learn: NDArray[np.bool_]) -> list[float]:
    """Scores from River's own pipeline, score_one then learn_one, with the test's parameters."""
    from river import anomaly, feature_extraction, optim, preprocessing

    model: Any
    if kind == "hst":
        model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=5, height=6, window_size=100, seed=3
        )
        svm = None
    else:
        svm = anomaly.OneClassSVM(nu=0.1, optimizer=optim.SGD(0.01), intercept_lr=0.01)
        model = (
            preprocessing.StandardScaler()
            | feature_extraction.RBFSampler(gamma=1.0, n_components=10, seed=3)
            | svm
        )
    out = []
    for row, lrn in zip(dicts(x), learn.tolist(), strict=True):
        s = model.score_one(row)
        out.append(s if svm is None else 1.0 - (s + svm.intercept))
        if lrn:
            model.learn_one(row)
    return out


@pytest.mark.parametrize("kind", ["hst", "oneclass_svm"])
def test_scores_equal_river_pipeline(kind: str) -> None:
    x = stream(1)
    learn = np.random.default_rng(2).random(len(x)) < 0.9
    batch = make(kind).score_learn(x, learn)
    np.testing.assert_array_equal(batch.score, river_reference(kind, x, learn))
    np.testing.assert_array_equal(batch.top, -1)
    assert np.ptp(batch.score[300:]) > 0  # the comparison is not between constants


def test_gaussian_equals_river_scorers_max_and_argmax() -> None:
    anomaly: Any = importlib.import_module("river.anomaly")

    x = stream(4)
    learn = np.random.default_rng(5).random(len(x)) < 0.9
    batch = make("gaussian").score_learn(x, learn)
    scorers = [anomaly.GaussianScorer(grace_period=30) for _ in range(3)]
    for i, (row, lrn) in enumerate(zip(x.tolist(), learn.tolist(), strict=True)):
        cols = [s.score_one(None, v) for s, v in zip(scorers, row, strict=True)]
        assert batch.score[i] == max(cols)
        assert batch.top[i] == (int(np.argmax(cols)) if max(cols) > 0 else -1)
        if lrn:
            for s, v in zip(scorers, row, strict=True):
                s.learn_one(None, v)
    assert (batch.top[100:] >= 0).all()


# -- state and batch invariance ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_batches_and_restore_are_bit_exact(kind: str) -> None:
    x = stream(6, n=1200)
    rng = np.random.default_rng(7)
    learn = rng.random(len(x)) < 0.9
    ref = make(kind).score_learn(x, learn)

    det = make(kind)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=25, replace=False))
    scores, tops = [], []
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(x)], strict=True)):
        if k % 6 == 3:
            fresh = make(kind)
            fresh.set_state(det.get_state())
            det = fresh
        batch = det.score_learn(x[lo:hi], learn[lo:hi])
        scores.append(batch.score)
        tops.append(batch.top)
    np.testing.assert_array_equal(np.concatenate(scores), ref.score)
    np.testing.assert_array_equal(np.concatenate(tops), ref.top)


def test_hst_random_state_travels_with_the_checkpoint() -> None:
    # HST draws its trees from its RNG on the first learned row; a checkpoint taken before that
    # must carry the RNG state or the restored trees differ.
    x = stream(8)
    nothing = np.zeros(len(x), dtype=bool)
    ref = make("hst")
    ref.score_learn(x[:5], nothing[:5])
    det = make("hst")
    det.score_learn(x[:5], nothing[:5])
    restored = make("hst")
    restored.set_state(det.get_state())
    det.score_learn(x[:1], ~nothing[:1])  # advance the original: the copy must be independent
    a = ref.score_learn(x, ~nothing).score
    b = restored.score_learn(x, ~nothing).score
    np.testing.assert_array_equal(a, b)
    assert np.ptp(a[200:]) > 0


@pytest.mark.parametrize("kind", KINDS)
def test_state_of_another_river_version_or_kind_is_refused(kind: str) -> None:
    det = make(kind)
    det.score_learn(stream(9, n=50), np.ones(50, dtype=bool))
    state = det.get_state()
    assert state["kind"] == kind
    assert isinstance(state["model"], bytes)
    assert state["n_features"] == 3
    running = state["river_version"]
    with pytest.raises(ValueError, match=r"0\.1\.0.*" + running.replace(".", r"\.")):
        make(kind).set_state({**state, "river_version": "0.1.0"})
    other = "gaussian" if kind != "gaussian" else "hst"
    with pytest.raises(ValueError, match="kind"):
        make(other).set_state(state)
    with pytest.raises(ValueError, match="model"):
        make(kind).set_state({**state, "model": "not bytes"})


@pytest.mark.parametrize("kind", KINDS)
def test_empty_detector_round_trips(kind: str) -> None:
    det = make(kind)
    state = det.get_state()
    assert state["model"] == b""
    fresh = make(kind)
    fresh.set_state(state)
    x = stream(10, n=300)
    np.testing.assert_array_equal(
        fresh.score_learn(x, np.ones(300, dtype=bool)).score,
        make(kind).score_learn(x, np.ones(300, dtype=bool)).score,
    )


@pytest.mark.parametrize("kind", KINDS)
def test_feature_count_is_fixed(kind: str) -> None:
    det = make(kind)
    det.score_learn(stream(11, n=10), np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match="features"):
        det.score_learn(np.zeros((2, 2)), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="feature"):
        make(kind).score_learn(np.zeros((2, 0)), np.zeros(2, dtype=bool))


# -- non-finite rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_rows_score_nan_and_are_not_learned(kind: str) -> None:
    x = stream(12, n=800)
    bad = [100, 400, 401, 650]
    poisoned = x.copy()
    poisoned[bad, [0, 1, 2, 0]] = [np.nan, np.inf, -np.inf, np.nan]
    keep = np.ones(len(x), dtype=bool)
    keep[bad] = False
    batch = make(kind).score_learn(poisoned, np.ones(len(x), dtype=bool))
    clean = make(kind).score_learn(x[keep], np.ones(keep.sum(), dtype=bool))
    assert np.isnan(batch.score[bad]).all()
    np.testing.assert_array_equal(batch.top[bad], -1)
    np.testing.assert_array_equal(batch.score[keep], clean.score)
    assert np.isfinite(batch.score[keep]).all()


# -- detection -----------------------------------------------------------------------------------


def test_hst_catches_an_unseen_combination_of_operating_states() -> None:
    # Each value is normal for one of the two states, but full load at idle current is neither:
    # the kind of outlier Half-Space Trees are good at (an empty region inside the range).
    x = two_state_stream(13)
    det = HalfSpaceTreesDetector()
    normal = det.score_learn(x, np.ones(len(x), dtype=bool)).score
    odd = det.score_learn(np.array([[80.0, 1.5, 75.0], [20.0, 4.0, 60.0]]), np.zeros(2, bool))
    assert odd.score.min() > normal[1000:].max()


def test_oneclass_svm_catches_a_far_outlier_and_scores_it_positive() -> None:
    x = two_state_stream(14)
    det = OneClassSVMDetector()
    normal = det.score_learn(x, np.ones(len(x), dtype=bool)).score
    far = det.score_learn(np.array([[150.0, 8.0, 100.0]]), np.zeros(1, dtype=bool)).score
    assert far[0] > normal[1000:].max()
    assert far[0] > 0.0  # outside the learned support
    assert np.median(normal[1000:]) < 0.0  # normal rows inside it: higher = more anomalous


def test_gaussian_catches_a_far_outlier_and_names_its_column() -> None:
    x = stream(15, n=2000)
    det = GaussianScorerDetector()
    normal = det.score_learn(x, np.ones(len(x), dtype=bool)).score
    row = x[-1].copy()
    row[1] += 6 * 10.0
    odd = det.score_learn(row[None, :], np.zeros(1, dtype=bool))
    assert odd.score[0] > normal[500:].max()
    assert odd.top[0] == 1


def test_gaussian_constant_column_is_not_an_eternal_anomaly() -> None:
    # River scores a zero-variance column 1.0 at every value; the adapter scores 0 at the
    # constant value and 1.0 away from it.
    x = stream(16, n=300)
    x[:, 2] = 7.0
    det = GaussianScorerDetector(grace_period=30)
    scores = det.score_learn(x, np.ones(len(x), dtype=bool)).score
    assert scores[30:].max() < 1.0
    moved = x[-1].copy()
    moved[2] = 7.5
    batch = det.score_learn(moved[None, :], np.zeros(1, dtype=bool))
    assert batch.score[0] == 1.0
    assert batch.top[0] == 2


def test_gaussian_saturated_columns_name_the_furthest() -> None:
    x = stream(17, n=500)
    det = GaussianScorerDetector()
    det.score_learn(x, np.ones(len(x), dtype=bool))
    row = x.mean(axis=0) + np.array([20.0, 500.0, 2.0])  # 20σ, 50σ, 20σ: all saturate at 1.0
    batch = det.score_learn(row[None, :], np.zeros(1, dtype=bool))
    assert batch.score[0] == 1.0
    assert batch.top[0] == 1


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "key", "value"),
    [
        (HalfSpaceTreesDetector, "n_trees", 0),
        (HalfSpaceTreesDetector, "height", 17),
        (HalfSpaceTreesDetector, "window_size", 0),
        (HalfSpaceTreesDetector, "seed", -1),
        (HalfSpaceTreesDetector, "scaler_window_size", 1.5),
        (OneClassSVMDetector, "nu", 0.0),
        (OneClassSVMDetector, "learning_rate", math.inf),
        (OneClassSVMDetector, "intercept_lr", -0.1),
        (OneClassSVMDetector, "gamma", 0.0),
        (OneClassSVMDetector, "nu", "0.1"),
        (OneClassSVMDetector, "learning_rate", None),
        (OneClassSVMDetector, "n_components", 0),
        (GaussianScorerDetector, "window_size", -1),
        (GaussianScorerDetector, "grace_period", 1),
        (GaussianScorerDetector, "grace_period", 500),  # more than the window below
    ],
)
def test_invalid_parameters_name_the_parameter(cls: type[Detector], key: str, value: Any) -> None:
    extra: dict[str, Any] = {"window_size": 100} if key == "grace_period" and value == 500 else {}
    with pytest.raises(ValueError, match=key):
        cls(**{**extra, key: value})


def test_kinds_and_defaults() -> None:
    hst, svm, gauss = HalfSpaceTreesDetector(), OneClassSVMDetector(), GaussianScorerDetector()
    assert (hst.kind, svm.kind, gauss.kind) == ("hst", "oneclass_svm", "gaussian")
    assert (hst.n_trees, hst.height, hst.window_size, hst.seed) == (10, 8, 250, 42)
    assert (svm.nu, svm.gamma, svm.n_components, svm.seed) == (0.1, 1.0, 30, 42)
    assert (gauss.window_size, gauss.grace_period) == (0, 100)


def test_built_from_a_config_table() -> None:
    from shopfloor.scoring.detect.registry import DETECTORS, build

    det = build(DETECTORS, {"kind": "hst", "n_trees": 5, "height": 4, "window_size": 20})
    assert isinstance(det, HalfSpaceTreesDetector)
    assert (det.n_trees, det.height, det.window_size) == (5, 4, 20)
    assert isinstance(build(DETECTORS, {"kind": "oneclass_svm", "nu": 0.05}), OneClassSVMDetector)
    assert isinstance(build(DETECTORS, {"kind": "gaussian", "window_size": 500}), Detector)
    with pytest.raises(ValueError, match="gamma"):
        build(DETECTORS, {"kind": "oneclass_svm", "gamma": "wide"})
