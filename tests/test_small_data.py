"""Small data works: 20-100 molecules run end to end, with finite, calibrated intervals,
k-fold cross-validation and a stated minimum size."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import qemlflow as qm
from qemlflow.data import read_raw
from qemlflow.pipeline.config import parse_config
from qemlflow.pipeline.reproduce import reproduce
from qemlflow.pipeline.runner import MIN_MOLECULES
from qemlflow.store import Store

SRC = Path(__file__).resolve().parents[1] / "src"
# Cheap but real: the coverage checks fit hundreds of models.
QUICK = {
    "features": [{"type": "ecfp", "size": 1024}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 50}},
}


def _bundled(name: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(read_raw(name).data))


def _subset(folder: Path, name: str, n: int, seed: int = 0) -> Path:
    """``n`` molecules drawn from a bundled dataset, as a CSV file."""
    path = folder / f"{name}-{n}-{seed}.csv"
    _bundled(name).sample(n, random_state=seed).to_csv(path, index=False)
    return path


def _config(folder: Path, source: Path, **changes: Any) -> Path:
    config: dict[str, Any] = {
        "name": source.stem,
        "dataset": {"source": str(source)},
        "evaluation": {"n_bootstrap": 100, "plots": False},
        **changes,
    }
    path = folder / f"{source.stem}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _qemlflow(
    args: list[str], folder: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI from these sources in ``folder``, with a store of its own."""
    env = dict(os.environ)
    env["QEMLFLOW_HOME"] = str(folder / "store")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.pop("QEMLFLOW_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=folder,
        env=env,
    )


def _run(folder: Path, config: Path) -> Path:
    out = folder / "results"
    done = _qemlflow(["run", str(config), "--out", str(out)], folder)
    assert done.returncode == 0, done.stderr
    return out


# ------------------------------------------------------------------ end to end, default run


@pytest.mark.parametrize("n", [20, 30, 50, 80])
def test_a_small_regression_set_runs_with_finite_intervals(tmp_path: Path, n: int) -> None:
    out = _run(tmp_path, _config(tmp_path, _subset(tmp_path, "esol", n)))  # default experiment
    metrics = json.loads((out / "metrics.json").read_text())
    interval = metrics["interval"]
    assert math.isfinite(interval["test_mean_width"]) and interval["test_mean_width"] > 0
    # The validation part (10 %) is far under 50 molecules: CV+ (fold models), recorded.
    assert interval["interval_method"] == "cv_plus"
    predictions = pd.read_csv(out / "predictions.csv")
    assert np.isfinite(predictions[["lower", "upper"]].to_numpy()).all()
    model = qm.load_model(out).model  # the model records its method too
    assert model.interval_methods_ == ["cv_plus"]
    assert model.describe()["interval_methods"] == ["cv_plus"]


def test_a_small_classification_set_runs_and_states_its_calibration(tmp_path: Path) -> None:
    out = _run(tmp_path, _config(tmp_path, _subset(tmp_path, "bbbp", 40)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == {"train": 32, "valid": 4, "test": 4}
    # Four validation molecules cannot fit a calibrator: cross-validation on train + valid.
    assert metrics["calibration"]["fitted_on"] == "cross_validation"
    probability = pd.read_csv(out / "predictions.csv")["probability"]
    assert probability.between(0, 1).all()


def test_a_small_sparse_multitask_set_runs_and_states_each_tasks_calibration(
    tmp_path: Path,
) -> None:
    # Tox21: 12 tasks, labels missing, few positives: in 40 molecules some tasks have
    # none, and no validation part has 5 of a class.
    out = _run(tmp_path, _config(tmp_path, _subset(tmp_path, "tox21", 40), **QUICK))
    metrics = json.loads((out / "metrics.json").read_text())
    fitted_on = metrics["calibration"]["fitted_on"]
    assert len(fitted_on) == 12 and set(fitted_on) <= {"cross_validation", "none"}
    assert "none" in fitted_on  # a task with one class in training predicts a constant
    assert 0.0 <= metrics["test"]["pr_auc"] <= 1.0


def test_fewer_molecules_than_the_minimum_is_one_line_exit_2(tmp_path: Path) -> None:
    config = _config(tmp_path, _subset(tmp_path, "esol", MIN_MOLECULES - 1))
    done = _qemlflow(["run", str(config), "--out", str(tmp_path / "results")], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr  # the progress lines above it aside
    assert f"only {MIN_MOLECULES - 1} valid molecules" in lines[0]
    assert f"at least {MIN_MOLECULES}" in lines[0]
    assert (tmp_path / "results" / "rejected.csv").is_file()


# ------------------------------------------------------------------ cross-validation


def test_kfold_reports_folds_and_pooled_out_of_fold_metrics(tmp_path: Path) -> None:
    source = _subset(tmp_path, "esol", 30)
    config = _config(tmp_path, source, split={"method": "kfold", "k": 5}, **QUICK)
    out = _run(tmp_path, config)
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = pd.read_csv(out / "predictions.csv")

    assert metrics["n"] == {"test": 30} and "train" not in metrics
    assert [f["fold"] for f in metrics["folds"]] == [0, 1, 2, 3, 4]
    assert [f["n"] for f in metrics["folds"]] == [6] * 5
    assert metrics["cross_validation"]["k"] == 5
    assert metrics["cross_validation"]["final_model"] == "fitted on all 30 molecules"
    low, high = metrics["ci95"]["test"]["rmse"]
    assert low <= metrics["test"]["rmse"] <= high
    assert np.mean([f["rmse"] for f in metrics["folds"]]) == pytest.approx(
        metrics["cross_validation"]["fold_mean"]["rmse"]
    )

    # predictions.csv: every row held out once, in the fold the metrics name.
    assert (predictions["split"] == "test").all()
    assert sorted(predictions["fold"].value_counts().tolist()) == [6] * 5
    pooled = np.sqrt(np.mean((predictions["label"] - predictions["prediction"]) ** 2))
    assert pooled == pytest.approx(metrics["test"]["rmse"])
    for fold in metrics["folds"]:
        rows = predictions[predictions["fold"] == fold["fold"]]
        rmse = np.sqrt(np.mean((rows["label"] - rows["prediction"]) ** 2))
        assert rmse == pytest.approx(fold["rmse"])
    assert np.isfinite(predictions[["lower", "upper"]].to_numpy()).all()

    # The saved model is fitted on every molecule, with CV+ intervals.
    model = qm.load_model(out)
    assert model.model.n_train_per_task_ == [30]
    assert model.model.interval_methods_ == ["cv_plus"]
    assert yaml.safe_load((out / "config.yaml").read_text())["split"]["params"] == {"k": 5}


def test_kfold_on_a_small_classification_set(tmp_path: Path) -> None:
    config = _config(
        tmp_path, _subset(tmp_path, "bbbp", 40), split={"method": "kfold", "k": 4}, **QUICK
    )
    out = _run(tmp_path, config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["folds"]) == 4 and metrics["n"] == {"test": 40}
    assert 0.0 <= metrics["test"]["roc_auc"] <= 1.0
    folds = pd.read_csv(out / "predictions.csv")["fold"]
    assert sorted(folds.unique().tolist()) == [0, 1, 2, 3]


def test_a_kfold_run_reproduces_identically(tmp_path: Path) -> None:
    source = _subset(tmp_path, "esol", 25)
    config = yaml.safe_load(
        _config(tmp_path, source, split={"method": "kfold", "k": 3}, **QUICK).read_text()
    )
    with Store.open(tmp_path / "store") as store:
        result = qm.run(config, store=store)
        again = qm.run({**config, "seed": 1}, store=store)
        assert result.split.params["fold"] != again.split.params["fold"]  # seeded folds
        report = reproduce(store, result.run_id or "")
    assert report.identical, report.to_dict()


def test_the_kfold_shorthand_is_the_interface_form() -> None:
    cfg = parse_config({"dataset": {"source": "esol"}, "split": {"method": "kfold", "k": 5}})
    assert cfg.split.method == "kfold" and cfg.split.k == 5
    default = parse_config({"dataset": {"source": "esol"}})
    assert default.resolved()["split"] == {
        "method": "random",
        "sizes": [0.8, 0.1, 0.1],
        "params": {},
    }  # configs without k keep their resolved form, so their digests
    for bad, said in [
        ({"method": "random", "k": 5}, "only for method: kfold"),
        ({"method": "kfold", "k": 1}, "from 2 to 100"),
        ({"method": "kfold", "params": {"balanced": True}}, "takes only k"),
    ]:
        with pytest.raises(qm.QeMLflowError, match=said):
            parse_config({"dataset": {"source": "esol"}, "split": bad})


# ------------------------------------------------------------------ coverage


def _held_out_coverage(tmp_path: Path, split: dict[str, Any]) -> tuple[float, int]:
    """Coverage of the nominal 90 % intervals on 20 ESOL subsamples of 50, pooled."""
    inside: list[np.ndarray] = []
    for seed in range(20):
        source = _subset(tmp_path, "esol", 50, seed)
        config = {
            "seed": seed,
            "dataset": {"source": str(source)},
            "split": split,
            "evaluation": {"n_bootstrap": 0, "plots": False},
            **QUICK,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = qm.run(config)
        test = result.split.test
        truth = result.dataset.y[test, 0]
        lower, upper = result.scores["lower"][test, 0], result.scores["upper"][test, 0]
        inside.append((truth >= lower) & (truth <= upper))
    pooled = np.concatenate(inside)
    return float(pooled.mean()), len(pooled)


def test_intervals_on_50_molecules_cover_90_percent_of_held_out_molecules(
    tmp_path: Path,
) -> None:
    coverage, n = _held_out_coverage(tmp_path, {"sizes": [0.7, 0.1, 0.2]})
    assert 195 <= n <= 200  # a draw may hold a parent under 3 heavy atoms (rejected)
    assert 0.85 <= coverage <= 0.95, coverage


@pytest.mark.slow  # 20 x 6 model fits: ~45 s
def test_kfold_intervals_on_50_molecules_cover_90_percent(tmp_path: Path) -> None:
    coverage, n = _held_out_coverage(tmp_path, {"method": "kfold", "k": 5})
    assert n >= 990  # every molecule held out once (a few duplicates merge)
    assert 0.85 <= coverage <= 0.95, coverage


# ------------------------------------------------------------------ the model on its own


def test_a_calibration_set_with_few_of_a_class_is_pooled_keeping_the_ranking() -> None:
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    from qemlflow.models import MolecularModel

    rng = np.random.default_rng(0)
    X = rng.random((120, 6))
    y = (X[:, 0] + 0.3 * rng.random(120) > 0.7).astype(float)
    cal = np.flatnonzero(y == 0)[:10].tolist() + np.flatnonzero(y == 1)[:3].tolist()
    train = np.setdiff1d(np.arange(100), cal)
    model = MolecularModel("random_forest", task="classification", params={"n_estimators": 30})
    model.fit(X[train], y[train], X[cal], y[cal])  # 3 positives: too few to calibrate on
    assert model.calibration_sources_ == ["cross_validation"]
    assert model.calibration_methods_ == ["sigmoid"]
    assert model.n_calibration_per_task_ == [len(train) + len(cal)]
    proba = model.predict_positive(X[100:])
    raw = model.base_estimators_[0].predict_proba(X[100:])[:, 1]
    assert np.all((proba >= 0) & (proba <= 1))
    # Platt scaling is monotone: the ranking (and ROC-AUC) is the model's own.
    np.testing.assert_array_equal(rankdata(proba), rankdata(raw))
    assert roc_auc_score(y[100:], proba) == roc_auc_score(y[100:], raw)
    assert model.describe()["calibration_sources"] == ["cross_validation"]


def test_predict_gives_a_small_data_models_cv_plus_intervals(tmp_path: Path) -> None:
    source = _subset(tmp_path, "esol", 30)
    out = _run(tmp_path, _config(tmp_path, source, **QUICK))
    assert json.loads((out / "metrics.json").read_text())["interval"]["interval_method"] == (
        "cv_plus"
    )
    scored = tmp_path / "scored.csv"
    done = _qemlflow(["predict", str(out), str(source), "-o", str(scored)], tmp_path)
    assert done.returncode == 0, done.stderr
    again = pd.read_csv(scored)
    run = pd.read_csv(out / "predictions.csv")
    # The saved model carries its fold models: predict gives the run's own intervals.
    for column in ("prediction", "lower", "upper"):
        np.testing.assert_allclose(again[column], run[column], rtol=1e-12)
    assert (again["lower"] <= again["prediction"]).all()
    assert (again["prediction"] <= again["upper"]).all()
    # CV+ intervals differ per molecule, unlike a symmetric cross-conformal width.
    assert (again["upper"] - again["lower"]).nunique() > 1
