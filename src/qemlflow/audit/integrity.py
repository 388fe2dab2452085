"""Verifying the whole trail: the chain, the signatures, and the content events point at."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qemlflow.store import AuditEvent, AuditReport, Store

__all__ = ["BLOB_ROLES", "referenced_blobs_check", "verify_trail"]

#: Roles in an event's ``objects`` whose value is always a blob digest (a signature's
#: ``digest`` may be a run digest instead: the signature checks cover it).
BLOB_ROLES = ("raw", "table", "environment", "model", "artifact")


def referenced_blobs_check(
    store: Store,
) -> Callable[[Sequence[AuditEvent]], list[tuple[int, str]]]:
    """Return an audit check that re-hashes every blob an event refers to.

    A blob that is missing or no longer hashes to its digest is reported at the first
    event that refers to it. ``store.gc`` removes only unreferenced blobs, so a blob an
    event names is never legitimately gone.
    """
    said = {"missing": "is gone", "altered": "was altered on disk"}

    def check(events: Sequence[AuditEvent]) -> list[tuple[int, str]]:
        problems: list[tuple[int, str]] = []
        seen: set[str] = set()
        for event in events:
            for role in BLOB_ROLES:
                digest = event.objects.get(role)
                if not isinstance(digest, str) or digest in seen or len(digest) != 64:
                    continue
                seen.add(digest)
                problem = store.blob_problem(digest)
                if problem is not None:
                    problems.append(
                        (event.seq, f"the {role} blob {digest} it refers to {said[problem]}")
                    )
        return problems

    return check


def verify_trail(store: Store, anchor: dict[str, Any] | None = None) -> AuditReport:
    """Verify the chain (against ``anchor`` when given), every signature in it, that signed
    objects are unchanged, and that every blob an event refers to is intact."""
    from qemlflow.audit.signatures import signature_checks

    checks = (*signature_checks(store), referenced_blobs_check(store))
    return store.verify_audit(anchor=anchor, checks=checks)
