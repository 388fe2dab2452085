"""Who did what to a run and its models, how they were authenticated, with what authority.

:func:`account_for` reads the audit chain and answers, for every event about a run (its
start and end, the model versions registered from it, their promotions and the
signatures on any of them): the acting identity, its role at that point of the chain,
the fingerprint of the key that signed the event and the authentication method that
unlocked it. Each signature is also related to the run's author (the actor of its
``run.started`` event) and to the model's registrant (the actor of ``model.registered``):
a signature by either of them is not an independent approval.

Roles and keys are replayed from the chain's identity events alone (``store.owner``,
``identity.enrolled``, ``identity.role_changed``, ``identity.key_rotated``,
``identity.revoked``) by :class:`qemlflow.store.identities.IdentityLedger`, the replay
``audit verify`` trusts, so the role shown is the role the identity held when it acted,
not the role it holds today; an identity event the ledger refuses changes nothing here
either.

Examples
--------
>>> email_of("Ada Lovelace <ada@lab.org>"), email_of("ada")
('ada@lab.org', 'ada')
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from qemlflow.audit.emails import same_email

if TYPE_CHECKING:
    from qemlflow.store import AuditEvent, RunRecord, Store
    from qemlflow.store.identities import IdentityLedger

__all__ = [
    "AUTHOR",
    "INDEPENDENT",
    "REGISTRANT",
    "Accountability",
    "EventAccount",
    "IdentityAccount",
    "PromotionAccount",
    "SignatureAccount",
    "account_for",
    "email_of",
    "relation_to",
]

AUTHOR: Final = "the run's author"
REGISTRANT: Final = "the model's registrant"
INDEPENDENT: Final = "independent"

IDENTITY_ACTIONS: Final = (
    "store.owner",
    "identity.enrolled",
    "identity.role_changed",
    "identity.key_rotated",
    "identity.revoked",
)
PROMOTION_ACTIONS: Final = (
    "model.promoted",
    "model.promotion_refused",
    "model.rolled_back",
    "model.alias_removed",
)
_SIGNATURE: Final = "signature"
_DISPLAY = re.compile(r"<([^<>]+)>\s*$")


def email_of(actor: str) -> str:
    """Return the email of a ``"Name <email>"`` display (a bare actor name unchanged)."""
    found = _DISPLAY.search(actor)
    return (found.group(1) if found else actor).strip()


def _key(email: str) -> str:
    return email.casefold()  # same_email: case does not matter


def relation_to(signer: str, author: str | None, registrants: Iterable[str]) -> tuple[str, ...]:
    """How a signer relates to a run: its author, a registrant of its model, or neither.

    Every argument is an actor display (``"Name <email>"``) or an email; they are
    compared by normalized email (:func:`qemlflow.audit.emails.same_email`).

    Examples
    --------
    >>> relation_to("Ada <ada@lab.org>", "Ada <ADA@lab.org>", [])
    ("the run's author",)
    >>> relation_to("Bob <bob@lab.org>", "Ada <ada@lab.org>", ["Eve <eve@lab.org>"])
    ('independent',)
    """
    email = email_of(signer)
    found: list[str] = []
    if author is not None and same_email(email, email_of(author)):
        found.append(AUTHOR)
    if any(same_email(email, email_of(r)) for r in registrants):
        found.append(REGISTRANT)
    return tuple(found) or (INDEPENDENT,)


# -- identities, keys and roles replayed from the chain --------------------------------


@dataclass
class _Key:
    email: str
    fingerprint: str
    auth: str | None
    valid_from_seq: int
    revoked_seq: int | None = None


@dataclass
class IdentityAccount:
    """One identity as the chain established it: enrollment, roles over time, keys."""

    name: str
    email: str
    kind: str
    role: str | None
    enrolled_seq: int
    enrolled_by: str
    status: str = "active"
    history: list[tuple[int, str, str, str | None]] = field(default_factory=list)
    """``(seq, what happened, by whom, reason)``, oldest first."""
    keys: list[_Key] = field(default_factory=list)

    @property
    def display(self) -> str:
        """``"Name <email>"``."""
        return f"{self.name} <{self.email}>"


class _Histories:
    """Each identity's enrollment, role changes, keys and revocations, with who did them.

    Fed only the identity events that :class:`~qemlflow.store.identities.IdentityLedger`
    accepted, in seq order.
    """

    def __init__(self) -> None:
        self.identities: dict[str, IdentityAccount] = {}
        self.keys: dict[str, _Key] = {}

    def apply(self, event: AuditEvent) -> None:
        """Apply one event (events that are not identity events change nothing)."""
        if event.action not in IDENTITY_ACTIONS:
            return
        d = event.details
        email = str(d.get("email") or "")
        if event.action in ("store.owner", "identity.enrolled"):
            self._enroll(event, d)
            return
        known = self.identities.get(_key(email))
        if known is None:
            return
        if event.action == "identity.role_changed":
            previous, known.role = known.role, _text(d.get("role"))
            what = f"role {previous or '—'} → {known.role or '—'}"
        elif event.action == "identity.key_rotated":
            old = self.keys.get(str(d.get("old_fingerprint") or ""))
            if old is not None and old.revoked_seq is None:
                old.revoked_seq = event.seq
            new = _Key(
                known.email,
                str(d.get("fingerprint") or ""),
                old.auth if old is not None else _text(d.get("auth")),
                event.seq,
            )
            self.keys[new.fingerprint] = new
            known.keys.append(new)
            what = f"key rotated to {new.fingerprint[:16]}"
        else:  # identity.revoked: one key, or the identity when no key is named
            fingerprint = _text(d.get("fingerprint"))
            revoked = [k for k in known.keys if fingerprint in (None, k.fingerprint)]
            for k in revoked:
                k.revoked_seq = k.revoked_seq or event.seq
            if fingerprint is None or all(k.revoked_seq is not None for k in known.keys):
                known.status = "revoked"
            what = "revoked" + (f" key {fingerprint[:16]}" if fingerprint else "")
        known.history.append((event.seq, what, event.actor, event.reason))

    def _enroll(self, event: AuditEvent, d: Mapping[str, Any]) -> None:
        email = str(d.get("email") or "")
        account = IdentityAccount(
            name=str(d.get("name") or ""),
            email=email,
            kind=str(d.get("kind") or "person"),
            role=_text(d.get("role")),
            enrolled_seq=event.seq,
            enrolled_by=event.actor,
        )
        what = "owner of the store" if event.action == "store.owner" else "enrolled"
        account.history.append((event.seq, f"{what} as {account.role}", event.actor, event.reason))
        key = _Key(email, str(d.get("fingerprint") or ""), _text(d.get("auth")), event.seq)
        account.keys.append(key)
        self.identities[_key(email)] = account
        self.keys[key.fingerprint] = key


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- what the report shows --------------------------------------------------------------


@dataclass(frozen=True)
class EventAccount:
    """One event about the run: who acted, in which role, with which key, how unlocked.

    ``role``, ``fingerprint`` and ``auth`` are ``None`` for events written before events
    were signed (a legacy prefix of the chain).
    """

    seq: int
    timestamp: str
    action: str
    actor: str
    role: str | None
    fingerprint: str | None
    auth: str | None
    signed: bool
    reason: str | None
    hash: str

    @property
    def fingerprint16(self) -> str | None:
        """The first 16 hex digits of the key fingerprint (how keys are shown)."""
        return None if self.fingerprint is None else self.fingerprint[:16]


@dataclass(frozen=True)
class SignatureAccount:
    """One electronic signature on the run or one of its models."""

    event: EventAccount
    signer: str
    meaning: str | None
    reason: str | None
    signed_at: str | None
    object_kind: str | None
    object_id: str | None
    relation: tuple[str, ...]
    valid: bool | None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromotionAccount:
    """One promotion (or refusal, rollback, removal) of a model version of the run.

    What the promotion recorded (:func:`qemlflow.registry.promote`): the gates and their
    results; each signature with a meaning the policy asked for, and whether it counted
    (``{"seq", "meaning", "signer", "counted", "why_not"}``); the policy applied, the
    experiment's own policy (the floor) and what a given policy tried to weaken; and an
    override (an admin replacing the floor, with a reason).
    """

    event: EventAccount
    model_version: str | None
    alias: str | None
    gates: tuple[dict[str, Any], ...]
    approvals: tuple[dict[str, Any], ...]
    override: dict[str, Any] | None
    policy_source: str | None
    policy: Any = None
    floor: Any = None
    weakened: tuple[str, ...] = ()
    refused_at: str | None = None

    @property
    def counted(self) -> tuple[dict[str, Any], ...]:
        """The approvals that counted."""
        return tuple(a for a in self.approvals if a.get("counted"))


@dataclass(frozen=True)
class Accountability:
    """Everything :func:`account_for` found about a run."""

    run_id: str
    author: str | None
    registrants: dict[str, str]
    """model version (``"NAME@V"``) -> the actor who registered it."""
    events: tuple[EventAccount, ...]
    signatures: tuple[SignatureAccount, ...]
    promotions: tuple[PromotionAccount, ...]
    identities: tuple[IdentityAccount, ...]


def _account(event: AuditEvent, ledger: IdentityLedger) -> EventAccount:
    """Who wrote ``event``, as the ledger stands just before it."""
    fingerprint = event.signer
    if fingerprint is None and event.action == _SIGNATURE:
        # Signatures carried their key before every event was signed.
        signer = event.details.get("signer")
        if isinstance(signer, Mapping):
            fingerprint = _text(signer.get("fingerprint"))
    role: str | None = None
    key = ledger.keys.get(fingerprint) if event.signature and fingerprint else None
    if event.action == "store.owner" and event.signature:
        role = _text(event.details.get("role")) or "admin"  # the event that makes it admin
    elif key is not None and key.revoked_seq is None:
        person = ledger.person(key.email)
        if person is not None and person.status == "active":
            role = person.role
    return EventAccount(
        seq=event.seq,
        timestamp=event.timestamp,
        action=event.action,
        actor=event.actor,
        role=role,
        fingerprint=fingerprint,
        auth=event.auth,
        signed=bool(event.signature),
        reason=event.reason,
        hash=event.hash,
    )


def _override(details: Mapping[str, Any], reason: str | None) -> dict[str, Any] | None:
    """What an override replaced: ``{"reason", "floor", "replaced by"}``, else ``None``."""
    override = details.get("override")
    if not override:
        return None
    found: dict[str, Any] = dict(override) if isinstance(override, Mapping) else {}
    found.setdefault("reason", details.get("override_reason") or reason)
    if "floor" in details:
        found.setdefault("floor", details["floor"])
    if details.get("given") is not None:
        found.setdefault("replaced by", details["given"])
    return found


def _dicts(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(dict(v) for v in value if isinstance(v, Mapping))


def _checked_signatures(store: Store, refs: Iterable[str]) -> dict[int, dict[str, Any]]:
    """``signatures_for`` of every ref, by seq (validity and problems)."""
    from qemlflow.audit.signatures import signatures_for
    from qemlflow.errors import QeMLflowError

    found: dict[int, dict[str, Any]] = {}
    for ref in refs:
        try:
            found.update({int(s["seq"]): s for s in signatures_for(store, ref)})
        except QeMLflowError:  # the object is gone: verification says so
            continue
    return found


def _related(event: AuditEvent, refs: set[str]) -> bool:
    return any(isinstance(v, str) and v in refs for v in event.objects.values())


def account_for(
    store: Store, run: RunRecord, model: str | None = None, events: Sequence[AuditEvent] = ()
) -> Accountability:
    """Return who did what to ``run`` and its model versions, with what authority.

    Parameters
    ----------
    store
        The store that holds the run and the audit chain.
    run
        The run.
    model
        A model digest the report is about (besides the run's registered versions).
    events
        The whole audit chain, when already read (else it is read here).
    """
    from qemlflow.store.identities import IdentityLedger

    chain = sorted(events or store.audit_events(), key=lambda e: e.seq)
    refs: set[str] = {run.id, *([model] if model else [])}
    registrants: dict[str, str] = {}
    for event in chain:  # the model versions of the run, and what they point at
        if event.action == "model.registered" and event.objects.get("run") == run.id:
            spec = event.objects.get("model_version")
            if spec:
                registrants[spec] = event.actor
                refs.add(spec)
            digest = event.objects.get("model")
            if digest:
                refs.add(digest)
    checked = _checked_signatures(store, [run.id, *sorted(r for r in refs if r != run.id)])
    ledger = IdentityLedger()
    histories = _Histories()
    author: str | None = None
    accounts: list[EventAccount] = []
    signatures: list[SignatureAccount] = []
    promotions: list[PromotionAccount] = []
    involved: set[str] = set()
    for event in chain:
        related = _related(event, refs)
        if related:
            account = _account(event, ledger)
            accounts.append(account)
            involved.add(_key(email_of(event.actor)))
            if event.action == "run.started" and author is None:
                author = event.actor
            if event.action == _SIGNATURE:
                signatures.append(_signature(event, account, author, registrants, checked))
            elif event.action in PROMOTION_ACTIONS:
                promotions.append(_promotion(event, account))
        if not ledger.check(event) and not ledger.apply(event):  # as ``audit verify`` does
            histories.apply(event)
    # The admins who gave the actors their authority, and the ones who gave them theirs.
    pending = list(involved)
    while pending:
        found = histories.identities.get(pending.pop())
        for _, _, by, _ in found.history if found is not None else ():
            if _key(email_of(by)) not in involved:
                involved.add(_key(email_of(by)))
                pending.append(_key(email_of(by)))
    identities = tuple(
        sorted(
            (histories.identities[e] for e in involved if e in histories.identities),
            key=lambda i: i.enrolled_seq,
        )
    )
    return Accountability(
        run_id=run.id,
        author=author,
        registrants=registrants,
        events=tuple(accounts),
        signatures=tuple(signatures),
        promotions=tuple(promotions),
        identities=identities,
    )


def _signature(
    event: AuditEvent,
    account: EventAccount,
    author: str | None,
    registrants: Mapping[str, str],
    checked: Mapping[int, dict[str, Any]],
) -> SignatureAccount:
    d = event.details
    signer_fields = d.get("signer")
    signer = event.actor
    if isinstance(signer_fields, Mapping) and signer_fields.get("email"):
        signer = f"{signer_fields.get('name', '?')} <{signer_fields['email']}>"
    check = checked.get(event.seq)
    return SignatureAccount(
        event=account,
        signer=signer,
        meaning=_text(d.get("meaning")),
        reason=event.reason,
        signed_at=_text(d.get("signed_at")) or event.timestamp,
        object_kind=_text(d.get("kind")),
        object_id=_text(event.objects.get("object")),
        relation=relation_to(signer, author, registrants.values()),
        valid=None if check is None else bool(check.get("valid")),
        problems=tuple(check.get("problems", ())) if check else (),
    )


def _promotion(event: AuditEvent, account: EventAccount) -> PromotionAccount:
    d = event.details
    floor = d.get("floor")
    weakened = d.get("weakened")
    return PromotionAccount(
        event=account,
        model_version=_text(event.objects.get("model_version")),
        alias=_text(d.get("alias")),
        gates=_dicts(d.get("gates")),
        approvals=_dicts(d.get("approvals")),
        override=_override(d, event.reason),
        policy_source=_text(d.get("policy_source")),
        policy=d.get("policy"),
        floor=floor,
        weakened=tuple(str(w) for w in weakened) if isinstance(weakened, list) else (),
        refused_at=_text(d.get("gate")) if event.action == "model.promotion_refused" else None,
    )
