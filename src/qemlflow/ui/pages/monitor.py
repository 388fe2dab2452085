"""``/monitor``: every registered model's traffic state; ``/monitor/{name}``: one window's
statistics, its active alerts and charts, as ``qemlflow monitor NAME`` computes them.

The pages only read: an alert is shown, never recorded (``qemlflow monitor`` and the
service record them in the audit trail).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from qemlflow.ui.templating import render, store

if TYPE_CHECKING:
    from qemlflow.monitoring import Report
    from qemlflow.store import Store

__all__ = ["router"]

router = APIRouter()

_OVERVIEW_SECONDS = 3600  # the state on /monitor: the last hour, as the service checks it
_SMILES_SHOWN = 60


def _state(report: Report | None) -> str:
    if report is None or report.molecules == 0:
        return "quiet"
    return "alert" if report.alerts else "ok"


def _default_version(opened: Store, name: str, versions: list[int]) -> tuple[int, str | None]:
    """What ``qemlflow monitor NAME`` looks at: production when set, else the latest."""
    aliases = opened.current_aliases(name)
    if "production" in aliases:
        return aliases["production"], "production"
    return max(versions), None


@router.get("/monitor", response_class=HTMLResponse)
def monitor_page(request: Request) -> HTMLResponse:
    """Every registered model, the version monitored and its state over the last hour."""
    from qemlflow.monitoring import check

    opened = store(request)
    versions: dict[str, list[int]] = defaultdict(list)
    for mv in opened.list_model_versions():
        versions[str(mv.name)].append(int(mv.version))
    models: list[dict[str, Any]] = []
    for name in sorted(versions):
        version, alias = _default_version(opened, name, versions[name])
        report = check(opened, name, version, _OVERVIEW_SECONDS)
        models.append(
            {
                "name": name,
                "version": version,
                "alias": alias,
                "versions": len(versions[name]),
                "state": _state(report),
                "report": report,
                "served": report is not None,
            }
        )
    return render(request, "monitor.html", nav="monitor", models=models)


def _minute_label(minute: str) -> str:
    return minute[11:16] if len(minute) >= 16 else minute


def _series(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per-window sums (several service processes may each write a row per window)."""
    by_minute: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        total = by_minute[str(row["minute"])]
        total[0] += int(row["requests"])
        total[1] += int(row["molecules"])
        total[2] += int(row["out_of_domain"])
        total[3] += int(row["molecules"]) - int(row["errors"])
    minutes = sorted(by_minute)
    return {
        "labels": [_minute_label(m) for m in minutes],
        "requests": [by_minute[m][0] for m in minutes],
        "molecules": [by_minute[m][1] for m in minutes],
        "ood_rate": [
            by_minute[m][2] / by_minute[m][3] if by_minute[m][3] else 0.0 for m in minutes
        ],
    }


def _sum(rows: list[dict[str, Any]], key: str) -> list[int]:
    total: list[int] = []
    for row in rows:
        counts = [int(c) for c in row[key]]
        total = counts if not total else [a + b for a, b in zip(total, counts, strict=True)]
    return total


def _bin_labels(edges: list[float]) -> list[str]:
    if not edges:
        return ["all"]
    return (
        [f"< {edges[0]:.3g}"]
        + [f"{a:.3g}–{b:.3g}" for a, b in pairwise(edges)]
        + [f"≥ {edges[-1]:.3g}"]
    )


@router.get("/monitor/{name}", response_class=HTMLResponse)
def monitor_detail(
    request: Request, name: str, window: str = Query("60m", max_length=20)
) -> HTMLResponse:
    """One model's window: statistics, active alerts and charts (``?window=60m``)."""
    from qemlflow import registry
    from qemlflow.monitoring import SIMILARITY_EDGES, check, parse_window, policy_switches
    from qemlflow.ui import charts
    from qemlflow.ui.depict import depict

    opened = store(request)
    seconds = parse_window(window)
    mv = registry.resolve(opened, name)
    model, version = str(mv.name), int(mv.version)
    report = check(opened, model, version, seconds)
    context: dict[str, Any] = {
        "model": model,
        "version": version,
        "spec": name,
        "window": window,
        "seconds": seconds,
        "report": report,
        "charts": [],
        "ood_smiles": [],
        "store_smiles": False,
    }
    if report is None:
        return render(request, "monitor_detail.html", nav="monitor", **context)
    since = datetime.fromtimestamp(datetime.now(UTC).timestamp() - seconds, UTC)
    rows = opened.monitoring.minutes(model, version, since.strftime("%Y-%m-%dT%H:%M:%SZ"))
    reference = opened.monitoring.reference(model, version) or {}
    series = _series(rows)
    drawn = [
        charts.time_series("requests per window", series["labels"], series["requests"]),
        charts.time_series("molecules per window", series["labels"], series["molecules"]),
        charts.time_series("out-of-domain rate per window", series["labels"], series["ood_rate"]),
    ]
    if rows:
        drawn.append(
            charts.histogram_pair(
                "predictions: window vs training",
                _bin_labels(list(reference.get("prediction_edges") or [])),
                _sum(rows, "prediction_counts"),
                list(reference.get("prediction_counts") or []),
                kind="histogram predictions",
            )
        )
        drawn.append(
            charts.histogram_pair(
                "domain similarity: window vs training",
                _bin_labels(list(SIMILARITY_EDGES)),
                _sum(rows, "similarity_counts"),
                list(reference.get("similarity_counts") or []),
                kind="histogram similarity",
            )
        )
    smiles: dict[str, None] = {}  # distinct, in the order the windows saw them
    for row in rows:
        smiles.update(dict.fromkeys(row.get("ood_smiles") or []))
        if len(smiles) >= _SMILES_SHOWN:
            break
    context.update(
        charts=drawn,
        ood_smiles=[{"smiles": s, "svg": depict(s)} for s in list(smiles)[:_SMILES_SHOWN]],
        store_smiles=policy_switches(opened, model, version)["store_smiles"],
    )
    return render(request, "monitor_detail.html", nav="monitor", **context)
