"""Every run reports what its parts share: InChIKey duplicates and, for scaffold splits,
scaffolds. A scaffold split promises none shared; the report checks the promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import qemlflow as qm
from qemlflow.pipeline.runner import leakage
from qemlflow.splits import Split, scaffold_split

CONFIG = {
    "dataset": {"source": "freesolv"},
    "features": [{"type": "ecfp", "size": 256}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 0, "plots": False},
}


def test_a_run_reports_leakage_and_a_scaffold_split_shares_no_scaffold(tmp_path: Path) -> None:
    scaffold = qm.run({**CONFIG, "split": {"method": "scaffold"}})
    found = scaffold.metrics["leakage"]
    assert found["shared_scaffolds"] == 0
    # No molecule of one part is another part's molecule written differently (E/Z
    # isomers such as geraniol and nerol keep distinct keys).
    assert found == leakage(scaffold.dataset.smiles, scaffold.split)
    assert found["duplicates_across_parts"] == 0
    random = qm.run(CONFIG)
    assert random.metrics["leakage"]["shared_scaffolds"] is None  # no promise to check


def test_tautomers_written_differently_are_counted_as_duplicates() -> None:
    # 2-hydroxypyridine and 2-pyridone: two SMILES, one standard InChIKey.
    smiles = ["Oc1ccccn1", "c1ccccc1", "O=c1cccc[nH]1", "CCO", "c1ccccc1C"]
    parts = Split(train=[0, 1], valid=[3], test=[2, 4], method="scaffold", seed=0)
    found = leakage(smiles, parts)
    assert found["duplicates_across_parts"] == 2
    # benzene (train, test); pyridine and 2-pyridone are different Murcko scaffolds
    assert found["shared_scaffolds"] == 1


def test_leakage_of_a_real_scaffold_split_matches_its_parts() -> None:
    ds = qm.load_dataset("bace")
    parts = scaffold_split(ds.smiles, sizes=(0.8, 0.1, 0.1), seed=0)
    found = leakage(ds.smiles, parts)
    assert found["shared_scaffolds"] == 0
    assert isinstance(found["duplicates_across_parts"], int)
    assert np.all(np.isin(parts.test, np.arange(len(ds))))


def test_shared_scaffolds_are_counted_as_the_split_groups_them() -> None:
    # trans and cis decalin: one stereo-free scaffold, two with stereo.
    smiles = ["CC1CC[C@H]2CCCC[C@@H]2C1", "CC1CC[C@H]2CCCC[C@H]2C1", "CCO"]
    for method in ("scaffold", "scaffold_deepchem"):
        parts = Split(train=[0, 2], valid=[], test=[1], method=method, seed=0)
        assert leakage(smiles, parts)["shared_scaffolds"] == 1
        kept = Split(train=[0, 2], valid=[], test=[1], method=method, params={"stereo": True})
        assert leakage(smiles, kept)["shared_scaffolds"] == 0


def test_deepchem_and_stereo_scaffold_runs_share_nothing_across_parts() -> None:
    runs = [
        qm.run({**CONFIG, "seed": seed, "split": {"method": "scaffold_deepchem"}})
        for seed in (0, 1)
    ]
    for run in runs:
        assert run.split.method == "scaffold_deepchem"
        assert run.metrics["leakage"]["duplicates_across_parts"] == 0
        assert run.metrics["leakage"]["shared_scaffolds"] == 0
    assert runs[0].split.test.tolist() == runs[1].split.test.tolist()  # seed-free split
    kept = qm.run({**CONFIG, "split": {"method": "scaffold", "stereo": True}})
    assert kept.split.params["stereo"] is True
    assert kept.metrics["leakage"]["shared_scaffolds"] == 0
    assert "with stereo" in kept.metrics["leakage"]["compared_by"]


def test_split_options_are_config_shorthands_and_checked() -> None:
    import pytest

    from qemlflow.errors import QeMLflowError
    from qemlflow.pipeline.config import parse_config

    def split_of(split: dict[str, object]) -> object:
        return parse_config({"dataset": {"source": "esol"}, "split": split}).split

    kept = split_of({"method": "scaffold", "stereo": True, "balanced": False})
    assert kept.params == {"stereo": True, "balanced": False}  # type: ignore[attr-defined]
    plain = split_of({"method": "scaffold_deepchem"})
    assert plain.params == {}  # type: ignore[attr-defined]  # resolved form unchanged
    for bad, why in (
        ({"method": "random", "stereo": True}, "stereo is only for method: scaffold"),
        ({"method": "scaffold_deepchem", "balanced": False}, "balanced is only for"),
    ):
        with pytest.raises(QeMLflowError, match=why):
            split_of(bad)
