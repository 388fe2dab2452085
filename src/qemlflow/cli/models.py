"""``qemlflow models``: register, promote, roll back, list and show model versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]


def _metric(metrics: dict[str, Any]) -> str:
    for key in ("rmse", "roc_auc"):
        value = metrics.get(key)
        if isinstance(value, float):
            return f"{key} {value:.3f}"
    return ""


def register(app: typer.Typer) -> None:
    """Add the ``models`` command group to the CLI."""
    group = typer.Typer(help="The model registry: versions, aliases, gated promotion.")
    app.add_typer(group, name="models")

    @group.command("register")
    def register_command(
        run: Annotated[str, typer.Argument(help="A finished run id or a unique prefix.")],
        name: Annotated[str, typer.Option("--name", help="Model name, e.g. solubility.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Register a run's model as the next version of NAME (immutable)."""
        from qemlflow.registry import register as register_run

        with open_store(store) as opened:
            version = register_run(opened, run, name)
        if as_json:
            typer.echo(json.dumps(version.to_dict(), indent=2))
            return
        console.print(
            f"registered [bold]{version.spec}[/] from run {version.run_id} "
            f"(model {version.model_digest[:12]})"
        )

    @group.command("promote")
    def promote_command(
        name: Annotated[str, typer.Argument(help="Model name.")],
        version: Annotated[int, typer.Argument(help="Version number to promote.")],
        to: Annotated[str, typer.Option("--to", help="Alias to move.")] = "production",
        policy: Annotated[
            Path | None,
            typer.Option(
                "--policy",
                help="Promotion policy (YAML or JSON): metric thresholds, approvals "
                "({count: k, meaning: approved}), require_signature. Added on top of the "
                "experiment's policy: it can add gates, never weaken them.",
            ),
        ] = None,
        reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
        override: Annotated[
            bool,
            typer.Option(
                "--override",
                help="Apply --policy instead of the experiment's policy (admins only; "
                "needs --reason; audited).",
            ),
        ] = False,
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Run the promotion gates; when they pass, point NAME@ALIAS at VERSION."""
        from qemlflow.registry import promote

        with open_store(store) as opened:
            result = promote(
                opened, name, version, to, policy_file=policy, reason=reason, override=override
            )
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
            return
        console.print(f"policy: {result.policy_source}", highlight=False)
        for note in result.weakened:
            console.print(f"[yellow]kept[/] {note}", highlight=False)
        if result.applied is not None and result.applied.override:
            console.print(
                f"[yellow]override[/] of the experiment's policy: {result.applied.override_reason}",
                highlight=False,
            )
        for gate in result.gates:
            console.print(f"[green]passed[/] {gate.gate}: {gate.detail}", highlight=False)
        before = "nothing" if result.previous is None else f"version {result.previous}"
        console.print(f"[bold]{name}@{to}[/] -> version {version} (was {before})")

    @group.command("rollback")
    def rollback_command(
        name: Annotated[str, typer.Argument(help="Model name.")],
        alias: Annotated[str, typer.Option("--alias", help="Alias to move back.")] = "production",
        reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
        store: StoreOption = None,
    ) -> None:
        """Move NAME@ALIAS back to the version it pointed at before."""
        from qemlflow.registry import rollback

        with open_store(store) as opened:
            version = rollback(opened, name, alias, reason)
        console.print(f"[bold]{name}@{alias}[/] rolled back to version {version.version}")

    @group.command("list")
    def list_command(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """List registered models: versions, latest, aliases."""
        from qemlflow.registry import list_models

        with open_store(store) as opened:
            models = list_models(opened)
        if as_json:
            typer.echo(json.dumps(models, indent=2))
            return
        table = Table(title="models")
        for column in ("name", "versions", "latest", "task", "aliases"):
            table.add_column(column, no_wrap=True)
        for m in models:
            aliases = ", ".join(f"{a}={v}" for a, v in m["aliases"].items())
            table.add_row(m["name"], str(m["versions"]), str(m["latest"]), m["task"], aliases)
        console.print(table if models else "no registered models")

    @group.command("show")
    def show_command(
        name: Annotated[str, typer.Argument(help="Model name.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Show a model: versions with metrics, current aliases, alias history."""
        from qemlflow.registry import describe

        with open_store(store) as opened:
            info = describe(opened, name)
        if as_json:
            typer.echo(json.dumps(info, indent=2))
            return
        versions = Table(title=f"model {name}")
        for column in ("version", "run", "model", "test metric", "aliases", "created"):
            versions.add_column(column, no_wrap=True)
        for v in info["versions"]:
            versions.add_row(
                str(v["version"]),
                v["run_id"],
                v["model_digest"][:12],
                _metric(v["metrics"]),
                ", ".join(v["aliases"]),
                f"{v['created_at'][:19]} {v['created_by']}",
            )
        console.print(versions)
        if info["history"]:
            history = Table(title="alias history")
            for column in ("at", "alias", "version", "action", "actor", "reason"):
                history.add_column(column)
            for e in info["history"]:
                version = "-" if e["version"] is None else str(e["version"])
                history.add_row(
                    e["at"][:19], e["alias"], version, e["action"], e["actor"], e["reason"] or ""
                )
            console.print(history)
