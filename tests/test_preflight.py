"""A doomed experiment stops before featurizing and fitting, with one line naming the
problem and its fix: folds that cannot be filled, a class too rare to learn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import qemlflow as qm
from qemlflow.pipeline.preflight import PreflightError

SMILES = [
    "CCO", "CCN", "CCC", "CCCl", "CCBr", "CC(C)O", "CCOC", "CCCO", "CCCN", "CCCC",
    "c1ccccc1", "c1ccncc1", "c1ccoc1", "c1ccsc1", "CC(=O)O", "CC(=O)N", "CC#N", "C1CCCC1",
    "C1CCCCC1", "C1CCNCC1", "OCCO", "NCCN", "CC(C)C", "CC(C)N", "COC(=O)C", "CCOCC",
]  # fmt: skip


def _run(tmp_path: Path, labels: dict[str, list[float]], **changes: Any) -> None:
    frame = pd.DataFrame({"smiles": SMILES, **labels})
    source = tmp_path / "data.csv"
    frame.to_csv(source, index=False)
    config: dict[str, Any] = {
        "name": "preflight",
        "dataset": {
            "source": str(source),
            "smiles_column": "smiles",
            "target_columns": list(labels),
            "task": "classification",
        },
        "features": [{"type": "ecfp", "size": 256}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 5}},
        "evaluation": {"n_bootstrap": 10, "plots": False},
        **changes,
    }
    qm.run(config, tmp_path / "run")


def _labels(positives: int) -> list[float]:
    return [1.0] * positives + [0.0] * (len(SMILES) - positives)


def test_more_folds_than_molecules(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"k=30 needs at least 30 molecules.*has 26") as e:
        _run(tmp_path, {"active": _labels(10)}, split={"method": "kfold", "k": 30})
    assert e.value.fix == "use k <= 26"
    assert not (tmp_path / "run" / "model.joblib").exists()


def test_folds_that_would_hold_no_positive(tmp_path: Path) -> None:
    with pytest.raises(
        PreflightError, match="has only 3 positives: some folds would hold none"
    ) as e:
        _run(tmp_path, {"active": _labels(3)}, split={"method": "kfold", "k": 5})
    assert e.value.fix == "use k <= 3, or add molecules of that class"
    with pytest.raises(PreflightError, match="has only 1 negatives") as e:
        _run(tmp_path, {"active": [1.0] * 25 + [0.0]}, split={"method": "kfold", "k": 5})
    assert "cross-validation needs 2 of each" in e.value.fix


def test_a_class_too_rare_to_learn(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="has 1 positive and 25 negative labels"):
        _run(tmp_path, {"active": _labels(1)})
    with pytest.raises(PreflightError, match=r"none of the 2 tasks .* has 2 labelled molecules"):
        _run(tmp_path, {"a": _labels(1), "b": _labels(0)})
