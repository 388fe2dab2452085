"""``qemlflow suggest``: the next batch of molecules, checked against hand computations.

One small model (ECFP4 bits, a 30-tree random forest on 200 ESOL molecules, CV+ intervals
so that the uncertainty differs between molecules) is trained once for the module, into a
store, and registered as ``sol``; the pool is 300 unseen ESOL molecules.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from tests.bundled import bundled_csv

import qemlflow as qm
from qemlflow import registry
from qemlflow.chem import standardize_smiles
from qemlflow.cli.main import main
from qemlflow.errors import ConfigError
from qemlflow.pipeline.predictor import load_model
from qemlflow.pipeline.scoring import training_smiles
from qemlflow.store import Store
from qemlflow.suggest import check_options, suggest

ROOT = Path(__file__).resolve().parents[1]
CONFIG: dict[str, Any] = {
    "name": "suggested",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp"}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
    "evaluation": {"n_bootstrap": 20, "plots": False},
}
INVALID = {7: "C1CC(nosmiles", 50: "Xx", 120: "c1cccc1"}
"""Pool rows (0-based) replaced by molecules that cannot be scored."""
Z90 = NormalDist().inv_cdf(0.95)


@dataclass
class Trained:
    store_path: Path
    model: Path
    pool: Path
    train: pd.DataFrame
    run_id: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    folder = tmp_path_factory.mktemp("suggest")
    esol = pd.read_csv(bundled_csv("esol"))
    train = esol.head(200)
    train.to_csv(folder / "train.csv", index=False)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "source": str(folder / "train.csv")}}
    with Store.open(folder / "store") as store:
        result = qm.run(config, folder / "run", store=store)
        assert result.run_id is not None
        registry.register(store, result.run_id, "sol")
    pool = esol.iloc[200:500][["smiles"]].reset_index(drop=True)
    for row, bad in INVALID.items():
        pool.loc[row, "smiles"] = bad
    pool.insert(0, "name", [f"cand{i}" for i in range(len(pool))])
    pool.to_csv(folder / "pool.csv", index=False)
    yield Trained(
        folder / "store", folder / "run" / "model.joblib", folder / "pool.csv", train, result.run_id
    )


def _by_hand(trained: Trained) -> pd.DataFrame:
    """Every valid pool molecule with mu and sigma from ``Predictor.predict``."""
    pool = pd.read_csv(trained.pool)
    scored = load_model(trained.model).predict(pool["smiles"].tolist())
    scored["id"] = pool["name"]
    scored["row"] = np.arange(1, len(pool) + 1)
    scored = scored[scored["error"] == ""].copy()
    scored["sigma"] = (scored["upper"] - scored["lower"]) / 2 / Z90
    return scored


def _expected_improvement(mu: float, sd: float, best: float, sign: float) -> float:
    d = sign * (mu - best)
    if sd == 0:
        return max(d, 0.0)
    z = d / sd
    return d * 0.5 * (1 + math.erf(z / math.sqrt(2))) + sd * math.exp(-z * z / 2) / math.sqrt(
        2 * math.pi
    )


def _run(trained: Trained, out: Path, *extra: str) -> int:
    return main(
        [
            "suggest",
            "sol@1",
            str(trained.pool),
            "-n",
            "8",
            "-o",
            str(out),
            "--id-column",
            "name",
            "--store",
            str(trained.store_path),
            *extra,
        ]
    )


def test_cli_writes_k_rows_best_first_with_the_contract_columns(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "next.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qemlflow",
            "suggest",
            "sol@1",
            str(trained.pool),
            "-n",
            "6",
            "-o",
            str(out),
            "--acquisition",
            "ucb",
            "--store",
            str(trained.store_path),
            "--id-column",
            "name",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert len(table) == 6
    assert {"smiles", "score", "prediction", "uncertainty", "id", "rank"} <= set(table.columns)
    assert table["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert table["score"].is_monotonic_decreasing
    assert table["id"].str.startswith("cand").all()  # the pool's id column
    assert (table["uncertainty_source"] == "conformal").all()
    assert "6 of 300 molecules suggested" in " ".join(done.stdout.split())


@pytest.mark.parametrize(
    ("acquisition", "maximize"),
    [("greedy", True), ("greedy", False), ("uncertainty", True), ("ucb", True), ("ucb", False)],
)
def test_each_acquisition_orders_as_its_formula(
    trained: Trained, tmp_path: Path, acquisition: str, maximize: bool
) -> None:
    out = tmp_path / "next.csv"
    direction = "--maximize" if maximize else "--minimize"
    args = ("--acquisition", acquisition, direction, "--beta", "2", "--max-similarity", "1")
    assert _run(trained, out, *args) == 0
    got = pd.read_csv(out)
    want = _by_hand(trained)
    sign = 1.0 if maximize else -1.0
    want["score"] = {
        "greedy": sign * want["prediction"],
        "uncertainty": want["sigma"],
        "ucb": sign * want["prediction"] + 2.0 * want["sigma"],
    }[acquisition]
    want = want.sort_values(["score", "row"], ascending=[False, True]).head(8)
    assert got["id"].tolist() == want["id"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-9)
    np.testing.assert_allclose(got["uncertainty"], want["sigma"], rtol=1e-9)
    np.testing.assert_allclose(got["prediction"], want["prediction"], rtol=1e-12)


def test_expected_improvement_is_over_the_best_training_label(
    trained: Trained, tmp_path: Path
) -> None:
    out = tmp_path / "ei.csv"
    assert _run(trained, out, "--acquisition", "ei", "--max-similarity", "1") == 0
    with Store.open(trained.store_path) as store:
        event = store.audit_events(action="suggest.completed")[-1]
        fitted_on = set(training_smiles(store, trained.run_id) or [])
    standardized = [standardize_smiles(s).smiles for s in trained.train["smiles"]]
    labels = trained.train["logp"][[s in fitted_on for s in standardized]]
    best = float(labels.max())
    assert event.details["best_observed"] == pytest.approx(best)
    assert event.details["best_observed_source"] == f"training labels of run {trained.run_id}"
    want = _by_hand(trained)
    want["score"] = [
        _expected_improvement(m, s, best, 1.0)
        for m, s in zip(want["prediction"], want["sigma"], strict=True)
    ]
    want = want.sort_values(["score", "row"], ascending=[False, True]).head(8)
    got = pd.read_csv(out)
    assert got["id"].tolist() == want["id"].tolist()
    np.testing.assert_allclose(got["score"], want["score"], rtol=1e-9)

    # An explicit --best-observed wins over the store's, minimizing flips the improvement.
    assert _run(trained, out, "--acquisition", "ei", "--minimize", "--best-observed", "-3") == 0
    with Store.open(trained.store_path) as store:
        event = store.audit_events(action="suggest.completed")[-1]
    assert event.details["best_observed"] == -3.0
    assert event.details["best_observed_source"] == "--best-observed"


def _max_pairwise_similarity(smiles: list[str]) -> float:
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    return max(
        max(DataStructs.BulkTanimotoSimilarity(fp, fps[i + 1 :])) for i, fp in enumerate(fps[:-1])
    )


def test_diversity_caps_the_similarity_within_the_batch(trained: Trained, tmp_path: Path) -> None:
    free, capped = tmp_path / "free.csv", tmp_path / "capped.csv"
    assert _run(trained, free, "--acquisition", "greedy", "--max-similarity", "1") == 0
    assert _run(trained, capped, "--acquisition", "greedy", "--max-similarity", "0.35") == 0
    unconstrained = pd.read_csv(free)["standardized_smiles"].tolist()
    batch = pd.read_csv(capped)
    assert len(batch) == 8
    assert _max_pairwise_similarity(unconstrained) > 0.35  # the cap has something to do
    assert _max_pairwise_similarity(batch["standardized_smiles"].tolist()) <= 0.35
    assert batch["score"].is_monotonic_decreasing
    # The best molecule is always kept: nothing was picked before it.
    assert batch["id"].iloc[0] == pd.read_csv(free)["id"].iloc[0]


def test_same_inputs_give_the_same_bytes(trained: Trained, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _run(trained, first, "--acquisition", "ucb") == 0
    assert _run(trained, second, "--acquisition", "ucb") == 0
    assert first.read_bytes() == second.read_bytes()


def test_rejected_pool_rows_are_kept_with_their_reason(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "next.csv"
    assert _run(trained, out, "--acquisition", "greedy") == 0
    rejected = pd.read_csv(tmp_path / "next.rejected.csv")
    assert rejected["row"].tolist() == [r + 1 for r in sorted(INVALID)]
    assert rejected["smiles"].tolist() == [INVALID[r] for r in sorted(INVALID)]
    assert rejected["id"].tolist() == [f"cand{r}" for r in sorted(INVALID)]
    assert rejected["error"].str.len().min() > 0
    assert not set(pd.read_csv(out)["row"]) & set(rejected["row"])


def test_the_suggestion_is_recorded_with_its_digests(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "next.csv"
    assert _run(trained, out, "--acquisition", "ucb", "--beta", "0.5") == 0
    data = out.read_bytes()
    with Store.open(trained.store_path) as store:
        event = store.audit_events(action="suggest.completed")[-1]
        assert store.verify_audit().ok
        assert store.blobs.get_bytes(event.objects["output"]) == data  # kept as a blob
        assert store.has_blob(event.objects["model"])
    assert event.objects["output"] == hashlib.sha256(data).hexdigest()
    assert event.objects["input"] == hashlib.sha256(trained.pool.read_bytes()).hexdigest()
    assert event.objects["run"] == trained.run_id
    details = event.details
    assert (details["k"], details["written"], details["rows"], details["rejected"]) == (
        8,
        8,
        300,
        len(INVALID),
    )
    assert (details["acquisition"], details["beta"], details["max_similarity"]) == ("ucb", 0.5, 0.7)
    assert details["uncertainty"] == "conformal" and details["model_version"] == "sol@1"


def test_refusals_are_one_line(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "next.csv"
    assert _run(trained, out, "--acquisition", "thompson") == 2
    assert "unknown acquisition 'thompson'" in capsys.readouterr().err
    assert _run(trained, out, "--max-similarity", "1.5") == 2
    assert _run(trained, out, "-n", "0") == 2  # the last -n counts
    assert _run(trained, out, "-n", "99999999999999999999") == 2
    assert "a batch holds 1 to 1,000,000 molecules" in capsys.readouterr().err
    (tmp_path / "folder.csv").mkdir()
    assert _run(trained, tmp_path / "folder.csv") == 2
    assert _run(trained, out, "--acquisition", "ei", "--best-observed", "nan") == 2
    assert not out.exists()
    with pytest.raises(ConfigError, match="needs a Gaussian prediction"):
        check_options("ei", 5, 1.0, 0.7, "classification")
    # Without a store there is no training label to improve on, and none was given.
    with pytest.raises(ConfigError, match="best observed label"):
        suggest(trained.model, trained.pool, out, 3, acquisition="ei", trust_file=True)
    done = suggest(
        trained.model, trained.pool, out, 3, acquisition="ei", best_observed=0.0, trust_file=True
    )
    assert done.written == 3 and done.audit_seq is None


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "active_learning", ROOT / "benchmarks" / "active_learning.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["active_learning"] = module
    spec.loader.exec_module(module)
    return module


def test_the_active_learning_loop_runs_on_a_tiny_set() -> None:
    from qemlflow.data import load_dataset
    from qemlflow.features import ECFP

    bench = _benchmark()
    data = load_dataset(bundled_csv("esol"))
    smiles = data.smiles[:300]
    y = np.asarray(data.y, dtype=float).reshape(len(data.smiles), -1)[:300, 0]
    X = ECFP().fit_transform(smiles)
    small = {"n_estimators": 20, "learning_rate": 0.2}
    runs = {
        strategy: bench.run_campaign(
            smiles, y, X, strategy=strategy, seed=0, maximize=True, rounds=2, model_params=small
        )
        for strategy in ("random", "greedy")
    }
    for campaign in runs.values():
        assert campaign.labelled == [15, 21, 27]  # 5 % first, then 2 % a round
        assert all(0.0 <= f <= 1.0 for f in campaign.found)
        assert campaign.found == sorted(campaign.found)  # labels are never forgotten
    assert runs["random"].found[0] == runs["greedy"].found[0]  # the same start
    again = bench.run_campaign(
        smiles, y, X, strategy="greedy", seed=0, maximize=True, rounds=2, model_params=small
    )
    assert again.found == runs["greedy"].found
    summary = bench.summarize(list(runs.values()), len(smiles))
    assert set(summary) == {"random", "greedy"} and len(summary["greedy"]["found_mean"]) == 3


def test_a_classifier_ranks_by_probability_and_refuses_gaussian_acquisitions(
    tmp_path: Path,
) -> None:
    bbbp = pd.read_csv(bundled_csv("bbbp"))
    bbbp.head(200).to_csv(tmp_path / "train.csv", index=False)
    config = {
        **CONFIG,
        "name": "permeable",
        "dataset": {"source": str(tmp_path / "train.csv"), "smiles_column": "smiles"},
    }
    with Store.open(tmp_path / "store") as store:
        qm.run(config, tmp_path / "run", store=store)
    pool = bbbp.iloc[200:320][["smiles"]]
    pool.to_csv(tmp_path / "pool.csv", index=False)
    scored = load_model(tmp_path / "run").predict(pool["smiles"].tolist())
    scored["row"] = np.arange(1, len(scored) + 1)
    scored = scored[scored["error"] == ""]
    p = scored["probability"]
    base = ["suggest", str(tmp_path / "run"), str(tmp_path / "pool.csv"), "-n", "5"]
    base += ["--store", str(tmp_path / "store"), "--max-similarity", "1"]
    for acquisition, score in (("greedy", p), ("uncertainty", np.sqrt(p * (1 - p)))):
        out = tmp_path / f"{acquisition}.csv"
        assert main([*base, "-o", str(out), "--acquisition", acquisition]) == 0
        want = scored.assign(score=score).sort_values(["score", "row"], ascending=[False, True])
        got = pd.read_csv(out)
        assert got["row"].tolist() == want["row"].head(5).tolist()
        assert (got["uncertainty_source"] == "bernoulli").all()
        np.testing.assert_allclose(got["prediction"], want["probability"].head(5), rtol=1e-12)
    assert main([*base, "-o", str(tmp_path / "ucb.csv"), "--acquisition", "ucb"]) == 2
    assert not (tmp_path / "ucb.csv").exists()


def test_one_interval_width_for_all_is_said_and_ranks_as_greedy() -> None:
    from qemlflow.features import ECFP
    from qemlflow.models import MolecularModel
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.suggest import rank_pool

    esol = pd.read_csv(bundled_csv("esol"))
    smiles, y = esol["smiles"].tolist()[:260], esol["logp"].to_numpy()[:260]
    X = ECFP().fit_transform(smiles)
    # 80 calibration labels: a split-conformal interval, one width for every molecule.
    model = MolecularModel("linear").fit(X[:120], y[:120], X[120:200], y[120:200])
    assert model.interval_methods_ == ["split_conformal"]
    predictor = Predictor(model, ECFP().to_spec(), "regression", ["logp"], standardize=False)
    pool = smiles[200:]
    greedy = rank_pool(predictor, pool, 6, acquisition="greedy")
    with pytest.warns(UserWarning, match="the same for every molecule: ucb ranks as greedy"):
        ucb = rank_pool(predictor, pool, 6, acquisition="ucb", beta=3.0)
    assert ucb.rows.tolist() == greedy.rows.tolist()


def test_a_row_the_reader_cannot_read_is_rejected_with_its_reason(
    trained: Trained, tmp_path: Path
) -> None:
    pool = tmp_path / "pool.csv"
    pool.write_text("name,smiles\na,CCO\nb,CCN,shifted\nc,c1ccccc1O\n")
    out = tmp_path / "next.csv"
    args = ["suggest", "sol@1", str(pool), "-n", "5", "-o", str(out), "--id-column", "name"]
    assert main([*args, "--store", str(trained.store_path), "--acquisition", "greedy"]) == 0
    assert sorted(pd.read_csv(out)["id"]) == ["a", "c"]  # fewer than asked: all there is
    rejected = pd.read_csv(tmp_path / "next.rejected.csv")
    assert rejected["row"].tolist() == [2]
    assert rejected["error"].iloc[0].startswith("too_many_fields")


def test_the_pool_is_read_with_the_screen_reading_options(trained: Trained, tmp_path: Path) -> None:
    pool = tmp_path / "headerless.tsv"
    pool.write_text("CCO\tethanol\nc1ccccc1O\tphenol\nCCCCCCCC\toctane\n")
    out = tmp_path / "next.csv"
    args = ["suggest", "sol@1", str(pool), "-n", "3", "-o", str(out), "--max-similarity", "1"]
    args += ["--store", str(trained.store_path), "--acquisition", "greedy"]
    assert main(args) == 2  # the first molecule would be read as a header: refused
    assert main([*args, "--no-header", "--id-column", "2"]) == 0
    assert sorted(pd.read_csv(out)["id"]) == ["ethanol", "octane", "phenol"]
