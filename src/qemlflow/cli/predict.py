"""``qemlflow predict``: score new molecules with a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    """Add ``predict`` to the CLI."""

    @app.command("predict")
    def predict_command(
        model: ModelArgument,
        input: MoleculesArgument,
        trust_file: TrustFileOption = False,
        store: StoreOption = None,
        output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")] = Path(
            "predictions.csv"
        ),
        smiles_column: SmilesColumnOption = None,
        id_column: IdColumnOption = None,
        header: HeaderOption = None,
        n_jobs: Annotated[int, typer.Option("--n-jobs", help="Parallel featurization jobs.")] = 1,
    ) -> None:
        """Score molecules; one output row per input row, invalid ones marked in 'error'.

        With --id-column, the ids come first in an 'id' column.
        """
        from rich.markup import escape

        from qemlflow.pipeline.model_source import open_model
        from qemlflow.pipeline.predict import predict_file

        with open_store(store) as opened:
            chosen = open_model(model, opened, trust_file=trust_file, purpose="predict")
        table = predict_file(
            chosen,
            input,
            output,
            smiles_column=smiles_column,
            id_column=id_column,
            header=header,
            n_jobs=n_jobs,
        )
        # Which model scored, once it has: a failed command prints its error line alone.
        error_console.print(escape(chosen.describe()), highlight=False, soft_wrap=True)
        failed = int((table["error"] != "").sum())
        console.print(
            f"{len(table)} molecules scored into [bold]{output}[/]"
            + (f", [yellow]{failed} invalid[/] (see the 'error' column)" if failed else "")
        )
