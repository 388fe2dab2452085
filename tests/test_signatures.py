"""Identities and electronic signatures: keys, signing, and the attacks checks must catch."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.identities_helpers import enroll, unlock

from qemlflow.audit import (
    Identity,
    IdentityError,
    SignatureError,
    check_signatures,
    check_signed_objects,
    identity_dir,
    init_identity,
    load_identity,
    load_signing_key,
    object_digest,
    run_digest,
    sign,
    signature_checks,
    signatures_for,
)
from qemlflow.audit.errors import AuthorityError
from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal
from qemlflow.audit.signatures import signature_message
from qemlflow.errors import QeMLflowError
from qemlflow.store import DatasetRecord, Store, sha256_hex

ALICE_PASS = "alice passphrase"
MALLORY_PASS = "mallory passphrase"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def alice_dir(tmp_path: Path, store: Store) -> Path:
    """Alice's passphrase identity, enrolled by the store's owner as an approver."""
    folder = tmp_path / "alice"
    init_identity("Alice Smith", "alice@example.org", ALICE_PASS, directory=folder)
    enroll(store, folder, "approver")
    return folder


@pytest.fixture
def mallory_dir(tmp_path: Path) -> Path:
    """Mallory's passphrase identity: not enrolled anywhere (tests enroll it if needed)."""
    folder = tmp_path / "mallory"
    init_identity("Mallory Jones", "mallory@example.org", MALLORY_PASS, directory=folder)
    return folder


def _as(folder: Path, passphrase: str) -> Principal:
    return unlock(folder, passphrase)


def _finished_run(store: Store, name: str = "demo", rmse: float = 0.7) -> str:
    run_id = store.create_run(name, {"model": "rf", "seed": 0}, 0, None)
    store.add_artifact(run_id, "predictions.csv", store.put_bytes(f"p,{rmse}\n".encode()), "csv")
    store.finish_run(run_id, {"rmse": rmse})
    return run_id


@pytest.fixture
def run_id(store: Store) -> str:
    return _finished_run(store)


def _problems(store: Store) -> list[tuple[int, str]]:
    events = store.audit_events()
    return check_signatures(events) + check_signed_objects(store, events)


def _forge(
    store: Store,
    *,
    key: Ed25519PrivateKey,
    signer: dict[str, str],
    object_id: str,
    digest: str,
    kind: str = "run",
    meaning: str = "approved",
    reason: str = "looks good",
    by: Principal | None = None,
) -> int:
    """Write a signature event into the audit log by hand, as an enrolled user could
    (``by``; default: the key's holder under the signer's name)."""
    signed_at = "2026-01-01T00:00:00.000000+00:00"
    message = signature_message(
        object_id=object_id,
        kind=kind,
        digest=digest,
        meaning=meaning,
        reason=reason,
        signer=signer,
        signed_at=signed_at,
    )
    event = store.audit(
        "signature",
        {"object": object_id, "digest": digest, "identity": signer["fingerprint"]},
        reason=reason,
        details={
            "meaning": meaning,
            "kind": kind,
            "signer": signer,
            "signed_at": signed_at,
            "message_sha256": sha256_hex(message),
            "signature": base64.b64encode(key.sign(message)).decode(),
        },
        principal=by
        or Principal.from_private_key(key, signer["name"], signer["email"], AUTH_PASSPHRASE),
    )
    return event.seq


def _signer(identity: Identity) -> dict[str, str]:
    return {"name": identity.name, "email": identity.email, "fingerprint": identity.fingerprint}


# -- identities ------------------------------------------------------------------------


def test_init_identity_writes_public_file_and_encrypted_key(tmp_path: Path) -> None:
    folder = tmp_path / "id"
    alice = init_identity("Alice Smith", "alice@example.org", ALICE_PASS, directory=folder)
    data = json.loads((folder / "identity.json").read_text())
    assert data["name"] == "Alice Smith" and data["email"] == "alice@example.org"
    raw = base64.b64decode(data["public_key"])
    assert len(raw) == 32 and data["fingerprint"] == sha256_hex(raw) == alice.fingerprint
    assert data["created_at"]
    assert alice.display == "Alice Smith <alice@example.org>"
    assert load_identity(folder) == alice

    pem_path = folder / "signing_key.pem"
    assert stat.S_IMODE(pem_path.stat().st_mode) == 0o600
    pem = pem_path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # no passphrase: the key cannot be read
        serialization.load_pem_private_key(pem, password=None)

    key = load_signing_key(ALICE_PASS, folder)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert public == raw


@pytest.mark.parametrize("passphrase", ["wrong passphrase", "", "x"])
def test_wrong_passphrase_is_an_identity_error(alice_dir: Path, passphrase: str) -> None:
    with pytest.raises(IdentityError, match="wrong passphrase for the signing key of Alice Smith"):
        load_signing_key(passphrase, alice_dir)


def test_identity_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(tmp_path / "env-id"))
    assert identity_dir() == tmp_path / "env-id"
    made = init_identity("Bob", "bob@example.org", "bob passphrase")
    assert (tmp_path / "env-id" / "identity.json").is_file()
    assert load_identity() == made
    monkeypatch.delenv("QEMLFLOW_IDENTITY_DIR")
    assert identity_dir() == Path("~/.config/qemlflow").expanduser().absolute()


@pytest.mark.parametrize("passphrase", ["", "short", "1234567"])
def test_short_passphrase_is_refused(tmp_path: Path, passphrase: str) -> None:
    with pytest.raises(IdentityError, match="passphrase is too short"):
        init_identity("Alice", "alice@example.org", passphrase, directory=tmp_path)
    assert not (tmp_path / "signing_key.pem").exists()


def test_existing_identity_is_kept_unless_overwrite(alice_dir: Path) -> None:
    before = load_identity(alice_dir)
    with pytest.raises(IdentityError, match="already exists"):
        init_identity("Alice Smith", "alice@example.org", ALICE_PASS, directory=alice_dir)
    assert load_identity(alice_dir) == before
    after = init_identity(
        "Alice Smith", "alice@example.org", "a new passphrase", directory=alice_dir, overwrite=True
    )
    assert after.fingerprint != before.fingerprint
    load_signing_key("a new passphrase", alice_dir)


@pytest.mark.parametrize(
    ("name", "email"), [("", "a@example.org"), ("Eve <x>", "a@example.org"), ("Eve", "nomail")]
)
def test_malformed_name_or_email_is_refused(tmp_path: Path, name: str, email: str) -> None:
    with pytest.raises(IdentityError):
        init_identity(name, email, ALICE_PASS, directory=tmp_path)


def test_missing_or_damaged_identity(tmp_path: Path, alice_dir: Path) -> None:
    with pytest.raises(IdentityError, match="no identity"):
        load_identity(tmp_path / "nobody")
    data = json.loads((alice_dir / "identity.json").read_text())
    data["fingerprint"] = "0" * 64
    (alice_dir / "identity.json").write_text(json.dumps(data))
    with pytest.raises(IdentityError, match="damaged"):
        load_identity(alice_dir)


def test_key_of_another_identity_is_refused(alice_dir: Path, mallory_dir: Path) -> None:
    (alice_dir / "signing_key.pem").write_bytes((mallory_dir / "signing_key.pem").read_bytes())
    with pytest.raises(IdentityError, match="does not belong to Alice Smith"):
        load_signing_key(MALLORY_PASS, alice_dir)


# -- signing ---------------------------------------------------------------------------


def test_sign_a_finished_run(store: Store, alice_dir: Path, run_id: str) -> None:
    alice = load_identity(alice_dir)
    event = sign(
        store,
        run_id[:17],
        meaning="approved",
        reason="metrics reviewed against SOP-12",
        passphrase=ALICE_PASS,
        identity_dir=alice_dir,
    )
    digest = run_digest(store.get_run(run_id))
    assert event.action == "signature"
    assert event.actor == alice.display
    assert event.reason == "metrics reviewed against SOP-12"
    assert dict(event.objects) == {
        "object": run_id,
        "digest": digest,
        "identity": alice.fingerprint,
    }
    assert event.details["meaning"] == "approved" and event.details["kind"] == "run"
    assert event.details["signer"] == _signer(alice)
    assert object_digest(store, run_id) == ("run", run_id, digest)

    actions = [e.action for e in store.audit_events()]
    assert actions.count("identity.enrolled") == 1 and actions.count("signature") == 1
    assert event.signer == alice.fingerprint and event.auth == "passphrase"  # its own key
    assert _problems(store) == []
    report = store.verify_audit(checks=signature_checks(store))
    assert report.ok, report

    [found] = signatures_for(store, run_id)
    assert found["valid"] is True and found["problems"] == []
    assert found["signer"] == "Alice Smith <alice@example.org>"
    assert (found["meaning"], found["reason"]) == ("approved", "metrics reviewed against SOP-12")

    # a second signature by the same user: no new identity event
    sign(
        store,
        run_id,
        meaning="reviewed",
        reason="second look",
        passphrase=ALICE_PASS,
        identity_dir=alice_dir,
    )
    actions = [e.action for e in store.audit_events()]
    assert actions.count("identity.enrolled") == 1 and actions.count("signature") == 2
    assert _problems(store) == []


def test_sign_with_identity_from_environment(
    store: Store, alice_dir: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(alice_dir))
    event = sign(store, run_id, meaning="authored", reason="I ran it", passphrase=ALICE_PASS)
    assert event.details["signer"]["email"] == "alice@example.org"
    assert _problems(store) == []


def test_sign_dataset_blob_and_file(store: Store, alice_dir: Path, tmp_path: Path) -> None:
    table = store.put_bytes(b"smiles,y\nCCO,1.0\n")
    dataset = store.add_dataset(
        DatasetRecord(id="d" * 64, name="esol", source="esol.csv", table_digest=table)
    )
    path = tmp_path / "model.bin"
    path.write_bytes(b"model weights")
    model = store.put_file(path)
    signed = {
        ("dataset", dataset.id, table): dataset.id[:10],
        ("blob", table, table): table,
        ("blob", model, model): str(path),
    }
    for (kind, object_id, digest), ref in signed.items():
        assert object_digest(store, ref) == (kind, object_id, digest)
        event = sign(
            store,
            ref,
            meaning="reviewed",
            reason="ok",
            passphrase=ALICE_PASS,
            identity_dir=alice_dir,
        )
        assert event.objects["object"] == object_id and event.details["kind"] == kind
    assert _problems(store) == []

    unstored = tmp_path / "other.bin"
    unstored.write_bytes(b"not in the store")
    with pytest.raises(SignatureError, match="not in the store"):
        sign(
            store,
            str(unstored),
            meaning="reviewed",
            reason="ok",
            passphrase=ALICE_PASS,
            identity_dir=alice_dir,
        )
    with pytest.raises(SignatureError, match="nothing in the store matches"):
        object_digest(store, "no-such-object")


def test_wrong_passphrase_signs_nothing(store: Store, alice_dir: Path, run_id: str) -> None:
    with pytest.raises(IdentityError, match="wrong passphrase"):
        sign(
            store,
            run_id,
            meaning="approved",
            reason="ok",
            passphrase="not alice's",
            identity_dir=alice_dir,
        )
    assert [e for e in store.audit_events() if e.action == "signature"] == []


def test_unknown_meaning_and_empty_reason_are_refused(
    store: Store, alice_dir: Path, run_id: str
) -> None:
    bad: Any = "rubber-stamped"
    with pytest.raises(QeMLflowError, match="approved, reviewed, authored"):
        sign(store, run_id, meaning=bad, reason="ok", passphrase=ALICE_PASS, identity_dir=alice_dir)
    with pytest.raises(SignatureError, match="needs a reason"):
        sign(
            store,
            run_id,
            meaning="approved",
            reason="  ",
            passphrase=ALICE_PASS,
            identity_dir=alice_dir,
        )


def test_running_run_cannot_be_signed(store: Store, alice_dir: Path) -> None:
    running = store.create_run("live", {"model": "rf"}, 0, None)
    with pytest.raises(SignatureError, match="only finished runs can be signed"):
        sign(
            store,
            running,
            meaning="approved",
            reason="ok",
            passphrase=ALICE_PASS,
            identity_dir=alice_dir,
        )
    store.fail_run(running, "boom")
    with pytest.raises(SignatureError, match="is failed"):
        sign(
            store,
            running,
            meaning="approved",
            reason="ok",
            passphrase=ALICE_PASS,
            identity_dir=alice_dir,
        )


def test_changed_object_invalidates_its_signature(
    store: Store, alice_dir: Path, run_id: str
) -> None:
    sign(
        store,
        run_id,
        meaning="approved",
        reason="ok",
        passphrase=ALICE_PASS,
        identity_dir=alice_dir,
    )
    store.add_artifact(run_id, "extra.csv", store.put_bytes(b"late addition"), "csv")
    problems = _problems(store)
    assert len(problems) == 1 and "changed since it was signed" in problems[0][1]
    [found] = signatures_for(store, run_id)
    assert found["valid"] is False


def test_a_run_signed_before_rfc_8785_hashing_still_verifies(
    store: Store, alice_dir: Path, run_id: str
) -> None:
    """Runs signed when the run digest was Python's json.dumps (format /1) stay valid
    while unchanged, and are still caught when changed."""
    from qemlflow.audit.signatures import _legacy_run_digest

    sign(
        store,
        run_id,
        meaning="approved",
        reason="ok",
        passphrase=ALICE_PASS,
        identity_dir=alice_dir,
    )
    older = _finished_run(store, "older", rmse=1.0)  # an integral float: the encodings differ
    legacy = _legacy_run_digest(store.get_run(older))
    assert legacy != run_digest(store.get_run(older))
    key = load_signing_key(ALICE_PASS, alice_dir)
    alice = _signer(load_identity(alice_dir))
    _forge(store, key=key, signer=alice, object_id=older, digest=legacy)
    assert _problems(store) == []
    store.add_artifact(older, "late.csv", store.put_bytes(b"late"), "csv")
    problems = _problems(store)
    assert len(problems) == 1 and "changed since it was signed" in problems[0][1]


# -- attacks ---------------------------------------------------------------------------


def test_mallory_cannot_sign_as_alice_with_her_own_key(
    store: Store, alice_dir: Path, mallory_dir: Path, run_id: str
) -> None:
    alice, mallory = load_identity(alice_dir), load_identity(mallory_dir)
    enroll(store, mallory_dir, "approver")
    digest = run_digest(store.get_run(run_id))
    claims_alice = {**_signer(alice), "fingerprint": mallory.fingerprint}
    seq = _forge(
        store,
        key=load_signing_key(MALLORY_PASS, mallory_dir),
        signer=claims_alice,
        object_id=run_id,
        digest=digest,
        by=_as(mallory_dir, MALLORY_PASS),
    )
    problems = check_signatures(store.audit_events())
    assert [s for s, _ in problems] == [seq]
    assert "not enrolled to Alice Smith" in problems[0][1]
    assert "cannot be passed off as another user's" in problems[0][1]
    assert not store.verify_audit(checks=signature_checks(store)).ok
    [found] = signatures_for(store, run_id)
    assert found["valid"] is False


def test_mallory_cannot_use_alices_fingerprint(
    store: Store, alice_dir: Path, mallory_dir: Path, run_id: str
) -> None:
    alice = load_identity(alice_dir)
    enroll(store, mallory_dir, "approver")
    seq = _forge(
        store,
        key=load_signing_key(MALLORY_PASS, mallory_dir),
        signer=_signer(alice),
        object_id=run_id,
        digest=run_digest(store.get_run(run_id)),
        by=_as(mallory_dir, MALLORY_PASS),
    )
    problems = check_signatures(store.audit_events())
    assert {s for s, _ in problems} == {seq}
    assert any("in an event signed by another key" in p for _, p in problems)
    assert any("does not verify" in p for _, p in problems)


def test_unenrolled_key_cannot_sign(store: Store, mallory_dir: Path, run_id: str) -> None:
    """No trust on first use: a key nobody enrolled signs nothing, by sign() or by hand."""
    mallory = load_identity(mallory_dir)
    with pytest.raises(AuthorityError, match="qemlflow identity enroll"):
        sign(
            store,
            run_id,
            meaning="approved",
            reason="ok",
            passphrase=MALLORY_PASS,
            identity_dir=mallory_dir,
        )
    with pytest.raises(AuthorityError, match="not enrolled"):
        _forge(
            store,
            key=load_signing_key(MALLORY_PASS, mallory_dir),
            signer=_signer(mallory),
            object_id=run_id,
            digest=run_digest(store.get_run(run_id)),
        )
    assert [e for e in store.audit_events() if e.action == "signature"] == []


def test_a_contributor_cannot_approve(store: Store, mallory_dir: Path, run_id: str) -> None:
    enroll(store, mallory_dir, "contributor")
    with pytest.raises(AuthorityError, match="needs role approver"):
        sign(
            store,
            run_id,
            meaning="approved",
            reason="ok",
            passphrase=MALLORY_PASS,
            identity_dir=mallory_dir,
        )
    event = sign(
        store,
        run_id,
        meaning="authored",
        reason="I trained it",
        passphrase=MALLORY_PASS,
        identity_dir=mallory_dir,
    )
    assert event.details["meaning"] == "authored" and _problems(store) == []


def test_mallory_cannot_take_over_alices_email(
    store: Store, alice_dir: Path, tmp_path: Path, run_id: str
) -> None:
    fake_dir = tmp_path / "fake-alice"
    fake = init_identity("Alice Smith", "Alice@Example.org", MALLORY_PASS, directory=fake_dir)
    with pytest.raises(IdentityError, match="already enrolled"):
        enroll(store, fake_dir, "approver")
    with pytest.raises(AuthorityError, match="not enrolled"):
        sign(
            store,
            run_id,
            meaning="approved",
            reason="ok",
            passphrase=MALLORY_PASS,
            identity_dir=fake_dir,
        )
    assert store.identities.by_fingerprint(fake.fingerprint) is None
    assert (
        store.identities.get("ALICE@example.org").fingerprint
        == load_identity(alice_dir).fingerprint
    )


def test_copied_signature_does_not_verify_on_another_object(
    store: Store, alice_dir: Path, run_id: str
) -> None:
    original = sign(
        store,
        run_id,
        meaning="approved",
        reason="ok",
        passphrase=ALICE_PASS,
        identity_dir=alice_dir,
    )
    other = _finished_run(store, "other", rmse=9.9)
    other_digest = run_digest(store.get_run(other))
    copied = store.audit(
        "signature",
        {**original.objects, "object": other, "digest": other_digest},
        reason=original.reason,
        details=dict(original.details),
        principal=_as(alice_dir, ALICE_PASS),
    )
    problems = _problems(store)
    assert [s for s, _ in problems] == [copied.seq] and "does not verify" in problems[0][1]
    assert [f["valid"] for f in signatures_for(store, other)] == [False]
    assert [f["valid"] for f in signatures_for(store, run_id)] == [True]


@pytest.mark.parametrize(
    "change",
    [
        {"signature": "flip"},
        {"meaning": "authored"},
        {"reason": "another reason"},
        {"signed_at": "2020-01-01T00:00:00.000000+00:00"},
    ],
)
def test_tampered_signature_event_is_flagged(
    store: Store, alice_dir: Path, run_id: str, change: dict[str, str]
) -> None:
    original = sign(
        store,
        run_id,
        meaning="approved",
        reason="ok",
        passphrase=ALICE_PASS,
        identity_dir=alice_dir,
    )
    details = dict(original.details)
    reason = original.reason
    if "signature" in change:
        raw = bytearray(base64.b64decode(details["signature"]))
        raw[0] ^= 0x01
        details["signature"] = base64.b64encode(bytes(raw)).decode()
    elif "reason" in change:
        reason = change["reason"]
    else:
        details.update(change)
    tampered = store.audit(
        "signature",
        original.objects,
        reason=reason,
        details=details,
        principal=_as(alice_dir, ALICE_PASS),
    )
    problems = check_signatures(store.audit_events())
    assert [s for s, _ in problems] == [tampered.seq] and "does not verify" in problems[0][1]


def test_a_key_enrolled_again_under_another_name_is_refused(store: Store, alice_dir: Path) -> None:
    alice = load_identity(alice_dir)
    with pytest.raises(IdentityError, match="already enrolled"):
        store.identities.enroll(
            name="Mallory Jones",
            email="mallory@example.org",
            public_key=alice.public_key,
            role="approver",
            auth=AUTH_PASSPHRASE,
        )
    with pytest.raises(QeMLflowError, match=r"store\.identities"):
        store.audit("identity.registered", {"identity": alice.fingerprint})
