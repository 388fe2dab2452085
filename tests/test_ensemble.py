"""``estimator: ensemble``: averaged and stacked members, their spread as ``ensemble_sd``.

Small data and small members throughout (a 20-tree forest, ridge, Tanimoto kNN; one tiny
D-MPNN), through the real pipeline, the real CLI, a real screen and a real server.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.model_selection import KFold

import qemlflow as qm
from qemlflow import registry
from qemlflow.cli.main import main
from qemlflow.errors import ConfigError
from qemlflow.models import MolecularModel, make_model
from qemlflow.models.dmpnn import gnn_available
from qemlflow.models.ensemble import Ensemble
from qemlflow.pipeline.config import parse_config
from qemlflow.pipeline.predictor import load_model
from qemlflow.pipeline.reproduce import reproduce
from qemlflow.screen import screen
from qemlflow.store import Store

FOREST = {"estimator": "random_forest", "params": {"n_estimators": 20}}
MEMBERS: list[dict[str, Any]] = [FOREST, {"estimator": "linear"}, {"estimator": "knn"}]


def regression_data(n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 8))
    return X, 3 * X[:, 0] - 2 * X[:, 1] + rng.normal(0, 0.1, n)


def _config(source: Path, model: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "name": "ensemble-test",
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": [{"type": "ecfp", "size": 512, "counts": True}],
        "model": model,
        "evaluation": {"n_bootstrap": 20, "plots": False},
        **changes,
    }


# --------------------------------------------------------------------- the estimator
@pytest.mark.parametrize("combine", ["mean", "stacking"])
def test_regression_ensemble_predicts_with_spread_and_intervals(combine: str) -> None:
    X, y = regression_data()
    model = make_model("ensemble", "regression", params={"members": MEMBERS, "combine": combine})
    model.fit(X[:60], y[:60], X[60:80], y[60:80])
    values, spread = model.predict_with_spread(X[80:])
    lower, upper = model.predict_interval(X[80:])
    np.testing.assert_array_equal(values, model.predict(X[80:]))
    np.testing.assert_array_equal(spread, model.predict_spread(X[80:]))
    assert values.shape == spread.shape == lower.shape == (10,)
    assert np.all(spread >= 0) and np.all(spread > 0)  # three different models disagree
    assert np.all(lower <= values) and np.all(values <= upper)
    members = model.estimators_[0].member_predictions(X[80:])
    assert members.shape == (3, 10, 1)
    np.testing.assert_allclose(spread, members[:, :, 0].std(axis=0))
    if combine == "mean":
        np.testing.assert_allclose(values, members[:, :, 0].mean(axis=0))
    else:  # the meta-model is not the average: it weighs the (linear) truth's member up
        assert not np.allclose(values, members[:, :, 0].mean(axis=0))
        assert model.score(X[80:], y[80:]) > 0.8


@pytest.mark.parametrize("combine", ["mean", "stacking"])
def test_classification_ensemble_averages_probabilities(combine: str) -> None:
    X, y = regression_data(120)
    labels = (y > np.median(y)).astype(int)
    model = MolecularModel(
        "ensemble", "classification", params={"members": MEMBERS, "combine": combine}
    ).fit(X[:100], labels[:100])
    proba, spread = model.predict_with_spread(X[100:])
    np.testing.assert_array_equal(proba, model.predict_positive(X[100:]))
    assert np.all((proba >= 0) & (proba <= 1)) and np.all(spread >= 0)
    raw = model.estimators_[0].member_predictions(X[100:])[:, :, 0]  # probabilities
    assert np.all((raw >= 0) & (raw <= 1))
    np.testing.assert_allclose(spread, raw.std(axis=0))
    assert model.score(X[100:], labels[100:]) >= 0.7


def test_identical_members_have_no_spread() -> None:
    X, y = regression_data()
    twins = [{"estimator": "linear"}, {"estimator": "linear"}]
    model = MolecularModel("ensemble", params={"members": twins}).fit(X[:60], y[:60])
    assert np.all(model.predict_spread(X[60:]) == 0.0)


def test_members_are_seeded_from_the_ensemble_seed() -> None:
    X, y = regression_data()
    forests = [FOREST, FOREST]
    first = Ensemble(forests, random_state=3).fit(X[:60], y[:60])
    again = Ensemble(forests, random_state=3).fit(X[:60], y[:60])
    np.testing.assert_array_equal(first.predict(X[60:]), again.predict(X[60:]))
    seeds = [m[0].random_state for m in first.models_]
    assert seeds == [3, 4]  # seed + index: two forests, two different forests
    assert np.all(first.predict_tasks(X[60:])[1] > 0)


def test_stacking_learns_from_out_of_fold_predictions_only() -> None:
    X, y = regression_data(60)
    ensemble = Ensemble(MEMBERS, combine="stacking", folds=4, random_state=0).fit(X, y)
    oof = ensemble.oof_predictions_
    in_sample = ensemble.member_predictions(X)
    # A forest predicts its own training rows almost exactly: in-sample meta-features
    # would be much closer to the labels than out-of-fold ones.
    assert not np.allclose(oof[0, :, 0], in_sample[0, :, 0])
    oof_error = np.abs(oof[0, :, 0] - y).mean()
    in_sample_error = np.abs(in_sample[0, :, 0] - y).mean()
    assert oof_error > 1.5 * in_sample_error
    # Each row's meta-feature comes from a member fitted without that row.
    expected = np.empty(len(y))
    for train, held_out in KFold(4, shuffle=True, random_state=0).split(X):
        fold = MolecularModel("random_forest", params={"n_estimators": 20}, random_state=0)
        member = fold.fit(X[train], y[train])
        expected[held_out] = member.estimators_[0].predict(X[held_out])
    np.testing.assert_array_equal(oof[0, :, 0], expected)


def test_multi_task_with_missing_labels() -> None:
    X, y = regression_data(80)
    Y = np.column_stack([y, -y + 0.5 * X[:, 2]])
    Y[::4, 1] = np.nan
    model = MolecularModel("ensemble", params={"members": MEMBERS, "combine": "stacking"})
    model.fit(X[:60], Y[:60])
    values, spread = model.predict_with_spread(X[60:])
    assert values.shape == spread.shape == (20, 2)
    assert np.all(np.isfinite(values)) and np.all(spread >= 0)


def test_member_configuration_errors_name_the_member() -> None:
    for members, said in [
        ([FOREST], "at least 2 members"),
        ([FOREST, {"estimator": "ensemble"}], "itself an ensemble"),
        ([FOREST, {"estimator": "linear", "params": {"bogus": 1}}], "bogus"),
        ([FOREST, {"estimator": "linear", "params": {"random_state": 1}}], "random_state"),
        ([FOREST, {"estimator": "linear", "colour": "red"}], "colour"),
    ]:
        with pytest.raises(ConfigError, match=said):
            make_model("ensemble", "regression", params={"members": members})
    with pytest.raises(ConfigError, match="combine"):
        make_model("ensemble", "regression", params={"members": MEMBERS, "combine": "vote"})


# --------------------------------------------------------------------- the config
def test_config_validation_errors_are_one_line_with_the_fix() -> None:
    base = {"dataset": {"source": "esol"}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"estimator": "ensemble", "members": [FOREST]}, "at least 2"),
        ({"estimator": "lightgbm", "members": MEMBERS}, "only apply to estimator: ensemble"),
        ({"estimator": "ensemble", "members": MEMBERS, "combine": "vote"}, "combine"),
        ({"estimator": "ensemble", "members": [FOREST, {"estimator": "ensemble"}]}, "members"),
        (
            {"estimator": "ensemble", "members": MEMBERS, "params": {"members": MEMBERS}},
            "go under model",
        ),
    ]
    for model, said in cases:
        with pytest.raises(ConfigError, match=said) as caught:
            parse_config({**base, "model": model})
        assert "\n" not in str(caught.value)
    # A graph member makes the ensemble read SMILES: feature members need their own.
    graph = {"estimator": "dmpnn", "params": {"epochs": 1}}
    with pytest.raises(ConfigError, match="needs a feature matrix") as caught:
        parse_config({**base, "model": {"estimator": "ensemble", "members": [graph, FOREST]}})
    assert "features:" in str(caught.value)
    with pytest.raises(ConfigError, match="reads SMILES"):
        parse_config(
            {**base, "features": "ecfp", "model": {"estimator": "ensemble", "members": [graph] * 2}}
        )
    with pytest.raises(ConfigError, match="gives no numbers"):
        parse_config(
            {**base, "features": "smiles", "model": {"estimator": "ensemble", "members": MEMBERS}}
        )


def test_configs_without_an_ensemble_keep_their_resolved_form() -> None:
    plain = parse_config({"dataset": {"source": "esol"}, "model": {"estimator": "lightgbm"}})
    assert set(plain.resolved()["model"]) == {"estimator", "params", "coverage", "calibration"}
    assert plain.model.estimator_params() == {}
    ensemble = parse_config(
        {
            "dataset": {"source": "esol"},
            "model": {"estimator": "ensemble", "members": MEMBERS, "combine": "stacking"},
        }
    )
    resolved = ensemble.resolved()["model"]
    assert resolved["combine"] == "stacking"
    assert [m["estimator"] for m in resolved["members"]] == ["random_forest", "linear", "knn"]
    assert parse_config({**ensemble.resolved()}).resolved() == ensemble.resolved()


# --------------------------------------------------------------------- the pipeline
@pytest.fixture(scope="module")
def ensemble_run(
    tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame
) -> dict[str, Any]:
    """A stacked ensemble run on 120 ESOL molecules, recorded in a store and registered."""
    folder = tmp_path_factory.mktemp("ensemble")
    source = folder / "esol.csv"
    esol_frame.head(120).to_csv(source, index=False)
    model = {"estimator": "ensemble", "members": MEMBERS, "combine": "stacking"}
    config = _config(source, model)
    store_path = folder / "store"
    with Store.open(store_path) as store:
        result = qm.run(config, folder / "run", store=store)
        assert result.run_id is not None
        registry.register(store, result.run_id, "ens")
        registry.promote(store, "ens", 1, to="production")
        _, key = store.create_api_key("tests")
    return {
        "folder": folder,
        "run": folder / "run",
        "store": store_path,
        "key": key,
        "run_id": result.run_id,
        "config": config,
        "source": source,
    }


def test_predictions_csv_carries_ensemble_sd(ensemble_run: dict[str, Any]) -> None:
    table = pd.read_csv(ensemble_run["run"] / "predictions.csv")
    columns = table.columns.tolist()
    assert columns[columns.index("upper") + 1] == "ensemble_sd"
    scored = table[table["error"].isna()]
    assert len(scored) > 100 and (scored["ensemble_sd"] >= 0).all()
    assert scored["ensemble_sd"].gt(0).any()
    spread = json.loads((ensemble_run["run"] / "metrics.json").read_text())["ensemble_spread"]
    assert (
        spread["n"] == json.loads((ensemble_run["run"] / "metrics.json").read_text())["n"]["test"]
    )
    assert spread["mean_sd"] > 0 and -1 <= spread["sd_error_spearman"] <= 1
    saved = yaml.safe_load((ensemble_run["run"] / "config.yaml").read_text())
    assert saved["model"]["combine"] == "stacking" and len(saved["model"]["members"]) == 3


def test_an_ensemble_run_reproduces_identically(ensemble_run: dict[str, Any]) -> None:
    with Store.open(ensemble_run["store"]) as store:
        report = reproduce(store, ensemble_run["run_id"])
    assert report.identical, report.to_dict()


@pytest.mark.filterwarnings("ignore:the training molecules:UserWarning")  # no store: no domain
def test_qemlflow_predict_and_screen_write_ensemble_sd(
    ensemble_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    molecules = tmp_path / "new.csv"
    pd.DataFrame({"SMILES": ["CCO", "C1CC", "c1ccccc1O", "CCCCCCO"]}).to_csv(molecules)
    scored = tmp_path / "scored.csv"
    store = ["--store", str(ensemble_run["store"])]
    assert (
        main(["predict", str(ensemble_run["run"]), str(molecules), "-o", str(scored), *store]) == 0
    )
    table = pd.read_csv(scored, keep_default_na=False)
    assert "ensemble_sd" in table.columns
    expected = load_model(ensemble_run["run"]).predict(["CCO", "C1CC", "c1ccccc1O", "CCCCCCO"])
    np.testing.assert_allclose(
        pd.to_numeric(table["ensemble_sd"]).to_numpy(), expected["ensemble_sd"].to_numpy()
    )
    assert table["ensemble_sd"][1] == ""  # invalid molecule: no spread either
    out = screen(
        ensemble_run["run"] / "model.joblib",
        molecules,
        tmp_path / "screened.csv",
        trust_file=True,
    )
    screened = pd.read_csv(out.output)
    assert "ensemble_sd" in screened.columns
    valid = screened[screened["error"].isna()]
    np.testing.assert_allclose(
        valid["ensemble_sd"].to_numpy(), expected["ensemble_sd"].dropna().to_numpy()
    )


def test_the_service_answers_with_ensemble_sd(ensemble_run: dict[str, Any]) -> None:
    from tests.test_serve import serving

    smiles = ["CCO", "c1ccccc1O", "C1CC"]
    expected = load_model(ensemble_run["run"]).predict(smiles)
    with Store.open(ensemble_run["store"]) as store, serving(store, "ens@production") as (url, _):
        response = httpx.post(
            f"{url}/predict",
            json={"smiles": smiles},
            headers={"Authorization": f"Bearer {ensemble_run['key']}"},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for row, want in zip(results, expected.itertuples(index=False), strict=True):
        if want.error:
            assert row["ensemble_sd"] is None
        else:
            assert row["ensemble_sd"] == want.ensemble_sd and row["ensemble_sd"] >= 0
            assert row["lower"] <= row["prediction"] <= row["upper"]


def test_other_models_outputs_are_unchanged(tmp_path: Path, esol_frame: pd.DataFrame) -> None:
    source = tmp_path / "esol.csv"
    esol_frame.head(60).to_csv(source, index=False)
    result = qm.run(_config(source, FOREST))
    assert "ensemble_sd" not in result.predictions.columns
    assert "ensemble_spread" not in result.metrics
    assert list(result.scores) == ["prediction", "lower", "upper"]


# --------------------------------------------------------------------- with the D-MPNN
@pytest.mark.skipif(not gnn_available(), reason="the D-MPNN needs torch and chemprop")
def test_an_ensemble_with_a_dmpnn_member_reads_smiles(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    source = tmp_path / "esol.csv"
    esol_frame.head(60).to_csv(source, index=False)
    tiny = {
        "epochs": 2,
        "hidden_size": 16,
        "ffn_hidden_size": 16,
        "depth": 2,
        "descriptors": "none",
        "device": "cpu",
    }
    model = {
        "estimator": "ensemble",
        "members": [
            {"estimator": "dmpnn", "params": tiny},
            {**FOREST, "features": [{"type": "ecfp", "size": 512, "counts": True}]},
        ],
        "combine": "mean",
    }
    config = _config(source, model)
    del config["features"]  # a graph member: the ensemble reads the SMILES column
    with Store.open(tmp_path / "store") as store:
        result = qm.run(config, tmp_path / "run", store=store)
        assert result.config.features == "smiles"
        spread = result.scores["ensemble_sd"]
        assert np.all(np.isfinite(spread)) and np.all(spread > 0)
        report = reproduce(store, result.run_id or "")
    assert report.identical, report.to_dict()
    fit = next(s for s in result.steps if s.step == "fit")
    assert "torch" in fit.libraries and "runtime:device" in fit.libraries
    assert math.isfinite(float(result.metrics["test"]["rmse"]))


def test_a_kfold_ensemble_run_scores_out_of_fold_spread(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    source = tmp_path / "esol.csv"
    esol_frame.head(40).to_csv(source, index=False)
    model = {"estimator": "ensemble", "members": [{"estimator": "linear"}, {"estimator": "knn"}]}
    result = qm.run(_config(source, model, split={"method": "kfold", "k": 3}))
    spread = result.predictions["ensemble_sd"]
    assert spread.notna().sum() == 40 and (spread[spread.notna()] > 0).all()
    assert result.metrics["ensemble_spread"]["n"] == 40


def test_parameters_round_trip_through_clone() -> None:
    from sklearn.base import clone

    ensemble = Ensemble(MEMBERS, combine="stacking", folds=3, random_state=7)
    copy = clone(ensemble)
    assert copy.get_params() == ensemble.get_params()
    assert copy.members == MEMBERS and not hasattr(copy, "models_")
