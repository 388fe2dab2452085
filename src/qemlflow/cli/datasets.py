"""``qemlflow datasets``: the bundled datasets."""

from __future__ import annotations

import typer
from rich.table import Table

from qemlflow.cli.render import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``datasets`` to the CLI."""

    @app.command("datasets")
    def datasets_command() -> None:
        """List the datasets bundled with QeMLflow (usable by name, no network)."""
        from qemlflow.data import list_datasets

        table = Table(title="bundled datasets")
        for column in ("name", "task", "molecules", "split", "metric"):
            table.add_column(column, no_wrap=True)
        table.add_column("targets")
        for info in list_datasets():
            targets = list(info["target_columns"])
            table.add_row(
                str(info["name"]),
                str(info["task"]),
                str(info["n_molecules"]),
                str(info["split"]),
                str(info["metric"]),
                ", ".join(targets) if len(targets) <= 2 else f"{len(targets)} tasks",
            )
        console.print(table)
