"""What an admin is told when an enrollment, role change, rotation or revocation cannot be
done: each refusal names the problem, and the store's audit trail gains no event."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.identities_helpers import person

from qemlflow.audit.errors import IdentityError
from qemlflow.audit.principal import AUTH_PASSPHRASE, public_key_b64
from qemlflow.store import Store
from qemlflow.store.identities import rotation_message


@pytest.fixture
def owned(tmp_path: Path) -> Store:
    """A SQLite store whose owner (the OS account of the test, an admin) is recorded."""
    store = Store.open(tmp_path / "store")
    store.create_run("r", {}, 0, None)
    assert store.identities.owner() is not None
    return store


def _new_key() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    return key, public_key_b64(key.public_key())


def _enroll(store: Store, public_key: str, **changes: str) -> None:
    options = {"role": "contributor", "auth": AUTH_PASSPHRASE, "kind": "person"}
    store.identities.enroll(
        name="Grace Hopper", email="grace@lab.org", public_key=public_key, **{**options, **changes}
    )


def test_enrollment_refuses_bad_keys_roles_kinds_and_auths(owned: Store) -> None:
    before = len(owned.audit_events())
    _, key = _new_key()
    with pytest.raises(IdentityError, match="not a base64 raw Ed25519 key"):
        _enroll(owned, "not-base64!")
    with pytest.raises(IdentityError, match="not a base64 raw Ed25519 key"):
        _enroll(owned, base64.b64encode(b"short").decode())
    with pytest.raises(IdentityError, match="unknown role 'owner'"):
        _enroll(owned, key, role="owner")
    with pytest.raises(IdentityError, match="unknown kind 'robot' or auth"):
        _enroll(owned, key, kind="robot")
    with pytest.raises(IdentityError, match="auth 'sms'"):
        _enroll(owned, key, auth="sms")
    assert len(owned.audit_events()) == before


def test_role_changes_need_a_known_role_and_an_active_identity(owned: Store) -> None:
    _, key = _new_key()
    _enroll(owned, key)
    with pytest.raises(IdentityError, match="unknown role 'boss'"):
        owned.identities.set_role("grace@lab.org", "boss", "promotion")
    with pytest.raises(IdentityError, match=r"no active identity nobody@lab\.org"):
        owned.identities.set_role("nobody@lab.org", "approver", "promotion")
    owned.identities.revoke("grace@lab.org", "left the lab")
    with pytest.raises(IdentityError, match=r"no active identity grace@lab\.org"):
        owned.identities.set_role("grace@lab.org", "approver", "back again")
    with pytest.raises(IdentityError, match=r"no active identity or key grace@lab\.org"):
        owned.identities.revoke("grace@lab.org", "twice")


def test_the_last_admin_cannot_be_revoked_or_demoted(owned: Store) -> None:
    owner = owned.identities.owner()
    assert owner is not None
    with pytest.raises(IdentityError):
        owned.identities.revoke(owner.fingerprint, "leaving")
    with pytest.raises(IdentityError):
        owned.identities.set_role(owner.email, "contributor", "stepping down")
    assert owned.identities.role_of(owner.email) == "admin"


def test_rotation_refuses_a_bad_key_a_bad_proof_and_a_key_in_use(
    owned: Store, tmp_path: Path
) -> None:
    ada = person(owned, tmp_path / "ada", "Ada Lovelace", "ada@lab.org")
    as_ada = Store.open(owned.root, principal=ada)
    new, new_public = _new_key()
    with pytest.raises(IdentityError, match="the new public key is malformed"):
        as_ada.identities.rotate("@@@", "proof")
    wrong = base64.b64encode(new.sign(b"something else")).decode()
    with pytest.raises(IdentityError, match="the new key's proof does not verify"):
        as_ada.identities.rotate(new_public, wrong)
    with pytest.raises(IdentityError, match="the new key's proof does not verify"):
        as_ada.identities.rotate(new_public, "not base64!")
    # A key that another identity holds already cannot become Ada's.
    taken, taken_public = _new_key()
    _enroll(owned, taken_public)
    taken_fp = owned.identities.get("grace@lab.org")
    assert taken_fp is not None
    proof = taken.sign(rotation_message("ada@lab.org", ada.fingerprint, taken_fp.fingerprint))
    with pytest.raises(IdentityError, match="is already enrolled"):
        as_ada.identities.rotate(taken_public, base64.b64encode(proof).decode())
    record = as_ada.identities.get("ada@lab.org")
    assert record is not None and record.fingerprint == ada.fingerprint
    as_ada.close()
    assert owned.verify_audit().ok
