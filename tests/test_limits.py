"""Admission limits: a molecule over them is refused before any expensive work, in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from rdkit import Chem
from rdkit.Chem import GraphDescriptors

import qemlflow.chem.descriptors as descriptors
from qemlflow.chem import DEFAULT_LIMITS, MoleculeLimits, parse_smiles, standardize_smiles
from qemlflow.chem.descriptors import characteristic_polynomial, descriptor_names, descriptor_row
from qemlflow.data import load_dataset
from qemlflow.pipeline.config import ConfigError, parse_config
from qemlflow.pipeline.predictor import load_model

HUGE = "C" * 3000


def test_a_smiles_over_the_length_limit_is_refused_before_parsing() -> None:
    limits = MoleculeLimits(max_smiles_length=10)
    result = parse_smiles("C(C)" * 5, limits=limits)
    assert not result.ok and result.reason == "too_large"
    assert "20 characters, over the limit of 10" in result.detail
    assert "limits.max_smiles_length" in result.detail  # names the fix


def test_a_molecule_over_the_heavy_atom_limit_is_refused_before_standardizing() -> None:
    result = standardize_smiles(HUGE)
    assert result.reason == "too_large"
    assert result.detail.startswith("3,000 heavy atoms, over the limit of 300")
    # Explicit hydrogens are not heavy atoms; a drug-sized peptide is admitted.
    assert parse_smiles("[H]C([H])([H])[H]", limits=MoleculeLimits(max_heavy_atoms=1)).ok
    cyclosporin = (
        "CC[C@H]1C(=O)N(CC(=O)N([C@H](C(=O)N[C@H](C(=O)N([C@H](C(=O)N[C@H](C(=O)N[C@@H]"
        "(C(=O)N([C@H](C(=O)N([C@H](C(=O)N([C@H](C(=O)N([C@H](C(=O)N1)[C@@H]([C@H](C)C/C=C/C)"
        "O)C)C(C)C)C)CC(C)C)C)CC(C)C)C)C)C)CC(C)C)C)C(C)C)CC(C)C)C)C"
    )
    assert standardize_smiles(cyclosporin).ok
    assert standardize_smiles(HUGE, limits=None).ok  # None admits anything


def test_admission_without_parsing_agrees_with_parsing() -> None:
    limits = MoleculeLimits(max_heavy_atoms=5)
    for smiles in ("CCCCC", "CCCCCC", "[H]C([H])([H])C([H])([H])[H]", "c1ccccc1"):
        parsed = parse_smiles(smiles, limits=limits)
        assert (limits.admission_problem(smiles) is None) == parsed.ok, smiles


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MoleculeLimits(max_heavy_atoms=0)
    with pytest.raises(ConfigError, match=r"limits\.max_heavy_atoms"):
        parse_config({"dataset": {"source": "esol"}, "limits": {"max_heavy_atoms": 0}})
    with pytest.raises(ConfigError, match=r"unknown key 'limits\.max_atoms'"):
        parse_config({"dataset": {"source": "esol"}, "limits": {"max_atoms": 5}})


def test_a_dataset_keeps_a_too_large_row_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "series.csv"
    rows = ["smiles,y", "CCO,1.0", f"{HUGE},2.0", "c1ccccc1O,3.0"]
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset(path)
    assert len(ds) == 2 and len(ds.rows) == 3
    rejected = ds.rows[ds.rows.status == "rejected"]
    assert rejected.row.tolist() == [1] and rejected.reason.tolist() == ["too_large"]


def test_the_experiment_limits_travel_with_the_model(tmp_path: Path) -> None:
    import qemlflow as qm

    config = {
        "dataset": {"source": "freesolv"},
        "features": [{"type": "ecfp", "size": 256}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
        "evaluation": {"n_bootstrap": 0, "plots": False},
        "limits": {"max_heavy_atoms": 12},
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    qm.run(path, out)
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["limits"] == {**DEFAULT_LIMITS.to_dict(), "max_heavy_atoms": 12}
    predictor = load_model(out)
    assert predictor.limits == MoleculeLimits(max_heavy_atoms=12)
    table = predictor.predict(["CCO", "c1ccccc1" + "C" * 10, HUGE])
    assert table["error"].tolist()[0] == ""
    assert table["error"].tolist()[1].startswith("too_large: 16 heavy atoms, over the limit of 12")
    assert np.isnan(table["prediction"].tolist()[1])
    # Molecules over the limit never reached the model: they are rejected rows of the run.
    rejected = (out / "rejected.csv").read_text()
    assert "too_large" in rejected
    assert json.loads((out / "metrics.json").read_text())["test"]


def test_sparse_characteristic_polynomial_matches_rdkit(monkeypatch: pytest.MonkeyPatch) -> None:
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C1CC2CCC1C2", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"]
    monkeypatch.setattr(descriptors, "EXACT_IPC_ATOMS", 0)  # every molecule takes the sparse path
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        assert descriptor_row(mol)[descriptor_names().index("AvgIpc")] == GraphDescriptors.AvgIpc(
            Chem.MolFromSmiles(s)
        )
        adjacency = np.equal(Chem.GetDistanceMatrix(mol, 0), 1)
        from rdkit.Chem import Graphs

        expected = Graphs.CharacteristicPolynomial(mol, adjacency)
        assert np.array_equal(characteristic_polynomial(mol), expected)


def test_information_content_of_a_big_molecule_is_computed_not_stalled() -> None:
    row = descriptor_row(Chem.MolFromSmiles("C" * 300))
    names = descriptor_names()
    assert np.isnan(row[names.index("Ipc")])  # astronomically large: unusable, as before
    assert np.isfinite(row[names.index("AvgIpc")])
