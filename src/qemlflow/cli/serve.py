"""``qemlflow serve``: answer predictions over HTTP with a registered model."""

from __future__ import annotations

from typing import Annotated

import typer

from qemlflow.cli.options import StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the CLI."""

    @app.command("serve")
    def serve_command(
        spec: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME@N.")],
        port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8000,
        host: Annotated[
            str, typer.Option("--host", help="Address to bind (loopback unless you say so).")
        ] = "127.0.0.1",
        poll: Annotated[
            float, typer.Option("--poll", help="Seconds between registry checks (0: never).")
        ] = 10.0,
        threshold: Annotated[
            float, typer.Option("--domain-threshold", help="Applicability-domain similarity.")
        ] = 0.3,
        max_body: Annotated[
            int, typer.Option("--max-body-bytes", help="Largest request body accepted.")
        ] = 1024 * 1024,
        max_batch: Annotated[
            int, typer.Option("--max-batch", help="Most SMILES in one request.")
        ] = 10_000,
        cors_origin: Annotated[
            str | None, typer.Option("--cors-origin", help="Allow this one browser origin.")
        ] = None,
        public_docs: Annotated[
            bool, typer.Option("--public-docs", help="Serve /docs and /openapi.json without a key.")
        ] = False,
        workers: Annotated[
            int | None,
            typer.Option(
                "--workers",
                help="Worker processes that prepare molecules (default: one per core, at least 2).",
                show_default=False,
            ),
        ] = None,
        store: StoreOption = None,
    ) -> None:
        """Serve a registered model; follows its alias and swaps versions without downtime.

        Molecules are prepared in worker processes, each within the model's time budget;
        SIGTERM or Ctrl+C lets requests in flight finish, then stops within 10 s.
        """
        from pydantic import ValidationError

        from qemlflow.errors import ConfigError

        try:
            from qemlflow.serve.app import ServeSettings, run_server
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"the prediction service needs {exc.name!r}, which is not installed",
                "install the serve extra: pip install -e '.[serve]' (or 'qemlflow[serve]')",
            ) from None

        try:
            settings = ServeSettings(
                spec=spec,
                host=host,
                port=port,
                poll_seconds=poll,
                domain_threshold=threshold,
                max_body_bytes=max_body,
                max_batch=max_batch,
                cors_origin=cors_origin,
                public_docs=public_docs,
                workers=workers,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"invalid option {where}: {first['msg']}", "see --help") from None
        with open_store(store) as opened:
            console.print(f"serving [bold]{spec}[/] on http://{host}:{port} (Ctrl+C stops)")
            run_server(settings, opened)
