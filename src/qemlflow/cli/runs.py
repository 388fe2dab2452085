"""``qemlflow runs``: list, show and compare recorded runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]

_STATUS_STYLE = {"finished": "green", "failed": "red", "aborted": "yellow", "running": "cyan"}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def register(app: typer.Typer) -> None:
    """Add the ``runs`` command group to the CLI."""
    runs = typer.Typer(help="Recorded runs: what ran, on what, with what result.")
    app.add_typer(runs, name="runs")

    @runs.command("list")
    def list_command(
        store: StoreOption = None,
        as_json: JsonOption = False,
        limit: Annotated[int | None, typer.Option("--limit", min=0, help="Newest N only.")] = None,
    ) -> None:
        """List runs, newest first."""
        with open_store(store) as opened:
            records = opened.list_runs(limit=limit)
        if as_json:
            typer.echo(json.dumps([_summary(r) for r in records], indent=2))
            return
        table = Table(title="runs")
        for column in ("id", "name", "status", "started", "test metric"):
            table.add_column(column, no_wrap=True)
        for r in records:
            style = _STATUS_STYLE.get(r.status, "")
            table.add_row(
                r.id, r.name, f"[{style}]{r.status}[/]", r.started_at[:19], _headline(r.metrics)
            )
        console.print(table)

    @runs.command("show")
    def show_command(
        run: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Show a run: config, steps (with cache hits), metrics, artifacts, environment."""
        with open_store(store) as opened:
            record = opened.get_run(run)
            environment = _environment(opened, record.environment)
        if as_json:
            typer.echo(json.dumps({**record.to_dict(), "environment_snapshot": environment}))
            return
        style = _STATUS_STYLE.get(record.status, "")
        console.print(f"run [bold]{record.id}[/] {record.name}: [{style}]{record.status}[/]")
        if record.error:
            console.print(f"[red]error:[/] {record.error}", highlight=False)
        steps = Table(title="steps")
        for column in ("step", "key", "output", "cache", "seconds"):
            steps.add_column(column, no_wrap=True)
        for s in record.steps:
            steps.add_row(
                s.step,
                s.key[:12],
                (s.output or "")[:12],
                "hit" if s.cache_hit else "computed",
                f"{s.seconds:.2f}",
            )
        console.print(steps)
        if record.metrics:
            test = record.metrics.get("test", {})
            console.print("test: " + ", ".join(f"{k} {_short(v)}" for k, v in test.items()))
        for artifact in record.artifacts:
            console.print(f"artifact {artifact.name}: {artifact.digest[:12]}")
        if environment:
            python = environment.get("python", {})
            version = python.get("version") if isinstance(python, dict) else python
            packages = environment.get("packages", {})
            console.print(
                f"environment: Python {version}, {len(packages)} packages, "
                f"git {(environment.get('git') or {}).get('commit', 'none')}"
            )

    @runs.command("compare")
    def compare_command(
        a: Annotated[str, typer.Argument(help="First run.")],
        b: Annotated[str, typer.Argument(help="Second run.")],
        store: StoreOption = None,
        as_json: JsonOption = False,
        all_rows: Annotated[
            bool, typer.Option("--all", help="Show equal rows too, not only differences.")
        ] = False,
    ) -> None:
        """Compare two runs: params, data versions, environment and metrics side by side."""
        from qemlflow.pipeline.reproduce import flatten

        with open_store(store) as opened:
            first, second = opened.get_run(a), opened.get_run(b)
            env_a = _environment(opened, first.environment)
            env_b = _environment(opened, second.environment)
            data_a = _data_version(first)
            data_b = _data_version(second)
        sections = {
            "config": (flatten(first.config), flatten(second.config)),
            "data": ({"standardized table": data_a}, {"standardized table": data_b}),
            "environment": (_env_rows(env_a), _env_rows(env_b)),
            "metrics": (flatten(first.metrics or {}), flatten(second.metrics or {})),
        }
        if as_json:
            typer.echo(json.dumps(_differences(sections), indent=2))
            return
        table = Table(title=f"{first.id}  vs  {second.id}")
        table.add_column("section", no_wrap=True)
        table.add_column("key")
        table.add_column(first.id[-6:])
        table.add_column(second.id[-6:])
        shown = 0
        for section, (left, right) in sections.items():
            for key in sorted(set(left) | set(right)):
                x, y = left.get(key), right.get(key)
                if x == y and not all_rows:
                    continue
                mark = "" if x == y else "[bold yellow]"
                table.add_row(section, key, f"{mark}{_short(x)}", f"{mark}{_short(y)}")
                shown += 1
        console.print(table if shown else "the two runs do not differ")

    @runs.command("export")
    def export_command(
        run: Annotated[str, typer.Argument(help="Run id or a unique prefix.")],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="The bundle to write (JSON).", dir_okay=False)
        ],
        store: StoreOption = None,
    ) -> None:
        """Export a run's verification bundle: step records and the store's audit chain.

        scripts/verify_bundle.py recomputes every step key and the audit chain from it,
        without QeMLflow (docs/keys.md).
        """
        from qemlflow.audit.bundle import write_run_bundle

        with open_store(store) as opened:
            bundle = write_run_bundle(opened, run, out)
        console.print(
            f"wrote {out}: run {bundle['run']['id']}, {len(bundle['steps'])} steps, "
            f"{len(bundle['audit']['events'])} audit events; check it with "
            f"python scripts/verify_bundle.py {out}",
            highlight=False,
        )


def _summary(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "error": record.error,
        "metrics": (record.metrics or {}).get("test"),
    }


def _headline(metrics: dict[str, Any] | None) -> str:
    test = (metrics or {}).get("test", {})
    for key in ("rmse", "roc_auc"):
        if isinstance(test.get(key), float):
            return f"{key} {test[key]:.3f}"
    return ""


def _environment(store: Any, digest: str | None) -> dict[str, Any]:
    if not digest or not store.has_blob(digest):
        return {}
    loaded: dict[str, Any] = json.loads(store.get_bytes(digest))
    return loaded


def _data_version(record: Any) -> str:
    # The standardized table's digest: the same data read the same way, whatever the path.
    return next((s.output or "" for s in record.steps if s.step == "standardize"), "")[:12]


def _env_rows(environment: dict[str, Any]) -> dict[str, Any]:
    rows = {f"package {k}": v for k, v in (environment.get("packages") or {}).items()}
    for key in ("python", "os", "qemlflow"):
        if key in environment:
            rows[key] = environment[key]
    return rows


def _differences(sections: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    return {
        section: {
            key: [left.get(key), right.get(key)]
            for key in sorted(set(left) | set(right))
            if left.get(key) != right.get(key)
        }
        for section, (left, right) in sections.items()
    }
