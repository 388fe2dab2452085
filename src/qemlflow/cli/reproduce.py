"""``qemlflow reproduce``: re-create a run and prove it is identical."""

from __future__ import annotations

import json
import sys
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
        in_recorded_env: Annotated[
            bool,
            typer.Option(
                "--in-recorded-env",
                help="Rerun in a throwaway virtual environment with the run's recorded "
                "package versions (pip-installed from the configured index; the same "
                "Python major.minor is needed), and report its verdict.",
            ),
        ] = False,
        keep_env: Annotated[
            bool,
            typer.Option("--keep-env", help="Keep the --in-recorded-env environment."),
        ] = False,
    ) -> None:
        """Recompute every step without the cache and compare with the recorded run.

        The first line of the output is the verdict; the exit code says it too:
        0 IDENTICAL: every output byte-identical, every recorded blob intact;
        3 IDENTICAL CONTENT: same model and results, metadata differs (listed);
        1 DIFFERENT at STEP: what differs, and the packages that drifted;
        2: an error (one line).
        """
        from qemlflow.pipeline.reproduce import reproduce

        if in_recorded_env:
            _in_recorded_env(run, store, as_json=as_json, keep_env=keep_env)
        elif keep_env:
            raise typer.BadParameter("--keep-env goes with --in-recorded-env")
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
        raise typer.Exit(report.exit_code)


def _in_recorded_env(run: str, store: str | None, *, as_json: bool, keep_env: bool) -> None:
    from qemlflow.cli.render import error_console
    from qemlflow.pipeline.recorded_env import reproduce_in_recorded_environment

    with open_store(store) as opened:
        code, out = reproduce_in_recorded_environment(
            opened,
            run,
            store_location=store,
            as_json=as_json,
            keep_env=keep_env,
            say=lambda line: error_console.print(line, highlight=False, soft_wrap=True),
        )
    sys.stdout.write(out)
    sys.stdout.flush()
    raise typer.Exit(code)


def _print(report: object) -> None:
    from rich.markup import escape

    from qemlflow.pipeline.reproduce import (
        IDENTICAL,
        IDENTICAL_CONTENT,
        ReproduceReport,
        drift_lines,
    )

    assert isinstance(report, ReproduceReport)
    colour = {IDENTICAL: "bold green", IDENTICAL_CONTENT: "bold yellow"}.get(
        report.verdict, "bold red"
    )
    # The verdict is the first line, always: scripts read it.
    rest = escape(report.headline[len(report.verdict) :])
    console.print(f"[{colour}]{report.verdict}[/]{rest}", highlight=False, soft_wrap=True)
    if report.data_note:
        console.print(report.data_note)
    for step in report.steps:
        mark = (
            "[green]same[/]"
            if step.identical
            else "[yellow]same content, other metadata[/]"
            if step.content_identical
            else "[bold red]DIFFERS[/]"
        )
        console.print(f"  {step.step:<12} {step.output[:12]}  {mark}")
    for step in report.steps:
        if not step.content_identical and step.detail:
            console.print(f"  {step.step}: {escape(step.detail)}", highlight=False, soft_wrap=True)
    for problem in report.blob_problems:
        console.print(
            f"[bold red]blob {problem.digest[:12]} ({problem.what}): {problem.problem}[/]"
        )
    for step in report.steps:
        if step.metadata:
            console.print(f"[yellow]metadata that differs in the {step.step} output:[/]")
            for line in step.metadata:
                console.print(f"  {escape(line)}", highlight=False)
    first = report.first_content_difference
    if first is not None and first.key != first.recorded_key:
        console.print("  the step's key changed too: its parameters or library versions differ")
    changes = drift_lines(report.drift)
    if changes:
        console.print("[yellow]environment drift since the run:[/]")
        for line in changes:
            console.print(f"  {escape(line)}", highlight=False)
    if report.first_content_difference is not None and report.drift.get("cpu"):
        console.print(
            "  the processor differs: float sums may round otherwise on another CPU (the "
            "D-MPNN's torch kernels are bit-repeatable on one machine, not across machines); "
            "reproduce on the recorded machine to prove the result",
            highlight=False,
            soft_wrap=True,
        )
