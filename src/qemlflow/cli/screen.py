"""``qemlflow screen``: score a large file of molecules, streamed and resumable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

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
from qemlflow.cli.render import LazyProgress, console, error_console

__all__ = ["register"]


class _ScreenBar:
    """A rich bar over the input (bytes, or rows for Parquet) with molecules/s and ETA.

    ``heading`` (which model is used) is printed when scoring starts: every input error is
    found before that, so an error is the only line a failed command prints.
    """

    def __init__(self, progress: Any, heading: str = "") -> None:
        self._progress = progress
        self._heading = heading
        self._task: Any = None
        self._began = time.perf_counter()

    def start(self, total: int, unit: str) -> None:
        if self._heading:
            error_console.print(escape(self._heading), highlight=False, soft_wrap=True)
        self._task = self._progress.add_task("screen", total=max(total, 1), rate="", rows=0)
        self._began = time.perf_counter()

    def update(self, position: int, rows: int) -> None:
        rate = rows / max(time.perf_counter() - self._began, 1e-9)
        self._progress.update(self._task, completed=position, rows=rows, rate=f"{rate:,.0f}/s")


def register(app: typer.Typer) -> None:
    """Add ``screen`` to the CLI."""

    @app.command("screen")
    def screen_command(
        model: ModelArgument,
        input: MoleculesArgument,
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Where to write: .parquet or .csv.")
        ],
        trust_file: TrustFileOption = False,
        smiles_column: SmilesColumnOption = None,
        id_column: IdColumnOption = None,
        header: HeaderOption = None,
        workers: Annotated[int, typer.Option("--workers", "-w", help="Local processes.")] = 1,
        engine: Annotated[
            str, typer.Option("--engine", help="local, or dask (an existing cluster).")
        ] = "local",
        address: Annotated[
            str | None,
            typer.Option(
                "--address", help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS)."
            ),
        ] = None,
        chunk_size: Annotated[
            int, typer.Option("--chunk-size", help="Molecules per chunk (unit of work/resume).")
        ] = 20_000,
        top: Annotated[
            int | None, typer.Option("--top", help="Keep only the K best rows, best first.")
        ] = None,
        by: Annotated[
            str | None,
            typer.Option("--by", help="Column ranked by --top (default: prediction/probability)."),
        ] = None,
        ascending: Annotated[
            bool,
            typer.Option("--ascending", "--minimize", help="With --top: lowest scores are best."),
        ] = False,
        threshold: Annotated[
            float, typer.Option("--domain-threshold", help="Applicability-domain similarity.")
        ] = 0.3,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue an interrupted screen.")
        ] = False,
        store: StoreOption = None,
    ) -> None:
        """Score every molecule of INPUT; the output is row-aligned, errors in place."""
        import warnings

        from rich.progress import (
            BarColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from qemlflow.pipeline.model_source import open_model
        from qemlflow.screen import ScreenInterruptedError, screen

        display = LazyProgress(
            TextColumn("[bold]screen"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:,} molecules"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=error_console,
            transient=True,
        )
        with open_store(store) as opened, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                chosen = open_model(model, opened, trust_file=trust_file, purpose="screen")
                with display:
                    result = screen(
                        chosen,
                        input,
                        output,
                        store=opened,
                        smiles_column=smiles_column,
                        id_column=id_column,
                        header=header,
                        chunk_size=chunk_size,
                        workers=workers,
                        engine=engine,
                        address=address,
                        top=top,
                        by=by,
                        ascending=ascending,
                        domain_threshold=threshold,
                        resume=resume,
                        progress=_ScreenBar(display, chosen.describe()),
                    )
            except ScreenInterruptedError as exc:
                message = escape(str(exc))
                error_console.print(f"[yellow]{message}[/]", highlight=False, soft_wrap=True)
                raise typer.Exit(130) from None
            finally:
                for warning in caught:
                    error_console.print(
                        f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False
                    )
        rate = result.rows / max(result.seconds, 1e-9)
        console.print(
            f"{result.rows:,} molecules screened into [bold]{result.output}[/]"
            + (f" ({result.written:,} kept)" if top is not None else "")
            + (f", [yellow]{result.errors:,} invalid[/] (see 'error')" if result.errors else "")
            + f" in {result.seconds:.1f} s ({rate:,.0f}/s); sha256 {result.output_digest[:12]}",
            highlight=False,
        )
