"""``qemlflow tune``: search an experiment's hyperparameters, then run the best."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from qemlflow.cli.options import StoreOption, open_store
from qemlflow.cli.render import console, error_console, metrics_table

if TYPE_CHECKING:
    from qemlflow.tune import TrialRecord

__all__ = ["register"]


def _show_trial(record: TrialRecord) -> None:
    score = "-" if record.score is None else f"{record.score:.4f}"
    error_console.print(
        f"trial {record.number}: {record.state} {score}  run {record.run_id}", highlight=False
    )


def register(app: typer.Typer) -> None:
    """Add ``tune`` to the CLI."""

    @app.command("tune")
    def tune_command(
        config: Annotated[Path, typer.Argument(help="Experiment YAML file (its tune: section).")],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for best.yaml, study.json, best-run/.")
        ],
        trials: Annotated[
            int | None,
            typer.Option(
                "--trials",
                min=1,
                help="Trials the study holds when done, resumed ones counted "
                "(default: the config's tune.trials).",
            ),
        ] = None,
        timeout: Annotated[
            float | None,
            typer.Option("--timeout", min=0.0, help="Start no new trial after this many seconds."),
        ] = None,
        n_jobs: Annotated[
            int | None,
            typer.Option(
                "--n-jobs",
                help="Threads of each trial's featurizer and model (the config's n_jobs); "
                "trials run one after another, which keeps the search deterministic.",
            ),
        ] = None,
        store: StoreOption = None,
    ) -> None:
        """Tune an experiment with seeded TPE on its training part; run the best config."""
        from qemlflow.errors import ConfigError
        from qemlflow.pipeline.config import load_config, parse_config
        from qemlflow.tune import tune

        cfg = load_config(config)
        trials = trials or (cfg.tune.trials if cfg.tune else None)
        if trials is None:
            raise ConfigError(
                "how many trials to run is not given",
                "pass --trials N, or set tune.trials in the experiment file",
            )
        if n_jobs is not None:  # validated like the config's own n_jobs
            cfg = parse_config({**cfg.model_dump(), "n_jobs": n_jobs}, source="--n-jobs")
        with open_store(store) as opened:
            result = tune(
                cfg, out, trials=trials, store=opened, timeout=timeout, on_trial=_show_trial
            )
        best = result.best
        console.print(
            f"study [bold]{result.study}[/]: {len(result.trials)} trials "
            f"({result.new_trials} new), {result.metric} on the {result.scored_on}"
        )
        console.print(f"best trial {best.number}: {result.metric} {best.score:.4f}")
        console.print(
            metrics_table(
                result.final.metrics, f"best config, test part (run {result.final.run_id})"
            )
        )
        console.print(f"best config written to [bold]{out / 'best.yaml'}[/]")
        console.print(f"study written to [bold]{out / 'study.json'}[/]")
