"""``/``: the overview; ``/depict``: a structure as an SVG image (for tooltips)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from qemlflow.ui.depict import depict
from qemlflow.ui.runs_query import cached_rows
from qemlflow.ui.templating import render, state, store

__all__ = ["LATEST_RUNS", "router"]

router = APIRouter()

LATEST_RUNS = 10


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    """The overview: what the store holds, the latest runs, the models in production."""
    opened = store(request)
    counts = opened.table_counts()
    names = sorted({v.name for v in opened.list_model_versions()})
    # Every registered name with its live aliases; names nothing points at are left out.
    production = [(name, aliases) for name in names if (aliases := opened.current_aliases(name))]
    return render(
        request,
        "home.html",
        nav="home",
        stats=(
            ("runs", "runs", counts.get("runs", 0)),
            ("datasets", "dataset versions", counts.get("datasets", 0)),
            ("models", "registered models", len(names)),
            ("audit-events", "audit events", counts.get("audit_events", 0)),
        ),
        latest=cached_rows(opened, state(request).cache)[:LATEST_RUNS],
        production=production,
        unaliased=len(names) - len(production),
    )


@router.get("/depict")
def depiction(smiles: str = Query(..., max_length=2000)) -> Response:
    """One molecule drawn as SVG (cached; used by hover tooltips)."""
    return Response(
        depict(smiles),
        media_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400"},
    )
