"""``qemlflow reproduce``: re-create a run and prove it is identical."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import RichProgress, console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``reproduce`` to the CLI."""

    @app.command("reproduce")
    def reproduce_command(
        run: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Recompute every step without the cache; exit 0 only when the result is identical."""
        from qemlflow.pipeline.reproduce import reproduce

        with open_store(store) as opened:
            if as_json:
                report = reproduce(opened, run)
            else:
                with RichProgress.create() as display:
                    report = reproduce(opened, run, progress=RichProgress(display))
        if as_json:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            _print(report)
        raise typer.Exit(0 if report.identical else 1)


def _print(report: object) -> None:
    from qemlflow.pipeline.reproduce import ReproduceReport

    assert isinstance(report, ReproduceReport)
    if report.data_note:
        console.print(report.data_note)
    for step in report.steps:
        mark = "[green]same[/]" if step.identical else "[bold red]DIFFERS[/]"
        console.print(f"  {step.step:<12} {step.output[:12]}  {mark}")
    for problem in report.blob_problems:
        console.print(
            f"[bold red]blob {problem.digest[:12]} ({problem.what}): {problem.problem}[/]"
        )
    drift = report.drift
    if drift.get("drifted"):
        console.print("[yellow]environment drift since the run:[/]")
        for key in ("python", "os", "qemlflow", "git"):
            if drift.get(key):
                console.print(f"  {key}: {drift[key]}")
        packages = drift.get("packages") or {}
        for name, change in sorted((packages.get("changed") or {}).items()):
            console.print(f"  {name}: {change.get('recorded')} -> {change.get('current')}")
        for name, version in sorted((packages.get("added") or {}).items()):
            console.print(f"  {name}: added ({version})")
        for name, version in sorted((packages.get("removed") or {}).items()):
            console.print(f"  {name}: removed (was {version})")
    if report.identical:
        console.print(f"[bold green]IDENTICAL[/]: run {report.run_id} reproduced bit for bit")
        return
    first = report.first_difference
    if first is not None:
        console.print(
            f"[bold red]DIFFERS[/] first at step '{first.step}': recorded output "
            f"{first.recorded_output[:12]}, recomputed {first.output[:12]}"
            + (f" ({first.detail})" if first.detail else "")
        )
        if first.key != first.recorded_key:
            console.print("  the step's key changed too: its parameters or library versions differ")
    elif report.blob_problems:
        console.print("[bold red]NOT IDENTICAL[/]: recorded blobs are damaged")
