"""The chemistry policy: what standardization strips, what it refuses, and that every
output says so (``predict``, ``screen`` and the service, through the real CLI and server).

One small classification run (ECFP4, a 30-tree random forest on 300 BBBP molecules, with
duplicates of conflicting labels added) is made once for the module.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import qemlflow as qm
from qemlflow import registry
from qemlflow.chem import ChemistryPolicy, Reason, standardize_smiles
from qemlflow.data.loading import read_raw
from qemlflow.serve.client import Client
from qemlflow.store import Store

CISPLATIN = "N[Pd](N)(Cl)Cl"
DICHROMATE = "[K+].[K+].[O-][Cr](=O)(=O)O[Cr](=O)(=O)[O-]"
ZINC_CHLORIDE = "Cl[Zn]Cl"
ZINC_CHLORIDE_IONIC = "[Zn+2].[Cl-].[Cl-]"
TRIBUTYLTIN = "CCCC[Sn](Cl)(CCCC)CCCC"
UNSUPPORTED = [CISPLATIN, DICHROMATE, ZINC_CHLORIDE, ZINC_CHLORIDE_IONIC, TRIBUTYLTIN]
# Ordinary salts and what each one's parent is.
SALTS = {
    "CC(=O)Oc1ccccc1C(=O)O.[Na+]": "CC(=O)Oc1ccccc1C(=O)O",
    "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]": "CC(=O)Oc1ccccc1C(=O)O",
    "CCN(CC)CCNC(=O)c1ccc(N)cc1.Cl": "CCN(CC)CCNC(=O)c1ccc(N)cc1",
    "CCCCCCCC(=O)[O-].[K+]": "CCCCCCCC(=O)O",
    "CCCCCCCC(=O)O[Na]": "CCCCCCCC(=O)O",
    "CN1CCC[C@H]1c1cccnc1.OC(=O)C(O)C(O)C(=O)O": "CN1CCC[C@H]1c1cccnc1",
    "C[N+](C)(C)Cc1ccccc1.[Br-]": "C[N+](C)(C)Cc1ccccc1",
}


@pytest.mark.parametrize("smiles", UNSUPPORTED)
def test_metal_and_inorganic_chemistry_is_refused(smiles: str) -> None:
    result = standardize_smiles(smiles)
    assert result.reason == Reason.UNSUPPORTED_CHEMISTRY
    assert result.smiles is None and result.mol is None
    # The earlier behaviour scored a fragment: ammonia, water, a bare ion, a radical.
    legacy = ChemistryPolicy(unsupported="largest_fragment", min_heavy_atoms=1)
    assert standardize_smiles(smiles, policy=legacy).ok


@pytest.mark.parametrize(("smiles", "parent"), SALTS.items())
def test_salts_keep_their_parent(smiles: str, parent: str) -> None:
    assert standardize_smiles(smiles).smiles == parent


def test_refusals_say_what_they_saw() -> None:
    assert "Pd (metal complex)" in standardize_smiles(CISPLATIN).detail
    assert "Sn (organometallic)" in standardize_smiles(TRIBUTYLTIN).detail
    assert "Zn (metal ion)" in standardize_smiles(ZINC_CHLORIDE_IONIC).detail
    assert "no carbon" in standardize_smiles("[Na+].[Cl-]").detail
    # a combination product: two drugs, neither a counter-ion
    mixture = standardize_smiles("CC(=O)Nc1ccc(O)cc1.Cn1cnc2c1c(=O)n(C)c(=O)n2C")
    assert mixture.reason == Reason.UNSUPPORTED_CHEMISTRY
    assert "mixture of 2 organic components" in mixture.detail


def test_parents_under_the_size_floor_are_refused() -> None:
    for smiles in ("C", "CO", "C[NH3+].[Cl-]", "CC(=O)[O-].[Na+].C"):
        result = standardize_smiles(smiles)
        if smiles.startswith("CC(=O)"):  # acetate is the parent here, methane a solvent
            assert result.smiles == "CC(=O)O"
            continue
        assert result.reason == Reason.PARENT_TOO_SMALL, smiles
        assert "fewer than 3" in result.detail
    assert standardize_smiles("CCO").smiles == "CCO"
    assert standardize_smiles("CO", policy=ChemistryPolicy(min_heavy_atoms=1)).smiles == "CO"
    with pytest.raises(ValueError, match="min_heavy_atoms"):
        ChemistryPolicy(min_heavy_atoms=0)


@dataclass
class Trained:
    store: Store
    run_folder: Path
    model: Path
    run_id: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """300 BBBP molecules; rows 300 and 301 repeat row 0 (one agrees, one flips its
    label), row 302 repeats row 1 with the same label."""
    folder = tmp_path_factory.mktemp("chem")
    raw = read_raw("bbbp")
    frame = pd.read_csv(io.BytesIO(raw.data)).head(300)[["smiles", "p_np"]]
    copies = frame.iloc[[0, 0, 1]].copy()
    copies.iloc[1, 1] = 1 - copies.iloc[1, 1]  # a conflicting label
    frame = pd.concat([frame, copies], ignore_index=True)
    csv = folder / "bbbp300.csv"
    frame.to_csv(csv, index=False)
    store = Store.open(folder / "store")
    config: dict[str, Any] = {
        "name": "chem",
        "dataset": {"source": str(csv), "smiles_column": "smiles", "target_columns": ["p_np"]},
        "features": [{"type": "ecfp"}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
        "evaluation": {"n_bootstrap": 20, "plots": False},
    }
    out = folder / "results"
    result = qm.run(config, out, store=store)
    assert result.run_id is not None
    yield Trained(store, out, out / "model.joblib", result.run_id)
    store.close()


def test_merged_duplicates_and_label_conflicts_are_counted_and_listed(trained: Trained) -> None:
    metrics = json.loads((trained.run_folder / "metrics.json").read_text())
    duplicates = metrics["duplicates"]
    assert duplicates["rows_merged"] >= 3
    assert duplicates["label_conflicts"] >= 1
    assert duplicates["resolution"] == "mean"
    assert metrics["chemistry"]["unsupported"] == "reject"
    rejected = pd.read_csv(trained.run_folder / "rejected.csv", keep_default_na=False)
    assert rejected.columns.tolist()[:4] == ["row", "input_smiles", "reason", "detail"]
    by_row = rejected.set_index("row")
    # row 0 has copies at 300 (same label) and 301 (flipped): two against one, by vote
    label = int(pd.read_csv(io.BytesIO(read_raw("bbbp").data)).loc[0, "p_np"])
    for copy in (300, 301):
        assert by_row.loc[copy, "reason"] == "label_conflict"
        assert "merged into row 0" in by_row.loc[copy, "detail"]
    assert f"majority vote {label}" in by_row.loc[301, "detail"]
    assert by_row.loc[302, "reason"] == "merged_duplicate"
    assert "merged into row 1" in by_row.loc[302, "detail"]
    listed_conflicts = rejected[rejected["reason"].isin(["label_conflict"])]
    assert len(listed_conflicts) >= duplicates["label_conflicts"] - duplicates["conflicts_rejected"]
    run = json.loads((trained.run_folder / "run.json").read_text())
    assert run["dataset"]["duplicates"]["rows_merged"] == duplicates["rows_merged"]


def _queries(folder: Path) -> Path:
    path = folder / "queries.csv"
    pd.DataFrame({"smiles": [*UNSUPPORTED, *SALTS, "C"]}).to_csv(path, index=False)
    return path


def _check_scored(table: pd.DataFrame, probability: str = "probability") -> None:
    """Refused rows have the reason and no probability; salts score their parent."""
    table = table.astype(object).fillna("")
    by_smiles = table.set_index("smiles")
    for smiles in UNSUPPORTED:
        row = by_smiles.loc[smiles]
        assert str(row["error"]).startswith("unsupported_chemistry"), row
        assert row[probability] == "" and row["standardized_smiles"] == ""
    for smiles, parent in SALTS.items():
        row = by_smiles.loc[smiles]
        assert row["error"] == "" and row["standardized_smiles"] == parent
        assert 0.0 <= float(row[probability]) <= 1.0
    assert str(by_smiles.loc["C", "error"]).startswith("parent_too_small")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "qemlflow", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_cli_predict_refuses_unsupported_chemistry(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "scored.csv"
    store = ("--store", str(trained.store.root))
    done = _cli("predict", str(trained.run_folder), str(_queries(tmp_path)), "-o", str(out), *store)
    assert done.returncode == 0, done.stderr
    _check_scored(pd.read_csv(out, keep_default_na=False))


def test_cli_screen_refuses_unsupported_chemistry(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "screened.csv"
    store = ("--store", str(trained.store.root))
    done = _cli("screen", str(trained.model), str(_queries(tmp_path)), "-o", str(out), *store)
    assert done.returncode == 0, done.stderr
    _check_scored(pd.read_csv(out, keep_default_na=False))


def test_service_refuses_unsupported_chemistry(trained: Trained) -> None:
    from tests.test_serve import serving

    registry.register(trained.store, trained.run_id, "bbbp-chem")
    registry.promote(trained.store, "bbbp-chem", 1, to="production")
    _, key = trained.store.create_api_key("chem")
    queries = [*UNSUPPORTED, *SALTS, "C"]
    with (
        serving(trained.store, "bbbp-chem@production", poll_seconds=0) as (url, _),
        Client(url, key) as client,
    ):
        results = client.predict(queries)
    table = pd.DataFrame(results)[["smiles", "standardized_smiles", "probability", "error"]]
    _check_scored(table)
