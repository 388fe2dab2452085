"""Build and run the UI application."""

from __future__ import annotations

import importlib
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from qemlflow.errors import QeMLflowError
from qemlflow.store.errors import StoreError

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["PAGES", "UiState", "create_app", "run_ui"]

HERE = Path(__file__).parent
STATIC = HERE / "static"

# One module per page family under qemlflow.ui.pages; each exposes ``router``.
PAGES = ("home", "runs", "run", "datasets", "models", "audit", "screens", "monitor", "predict")


@dataclass
class UiState:
    """What every request handler shares: the open store and the UI's own settings.

    ``writable`` is False by default: pages only read. When True, forms that change
    state (promote, roll back) are shown, and each POST carries ``csrf`` (a token made
    per process) and goes through the same authority checks as the CLI.
    """

    store: Store
    writable: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    cache: dict[str, Any] = field(default_factory=dict)


def create_app(store: Store, *, writable: bool = False, host: str = "127.0.0.1") -> FastAPI:
    """Return the UI application over ``store``.

    Requests whose ``Host`` is not the bound address (or ``localhost``) are refused, so a
    web page elsewhere cannot reach the UI through DNS rebinding.
    """
    from qemlflow.ui.templating import render_error

    app = FastAPI(title="QeMLflow", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = UiState(store=store, writable=writable)
    allowed = sorted({host, "127.0.0.1", "localhost", "testserver"})
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for name in PAGES:
        module = importlib.import_module(f"qemlflow.ui.pages.{name}")
        app.include_router(module.router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> HTMLResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:]) or "request"
        return render_error(request, 400, f"invalid {where}: {first['msg']}")

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> HTMLResponse:
        return render_error(request, 404, str(exc))

    @app.exception_handler(QeMLflowError)
    async def _error(request: Request, exc: QeMLflowError) -> HTMLResponse:
        return render_error(request, 400, str(exc))

    return app


def warm_up() -> None:
    """Import and exercise what the first page views need (RDKit drawing, NumPy, the
    lineage and plotting code), so that the first visitor does not wait seconds for it."""
    import numpy  # noqa: F401

    import qemlflow.audit.principal
    import qemlflow.pipeline.lineage
    import qemlflow.ui.graph
    import qemlflow.ui.plots  # noqa: F401
    from qemlflow.ui.depict import depict

    depict("c1ccccc1O")
    for name in PAGES:
        importlib.import_module(f"qemlflow.ui.pages.{name}")


def run_ui(
    store: Store, *, host: str = "127.0.0.1", port: int = 8765, writable: bool = False
) -> None:
    """Serve the UI with uvicorn until Ctrl+C."""
    import uvicorn

    app = create_app(store, writable=writable, host=host)
    warm_up()
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
