"""The ``qemlflow`` command: one module per command group, errors as one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from qemlflow._version import __version__
from qemlflow.cli import (
    audit,
    benchmark,
    data,
    datasets,
    identity,
    keys,
    lineage,
    models,
    predict,
    reproduce,
    run,
    runs,
    screen,
    serve,
    store,
)
from qemlflow.cli.render import error_console

__all__ = ["app", "main"]

# LightGBM and scikit-learn load two OpenMP runtimes; with busy-waiting threads they fight
# over the cores and a fit can run 10x slower. Set before either library is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    name="qemlflow",
    help="Reproducible, auditable molecular machine learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qemlflow {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


run.register(app)
predict.register(app)
datasets.register(app)
data.register(app)
runs.register(app)
reproduce.register(app)
lineage.register(app)
store.register(app)
audit.register(app)
identity.register(app)
models.register(app)
keys.register(app)
serve.register(app)
screen.register(app)
benchmark.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a known error prints one line (a traceback only with --debug)."""
    from qemlflow.errors import QeMLflowError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if argv is None and "serve" not in args:  # a real process (the service has its own)
        from qemlflow.cli.interrupts import route_ctrl_c_to_python

        route_ctrl_c_to_python()
    try:
        code = app(args=args, standalone_mode=False)
    except QeMLflowError as exc:
        if debug:
            raise
        error_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        error_console.print("[bold red]aborted[/]")
        return 130
    except typer.TyperException as exc:  # usage errors: typer prints them with the usage line
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            error_console.print(
                f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False
            )
        return int(exc.exit_code)
    except Exception as exc:  # the CLI's last line of defence: one line, never a traceback
        if debug:
            raise
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(line)}; "
            "rerun with --debug for the traceback and report it",
            highlight=False,
            soft_wrap=True,
        )
        return 1
    return int(code) if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
