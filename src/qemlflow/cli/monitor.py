"""``qemlflow monitor``: a served model's recent traffic against its training reference."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console
from qemlflow.monitoring import parse_window

__all__ = ["parse_window", "register"]

ALERT_EXIT = 3


def register(app: typer.Typer) -> None:
    """Add the ``monitor`` command to the CLI."""

    @app.command("monitor")
    def monitor_command(
        name: Annotated[
            str, typer.Argument(help="Model: NAME (production, else latest), NAME@ALIAS or NAME@N.")
        ],
        window: Annotated[
            str, typer.Option("--window", help="How far back to look (e.g. 60m, 2h).")
        ] = "60m",
        webhook: Annotated[
            str | None,
            typer.Option(
                "--webhook",
                help="POST newly recorded alerts as JSON to this URL (default: the "
                "policy's promotion.monitoring.webhook).",
            ),
        ] = None,
        store: StoreOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Compare a window of served traffic with the model's training reference.

        Prints PSI of the predictions, the KS statistic of the domain similarity, the
        out-of-domain rate against the training set's own and the error rate, and the
        active alerts (each recorded once per window in the audit trail as
        ``monitor.alert``). A newly recorded alert is also POSTed to the webhook
        (``--webhook`` or the policy's); a failed delivery is reported on stderr and does
        not change the exit code. Exit code 0: no alert; 3: at least one alert is active.
        """
        from qemlflow import registry
        from qemlflow.errors import QeMLflowError
        from qemlflow.monitoring import check, notify, record_alerts

        seconds = parse_window(window)
        if webhook is not None and not re.fullmatch(r"https?://\S+", webhook):
            raise QeMLflowError(
                f"--webhook {webhook!r} is not an http(s) URL", "give e.g. https://host/hook"
            )
        with open_store(store) as opened:
            mv = registry.resolve(opened, name)
            report = check(opened, str(mv.name), int(mv.version), seconds)
            if report is None:
                raise QeMLflowError(
                    f"{mv.name}@{mv.version} has no monitoring reference",
                    "serve it with `qemlflow serve` first: the service records it when it loads",
                )
            recorded = record_alerts(opened, report)
            target, failure = notify(opened, report, recorded, webhook)
        if failure is not None:
            typer.echo(f"warning: could not deliver the alert to {target}: {failure}", err=True)
        if as_json:
            typer.echo(json.dumps({**report.to_dict(), "recorded": recorded}, indent=2))
        else:
            _print(report.to_dict())
        if report.alerts:
            raise typer.Exit(ALERT_EXIT)


def _number(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _print(report: dict[str, object]) -> None:
    console.print(
        f"{report['name']}@{report['version']}: last {report['window_seconds']} s, "
        f"{report['requests']} requests, {report['molecules']} molecules",
        highlight=False,
    )
    for label, key in (
        ("PSI of predictions", "psi"),
        ("KS of domain similarity", "similarity_ks"),
        ("out-of-domain rate", "ood_rate"),
        ("training out-of-domain rate", "training_ood_rate"),
        ("error rate", "error_rate"),
    ):
        console.print(f"  {label:<28} {_number(report[key])}", highlight=False)
    console.print(f"  thresholds from {report['threshold_source']}", highlight=False)
    alerts = report["alerts"]
    assert isinstance(alerts, list)
    console.print(
        "ALERTS: " + ", ".join(alerts) if alerts else "no alert", highlight=False, markup=False
    )
