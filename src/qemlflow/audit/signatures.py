"""Electronic signatures: a user's Ed25519 signature over an object's digest, in the audit log.

A signature is an audit event with action ``"signature"``. What is signed is the message

``canonical_json({"object", "kind", "digest", "meaning", "reason", "signer", "signed_at"})``

where ``signer`` is ``{"name", "email", "fingerprint"}``; every field is kept in the event
(``objects``, ``reason`` and ``details``), so the message can be rebuilt and checked from
the audit log alone. The signer's public key comes from its enrollment in the store (an
``identity.enrolled`` or ``store.owner`` event signed by an admin, see
:mod:`qemlflow.store.identities`), never from the signature event itself: a signature
made with Mallory's key therefore cannot claim to be Alice's. There is no trust on first
use: a key that is not enrolled cannot sign.

Rules, checked by :func:`check_signatures`:

- a signature must name a key enrolled (and not revoked) at that point of the chain to
  the same name and email, and must verify with that key;
- the signature event itself must be signed (its event signature) by that same key, so a
  signature cannot be copied into an event written by someone else;
- the signer's role must allow the meaning (``approved``/``reviewed``: approver,
  ``authored``: contributor) and its key must be a passphrase key (checked with every
  event's author by ``audit verify``).

Stores written before identities were enrolled hold ``identity.registered`` events (trust
on first use) and signatures checked against them; they are still checked that way, but
only in the chain's unsigned legacy prefix.

:func:`check_signed_objects` adds what needs the store: every signed run, dataset or
blob still has the digest it had when it was signed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from qemlflow.audit.errors import AuthorityError, SignatureError
from qemlflow.audit.identity import fingerprint_of, load_identity, load_signing_key
from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal
from qemlflow.store.blobs import is_digest
from qemlflow.store.errors import StoreError
from qemlflow.store.identities import IdentityLedger
from qemlflow.store.keys import canonical_json, legacy_canonical_json, sha256_hex
from qemlflow.store.records import RunRecord, utc_now

if TYPE_CHECKING:
    from qemlflow.store.audit import AuditEvent
    from qemlflow.store.store import Store

__all__ = [
    "MEANINGS",
    "REGISTRATION_ACTION",
    "SIGNATURE_ACTION",
    "AuditCheck",
    "Meaning",
    "check_signatures",
    "check_signed_objects",
    "object_digest",
    "run_digest",
    "sign",
    "signature_checks",
    "signature_message",
    "signatures_for",
]

Meaning = Literal["approved", "reviewed", "authored"]
MEANINGS: tuple[str, ...] = get_args(Meaning)
SIGNATURE_ACTION = "signature"
REGISTRATION_ACTION = "identity.registered"
RUN_DIGEST_FORMAT = "qemlflow.run-digest/2"  # 2: RFC 8785 bytes (1: Python's json.dumps)
_LEGACY_RUN_DIGEST_FORMAT = "qemlflow.run-digest/1"
AuditCheck = Callable[[Sequence["AuditEvent"]], list[tuple[int, str]]]

_OBJECT_FIX = (
    "give a finished run id, a dataset version id, an artifact's blob digest, "
    "or the path of a file that is stored as a blob"
)
_PASSING_OFF = "a signature cannot be passed off as another user's"


# -- what is signed --------------------------------------------------------------------


def run_digest(run: RunRecord) -> str:
    """Return the content digest of a run: sha256 of the canonical JSON of its essentials.

    The essentials are what a reviewer approves: ``id``, ``name``, ``status``, ``config``,
    ``seed``, ``environment`` (digest), ``metrics``, the steps (``position``, ``step``,
    ``key``, ``output``) and the artifacts (``name``, ``digest``, ``kind``), tagged with
    the format ``qemlflow.run-digest/2`` (RFC 8785 canonical JSON). Timings, host and pid
    are left out. A change to any essential gives another digest.
    """
    return sha256_hex(canonical_json(_run_essentials(run, RUN_DIGEST_FORMAT)))


def _legacy_run_digest(run: RunRecord) -> str:
    """The run digest as signed before RFC 8785 (format /1, Python's ``json.dumps``).

    Only to check signatures made then: a run signed with it is unchanged when its
    essentials still give that digest under that encoding.
    """
    essentials = _run_essentials(run, _LEGACY_RUN_DIGEST_FORMAT)
    return sha256_hex(legacy_canonical_json(essentials))


def _run_essentials(run: RunRecord, digest_format: str) -> dict[str, Any]:
    return {
        "format": digest_format,
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "config": run.config,
        "seed": run.seed,
        "environment": run.environment,
        "metrics": run.metrics,
        "steps": [
            {"position": s.position, "step": s.step, "key": s.key, "output": s.output}
            for s in run.steps
        ],
        "artifacts": [{"name": a.name, "digest": a.digest, "kind": a.kind} for a in run.artifacts],
    }


@dataclass(frozen=True)
class _Resolved:
    kind: str
    id: str
    digest: str
    status: str | None = None


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _lookup(find: Callable[[], _Resolved]) -> _Resolved | None:
    try:
        return find()
    except StoreError as exc:
        if "ambiguous" in exc.problem:
            raise SignatureError(exc.problem, exc.fix) from None
        return None


def _resolve(store: Store, ref: str) -> _Resolved:
    path = Path(ref).expanduser()
    if path.is_file():
        digest = _file_sha256(path)
        if not store.has_blob(digest):
            raise SignatureError(
                f"file {path} is not in the store (sha256 {digest[:12]})",
                "only stored objects can be signed: sign the run or artifact that holds it",
            )
        return _Resolved("blob", digest, digest)

    def find_run() -> _Resolved:
        run = store.get_run(ref)
        return _Resolved("run", run.id, run_digest(run), run.status)

    def find_dataset() -> _Resolved:
        dataset = store.get_dataset(ref)
        return _Resolved("dataset", dataset.id, dataset.table_digest)

    found = [r for r in (_lookup(find_run), _lookup(find_dataset)) if r is not None]
    text = ref.strip().lower()
    if is_digest(text) and store.has_blob(text):
        found.append(_Resolved("blob", text, text))
    elif len(text) >= 8:
        digests = {a.digest for a in store.find_artifacts(digest_prefix=text)}
        if len(digests) == 1:
            digest = digests.pop()
            found.append(_Resolved("blob", digest, digest))
        elif len(digests) > 1:
            raise SignatureError(
                f"artifact digest prefix {ref!r} is ambiguous", "give more characters"
            )
    if not found:
        raise SignatureError(f"nothing in the store matches {ref!r}", _OBJECT_FIX)
    if len(found) > 1:
        kinds = " and a ".join(r.kind for r in found)
        raise SignatureError(f"{ref!r} matches a {kinds}", "give more characters of the id")
    return found[0]


def object_digest(store: Store, ref: str) -> tuple[str, str, str]:
    """Return ``(kind, id, digest)`` of the stored object that ``ref`` names.

    ``ref`` is tried as:

    - the path of an existing file: ``("blob", sha256, sha256)``; the file's content must
      be a blob of the store (only stored objects can be signed);
    - a run id or unique prefix: ``("run", run_id, run_digest(run))`` (see
      :func:`run_digest`);
    - a dataset version id or unique prefix: ``("dataset", id, table_digest)``;
    - a full blob digest, or a unique prefix of an artifact's digest:
      ``("blob", digest, digest)``.

    Raises
    ------
    SignatureError
        Nothing, or more than one object, matches ``ref``; a file is not stored.
    """
    found = _resolve(store, ref)
    return found.kind, found.id, found.digest


def signature_message(
    *,
    object_id: str,
    kind: str,
    digest: str,
    meaning: str,
    reason: str,
    signer: Mapping[str, str],
    signed_at: str,
) -> bytes:
    """Return the exact bytes an Ed25519 signature covers.

    Examples
    --------
    >>> signature_message(object_id="r1", kind="run", digest="d", meaning="approved",
    ...                   reason="ok", signer={"name": "A", "email": "a@x", "fingerprint": "f"},
    ...                   signed_at="t")[:40]
    b'{"digest":"d","kind":"run","meaning":"ap'
    """
    return canonical_json(
        {
            "object": object_id,
            "kind": kind,
            "digest": digest,
            "meaning": meaning,
            "reason": reason,
            "signer": {
                "name": signer["name"],
                "email": signer["email"],
                "fingerprint": signer["fingerprint"],
            },
            "signed_at": signed_at,
        }
    )


# -- the registry of identities, replayed from the audit log ----------------------------


@dataclass
class _Registry:
    """Which key belongs to whom, as the audit log's registrations establish it."""

    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # fingerprint -> identity
    email_keys: dict[str, str] = field(default_factory=dict)  # casefolded email -> fingerprint

    def register(self, event: AuditEvent) -> str | None:
        """Apply one registration event; return the problem with it, if any."""
        details = event.details
        values = {k: details.get(k) for k in ("name", "email", "public_key", "fingerprint")}
        if not all(isinstance(v, str) and v for v in values.values()):
            return (
                "identity registration is malformed (it needs name, email, public_key, fingerprint)"
            )
        entry: dict[str, str] = {k: str(v) for k, v in values.items()}
        fp, email = entry["fingerprint"], entry["email"]
        try:
            raw = base64.b64decode(entry["public_key"], validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32 or fingerprint_of(raw) != fp or event.objects.get("identity") != fp:
            return f"identity registration of {email} does not match its public key"
        known = self.keys.get(fp)
        if known is not None:
            if (known["name"], known["email"].casefold()) != (entry["name"], email.casefold()):
                return (
                    f"key {fp[:16]} is already registered to {_display(known)}; "
                    f"it cannot be registered again as {_display(entry)}"
                )
            return None
        owner = self.email_keys.get(email.casefold())
        if owner is not None and owner != fp:
            return (
                f"email {email} is already bound to key {owner[:16]}; "
                f"key {fp[:16]} cannot take it over"
            )
        self.keys[fp] = entry
        self.email_keys[email.casefold()] = fp
        return None


def _display(who: Mapping[str, str]) -> str:
    return f"{who.get('name', '?')} <{who.get('email', '?')}>"


def _in_order(events: Sequence[AuditEvent]) -> list[AuditEvent]:
    return sorted(events, key=lambda e: e.seq)


# -- signing -----------------------------------------------------------------------------


def sign(
    store: Store,
    object_ref: str,
    *,
    meaning: Meaning,
    reason: str,
    passphrase: str,
    identity_dir: str | os.PathLike[str] | None = None,
) -> AuditEvent:
    """Sign a stored object and record the signature in the audit log.

    Parameters
    ----------
    store
        The store that holds the object and the audit log.
    object_ref
        A run id, dataset version id, blob digest or file path (see :func:`object_digest`).
        Runs must be finished.
    meaning
        What the signature means: ``"approved"``, ``"reviewed"`` or ``"authored"``.
    reason
        Why the signer signs (required, kept in the signed message).
    passphrase
        Unlocks the signer's private key.
    identity_dir
        The identity folder; default :func:`qemlflow.audit.identity.identity_dir`.

    Returns
    -------
    AuditEvent
        The ``"signature"`` event: ``objects`` ``{"object", "digest", "identity"}``,
        ``details`` ``{"meaning", "kind", "signer", "signed_at", "message_sha256",
        "signature"}``, itself signed (its event signature) by the same key.

    Raises
    ------
    SignatureError
        Unknown meaning, empty reason, an unsignable or unfinished object.
    IdentityError
        No identity, or a wrong passphrase.
    AuthorityError
        The signer's key is not enrolled in the store (an admin enrolls it with
        ``qemlflow identity enroll``), or its role does not allow the meaning
        (``approved`` and ``reviewed`` need an approver).
    """
    if meaning not in MEANINGS:
        raise SignatureError(
            f"unknown signature meaning {meaning!r}", f"use one of: {', '.join(MEANINGS)}"
        )
    reason = reason.strip()
    if not reason:
        raise SignatureError("a signature needs a reason", "say why you sign (--reason TEXT)")
    identity = load_identity(identity_dir)
    key = load_signing_key(passphrase, identity_dir)
    enrolled = store.identities.by_fingerprint(identity.fingerprint)
    if enrolled is None or not enrolled.active or enrolled.fingerprint != identity.fingerprint:
        state = "is not enrolled" if enrolled is None else "is revoked"
        raise AuthorityError(
            f"your key {identity.fingerprint[:16]} ({identity.display}) {state} in this store; "
            "signatures need an enrolled passphrase identity",
            "ask an admin to run `qemlflow identity enroll <path of your identity.json> "
            "--role approver`",
        )
    target = _resolve(store, object_ref)
    if target.kind == "run" and target.status != "finished":
        raise SignatureError(
            f"run {target.id} is {target.status}; only finished runs can be signed",
            "wait until the run has finished, or sign another run",
        )
    principal = Principal.from_private_key(key, enrolled.name, enrolled.email, AUTH_PASSPHRASE)
    signer = {"name": enrolled.name, "email": enrolled.email, "fingerprint": identity.fingerprint}
    signed_at = utc_now()
    message = signature_message(
        object_id=target.id,
        kind=target.kind,
        digest=target.digest,
        meaning=meaning,
        reason=reason,
        signer=signer,
        signed_at=signed_at,
    )
    return store.audit(
        SIGNATURE_ACTION,
        {"object": target.id, "digest": target.digest, "identity": identity.fingerprint},
        reason=reason,
        details={
            "meaning": meaning,
            "kind": target.kind,
            "signer": signer,
            "signed_at": signed_at,
            "message_sha256": sha256_hex(message),
            "signature": base64.b64encode(key.sign(message)).decode("ascii"),
        },
        principal=principal,
    )


# -- checking ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Signed:
    """The fields of a signature event, checked for shape."""

    object_id: str
    digest: str
    kind: str
    meaning: str
    reason: str
    signer: dict[str, str]
    signed_at: str
    message_sha256: str
    signature: bytes

    @property
    def message(self) -> bytes:
        return signature_message(
            object_id=self.object_id,
            kind=self.kind,
            digest=self.digest,
            meaning=self.meaning,
            reason=self.reason,
            signer=self.signer,
            signed_at=self.signed_at,
        )


def _parse_signature(event: AuditEvent) -> _Signed | str:
    """Return the signature event's fields, or the problem with its shape."""
    objects, details = event.objects, event.details
    signer_raw: Any = details.get("signer")
    signer: dict[str, str] = {}
    if isinstance(signer_raw, Mapping):
        signer = {k: v for k, v in signer_raw.items() if isinstance(v, str)}
    texts = {
        "object": objects.get("object"),
        "digest": objects.get("digest"),
        "identity": objects.get("identity"),
        "kind": details.get("kind"),
        "meaning": details.get("meaning"),
        "signed_at": details.get("signed_at"),
        "message_sha256": details.get("message_sha256"),
        "signature": details.get("signature"),
        "reason": event.reason,
        "signer name": signer.get("name"),
        "signer email": signer.get("email"),
        "signer fingerprint": signer.get("fingerprint"),
    }
    missing = [k for k, v in texts.items() if not isinstance(v, str)]
    if missing:
        return f"signature event is malformed (missing {', '.join(missing)})"
    try:
        signature = base64.b64decode(str(texts["signature"]), validate=True)
    except (binascii.Error, ValueError):
        return "signature event is malformed (the signature is not base64)"
    if texts["identity"] != signer["fingerprint"]:
        return "signature event's identity is not the signer's key fingerprint"
    return _Signed(
        object_id=str(texts["object"]),
        digest=str(texts["digest"]),
        kind=str(texts["kind"]),
        meaning=str(texts["meaning"]),
        reason=str(texts["reason"]),
        signer={k: signer[k] for k in ("name", "email", "fingerprint")},
        signed_at=str(texts["signed_at"]),
        message_sha256=str(texts["message_sha256"]),
        signature=signature,
    )


def _verifies(public_key_b64: str, message: bytes, signature: bytes) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(signature, message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _enrolled_key(ledger: IdentityLedger, fingerprint: str) -> dict[str, str] | None:
    """The identity a key is enrolled to at this point of the chain (revoked: ``None``)."""
    key = ledger.key_at(fingerprint)
    person = None if key is None else ledger.person(key.email)
    if key is None or person is None:
        return None
    return {"name": person.name, "email": person.email, "public_key": key.public_key}


def _signature_problems(
    event: AuditEvent, lookup: Callable[[str], dict[str, str] | None]
) -> list[str]:
    parsed = _parse_signature(event)
    if isinstance(parsed, str):
        return [parsed]
    signer, fp = parsed.signer, parsed.signer["fingerprint"]
    who = _display(signer)
    problems: list[str] = []
    if parsed.meaning not in MEANINGS:
        problems.append(f"signature has an unknown meaning {parsed.meaning!r}")
    if event.signature is not None and event.signer != fp:
        problems.append(
            f"signature by {who} is in an event signed by another key "
            f"({(event.signer or '?')[:16]}) - {_PASSING_OFF}"
        )
    known = lookup(fp)
    if known is None or (known["name"], known["email"].casefold()) != (
        signer["name"],
        signer["email"].casefold(),
    ):
        problems.append(
            f"signature by {who} uses key {fp[:16]} which is not enrolled to {who} at that "
            f"point - {_PASSING_OFF}"
        )
        return problems
    if event.actor != who:
        problems.append(f"signature event's actor {event.actor!r} is not its signer {who}")
    message = parsed.message
    if not _verifies(known["public_key"], message, parsed.signature):
        problems.append(
            f"signature by {who} on {parsed.kind} {parsed.object_id} does not verify: "
            "the signed object, digest, meaning, reason, signer or time was altered, "
            "or the signature was copied from another event"
        )
    elif sha256_hex(message) != parsed.message_sha256:
        problems.append("signature event's message_sha256 does not match its content")
    return problems


def check_signatures(events: Sequence[AuditEvent]) -> list[tuple[int, str]]:
    """Check every signature of an audit log against the keys enrolled in it, from the
    events alone.

    Pass it to ``Store.verify_audit(checks=[check_signatures])``. Returns ``(seq, problem)``
    pairs: malformed events, a signature whose key is not enrolled (at that point, not
    revoked) to the signer it names, one that does not verify with that key, and one in an
    event signed by another key. In the legacy (unsigned) prefix of an old store, the
    ``identity.registered`` events of trust on first use stand in for enrollment.
    """
    registry = _Registry()
    ledger = IdentityLedger()
    problems: list[tuple[int, str]] = []
    for event in _in_order(events):
        if event.signature is None:
            if event.action == REGISTRATION_ACTION:
                problem = registry.register(event)
                if problem is not None:
                    problems.append((event.seq, problem))
            elif event.action == SIGNATURE_ACTION:
                found = _signature_problems(event, registry.keys.get)
                problems.extend((event.seq, p) for p in found)
            continue
        if event.action == SIGNATURE_ACTION:
            found = _signature_problems(event, functools.partial(_enrolled_key, ledger))
            problems.extend((event.seq, p) for p in found)
        ledger.apply(event)
    return problems


def _current_digest(store: Store, kind: str, object_id: str) -> str | None:
    """Return the object's digest now, or ``None`` when it is gone."""
    try:
        if kind == "run":
            run = store.get_run(object_id)
            return run_digest(run) if run.id == object_id else None
        if kind == "dataset":
            dataset = store.get_dataset(object_id)
            return dataset.table_digest if dataset.id == object_id else None
        if kind == "blob":
            if not store.has_blob(object_id):
                return None
            return store.objects.hash_of(object_id)
    except StoreError:
        return None
    raise SignatureError(f"unknown signed object kind {kind!r}", _OBJECT_FIX)


def check_signed_objects(store: Store, events: Sequence[AuditEvent]) -> list[tuple[int, str]]:
    """Check that every signed object still exists with the digest it was signed with.

    Returns ``(seq, problem)`` pairs for signed runs, datasets and blobs that changed or
    vanished. Signature events too malformed to name an object are left to
    :func:`check_signatures`.
    """
    problems: list[tuple[int, str]] = []
    current: dict[tuple[str, str], str | None] = {}
    for event in _in_order(events):
        if event.action != SIGNATURE_ACTION:
            continue
        parsed = _parse_signature(event)
        if isinstance(parsed, str):
            continue
        where = (parsed.kind, parsed.object_id)
        if where not in current:
            try:
                current[where] = _current_digest(store, *where)
            except SignatureError as exc:
                problems.append((event.seq, f"signature names {exc.problem}"))
                continue
        digest = current[where]
        if digest is None:
            problems.append(
                (event.seq, f"signed {parsed.kind} {parsed.object_id} is no longer in the store")
            )
        elif digest != parsed.digest and not _signed_before_jcs(store, parsed.kind, parsed):
            problems.append(
                (
                    event.seq,
                    f"signed {parsed.kind} {parsed.object_id} changed since it was signed "
                    f"(digest {parsed.digest[:12]} then, {digest[:12]} now)",
                )
            )
    return problems


def _signed_before_jcs(store: Store, kind: str, parsed: _Signed) -> bool:
    """Whether a run signed before RFC 8785 hashing is unchanged (its legacy digest)."""
    if kind != "run":
        return False  # dataset and blob digests are sha256 of bytes: they never changed
    try:
        run = store.get_run(parsed.object_id)
    except StoreError:
        return False
    return bool(run.id == parsed.object_id and _legacy_run_digest(run) == parsed.digest)


def signature_checks(store: Store) -> tuple[AuditCheck, AuditCheck]:
    """Return the checks for ``Store.verify_audit(checks=...)``: signatures and signed objects.

    The first needs only the events (:func:`check_signatures`); the second reads the store
    (:func:`check_signed_objects`).
    """
    return check_signatures, functools.partial(check_signed_objects, store)


def signatures_for(store: Store, object_ref: str) -> list[dict[str, Any]]:
    """Return the signatures on an object, oldest first, each checked.

    Each dict holds ``seq``, ``signer`` (``"Name <email>"``), ``fingerprint``,
    ``meaning``, ``reason``, ``time`` (when signed), ``digest`` (what was signed),
    ``valid`` and ``problems`` (why it is not valid). A signature is valid when it
    verifies with the key registered to its signer and the object still has the signed
    digest.
    """
    _, object_id, digest = object_digest(store, object_ref)
    events = store.audit_events()
    flagged: dict[int, list[str]] = {}
    for seq, problem in check_signatures(events):
        flagged.setdefault(seq, []).append(problem)
    report: list[dict[str, Any]] = []
    for event in _in_order(events):
        if event.action != SIGNATURE_ACTION or event.objects.get("object") != object_id:
            continue
        problems = list(flagged.get(event.seq, []))
        parsed = _parse_signature(event)
        if isinstance(parsed, str):
            empty = dict.fromkeys(("fingerprint", "meaning", "reason", "time", "digest"))
            report.append(
                {"seq": event.seq, "signer": event.actor, **empty, "valid": False}
                | {"problems": problems}
            )
            continue
        if parsed.digest != digest:
            problems.append(
                f"the object changed since it was signed (digest {parsed.digest[:12]} then, "
                f"{digest[:12]} now)"
            )
        report.append(
            {
                "seq": event.seq,
                "signer": _display(parsed.signer),
                "fingerprint": parsed.signer["fingerprint"],
                "meaning": parsed.meaning,
                "reason": parsed.reason,
                "time": parsed.signed_at,
                "digest": parsed.digest,
                "valid": not problems,
                "problems": problems,
            }
        )
    return report
