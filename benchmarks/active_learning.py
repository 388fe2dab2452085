"""Active learning, retrospectively: does ``suggest`` find the best molecules faster than chance?

For each bundled regression set, a campaign starts from a seeded random 5 % of the
molecules (their labels "measured"), then runs ``--rounds`` rounds: fit the model on the
labelled molecules, ask :func:`qemlflow.suggest.rank_pool` (the function behind
``qemlflow suggest``) for the next batch from the unlabelled rest, reveal those labels. The
baseline picks each batch at random. After each round we count how many of the top-1 %
molecules (by true label, in the stated direction) have been found.

- *found*: fraction of the top-1 % molecules among the labelled ones;
- *enrichment*: found / fraction of the data labelled (random selection: about 1).

The model is the project's :class:`~qemlflow.models.MolecularModel` (LightGBM, 200 trees,
learning rate 0.1, on ECFP4 bits; its uncertainty is the conformal interval, CV+ up to 500
labelled molecules, so it varies per molecule; cross-conformal above, where it is one
width for all and ``ucb``/``ei`` rank as ``greedy`` does).

    python benchmarks/active_learning.py                         # the full run (minutes)
    python benchmarks/active_learning.py --quick                 # ESOL, 1 seed, 3 rounds
    python benchmarks/active_learning.py --datasets esol --seeds 0 1 2 --json al.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "benchmarks"
DIRECTIONS = {"esol": True, "freesolv": False, "lipophilicity": True}
"""Whether each set's top molecules are its highest labels (True) or lowest (False): the
most soluble (ESOL log S), the most negative hydration free energy (FreeSolv), the highest
log D (Lipophilicity)."""
MODEL_PARAMS: dict[str, Any] = {"n_estimators": 200, "learning_rate": 0.1}
STRATEGIES = ("random", "greedy", "ucb", "ei")


@dataclass(frozen=True)
class Campaign:
    """One active-learning campaign's trajectory."""

    dataset: str
    strategy: str
    seed: int
    labelled: list[int]
    """Molecules labelled after each round (index 0: the initial set)."""
    found: list[float]
    """Fraction of the top-1 % found after each round."""
    constant_sigma_rounds: int
    """Rounds where the model's uncertainty was one value for every molecule."""
    seconds: float


def top_molecules(y: NDArray[np.float64], maximize: bool, fraction: float = 0.01) -> set[int]:
    """The indices of the best ``fraction`` of ``y`` (at least one; ties: the earlier row)."""
    n_top = max(1, round(fraction * len(y)))
    keys = -y if maximize else y
    order = np.lexsort((np.arange(len(y)), keys))
    return {int(i) for i in order[:n_top]}


def run_campaign(
    smiles: list[str],
    y: NDArray[np.float64],
    X: NDArray[Any],
    *,
    strategy: str,
    seed: int,
    maximize: bool,
    rounds: int = 10,
    initial: float = 0.05,
    batch: float = 0.02,
    max_similarity: float = 0.7,
    beta: float = 1.0,
    model_params: dict[str, Any] | None = None,
    dataset: str = "",
) -> Campaign:
    """Run one campaign: ``strategy`` is ``random`` or an acquisition of ``suggest``.

    The initial set depends on ``seed`` only, so every strategy starts from the same
    molecules; ``X`` is the ECFP4 matrix of ``smiles`` (what the model is fitted on; the
    pool is scored from its SMILES by ``rank_pool``, as ``qemlflow suggest`` scores it).
    """
    from qemlflow.features import ECFP
    from qemlflow.models import MolecularModel
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.suggest import rank_pool

    began = time.perf_counter()
    n = len(smiles)
    top = top_molecules(y, maximize)
    rng = np.random.default_rng(seed)
    labelled = [int(i) for i in rng.permutation(n)[: max(2, round(initial * n))]]
    k = max(1, round(batch * n))
    picker = np.random.default_rng(seed + 1_000)  # the random baseline's own stream
    spec = ECFP().to_spec()
    sizes = [len(labelled)]
    found = [len(top.intersection(labelled)) / len(top)]
    constant = 0
    for _ in range(rounds):
        chosen = set(labelled)
        pool = [i for i in range(n) if i not in chosen]
        if not pool:
            break
        if strategy == "random":
            batch_rows = [pool[int(j)] for j in picker.choice(len(pool), min(k, len(pool)), False)]
        else:
            model = MolecularModel(
                "lightgbm", params=model_params or MODEL_PARAMS, random_state=seed, n_jobs=1
            ).fit(X[labelled], y[labelled])
            predictor = Predictor(model, spec, "regression", ["y"], standardize=False)
            observed = y[labelled]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                ranked = rank_pool(
                    predictor,
                    [smiles[i] for i in pool],
                    k,
                    acquisition=strategy,
                    maximize=maximize,
                    beta=beta,
                    best_observed=float(observed.max() if maximize else observed.min()),
                    max_similarity=max_similarity,
                )
            constant += any("the same for every molecule" in str(w.message) for w in caught)
            batch_rows = [pool[int(r)] for r in ranked.rows]
        labelled += batch_rows
        sizes.append(len(labelled))
        found.append(len(top.intersection(labelled)) / len(top))
    return Campaign(dataset, strategy, seed, sizes, found, constant, time.perf_counter() - began)


def _load(name: str) -> tuple[list[str], NDArray[np.float64], NDArray[Any]]:
    from qemlflow.data import load_dataset
    from qemlflow.features import ECFP

    data = load_dataset(name)
    y = np.asarray(data.y, dtype=np.float64).reshape(len(data.smiles), -1)[:, 0]
    keep = ~np.isnan(y)
    smiles = [s for s, ok in zip(data.smiles, keep, strict=True) if ok]
    return smiles, y[keep], ECFP().fit_transform(smiles)


def summarize(campaigns: list[Campaign], n: int) -> dict[str, Any]:
    """Per strategy and round: found and enrichment, mean and sd over seeds."""
    out: dict[str, Any] = {}
    for strategy in sorted({c.strategy for c in campaigns}, key=STRATEGIES.index):
        runs = [c for c in campaigns if c.strategy == strategy]
        found = np.array([c.found for c in runs])
        labelled = np.array([c.labelled for c in runs]) / n
        enrichment = found / labelled
        out[strategy] = {
            "labelled_fraction": labelled.mean(axis=0).round(4).tolist(),
            "found_mean": found.mean(axis=0).round(4).tolist(),
            "found_sd": found.std(axis=0, ddof=1 if len(runs) > 1 else 0).round(4).tolist(),
            "enrichment_mean": enrichment.mean(axis=0).round(3).tolist(),
            "enrichment_sd": enrichment.std(axis=0, ddof=1 if len(runs) > 1 else 0)
            .round(3)
            .tolist(),
            "constant_sigma_rounds": sum(c.constant_sigma_rounds for c in runs),
            "seconds": round(sum(c.seconds for c in runs), 1),
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    """The final-round table (found, enrichment; mean ± sd over seeds) as Markdown."""
    lines = [
        "| dataset | top 1 % (direction) | strategy | labelled | found (mean ± sd) "
        "| enrichment | seconds |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in results["datasets"].items():
        direction = "highest" if entry["maximize"] else "lowest"
        for strategy, s in entry["strategies"].items():
            lines.append(
                f"| {name} | {entry['n_top']} of {entry['n']} ({direction}) | {strategy} "
                f"| {s['labelled_fraction'][-1]:.0%} "
                f"| {s['found_mean'][-1]:.2f} ± {s['found_sd'][-1]:.2f} "
                f"| {s['enrichment_mean'][-1]:.2f} ± {s['enrichment_sd'][-1]:.2f} "
                f"| {s['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per dataset: fraction of the top 1 % found against round, mean ± sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        entry = results["datasets"][name]
        for strategy, s in entry["strategies"].items():
            x = np.array(s["labelled_fraction"]) * 100
            mean, sd = np.array(s["found_mean"]), np.array(s["found_sd"])
            style = "--" if strategy == "random" else "-"
            ax.plot(x, mean, style, marker="o", markersize=3, label=strategy)
            ax.fill_between(x, mean - sd, mean + sd, alpha=0.15)
        direction = "max" if entry["maximize"] else "min"
        ax.set_title(f"{name} ({entry['n_top']} top-1 % molecules, {direction})")
        ax.set_xlabel("molecules labelled (% of the set)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of the top 1 % found")
    axes[0][-1].legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DIRECTIONS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--initial", type=float, default=0.05, help="fraction labelled first")
    parser.add_argument("--batch", type=float, default=0.02, help="fraction added per round")
    parser.add_argument("--max-similarity", type=float, default=0.7)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="ESOL, one seed, three rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--markdown", type=Path, help="write the final-round table here")
    parser.add_argument("--figure", type=Path, help="write the curves here (PNG)")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.seeds, args.rounds = ["esol"], [0], 3
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    results: dict[str, Any] = {
        "settings": {
            "rounds": args.rounds,
            "initial": args.initial,
            "batch": args.batch,
            "max_similarity": args.max_similarity,
            "beta": args.beta,
            "seeds": args.seeds,
            "model": {"estimator": "lightgbm", "params": MODEL_PARAMS, "features": "ecfp4"},
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),
        },
        "datasets": {},
    }
    for name in args.datasets:
        smiles, y, X = _load(name)
        maximize = DIRECTIONS.get(name, True)
        campaigns = []
        for seed in args.seeds:
            for strategy in args.strategies:
                campaign = run_campaign(
                    smiles,
                    y,
                    X,
                    strategy=strategy,
                    seed=seed,
                    maximize=maximize,
                    rounds=args.rounds,
                    initial=args.initial,
                    batch=args.batch,
                    max_similarity=args.max_similarity,
                    beta=args.beta,
                    dataset=name,
                )
                campaigns.append(campaign)
                print(
                    f"{name} seed {seed} {strategy:<7} found "
                    + " ".join(f"{f:.2f}" for f in campaign.found)
                    + f"  ({campaign.seconds:.0f} s)",
                    flush=True,
                )
        results["datasets"][name] = {
            "n": len(smiles),
            "n_top": len(top_molecules(y, maximize)),
            "maximize": maximize,
            "strategies": summarize(campaigns, len(smiles)),
            "campaigns": [
                {"strategy": c.strategy, "seed": c.seed, "labelled": c.labelled, "found": c.found}
                for c in campaigns
            ],
        }
    table = markdown(results)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(table, encoding="utf-8")
    if args.figure:
        plot(results, args.figure)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
