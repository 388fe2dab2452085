"""Test helpers: passphrase identities made on disk and enrolled in a store by its owner.

Every test's stores are owned by the OS account key of the test's own identity folder
(``QEMLFLOW_IDENTITY_DIR``, set by tests/conftest.py), which is an admin: these helpers
enroll more people through it, as an admin would.
"""

from __future__ import annotations

from pathlib import Path

from qemlflow.audit.identity import init_identity, load_signing_key
from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal
from qemlflow.store import Store
from qemlflow.store.identities import IdentityRecord

PASSPHRASE = "correct horse battery staple"


def make_identity(folder: Path, name: str, email: str, passphrase: str = PASSPHRASE) -> Path:
    """Create a passphrase identity (``identity init``) in ``folder``; return the folder."""
    init_identity(name, email, passphrase, directory=folder)
    return folder


def unlock(folder: Path, passphrase: str = PASSPHRASE) -> Principal:
    """The principal of the identity in ``folder``, unlocked with its passphrase."""
    from qemlflow.audit.identity import load_identity

    identity = load_identity(folder)
    key = load_signing_key(passphrase, folder)
    return Principal.from_private_key(key, identity.name, identity.email, AUTH_PASSPHRASE)


def enroll(store: Store, folder: Path, role: str = "contributor") -> IdentityRecord:
    """Enroll the identity in ``folder`` into ``store`` with ``role`` (the store acts)."""
    from qemlflow.audit.identity import load_identity

    identity = load_identity(folder)
    return store.identities.enroll(
        name=identity.name,
        email=identity.email,
        public_key=identity.public_key,
        role=role,
        auth=AUTH_PASSPHRASE,
    )


def person(
    store: Store, folder: Path, name: str, email: str, role: str = "contributor"
) -> Principal:
    """Create, enroll and unlock a passphrase identity in one go; return its principal."""
    make_identity(folder, name, email)
    enroll(store, folder, role)
    return unlock(folder)
