"""Many sparse tasks: every task with both classes is modelled and scored, the others are
reported with a reason, and the results are the same whatever ``n_jobs``
(benchmarks/multitask.py times the full-size set; nothing here is timed)."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

import qemlflow as qm
from qemlflow.evaluation import CLASSIFICATION_METRICS, _bootstrap, _scorer, roc_plot

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "multitask.py"
N_TASKS, N_MOLECULES = 40, 600


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_multitask", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sparse_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = _benchmark().generate(N_MOLECULES, N_TASKS, seed=0)
    path = tmp_path_factory.mktemp("many") / "many.csv"
    data.to_csv(path, index=False)
    return path


def _run(source: Path, n_jobs: int | None) -> Any:
    config = {
        "seed": 0,
        **({"n_jobs": n_jobs} if n_jobs is not None else {}),  # None: left unset
        "dataset": {"source": str(source)},
        # Small features and trees: the behaviour is the default's, the cost is not.
        "features": [{"type": "ecfp", "size": 256}],
        "model": {"estimator": "lightgbm", "params": {"n_estimators": 20}},
        "evaluation": {"n_bootstrap": 100, "plots": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are asserted through the metrics
        return qm.run(config)


@pytest.fixture(scope="module")
def runs(sparse_set: Path) -> dict[int | None, Any]:
    return {n_jobs: _run(sparse_set, n_jobs) for n_jobs in (1, 2, None)}


def test_the_generated_set_is_sparse_structured_and_has_hard_tasks(sparse_set: Path) -> None:
    data = pd.read_csv(sparse_set)
    labels = data.drop(columns="smiles").to_numpy(dtype=float)
    assert labels.shape == (N_MOLECULES, N_TASKS)
    assert data["smiles"].is_unique
    assert np.isnan(labels).mean() > 0.4  # 88 % at the full 8,000 molecules
    counts = (~np.isnan(labels)).sum(axis=0)
    positives = np.nansum(labels, axis=0)
    assert counts.min() == 3  # a task with three labels in all
    assert (positives == 0).any() and (positives == 2).any()
    rates = positives / counts
    assert rates[counts > 50].min() < 0.1  # very imbalanced tasks
    # The same seed gives the same set; labels follow structure, not coin flips.
    again = _benchmark().generate(N_MOLECULES, N_TASKS, seed=0)
    pd.testing.assert_frame_equal(again, pd.read_csv(sparse_set).astype(again.dtypes))


def test_every_task_with_both_classes_is_modelled_and_scored(runs: dict[int, Any]) -> None:
    result = runs[1]
    metrics, y, parts = result.metrics, result.dataset.y, result.split
    model = result.predictor.model
    assert metrics["targets"] == list(result.dataset.target_names)
    assert len(metrics["targets"]) == N_TASKS
    for t, name in enumerate(metrics["targets"]):
        train = y[parts.train, t]
        train_classes = set(train[~np.isnan(train)].tolist())
        if train_classes == {0.0, 1.0}:
            assert name not in metrics["tasks_not_modelled"], name
            assert model.base_estimators_[t] is not None
        else:  # reported with its reason, and predicting its smoothed prior
            reason = metrics["tasks_not_modelled"][name]
            assert reason.startswith(("every training label is", "no training labels"))
            assert np.unique(result.scores["probability"][:, t]).size == 1
        test = y[parts.test, t]
        scored = metrics["per_task"]["test"][name]["roc_auc"]
        if set(test[~np.isnan(test)].tolist()) == {0.0, 1.0}:
            assert isinstance(scored, float) and 0.0 <= scored <= 1.0, name
        else:  # undefined, and said so (null), not dropped
            assert scored is None, name
    assert "T01" in metrics["tasks_not_modelled"]  # only negatives
    # The three-label task cannot be calibrated: the reason is recorded.
    assert "T00" in metrics["tasks_not_modelled"] or "T00" in metrics["tasks_not_calibrated"]
    assert np.isfinite(result.scores["probability"]).all()
    assert metrics["test"]["roc_auc"] > 0.6  # labels are a function of structure


def test_unset_n_jobs_fits_on_every_core_and_writes_the_same_model(
    runs: dict[int | None, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qemlflow.limits import DEFAULT_LIMITS
    from qemlflow.models import molecular_model
    from qemlflow.pipeline.runner import _fit_predictor

    one, unset = runs[1], runs[None]
    assert unset.config.n_jobs == 1 and "n_jobs" not in unset.config.model_fields_set
    assert unset.predictor.model.n_jobs == 1  # the config's, restored after the fit
    assert pickle.dumps(unset.predictor.model) == pickle.dumps(one.predictor.model)
    pd.testing.assert_frame_equal(one.predictions, unset.predictions)
    # The fit itself ran on threads: one per core, at most one per task.
    seen: list[int] = []
    real = molecular_model._task_workers
    monkeypatch.setattr(
        molecular_model,
        "_task_workers",
        lambda n_jobs, n_tasks: seen.append(real(n_jobs, n_tasks)) or seen[-1],
    )
    _fit_predictor(
        unset.config,
        unset.dataset,
        np.zeros((len(unset.dataset), 4)),
        unset.split.train,
        unset.split.valid,
        [],
        DEFAULT_LIMITS,
    )
    assert seen and seen[0] == min(os.cpu_count() or 1, unset.dataset.n_tasks)


def test_results_are_identical_whatever_n_jobs(runs: dict[int, Any]) -> None:
    one, two = runs[1], runs[2]
    assert one.config.n_jobs == 1 and two.config.n_jobs == 2
    for name in one.scores:
        np.testing.assert_array_equal(one.scores[name], two.scores[name])
    assert json.dumps(one.metrics, sort_keys=True) == json.dumps(two.metrics, sort_keys=True)
    pd.testing.assert_frame_equal(one.predictions, two.predictions)
    first, second = one.predictor.model, two.predictor.model
    for name in ("calibration_methods_", "calibration_sources_", "n_calibration_per_task_"):
        assert getattr(first, name) == getattr(second, name)


def test_sparse_bootstrap_scores_labelled_cells_exactly_as_full_rows() -> None:
    # Scoring only each task's labelled cells must not move a single bit of any interval.
    rng = np.random.default_rng(7)
    scorer = _scorer("classification", 0.5)
    for trial in range(25):
        n, k = int(rng.integers(2, 200)), int(rng.integers(1, 5))
        y = (rng.random((n, k)) < rng.uniform(0.05, 0.6)).astype(float)
        y[rng.random((n, k)) < rng.uniform(0.0, 0.95)] = np.nan
        score = np.round(rng.random((n, k)), int(rng.integers(1, 4)))  # with ties
        full = _bootstrap(y, score, scorer, CLASSIFICATION_METRICS, 150, trial)
        cells = _bootstrap(y, score, scorer, CLASSIFICATION_METRICS, 150, trial, 0.5)
        for metric in CLASSIFICATION_METRICS:
            np.testing.assert_array_equal(full[metric], cells[metric])


def test_the_roc_plot_of_hundreds_of_tasks_has_one_legend_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 300)) < 0.3).astype(float)
    y[rng.random(y.shape) < 0.7] = np.nan
    y[:, 0] = 0.0  # one class: no curve, counted
    score = np.clip(np.nan_to_num(y, nan=0.5) * 0.4 + rng.random(y.shape) * 0.6, 0, 1)
    path = roc_plot(y, score, tmp_path / "roc.png")
    assert path.stat().st_size > 1000


def test_the_benchmark_script_prints_its_summary(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *("--tasks", "4", "--molecules", "80", "--n-bootstrap"),
            *("20", "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    data = pd.read_csv(next(tmp_path.glob("multitask-*.csv")))
    labelled = data.drop(columns="smiles").notna().any(axis=1)  # unlabelled rows: rejected
    assert summary["tasks"] == 4 and summary["molecules"] == int(labelled.sum())
    assert {"featurize", "fit", "predict", "evaluate", "write"} <= set(summary["stages_s"])
    assert summary["estimator"] == "lightgbm"  # the default experiment
    assert summary["tasks_not_modelled"] >= 1  # T01 has only negatives
    assert (tmp_path / "results" / "predictions.csv").is_file()
