"""``/audit``: the audit log with filters, its live verification, anchors and checkpoints.

The log is read a page at a time, newest first, with every filter applied in SQL
(:meth:`~qemlflow.store.Store.audit_page`). Verifying the chain re-checks every hash and
signature, which takes seconds on a long log: ``/audit/verification`` answers at once,
from a result cached per chain head, and verifies in a background thread when the head
has moved since (answering ``data-state="pending"`` until it is done; ``gov.js`` polls).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from qemlflow.store.errors import StoreError
from qemlflow.ui.templating import render, state, store

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["CHECKPOINTS_SHOWN", "PER_PAGE", "Verification", "router", "verification"]

router = APIRouter()

PER_PAGE = 100
CHECKPOINTS_SHOWN = 10
_CACHE = "gov.verification"
# Roles whose value names something with a page of its own.
_LINKS = {"run": "/runs/", "dataset": "/datasets/", "model_name": "/models/"}


@dataclass
class Verification:
    """The latest verification of a store's audit trail, and the one in progress.

    ``head`` is the (seq, hash) the report verified; a report answers for the log only
    while the log's head is still that one. An edit that leaves the head alone (a row
    changed around the triggers) moves nothing a cheap query sees, so a report older than
    ``max_age_s`` is checked again in the background while it is still shown.
    """

    store: Store
    max_age_s: float = 300.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    head: tuple[int, str] | None = None
    report: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    checked_at: float | None = None
    seconds: float | None = None
    worker: threading.Thread | None = None

    def current(self, head: tuple[int, str]) -> dict[str, Any] | None:
        """The cached report when it is about ``head`` (``None`` when there is none yet);
        starts verifying in the background when the head moved or the report is old."""
        with self.lock:
            fresh = self.report is not None and self.head == head
            old = self.checked_at is None or time.time() - self.checked_at > self.max_age_s
            if not fresh or old:
                self._start()
            return self.report if fresh else None

    def _start(self) -> None:
        if self.worker is None or not self.worker.is_alive():
            self.worker = threading.Thread(
                target=self._verify, name="qemlflow-audit-verify", daemon=True
            )
            self.worker.start()

    def _verify(self) -> None:
        from qemlflow.audit.integrity import verify_trail
        from qemlflow.store.pg_roles import privilege_warnings

        opened = self.store
        started = time.perf_counter()
        try:
            report = verify_trail(opened).to_dict()
            warnings = privilege_warnings(opened.db)
        except Exception as exc:  # shown as a broken trail, not lost in the thread
            head = opened.audit_head()
            report = {
                "ok": False,
                "n_events": head["events"],
                "head": {"seq": head["seq"], "hash": head["hash"]},
                "first_bad_seq": None,
                "problems": [f"verification could not finish: {exc}"],
                "checkpoint": None,
            }
            warnings = []
        with self.lock:
            self.head = (int(report["head"]["seq"]), str(report["head"]["hash"]))
            self.report = report
            self.warnings = warnings
            self.checked_at = time.time()
            self.seconds = time.perf_counter() - started


def verification(request: Request) -> Verification:
    """The UI's one :class:`Verification` of its store (made on first use)."""
    cache = state(request).cache
    found = cache.get(_CACHE)
    if not isinstance(found, Verification):
        found = Verification(store(request))
        found = cache.setdefault(_CACHE, found)
    return found


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    object_ref: str = Query("", alias="object", max_length=200),
    actor: str = Query("", max_length=200),
    action: str = Query("", max_length=100),
    since: str = Query("", max_length=40),
    until: str = Query("", max_length=40),
    page: int = Query(1),
) -> HTMLResponse:
    """The audit log, newest first, 100 events a page, filtered by object, actor, action, time."""
    page = max(page, 1)
    filters = {
        "object": object_ref,
        "actor": actor,
        "action": action,
        "since": since,
        "until": until,
    }
    given = {k: v.strip() for k, v in filters.items() if v.strip()}
    error = None
    try:
        events, total = store(request).audit_page(
            object_ref=given.get("object"),
            actor=given.get("actor"),
            action=given.get("action"),
            since=given.get("since"),
            until=given.get("until"),
            limit=PER_PAGE,
            offset=(page - 1) * PER_PAGE,
        )
    except StoreError as exc:  # a since/until that is not a date: say so on the page
        events, total, error = [], 0, str(exc)
    pages = max(1, -(-total // PER_PAGE))

    def page_url(number: int) -> str:
        return "/audit?" + urlencode({**given, "page": number})

    return render(
        request,
        "audit.html",
        nav="audit",
        status_code=400 if error else 200,
        events=events,
        total=total,
        page=page,
        pages=pages,
        prev_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if page < pages else None,
        filters=filters,
        filtered=bool(given),
        error=error,
        links=_LINKS,
    )


@router.get("/audit/verification", response_class=HTMLResponse)
def verification_fragment(request: Request) -> HTMLResponse:
    """The verification's result for the current head (``pending`` while it runs), plus
    the anchor to keep and the latest signed checkpoints."""
    opened = store(request)
    head = opened.audit_head()
    checker = verification(request)
    report = checker.current((int(head["seq"]), str(head["hash"])))
    checkpoints = opened.checkpoints.list()
    return render(
        request,
        "audit_verification.html",
        head=head,
        report=report,
        warnings=checker.warnings,
        checked_at=None
        if checker.checked_at is None
        else datetime.fromtimestamp(checker.checked_at, UTC).isoformat(),
        seconds=checker.seconds,
        checkpoints=list(reversed(checkpoints[-CHECKPOINTS_SHOWN:])),
        n_checkpoints=len(checkpoints),
    )
