"""The audit trail repository: appending, reading and verifying a store's audit events.

The chain itself (event hashing, canonical form, verification) is
:mod:`qemlflow.store.audit`; this repository runs it on the store's database. Other
repositories append their events with :func:`~qemlflow.store.audit.append_event` inside
their own write transaction, so that the change and its event commit together.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from qemlflow.store.audit import (
    AuditCheck,
    AuditEvent,
    AuditReport,
    append_event,
    audit_head,
    missing_append_only_triggers,
    read_events,
    verify_audit_chain,
)
from qemlflow.store.errors import StoreError
from qemlflow.store.transactions import Database

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal

__all__ = ["AuditTrail"]


class AuditTrail:
    """The audit trail of a store (``store.audit_trail``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from qemlflow.store import Store
    >>> with Store.open(Path(tempfile.mkdtemp())) as store:
    ...     event = store.audit_trail.append("model.registered", {"model": "ab" * 32})
    ...     event.seq, event.action, store.audit_trail.verify().ok  # 1: store.owner
    (2, 'model.registered', True)
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def append(
        self,
        action: str,
        objects: Mapping[str, str | None] | None = None,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        principal: Principal | None = None,
    ) -> AuditEvent:
        """Append an event in a transaction of its own and return it (hash-chained, signed).

        Parameters
        ----------
        action
            A dotted name: ``"signature"``, ``"model.registered"``, ...
        objects
            What the event is about, role -> key, digest or id (``{"run": run_id}``).
        reason
            Why (free text), e.g. the meaning of a signature.
        details
            Small, plain JSON data (NaN is stored as null).
        principal
            Who signs; default the store's acting identity. Its role must allow the action
            (:mod:`~qemlflow.store.authority`).

        Raises
        ------
        AuthorityError
            The acting identity may not append ``action``.
        StoreError
            An identity action: those go through ``store.identities``.
        """
        if action.startswith("identity.") or action == "store.owner":
            raise StoreError(
                f"{action} events are written by store.identities only",
                "use store.identities.enroll / set_role / rotate / revoke",
            )
        with self._db.writing(principal) as conn:
            return append_event(conn, action, objects, reason=reason, details=details)

    def events(
        self,
        *,
        object_ref: str | None = None,
        since: str | None = None,
        action: str | None = None,
    ) -> list[AuditEvent]:
        """Return audit events in seq order, filtered; see :func:`~.audit.read_events`.

        ``object_ref`` is a key, digest or id (or a prefix of 6+ characters) named in the
        event's objects; ``since`` an ISO time or date; ``action`` a name or ``"run.*"``.
        """
        with self._db.reading() as conn:
            return read_events(conn, object_ref=object_ref, since=since, action=action)

    def head(self) -> dict[str, Any]:
        """Return the head of the audit chain (``seq``, ``hash``, ``timestamp``, ``events``,
        ``store``): keep it outside the store as an anchor for :meth:`verify`."""
        with self._db.reading() as conn:
            return audit_head(conn)

    def verify(
        self, anchor: Mapping[str, Any] | None = None, checks: Sequence[AuditCheck] = ()
    ) -> AuditReport:
        """Check the whole audit chain (every row, by seq), see :func:`verify_audit_chain`,
        and that the triggers keeping the trail and the registry append-only are in place."""
        with self._db.reading() as conn:
            events = read_events(conn)
            missing = missing_append_only_triggers(conn)
        report = verify_audit_chain(events, anchor=anchor, checks=checks)
        if not missing:
            return report
        return dataclasses.replace(report, problems=(*missing, *report.problems))
