"""Templates, their filters, and the helpers every page uses to answer."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from qemlflow._version import __version__

if TYPE_CHECKING:
    from qemlflow.store import Store
    from qemlflow.ui.app import UiState

__all__ = ["NAV", "render", "render_error", "state", "store", "templates"]

TEMPLATES = Path(__file__).parent / "templates"

# (path, label, data-nav key): the navigation bar, in order.
NAV = (
    ("/runs", "Runs", "runs"),
    ("/datasets", "Datasets", "datasets"),
    ("/models", "Models", "models"),
    ("/screens", "Screens", "screens"),
    ("/monitor", "Monitor", "monitor"),
    ("/audit", "Audit", "audit"),
    ("/predict", "Predict", "predict"),
)

templates = Jinja2Templates(directory=str(TEMPLATES))


def _number(value: Any, digits: int = 3) -> str:
    """A metric as people read it: 3 significant decimals, '—' when absent."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2e}"


def _when(value: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS' UTC (the store writes UTC)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _short(value: str | None, length: int = 12) -> str:
    return "—" if not value else value[:length]


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _svg(value: str | None) -> Markup:
    """Mark an SVG the package drew (RDKit depiction, plot) as safe to inline."""
    return Markup(value or "")  # noqa: S704  # nosec B704  # only SVG this package drew, never user text


templates.env.filters["number"] = _number
templates.env.filters["when"] = _when
templates.env.filters["short"] = _short
templates.env.filters["pretty_json"] = _pretty_json
templates.env.filters["svg"] = _svg
templates.env.globals["NAV"] = NAV
templates.env.globals["qemlflow_version"] = __version__


def state(request: Request) -> UiState:
    """The UI's shared state (store, settings, caches)."""
    ui: UiState = request.app.state.ui
    return ui


def store(request: Request) -> Store:
    """The open store."""
    return state(request).store


def render(
    request: Request, template: str, nav: str | None = None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``template`` with the page's context plus what the layout needs."""
    ui = state(request)
    context.update(
        request=request,
        nav=nav,
        writable=ui.writable,
        csrf=ui.csrf,
        store_label=ui.store.database_url if ui.store.backend != "sqlite" else ui.store.root.name,
        store_location=ui.store.database_url
        if ui.store.backend != "sqlite"
        else str(ui.store.root),
    )
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def render_error(request: Request, status_code: int, message: str) -> HTMLResponse:
    """An error page that keeps the navigation (404 for what the store does not have)."""
    title = {403: "Not allowed", 404: "Not found"}.get(status_code, "Cannot show this")
    return render(
        request,
        "error.html",
        status_code=status_code,
        message=message,
        title=title,
        status=status_code,
    )
