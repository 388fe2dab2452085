"""``/datasets``: dataset versions, their row accounting and label distributions."""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from qemlflow.ui.templating import render, state, store

__all__ = ["REJECTED_SHOWN", "router"]

router = APIRouter()

REJECTED_SHOWN = 50
"""How many rejected rows the detail page lists (the CSV link has them all)."""

_CACHE = "gov.dataset:"


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request) -> HTMLResponse:
    """Every dataset version, newest first."""
    return render(request, "datasets.html", nav="datasets", datasets=store(request).list_datasets())


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: str) -> HTMLResponse:
    """One dataset version: where it came from, what happened to each row, its labels."""
    record = store(request).get_dataset(dataset_id)
    return render(
        request,
        "datasets_detail.html",
        nav="datasets",
        dataset=record,
        summary=record.summary or {},
        **_contents(request, record.id),
    )


@router.get("/datasets/{dataset_id}/rejected.csv")
def rejected_csv(request: Request, dataset_id: str) -> Response:
    """Every rejected (and merged) row with its reason, as the version stored them."""
    record = store(request).get_dataset(dataset_id)
    if record.rejected_digest is None:
        return Response("row,input_smiles,reason,detail\n", media_type="text/csv")
    return Response(
        store(request).get_bytes(record.rejected_digest),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="rejected-{record.id[:12]}.csv"'},
    )


def _contents(request: Request, dataset_id: str) -> dict[str, Any]:
    """Histograms and the first rejected rows, read once per version (versions never change)."""
    cache = state(request).cache
    key = _CACHE + dataset_id
    if key not in cache:
        cache[key] = _read_contents(request, dataset_id)
    contents: dict[str, Any] = cache[key]
    return contents


def _read_contents(request: Request, dataset_id: str) -> dict[str, Any]:
    from qemlflow.ui.histogram import histogram_svg

    opened = store(request)
    record = opened.get_dataset(dataset_id)
    table = opened.get_json(record.table_digest)
    names = [str(n) for n in table.get("target_names", [])]
    task = str(table.get("task") or "regression")
    rows = table.get("y", [])
    histograms = [
        histogram_svg(name, [row[i] if i < len(row) else None for row in rows], task=task)
        for i, name in enumerate(names)
    ]
    rejected: list[dict[str, str]] = []
    if record.rejected_digest is not None:
        text = opened.get_bytes(record.rejected_digest).decode("utf-8")
        for i, row in enumerate(csv.DictReader(io.StringIO(text))):
            if i >= REJECTED_SHOWN:
                break
            rejected.append(row)
    return {"histograms": histograms, "rejected": rejected, "task": task, "labels": names}
