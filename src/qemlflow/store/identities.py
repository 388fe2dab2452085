"""Enrolled identities: who may act in a store, with which key, in which role.

A store knows its people and services by email. Each is *enrolled* by an admin, who
signs the ``identity.enrolled`` event that binds the email to a name, a role, an Ed25519
public key and the way that key is unlocked (``passphrase``, ``os-account`` or
``service-key``); the first write to a store enrolls its creator as the *owner*
(``store.owner``, role admin). Keys are rotated by their holder (the event is signed by
the old key, and carries the new key's proof) and revoked by an admin or the holder.

The audit chain is the source of truth: every change is an event whose details hold what
is needed to replay it, and :class:`IdentityLedger` rebuilds keys and roles from the
events alone (``audit verify`` does). The ``identities`` and ``identity_keys`` tables are
a projection written in the same transaction, which :func:`authorize` reads to check each
new event's author before it is signed.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal, public_key_b64
>>> from qemlflow.store import Store
>>> ada = Principal.from_private_key(
...     Ed25519PrivateKey.generate(), "Ada Lovelace", "ada@lab.org", AUTH_PASSPHRASE)
>>> bob_key = Ed25519PrivateKey.generate()
>>> with Store.open(Path(tempfile.mkdtemp()), principal=ada) as store:
...     bob = store.identities.enroll(name="Bob", email="bob@lab.org",
...         public_key=public_key_b64(bob_key.public_key()), role="approver",
...         auth=AUTH_PASSPHRASE)
...     [(r.email, r.role) for r in store.identities.list()]
[('ada@lab.org', 'admin'), ('bob@lab.org', 'approver')]
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from qemlflow.audit.errors import AuthorityError, IdentityError
from qemlflow.store import schema
from qemlflow.store.audit import AuditEvent, _last_event, append_event, next_event
from qemlflow.store.authority import ROLES, authority_fix, authority_problem
from qemlflow.store.keys import canonical_json, sha256_hex

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal
    from qemlflow.store.transactions import Database

__all__ = [
    "IDENTITY_ACTIONS",
    "KINDS",
    "Identities",
    "IdentityLedger",
    "IdentityRecord",
    "authorize",
    "lookalike_problem",
    "rotation_message",
]

OWNER_ACTION = "store.owner"
ENROLLED = "identity.enrolled"
ROLE_CHANGED = "identity.role_changed"
KEY_ROTATED = "identity.key_rotated"
REVOKED = "identity.revoked"
IDENTITY_ACTIONS = (OWNER_ACTION, ENROLLED, ROLE_CHANGED, KEY_ROTATED, REVOKED)
"""The actions that change who may act: only :class:`Identities` appends them."""
KINDS = ("person", "service")
_AUTHS = ("passphrase", "os-account", "service-key")
_ENROLL_FIX = "ask an admin to run `qemlflow identity enroll {path} --role contributor`"


def rotation_message(email: str, old_fingerprint: str, new_fingerprint: str) -> bytes:
    """Return what the new key signs to prove its holder asked for a rotation.

    Examples
    --------
    >>> rotation_message("a@b.org", "01", "02")
    b'{"email":"a@b.org","rotate":"01","to":"02"}'
    """
    return canonical_json({"rotate": old_fingerprint, "to": new_fingerprint, "email": email})


def _fingerprint(public_key: str) -> str | None:
    """The fingerprint of a base64 raw Ed25519 public key, or ``None`` when malformed."""
    try:
        raw = base64.b64decode(public_key, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
    return sha256_hex(raw) if len(raw) == 32 else None


def _verifies(public_key: str, message: bytes, signature_b64: str | None) -> bool:
    from qemlflow.audit.principal import verify_signature  # cryptography, on demand

    if not isinstance(signature_b64, str):
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    return verify_signature(public_key, message, signature)


def lookalike_problem(email: str, name: str, existing: Iterable[tuple[str, str]]) -> str | None:
    """Return why ``email``/``name`` would pass for an identity in ``existing``, or ``None``.

    ``existing`` holds ``(email, name)`` pairs of the other identities. Refused: an email
    that is another's but for case, one whose skeleton (look-alike characters folded) is
    another's, and a name whose skeleton is another's under a different email.

    Examples
    --------
    >>> lookalike_problem("ada@1ab.org", "Ada", [("ada@lab.org", "Ada L")])
    "email ada@1ab.org looks like the enrolled ada@lab.org - it would pass for that identity"
    >>> lookalike_problem("bob@lab.org", "Bob", [("ada@lab.org", "Ada")]) is None
    True
    """
    from qemlflow.audit.emails import email_skeleton, looks_like, name_skeleton, same_email

    for other_email, other_name in existing:
        if same_email(email, other_email):
            return f"email {email} is already enrolled as {other_email}"
        if looks_like(email, other_email) or email_skeleton(email) == email_skeleton(other_email):
            return (
                f"email {email} looks like the enrolled {other_email} - it would pass for "
                "that identity"
            )
        if name_skeleton(name) == name_skeleton(other_name):
            return (
                f"name {name!r} looks like {other_name!r} <{other_email}> - it would pass for "
                "that identity under another email"
            )
    return None


# -- the chain, replayed -------------------------------------------------------------


@dataclass
class _Key:
    email: str
    public_key: str
    auth: str
    valid_from: int
    revoked_seq: int | None = None


@dataclass
class _Person:
    name: str
    email: str
    role: str
    kind: str
    status: str = "active"


@dataclass
class IdentityLedger:
    """Keys and roles as the audit chain establishes them, event by event.

    Feed it the events in seq order with :meth:`check` (the author of an event, against
    the state before it) and then :meth:`apply` (what the event changes). Unsigned
    events are accepted only before the first signed one (the chain of a store written
    before QeMLflow signed events).
    """

    keys: dict[str, _Key] = field(default_factory=dict)
    people: dict[str, _Person] = field(default_factory=dict)  # casefolded email -> person
    owner_seq: int | None = None
    signed_seen: bool = False

    def key_at(self, fingerprint: str) -> _Key | None:
        """The key with this fingerprint, if enrolled and not revoked (at the current seq)."""
        key = self.keys.get(fingerprint)
        return key if key is not None and key.revoked_seq is None else None

    def person(self, email: str) -> _Person | None:
        """The identity enrolled with this email (any case), if any."""
        return self.people.get(email.casefold())

    def check(self, event: AuditEvent) -> list[str]:
        """Return what is wrong with the author of ``event`` (nothing when it is sound)."""
        label = f"event {event.seq} ({event.action} at {event.timestamp})"
        if event.signature is None and event.signer is None:
            if self.signed_seen:
                return [
                    f"{label}: unsigned after signed events - appended around QeMLflow "
                    "(a forged append)"
                ]
            return []
        self.signed_seen = True
        from qemlflow.store.audit import SIGNED_HASH_SCHEME

        if event.hash_scheme != SIGNED_HASH_SCHEME:
            return [f"{label}: signed, but its hash does not cover its signer - forged"]
        if event.action == OWNER_ACTION:
            return self._check_owner(event, label)
        key = self.keys.get(event.signer or "")
        if key is None:
            return [
                f"{label}: signed by key {(event.signer or '?')[:16]}, which is not enrolled "
                "in this store - a forged event"
            ]
        if key.revoked_seq is not None:
            return [
                f"{label}: signed by key {(event.signer or '?')[:16]} of {key.email}, revoked "
                f"at event {key.revoked_seq} - a forged or late event"
            ]
        if not _verifies(key.public_key, event.signed_message(), event.signature):
            return [
                f"{label}: its signature does not verify with the key of {key.email} - the "
                "event was forged, edited or replayed from another position"
            ]
        person = self.people.get(key.email.casefold())
        problems: list[str] = []
        if person is None:  # pragma: no cover - keys always belong to a person
            return [f"{label}: key {key.email} has no identity"]
        display = f"{person.name} <{person.email}>"
        if event.actor != display:
            problems.append(f"{label}: its actor {event.actor!r} is not its signer {display}")
        if event.auth != key.auth:
            problems.append(
                f"{label}: claims authentication {event.auth!r}, but the key of {person.email} "
                f"is enrolled as {key.auth!r}"
            )
        role = person.role if person.status == "active" else None
        problem = authority_problem(
            event.action, event.details, role=role, auth=key.auth, email=person.email
        )
        if problem is not None:
            problems.append(f"{label}: {problem}")
        return problems

    def _check_owner(self, event: AuditEvent, label: str) -> list[str]:
        if self.owner_seq is not None or self.keys:
            return [f"{label}: a second store.owner - only a store's first signer owns it"]
        details = event.details
        public_key = str(details.get("public_key", ""))
        fingerprint = _fingerprint(public_key)
        if fingerprint is None or fingerprint != event.signer:
            return [f"{label}: the owner's key does not match the event's signer"]
        if not _verifies(public_key, event.signed_message(), event.signature):
            return [f"{label}: its signature does not verify with the owner's key - forged"]
        display = f"{details.get('name')} <{details.get('email')}>"
        if event.actor != display or event.auth != details.get("auth"):
            return [f"{label}: its actor or auth is not the owner it enrolls"]
        return []

    def apply(self, event: AuditEvent) -> list[str]:
        """Apply an identity event to the ledger; return what is malformed about it."""
        handler = {
            OWNER_ACTION: self._owner,
            ENROLLED: self._enrolled,
            ROLE_CHANGED: self._role_changed,
            KEY_ROTATED: self._rotated,
            REVOKED: self._revoked,
        }.get(event.action)
        if handler is None or event.signature is None:
            return []
        problem = handler(event, event.details)
        if problem is None:
            return []
        return [f"event {event.seq} ({event.action} at {event.timestamp}): {problem}"]

    def _add(
        self, event: AuditEvent, details: Mapping[str, Any], role: str, kind: str
    ) -> str | None:
        from qemlflow.audit.emails import normalize_email

        name, email = str(details.get("name", "")), str(details.get("email", ""))
        public_key, auth = str(details.get("public_key", "")), str(details.get("auth", ""))
        fingerprint = _fingerprint(public_key)
        if fingerprint is None or fingerprint != details.get("fingerprint"):
            return "its public key does not match its fingerprint"
        try:
            if normalize_email(email) != email:
                return f"email {email!r} is not in its normalized form"
        except IdentityError as exc:
            return exc.problem
        if role not in ROLES or kind not in KINDS or auth not in _AUTHS:
            return f"unknown role, kind or auth ({role!r}, {kind!r}, {auth!r})"
        if fingerprint in self.keys:
            return f"key {fingerprint[:16]} is already enrolled to {self.keys[fingerprint].email}"
        others = [
            (p.email, p.name)
            for p in self.people.values()
            if not (p.email.casefold() == email.casefold() and p.status == "revoked")
        ]
        lookalike = lookalike_problem(email, name, others)
        if lookalike is not None:
            return lookalike
        self.people[email.casefold()] = _Person(name=name, email=email, role=role, kind=kind)
        self.keys[fingerprint] = _Key(email, public_key, auth, valid_from=event.seq)
        return None

    def _owner(self, event: AuditEvent, details: Mapping[str, Any]) -> str | None:
        if self.owner_seq is not None:
            return None  # already reported by check
        self.owner_seq = event.seq
        return self._add(event, details, "admin", "person")

    def _enrolled(self, event: AuditEvent, details: Mapping[str, Any]) -> str | None:
        return self._add(
            event, details, str(details.get("role", "")), str(details.get("kind", "person"))
        )

    def _role_changed(self, event: AuditEvent, details: Mapping[str, Any]) -> str | None:
        person = self.person(str(details.get("email", "")))
        role = str(details.get("role", ""))
        if person is None or role not in ROLES:
            return f"changes the role of an unknown identity or to an unknown role {role!r}"
        person.role = role
        return None

    def _rotated(self, event: AuditEvent, details: Mapping[str, Any]) -> str | None:
        email = str(details.get("email", ""))
        old_fp, new_key = (
            str(details.get("old_fingerprint", "")),
            str(details.get("public_key", "")),
        )
        old = self.keys.get(old_fp)
        new_fp = _fingerprint(new_key)
        if old is None or old.email.casefold() != email.casefold() or event.signer != old_fp:
            return "not signed by the rotated key of that identity"
        if new_fp is None or new_fp != details.get("fingerprint") or new_fp in self.keys:
            return "the new key is malformed or already enrolled"
        proof = details.get("proof")
        if not _verifies(new_key, rotation_message(email, old_fp, new_fp), proof):
            return "the new key's proof does not verify - its holder did not ask for it"
        old.revoked_seq = event.seq
        self.keys[new_fp] = _Key(old.email, new_key, old.auth, valid_from=event.seq)
        return None

    def _revoked(self, event: AuditEvent, details: Mapping[str, Any]) -> str | None:
        key = self.keys.get(str(details.get("fingerprint", "")))
        if key is None or key.email.casefold() != str(details.get("email", "")).casefold():
            return "revokes a key that is not enrolled to that identity"
        key.revoked_seq = event.seq
        if not any(k.revoked_seq is None and k.email == key.email for k in self.keys.values()):
            person = self.people.get(key.email.casefold())
            if person is not None:
                person.status = "revoked"
        return None


def replay_findings(events: Sequence[AuditEvent]) -> list[tuple[int, str]]:
    """Check the author of every event against the keys and roles the chain itself
    establishes (see :class:`IdentityLedger`); return ``(seq, problem)`` pairs."""
    ledger = IdentityLedger()
    findings: list[tuple[int, str]] = []
    for event in sorted(events, key=lambda e: e.seq):
        problems = ledger.check(event)
        findings += [(event.seq, p) for p in problems]
        if not problems:
            findings += [(event.seq, p) for p in ledger.apply(event)]
    return findings


# -- the tables ------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityRecord:
    """An enrolled identity and its current key (the newest, revoked or not)."""

    name: str
    email: str
    role: str
    kind: str
    fingerprint: str
    public_key: str
    auth: str
    status: str
    enrolled_seq: int

    @property
    def display(self) -> str:
        """``"Name <email>"``: the actor its events show."""
        return f"{self.name} <{self.email}>"

    @property
    def active(self) -> bool:
        """Whether it may act (not revoked)."""
        return self.status == "active"

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-compatible dict."""
        return dataclasses.asdict(self)


def _query() -> Any:
    i, k = schema.identities, schema.identity_keys
    return (
        select(
            i.c.name,
            i.c.email,
            i.c.role,
            i.c.kind,
            i.c.status,
            i.c.enrolled_seq,
            k.c.fingerprint,
            k.c.public_key,
            k.c.auth,
            k.c.revoked_seq,
        )
        .join(k, k.c.email == i.c.email)
        .order_by(i.c.enrolled_seq, k.c.valid_from_seq.desc())
    )


def _record(row: RowMapping) -> IdentityRecord:
    return IdentityRecord(
        name=row["name"],
        email=row["email"],
        role=row["role"],
        kind=row["kind"],
        fingerprint=row["fingerprint"],
        public_key=row["public_key"],
        auth=row["auth"],
        status=row["status"],
        enrolled_seq=int(row["enrolled_seq"]),
    )


def _records(conn: Connection, where: Any = None) -> list[IdentityRecord]:
    query = _query() if where is None else _query().where(where)
    seen: dict[str, IdentityRecord] = {}
    for row in conn.execute(query):
        seen.setdefault(row._mapping["email"], _record(row._mapping))  # newest key first
    return list(seen.values())


def _by_email(conn: Connection, email: str) -> IdentityRecord | None:
    found = _records(conn, func.lower(schema.identities.c.email) == email.strip().lower())
    return found[0] if found else None


def _key_row(conn: Connection, fingerprint: str) -> RowMapping | None:
    i, k = schema.identities, schema.identity_keys
    row = conn.execute(
        select(k.c.revoked_seq, k.c.auth, i.c.name, i.c.email, i.c.role, i.c.status)
        .join(i, i.c.email == k.c.email)
        .where(k.c.fingerprint == fingerprint)
    ).first()
    return None if row is None else row._mapping


def has_owner(conn: Connection) -> bool:
    """Whether the store has an owner (any enrolled identity)."""
    return conn.execute(select(schema.identities.c.email).limit(1)).first() is not None


def enrolled_principal(conn: Connection, principal: Principal) -> Principal | None:
    """Return ``principal`` named as enrolled (name, email), or ``None`` when its key is not
    an active enrolled key of an active identity."""
    row = _key_row(conn, principal.fingerprint)
    if row is None or row["revoked_seq"] is not None or row["status"] != "active":
        return None
    return dataclasses.replace(principal, name=row["name"], email=row["email"])


def _insert_identity(
    conn: Connection, event: AuditEvent, details: Mapping[str, Any], role: str, kind: str
) -> None:
    existing = conn.execute(
        select(schema.identities.c.email).where(schema.identities.c.email == details["email"])
    ).first()
    values = {
        "name": details["name"],
        "role": role,
        "kind": kind,
        "status": "active",
        "enrolled_seq": event.seq,
        "updated_seq": event.seq,
    }
    if existing is None:
        conn.execute(insert(schema.identities).values(email=details["email"], **values))
    else:  # re-enrolling a revoked identity
        conn.execute(
            update(schema.identities)
            .where(schema.identities.c.email == details["email"])
            .values(**values)
        )
    conn.execute(
        insert(schema.identity_keys).values(
            fingerprint=details["fingerprint"],
            email=details["email"],
            public_key=details["public_key"],
            auth=details["auth"],
            valid_from_seq=event.seq,
            revoked_seq=None,
        )
    )


def _owner_details(principal: Principal) -> dict[str, Any]:
    from qemlflow.audit.emails import normalize_email, normalize_name

    return {
        "name": normalize_name(principal.name),
        "email": normalize_email(principal.email),
        "public_key": principal.public_key,
        "fingerprint": principal.fingerprint,
        "auth": principal.auth,
        "role": "admin",
    }


def _make_owner(conn: Connection, principal: Principal) -> Principal:
    """Enroll ``principal`` as the owner of a store that has none (a self-signed event)."""
    details = _owner_details(principal)
    owner = dataclasses.replace(principal, name=details["name"], email=details["email"])
    event = next_event(
        _last_event(conn),
        OWNER_ACTION,
        {"identity": principal.fingerprint},
        reason="the first identity to write to this store owns it",
        details=details,
        principal=owner,
    )
    conn.execute(insert(schema.audit_events).values(**event.to_dict()))
    _insert_identity(conn, event, details, "admin", "person")
    return owner


def not_enrolled_error(principal: Principal, conn: Connection) -> AuthorityError:
    """The error for a principal whose key is not enrolled in the store of ``conn``."""
    where = conn.engine.url.render_as_string(hide_password=True)
    return AuthorityError(
        f"you ({principal.display}, key {principal.fingerprint[:16]}) are not enrolled in "
        f"store {where}",
        _ENROLL_FIX.format(path="<path of your identity.json>"),
    )


def authorize(
    conn: Connection, principal: Principal, action: str, details: Mapping[str, Any]
) -> Principal:
    """Check that ``principal`` may append ``action`` now; return it as enrolled.

    A store with no identity yet is first given ``principal`` as its owner.

    Raises
    ------
    AuthorityError
        The principal is not enrolled, its key or identity is revoked, or its role or
        authentication method does not allow the action.
    """
    if action == OWNER_ACTION:
        raise AuthorityError(
            "store.owner is written once, by the store itself", "enroll identities instead"
        )
    row = _key_row(conn, principal.fingerprint)
    if row is None:
        if has_owner(conn):
            raise not_enrolled_error(principal, conn)
        principal = _make_owner(conn, principal)
        row = _key_row(conn, principal.fingerprint)
        assert row is not None
    if row["revoked_seq"] is not None or row["status"] != "active":
        raise AuthorityError(
            f"the key {principal.fingerprint[:16]} of {row['email']} was revoked at event "
            f"{row['revoked_seq']}",
            "act with your current key, or ask an admin to enroll a new one",
        )
    if row["auth"] != principal.auth:
        raise AuthorityError(
            f"the key of {row['email']} is enrolled for {row['auth']} use, not {principal.auth}",
            "unlock the identity the way it was enrolled",
        )
    problem = authority_problem(
        action, details, role=row["role"], auth=row["auth"], email=row["email"]
    )
    if problem is not None:
        raise AuthorityError(problem, authority_fix(action, details, row["email"]))
    return dataclasses.replace(principal, name=row["name"], email=row["email"])


class Identities:
    """The identities enrolled in a store (``store.identities``).

    Every change is an audit event signed by the acting identity (an admin, or for a
    rotation the key's holder) and the matching table rows, in one transaction.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reading --

    def owner(self) -> IdentityRecord | None:
        """The store's owner (the identity of its ``store.owner`` event), if any."""
        with self._db.reading() as conn:
            found = _records(conn)
        return found[0] if found else None

    def get(self, email: str) -> IdentityRecord | None:
        """The identity enrolled with ``email`` (case does not matter), if any."""
        with self._db.reading() as conn:
            return _by_email(conn, email)

    def by_fingerprint(self, fingerprint: str) -> IdentityRecord | None:
        """The identity that holds (or held) the key ``fingerprint``, with that key."""
        with self._db.reading() as conn:
            row = conn.execute(
                _query().where(schema.identity_keys.c.fingerprint == fingerprint)
            ).first()
        return None if row is None else _record(row._mapping)

    def list(self) -> list[IdentityRecord]:
        """Every identity, in enrollment order, with its newest key."""
        with self._db.reading() as conn:
            return _records(conn)

    def role_of(self, email: str) -> str | None:
        """The role of the active identity ``email``, or ``None``."""
        record = self.get(email)
        return record.role if record is not None and record.active else None

    # -- changing --

    def enroll(
        self,
        *,
        name: str,
        email: str,
        public_key: str,
        role: str,
        auth: str,
        kind: str = "person",
        reason: str | None = None,
    ) -> IdentityRecord:
        """Enroll a new identity (admins only): an ``identity.enrolled`` event.

        Raises
        ------
        IdentityError
            A malformed name, email or key; an email or name that looks like another
            identity's; a key already enrolled; an unknown role, kind or auth.
        AuthorityError
            The acting identity is not an admin.
        """
        from qemlflow.audit.emails import normalize_email, normalize_name

        name, email = normalize_name(name), normalize_email(email)
        fingerprint = _fingerprint(public_key)
        if fingerprint is None:
            raise IdentityError(
                "the public key is not a base64 raw Ed25519 key (32 bytes)",
                "enroll the public_key of an identity.json written by `qemlflow identity init`",
            )
        if role not in ROLES:
            raise IdentityError(f"unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
        if kind not in KINDS or auth not in _AUTHS:
            raise IdentityError(
                f"unknown kind {kind!r} or auth {auth!r}",
                f"kind is one of {', '.join(KINDS)}; auth one of {', '.join(_AUTHS)}",
            )
        details = {
            "name": name,
            "email": email,
            "public_key": public_key,
            "fingerprint": fingerprint,
            "auth": auth,
            "role": role,
            "kind": kind,
        }
        with self._db.writing() as conn:
            if _key_row(conn, fingerprint) is not None:
                raise IdentityError(
                    f"key {fingerprint[:16]} is already enrolled in this store",
                    "each identity enrolls a key of its own (`qemlflow identity init`)",
                )
            others = [
                (r.email, r.name)
                for r in _records(conn)
                if not (r.email.casefold() == email.casefold() and not r.active)
            ]
            problem = lookalike_problem(email, name, others)
            if problem is not None:
                raise IdentityError(
                    problem, "enroll the person under their one real email address and name"
                )
            event = append_event(
                conn, ENROLLED, {"identity": fingerprint}, reason=reason, details=details
            )
            _insert_identity(conn, event, details, role, kind)
            found = _by_email(conn, email)
        assert found is not None
        return found

    def set_role(self, email: str, role: str, reason: str) -> IdentityRecord:
        """Give ``email`` another role (admins only): an ``identity.role_changed`` event.

        Raises
        ------
        IdentityError
            Unknown identity or role, or the change would leave the store without an admin.
        """
        if role not in ROLES:
            raise IdentityError(f"unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
        with self._db.writing() as conn:
            record = _by_email(conn, email)
            if record is None or not record.active:
                raise IdentityError(
                    f"no active identity {email} in this store", "see `qemlflow identity list`"
                )
            if record.role == "admin" and role != "admin":
                self._keep_an_admin(conn, record.email)
            event = append_event(
                conn,
                ROLE_CHANGED,
                {"identity": record.fingerprint},
                reason=reason,
                details={"email": record.email, "role": role, "previous": record.role},
            )
            conn.execute(
                update(schema.identities)
                .where(schema.identities.c.email == record.email)
                .values(role=role, updated_seq=event.seq)
            )
            found = _by_email(conn, record.email)
        assert found is not None
        return found

    def rotate(self, new_public_key: str, proof: str, reason: str | None = None) -> IdentityRecord:
        """Replace the acting identity's key by ``new_public_key``: an
        ``identity.key_rotated`` event signed by the old key.

        ``proof`` is the new key's signature (base64) of :func:`rotation_message`.

        Raises
        ------
        IdentityError
            The new key is malformed or enrolled already, or the proof does not verify.
        """
        new_fp = _fingerprint(new_public_key)
        if new_fp is None:
            raise IdentityError("the new public key is malformed", "give a raw Ed25519 key, base64")
        with self._db.writing() as conn:
            from qemlflow.store.audit import acting_principal

            me = acting_principal(conn)
            row = _key_row(conn, me.fingerprint)
            if row is None:
                raise not_enrolled_error(me, conn)
            email = str(row["email"])
            if not _verifies(
                new_public_key, rotation_message(email, me.fingerprint, new_fp), proof
            ):
                raise IdentityError(
                    "the new key's proof does not verify",
                    "sign rotation_message(email, old, new) with the new key",
                )
            if _key_row(conn, new_fp) is not None:
                raise IdentityError(f"key {new_fp[:16]} is already enrolled", "make a new key")
            details = {
                "email": email,
                "old_fingerprint": me.fingerprint,
                "public_key": new_public_key,
                "fingerprint": new_fp,
                "proof": proof,
            }
            event = append_event(
                conn, KEY_ROTATED, {"identity": new_fp}, reason=reason, details=details
            )
            k = schema.identity_keys
            conn.execute(
                update(k).where(k.c.fingerprint == me.fingerprint).values(revoked_seq=event.seq)
            )
            conn.execute(
                insert(k).values(
                    fingerprint=new_fp,
                    email=email,
                    public_key=new_public_key,
                    auth=row["auth"],
                    valid_from_seq=event.seq,
                    revoked_seq=None,
                )
            )
            conn.execute(
                update(schema.identities)
                .where(schema.identities.c.email == email)
                .values(updated_seq=event.seq)
            )
            found = _by_email(conn, email)
        assert found is not None
        return found

    def revoke(self, email_or_fingerprint: str, reason: str) -> IdentityRecord:
        """Revoke an identity's active key (an admin, or the holder): ``identity.revoked``.

        The identity can act no more until an admin enrolls it again with a new key; its
        earlier events stay valid (they were signed while the key was valid).
        """
        ref = email_or_fingerprint.strip()
        with self._db.writing() as conn:
            record = _by_email(conn, ref) if "@" in ref else None
            if record is None:
                row = conn.execute(
                    _query().where(schema.identity_keys.c.fingerprint == ref.lower())
                ).first()
                record = None if row is None else _record(row._mapping)
            if record is None or not record.active:
                raise IdentityError(
                    f"no active identity or key {ref} in this store", "see `qemlflow identity list`"
                )
            if record.role == "admin":
                self._keep_an_admin(conn, record.email)
            event = append_event(
                conn,
                REVOKED,
                {"identity": record.fingerprint},
                reason=reason,
                details={"email": record.email, "fingerprint": record.fingerprint},
            )
            conn.execute(
                update(schema.identity_keys)
                .where(schema.identity_keys.c.fingerprint == record.fingerprint)
                .values(revoked_seq=event.seq)
            )
            conn.execute(
                update(schema.identities)
                .where(schema.identities.c.email == record.email)
                .values(status="revoked", updated_seq=event.seq)
            )
            found = _by_email(conn, record.email)
        assert found is not None
        return found

    @staticmethod
    def _keep_an_admin(conn: Connection, email: str) -> None:
        admins = [r for r in _records(conn) if r.active and r.role == "admin" and r.email != email]
        if not admins:
            raise IdentityError(
                f"{email} is the store's last admin",
                "enroll or promote another admin first (`qemlflow identity role EMAIL admin`)",
            )
