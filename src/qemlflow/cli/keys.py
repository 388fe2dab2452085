"""``qemlflow keys``: create, revoke and list API keys (stored hashed)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console, error_console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the ``keys`` command group to the CLI."""
    group = typer.Typer(help="API keys for the prediction service (only hashes are stored).")
    app.add_typer(group, name="keys")

    @group.command("create")
    def create_command(
        name: Annotated[str, typer.Argument(help="Who or what will use the key.")],
        store: StoreOption = None,
    ) -> None:
        """Create an API key and print it once."""
        with open_store(store) as opened:
            record, key = opened.create_api_key(name)
        typer.echo(key)
        error_console.print(
            f"[yellow]warning:[/] API key {record.id} ({record.name}) is shown this once and "
            "cannot be recovered; store it in a secret manager",
            highlight=False,
        )

    @group.command("revoke")
    def revoke_command(
        key_id: Annotated[str, typer.Argument(help="Key id (qk_...).")],
        reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
        store: StoreOption = None,
    ) -> None:
        """Revoke an API key: every running service refuses it within 1 second."""
        with open_store(store) as opened:
            record = opened.revoke_api_key(key_id, reason)
        console.print(
            f"API key {record.id} ({record.name}) revoked at {record.revoked_at}; "
            "running services refuse it within 1 s"
        )

    @group.command("list")
    def list_command(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """List API keys (never their secrets)."""
        with open_store(store) as opened:
            records = opened.list_api_keys()
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
            return
        table = Table(title="API keys")
        for column in ("id", "name", "created", "by", "status"):
            table.add_column(column, no_wrap=True)
        for r in records:
            status = (
                f"[red]revoked[/] {(r.revoked_at or '')[:19]}"
                if r.revoked_at
                else "[green]active[/]"
            )
            table.add_row(r.id, r.name, r.created_at[:19], r.created_by, status)
        console.print(table if records else "no API keys")
