"""``/``: the overview; ``/depict``: a structure as an SVG image (for tooltips)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from qemlflow.ui.depict import depict
from qemlflow.ui.templating import render

__all__ = ["router"]

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> HTMLResponse:
    """The overview page."""
    return render(request, "home.html", nav="home")


@router.get("/depict")
def depiction(smiles: str = Query(..., max_length=2000)) -> Response:
    """One molecule drawn as SVG (cached; used by hover tooltips)."""
    return Response(
        depict(smiles),
        media_type="image/svg+xml",
        headers={"Cache-Control": "max-age=86400"},
    )
