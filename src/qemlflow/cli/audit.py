"""``qemlflow audit``: read, anchor and verify the audit trail; the compliance report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]


def _read_anchor(path: Path | None) -> dict[str, Any] | None:
    from qemlflow.errors import QeMLflowError

    if path is None:
        return None
    try:
        anchor = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QeMLflowError(
            f"cannot read the anchor file '{path}' ({type(exc).__name__})",
            "give the JSON written by 'qemlflow audit anchor -o FILE'",
        ) from None
    if not isinstance(anchor, dict) or "seq" not in anchor or "hash" not in anchor:
        raise QeMLflowError(
            f"'{path}' is not an audit anchor", "give a file written by 'qemlflow audit anchor -o'"
        )
    return anchor


def register(app: typer.Typer) -> None:
    """Add the ``audit`` command group to the CLI."""
    group = typer.Typer(help="The tamper-evident audit trail.")
    app.add_typer(group, name="audit")

    @group.command("log")
    def log_command(
        store: StoreOption = None,
        as_json: JsonOption = False,
        object_ref: Annotated[
            str | None, typer.Option("--object", help="Only events about this object.")
        ] = None,
        since: Annotated[
            str | None, typer.Option("--since", help="Only events at or after (ISO time).")
        ] = None,
    ) -> None:
        """Show audit events in order."""
        with open_store(store) as opened:
            events = opened.audit_events(object_ref=object_ref, since=since)
        if as_json:
            typer.echo(json.dumps([e.to_dict() for e in events], indent=2))
            return
        table = Table(title="audit trail")
        for column in ("seq", "time (UTC)", "actor", "action", "objects", "reason"):
            table.add_column(column, no_wrap=column in ("seq", "time (UTC)"))
        for e in events:
            objects = ", ".join(f"{k}={str(v)[:12]}" for k, v in e.objects.items())
            table.add_row(str(e.seq), e.timestamp[:19], e.actor, e.action, objects, e.reason or "")
        console.print(table)

    @group.command("anchor")
    def anchor_command(
        store: StoreOption = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write the anchor to this file.")
        ] = None,
    ) -> None:
        """Print (or export) the chain head, for an outside party to hold."""
        with open_store(store) as opened:
            head = opened.audit_head()
        text = json.dumps(head, indent=2, sort_keys=True)
        if output is not None:
            output.write_text(text + "\n", encoding="utf-8")
            console.print(f"anchor (seq {head.get('seq')}) written to [bold]{output}[/]")
        else:
            typer.echo(text)

    @group.command("verify")
    def verify_command(
        store: StoreOption = None,
        anchor: Annotated[
            Path | None, typer.Option("--anchor", help="An anchor written by 'audit anchor'.")
        ] = None,
        as_json: JsonOption = False,
    ) -> None:
        """Check the whole chain (and signatures, and any anchor); exit 0 only when sound."""
        from qemlflow.audit.integrity import verify_trail
        from qemlflow.cli.store import print_warnings
        from qemlflow.store.pg_roles import privilege_warnings

        held = _read_anchor(anchor)
        with open_store(store) as opened:
            report = verify_trail(opened, held)
            warnings = privilege_warnings(opened.db)
        if as_json:
            typer.echo(json.dumps({**report.to_dict(), "warnings": warnings}, indent=2))
        else:
            print_warnings(warnings)
            for problem in report.problems:
                console.print(f"[red]{problem}[/]", highlight=False)
            head = report.to_dict().get("head") or {}
            if report.ok:
                console.print(
                    f"[bold green]audit trail sound[/]: {report.n_events} events, "
                    f"head seq {head.get('seq')} hash {head.get('hash')}"
                )
            elif report.first_bad_seq is not None:
                console.print(
                    f"[bold red]audit trail NOT sound[/]: first bad event {report.first_bad_seq}"
                )
            else:  # the events are intact; the database no longer protects them
                console.print(
                    f"[bold red]audit trail NOT sound[/]: {len(report.problems)} problems"
                )
            if report.checkpoint is not None:
                console.print(f"checked against checkpoint at event {report.checkpoint}")
            else:  # nothing pins the head: a cut-off tail shows only against an anchor
                console.print("no signed checkpoint yet: keep an anchor (`audit anchor -o F`)")
        raise typer.Exit(0 if report.ok else 1)

    @group.command("report")
    def report_command(
        ref: Annotated[str, typer.Argument(help="Run id, or a model (model.joblib or digest).")],
        output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
            "report.html"
        ),
        store: StoreOption = None,
    ) -> None:
        """Write a self-contained HTML compliance report for a run or model."""
        from qemlflow.audit.report import write_report

        with open_store(store) as opened:
            path = write_report(opened, ref, output)
        console.print(f"report written to [bold]{path}[/]")
