"""``qemlflow ui``: a read-only web face on the store (runs, datasets, models, audit,
screens, monitoring, predictions), served by FastAPI with server-rendered templates.

Every asset ships in the package (no CDN): the UI works offline. Pages live in
:mod:`qemlflow.ui.pages`, one module per page family, each exposing ``router``.
FastAPI and Jinja2 are imported only when the UI is built.
"""

from __future__ import annotations

__all__: list[str] = []
