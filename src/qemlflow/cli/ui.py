"""``qemlflow ui``: browse the store in a web browser."""

from __future__ import annotations

from typing import Annotated

import typer

from qemlflow.cli.options import StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``ui`` to the CLI."""

    @app.command("ui")
    def ui_command(
        port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8765,
        host: Annotated[
            str, typer.Option("--host", help="Address to bind (loopback unless you say so).")
        ] = "127.0.0.1",
        writable: Annotated[
            bool,
            typer.Option(
                "--allow-changes",
                help="Show the forms that change state (promote, roll back); each is checked "
                "against your identity's roles exactly as the CLI checks it.",
            ),
        ] = False,
        store: StoreOption = None,
    ) -> None:
        """Serve a web UI on the store: runs, datasets, models, audit, screens, monitoring,
        predictions. Read-only unless --allow-changes."""
        from qemlflow.errors import ConfigError

        try:
            from qemlflow.ui.app import run_ui
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"the UI needs {exc.name!r}, which is not installed",
                "install the ui extra: pip install -e '.[ui]' (or 'qemlflow[ui]')",
            ) from None
        with open_store(store) as opened:
            console.print(f"QeMLflow UI on http://{host}:{port} (Ctrl+C stops)")
            run_ui(opened, host=host, port=port, writable=writable)
