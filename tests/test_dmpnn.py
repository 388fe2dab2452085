"""Tests for the D-MPNN (`model: dmpnn`): tasks, ensembles, determinism, saving, the pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from qemlflow.data import load_dataset
from qemlflow.errors import ConfigError, DataError, FeaturizerError
from qemlflow.features import SmilesColumn, make_featurizer
from qemlflow.models import DMPNN, MolecularModel, make_model
from qemlflow.pipeline.config import parse_config
from qemlflow.pipeline.predictor import Predictor, dump_predictor
from qemlflow.pipeline.steps import ArrayCodec

# A tiny network: the behaviour under test does not depend on the model's size.
TINY: dict[str, Any] = {
    "epochs": 3,
    "hidden_size": 24,
    "ffn_hidden_size": 24,
    "depth": 2,
    "batch_size": 16,
    "descriptors": "none",
}


@pytest.fixture(scope="module")
def esol() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("esol")
    X = make_featurizer("smiles").transform(data.smiles[:120])
    return X, data.y[:120, 0]


@pytest.fixture(scope="module")
def bbbp() -> tuple[np.ndarray, np.ndarray]:
    data = load_dataset("bbbp")
    rows = np.random.default_rng(0).permutation(len(data))[:100]
    X = make_featurizer("smiles").transform([data.smiles[i] for i in rows])
    return X, data.y[rows, 0]


def fitted(
    X: np.ndarray, y: np.ndarray, task: str = "regression", seed: int = 0, **params: Any
) -> MolecularModel:
    model = make_model("dmpnn", task, params={**TINY, **params}, random_state=seed)  # type: ignore[arg-type]
    return model.fit(X[:80], y[:80], X_cal=X[80:100], y_cal=y[80:100])


# --------------------------------------------------------------------- the smiles column
def test_smiles_featurizer_gives_one_unicode_column_the_array_codec_keeps() -> None:
    X = SmilesColumn().transform(["CCO", "c1ccccc1", None])
    assert X.shape == (3, 1) and X.dtype.kind == "U"
    assert X[:, 0].tolist() == ["CCO", "c1ccccc1", ""]
    for array in (X, np.empty((0, 1), dtype="<U1"), np.array([["C[N+](C)(C)Cé"]])):
        decoded = ArrayCodec().decode(ArrayCodec().encode(array))
        assert decoded.dtype == array.dtype and np.array_equal(decoded, array)
    assert make_featurizer(SmilesColumn().to_spec()).to_spec() == {"type": "smiles", "n_jobs": 1}


def test_smiles_column_cannot_join_numeric_features() -> None:
    with pytest.raises(FeaturizerError, match="cannot be combined"):
        make_featurizer(["smiles", "ecfp"])
    with pytest.raises(FeaturizerError, match="cannot be combined"):
        make_featurizer({"type": "concat", "featurizers": ["rdkit2d", "smiles"]})


# --------------------------------------------------------------------- tasks
def test_regression_gives_predictions_and_conformal_intervals(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    model = fitted(X, y)
    pred = model.predict(X[100:])
    lower, upper = model.predict_interval(X[100:])
    assert pred.shape == lower.shape == upper.shape == (20,)
    assert np.all(np.isfinite(pred)) and np.all(lower < pred) and np.all(pred < upper)
    # 20 calibration molecules are under 50: cross-conformal over train + calibration.
    assert model.n_calibration_per_task_ == [100] and model.n_features_in_ == 1
    assert model.interval_methods_ == ["cross_conformal"]
    # Predictions are in the units of y, not the standardized ones the network learns.
    assert abs(float(pred.mean()) - float(y[:80].mean())) < 2 * float(y[:80].std())
    record = model.describe()
    assert record["estimator"] == "dmpnn" and record["model_class"] == "DMPNN"
    assert {"torch", "chemprop"} <= set(record["versions"])
    json.dumps(record)


def test_classification_gives_calibrated_probabilities(
    bbbp: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = bbbp
    # With descriptors the tiny network ranks the calibration molecules the right way
    # round; a network that ranks them backwards is left uncalibrated (test_models.py).
    model = fitted(X, y, task="classification", descriptors="rdkit2d")
    proba = model.predict_positive(X[80:])
    assert proba.ndim == 1 and np.all((proba >= 0) & (proba <= 1))
    assert model.calibration_methods_ == ["sigmoid"]
    np.testing.assert_array_equal(model.predict_proba(X[80:])[:, 1], proba)
    np.testing.assert_array_equal(model.predict(X[80:]), proba >= 0.5)
    assert not hasattr(model, "predict_interval")


def test_one_network_learns_every_task_with_missing_labels(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    rng = np.random.default_rng(0)
    Y = np.column_stack([y, 0.5 * y + rng.normal(0, 0.1, len(y))])
    Y[rng.random(Y.shape) < 0.3] = np.nan
    model = fitted(X, Y)
    assert len(model.estimators_) == 1  # one joint network, not one per task
    assert model.estimators_[0].n_tasks_ == 2
    assert model.n_train_per_task_ == [int((~np.isnan(Y[:80, t])).sum()) for t in (0, 1)]
    pred = model.predict(X[100:])
    lower, upper = model.predict_interval(X[100:])
    assert pred.shape == lower.shape == (20, 2) and np.all(np.isfinite(pred))
    assert np.all(upper - lower > 0) and model.conformal_quantiles_.shape == (2,)

    labels = (np.nanmedian(Y, axis=0) < Y).astype(float)
    labels[np.isnan(Y)] = np.nan
    classifier = fitted(X, labels, task="classification")
    assert classifier.predict_positive(X[100:]).shape == (20, 2)
    assert [p.shape for p in classifier.predict_proba(X[100:])] == [(20, 2), (20, 2)]
    assert len(classifier.calibrators_) == 2


def test_sparse_tasks_are_not_modelled_instead_of_crashing_the_joint_fit(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    labels = (y > np.median(y)).astype(float)
    Y = np.column_stack([labels, labels, labels])
    Y[:80, 1] = np.nan  # no training label at all (labels only in the calibration part)
    Y[:80, 2] = 1.0  # one class in training
    with pytest.warns(UserWarning, match=r"2 task\(s\) not modelled"):
        classifier = fitted(X, Y, task="classification")
    assert classifier.tasks_not_modelled_ == {
        1: "no labels in the training part",
        2: "every training label is 1 (80 positives, no negatives)",
    }
    proba = classifier.predict_positive(X[100:])
    assert np.all(np.isfinite(proba)) and len(np.unique(proba[:, 0])) > 1
    # A task not modelled predicts one constant, its smoothed prior, for every molecule.
    assert len(np.unique(proba[:, 1])) == 1 and len(np.unique(proba[:, 2])) == 1

    with pytest.raises(DataError, match="task 1 has no labels in the training part"):
        fitted(X, np.where(np.isnan(Y), np.nan, y[:, None]))


def test_without_a_calibration_set_out_of_fold_predictions_calibrate(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    model = make_model("dmpnn", "regression", params={**TINY, "epochs": 1}).fit(X[:60], y[:60])
    assert model.calibration_source_ == "cross_validation"
    assert model.n_calibration_per_task_ == [60]
    assert np.isfinite(model.conformal_quantiles_[0])


def test_an_ensemble_reports_its_spread(esol: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = esol
    single = fitted(X, y)
    ensemble = fitted(X, y, ensemble_size=3)
    assert len(ensemble.estimators_[0].members_) == 3
    spread = ensemble.predict_spread(X[100:])
    assert spread.shape == (20,) and np.all(spread > 0)
    assert np.all(single.predict_spread(X[100:]) == 0)
    mean, std = ensemble.estimators_[0].predict(X[100:], return_std=True)  # y was (n, 1)
    np.testing.assert_array_equal(mean[:, 0], ensemble.predict(X[100:]))
    np.testing.assert_array_equal(std[:, 0], spread)


def test_rdkit_descriptors_join_the_learned_fingerprint(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    model = fitted(X, y, descriptors="rdkit2d")
    network = model.estimators_[0]
    n_descriptors = len(make_featurizer("rdkit2d").get_feature_names_out())
    assert network.descriptor_center_.shape == (n_descriptors,)
    first_layer = next(v for k, v in network.members_[0].items() if k.startswith("predictor.ffn"))
    assert first_layer.shape[1] == TINY["hidden_size"] + n_descriptors
    assert np.all(np.isfinite(model.predict(X[100:])))


# --------------------------------------------------------------------- determinism, saving
def test_same_seed_identical_predictions_and_model_bytes(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    first, second = fitted(X, y, seed=3), fitted(X, y, seed=3)
    other = fitted(X, y, seed=4)
    assert np.array_equal(first.predict(X), second.predict(X))
    assert not np.array_equal(first.predict(X), other.predict(X))

    def digest(model: MolecularModel) -> str:
        predictor = Predictor(model, {"type": "smiles"}, "regression", ["logS"], versions={})
        return hashlib.sha256(dump_predictor(predictor)).hexdigest()

    assert digest(first) == digest(second) != digest(other)


def test_fit_leaves_torch_settings_as_it_found_them(esol: tuple[np.ndarray, np.ndarray]) -> None:
    import torch

    X, y = esol
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DMPNN(**{**TINY, "epochs": 1}, n_jobs=1).fit(X[:30], y[:30]).predict(X[:5])
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_saved_model_predicts_the_same_in_a_fresh_process(
    esol: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = esol
    model = fitted(X, y, ensemble_size=2)
    predictor = Predictor(model, {"type": "smiles"}, "regression", ["logS"])
    state = model.estimators_[0].__getstate__()
    assert "_network_cache" not in state  # torch modules are never pickled
    path = predictor.save(tmp_path / "model.joblib")
    smiles = X[100:, 0].tolist()
    expected = predictor.predict(smiles)
    script = (
        "import json, sys\n"
        "from qemlflow.pipeline.predictor import load_model\n"
        "table = load_model(sys.argv[1]).predict(json.loads(sys.argv[2]))\n"
        "print(json.dumps([table['prediction'].tolist(), table['upper'].tolist()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), json.dumps(smiles)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    prediction, upper = json.loads(done.stdout)
    assert prediction == expected["prediction"].tolist()
    assert upper == expected["upper"].tolist()


# --------------------------------------------------------------------- errors
def test_bad_inputs_and_parameters_are_one_line_errors(
    esol: tuple[np.ndarray, np.ndarray],
) -> None:
    X, y = esol
    with pytest.raises(DataError, match="cannot be read as a molecular graph"):
        make_model("dmpnn", "regression", params=TINY).fit(
            np.array([["CCO"], ["C1CC"]] * 5), y[:10]
        )
    with pytest.raises(DataError, match="one column of SMILES"):
        make_model("dmpnn", "regression", params=TINY).fit(np.zeros((10, 3)), y[:10])
    with pytest.raises(ConfigError, match="epochs"):
        make_model("dmpnn", "regression", params={"epochs": 0}).fit(X[:10], y[:10])
    with pytest.raises(ConfigError, match="descriptors"):
        make_model("dmpnn", "regression", params={"descriptors": "mordred"}).fit(X[:10], y[:10])
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_model("dmpnn", "regression", params={"n_estimators": 5})


def test_without_chemprop_the_dmpnn_asks_for_the_gnn_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "chemprop", None)
    with pytest.raises(ConfigError) as error:
        make_model("dmpnn", "regression")
    assert str(error.value) == (
        "the D-MPNN needs chemprop and torch; install them with "
        "`pip install torch && pip install 'qemlflow[gnn]'`"
    )


def test_importing_qemlflow_does_not_import_torch() -> None:
    code = (
        "import sys, qemlflow, qemlflow.models, qemlflow.pipeline, qemlflow.cli.main\n"
        "from qemlflow.pipeline.config import parse_config\n"
        "parse_config({'dataset': {'source': 'esol'}, 'model': 'dmpnn'})\n"
        "print(sorted(m for m in ('torch', 'chemprop', 'lightning') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------- configuration
def test_config_shorthand_and_default_features() -> None:
    cfg = parse_config({"dataset": {"source": "esol"}, "model": "dmpnn"})
    assert cfg.model.estimator == "dmpnn" and cfg.features == "smiles"
    assert cfg.resolved()["features"] == {"type": "smiles"}
    classical = parse_config({"dataset": {"source": "esol"}, "model": "svm"})
    assert classical.model.estimator == "svm" and classical.features != "smiles"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model": "dmpnn", "features": "ecfp"}, "reads molecules as graphs"),
        ({"model": {"estimator": "lightgbm"}, "features": "smiles"}, "gives no numbers"),
        ({"features": "smiles"}, "gives no numbers"),
    ],
)
def test_mismatched_model_and_features_are_config_errors(
    config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"dataset": {"source": "esol"}, **config})


# --------------------------------------------------------------------- the pipeline
def test_qemlflow_run_trains_a_dmpnn(tmp_path: Path, esol_frame: Any) -> None:
    data = tmp_path / "esol.csv"
    esol_frame.head(120).to_csv(data, index=False)
    config = {
        "dataset": {"source": str(data)},
        "model": {"estimator": "dmpnn", "params": {**TINY, "ensemble_size": 2}},
        "evaluation": {"n_bootstrap": 20, "plots": False},
    }
    path = tmp_path / "dmpnn.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = subprocess.run(
            [sys.executable, "-m", "qemlflow", "run", str(path), "--out", str(out)],
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["test"]["rmse"]) and metrics["interval"]["test_mean_width"] > 0
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["features"] == {"type": "smiles"}
    assert resolved["model"]["estimator"] == "dmpnn"
