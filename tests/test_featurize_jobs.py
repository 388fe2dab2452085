"""A config that leaves `n_jobs` unset featurizes a big set on every core, with the same result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import qemlflow as qm
from qemlflow.pipeline.config import parse_config
from qemlflow.pipeline.runner import featurize_jobs


def _config(csv: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "featurize-jobs",
        "seed": 0,
        "dataset": {"source": str(csv), "smiles_column": "smiles", "target_columns": ["lipo"]},
        "model": {"estimator": "knn"},  # cheap: the features are what is compared
        "evaluation": {"n_bootstrap": 0, "plots": False},
        **extra,
    }


def test_an_unset_n_jobs_featurizes_in_processes_with_identical_results(tmp_path: Path) -> None:
    bundled = Path(qm.__file__).parent / "data" / "bundled" / "lipophilicity.csv.gz"
    csv = tmp_path / "lipo.csv"
    pd.read_csv(bundled).head(2100).to_csv(csv, index=False)
    default = parse_config(_config(csv))
    assert featurize_jobs(default, 2100) == -1  # the parallel path is the one taken below
    parallel = qm.run(_config(csv), tmp_path / "parallel")
    serial = qm.run(_config(csv, n_jobs=1), tmp_path / "serial")
    first = pd.read_csv(tmp_path / "parallel" / "predictions.csv")
    second = pd.read_csv(tmp_path / "serial" / "predictions.csv")
    pd.testing.assert_frame_equal(first, second)
    assert parallel.metrics["test"] == serial.metrics["test"]
    assert np.isfinite(first["prediction"]).all()
