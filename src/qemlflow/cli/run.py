"""``qemlflow run`` and ``qemlflow demo``: fit and evaluate an experiment."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from qemlflow.cli.options import StoreOption, open_store
from qemlflow.cli.render import RichProgress, console, metrics_table

__all__ = ["DEMO_CONFIG", "register"]

DEMO_CONFIG = "esol.yaml"

NJobsOption = Annotated[
    int | None, typer.Option("--n-jobs", help="Parallel jobs (default: the config's n_jobs).")
]
RecordOption = Annotated[
    bool, typer.Option("--record/--no-record", help="Record the run in the store.")
]


def _run(
    config: Path | str, out: Path, n_jobs: int | None, store: str | None, record: bool
) -> None:
    from qemlflow.pipeline.config import load_config, parse_config
    from qemlflow.pipeline.runner import run

    cfg = load_config(config)
    if n_jobs is not None:  # validated like the config's own n_jobs
        cfg = parse_config({**cfg.model_dump(), "n_jobs": n_jobs}, source="--n-jobs")
    if not record:
        with RichProgress.create() as display:
            result = run(cfg, out, progress=RichProgress(display))
    else:
        with open_store(store) as opened, RichProgress.create() as display:
            result = run(cfg, out, store=opened, progress=RichProgress(display))
    console.print(metrics_table(result.metrics, f"{cfg.name} ({result.dataset.task})"))
    hits = result.cache_hits
    if hits:
        console.print(f"cache hits: {', '.join(hits)}")
    if result.run_id:
        console.print(f"run [bold]{result.run_id}[/] recorded")
    rejected = len(result.dataset.rejected)
    if rejected:
        console.print(f"[yellow]{rejected} input rows rejected[/]: see {out / 'rejected.csv'}")
    console.print(f"results written to [bold]{out}[/]")


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``demo`` to the CLI."""

    @app.command("run")
    def run_command(
        config: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")] = Path(
            "qemlflow-run"
        ),
        n_jobs: NJobsOption = None,
        store: StoreOption = None,
        record: RecordOption = True,
    ) -> None:
        """Run an experiment: dataset -> standardize -> featurize -> split -> fit -> evaluate."""
        _run(config, out, n_jobs, store, record)

    @app.command("demo")
    def demo_command(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")] = Path(
            "qemlflow-demo"
        ),
        n_jobs: NJobsOption = None,
        store: StoreOption = None,
        record: RecordOption = True,
    ) -> None:
        """Run the shipped default experiment (LightGBM on bundled ESOL solubility)."""
        config = resources.files("qemlflow.configs").joinpath(DEMO_CONFIG)
        with resources.as_file(config) as path:
            _run(path, out, n_jobs, store, record)
