"""``/screens``: running screens with their progress and completed ones (``screen.completed``
audit events, newest first, paginated in SQL); ``/screens/{seq}``: one screen's top hits."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from qemlflow.ui.templating import render, store

__all__ = ["router"]

router = APIRouter()

PER_PAGE = 50
_ACTION = "screen.completed"


@router.get("/screens", response_class=HTMLResponse)
def screens_page(request: Request, page: int = Query(1, ge=1, le=1_000_000)) -> HTMLResponse:
    """Running screens (progress) and completed screens (model, input, rows, time)."""
    from qemlflow.screen.running import running_screens
    from qemlflow.store import schema

    opened = store(request)
    t = schema.audit_events
    with opened.db.reading() as conn:
        total = int(
            conn.execute(
                select(func.count()).select_from(t).where(t.c.action == _ACTION)
            ).scalar_one()
        )
        rows = conn.execute(
            select(t.c.seq, t.c.timestamp, t.c.actor, t.c.objects, t.c.details)
            .where(t.c.action == _ACTION)
            .order_by(t.c.seq.desc())
            .limit(PER_PAGE)
            .offset((page - 1) * PER_PAGE)
        ).all()
    completed = [dict(row._mapping) for row in rows]
    now = time.time()
    running = [
        {"screen": s, "elapsed": now - s.started_at, "fraction": s.fraction}
        for s in running_screens(opened.root)
    ]
    return render(
        request,
        "screens.html",
        nav="screens",
        running=running,
        completed=completed,
        page=page,
        has_next=page * PER_PAGE < total,
        total=total,
    )


@router.get("/screens/{seq}", response_class=HTMLResponse)
def screen_page(request: Request, seq: int) -> HTMLResponse:
    """One completed screen: what it scored, and its best rows with their structures."""
    from qemlflow.store import schema
    from qemlflow.store.errors import StoreError
    from qemlflow.ui.depict import depict

    opened = store(request)
    t = schema.audit_events
    with opened.db.reading() as conn:
        row = conn.execute(
            select(t.c.seq, t.c.timestamp, t.c.actor, t.c.objects, t.c.details).where(
                t.c.seq == seq, t.c.action == _ACTION
            )
        ).first()
    if row is None:
        raise StoreError(f"no screen is recorded at audit seq {seq}", "pick one from /screens")
    event = dict(row._mapping)
    hits: dict[str, Any] | None = None
    digest = (event["objects"] or {}).get("hits")
    if digest and opened.blobs.has(digest):
        hits = opened.get_json(digest)
        for hit in hits["hits"]:
            hit["svg"] = depict(str(hit.get("standardized_smiles") or hit.get("smiles") or ""))
    return render(request, "screen.html", nav="screens", event=event, hits=hits)
