"""End-to-end experiments: run, outputs on disk, determinism, and re-scoring saved models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.bundled import bundled_csv

import qemlflow as qm
from qemlflow.errors import ConfigError
from qemlflow.pipeline import load_config, load_model, parse_config, run
from qemlflow.pipeline.predict import predict_file
from qemlflow.store import Store

FAST_FEATURES = [{"type": "ecfp", "radius": 2, "size": 1024, "counts": True}]


def _config(source: Path | str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "test",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": FAST_FEATURES,
        "model": {"estimator": "random_forest", "params": {"n_estimators": 50}},
        "evaluation": {"n_bootstrap": 100},
    }
    config.update(overrides)
    return config


def test_run_writes_every_output(tmp_path: Path, small_esol_csv: Path) -> None:
    out = tmp_path / "out"
    result = run(_config(small_esol_csv), out)

    assert {p.name for p in out.iterdir()} >= {
        "config.yaml",
        "metrics.json",
        "predictions.csv",
        "rejected.csv",
        "model.joblib",
        "parity.png",
        "run.json",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"rmse", "mae", "r2", "spearman"}
    assert 0 < metrics["test"]["rmse"] < 2.0
    low, high = metrics["ci95"]["test"]["rmse"]
    assert low <= metrics["test"]["rmse"] <= high
    assert metrics["n"]["test"] == len(result.split.test)
    assert 0.5 <= metrics["interval"]["test_coverage"] <= 1.0

    predictions = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    source = pd.read_csv(small_esol_csv, keep_default_na=False)
    assert len(predictions) == len(source)
    assert predictions["smiles"].tolist() == source["smiles"].astype(str).tolist()
    rejected = predictions[predictions["split"] == "rejected"]
    # 100, 101: the bad rows of the fixture; 148, 175: methanol and iodomethane, under the
    # chemistry policy's size floor of 3 heavy atoms.
    assert rejected["row"].tolist() == [100, 101, 148, 175]
    assert rejected["error"].str.startswith(("unparsable", "empty", "parent_too_small")).all()
    assert (predictions.loc[predictions["split"] != "rejected", "error"] == "").all()
    assert set(predictions["split"]) == {"train", "valid", "test", "rejected"}

    rejected_file = pd.read_csv(out / "rejected.csv")
    assert len(rejected_file) == 4
    assert png_ok(out / "parity.png")


def png_ok(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_same_config_and_seed_give_byte_identical_predictions(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    config = _config(
        small_esol_csv, model={"estimator": "lightgbm", "params": {"n_estimators": 60}}
    )
    run(config, tmp_path / "a")
    run(config, tmp_path / "b")
    first = (tmp_path / "a" / "predictions.csv").read_bytes()
    assert first == (tmp_path / "b" / "predictions.csv").read_bytes()
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (
        tmp_path / "b" / "metrics.json"
    ).read_bytes()


def test_a_different_seed_changes_the_split(tmp_path: Path, small_esol_csv: Path) -> None:
    a = run(_config(small_esol_csv, seed=0))
    b = run(_config(small_esol_csv, seed=1))
    assert not np.array_equal(a.split.test, b.split.test)


def test_saved_model_scores_exactly_like_the_run(tmp_path: Path, small_esol_csv: Path) -> None:
    out = tmp_path / "out"
    with Store.open(tmp_path / "store") as store:  # the store that knows the model file
        run(_config(small_esol_csv), out, store=store)
        in_run = pd.read_csv(out / "predictions.csv", keep_default_na=False)
        rescored = predict_file(out, small_esol_csv, tmp_path / "scored.csv", store=store)
    written = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
    assert list(written.columns[:2]) == ["smiles", "standardized_smiles"]
    assert {"prediction", "lower", "upper", "error"} <= set(written.columns)
    assert len(rescored) == len(in_run)
    ok = in_run["split"] != "rejected"
    np.testing.assert_array_equal(
        rescored.loc[ok, "prediction"].to_numpy(), in_run.loc[ok, "prediction"].astype(float)
    )
    assert (rescored.loc[~ok, "error"] != "").all()
    assert rescored.loc[~ok, "prediction"].isna().all()


def test_model_file_records_featurizer_and_versions(tmp_path: Path, small_esol_csv: Path) -> None:
    run(_config(small_esol_csv), tmp_path / "out")
    predictor = load_model(tmp_path / "out" / "model.joblib")
    assert predictor.feature_spec["type"] in {"ecfp", "concat"}
    assert {"rdkit", "scikit-learn", "numpy", "qemlflow"} <= set(predictor.versions)
    table = predictor.predict(["CCO", "not a molecule", None, "c1ccccc1O"])
    assert table["error"].tolist()[0] == ""
    assert table["error"].tolist()[1].startswith("unparsable")
    assert table["error"].tolist()[2].startswith("empty")
    assert np.isfinite(table["prediction"].to_numpy()[[0, 3]]).all()
    assert (table["lower"] <= table["prediction"]).all() or table["prediction"].isna().any()


def test_classification_run_gives_probabilities_and_roc(tmp_path: Path) -> None:
    frame = pd.read_csv(bundled_csv("bbbp")).head(300)
    path = tmp_path / "bbbp.csv"
    frame.to_csv(path, index=False)
    config = _config(path)
    config["dataset"] = {"source": str(path), "smiles_column": "smiles", "target_columns": "p_np"}
    config["split"] = {"method": "scaffold"}
    result = run(config, tmp_path / "out")
    assert result.dataset.task == "classification"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"roc_auc", "pr_auc", "mcc", "balanced_accuracy"}
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    probs = table["probability"].dropna()
    assert ((probs >= 0) & (probs <= 1)).all()
    assert set(table["prediction"].dropna().unique()) <= {0.0, 1.0}
    assert png_ok(tmp_path / "out" / "roc.png")


def test_multitask_run_keeps_molecules_with_missing_labels(tmp_path: Path) -> None:
    frame = pd.read_csv(bundled_csv("tox21")).head(400)
    path = tmp_path / "tox21.csv"
    frame.to_csv(path, index=False)
    targets = ["NR-AR", "NR-AhR", "SR-ARE"]
    config = _config(path)
    config["dataset"] = {"source": str(path), "smiles_column": "smiles", "target_columns": targets}
    result = run(config, tmp_path / "out")
    partly_missing = np.isnan(result.dataset.y).any(axis=1) & ~np.isnan(result.dataset.y).all(
        axis=1
    )
    assert partly_missing.sum() > 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    for target in targets:
        assert f"probability_{target}" in table.columns
        assert f"label_{target}" in table.columns
    assert set(result.metrics["per_task"]["test"]) == set(targets)


def test_python_api_matches_the_cli_building_blocks(small_esol_csv: Path) -> None:
    dataset = qm.load_dataset(small_esol_csv, smiles_column="smiles", target_columns=["logp"])
    X = qm.featurize(dataset.smiles, FAST_FEATURES)
    assert X.shape == (len(dataset), 1024)
    parts = qm.split("random", n=len(dataset), seed=0)
    assert len(parts.train) + len(parts.valid) + len(parts.test) == len(dataset)
    result = qm.run(_config(small_esol_csv))
    assert result.out_dir is None
    assert result.metrics["test"]["rmse"] > 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"dataset": {"source": "esol"}, "modle": {}}, "unknown key 'modle'"),
        ({"dataset": {"source": "esol", "smile": "x"}}, "allowed keys here: source"),
        ({"dataset": {"source": "esol"}, "split": {"method": "time"}}, "'random'"),
        ({"dataset": {"source": "esol"}, "split": {"sizes": [0.5, 0.5, 0.5]}}, "sum"),
        ({"features": "ecfp"}, "missing required key 'dataset'"),
        ({"dataset": {"source": "esol"}, "model": {"estimator": "xgb"}}, "'lightgbm'"),
        ({"dataset": {"source": "esol"}, "features": {"type": "nope"}}, "nope"),
        (["not", "a", "mapping"], "not a mapping"),
    ],
)
def test_config_errors_name_the_key_and_the_allowed_values(data: Any, expected: str) -> None:
    with pytest.raises(qm.QeMLflowError) as info:
        parse_config(data)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_resolved_config_fills_defaults() -> None:
    resolved = parse_config({"dataset": {"source": "esol"}}).resolved()
    assert resolved["model"]["estimator"] == "lightgbm"
    assert resolved["split"]["sizes"] == [0.8, 0.1, 0.1]
    assert resolved["features"]["type"] == "concat"
