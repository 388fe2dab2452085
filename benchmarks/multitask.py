"""Many tasks at the cost of few: the default experiment on a generated ToxCast-style set.

Generates, deterministically from ``--seed``, a sparse multi-task classification set from
the bundled molecules: ``--molecules`` distinct standardized molecules (default 8,000) and
``--tasks`` binary tasks (default 600). Every label is a function of the structure (a
seeded rule over RDKit descriptors and substructure counts, thresholded at a task's own
positive rate, with a few labels flipped as assay noise); most cells are missing, as in
ToxCast: each task labels a few hundred to a few thousand molecules, many are very
imbalanced, some have a handful of positives (a part of the split then holds one class)
and a few have too few labels, or one class only, to be modelled at all.

The set is written as a CSV and the DEFAULT experiment (a config without ``features`` or
``model``, as a user writes it) runs on it through ``qemlflow.run``, writing its results
folder. Prints a JSON summary: total seconds, seconds per stage, the mean test ROC-AUC
over tasks, and the tasks that were not modelled or not calibrated, counted by reason.

    python benchmarks/multitask.py                       # 600 tasks, 8,000 molecules
    python benchmarks/multitask.py --tasks 40 --molecules 600 --n-jobs 2
    python benchmarks/multitask.py --profile fit.prof    # cProfile of the run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from molecules import bundled_smiles

# Substructures a task's rule may count (each an assay-like structural alert or motif).
_PATTERNS = (
    "c1ccccc1",
    "[OX2H]",
    "[NX3;H2,H1;!$(NC=O)]",
    "C(=O)[OX2H1]",
    "C(=O)N",
    "[F,Cl,Br,I]",
    "[N+](=O)[O-]",
    "S(=O)(=O)",
    "c1ccncc1",
    "[nH]",
    "C=C",
    "C#N",
    "[SX2]",
    "C(=O)O[#6]",
    "[R2]",
    "O=C1**C(=O)*1",
)


def structure_table(smiles: list[str]) -> np.ndarray:
    """Per molecule: standardized descriptors and substructure counts (columns of a rule)."""
    from rdkit import Chem
    from rdkit.Chem import Crippen, Descriptors, Lipinski, rdMolDescriptors

    patterns = [Chem.MolFromSmarts(p) for p in _PATTERNS]
    rows = []
    for text in smiles:
        mol = Chem.MolFromSmiles(text)
        values = [
            Crippen.MolLogP(mol),
            rdMolDescriptors.CalcTPSA(mol),
            Descriptors.MolWt(mol),
            Lipinski.NumHDonors(mol),
            Lipinski.NumHAcceptors(mol),
            rdMolDescriptors.CalcNumRings(mol),
            rdMolDescriptors.CalcNumAromaticRings(mol),
            rdMolDescriptors.CalcFractionCSP3(mol),
            Lipinski.NumRotatableBonds(mol),
        ]
        values += [len(mol.GetSubstructMatches(p)) for p in patterns]
        rows.append(values)
    table = np.asarray(rows, dtype=np.float64)
    spread = table.std(axis=0)
    return (table - table.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


def distinct_molecules(n: int, seed: int) -> list[str]:
    """``n`` bundled molecules the default chemistry policy keeps, distinct once standardized.

    Standardized SMILES of distinct InChIKeys are returned, so the run neither rejects
    nor merges any row.
    """
    from qemlflow.chem import smiles_inchikey, standardize_smiles

    pool = bundled_smiles()
    order = np.random.default_rng(seed).permutation(len(pool))
    chosen: dict[str, str] = {}  # InChIKey (how the run finds copies) -> SMILES
    for i in order:
        result = standardize_smiles(pool[i])
        if result.mol is None:
            continue
        key = smiles_inchikey(result.smiles)
        if key and key not in chosen:
            chosen[key] = result.smiles
            if len(chosen) == n:
                break
    if len(chosen) < n:
        raise SystemExit(f"only {len(chosen)} distinct usable bundled molecules; ask for fewer")
    return list(chosen.values())


def sparse_labels(table: np.ndarray, n_tasks: int, seed: int) -> np.ndarray:
    """An (n_molecules, n_tasks) 0/1 matrix, NaN where a task did not test a molecule.

    Task kinds (by ``t % 50``): 0 has 3 labels in all, 1 has only negatives, 2 has only
    two positives; the rest label log-uniformly 200-3,000 molecules (at most 60 % of
    them) with a positive rate log-uniform in 1-40 % and 3 % of labels flipped.
    """
    rng = np.random.default_rng(seed)
    n = len(table)
    labels = np.full((n, n_tasks), np.nan)
    for t in range(n_tasks):
        weights = np.zeros(table.shape[1])
        used = rng.choice(table.shape[1], size=int(rng.integers(2, 5)), replace=False)
        weights[used] = rng.normal(0.0, 1.0, size=len(used))
        score = table @ weights + rng.normal(0.0, 0.3, size=n)  # activity of each molecule
        size = int(min(0.6 * n, np.exp(rng.uniform(np.log(200), np.log(3000)))))
        tested = rng.choice(n, size=max(size, 3), replace=False)
        rate = float(np.exp(rng.uniform(np.log(0.01), np.log(0.4))))
        cut = np.quantile(score[tested], 1.0 - rate)
        y = (score[tested] >= cut).astype(np.float64)
        flip = rng.random(len(y)) < 0.03
        y[flip] = 1.0 - y[flip]
        kind = t % 50
        if kind == 0:  # too few labels to model
            tested, y = tested[:3], np.array([1.0, 0.0, 0.0])
        elif kind == 1:  # one class only
            y[:] = 0.0
        elif kind == 2:  # two positives: some part of the split has none
            y[:] = 0.0
            y[:2] = 1.0
        labels[tested, t] = y
    return labels


def generate(n_molecules: int, n_tasks: int, seed: int) -> pd.DataFrame:
    """The benchmark set: a ``smiles`` column and tasks ``T000``, ``T001``, ..."""
    smiles = distinct_molecules(n_molecules, seed)
    labels = sparse_labels(structure_table(smiles), n_tasks, seed)
    width = len(str(n_tasks - 1))
    tasks = pd.DataFrame(labels, columns=[f"T{t:0{width}d}" for t in range(n_tasks)])
    return pd.concat([pd.DataFrame({"smiles": smiles}), tasks.astype("Int8")], axis=1)


def summarize(result: Any, seconds: float, write_seconds: float) -> dict[str, Any]:
    """The JSON summary of one run."""
    metrics = result.metrics
    aucs = [
        values.get("roc_auc")
        for values in metrics["per_task"].get("test", {}).values()
        if values.get("roc_auc") is not None
    ]

    def by_reason(found: dict[str, str]) -> dict[str, int]:
        # Reasons name counts ("3 positives"); group by their words, not their numbers.
        kinds = Counter("".join("#" if c.isdigit() else c for c in r) for r in found.values())
        return dict(kinds.most_common())

    return {
        "seconds": round(seconds, 1),
        "stages_s": {
            **{step: round(float(s), 2) for step, s in result.timings.items()},
            "write": round(write_seconds, 2),
        },
        "molecules": len(result.dataset),
        "tasks": result.dataset.n_tasks,
        "labels": int((~np.isnan(result.dataset.y)).sum()),
        "test_roc_auc_mean": round(float(np.mean(aucs)), 4) if aucs else None,
        "test_tasks_with_roc_auc": len(aucs),
        "tasks_not_modelled": len(metrics["tasks_not_modelled"]),
        "tasks_not_modelled_by_reason": by_reason(metrics["tasks_not_modelled"]),
        "tasks_not_calibrated": len(metrics.get("tasks_not_calibrated", {})),
        "tasks_not_calibrated_by_reason": by_reason(metrics.get("tasks_not_calibrated", {})),
        "calibration_fallbacks": len(metrics.get("calibration", {}).get("fallbacks", {})),
        "features": result.config.resolved()["features"],
        "estimator": result.config.model.estimator,
        "n_jobs": result.config.n_jobs,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--molecules", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0, help="of the generated set and the run")
    parser.add_argument("--n-jobs", type=int, default=None, help="the config's n_jobs")
    parser.add_argument("--n-bootstrap", type=int, default=None, help="default: the config's")
    parser.add_argument("--out", type=Path, default=None, help="folder for the CSV and results")
    parser.add_argument("--profile", type=Path, default=None, help="write cProfile stats here")
    args = parser.parse_args()

    import warnings

    from qemlflow.data import read_raw
    from qemlflow.pipeline.config import parse_config
    from qemlflow.pipeline.runner import _write_artifacts, execute
    from qemlflow.pipeline.steps import StepExecutor

    folder = args.out or Path(tempfile.mkdtemp(prefix="qemlflow-multitask-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = generate(args.molecules, args.tasks, args.seed)
    source = folder / f"multitask-{args.tasks}x{args.molecules}-seed{args.seed}.csv"
    data.to_csv(source, index=False)
    generated = time.perf_counter() - started

    config: dict[str, Any] = {"name": "multitask", "seed": args.seed}
    config["dataset"] = {"source": str(source)}
    if args.n_jobs is not None:
        config["n_jobs"] = args.n_jobs
    if args.n_bootstrap is not None:
        config["evaluation"] = {"n_bootstrap": args.n_bootstrap}
    cfg = parse_config(config)
    raw = read_raw(str(source))

    profiler = None
    if args.profile is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallbacks are counted in the summary
        # As qemlflow.run(config, out) does without a store, with the write timed apart.
        result = execute(cfg, raw, StepExecutor())
        written = time.perf_counter()
        _write_artifacts(result, folder / "results")
    finished = time.perf_counter()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(args.profile))

    summary = summarize(result, finished - started, finished - written)
    summary["generate_s"] = round(generated, 1)
    summary["results"] = str(folder / "results")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
