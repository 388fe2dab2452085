"""``/models``: the registry's names, versions, aliases, and every alias move with its gates.

With ``qemlflow ui --allow-changes`` the detail page has the promote and rollback forms;
they call :func:`qemlflow.registry.promote` and :func:`~qemlflow.registry.rollback`, as
``qemlflow models promote/rollback`` do, with the store's acting identity: the roles and
the promotion gates apply exactly as on the command line.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from qemlflow.errors import QeMLflowError
from qemlflow.ui.templating import render, render_error, state, store

if TYPE_CHECKING:
    from qemlflow.store import AuditEvent
    from qemlflow.store.registry_records import AliasEventRecord

__all__ = ["HISTORY_ACTIONS", "router"]

router = APIRouter()

HISTORY_ACTIONS = ("model.promoted", "model.rolled_back", "model.alias_removed")
"""The audit actions of alias moves (one per row of the registry's alias history)."""
_REFUSED = "model.promotion_refused"
_READ_ONLY = (
    "this UI is read-only: start `qemlflow ui --allow-changes` to promote or roll back "
    "(each change is still checked against your identity's role)"
)


@dataclass(frozen=True)
class HistoryRow:
    """One alias move, joined with the audit event that recorded its gates and approvals."""

    at: str
    alias: str
    version: int | None
    action: str
    actor: str
    reason: str | None
    seq: int | None = None
    previous: int | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    policy: str | None = None


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request) -> HTMLResponse:
    """Every registered model name: versions, latest, current aliases."""
    from qemlflow.registry import list_models

    return render(request, "models.html", nav="models", models=list_models(store(request)))


@router.get("/models/{name}", response_class=HTMLResponse)
def model_page(request: Request, name: str) -> HTMLResponse:
    """One model: versions, aliases, the history of every alias move and refused promotion."""
    return _model(request, name)


@router.post("/models/{name}/promote", response_class=HTMLResponse)
def promote_action(
    request: Request,
    name: str,
    version: str = Form(""),
    alias: str = Form("production"),
    reason: str = Form(""),
    csrf: str = Form(""),
) -> HTMLResponse:
    """Run the promotion gates (``qemlflow models promote``); move the alias when they pass."""
    from qemlflow.registry import promote

    refused = _refuse_change(request, csrf)
    if refused is not None:
        return refused
    alias = alias.strip() or "production"
    try:
        number = _version_number(version)
        result = promote(store(request), name, number, alias, reason=reason.strip() or None)
    except QeMLflowError as exc:
        return _model(request, name, error=str(exc), status_code=400)
    before = "nothing" if result.previous is None else f"version {result.previous}"
    gates = ", ".join(f"{g.gate} passed" for g in result.gates)
    done = f"{name}@{alias} -> version {result.version} (was {before}); {gates}"
    return _model(request, name, done=done)


@router.post("/models/{name}/rollback", response_class=HTMLResponse)
def rollback_action(
    request: Request,
    name: str,
    alias: str = Form("production"),
    reason: str = Form(""),
    csrf: str = Form(""),
) -> HTMLResponse:
    """Move the alias back to its previous version (``qemlflow models rollback``)."""
    from qemlflow.registry import rollback

    refused = _refuse_change(request, csrf)
    if refused is not None:
        return refused
    alias = alias.strip() or "production"
    try:
        moved = rollback(store(request), name, alias, reason.strip() or None)
    except QeMLflowError as exc:
        return _model(request, name, error=str(exc), status_code=400)
    return _model(request, name, done=f"{name}@{alias} rolled back to version {moved.version}")


def _refuse_change(request: Request, csrf: str) -> HTMLResponse | None:
    """403 unless the UI was started with --allow-changes and the form carries its token."""
    ui = state(request)
    if not ui.writable:
        return render_error(request, 403, _READ_ONLY)
    if not csrf or not secrets.compare_digest(csrf.encode(), ui.csrf.encode()):
        return render_error(
            request,
            403,
            "the form's token is missing or stale; reload the page and submit it again",
        )
    return None


def _version_number(text: str) -> int:
    try:
        number = int(text.strip())
    except ValueError:
        raise QeMLflowError(
            f"version {text!r} is not a number", "choose a version from the list"
        ) from None
    if number < 1:
        raise QeMLflowError(f"version {number} does not exist", "choose a version from the list")
    return number


def _model(
    request: Request,
    name: str,
    *,
    error: str | None = None,
    done: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    from qemlflow.registry import describe

    opened = store(request)
    if not opened.list_model_versions(name):
        return render_error(
            request, 404, f"no model named {name!r}; the Models page lists the registered ones"
        )
    info = describe(opened, name)
    moves = [_event_fields(e) for a in HISTORY_ACTIONS for e in _events(request, name, a)]
    moves.sort(key=lambda m: m["seq"])
    refused = sorted(
        (_event_fields(e) for e in _events(request, name, _REFUSED)),
        key=lambda m: -int(m["seq"]),
    )
    return render(
        request,
        "models_detail.html",
        nav="models",
        status_code=status_code,
        name=name,
        info=info,
        history=list(reversed(_history(opened.alias_history(name), moves))),
        refused=refused,
        error=error,
        done=done,
    )


def _events(request: Request, name: str, action: str) -> list[AuditEvent]:
    """This model's events of ``action`` (the action index narrows, the name filters)."""
    found = store(request).audit_events(object_ref=name, action=action)
    return [e for e in found if e.objects.get("model_name") == name]


def _event_fields(event: AuditEvent) -> dict[str, Any]:
    details = event.details or {}
    return {
        "seq": event.seq,
        "at": event.timestamp,
        "actor": event.actor,
        "action": event.action,
        "reason": event.reason,
        "alias": details.get("alias"),
        "version": details.get("version"),
        "previous": details.get("previous"),
        "gate": details.get("gate"),
        "gates": list(details.get("gates") or []),
        "approvals": list(details.get("approvals") or []),
        "policy": details.get("policy_source"),
    }


def _history(moves: list[AliasEventRecord], events: list[dict[str, Any]]) -> list[HistoryRow]:
    """Join each alias move with its audit event: both are written in one transaction, so
    they come in the same order; a move with no matching event keeps empty gates."""
    rows: list[HistoryRow] = []
    pending = list(events)
    for move in moves:
        action = "model.alias_removed" if move.version is None else f"model.{move.action}"
        match = next(
            (
                e
                for e in pending
                if e["action"] == action
                and e["alias"] == move.alias
                and e["version"] == move.version
            ),
            None,
        )
        if match is not None:
            pending.remove(match)
        rows.append(
            HistoryRow(
                at=move.at,
                alias=move.alias,
                version=move.version,
                action=move.action,
                actor=move.actor,
                reason=move.reason,
                seq=None if match is None else match["seq"],
                previous=None if match is None else match["previous"],
                gates=[] if match is None else match["gates"],
                approvals=[] if match is None else match["approvals"],
                policy=None if match is None else match["policy"],
            )
        )
    return rows
