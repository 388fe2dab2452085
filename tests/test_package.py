"""The package surface: lazy imports, the public names, saved-model safety checks."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import pandas as pd
import pytest

import qemlflow as qm
from qemlflow.errors import DataError, ModelError
from qemlflow.pipeline.predict import find_smiles_column


def test_import_loads_no_heavy_library() -> None:
    code = (
        "import sys, qemlflow\n"
        "heavy = {'rdkit', 'sklearn', 'lightgbm', 'pandas', 'numpy', 'matplotlib', 'pydantic'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_public_names_resolve_lazily() -> None:
    for name in qm.__all__:
        assert getattr(qm, name) is not None
    assert callable(qm.split) and callable(qm.evaluate) and callable(qm.run)
    assert "load_dataset" in dir(qm)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = qm.nope  # type: ignore[attr-defined]


def test_split_and_evaluate_stay_functions_after_their_modules_load() -> None:
    import qemlflow.evaluation
    import qemlflow.splits  # noqa: F401

    assert callable(qm.split) and callable(qm.evaluate)


def test_model_file_from_elsewhere_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "model.joblib"
    joblib.dump({"weights": [1, 2, 3]}, foreign)
    with pytest.raises(ModelError, match="not a QeMLflow model"):
        qm.load_model(foreign)
    garbage = tmp_path / "garbage.joblib"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(ModelError, match="not a QeMLflow model"):
        qm.load_model(garbage)


def test_library_drift_is_reported_when_loading(tmp_path: Path, small_esol_csv: Path) -> None:
    config = {
        "dataset": {"source": str(small_esol_csv), "target_columns": ["logp"]},
        "features": {"type": "ecfp", "size": 512},
        "model": {"estimator": "linear"},
        "evaluation": {"n_bootstrap": 0, "plots": False},
    }
    result = qm.run(config, tmp_path / "out")
    result.predictor.versions["scikit-learn"] = "0.0.1"
    result.predictor.save(tmp_path / "old.joblib")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qm.load_model(tmp_path / "old.joblib")
    assert any("scikit-learn 0.0.1 ->" in str(w.message) for w in caught)


def test_smiles_column_detection() -> None:
    frame = pd.DataFrame({"id": [1], "structure": ["C"]})
    assert find_smiles_column(frame, "structure", "f.csv") == "structure"
    assert find_smiles_column(pd.DataFrame({"x": ["C"]}), None, "f.csv") == "x"
    with pytest.raises(DataError, match="no SMILES column found"):
        find_smiles_column(frame, None, "f.csv")
    with pytest.raises(DataError, match="'smile' not found"):
        find_smiles_column(frame, "smile", "f.csv")


def test_installed_metadata_carries_the_one_version() -> None:
    """The version is written once (qemlflow/_version.py); the distribution's metadata, the
    CLI and the environment record all report it."""
    import tomllib
    from importlib.metadata import version

    from qemlflow._version import __version__
    from qemlflow.store.environment import capture_environment

    assert version("qemlflow") == qm.__version__ == __version__
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    done = subprocess.run(
        [sys.executable, "-m", "qemlflow", "--version"], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"qemlflow {__version__}"
    assert capture_environment()["qemlflow"] == __version__
