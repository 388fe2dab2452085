"""``qemlflow store``: verify, back up, restore and garbage-collect the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console

if TYPE_CHECKING:
    from qemlflow.store import BackupReport

__all__ = ["print_warnings", "register"]


def print_warnings(warnings: list[str]) -> None:
    """Print one yellow ``warning:`` line each (what is not a problem of the data)."""
    for warning in warnings:
        console.print(f"[yellow]warning: {warning}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the ``store`` command group to the CLI."""
    group = typer.Typer(help="Look after the provenance store.")
    app.add_typer(group, name="store")

    @group.command("verify")
    def verify_command(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """Re-hash every blob and resolve every reference; exit 0 only when sound."""
        from qemlflow.store.pg_roles import privilege_warnings

        with open_store(store) as opened:
            report = opened.verify()
            warnings = privilege_warnings(opened.db)
        if as_json:
            typer.echo(json.dumps({**report.to_dict(), "warnings": warnings}, indent=2))
        else:
            print_warnings(warnings)
            for issue in report.issues:
                console.print(f"[red]{issue.object}: {issue.problem}[/]", highlight=False)
            for run_id in report.aborted_runs:
                console.print(f"[yellow]run {run_id} marked aborted (its process is gone)[/]")
            verdict = "[bold green]sound[/]" if report.ok else "[bold red]NOT sound[/]"
            console.print(
                f"store {verdict}: {report.blobs_checked} blobs re-hashed, "
                f"{report.references_checked} references resolved, {len(report.issues)} problems"
            )
        raise typer.Exit(0 if report.ok else 1)

    @group.command("migrate")
    def migrate_command(
        store: StoreOption = None,
        owner_url: Annotated[
            str | None,
            typer.Option(
                "--owner-url",
                help="PostgreSQL: the store's database as a superuser or a member of "
                "qemlflow_owner (default: $QEMLFLOW_OWNER_DATABASE_URL; else the store's URL).",
            ),
        ] = None,
    ) -> None:
        """Bring the schema to this version's head; on PostgreSQL also set up the
        qemlflow_owner and qemlflow_app roles (idempotent)."""
        from qemlflow.store import Store, StoreError

        opened = Store.open(store, owner_url=owner_url, secure_roles=True)
        try:
            if owner_url is not None and opened.backend != "postgresql":
                raise StoreError(
                    "--owner-url is for PostgreSQL stores; this store's metadata is SQLite",
                    "leave --owner-url out",
                )
            revision = opened.schema_revision()
            roles = (
                " (roles qemlflow_owner, qemlflow_app set)"
                if opened.backend == "postgresql"
                else ""
            )
            console.print(f"store schema at revision {revision}{roles}: {opened.database_url}")
        finally:
            opened.close()

    @group.command("backup")
    def backup_command(
        dest: Annotated[Path, typer.Argument(help="A new folder for the backup.")],
        store: StoreOption = None,
    ) -> None:
        """Copy metadata and blobs to DEST, then verify the copy."""
        with open_store(store) as opened:
            report = opened.backup(dest)
        _print_copy(report, f"backup written to [bold]{dest}[/]")

    @group.command("restore")
    def restore_command(
        src: Annotated[Path, typer.Argument(help="A folder written by 'store backup'.")],
        store: StoreOption = None,
    ) -> None:
        """Restore a backup into an empty store, then verify the round trip."""
        with open_store(store) as opened:
            report = opened.restore(src)
        _print_copy(report, f"restored from [bold]{src}[/]")

    @group.command("gc")
    def gc_command(
        store: StoreOption = None,
        grace: Annotated[
            float, typer.Option("--grace", help="Keep unreferenced blobs younger than this (s).")
        ] = 3600.0,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list them.")] = False,
    ) -> None:
        """Remove blobs that nothing references (never a referenced one)."""
        with open_store(store) as opened:
            removed = opened.gc(grace_seconds=grace, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        console.print(f"{verb} {len(removed)} unreferenced blobs")


def _print_copy(report: BackupReport, what: str) -> None:
    rows = sum(report.tables.values())
    console.print(f"{what}: {rows} rows, {report.blobs} blobs ({report.bytes} bytes), verified")
    if not report.ok:
        for problem in report.problems:
            console.print(f"[red]{problem}[/]", highlight=False)
        raise typer.Exit(1)
