"""The datasets page(s) (to be built)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from qemlflow.ui.templating import render

__all__ = ["router"]

router = APIRouter()


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request) -> HTMLResponse:
    """Placeholder until the page is built."""
    return render(request, "placeholder.html", nav="datasets", title="datasets")
