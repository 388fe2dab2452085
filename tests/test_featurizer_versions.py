"""A fixed featurizer invalidates what it computed, and only that.

Each featurizer has a code version (``Featurizer.code_version``, 1 until a fix changes its
output). Above 1 it is named in the keys of the steps that compute with it, in benchmark
digests and in model files; these tests bump one (ErG) the way a fix would and check that
its features, its fits and its benchmark cells are recomputed while every other
featurizer's stay cached, and that a model file fitted before the fix warns when loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

import qemlflow as qm
from qemlflow.benchmark.runner import config_digest
from qemlflow.features import ECFP, ErG, make_featurizer
from qemlflow.features.spec import code_versions
from qemlflow.models.ensemble import ensemble_runtime
from qemlflow.pipeline.config import parse_config
from qemlflow.pipeline.predictor import load_model
from qemlflow.store import Store

_ECFP = {"type": "ecfp", "radius": 2, "size": 256, "counts": True}
_ERG = {"type": "erg"}


def _config(source: Path, features: Any, model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "featurizer-versions",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": features,
        "model": model or {"estimator": "random_forest", "params": {"n_estimators": 10}},
        "evaluation": {"n_bootstrap": 0, "plots": False},
    }


def test_only_a_fixed_featurizer_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    both = [_ECFP, _ERG]
    assert make_featurizer(both).code_versions() == {} == code_versions(both, None)
    monkeypatch.setattr(ErG, "code_version", 2)
    assert ErG().code_versions() == {"featurizer:erg": "2"}
    assert make_featurizer(both).code_versions() == {"featurizer:erg": "2"}
    assert code_versions(_ECFP, [_ECFP, [_ERG]]) == {"featurizer:erg": "2"}  # nested concat
    assert ECFP().code_versions() == {}
    # An ensemble computes its members' own features inside its fit: its key names them.
    members = {"members": [{"estimator": "lightgbm", "features": both}, {"estimator": "dmpnn"}]}
    runtime = ensemble_runtime(members, 1)
    assert runtime["featurizer:erg"] == "2" and runtime["runtime:device"] == "cpu"
    members["members"][0]["features"] = [_ECFP]
    assert "featurizer:erg" not in ensemble_runtime(members, 1)


def test_a_fix_recomputes_its_features_and_fits_and_keeps_the_rest_cached(
    store: Store, small_esol_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_erg = _config(small_esol_csv, [_ECFP, _ERG])
    without = _config(small_esol_csv, [_ECFP])
    before = qm.run(with_erg, tmp_path / "a", store=store)
    qm.run(without, tmp_path / "b", store=store)

    monkeypatch.setattr(ErG, "code_version", 2)
    after = qm.run(with_erg, tmp_path / "c", store=store)
    assert after.cache_hits == ["dataset", "standardize", "split"]
    featurize = next(s for s in after.steps if s.step == "featurize")
    assert featurize.libraries["featurizer:erg"] == "2"
    assert featurize.key != next(s.key for s in before.steps if s.step == "featurize")
    # Another featurizer's features and fits are still the cached ones.
    untouched = qm.run(without, tmp_path / "d", store=store)
    assert set(untouched.cache_hits) == {s.step for s in untouched.steps}
    # The step record keeps the map, so the key can be recomputed from the record alone.
    record = store.get_step(featurize.key)
    assert record is not None and record.libraries == featurize.libraries


def test_a_fix_changes_the_benchmark_digests_of_its_cells_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = {"source": "esol"}
    erg_cfg = parse_config({"dataset": dataset, "features": [_ECFP, _ERG]})
    member_cfg = parse_config(
        {
            "dataset": dataset,
            "features": "smiles",
            "model": {
                "estimator": "ensemble",
                "combine": "mean",
                "members": [
                    {"estimator": "lightgbm", "features": [_ERG]},
                    {"estimator": "knn", "features": [_ECFP]},
                ],
            },
        }
    )
    ecfp_cfg = parse_config({"dataset": dataset, "features": [_ECFP]})
    digests = [config_digest(c) for c in (erg_cfg, member_cfg, ecfp_cfg)]
    monkeypatch.setattr(ErG, "code_version", 2)
    assert member_cfg.featurizer_versions() == {"featurizer:erg": "2"}
    fixed = [config_digest(c) for c in (erg_cfg, member_cfg, ecfp_cfg)]
    assert fixed[0] != digests[0] and fixed[1] != digests[1]
    assert fixed[2] == digests[2]


def test_a_model_fitted_before_a_fix_warns_when_loaded(
    small_esol_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qm.run(_config(small_esol_csv, [_ECFP, _ERG]), tmp_path / "old")
    model_file = tmp_path / "old" / "model.joblib"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same code: it loads silently
        load_model(model_file)

    monkeypatch.setattr(ErG, "code_version", 2)
    with pytest.warns(RuntimeWarning, match=r"featurizer:erg 1 -> 2.*refit"):
        load_model(model_file)
    # Fitted after the fix, the file records the version and loads silently...
    qm.run(_config(small_esol_csv, [_ECFP, _ERG]), tmp_path / "new")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = load_model(tmp_path / "new" / "model.joblib")
    assert fixed.versions["featurizer:erg"] == "2"
    # ... until the code goes back to the version before the fix.
    monkeypatch.setattr(ErG, "code_version", 1)
    with pytest.warns(RuntimeWarning, match=r"featurizer:erg 2 -> 1"):
        load_model(tmp_path / "new" / "model.joblib")
