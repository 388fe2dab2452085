"""``qemlflow suggest``: rank a pool of candidates for the next round of experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from qemlflow.cli.options import (
    HeaderOption,
    IdColumnOption,
    ModelArgument,
    MoleculesArgument,
    SmilesColumnOption,
    StoreOption,
    TrustFileOption,
    open_store,
)
from qemlflow.cli.render import console, error_console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``suggest`` to the CLI."""

    @app.command("suggest")
    def suggest_command(
        model: ModelArgument,
        pool: MoleculesArgument,
        n: Annotated[int, typer.Option("-n", "--number", help="Molecules to suggest (K).")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: a .csv.")],
        acquisition: Annotated[
            str,
            typer.Option(
                "--acquisition",
                help="greedy (prediction), uncertainty, ucb (prediction + beta * sd) or ei "
                "(expected improvement over the best training label).",
            ),
        ] = "ucb",
        beta: Annotated[float, typer.Option("--beta", help="UCB weight of the sd.")] = 1.0,
        max_similarity: Annotated[
            float,
            typer.Option(
                "--max-similarity",
                help="Largest ECFP4 Tanimoto similarity between two suggested molecules "
                "(1: no constraint).",
            ),
        ] = 0.7,
        maximize: Annotated[
            bool,
            typer.Option("--maximize/--minimize", help="Whether high values are better."),
        ] = True,
        best_observed: Annotated[
            float | None,
            typer.Option(
                "--best-observed",
                help="Best label so far, for ei (default: from the model's run in the store).",
            ),
        ] = None,
        target: Annotated[
            str | None, typer.Option("--target", help="Task ranked by (models of several).")
        ] = None,
        trust_file: TrustFileOption = False,
        smiles_column: SmilesColumnOption = None,
        id_column: IdColumnOption = None,
        header: HeaderOption = None,
        store: StoreOption = None,
    ) -> None:
        """Write the K best molecules of POOL for the next experiment, best first."""
        import warnings

        from qemlflow.pipeline.model_source import open_model
        from qemlflow.suggest import suggest

        with open_store(store) as opened, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                chosen = open_model(model, opened, trust_file=trust_file, purpose="suggest")
                error_console.print(escape(chosen.describe()), highlight=False, soft_wrap=True)
                result = suggest(
                    chosen,
                    pool,
                    output,
                    n,
                    acquisition=acquisition,
                    maximize=maximize,
                    beta=beta,
                    max_similarity=max_similarity,
                    best_observed=best_observed,
                    target=target,
                    store=opened,
                    smiles_column=smiles_column,
                    id_column=id_column,
                    header=header,
                )
            finally:
                for warning in caught:
                    error_console.print(
                        f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False
                    )
        best = (
            f", best observed {result.best_observed:g} ({result.best_observed_source})"
            if result.best_observed is not None
            else ""
        )
        side = escape(str(result.rejected_output))
        console.print(
            f"{result.written:,} of {result.rows:,} molecules suggested into "
            f"[bold]{escape(str(result.output))}[/] by {acquisition} "
            f"(uncertainty: {result.uncertainty}{best})"
            + (f", [yellow]{result.rejected:,} rejected[/] (see {side})" if result.rejected else "")
            + f"; sha256 {result.output_digest[:12]}",
            highlight=False,
        )
