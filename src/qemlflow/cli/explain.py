"""``qemlflow explain``: which atoms move a model's prediction, as numbers and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qemlflow.cli.options import ModelArgument, StoreOption, TrustFileOption, open_store
from qemlflow.cli.render import console, error_console

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``explain`` to the CLI."""

    @app.command("explain")
    def explain_command(
        model: ModelArgument,
        smiles: Annotated[list[str], typer.Argument(help="Molecules to explain, as SMILES.")],
        output: Annotated[
            Path, typer.Option("--output", "-o", help="Folder for <n>.json and <n>.svg/.png.")
        ],
        method: Annotated[
            str,
            typer.Option(
                "--method",
                help="auto, treeshap-ecfp-atoms (LightGBM on ECFP), bit-occlusion-ecfp-atoms "
                "(any estimator on ECFP) or atom-masking (any model, the D-MPNN's default).",
            ),
        ] = "auto",
        target: Annotated[
            str | None, typer.Option("--target", help="Task to explain (default: the first).")
        ] = None,
        image: Annotated[
            list[str] | None,
            typer.Option(
                "--image",
                help="Image format(s): svg, png (default: both; png where RDKit has Cairo).",
            ),
        ] = None,
        trust_file: TrustFileOption = False,
        store: StoreOption = None,
    ) -> None:
        """Write per molecule n (input order) DIR/n.json (atom weights) and a similarity map.

        The explanation is recorded in the store's audit trail (explain.completed).
        """
        from rich.markup import escape

        from qemlflow.explain import explain
        from qemlflow.pipeline.model_source import open_model

        formats = _image_formats(image) if image else None
        with open_store(store) as opened:
            chosen = open_model(model, opened, trust_file=trust_file, purpose="explain")
            result = explain(
                chosen,
                smiles,
                output,
                method=method,
                target=target,
                images=formats,
                store=opened,
            )
        error_console.print(escape(chosen.describe()), highlight=False, soft_wrap=True)
        for record in result.records:
            if record["error"]:
                error_console.print(
                    f"[yellow]molecule {record['index']}[/] {escape(record['smiles'])!r}: "
                    f"{escape(record['error'])}",
                    highlight=False,
                    soft_wrap=True,
                )
        done = len(result.records) - result.errors
        console.print(
            f"{done} molecule(s) explained by {result.method} into [bold]{escape(str(output))}[/]"
            + (f", [yellow]{result.errors} invalid[/]" if result.errors else ""),
            highlight=False,
        )


def _image_formats(given: list[str]) -> list[str]:
    from qemlflow.errors import ConfigError
    from qemlflow.explain import IMAGE_FORMATS

    formats = []
    for name in given:
        kind = name.strip().lower().lstrip(".")
        if kind not in IMAGE_FORMATS:
            raise ConfigError(f"unknown image format {name!r}", "use --image svg or --image png")
        if kind not in formats:
            formats.append(kind)
    return formats
