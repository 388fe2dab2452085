"""``qemlflow lineage``: the provenance of a run, model or artifact."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.tree import Tree

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]


def _label(node: dict[str, Any]) -> str:
    kind = node["kind"]
    if kind == "run":
        return f"[bold]run {node['id']}[/] {node['name']} ({node['status']})"
    if kind == "artifact":
        return f"artifact {node['name']} {node['digest'][:12]}"
    if kind == "raw":
        return f"[bold]raw data[/] sha256 {node['digest']}"
    repeated = " (shown above)" if node.get("repeated") else ""
    return f"{node['step']} v{node['version']} key {node['key'][:12]} -> {node['output'][:12]}" + (
        repeated
    )


def _grow(tree: Tree, node: dict[str, Any]) -> None:
    branch = tree.add(_label(node))
    if node["kind"] == "artifact" and "run" in node:
        _grow(branch, node["run"])
    for artifact in node.get("artifacts", []):
        branch.add(
            f"artifact {artifact['name']} {artifact['digest'][:12]} ({artifact['produced_by']})"
        )
    for child in node.get("inputs", []):
        _grow(branch, child)


def register(app: typer.Typer) -> None:
    """Add ``lineage`` to the CLI."""

    @app.command("lineage")
    def lineage_command(
        ref: Annotated[str, typer.Argument(help="Run id, model file, artifact digest or key.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Show where a run, model or artifact came from, down to the raw data digest."""
        from qemlflow.pipeline.lineage import lineage

        with open_store(store) as opened:
            graph = lineage(opened, ref)
        if as_json:
            typer.echo(json.dumps(graph, indent=2))
            return
        root = Tree("lineage")
        _grow(root, graph)
        console.print(root)
