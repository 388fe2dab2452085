"""Shared test fixtures: small real datasets written to disk."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

pytest_plugins = ["tests.postgres_fixture"]

# As the CLI does: keep two OpenMP runtimes (LightGBM, scikit-learn) from spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test runs in a folder of its own, with a store of its own: commands that
    default to ./.qemlflow or ./qemlflow-run never write into the repository."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("QEMLFLOW_HOME", str(tmp_path_factory.mktemp("qemlflow-home")))
    monkeypatch.delenv("QEMLFLOW_DATABASE_URL", raising=False)


@pytest.fixture(scope="session")
def esol_frame() -> pd.DataFrame:
    """The ESOL table as shipped in ../shared/data."""
    return pd.read_csv(SHARED_DATA / "esol.csv")


@pytest.fixture
def small_esol_csv(tmp_path: Path, esol_frame: pd.DataFrame) -> Path:
    """240 ESOL molecules plus one invalid and one empty SMILES, as a CSV file."""
    frame = esol_frame.head(240).copy()
    bad = pd.DataFrame({"smiles": ["C1CC(not smiles", ""], "logp": [-1.0, -2.0]})
    frame = pd.concat([frame.iloc[:100], bad, frame.iloc[100:]], ignore_index=True)
    path = tmp_path / "small_esol.csv"
    frame.to_csv(path, index=False)
    return path
