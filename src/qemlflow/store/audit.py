"""The audit trail: an append-only, hash-chained log of who changed what, when and why.

Every state change of the store appends one :class:`AuditEvent` inside the same database
transaction as the change, so both commit or neither does. Each event carries the hash of
the one before it (``prev_hash``) and its own ``hash``: the sha256 of the canonical JSON
(RFC 8785) of ``seq, timestamp, actor, action, objects, reason, details, prev_hash``.
Events written before QeMLflow moved to RFC 8785 were hashed over Python's ``json.dumps``:
each event records its ``hash_scheme`` (``"jcs"``, or ``"legacy-json"`` for those), and is
verified with the encoder it was written with, so an old chain still verifies and new
events extend it. The scheme is not part of the hashed content, and need not be: flipping
it makes the other encoder hash the same content, which gives another digest, except for
content both encoders write identically (then the flip changes nothing). Database triggers
refuse UPDATE and DELETE on the table; a change made around them (a superuser, a file
editor) breaks the chain, and :func:`verify_audit_chain` names the first bad event. An
*anchor* (:meth:`~qemlflow.store.Store.audit_head`, kept outside the store) also catches a
truncated tail or a whole chain recomputed after an edit.

What is recorded, and what is not: datasets, runs (started, finished, failed, aborted),
garbage collection, backup and restore, plus whatever callers append with
:meth:`~qemlflow.store.Store.audit` (signatures, identities, model registrations). Cached
steps, run steps and artifacts are not recorded one by one: they are content-addressed and
immutable, and the run events (which name the run) cover them.

Examples
--------
>>> first = next_event(None, "dataset.added", {"dataset": "ab" * 32}, actor="Ada",
...                    timestamp="2026-01-01T00:00:00.000000+00:00")
>>> second = next_event(first, "run.started", {"run": "r1"}, actor="Ada",
...                     timestamp="2026-01-01T00:00:01.000000+00:00")
>>> second.seq, second.prev_hash == first.hash
(2, True)
>>> verify_audit_chain([first, second]).ok
True
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, and_, cast, exists, func, insert, literal, or_, select, text
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql import ColumnElement, Select

from qemlflow.store import schema
from qemlflow.store.checkpoints import maybe_checkpoint
from qemlflow.store.errors import StoreError
from qemlflow.store.keys import (
    HASH_SCHEME,
    LEGACY_HASH_SCHEME,
    canonical_json,
    legacy_canonical_json,
    plain_json,
    sha256_hex,
)
from qemlflow.store.records import utc_now

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal

__all__ = [
    "APPEND_ONLY_TRIGGERS",
    "EVENT_SIGNATURE_DOMAIN",
    "GENESIS_HASH",
    "PRINCIPAL_INFO",
    "SIGNED_HASH_SCHEME",
    "AuditCheck",
    "AuditEvent",
    "AuditReport",
    "acting_principal",
    "append_event",
    "audit_head",
    "count_events",
    "event_hash",
    "lock_audit_log",
    "missing_append_only_triggers",
    "next_event",
    "read_events",
    "verify_audit_chain",
]

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first event."""
SIGNED_HASH_SCHEME = "jcs-signed"
"""The hash scheme of signed events: RFC 8785 over the content, ``signer`` and ``auth`` included."""
EVENT_SIGNATURE_DOMAIN = b"qemlflow.audit-event/1\n"
"""Prefixed to the canonical content an event signature covers, so that no other signed
message of QeMLflow (an approval, a rotation proof) can pass for an event."""
PRINCIPAL_INFO = "qemlflow.principal"
"""``conn.info`` key: the callable that returns who acts in this write transaction."""

# Any 64-bit constant (not the migration lock's): serializes appends on PostgreSQL.
_PG_AUDIT_LOCK = 0x71E3A0D17
_ACTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")
_MIN_PREFIX = 6

APPEND_ONLY_TRIGGERS: dict[str, dict[str, tuple[str, str]]] = {
    "sqlite": {
        f"{table}_no_{op.lower()}": (table, op)
        for table in ("audit_events", "model_versions", "alias_events", "audit_checkpoints")
        for op in ("UPDATE", "DELETE")
    },
    "postgresql": {
        name: (table, op)
        for table in ("audit_events", "model_versions", "alias_events", "audit_checkpoints")
        for name, op in (
            (f"{table}_append_only", "UPDATE/DELETE"),
            (f"{table}_no_truncate", "TRUNCATE"),
        )
    },
}
"""Per backend: trigger name -> (table, refused operations); made by migrations 0002, 0003
and 0006 (``audit_checkpoints``)."""

AuditCheck = Callable[[Sequence["AuditEvent"]], Iterable[tuple[int, str]]]
"""An extra check for :func:`verify_audit_chain`: ``check(events) -> [(seq, problem), ...]``."""


_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    HASH_SCHEME: canonical_json,
    SIGNED_HASH_SCHEME: canonical_json,
    LEGACY_HASH_SCHEME: legacy_canonical_json,
}


def event_hash(content: Mapping[str, Any], scheme: str = HASH_SCHEME) -> str:
    """Return the hash of an event's content (every field but ``hash``): sha256 hex.

    ``scheme`` names the encoding: ``"jcs-signed"`` (RFC 8785, every new event, whose
    content includes its ``signer`` and ``auth``), ``"jcs"`` (unsigned events written before
    migration 0005) or ``"legacy-json"`` (events written before RFC 8785), the last two
    verified only.

    Raises
    ------
    StoreError
        The scheme is unknown, or the content has no canonical form.

    Examples
    --------
    >>> event_hash({"seq": 1, "action": "x"}) == event_hash({"action": "x", "seq": 1})
    True
    >>> event_hash({"p": 1.0}) == event_hash({"p": 1.0}, "legacy-json")
    False
    """
    encoder = _ENCODERS.get(scheme)
    if encoder is None:
        raise StoreError(
            f"unknown audit hash scheme {scheme!r}",
            f"known schemes: {', '.join(_ENCODERS)}; upgrade QeMLflow if the store is newer",
        )
    return sha256_hex(encoder(dict(content)))


@dataclass(frozen=True)
class AuditEvent:
    """One entry of the audit trail (a row of ``audit_events``).

    ``objects`` maps a role to what the event is about (``{"run": "2026...",
    "environment": "ab12..."}``); ``details`` is small, plain JSON data. ``hash_scheme``
    says how ``hash`` was taken (``"jcs-signed"``; ``"jcs"`` and ``"legacy-json"`` for the
    unsigned events written before migrations 0005 and 0004). ``signer`` is the
    fingerprint of the key that signed the event, ``auth`` how its holder authenticated,
    ``signature`` the Ed25519 signature (base64) of :meth:`signed_message`; all three are
    ``None`` on unsigned events.
    """

    seq: int
    timestamp: str
    actor: str
    action: str
    objects: dict[str, str]
    reason: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str
    hash_scheme: str = HASH_SCHEME
    signer: str | None = None
    auth: str | None = None
    signature: str | None = None

    def content(self) -> dict[str, Any]:
        """Return the fields the hash covers (all but ``hash``, ``hash_scheme``, ``signature``)."""
        content: dict[str, Any] = {
            "seq": self.seq,
            "timestamp": self.timestamp,
            "actor": self.actor,
            "action": self.action,
            "objects": self.objects,
            "reason": self.reason,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }
        if self.hash_scheme == SIGNED_HASH_SCHEME:
            content["signer"] = self.signer
            content["auth"] = self.auth
        return content

    def computed_hash(self) -> str:
        """Return the hash the content gives now (equal to ``hash`` unless edited)."""
        return event_hash(self.content(), self.hash_scheme)

    def signed_message(self) -> bytes:
        """Return the bytes the event's signature covers: a domain tag and the canonical
        content, whose ``seq`` and ``prev_hash`` bind it to its place in the chain."""
        return EVENT_SIGNATURE_DOMAIN + canonical_json(self.content())

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-compatible dict (every column of its row)."""
        return {
            **self.content(),
            "signer": self.signer,
            "auth": self.auth,
            "signature": self.signature,
            "hash": self.hash,
            "hash_scheme": self.hash_scheme,
        }


def next_event(
    previous: AuditEvent | None,
    action: str,
    objects: Mapping[str, str | None] | None = None,
    *,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    actor: str | None = None,
    timestamp: str | None = None,
    principal: Principal | None = None,
) -> AuditEvent:
    """Return the event that follows ``previous`` (``None``: the first), hash computed.

    ``objects`` entries whose value is ``None`` are left out; ``details`` is stored as
    plain JSON (NaN becomes null). With a ``principal`` the event is signed by it and its
    actor is the principal's display; without one (tests, examples) it is unsigned and
    names ``actor``, which stores accept only as the legacy prefix of a chain.

    Raises
    ------
    StoreError
        The action is not a dotted name, an object is not a string, the details hold
        data with no JSON form, or the actor is missing or is not the principal.
    """
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise StoreError(
            f"audit action {action!r} is not a dotted name",
            "use a short name like 'run.finished' or 'signature'",
        )
    objs: dict[str, str] = {}
    for role, value in (objects or {}).items():
        if value is None:
            continue
        if not isinstance(role, str) or not isinstance(value, str):
            raise StoreError(
                f"audit objects entry {role!r}: {value!r} is not a string pair",
                "map each role to a key, digest or id given as a string",
            )
        objs[role] = value
    plain = plain_json(dict(details or {}))
    if principal is not None:
        if actor is not None and actor != principal.display:
            raise StoreError(
                f"actor {actor!r} is not the acting identity {principal.display}",
                "leave the actor out: it is always the identity that signs the event",
            )
        actor = principal.display
    who = (actor or "").strip()
    if not who:
        raise StoreError("an audit event needs an actor", "give actor='Name <email>'")
    content: dict[str, Any] = {
        "seq": 1 if previous is None else previous.seq + 1,
        "timestamp": timestamp or utc_now(),
        "actor": who,
        "action": action,
        "objects": objs,
        "reason": None if reason is None else str(reason),
        "details": plain,
        "prev_hash": GENESIS_HASH if previous is None else previous.hash,
    }
    if principal is None:
        return AuditEvent(**content, hash=event_hash(content))
    content.update(signer=principal.fingerprint, auth=principal.auth)
    unsigned = AuditEvent(
        **content, hash=event_hash(content, SIGNED_HASH_SCHEME), hash_scheme=SIGNED_HASH_SCHEME
    )
    signature = base64.b64encode(principal.sign(unsigned.signed_message())).decode("ascii")
    return dataclasses.replace(unsigned, signature=signature)


# -- the table -----------------------------------------------------------------------


def _event_from(row: RowMapping) -> AuditEvent:
    return AuditEvent(
        seq=row["seq"],
        timestamp=row["timestamp"],
        actor=row["actor"],
        action=row["action"],
        objects=row["objects"],
        reason=row["reason"],
        details=row["details"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        # NULL: written before migration 0004, hashed with the legacy encoder.
        hash_scheme=row["hash_scheme"] or LEGACY_HASH_SCHEME,
        signer=row["signer"],
        auth=row["auth"],
        signature=row["signature"],
    )


def lock_audit_log(conn: Connection) -> None:
    """Make this write transaction the only one appending (PostgreSQL advisory lock).

    SQLite needs nothing: the store opens write transactions with ``BEGIN IMMEDIATE``,
    which already admits one writer at a time. Take the lock first in a transaction, before
    its other writes, so that no two transactions wait on each other.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})


def _last_event(conn: Connection) -> AuditEvent | None:
    t = schema.audit_events
    row = conn.execute(select(t).order_by(t.c.seq.desc()).limit(1)).first()
    return None if row is None else _event_from(row._mapping)


def acting_principal(conn: Connection) -> Principal:
    """Return who acts in this write transaction (see ``Database.writing``).

    Raises
    ------
    StoreError
        The transaction was not opened by the store's ``writing()``: it has no principal.
    """
    provider = conn.info.get(PRINCIPAL_INFO)
    if provider is None:
        raise StoreError(
            "this write transaction has no acting identity to sign its audit events",
            "open it with the store's db.writing(), not with engine.begin()",
        )
    principal: Principal = provider(conn)
    return principal


def append_event(
    conn: Connection,
    action: str,
    objects: Mapping[str, str | None] | None = None,
    *,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    principal: Principal | None = None,
) -> AuditEvent:
    """Append an event, signed by the acting identity, in the caller's write transaction.

    The event commits or rolls back with the transaction, together with the change it
    records. Its actor and signer are ``principal`` (default: the transaction's, see
    :func:`acting_principal`), whose enrolled role must allow ``action``
    (:mod:`~qemlflow.store.authority`); the first write to a store without an owner makes
    the acting identity its owner first (a ``store.owner`` event). See :func:`next_event`
    for the other arguments.

    Raises
    ------
    AuthorityError
        The acting identity is not enrolled in the store, its key is revoked, or its role
        (or authentication method) does not allow ``action``.
    """
    from qemlflow.store import identities  # it appends through this module

    lock_audit_log(conn)
    who = principal if principal is not None else acting_principal(conn)
    plain = plain_json(dict(details or {}))
    who = identities.authorize(conn, who, action, plain)
    event = next_event(
        _last_event(conn), action, objects, reason=reason, details=plain, principal=who
    )
    conn.execute(insert(schema.audit_events).values(**event.to_dict()))
    maybe_checkpoint(conn, event, who)  # every CHECKPOINT_EVERY events: a signed pin of the head
    return event


def _since_text(since: str) -> str:
    value = since.strip()
    if re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", value):
        return value  # a date prefix compares correctly as text
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise StoreError(
            f"{since!r} is not an ISO date or time",
            "give a date like 2026-01-31 or a time like 2026-01-31T09:00:00+00:00",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _until_text(until: str) -> str:
    """The upper bound (inclusive) as text: a date prefix covers its whole day, month, year."""
    value = _since_text(until)
    # "~" sorts after every character a timestamp holds (digits, "-", "T", ":", ".", "+")
    return value + "~" if len(value) <= len("2026-01-31") else value


_PLAIN = re.compile(r"[ !#-\[\]-~]+")
"""Printable ASCII but quote and backslash: written verbatim inside a JSON document."""


def _object_clause(conn: Connection, ref: str) -> ColumnElement[bool]:
    """SQL: one of the event's ``objects`` values equals ``ref`` or (at 6 characters or
    more) starts with it. Case-sensitive: ``substr``, since SQLite's ``LIKE`` folds case.

    A plain ``ref`` first has to occur in the objects' JSON text (``instr``/``strpos``),
    which rules out most rows before their JSON is parsed.
    """
    t = schema.audit_events
    postgres = conn.dialect.name == "postgresql"
    each = func.json_each_text if postgres else func.json_each
    values = each(t.c.objects).table_valued("value").alias("object_values")
    value = values.c.value
    match = value == ref
    if len(ref) >= _MIN_PREFIX:
        match = or_(match, func.substr(value, 1, len(ref)) == ref)
    clause: ColumnElement[bool] = exists(select(literal(1)).select_from(values).where(match))
    if _PLAIN.fullmatch(ref):
        text_of = cast(t.c.objects, Text)
        occurs = func.strpos(text_of, ref) if postgres else func.instr(text_of, ref)
        clause = and_(occurs > 0, clause)
    return clause


def _filtered(
    conn: Connection,
    query: Select[Any],
    *,
    object_ref: str | None,
    since: str | None,
    until: str | None,
    action: str | None,
    actor: str | None,
) -> Select[Any]:
    t = schema.audit_events
    if since is not None:
        query = query.where(t.c.timestamp >= _since_text(since))
    if until is not None:
        query = query.where(t.c.timestamp <= _until_text(until))
    if action is not None:
        if action.endswith(".*"):
            query = query.where(t.c.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(t.c.action == action)
    if actor is not None and actor.strip():
        part = actor.strip()
        if conn.dialect.name == "postgresql":
            query = query.where(t.c.actor.icontains(part, autoescape=True))
        else:  # SQLite's LIKE folds ASCII case (as far as its lower() would)
            query = query.where(t.c.actor.contains(part, autoescape=True))
    if object_ref is not None:
        query = query.where(_object_clause(conn, object_ref.strip()))
    return query


def read_events(
    conn: Connection,
    *,
    object_ref: str | None = None,
    since: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    until: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = False,
) -> list[AuditEvent]:
    """Return the events in seq order (``newest_first``: reversed), optionally filtered.

    ``object_ref`` matches an event when it equals one of its ``objects`` values or, at
    6 characters or more, is a prefix of one. ``since`` and ``until`` are ISO times or
    date prefixes (``2026-01``), both inclusive (``until="2026-01-31"`` takes the whole
    day). ``action`` matches exactly, or ending in ``.*`` a family (``run.*``). ``actor``
    matches a part of the actor, case-insensitively (``ada`` finds ``Ada <ada@lab.org>``).
    Every filter runs in SQL, so ``limit`` and ``offset`` page through what matches; see
    :func:`count_events` for the total.
    """
    t = schema.audit_events
    order = t.c.seq.desc() if newest_first else t.c.seq
    filters = {
        "object_ref": object_ref,
        "since": since,
        "until": until,
        "action": action,
        "actor": actor,
    }
    if limit is None and not offset:
        query = _filtered(conn, select(t).order_by(order), **filters)
    else:
        # The page's seqs first (an index can sort them), then only those rows: sorting
        # whole rows, JSON and all, to keep 100 of them costs far more on a long log.
        page = _filtered(conn, select(t.c.seq).order_by(order), **filters)
        if limit is not None:
            page = page.limit(limit)
        if offset:
            page = page.offset(offset)
        seqs = [int(s) for s in conn.execute(page).scalars()]
        query = select(t).where(t.c.seq.in_(seqs)).order_by(order)
    return [_event_from(r._mapping) for r in conn.execute(query)]


def count_events(
    conn: Connection,
    *,
    object_ref: str | None = None,
    since: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    until: str | None = None,
) -> int:
    """Return how many events match the filters of :func:`read_events`."""
    t = schema.audit_events
    query = _filtered(
        conn,
        select(func.count()).select_from(t),
        object_ref=object_ref,
        since=since,
        until=until,
        action=action,
        actor=actor,
    )
    return int(conn.execute(query).scalar_one())


def audit_head(conn: Connection) -> dict[str, Any]:
    """Return the chain head: ``seq``, ``hash``, ``timestamp``, ``events`` and ``store``.

    ``store`` identifies the log: the hash of its first event (a restored copy keeps it);
    ``None`` while the log is empty. Keep the head outside the store as an *anchor*.
    """
    t = schema.audit_events
    last = _last_event(conn)
    count = int(conn.execute(select(func.count()).select_from(t)).scalar_one())
    first = conn.execute(select(t.c.hash).where(t.c.seq == 1)).scalar()
    return {
        "seq": 0 if last is None else last.seq,
        "hash": GENESIS_HASH if last is None else last.hash,
        "timestamp": None if last is None else last.timestamp,
        "events": count,
        "store": first,
    }


# -- verification --------------------------------------------------------------------


def _present_triggers(conn: Connection) -> dict[str, str]:
    """Trigger name -> table, for the enabled triggers of the store's database."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text(
                "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' "
                "AND c.relnamespace = to_regnamespace(current_schema())"
            )
        )
    else:
        rows = conn.execute(text("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"))
    return {str(name): str(table) for name, table in rows}


def missing_append_only_triggers(conn: Connection) -> list[str]:
    """Return one problem per append-only trigger that is missing, disabled or moved.

    The triggers are what refuses UPDATE and DELETE on ``audit_events``, ``model_versions``,
    ``alias_events`` and ``audit_checkpoints``; without one, the hash chain still shows an
    edit, but the database no longer stops it.
    """
    expected = APPEND_ONLY_TRIGGERS.get(conn.dialect.name, APPEND_ONLY_TRIGGERS["sqlite"])
    present = _present_triggers(conn)
    return [
        f"trigger {name} on {table} is missing or disabled: {operations} on {table} is no "
        "longer refused; restore the store from a backup into a new store (its migrations "
        "recreate the trigger) and find out who removed it"
        for name, (table, operations) in expected.items()
        if present.get(name) != table
    ]


@dataclass(frozen=True)
class AuditReport:
    """The outcome of checking an audit trail; ``ok`` when nothing is wrong.

    ``problems`` are sorted by event; the first names ``first_bad_seq``. ``checkpoint`` is
    the seq of the latest signed checkpoint the log was found to agree with (``None``: none).

    Examples
    --------
    >>> AuditReport(n_events=0, head=(0, GENESIS_HASH)).to_dict()["ok"]
    True
    """

    n_events: int
    head: tuple[int, str]
    first_bad_seq: int | None = None
    problems: tuple[str, ...] = ()
    anchored: bool = False
    checkpoint: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the trail is intact."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-compatible dict."""
        return {
            "ok": self.ok,
            "n_events": self.n_events,
            "head": {"seq": self.head[0], "hash": self.head[1]},
            "first_bad_seq": self.first_bad_seq,
            "problems": list(self.problems),
            "anchored": self.anchored,
            "checkpoint": self.checkpoint,
        }


def _label(event: AuditEvent) -> str:
    return f"event {event.seq} ({event.action} at {event.timestamp})"


def _hash_problem(event: AuditEvent) -> str | None:
    try:
        recomputed = event.computed_hash()
    except StoreError as exc:
        return f"{_label(event)}: its content cannot be hashed ({exc}) - the event was edited"
    if recomputed != event.hash:
        return f"{_label(event)}: its hash does not match its content - the event was edited"
    return None


def _chain_findings(events: Sequence[AuditEvent]) -> list[tuple[int, str]]:
    findings: list[tuple[int, str]] = []
    present = {e.seq for e in events}
    expected, previous = 1, None
    for event in events:
        if event.seq > expected:
            missing = range(expected, event.seq)
            where = "the log jumps from " + (
                f"event {previous.seq}" if previous is not None else "the start"
            )
            if all(s in present for s in missing):
                findings.append(
                    (expected, f"event {expected} is out of order: {where} to event {event.seq}")
                )
            else:
                span = (
                    f"event {expected} is missing"
                    if len(missing) == 1
                    else f"events {expected} to {event.seq - 1} are missing"
                )
                findings.append((expected, f"{span}: {where} to event {event.seq} - deleted"))
        elif event.seq < expected:
            findings.append(
                (
                    event.seq,
                    f"{_label(event)}: comes again after event {expected - 1} - "
                    "duplicated or reordered",
                )
            )
        problem = _hash_problem(event)
        if problem is not None:
            findings.append((event.seq, problem))
        else:
            link = GENESIS_HASH if previous is None else previous.hash
            if event.prev_hash != link:
                if previous is None:
                    why = "its prev_hash is not the genesis hash (64 zeros) - it was forged"
                else:
                    why = (
                        f"its prev_hash does not match the hash of event {previous.seq} - event "
                        f"{previous.seq} was replaced, or an event was inserted or removed "
                        "between them"
                    )
                findings.append((event.seq, f"{_label(event)}: {why}"))
        previous = event
        expected = max(expected, event.seq + 1)
    return findings


def _anchor_findings(
    events: Sequence[AuditEvent], anchor: Mapping[str, Any]
) -> list[tuple[int, str]]:
    try:
        seq = int(anchor["seq"])
        digest = str(anchor["hash"])
    except (KeyError, TypeError, ValueError):
        raise StoreError(
            "the audit anchor has no integer 'seq' and 'hash'",
            "give the dict returned by Store.audit_head() (or `qemlflow audit anchor`)",
        ) from None
    by_seq = {e.seq: e for e in events}
    findings: list[tuple[int, str]] = []
    store_id = anchor.get("store")
    first = by_seq.get(1)
    if store_id and first is not None and first.hash != store_id:
        findings.append(
            (
                1,
                f"{_label(first)}: not the first event the anchor names - the log was "
                "replaced or rewritten from the start",
            )
        )
    if seq <= 0:
        return findings
    anchored = by_seq.get(seq)
    if anchored is None:
        last = max(by_seq, default=0)
        if seq > last:
            findings.append(
                (
                    last + 1,
                    f"events {last + 1} to {seq} are missing: the log ends at event {last} but "
                    f"the anchor names event {seq} - the tail was truncated",
                )
            )
        # a missing event inside the log is already reported as a gap
    elif anchored.hash != digest:
        findings.append(
            (
                seq,
                f"{_label(anchored)}: its hash differs from the anchor's - the log was "
                f"rewritten at or before event {seq}",
            )
        )
    return findings


def verify_audit_chain(
    events: Sequence[AuditEvent],
    anchor: Mapping[str, Any] | None = None,
    checks: Sequence[AuditCheck] = (),
) -> AuditReport:
    """Check a trail given in seq order; name the first bad event.

    Finds an edited event (hash no longer matches content), a deleted one (a seq gap and a
    broken link), an inserted, replaced or reordered one (broken link, seq out of order),
    an event whose author is not proven (see
    :class:`~qemlflow.store.identities.IdentityLedger`: a signature that does not verify
    with the key enrolled for its signer at that seq, a revoked or unknown key, a role that
    does not allow the action, an unsigned event after signed ones),
    and, against an ``anchor`` (a former :meth:`~qemlflow.store.Store.audit_head`), a
    truncated tail or a chain recomputed after an edit. ``checks`` add their own
    ``(seq, problem)`` findings (signatures, for instance).

    Examples
    --------
    >>> a = next_event(None, "run.started", {"run": "r1"}, actor="Ada")
    >>> b = next_event(a, "run.finished", {"run": "r1"}, actor="Ada")
    >>> import dataclasses
    >>> forged = dataclasses.replace(b, actor="Eve")
    >>> report = verify_audit_chain([a, forged])
    >>> report.ok, report.first_bad_seq
    (False, 2)
    >>> verify_audit_chain([a], anchor={"seq": 2, "hash": b.hash}).first_bad_seq
    2
    """
    from qemlflow.store.identities import replay_findings  # it imports this module

    findings = _chain_findings(events)
    findings += replay_findings(events)
    if anchor is not None:
        findings += _anchor_findings(events, anchor)
    for check in checks:
        findings += [(int(seq), str(problem)) for seq, problem in check(events)]
    findings.sort(key=lambda f: f[0])  # stable: within an event, in the order found
    last = events[-1] if events else None
    return AuditReport(
        n_events=len(events),
        head=(0, GENESIS_HASH) if last is None else (last.seq, last.hash),
        first_bad_seq=findings[0][0] if findings else None,
        problems=tuple(problem for _, problem in findings),
        anchored=anchor is not None,
    )
