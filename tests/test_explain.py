"""Tests for `qemlflow explain`: atom attributions that find the atoms a target depends on.

The sanity check: a target that is the number of hydroxyl groups ([OX2H]) of bundled ESOL
molecules. A model that learned it must put its largest weight on a hydroxyl oxygen.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rdkit import Chem

from qemlflow.cli.main import main
from qemlflow.data import load_dataset
from qemlflow.errors import ConfigError
from qemlflow.explain import (
    AtomAttribution,
    attribute,
    available_image_formats,
    choose_method,
    explain,
    masked_smiles,
)
from qemlflow.features import make_featurizer
from qemlflow.models import make_model
from qemlflow.pipeline.model_source import OpenedModel
from qemlflow.pipeline.predictor import Predictor, dump_predictor
from qemlflow.store import Store

HYDROXYL = Chem.MolFromSmarts("[OX2H]")
ECFP = {"type": "ecfp", "radius": 2, "size": 2048}
# Every feature per tree, small trees: the model keys on the hydroxyl bits themselves rather
# than on bits that merely go with them.
SMALL_LGBM = {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 7, "colsample_bytree": 1.0}
# Small, but trained long enough to learn the count: about 20 s on two shared cores.
TINY_DMPNN: dict[str, Any] = {
    "epochs": 15,
    "hidden_size": 64,
    "ffn_hidden_size": 64,
    "depth": 3,
    "batch_size": 32,
    "descriptors": "none",
    "aggregation": "sum",
    "max_lr": 3e-3,
}
MOLECULES = ["Oc1ccccc1", "not a smiles", "OCC(O)CO", "c1ccncc1"]


@pytest.fixture(scope="module")
def hydroxyl_set() -> tuple[list[str], np.ndarray, list[str]]:
    """(training SMILES, their hydroxyl counts, held-out SMILES): every ESOL molecule with
    a hydroxyl group and 200 without, shuffled; 360 to train, the rest (74) held out."""
    smiles = load_dataset("esol").smiles
    counts = np.array([len(Chem.MolFromSmiles(s).GetSubstructMatches(HYDROXYL)) for s in smiles])
    rng = np.random.default_rng(0)
    without = rng.permutation(np.flatnonzero(counts == 0))[:200]
    chosen = rng.permutation(np.concatenate([np.flatnonzero(counts > 0), without]))
    picked = [smiles[i] for i in chosen]
    return picked[:360], counts[chosen[:360]].astype(float), picked[360:]


def _predictor(model: Any, spec: Any) -> Predictor:
    return Predictor(model=model, feature_spec=spec, task="regression", target_names=["n_oh"])


def _fit(estimator: str, spec: Any, data: tuple[list[str], np.ndarray, Any], **params: Any) -> Any:
    train, y, _ = data
    X = make_featurizer(spec).transform(train)
    return make_model(estimator, "regression", params=params).fit(X, y)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lightgbm(hydroxyl_set: tuple[list[str], np.ndarray, list[str]]) -> Predictor:
    return _predictor(_fit("lightgbm", ECFP, hydroxyl_set, **SMALL_LGBM), ECFP)


@pytest.fixture(scope="module")
def dmpnn(hydroxyl_set: tuple[list[str], np.ndarray, list[str]]) -> Predictor:
    return _predictor(_fit("dmpnn", "smiles", hydroxyl_set, **TINY_DMPNN), "smiles")


def _hydroxyl_atoms(smiles: str) -> set[int]:
    mol = Chem.MolFromSmiles(smiles)
    return {atom for match in mol.GetSubstructMatches(HYDROXYL) for atom in match}


def _assert_finds_hydroxyls(results: list[AtomAttribution]) -> None:
    """The highest-|weight| atom is a hydroxyl oxygen for at least 80 % of the held-out
    molecules that have one, and hydroxyl atoms weigh far more than the others."""
    top_hits, gaps = [], []
    for result in results:
        assert result.ok and result.standardized_smiles and result.atom_weights is not None
        weights = np.array(result.atom_weights)
        assert len(weights) == Chem.MolFromSmiles(result.standardized_smiles).GetNumAtoms()
        matched = _hydroxyl_atoms(result.standardized_smiles)
        if not matched:
            continue
        others = [i for i in range(len(weights)) if i not in matched]
        top_hits.append(int(np.argmax(np.abs(weights))) in matched)
        gaps.append(weights[sorted(matched)].mean() - (weights[others].mean() if others else 0))
    assert len(top_hits) >= 30  # enough held-out molecules with a hydroxyl to judge
    assert np.mean(top_hits) >= 0.8, f"top atom on a hydroxyl for {np.mean(top_hits):.0%}"
    assert np.mean(gaps) >= 0.2, f"hydroxyl atoms weigh only {np.mean(gaps):.3f} more"


# --------------------------------------------------------------------- the sanity tests
@pytest.mark.parametrize("method", ["treeshap-ecfp-atoms", "bit-occlusion-ecfp-atoms"])
def test_fingerprint_model_attributions_find_the_hydroxyl_groups(
    lightgbm: Predictor, hydroxyl_set: tuple[list[str], np.ndarray, list[str]], method: str
) -> None:
    results = attribute(lightgbm, hydroxyl_set[2], method=method)
    assert {r.method for r in results} == {method}
    _assert_finds_hydroxyls(results)


def test_dmpnn_atom_masking_finds_the_hydroxyl_groups(
    dmpnn: Predictor, hydroxyl_set: tuple[list[str], np.ndarray, list[str]]
) -> None:
    results = attribute(dmpnn, hydroxyl_set[2])
    assert {r.method for r in results} == {"atom-masking"}
    _assert_finds_hydroxyls(results)


# --------------------------------------------------------------------- the methods
def test_treeshap_weights_add_up_to_the_prediction(lightgbm: Predictor) -> None:
    (result,) = attribute(lightgbm, ["OCC(O)CO"], method="treeshap-ecfp-atoms")
    predicted = float(lightgbm.predict(["OCC(O)CO"])["prediction"][0])
    total = result.details["base_value"] + sum(result.atom_weights or [])
    assert total + result.details["non_atom_contribution"] == pytest.approx(predicted, abs=1e-9)
    assert result.value == pytest.approx(predicted, abs=1e-9)
    shares = result.details["attribution_share"]
    assert sum(shares.values()) == pytest.approx(1.0) and shares["non_atom_features"] == 0.0


def test_atom_masking_replaces_each_heavy_atom_by_a_dummy_in_turn(dmpnn: Predictor) -> None:
    variants = masked_smiles("OCC(=O)[O-]")
    assert len(variants) == 5 and all(s.count("*") == 1 for s in variants)
    assert "-" not in variants[-1]  # the charge goes with the atom
    assert Chem.MolFromSmiles(variants[0]).GetNumAtoms() == 5
    (result,) = attribute(dmpnn, ["OCC(=O)N"])
    assert result.standardized_smiles == "NC(=O)CO"
    variants = masked_smiles(result.standardized_smiles)
    scored = dmpnn.outputs(
        make_featurizer("smiles").transform([result.standardized_smiles, *variants])
    )
    expected = scored["prediction"][0, 0] - scored["prediction"][1:, 0]
    assert result.atom_weights == expected.tolist()


def test_the_method_follows_the_model_and_a_wrong_one_is_refused(
    lightgbm: Predictor, dmpnn: Predictor, hydroxyl_set: tuple[list[str], np.ndarray, list[str]]
) -> None:
    forest = _predictor(_fit("random_forest", ECFP, hydroxyl_set, n_estimators=10), ECFP)
    maccs = _predictor(_fit("lightgbm", "maccs", hydroxyl_set, n_estimators=10), "maccs")
    assert choose_method(lightgbm) == "treeshap-ecfp-atoms"
    assert choose_method(forest) == "bit-occlusion-ecfp-atoms"
    assert choose_method(dmpnn) == "atom-masking"
    assert choose_method(maccs) == "atom-masking"  # keys that map to no atom
    assert choose_method(lightgbm, "atom-masking") == "atom-masking"
    with pytest.raises(ConfigError, match="needs a LightGBM model"):
        choose_method(forest, "treeshap-ecfp-atoms")
    with pytest.raises(ConfigError, match="features have none"):
        choose_method(dmpnn, "bit-occlusion-ecfp-atoms")
    with pytest.raises(ConfigError, match="unknown explanation method"):
        choose_method(lightgbm, "saliency")
    (result,) = attribute(forest, ["Oc1ccccc1"])
    assert result.method == "bit-occlusion-ecfp-atoms" and result.details["bits_occluded"] > 0


def test_fingerprints_with_other_features_say_what_went_to_no_atom(
    hydroxyl_set: tuple[list[str], np.ndarray, list[str]],
) -> None:
    both = [ECFP, "maccs"]
    model = _predictor(_fit("lightgbm", both, hydroxyl_set, **SMALL_LGBM), both)
    results = attribute(model, hydroxyl_set[2][:10])
    shares = [r.details["attribution_share"]["non_atom_features"] for r in results]
    assert all(0.0 <= s < 1.0 for s in shares) and max(shares) > 0.0
    assert {r.method for r in results} == {"treeshap-ecfp-atoms"}


def test_attributions_are_deterministic(lightgbm: Predictor, dmpnn: Predictor) -> None:
    for model in (lightgbm, dmpnn):
        first = attribute(model, MOLECULES, method="atom-masking")
        # Other molecules around it change nothing: each molecule is scored on its own.
        again = attribute(model, list(reversed(MOLECULES)), method="atom-masking")[::-1]
        assert [r.atom_weights for r in first] == [r.atom_weights for r in again]
    first = attribute(lightgbm, MOLECULES)
    assert [r.atom_weights for r in first] == [
        r.atom_weights for r in attribute(lightgbm, MOLECULES)
    ]


# --------------------------------------------------------------------- files and records
def _model_file(predictor: Predictor, folder: Path) -> Path:
    path = folder / "model.joblib"
    predictor.save(path)
    return path


def test_explain_writes_json_and_images_per_molecule_and_keeps_going_past_a_bad_one(
    lightgbm: Predictor, tmp_path: Path
) -> None:
    model = _model_file(lightgbm, tmp_path)
    store_path, out = tmp_path / "store", tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qemlflow",
            "explain",
            str(model),
            *MOLECULES,
            "-o",
            str(out),
            "--store",
            str(store_path),
            "--trust-file",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "molecule 1 'not a smiles'" in done.stderr and "unparsable" in done.stderr
    assert "3 molecule(s) explained by treeshap-ecfp-atoms" in done.stdout
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    records = [json.loads((out / f"{n}.json").read_text()) for n in range(len(MOLECULES))]
    for n, (given, record) in enumerate(zip(MOLECULES, records, strict=True)):
        assert record["smiles"] == given and record["method"] == "treeshap-ecfp-atoms"
        assert record["model"]["digest"] == digest
        if n == 1:
            assert record["atom_weights"] is None and "unparsable" in record["error"]
            assert record["images"] == [] and not (out / "1.svg").exists()
            continue
        atoms = Chem.MolFromSmiles(record["standardized_smiles"]).GetNumAtoms()
        assert len(record["atom_weights"]) == atoms and record["error"] is None
        assert all(isinstance(w, float) for w in record["atom_weights"])
        assert "<svg" in (out / f"{n}.svg").read_text()
        if "png" in available_image_formats():  # RDKit built with Cairo
            assert (out / f"{n}.png").read_bytes().startswith(b"\x89PNG")
    phenol = records[0]
    oxygen = phenol["atom_symbols"].index("O")
    assert int(np.argmax(np.abs(phenol["atom_weights"]))) == oxygen

    with Store.open(store_path) as store:
        (event,) = store.audit_trail.events(action="explain.completed")
        assert event.objects["model"] == digest
        assert event.details["method"] == "treeshap-ecfp-atoms"
        assert event.details["molecules"] == 4 and event.details["errors"] == 1
        assert store.get_json(event.objects["explanations"])["explanations"] == records
        assert store.blobs.get_bytes(digest) == model.read_bytes()


def test_explaining_twice_writes_the_same_files(dmpnn: Predictor, tmp_path: Path) -> None:
    model = _model_file(dmpnn, tmp_path)
    outputs = []
    for name in ("first", "second"):
        code = main(
            [
                "explain",
                str(model),
                "OCC(O)CO",
                "c1ccncc1",
                "-o",
                str(tmp_path / name),
                "--image",
                "svg",
                "--trust-file",
                "--store",
                str(tmp_path / "store"),
            ]
        )
        assert code == 0
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert outputs[0] == outputs[1]
    assert sorted(outputs[0]) == ["0.json", "0.svg", "1.json", "1.svg"]
    assert json.loads(outputs[0]["0.json"])["method"] == "atom-masking"


def test_without_a_store_nothing_is_recorded(lightgbm: Predictor, tmp_path: Path) -> None:
    data = dump_predictor(lightgbm)
    opened = OpenedModel(
        "model", hashlib.sha256(data).hexdigest(), data, lightgbm, None, None, "trusted"
    )
    result = explain(opened, ["CCO"], tmp_path / "out", images=["svg"])
    assert result.audit_seq is None and result.errors == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.json", "0.svg"]


def test_cli_refuses_an_unknown_method_or_image_in_one_line(
    lightgbm: Predictor, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _model_file(lightgbm, tmp_path)
    common = [str(model), "CCO", "-o", str(tmp_path / "out"), "--trust-file"]
    assert main(["explain", *common, "--method", "saliency"]) == 2
    assert main(["explain", *common, "--image", "gif"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(lines) == 2 and "unknown explanation method" in lines[0] and "gif" in lines[1]


def test_a_registered_model_and_a_run_folder_are_explained_and_recorded(
    small_esol_csv: Path, tmp_path: Path
) -> None:
    import qemlflow as qm
    from qemlflow import registry

    config = {
        "name": "explain",
        "seed": 0,
        "dataset": {
            "source": str(small_esol_csv),
            "smiles_column": "smiles",
            "target_columns": ["logp"],
        },
        "features": [{"type": "ecfp", "radius": 2, "size": 512, "counts": True}, "maccs"],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 20}},
        "evaluation": {"n_bootstrap": 20, "plots": False},
    }
    store_path = tmp_path / "store"
    with Store.open(store_path) as store:
        result = qm.run(config, tmp_path / "run", store=store)
        assert result.run_id is not None
        version = registry.register(store, result.run_id, "sol")
    for model, out in (("sol@1", tmp_path / "by-name"), (str(tmp_path / "run"), tmp_path / "dir")):
        code = main(
            [
                "explain",
                model,
                "CCO",
                "c1ccccc1Cl",
                "-o",
                str(out),
                "--image",
                "svg",
                "--store",
                str(store_path),
            ]
        )
        assert code == 0
        record = json.loads((out / "1.json").read_text())
        assert record["method"] == "bit-occlusion-ecfp-atoms"
        assert record["model"]["digest"] == version.model_digest
        assert record["non_atom_features"] == 167  # the MACCS keys map to no atom
        assert len(record["atom_weights"]) == 7
    assert json.loads((tmp_path / "by-name" / "0.json").read_text())["model"]["version"] == "sol@1"
    with Store.open(store_path) as store:
        events = store.audit_trail.events(action="explain.completed")
        assert [e.objects["run"] for e in events] == [result.run_id] * 2
        assert store.verify_audit().ok


def test_a_classifier_and_a_second_target_are_explained(
    hydroxyl_set: tuple[list[str], np.ndarray, list[str]],
) -> None:
    train, counts, test = hydroxyl_set
    X = make_featurizer(ECFP).transform(train)
    has_oh = (counts > 0).astype(float)
    clf = make_model("lightgbm", "classification", params=SMALL_LGBM).fit(X, has_oh)
    classifier = Predictor(
        model=clf, feature_spec=ECFP, task="classification", target_names=["has_oh"]
    )
    (shap,) = attribute(classifier, ["OCCc1ccccc1"])
    assert shap.output.startswith("raw score") and shap.method == "treeshap-ecfp-atoms"
    (masked,) = attribute(classifier, ["OCCc1ccccc1"], method="atom-masking")
    assert masked.output == "probability" and 0.0 <= (masked.value or -1) <= 1.0
    for result in (shap, masked):
        assert int(np.argmax(result.atom_weights or [])) == 0  # the hydroxyl oxygen

    both = np.column_stack([counts, counts[::-1]])  # a second target the first one explains not
    two = make_model("lightgbm", "regression", params=SMALL_LGBM).fit(X, both)
    model = Predictor(model=two, feature_spec=ECFP, task="regression", target_names=["a", "b"])
    first, second = (attribute(model, test[:5], target=t) for t in ("a", "b"))
    assert [r.atom_weights for r in first] != [r.atom_weights for r in second]
    assert attribute(model, test[:5]) == first
    with pytest.raises(ConfigError, match="no target 'c'"):
        attribute(model, test[:1], target="c")
