"""``qemlflow predict``: score new molecules with a fitted model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qemlflow.cli.render import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``predict`` to the CLI."""

    @app.command("predict")
    def predict_command(
        model: Annotated[Path, typer.Argument(help="A model file or a run output folder.")],
        input: Annotated[Path, typer.Argument(help="Molecules: CSV/TSV/SMI (.gz), SDF, Parquet.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")] = Path(
            "predictions.csv"
        ),
        smiles_column: Annotated[
            str | None, typer.Option("--smiles", help="SMILES column (default: detected).")
        ] = None,
        n_jobs: Annotated[int, typer.Option("--n-jobs", help="Parallel featurization jobs.")] = 1,
    ) -> None:
        """Score molecules; one output row per input row, invalid ones marked in 'error'."""
        from qemlflow.pipeline.predict import predict_file

        table = predict_file(model, input, output, smiles_column=smiles_column, n_jobs=n_jobs)
        failed = int((table["error"] != "").sum())
        console.print(
            f"{len(table)} molecules scored into [bold]{output}[/]"
            + (f", [yellow]{failed} invalid[/] (see the 'error' column)" if failed else "")
        )
