"""``qemlflow data``: add, list and show dataset versions in the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from qemlflow.cli.options import (
    HeaderOption,
    JsonOption,
    SmilesColumnOption,
    StoreOption,
    open_store,
)
from qemlflow.cli.render import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the CLI."""
    data = typer.Typer(help="Dataset versions: validated, standardized, immutable.")
    app.add_typer(data, name="data")

    @data.command("add")
    def add_command(
        source: Annotated[str, typer.Argument(help="A data file, or a bundled dataset name.")],
        smiles: SmilesColumnOption = None,
        target: Annotated[
            list[str] | None, typer.Option("--target", help="Label column (repeatable).")
        ] = None,
        task: Annotated[
            str | None, typer.Option("--task", help="regression or classification.")
        ] = None,
        duplicates: Annotated[
            str, typer.Option("--duplicates", help="mean, first or drop_conflicting.")
        ] = "mean",
        header: HeaderOption = None,
        store: StoreOption = None,
    ) -> None:
        """Validate and standardize a dataset and store it as a version."""
        from qemlflow.pipeline.datasets import add_dataset_version

        with open_store(store) as opened:
            record, dataset = add_dataset_version(
                opened,
                source,
                smiles_column=smiles,
                target_columns=target,
                task=task,
                duplicates=duplicates,
                **({"header": header} if header is not None else {}),
            )
        summary = dataset.summary()
        console.print(f"dataset version [bold]{record.id[:12]}[/] ({record.name})")
        console.print(
            f"{summary['rows']} rows -> {summary['molecules']} molecules, "
            f"{summary['rejected']} rejected, {summary['merged']} merged duplicates"
        )
        for reason, count in sorted(summary.get("rejected_by_reason", {}).items()):
            console.print(f"  rejected {reason}: {count}")
        if conflicts := summary.get("duplicates", {}).get("label_conflicts"):
            console.print(f"  label conflicts among merged duplicates: {conflicts}")

    @data.command("list")
    def list_command(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """List dataset versions, newest first."""
        with open_store(store) as opened:
            records = opened.list_datasets()
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
            return
        table = Table(title="dataset versions")
        for column in ("version", "name", "molecules", "rejected", "task", "added"):
            table.add_column(column, no_wrap=column in ("version", "added"))
        for r in records:
            table.add_row(
                r.id[:12],
                r.name,
                str(r.summary.get("molecules", "")),
                str(r.summary.get("rejected", "")),
                str(r.summary.get("task", "")),
                r.created_at[:19],
            )
        console.print(table)

    @data.command("show")
    def show_command(
        version: Annotated[str, typer.Argument(help="Version id or a unique prefix.")],
        store: StoreOption = None,
    ) -> None:
        """Show one dataset version: source, digests, options and counts."""
        with open_store(store) as opened:
            record = opened.get_dataset(version)
        typer.echo(json.dumps(record.to_dict(), indent=2))
