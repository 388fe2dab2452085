"""``qemlflow benchmark``: MoleculeNet datasets and models, beside the literature."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qemlflow.cli.options import StoreOption, open_store
from qemlflow.cli.render import console

if TYPE_CHECKING:
    from qemlflow.benchmark import BenchmarkResult

__all__ = ["register"]


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [part.strip() for part in value.split(",") if part.strip()]
    return names or None


def _command(
    suite: str,
    models: str | None,
    datasets: str | None,
    seeds: int,
    n_jobs: int,
    out: Path,
    tune_trials: int | None = None,
) -> str:
    """The command line as parsed (recorded in the report, so it can be rerun)."""
    words = ["qemlflow", "benchmark", "--suite", suite]
    if models:
        words += ["--models", models]
    if datasets:
        words += ["--datasets", datasets]
    words += ["--seeds", str(seeds), "--n-jobs", str(n_jobs)]
    if tune_trials is not None:
        words += ["--tune-trials", str(tune_trials)]
    words += ["--out", str(out)]
    return shlex.join(words)


def _announce(dataset: str, model: str, seed: int, entry: dict[str, Any] | None) -> None:
    if entry is None:
        console.print(f"[dim]running[/] {dataset} / {model} / seed {seed} ...", highlight=False)
    else:
        tuning = entry.get("tuning")
        searched = f", {tuning['trials']} trials in {tuning['seconds']:.0f} s" if tuning else ""
        console.print(
            f"  {dataset} / {model} / seed {seed}: {entry['value']:.4f} "
            f"({entry['seconds']:.0f} s{searched})",
            highlight=False,
        )


def _summary(result: BenchmarkResult) -> None:
    from rich.table import Table

    table = Table(title=f"{result.suite} benchmark")
    for column in ("dataset", "model", "metric", "mean ± sd", "seeds", "vs literature"):
        table.add_column(column, no_wrap=True)
    flags = []
    for dataset, models in result.results.items():
        for name, entry in models.items():
            check = entry.get("literature_check") or {}
            table.add_row(
                dataset,
                name,
                str(entry["metric"]),
                f"{entry['mean']:.3f} ± {entry['sd']:.3f}",
                str(entry["n_seeds"]),
                str(check.get("verdict", "n/a")),
            )
            if check.get("verdict") == "suspicious":
                flags.append(f"{dataset} / {name}: {check['reason']}")
    console.print(table)
    for flag in flags:
        console.print(f"[bold red]suspicious[/] {flag}", highlight=False)
    console.print(
        f"{len(result.computed)} runs computed, {len(result.reused)} reused; "
        f"{result.wall_s:.0f} s. Report: [bold]{result.files[1]}[/]"
    )


def register(app: typer.Typer) -> None:
    """Add ``benchmark`` to the CLI."""

    @app.command("benchmark")
    def benchmark_command(
        suite: Annotated[str, typer.Option("--suite", help="Benchmark suite.")] = "moleculenet",
        models: Annotated[
            str | None,
            typer.Option(
                "--models",
                help="Comma-separated benchmark models (default: default,dmpnn; the other "
                "classical candidates: lightgbm, lightgbm_rdkit2d, lightgbm_physchem, "
                "lightgbm_ecfp, random_forest, knn_tanimoto; "
                "tuned and ensembled: tuned_lightgbm, ensemble_classical, ensemble_gbdt_dmpnn, "
                "lightgbm_rich, ensemble_rich_gbdt_dmpnn, ensemble_rich_gbdt_dmpnn5 (five "
                "D-MPNNs), lightgbm_rich_plus (+ Avalon and ErG), ensemble_views_gbdt_dmpnn "
                "(two LightGBM views and the D-MPNN); lightgbm_raw and dmpnn_raw read the "
                "SMILES as written (the controls for notation shortcuts); "
                "dmpnn_quick is the CI check).",
                show_default=False,
            ),
        ] = None,
        datasets: Annotated[
            str | None,
            typer.Option(
                "--datasets",
                help="Comma-separated datasets of the suite (default: all of them).",
                show_default=False,
            ),
        ] = None,
        seeds: Annotated[int, typer.Option("--seeds", help="Seeds 0..N-1 per cell.")] = 3,
        n_jobs: Annotated[int, typer.Option("--n-jobs", help="Parallel jobs per run.")] = 1,
        tune_trials: Annotated[
            int | None,
            typer.Option(
                "--tune-trials",
                help="Trials per cell of a tuned model (tuned_lightgbm), searched inside the "
                "training part (default 30); part of the cell's digest.",
                show_default=False,
            ),
        ] = None,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for the report (JSON, Markdown, PNG).")
        ] = Path("benchmarks-out"),
        store: StoreOption = None,
    ) -> None:
        """Run MoleculeNet datasets with their recommended split and metric over seeds.

        Results already in OUT/<suite>.json with the same configuration are reused, so a
        run can be resumed or extended with more models or seeds.
        """
        from qemlflow.benchmark import run_benchmark
        from qemlflow.benchmark.suite import DEFAULT_TUNE_TRIALS

        command = _command(suite, models, datasets, seeds, n_jobs, out, tune_trials)
        with open_store(store) as opened:
            result = run_benchmark(
                out,
                suite=suite,
                models=_names(models),
                datasets=_names(datasets),
                seeds=seeds,
                n_jobs=n_jobs,
                store=opened,
                command=command,
                on_cell=_announce,
                tune_trials=DEFAULT_TUNE_TRIALS if tune_trials is None else tune_trials,
            )
        _summary(result)
