"""Sparse multitask sets run end to end and say what they could not model; doomed
experiments fail in seconds, before featurizing and fitting."""

from __future__ import annotations

import io
import json
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from tests.test_small_data import _qemlflow as run_cli

import qemlflow as qm
from qemlflow.chem import standardize_smiles
from qemlflow.data import read_raw
from qemlflow.store import Store

N_TASKS = 320


def toxcast_like(n_molecules: int = 160, n_tasks: int = N_TASKS, seed: int = 0) -> pd.DataFrame:
    """A ToxCast-shaped set from bundled Tox21 molecules: hundreds of tasks, most labels
    missing, tasks with 1-4 positives, with none, with only positives, with 1-2 labels."""
    rng = np.random.default_rng(seed)
    tox = pd.read_csv(io.BytesIO(read_raw("tox21").data))
    # Only molecules the default chemistry policy keeps (Tox21 has metals, inorganics and
    # mixtures): every row is then scored, and the counts below are the molecules'.
    kept = [standardize_smiles(smiles).mol is not None for smiles in tox["smiles"]]
    tox = tox[kept].sample(n_molecules, random_state=seed).reset_index(drop=True)
    assays = tox.drop(columns=["smiles"]).to_numpy(dtype=float)
    columns: dict[str, np.ndarray] = {}
    for t in range(n_tasks):
        y = np.full(n_molecules, np.nan)
        labelled = rng.choice(n_molecules, size=int(rng.integers(8, 16)), replace=False)
        kind = t % 10
        if kind == 0:  # 1 to 4 positives
            y[labelled] = 0.0
            y[labelled[: 1 + t % 4]] = 1.0
        elif kind == 1:  # no positives
            y[labelled] = 0.0
        elif kind == 2:  # only positives
            y[labelled] = 1.0
        elif kind == 3:  # one or two labels in all
            y[labelled[: 1 + (t // 10) % 2]] = [1.0, 0.0][: 1 + (t // 10) % 2]
        else:  # a Tox21 assay, mostly missing
            y[labelled] = assays[labelled, t % assays.shape[1]]
            y[labelled[0]] = 1.0
        columns[f"T{t}"] = y
    return pd.concat([tox[["smiles"]], pd.DataFrame(columns)], axis=1)


def _qemlflow(args: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(args, folder, timeout=600)  # 320 tasks take longer than a small set


def _config(folder: Path, data: pd.DataFrame, name: str, **changes: Any) -> Path:
    source = folder / f"{name}.csv"
    data.to_csv(source, index=False)
    config = {
        "name": name,
        "dataset": {"source": str(source)},
        "evaluation": {"n_bootstrap": 50, "plots": False},
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_sparse_multitask_set_runs_with_the_default_experiment(tmp_path: Path) -> None:
    data = toxcast_like()
    labels = data.drop(columns="smiles").to_numpy(dtype=float)
    assert labels.shape[1] >= 300 and np.isnan(labels).mean() >= 0.9
    positives = np.nansum(labels, axis=0)
    assert ((positives >= 1) & (positives <= 4)).any() and (positives == 0).any()

    out = tmp_path / "results"
    done = _qemlflow(["run", str(_config(tmp_path, data, "sparse")), "--out", str(out)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # One warning per kind of fallback, not hundreds of lines.
    assert done.stderr.count("UserWarning") <= 3, done.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    not_modelled, not_calibrated = metrics["tasks_not_modelled"], metrics["tasks_not_calibrated"]
    # Tasks with one class in training: a stated prior, with the reason.
    assert not_modelled["T1"].startswith("every training label is 0 (")
    assert not_modelled["T2"].startswith("every training label is 1 (")
    assert set(not_modelled) <= set(metrics["targets"])
    assert not_calibrated and not set(not_calibrated) & set(not_modelled)
    assert all(isinstance(reason, str) and reason for reason in not_calibrated.values())
    assert metrics["calibration"]["ranking_scores"] == "calibrated_tie_free"
    # Tasks with too few of a class in the calibration part: a stated fallback.
    fallbacks = metrics["calibration"]["fallbacks"]
    assert fallbacks and all("in the calibration part (need 5)" in r for r in fallbacks.values())
    fitted_on = metrics["calibration"]["fitted_on"]
    assert len(fitted_on) == N_TASKS
    assert {fitted_on[int(name[1:])] for name in not_modelled} == {"none"}

    predictions = pd.read_csv(out / "predictions.csv")
    probability = predictions[[f"probability_T{t}" for t in range(N_TASKS)]]
    assert probability.notna().all().all() and probability.stack().between(0, 1).all()
    # A task that was not modelled predicts its smoothed prior: constant, never 0 or 1.
    prior = predictions["probability_T1"]
    assert prior.nunique() == 1 and 0.0 < prior.iloc[0] < 0.1
    assert 0.9 < predictions["probability_T2"].iloc[0] < 1.0


def test_sparse_multitask_cross_validation_folds_do_not_crash(tmp_path: Path) -> None:
    # Fold models meet tasks whose every label is in the held-out fold.
    data = toxcast_like(n_molecules=60, n_tasks=40, seed=1)
    source = tmp_path / "sparse-kfold.csv"
    data.to_csv(source, index=False)
    config = {
        "dataset": {"source": str(source)},
        "features": [{"type": "ecfp", "size": 256}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
        "split": {"method": "kfold", "k": 3},
        "evaluation": {"n_bootstrap": 0, "plots": False},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = qm.run(config)
    assert result.metrics["n"] == {"test": 60}
    assert np.isfinite(result.scores["probability"]).all()
    assert "T3" in result.metrics["tasks_not_modelled"]  # one label in all


# ------------------------------------------------------------------ failing fast


def _doomed(tmp_path: Path, data: pd.DataFrame, **changes: Any) -> tuple[str, Any]:
    """Run a config that cannot succeed; return its one error line and its run record."""
    config = _config(tmp_path, data, "doomed", **changes)
    done = _qemlflow(["run", str(config), "--out", str(tmp_path / "results")], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    with Store.open(tmp_path / "store") as store:
        (record,) = store.list_runs()
        record = store.get_run(record.id)
    return errors[0], record


def _esol_as_classes(n: int, positives: int) -> pd.DataFrame:
    esol = pd.read_csv(io.BytesIO(read_raw("esol").data)).head(n)
    label = np.zeros(n)
    label[:positives] = 1.0
    return pd.DataFrame({"smiles": esol["smiles"], "active": label.astype(int)})


def test_folds_that_cannot_hold_both_classes_fail_before_featurizing(tmp_path: Path) -> None:
    line, record = _doomed(
        tmp_path, _esol_as_classes(40, positives=3), split={"method": "kfold", "k": 5}
    )
    assert "k=5" in line and "only 3 positives" in line and "use k <= 3" in line
    assert record.status == "failed"
    # The run stopped after standardizing: nothing was featurized, let alone fitted.
    assert [s.step for s in record.steps] == ["dataset", "standardize"]


def test_a_classification_set_with_one_positive_fails_before_featurizing(
    tmp_path: Path,
) -> None:
    line, record = _doomed(tmp_path, _esol_as_classes(40, positives=1))
    assert "1 positive and 39 negative labels" in line and "at least 2 of each" in line
    assert [s.step for s in record.steps] == ["dataset", "standardize"]


def test_a_rejected_estimator_parameter_fails_before_featurizing(tmp_path: Path) -> None:
    esol = pd.read_csv(io.BytesIO(read_raw("esol").data)).head(40)
    line, record = _doomed(
        tmp_path, esol, model={"estimator": "random_forest", "params": {"n_trees": 5}}
    )
    assert "n_trees" in line
    assert [s.step for s in record.steps] == ["dataset", "standardize"]
