"""The run page(s) (to be built)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from qemlflow.ui.templating import render

__all__ = ["router"]

router = APIRouter()


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str) -> HTMLResponse:
    """Placeholder until the page is built."""
    return render(request, "placeholder.html", nav="runs", title="run")
