"""Signed checkpoints of the audit chain head: a truncated tail shows without an anchor.

The hash chain shows an edited, inserted or deleted event, but not a tail cut off cleanly:
the shorter log is still a valid chain. An *anchor* held outside the store catches that
(``qemlflow audit anchor``); a *checkpoint* catches it from inside. It is a row of
``audit_checkpoints`` pinning the head at one event (``seq`` and ``hash``), signed with
Ed25519 by the acting identity (an enrolled key), over a domain-separated canonical form::

    b"qemlflow.audit-checkpoint/1\\n" + canonical_json(
        {"seq", "hash", "timestamp", "signer", "store"})

where ``signer`` is the key fingerprint and ``store`` the hash of event 1 (the store's
identity, so a checkpoint cannot be carried over from another store). Checkpoints are
written automatically when an append makes the head a multiple of :data:`CHECKPOINT_EVERY`
(:func:`maybe_checkpoint`, called by :func:`~qemlflow.store.audit.append_event`), and at
every promotion (:meth:`~qemlflow.store.audit_trail.AuditTrail.checkpoint`). Triggers keep
the table append-only, as they keep ``audit_events``.

:func:`checkpoint_findings` flags a checkpoint past the log's last event (the tail was
truncated), one whose hash differs from its event's (the log was rewritten), and one whose
signature does not verify with the key the chain enrolled for its signer, valid at its seq
(forged: an unknown key, a key enrolled later or revoked earlier, a bad signature).

What it cannot catch: events appended after the last checkpoint and then cut off (a log of
250 events checkpointed at 200 can lose 201..250 unseen; a log that never reached its first
checkpoint can lose any tail), and an attacker who can delete rows of both tables around
the triggers (the checkpoints too). An external anchor covers both; so do the trigger
checks of ``audit verify``, unless the triggers are put back afterwards.

Examples
--------
>>> from qemlflow.store.audit import next_event
>>> first = next_event(None, "dataset.added", actor="Ada")
>>> checkpoint_findings([first], [], lambda fingerprint: None)
[]
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, RowMapping

from qemlflow.store import schema
from qemlflow.store.keys import canonical_json
from qemlflow.store.records import utc_now

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal
    from qemlflow.store.audit import AuditEvent
    from qemlflow.store.transactions import Database

__all__ = [
    "CHECKPOINT_DOMAIN",
    "CHECKPOINT_EVERY",
    "Checkpoint",
    "Checkpoints",
    "KeyAt",
    "KeyLookup",
    "chain_key_at",
    "checkpoint_check",
    "checkpoint_findings",
    "checkpoint_message",
    "checkpoint_report",
    "maybe_checkpoint",
    "read_checkpoints",
    "verified_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_EVERY = 100
"""An append that makes the head seq a multiple of this writes a checkpoint."""
CHECKPOINT_DOMAIN = b"qemlflow.audit-checkpoint/1\n"
"""Prefixed to the signed form: a checkpoint signature is never valid as another message."""

KeyLookup = Callable[[str], str | None]
"""``lookup(fingerprint) -> public key (base64 raw Ed25519) or None`` when not enrolled."""


def checkpoint_message(seq: int, digest: str, timestamp: str, signer: str, store: str) -> bytes:
    """Return the bytes a checkpoint's signature covers (domain-separated canonical JSON).

    Examples
    --------
    >>> checkpoint_message(100, "ab" * 32, "2026-01-01T00:00:00+00:00", "cd" * 32, "ef" * 32
    ...                    ).startswith(b"qemlflow.audit-checkpoint/1\\n{")
    True
    """
    content = {
        "seq": seq,
        "hash": digest,
        "timestamp": timestamp,
        "signer": signer,
        "store": store,
    }
    return CHECKPOINT_DOMAIN + canonical_json(content)


@dataclass(frozen=True)
class Checkpoint:
    """A signed pin of the chain head at event ``seq`` (a row of ``audit_checkpoints``).

    ``signer`` is the signing key's fingerprint (sha256 hex of the raw public key), ``auth``
    how its holder was authenticated, ``public_key`` the key itself (a convenience: the
    verifier takes the key from the enrolled identities, never from the row), ``signature``
    base64 Ed25519 over :func:`checkpoint_message`.
    """

    seq: int
    hash: str
    timestamp: str
    signer: str
    auth: str
    signature: str
    public_key: str | None = None

    def message(self, store: str) -> bytes:
        """Return the signed form, for the store whose event 1 has hash ``store``."""
        return checkpoint_message(self.seq, self.hash, self.timestamp, self.signer, store)

    def to_dict(self) -> dict[str, Any]:
        """Return the checkpoint as a JSON-compatible dict."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "timestamp": self.timestamp,
            "signer": self.signer,
            "auth": self.auth,
            "public_key": self.public_key,
            "signature": self.signature,
        }


def _checkpoint_from(row: RowMapping) -> Checkpoint:
    return Checkpoint(
        seq=int(row["seq"]),
        hash=row["hash"],
        timestamp=row["timestamp"],
        signer=row["signer"],
        auth=row["auth"],
        signature=row["signature"],
        public_key=row["public_key"],
    )


def read_checkpoints(conn: Connection) -> list[Checkpoint]:
    """Return every checkpoint, by seq."""
    t = schema.audit_checkpoints
    return [_checkpoint_from(r._mapping) for r in conn.execute(select(t).order_by(t.c.seq))]


def _write(conn: Connection, seq: int, digest: str, signer: Principal) -> Checkpoint:
    t = schema.audit_checkpoints
    row = conn.execute(select(t).where(t.c.seq == seq)).first()
    if row is not None:  # this head is pinned already (the periodic one, then a promotion)
        return _checkpoint_from(row._mapping)
    events = schema.audit_events
    store = conn.execute(select(events.c.hash).where(events.c.seq == 1)).scalar_one()
    timestamp = utc_now()
    message = checkpoint_message(seq, digest, timestamp, signer.fingerprint, str(store))
    checkpoint = Checkpoint(
        seq=seq,
        hash=digest,
        timestamp=timestamp,
        signer=signer.fingerprint,
        auth=signer.auth,
        signature=base64.b64encode(signer.sign(message)).decode("ascii"),
        public_key=signer.public_key,
    )
    conn.execute(insert(t).values(**checkpoint.to_dict()))
    return checkpoint


def write_checkpoint(conn: Connection, principal: Principal | None = None) -> Checkpoint | None:
    """Pin the current head in the caller's write transaction; return the checkpoint.

    ``principal`` signs; default: the acting identity of the transaction (see
    :meth:`~qemlflow.store.transactions.Database.writing`). Returns ``None`` for an empty
    log (nothing to pin), and the existing checkpoint when the head is pinned already.

    Raises
    ------
    AuthorityError
        The signer is not an active enrolled identity of the store.
    StoreError
        No principal is given and the transaction has none.
    """
    from qemlflow.store.audit import acting_principal, lock_audit_log
    from qemlflow.store.identities import enrolled_principal, not_enrolled_error

    lock_audit_log(conn)  # the head read below stays the head until commit
    t = schema.audit_events
    head = conn.execute(select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)).first()
    if head is None:
        return None
    signer = principal if principal is not None else acting_principal(conn)
    if enrolled_principal(conn, signer) is None:
        raise not_enrolled_error(signer, conn)
    return _write(conn, int(head.seq), str(head.hash), signer)


def maybe_checkpoint(conn: Connection, event: AuditEvent, principal: Principal) -> None:
    """Write the periodic checkpoint when ``event`` (just appended, by ``principal``, whose
    authority :func:`~qemlflow.store.audit.append_event` has checked) is a multiple of
    :data:`CHECKPOINT_EVERY`."""
    if event.seq % CHECKPOINT_EVERY == 0:
        _write(conn, event.seq, event.hash, principal)


# -- verification --------------------------------------------------------------------


def _fingerprint(public_key: str) -> str | None:
    try:
        return hashlib.sha256(base64.b64decode(public_key, validate=True)).hexdigest()
    except (binascii.Error, ValueError):
        return None


KeyAt = Callable[[str, int], "str | None"]
"""``key_at(fingerprint, seq)``: the key enrolled for that fingerprint and valid at ``seq``."""


def chain_key_at(events: Sequence[AuditEvent]) -> KeyAt:
    """Return the keys as the audit chain itself enrolls, rotates and revokes them
    (:class:`~qemlflow.store.identities.IdentityLedger`): a key signs a checkpoint at
    ``seq`` when it was enrolled at or before ``seq`` and not revoked before it."""
    from qemlflow.store.identities import IDENTITY_ACTIONS, IdentityLedger

    ledger = IdentityLedger()
    for event in sorted(events, key=lambda e: e.seq):
        # Only identity events change keys; as in verify, an unproven one changes nothing.
        if event.action in IDENTITY_ACTIONS and not ledger.check(event):
            ledger.apply(event)

    def key_at(fingerprint: str, seq: int) -> str | None:
        key = ledger.keys.get(fingerprint)
        if key is None or key.valid_from > seq:
            return None
        if key.revoked_seq is not None and key.revoked_seq < seq:
            return None  # the event that revokes a key is still signed by it
        return key.public_key

    return key_at


def _any_seq(key_lookup: KeyLookup) -> KeyAt:
    def key_at(fingerprint: str, _seq: int) -> str | None:
        return key_lookup(fingerprint)

    return key_at


def _signature_problem(checkpoint: Checkpoint, store: str, key_at: KeyAt) -> str | None:
    from qemlflow.audit.principal import verify_signature

    label = f"checkpoint {checkpoint.seq} (written {checkpoint.timestamp})"
    public_key = key_at(checkpoint.signer, checkpoint.seq)
    if public_key is None:
        return (
            f"{label}: signed by key {checkpoint.signer[:16]}, which is not enrolled in this "
            f"store at event {checkpoint.seq} - the checkpoint was forged"
        )
    if _fingerprint(public_key) != checkpoint.signer:
        return (
            f"{label}: the enrolled key for {checkpoint.signer[:16]} does not have that "
            "fingerprint - the key registry or the checkpoint was altered"
        )
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not verify_signature(public_key, checkpoint.message(store), signature):
        return (
            f"{label}: its signature does not verify with key {checkpoint.signer[:16]} - "
            "the checkpoint was forged or altered"
        )
    return None


def _findings(
    events: Sequence[AuditEvent],
    checkpoints: Sequence[Checkpoint],
    key_lookup: KeyLookup | None,
) -> tuple[list[tuple[int, str]], int | None]:
    key_at = chain_key_at(events) if key_lookup is None else _any_seq(key_lookup)
    by_seq: Mapping[int, AuditEvent] = {e.seq: e for e in events}
    last = max(by_seq, default=0)
    first = by_seq.get(1)
    findings: list[tuple[int, str]] = []
    verified: int | None = None
    ordered = sorted(checkpoints, key=lambda c: c.seq)
    beyond = [c for c in ordered if c.seq > last]
    if beyond:  # the highest one says the most; the lower ones add nothing
        top = beyond[-1].seq
        span = f"event {top}" if top == last + 1 else f"events {last + 1}..{top}"
        findings.append(
            (
                last + 1,
                f"{span} missing: the log ends at event {last}, but checkpoint {top} pins "
                f"event {top} - the tail was truncated after checkpoint {top}",
            )
        )
    if first is None and checkpoints:
        findings.append(
            (
                1,
                "the checkpoints' signatures cannot be checked: event 1, whose hash names "
                "the store they were signed for, is missing",
            )
        )
    for checkpoint in ordered:
        problems: list[str] = []
        event = by_seq.get(checkpoint.seq)
        if event is not None and event.hash != checkpoint.hash:
            problems.append(
                f"event {checkpoint.seq} ({event.action} at {event.timestamp}): its hash "
                f"differs from the one checkpoint {checkpoint.seq} pins - the log was "
                f"rewritten at or before event {checkpoint.seq}"
            )
        # a checkpoint inside the log whose event is gone: the gap is reported already
        if first is not None:
            problem = _signature_problem(checkpoint, first.hash, key_at)
            if problem is not None:
                problems.append(problem)
        findings += [(checkpoint.seq, p) for p in problems]
        if event is not None and not problems:
            verified = checkpoint.seq
    return findings, verified


def checkpoint_report(
    events: Sequence[AuditEvent],
    checkpoints: Sequence[Checkpoint],
    key_lookup: KeyLookup | None = None,
) -> tuple[list[tuple[int, str]], int | None]:
    """Return :func:`checkpoint_findings` and :func:`verified_checkpoint` in one pass."""
    return _findings(events, checkpoints, key_lookup)


def checkpoint_findings(
    events: Sequence[AuditEvent],
    checkpoints: Sequence[Checkpoint],
    key_lookup: KeyLookup | None = None,
) -> list[tuple[int, str]]:
    """Return ``(seq, problem)`` for each checkpoint the log contradicts.

    - a checkpoint past the log's last event: the tail was truncated (reported once, for
      the highest such checkpoint, at the first missing seq);
    - a checkpoint whose hash differs from its event's: the log was rewritten;
    - a checkpoint whose signature does not verify with its signer's key (none: an
      unknown key): forged.

    ``events`` is the whole log in seq order (event 1 names the store). The signer's key
    is ``key_lookup(fingerprint)`` (base64, ``None`` when unknown); default: the key the
    chain itself enrolled, valid at the checkpoint's seq (see :func:`chain_key_at`).
    """
    return _findings(events, checkpoints, key_lookup)[0]


def verified_checkpoint(
    events: Sequence[AuditEvent],
    checkpoints: Sequence[Checkpoint],
    key_lookup: KeyLookup | None = None,
) -> int | None:
    """Return the seq of the latest checkpoint that holds (its event present, same hash,
    signature valid); ``None`` when there is none."""
    return _findings(events, checkpoints, key_lookup)[1]


def checkpoint_check(
    checkpoints: Sequence[Checkpoint], key_lookup: KeyLookup | None = None
) -> Callable[[Sequence[AuditEvent]], list[tuple[int, str]]]:
    """Return :func:`checkpoint_findings` as an extra check of
    :func:`~qemlflow.store.audit.verify_audit_chain`."""

    def check(events: Sequence[AuditEvent]) -> list[tuple[int, str]]:
        return checkpoint_findings(events, checkpoints, key_lookup)

    return check


class Checkpoints:
    """The signed checkpoints of a store's audit chain (``store.checkpoints``).

    Parameters
    ----------
    db
        The store's database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def write(self, conn: Connection, principal: Principal | None = None) -> Checkpoint | None:
        """Pin the head inside the caller's write transaction; see :func:`write_checkpoint`."""
        return write_checkpoint(conn, principal)

    def create(self, principal: Principal | None = None) -> Checkpoint | None:
        """Pin the head in a write transaction of its own; see :func:`write_checkpoint`."""
        with self._db.writing() as conn:
            return write_checkpoint(conn, principal)

    def list(self) -> builtins.list[Checkpoint]:
        """Return every checkpoint, by seq."""
        with self._db.reading() as conn:
            return read_checkpoints(conn)

    def latest(self) -> Checkpoint | None:
        """Return the checkpoint of the highest seq, or ``None``."""
        t = schema.audit_checkpoints
        with self._db.reading() as conn:
            row = conn.execute(select(t).order_by(t.c.seq.desc()).limit(1)).first()
        return None if row is None else _checkpoint_from(row._mapping)
