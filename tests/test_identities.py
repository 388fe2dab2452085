"""Enrolled identities (``store.identities``): the owner, enrollment by an admin, look-alikes
refused, roles, rotation, revocation, and who acts (``resolve_principal``)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.identities_helpers import PASSPHRASE, enroll, make_identity, person

from qemlflow.audit.errors import AuthorityError, IdentityError
from qemlflow.audit.principal import (
    AUTH_ACCOUNT,
    AUTH_PASSPHRASE,
    AUTH_SERVICE,
    Principal,
    public_key_b64,
)
from qemlflow.audit.session import resolve_principal, write_service_key
from qemlflow.store import Store, schema
from qemlflow.store.audit import next_event
from qemlflow.store.identities import rotation_message


def _url(store: Store) -> str | None:
    if store.backend == "sqlite":
        return None
    return store._engine.url.render_as_string(hide_password=False)


def _as(store: Store, principal: Principal) -> Store:
    return Store.open(store.root, database_url=_url(store), principal=principal)


def _new_key() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    return key, public_key_b64(key.public_key())


# -- the owner -------------------------------------------------------------------------


def test_the_first_write_makes_the_os_account_the_owner(store: Store) -> None:
    folder = Path(os.environ["QEMLFLOW_IDENTITY_DIR"])
    assert store.identities.owner() is None and store.audit_events() == []
    assert not (folder / "account_key.pem").exists()  # reading needs no identity
    store.create_run("r", {}, 0, None)
    key_file, info_file = folder / "account_key.pem", folder / "account.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"ENCRYPTED" not in key_file.read_bytes()
    info = json.loads(info_file.read_text())
    owner = store.identities.owner()
    assert owner is not None
    assert (owner.role, owner.auth, owner.kind, owner.status) == (
        "admin",
        AUTH_ACCOUNT,
        "person",
        "active",
    )
    assert (owner.email, owner.fingerprint) == (info["email"], info["fingerprint"])
    first = store.audit_events()[0]
    assert first.action == "store.owner" and first.signer == owner.fingerprint
    assert first.details["role"] == "admin" and first.details["public_key"] == owner.public_key
    assert store.principal.display == owner.display == first.actor
    assert store.verify_audit().ok


def test_another_os_account_is_not_enrolled(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_run("r", {}, 0, None)
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(tmp_path / "someone-else"))
    with _as(store, None) as other:  # type: ignore[arg-type]
        with pytest.raises(AuthorityError, match="qemlflow identity enroll"):
            other.create_run("r2", {}, 0, None)
        with pytest.raises(AuthorityError, match="no identity enrolled in this store"):
            resolve_principal(other)
    assert [r.name for r in store.list_runs()] == ["r"]


# -- enrollment ------------------------------------------------------------------------


def test_an_admin_enrolls_and_the_chain_records_it(store: Store, tmp_path: Path) -> None:
    folder = make_identity(tmp_path / "ada", "Ada Lovelace", "Ada@LAB.org")
    record = enroll(store, folder, "approver")
    assert (record.email, record.role, record.auth) == ("Ada@lab.org", "approver", AUTH_PASSPHRASE)
    assert store.identities.get("ada@lab.org") == record  # case does not matter
    assert store.identities.by_fingerprint(record.fingerprint) == record
    assert store.identities.role_of("ADA@lab.org") == "approver"
    event = store.audit_events(action="identity.enrolled")[0]
    assert event.actor == store.principal.display  # signed by the admin
    assert event.details == {
        "name": "Ada Lovelace",
        "email": "Ada@lab.org",
        "public_key": record.public_key,
        "fingerprint": record.fingerprint,
        "auth": AUTH_PASSPHRASE,
        "role": "approver",
        "kind": "person",
    }
    assert store.verify_audit().ok


@pytest.mark.parametrize(
    ("email", "why"),
    [
        ("ada@lab.org.", "ends its domain with a dot"),
        ("\u0430da@lab.org", "not plain ASCII"),  # a Cyrillic a
        ("ada@1ab.org", "looks like the enrolled ada@lab.org"),
        ("ADA@lab.org", "already enrolled"),
        ("ada@lab.org", "already enrolled"),
    ],
)
def test_look_alike_emails_are_refused(store: Store, tmp_path: Path, email: str, why: str) -> None:
    person(store, tmp_path / "ada", "Ada Lovelace", "ada@lab.org", "approver")
    _, public = _new_key()
    with pytest.raises(IdentityError, match=why):
        store.identities.enroll(
            name="Someone Else", email=email, public_key=public, role="approver", auth="passphrase"
        )
    assert len(store.identities.list()) == 2  # the owner and Ada


def test_a_look_alike_name_under_another_email_is_refused(store: Store, tmp_path: Path) -> None:
    person(store, tmp_path / "ada", "Ada Lovelace", "ada@lab.org", "approver")
    _, public = _new_key()
    with pytest.raises(IdentityError, match="looks like 'Ada Lovelace'"):
        store.identities.enroll(
            name="Ada Lovelace",
            email="ada@evil.org",
            public_key=public,
            role="viewer",
            auth="passphrase",
        )
    with pytest.raises(IdentityError, match="mixes"):
        store.identities.enroll(
            name="\u0410da Lovelace",
            email="x@evil.org",
            public_key=public,
            role="viewer",
            auth="passphrase",
        )


def test_a_non_admin_cannot_enroll(store: Store, tmp_path: Path) -> None:
    approver = person(store, tmp_path / "ada", "Ada Lovelace", "ada@lab.org", "approver")
    _, public = _new_key()
    with (
        _as(store, approver) as as_ada,
        pytest.raises(AuthorityError, match=r"identity\.enrolled needs role admin or higher"),
    ):
        as_ada.identities.enroll(
            name="Eve", email="eve@lab.org", public_key=public, role="admin", auth="passphrase"
        )
    assert store.identities.get("eve@lab.org") is None


def test_a_forged_enrollment_by_a_non_admin_fails_verification(
    store: Store, tmp_path: Path
) -> None:
    approver = person(store, tmp_path / "ada", "Ada Lovelace", "ada@lab.org", "approver")
    _, public = _new_key()
    from qemlflow.store.identities import _fingerprint

    details = {
        "name": "Eve",
        "email": "eve@lab.org",
        "public_key": public,
        "fingerprint": _fingerprint(public),
        "auth": "passphrase",
        "role": "admin",
        "kind": "person",
    }
    head = store.audit_events()[-1]
    forged = next_event(
        head, "identity.enrolled", {"identity": "x"}, details=details, principal=approver
    )
    with store.db.changing() as conn:
        conn.execute(schema.audit_events.insert().values(**forged.to_dict()))
    report = store.verify_audit()
    assert not report.ok
    assert (
        "identity.enrolled needs role admin or higher; ada@lab.org is a approver"
        in report.problems[0]
    )


# -- roles -----------------------------------------------------------------------------


def test_roles_change_by_an_admin_and_verify_replays_them(store: Store, tmp_path: Path) -> None:
    bob = person(store, tmp_path / "bob", "Bob", "bob@lab.org", "contributor")
    with _as(store, bob) as as_bob:
        with pytest.raises(AuthorityError, match="needs role approver"):
            as_bob.audit("model.promoted", {"model": "ab" * 32})
        record = store.identities.set_role("bob@lab.org", "approver", reason="QA lead")
        assert record.role == "approver"
        as_bob.audit("model.promoted", {"model": "ab" * 32})
        event = store.audit_events(action="identity.role_changed")[0]
        assert event.details == {
            "email": "bob@lab.org",
            "role": "approver",
            "previous": "contributor",
        }
        assert event.reason == "QA lead"
        with pytest.raises(AuthorityError, match=r"identity\.role_changed needs role admin"):
            as_bob.identities.set_role("bob@lab.org", "admin", reason="me")
    assert store.verify_audit().ok
    owner = store.identities.owner()
    assert owner is not None
    with pytest.raises(IdentityError, match="last admin"):
        store.identities.set_role(owner.email, "viewer", reason="oops")
    with pytest.raises(IdentityError, match="unknown role"):
        store.identities.set_role("bob@lab.org", "superuser", reason="x")


# -- rotation and revocation -----------------------------------------------------------


def test_a_key_is_rotated_by_its_holder(store: Store, tmp_path: Path) -> None:
    bob = person(store, tmp_path / "bob", "Bob", "bob@lab.org", "contributor")
    new_key, new_public = _new_key()
    new_fp = Principal.from_private_key(new_key, "Bob", "bob@lab.org", AUTH_PASSPHRASE).fingerprint
    proof = base64.b64encode(new_key.sign(rotation_message("bob@lab.org", bob.fingerprint, new_fp)))
    with _as(store, bob) as as_bob:
        with pytest.raises(IdentityError, match="proof does not verify"):
            as_bob.identities.rotate(new_public, base64.b64encode(bytes(64)).decode())
        record = as_bob.identities.rotate(new_public, proof.decode(), reason="new laptop")
        assert record.fingerprint == new_fp and record.status == "active"
        with pytest.raises(AuthorityError, match="revoked"):
            as_bob.audit("model.registered", {"model": "ab" * 32})
    event = store.audit_events(action="identity.key_rotated")[0]
    assert event.signer == bob.fingerprint  # signed by the old key
    new_bob = Principal.from_private_key(new_key, "Bob", "bob@lab.org", AUTH_PASSPHRASE)
    with _as(store, new_bob) as as_new:
        assert as_new.audit("model.registered", {"model": "ab" * 32}).signer == new_fp
    assert store.verify_audit().ok
    # the old key's events written after the rotation, by hand, are flagged
    late = next_event(store.audit_events()[-1], "run.started", {"run": "x"}, principal=bob)
    with store.db.changing() as conn:
        conn.execute(schema.audit_events.insert().values(**late.to_dict()))
    assert "revoked at event" in store.verify_audit().problems[0]


def test_revocation_by_an_admin_or_the_holder(store: Store, tmp_path: Path) -> None:
    bob = person(store, tmp_path / "bob", "Bob", "bob@lab.org", "contributor")
    carol = person(store, tmp_path / "carol", "Carol", "carol@lab.org", "contributor")
    with _as(store, bob) as as_bob:
        with pytest.raises(AuthorityError, match=r"identity\.revoked needs role admin"):
            as_bob.identities.revoke("carol@lab.org", reason="spite")
        record = as_bob.identities.revoke("bob@lab.org", reason="lost my laptop")
    assert record.status == "revoked" and store.identities.role_of("bob@lab.org") is None
    revoked = store.identities.revoke(carol.fingerprint, reason="left")
    assert revoked.email == "carol@lab.org" and revoked.status == "revoked"
    events = store.audit_events(action="identity.revoked")
    assert [e.details["email"] for e in events] == ["bob@lab.org", "carol@lab.org"]
    assert store.verify_audit().ok
    # an admin enrolls Bob again with a new key
    _, public = _new_key()
    again = store.identities.enroll(
        name="Bob", email="bob@lab.org", public_key=public, role="contributor", auth="passphrase"
    )
    assert again.status == "active" and again.fingerprint != bob.fingerprint
    assert store.verify_audit().ok


# -- who acts --------------------------------------------------------------------------


def test_an_unlocked_passphrase_identity_acts_before_the_os_account(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_run("r", {}, 0, None)  # owned by the OS account
    folder = Path(os.environ["QEMLFLOW_IDENTITY_DIR"])
    make_identity(folder, "Ada Lovelace", "ada@lab.org")
    enroll(store, folder, "approver")
    with _as(store, None) as fresh:  # type: ignore[arg-type]
        assert fresh.principal.auth == AUTH_ACCOUNT  # no passphrase at hand: the account
    monkeypatch.setenv("QEMLFLOW_PASSPHRASE", PASSPHRASE)
    with _as(store, None) as fresh:  # type: ignore[arg-type]
        assert fresh.principal.auth == AUTH_PASSPHRASE
        assert fresh.principal.display == "Ada Lovelace <ada@lab.org>"
        event = fresh.audit("model.promoted", {"model": "ab" * 32})
        assert event.actor == "Ada Lovelace <ada@lab.org>"
    monkeypatch.setenv("QEMLFLOW_PASSPHRASE", "not the passphrase")
    with _as(store, None) as fresh, pytest.raises(IdentityError, match="wrong passphrase"):  # type: ignore[arg-type]
        fresh.create_run("r2", {}, 0, None)


def test_the_passphrase_comes_from_a_file_descriptor(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_run("r", {}, 0, None)
    folder = Path(os.environ["QEMLFLOW_IDENTITY_DIR"])
    make_identity(folder, "Ada Lovelace", "ada@lab.org")
    enroll(store, folder, "approver")
    read, write = os.pipe()
    os.write(write, PASSPHRASE.encode() + b"\n")
    os.close(write)
    monkeypatch.setenv("QEMLFLOW_PASSPHRASE_FD", str(read))
    try:
        with _as(store, None) as fresh:  # type: ignore[arg-type]
            assert fresh.principal.display == "Ada Lovelace <ada@lab.org>"
        with _as(store, None) as again:  # type: ignore[arg-type]
            assert again.principal.auth == AUTH_PASSPHRASE  # read once, kept
    finally:
        os.close(read)


def test_a_service_key_for_ci(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "ci.pem"
    public = write_service_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(IdentityError, match="exists already"):
        write_service_key(key_file)
    store.identities.enroll(
        name="CI runner",
        email="ci@lab.org",
        public_key=public,
        role="contributor",
        auth=AUTH_SERVICE,
        kind="service",
        reason="nightly builds",
    )
    monkeypatch.setenv("QEMLFLOW_SERVICE_KEY_FILE", str(key_file))
    with _as(store, None) as ci:  # type: ignore[arg-type]
        assert (ci.principal.display, ci.principal.auth) == ("CI runner <ci@lab.org>", AUTH_SERVICE)
        run_id = ci.create_run("nightly", {}, 0, None)
        assert ci.audit_events(object_ref=run_id)[0].actor == "CI runner <ci@lab.org>"
        with pytest.raises(AuthorityError, match="passphrase-unlocked key"):
            ci.audit("signature", {"object": run_id}, details={"meaning": "authored"})
    assert store.verify_audit().ok
