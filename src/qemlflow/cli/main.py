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
    explain,
    identity,
    keys,
    lineage,
    models,
    monitor,
    predict,
    reproduce,
    run,
    runs,
    screen,
    serve,
    store,
    suggest,
    tune,
    ui,
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
explain.register(app)
benchmark.register(app)
monitor.register(app)
tune.register(app)
ui.register(app)
suggest.register(app)


# What to do about an OSError on a path the user gave, by kind.
_PATH_FIXES: tuple[tuple[type[OSError], str], ...] = (
    (IsADirectoryError, "it is a folder: give a file path"),
    (NotADirectoryError, "a part of the path is a file, not a folder: check the path"),
    (FileExistsError, "it already exists: choose a new path or remove it"),
    (FileNotFoundError, "check the path, and that its folder exists"),
    (PermissionError, "check its permissions, or choose a path you may write to"),
)


def path_error_line(exc: OSError) -> str | None:
    """The one-line message for an OSError about a path (``None`` when it names none).

    Examples
    --------
    >>> path_error_line(IsADirectoryError(21, "Is a directory", "out"))
    "cannot use 'out' (Is a directory); it is a folder: give a file path"
    >>> path_error_line(OSError(12, "Cannot allocate memory")) is None
    True
    """
    if exc.filename is None:
        return None
    fix = next(
        (text for kind, text in _PATH_FIXES if isinstance(exc, kind)),
        "check the path, or choose another one",
    )
    path = os.fsdecode(exc.filename)
    return f"cannot use {path!r} ({exc.strerror or type(exc).__name__}); {fix}"


def _print_error(message: str, label: str = "error") -> None:
    line = " ".join(message.split())  # one line, even for a driver's multi-line message
    error_console.print(f"[bold red]{label}:[/] {escape(line)}", highlight=False, soft_wrap=True)


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error as one line that names the problem and where the help is."""
    ctx = getattr(exc, "ctx", None)
    where = f"qemlflow {ctx.command_path.partition(' ')[2]}".strip() if ctx else "qemlflow"
    message = " ".join(exc.format_message().split()).rstrip(".")
    return f"{message}; see '{where} --help'"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a known error prints one line (a traceback only with --debug).

    Input errors (a QeMLflowError, a usage error, an unusable path, a number too large)
    exit with code 2; an unexpected failure prints one "internal error" line, exit 1.
    """
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
        _print_error(str(exc))
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        error_console.print("[bold red]aborted[/]")
        return 130
    except typer.TyperException as exc:  # usage errors: one line, and where the help is
        if exc.format_message().strip():  # no message: the help was shown (no arguments)
            _print_error(_usage_line(exc) if exc.exit_code == 2 else exc.format_message())
        return int(exc.exit_code)
    except OSError as exc:
        line = path_error_line(exc)
        if debug:
            raise
        if line is None:
            return _internal_error(exc)
        _print_error(line)
        return 2
    except OverflowError as exc:  # a number given on the command line or in a file
        if debug:
            raise
        _print_error(
            f"a number is too large ({' '.join(str(exc).split())}); "
            "give a value of a sensible size (see --help)"
        )
        return 2
    except Exception as exc:  # the CLI's last line of defence: one line, never a traceback
        if debug:
            raise
        return _internal_error(exc)
    return int(code) if isinstance(code, int) else 0


def _internal_error(exc: Exception) -> int:
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    _print_error(
        f"{type(exc).__name__}: {line}; rerun with --debug for the traceback and report it",
        label="internal error",
    )
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
