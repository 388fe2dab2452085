"""Identities and electronic signatures recorded in the store's audit log.

:mod:`~qemlflow.audit.identity` creates and unlocks a user's Ed25519 signing key;
:mod:`~qemlflow.audit.signatures` signs stored objects and checks signatures.

Examples
--------
>>> from qemlflow.audit import MEANINGS
>>> MEANINGS
('approved', 'reviewed', 'authored')
"""

from __future__ import annotations

from qemlflow.audit.errors import IdentityError, SignatureError
from qemlflow.audit.identity import (
    Identity,
    identity_dir,
    init_identity,
    load_identity,
    load_signing_key,
)
from qemlflow.audit.signatures import (
    MEANINGS,
    AuditCheck,
    Meaning,
    check_signatures,
    check_signed_objects,
    object_digest,
    register_identity,
    run_digest,
    sign,
    signature_checks,
    signatures_for,
)

__all__ = [
    "MEANINGS",
    "AuditCheck",
    "Identity",
    "IdentityError",
    "Meaning",
    "SignatureError",
    "check_signatures",
    "check_signed_objects",
    "identity_dir",
    "init_identity",
    "load_identity",
    "load_signing_key",
    "object_digest",
    "register_identity",
    "run_digest",
    "sign",
    "signature_checks",
    "signatures_for",
]
