"""``/runs/{run_id}``: one run (summary, config, metrics with CIs, parity or ROC plot,
test-set predictions with structures, rejected rows, steps, environment, lineage graph,
audit events and their signatures); ``/runs/{run_id}/plot.svg``: its plot alone.

A run that has ended never changes, so what is costly to build from it (parsed
predictions, plots, the lineage graph, the rejected rows) is kept per run id in the UI's
cache; only the audit events (a signature may be added later) are read per request.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from qemlflow.ui.templating import render, state, store

if TYPE_CHECKING:
    from qemlflow.store import DatasetRecord, RunRecord, Store
    from qemlflow.store.audit import AuditEvent

__all__ = ["RunView", "router", "run_view"]

router = APIRouter()

PER_PAGE = 50
REJECTED_SHOWN = 200
EVENTS_SHOWN = 50
CACHE_KEY = "run-pages"
CACHED_RUNS = 32  # each holds a run's parsed predictions and drawings
ENDED = frozenset({"finished", "failed", "aborted"})
# The libraries a reader checks first; the full list is one click away.
KEY_LIBRARIES = (
    "rdkit",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "lightgbm",
    "xgboost",
    "torch",
    "sqlalchemy",
)


@dataclass
class RunView:
    """What the run page shows that never changes once the run has ended."""

    record: RunRecord
    task: str
    targets: list[str]
    test_rows: list[dict[str, str]]
    dataset: DatasetRecord | None
    rejected: list[dict[str, str]]
    merged: int
    rejected_source: str
    environment: dict[str, Any]
    lineage_svg: str
    plots: dict[str, str] = field(default_factory=dict)


# -- reading the run -------------------------------------------------------------------


def _artifact_text(st: Store, record: RunRecord, name: str) -> str | None:
    digest = next((a.digest for a in record.artifacts if a.name == name), None)
    if digest is None or not st.has_blob(digest):
        return None
    return st.get_bytes(digest).decode("utf-8", errors="replace")


def _test_rows(text: str | None) -> list[dict[str, str]]:
    """The test-set rows of predictions.csv, one per molecule (all scored rows when there
    is no test part, as after k-fold cross-validation)."""
    if not text:
        return []
    rows = list(csv.DictReader(io.StringIO(text)))
    scored = [r for r in rows if r.get("split") not in ("rejected", "", None)]
    test = [r for r in scored if r.get("split") == "test"] or scored
    # A row merged into another row's molecule repeats that molecule's line: show each
    # molecule once, so the plot has one point per test-set molecule.
    seen: set[str] = set()
    unique = []
    for row in test:
        molecule = row.get("standardized_smiles") or row.get("row") or ""
        if molecule not in seen:
            seen.add(molecule)
            unique.append(row)
    return unique


def _dataset_of(st: Store, record: RunRecord) -> DatasetRecord | None:
    """The dataset version the run read: the one made from its dataset and standardize
    steps' outputs (a version's id is not a step key, so it is found by those digests)."""
    from sqlalchemy import select

    from qemlflow.store import schema

    outputs = {s.step: s.output for s in record.steps}
    raw, table = outputs.get("dataset"), outputs.get("standardize")
    if not raw or not table:
        return None
    t = schema.datasets
    with st.db.reading() as conn:
        found = conn.execute(
            select(t.c.id).where(t.c.raw_digest == raw, t.c.table_digest == table).limit(1)
        ).first()
    return None if found is None else st.get_dataset(str(found[0]))


def _rejected(
    st: Store, record: RunRecord, dataset: DatasetRecord | None
) -> tuple[list[dict[str, str]], int, str]:
    """Rejected rows with reasons, the number merged into duplicates, and where from."""
    text, source = None, ""
    if dataset is not None and dataset.rejected_digest and st.has_blob(dataset.rejected_digest):
        text = st.get_bytes(dataset.rejected_digest).decode("utf-8", errors="replace")
        source = f"dataset version {dataset.id[:12]}"
    if text is None:
        text = _artifact_text(st, record, "rejected.csv")
        source = "the run's rejected.csv"
    if not text:
        return [], 0, source
    rows = list(csv.DictReader(io.StringIO(text)))
    # The dataset's table lists merged duplicates too (status 'merged'); the run's own
    # rejected.csv has no status column and lists rejected rows only.
    rejected = [r for r in rows if r.get("status", "rejected") == "rejected"]
    return rejected, len(rows) - len(rejected), source


def _environment(st: Store, digest: str | None) -> dict[str, Any]:
    """The captured environment, summarized as the page shows it."""
    if not digest or not st.has_blob(digest):
        return {}
    snapshot: dict[str, Any] = json.loads(st.get_bytes(digest))
    python = snapshot.get("python") or {}
    system = snapshot.get("os") or {}
    cpu = snapshot.get("cpu") or {}
    git = snapshot.get("git") or {}
    packages: dict[str, str] = snapshot.get("packages") or {}
    return {
        "digest": digest,
        "python": (
            f"{python.get('implementation', 'Python')} {python.get('version')}"
            if isinstance(python, Mapping)
            else str(python)
        ),
        "platform": system.get("platform") if isinstance(system, Mapping) else str(system),
        "cpu": f"{cpu.get('model')} ({cpu.get('count')} cores)" if cpu else None,
        "qemlflow": snapshot.get("qemlflow"),
        "git": (
            f"{git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''}" if git else None
        ),
        "libraries": {k: packages[k] for k in KEY_LIBRARIES if k in packages},
        "packages": packages,
    }


def _lineage_svg(st: Store, run_id: str) -> str:
    from qemlflow.pipeline.lineage import lineage
    from qemlflow.ui.graph import graph_svg, lineage_graph

    return graph_svg(lineage_graph(lineage(st, run_id)))


def _build(st: Store, record: RunRecord) -> RunView:
    metrics = record.metrics or {}
    targets = [str(t) for t in metrics.get("targets") or ()] or [
        str(t) for t in (record.config.get("dataset") or {}).get("target_columns") or ()
    ]
    dataset = _dataset_of(st, record)
    rejected, merged, source = _rejected(st, record, dataset)
    return RunView(
        record=record,
        task=str(metrics.get("task") or (record.config.get("dataset") or {}).get("task") or ""),
        targets=targets,
        test_rows=_test_rows(_artifact_text(st, record, "predictions.csv")),
        dataset=dataset,
        rejected=rejected,
        merged=merged,
        rejected_source=source,
        environment=_environment(st, record.environment),
        lineage_svg=_lineage_svg(st, record.id),
    )


def run_view(request: Request, run_id: str) -> RunView:
    """The run ``run_id`` (an id or unique prefix) as the page shows it, cached per run
    once it has ended (unknown ids raise StoreError: a 404 page)."""
    st = store(request)
    record = st.get_run(run_id, settle=False)
    cache: OrderedDict[str, RunView] = state(request).cache.setdefault(CACHE_KEY, OrderedDict())
    view = cache.get(record.id)
    if view is not None:
        cache.move_to_end(record.id)
        return view
    view = _build(st, record)
    if record.status in ENDED:
        cache[record.id] = view
        while len(cache) > CACHED_RUNS:
            cache.popitem(last=False)
    return view


# -- what the page shows ---------------------------------------------------------------


def _column(view: RunView, base: str, target: str) -> str:
    return base if len(view.targets) <= 1 else f"{base}_{target}"


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def plot_svg(view: RunView, target: str) -> str:
    """The run's parity plot (regression) or ROC curve (classification) for ``target``."""
    cached = view.plots.get(target)
    if cached is not None:
        return cached
    from qemlflow.ui.plots import parity_svg, roc_svg

    rows = view.test_rows
    smiles = [r.get("standardized_smiles") or r.get("smiles") or "" for r in rows]
    observed = [_float(r.get(_column(view, "label", target))) for r in rows]
    title = f"{view.record.name}: {target} (test set)"
    if view.task == "classification":
        scores = [_float(r.get(_column(view, "probability", target))) for r in rows]
        svg = roc_svg(observed, scores, smiles, title=title)
    else:
        predicted = [_float(r.get(_column(view, "prediction", target))) for r in rows]
        svg = parity_svg(
            observed,
            predicted,
            smiles,
            title=title,
            x_label=f"observed {target}",
            y_label=f"predicted {target}",
        )
    view.plots[target] = svg
    return svg


def _metric_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Test metrics with their bootstrap CI, and the same metric on valid and train."""
    test = metrics.get("test")
    if not isinstance(test, Mapping):
        return []
    ci_key = next((k for k in sorted(metrics) if k.startswith("ci") and k[2:].isdigit()), None)
    intervals = (metrics.get(ci_key) or {}).get("test", {}) if ci_key else {}
    rows = []
    for name, value in test.items():
        ci = intervals.get(name)
        rows.append(
            {
                "name": name,
                "value": value,
                "ci": ci if isinstance(ci, list | tuple) and len(ci) == 2 else None,
                "valid": (metrics.get("valid") or {}).get(name),
                "train": (metrics.get("train") or {}).get(name),
            }
        )
    return rows


def _per_task(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    per = (metrics.get("per_task") or {}).get("test")
    return dict(per) if isinstance(per, Mapping) and len(per) > 1 else {}


def _prediction_rows(view: RunView, target: str, page: int) -> list[dict[str, Any]]:
    from qemlflow.ui.depict import depict

    start = (page - 1) * PER_PAGE
    out = []
    for r in view.test_rows[start : start + PER_PAGE]:
        smiles = r.get("standardized_smiles") or r.get("smiles") or ""
        observed = _float(r.get(_column(view, "label", target)))
        predicted = _float(r.get(_column(view, "prediction", target)))
        out.append(
            {
                "row": r.get("row", ""),
                "smiles": r.get("smiles", ""),
                "standardized": smiles,
                "depiction": depict(smiles),
                "observed": observed,
                "predicted": predicted,
                "probability": _float(r.get(_column(view, "probability", target))),
                "lower": _float(r.get(_column(view, "lower", target))),
                "upper": _float(r.get(_column(view, "upper", target))),
                # An ensemble's members' standard deviation (NaN for other models).
                "ensemble_sd": _float(r.get(_column(view, "ensemble_sd", target))),
                "error": abs(observed - predicted),
            }
        )
    return out


def _verify_event(st: Store, event: AuditEvent, keys: dict[str, str | None]) -> str:
    """'verified', 'does not verify', 'unknown key' or 'unsigned': the event's Ed25519
    signature checked against the key enrolled under its signer's fingerprint (and, for
    an electronic signature, the signed message too). The full chain's verdict (order,
    roles, revocations) is the Audit page's."""
    from qemlflow.audit.principal import verify_signature

    if not event.signature or not event.signer:
        return "unsigned"
    if event.signer not in keys:
        if event.action == "store.owner":
            keys[event.signer] = str(event.details.get("public_key", "")) or None
        else:
            found = st.identities.by_fingerprint(event.signer)
            keys[event.signer] = None if found is None else found.public_key
    public_key = keys[event.signer]
    if public_key is None:
        return "unknown key"
    try:
        signature = base64.b64decode(event.signature, validate=True)
    except (binascii.Error, ValueError):
        return "does not verify"
    if not verify_signature(public_key, event.signed_message(), signature):
        return "does not verify"
    if event.action == "signature" and not _esignature_verifies(public_key, event):
        return "does not verify"
    return "verified"


def _esignature_verifies(public_key: str, event: AuditEvent) -> bool:
    from qemlflow.audit.principal import verify_signature
    from qemlflow.audit.signatures import signature_message

    details, signer = event.details, event.details.get("signer") or {}
    try:
        message = signature_message(
            object_id=str(event.objects.get("object")),
            kind=str(details.get("kind")),
            digest=str(event.objects.get("digest")),
            meaning=str(details.get("meaning")),
            reason=str(event.reason),
            signer={k: str(signer.get(k)) for k in ("name", "email", "fingerprint")},
            signed_at=str(details.get("signed_at")),
        )
        signature = base64.b64decode(str(details.get("signature")), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        return False
    return verify_signature(public_key, message, signature)


def run_events(st: Store, run_id: str, limit: int = EVENTS_SHOWN) -> list[AuditEvent]:
    """The audit events naming the run (oldest first), found in SQL by the store's own
    object filter; only exact matches are kept (the filter also takes id prefixes)."""
    from qemlflow.store.audit import read_events

    with st.db.reading() as conn:
        events = read_events(conn, object_ref=run_id, limit=limit)
    return [e for e in events if run_id in e.objects.values()]


def _event_rows(st: Store, events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
    keys: dict[str, str | None] = {}
    return [
        {
            "seq": e.seq,
            "action": e.action,
            "actor": e.actor,
            "when": e.timestamp,
            "signer": e.signer,
            "auth": e.auth,
            "meaning": e.details.get("meaning") if e.action == "signature" else None,
            "reason": e.reason,
            "status": _verify_event(st, e, keys),
        }
        for e in events
    ]


def _summary(view: RunView, events: Sequence[AuditEvent]) -> dict[str, Any]:
    record, config = view.record, view.record.config
    model = config.get("model") or {}
    split = config.get("split") or {}
    dataset = config.get("dataset") or {}
    started = next((e for e in events if e.action == "run.started"), None)
    return {
        "status": record.status,
        "dataset": view.dataset.name if view.dataset else dataset.get("source"),
        "dataset_id": view.dataset.id if view.dataset else None,
        "source": dataset.get("source"),
        "task": view.task,
        "targets": ", ".join(view.targets),
        "model": model.get("estimator") or model.get("type"),
        "split": split.get("method"),
        "sizes": split.get("sizes"),
        "seed": record.seed,
        "who": started.actor if started else None,
        "started": record.started_at,
        "finished": record.finished_at,
        "error": record.error,
        "n": (record.metrics or {}).get("n"),
    }


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: str,
    page: int = Query(1, ge=1),
    task: str | None = Query(None, max_length=200),
) -> HTMLResponse:
    """One run, everything recorded about it."""
    view = run_view(request, run_id)
    st = store(request)
    target = task if task in view.targets else (view.targets[0] if view.targets else "")
    pages = max(1, -(-len(view.test_rows) // PER_PAGE))
    page = min(page, pages)
    events = run_events(st, view.record.id)
    metrics = view.record.metrics or {}
    predictions = _prediction_rows(view, target, page)
    return render(
        request,
        "run.html",
        nav="runs",
        run=view.record,
        view=view,
        summary=_summary(view, events),
        target=target,
        plot=plot_svg(view, target) if view.test_rows and target else "",
        metric_rows=_metric_rows(metrics),
        per_task=_per_task(metrics),
        interval=metrics.get("interval"),
        predictions=predictions,
        show_ensemble_sd=any(p["ensemble_sd"] == p["ensemble_sd"] for p in predictions),
        ensemble_spread=metrics.get("ensemble_spread"),
        page=page,
        pages=pages,
        per_page=PER_PAGE,
        rejected_shown=view.rejected[:REJECTED_SHOWN],
        events=_event_rows(st, events),
        config_text=json.dumps(view.record.config, indent=2, sort_keys=False, default=str),
    )


@router.get("/runs/{run_id}/plot.svg")
def run_plot(
    request: Request, run_id: str, task: str | None = Query(None, max_length=200)
) -> Response:
    """The run's parity plot or ROC curve as a standalone SVG image."""
    view = run_view(request, run_id)
    target = task if task in view.targets else (view.targets[0] if view.targets else "")
    if view.test_rows and target:
        svg = plot_svg(view, target)
    else:
        from qemlflow.ui.plots import parity_svg

        svg = parity_svg([], [], [], title=f"{view.record.name}: no test predictions")
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "max-age=300"})
