"""Identities and electronic signatures recorded in the store's audit log.

:mod:`~qemlflow.audit.identity` creates and unlocks a user's Ed25519 signing key;
:mod:`~qemlflow.audit.signatures` signs stored objects and checks signatures;
:mod:`~qemlflow.audit.session` says who acts on a store. The names below are imported on
first use, so that ``qemlflow.audit.errors`` (which the store imports) loads neither the
cryptography library nor the store.

Examples
--------
>>> from qemlflow.audit import MEANINGS
>>> MEANINGS
('approved', 'reviewed', 'authored')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "AuthorityError": "qemlflow.audit.errors",
    "IdentityError": "qemlflow.audit.errors",
    "SignatureError": "qemlflow.audit.errors",
    "Identity": "qemlflow.audit.identity",
    "identity_dir": "qemlflow.audit.identity",
    "init_identity": "qemlflow.audit.identity",
    "load_identity": "qemlflow.audit.identity",
    "load_signing_key": "qemlflow.audit.identity",
    "MEANINGS": "qemlflow.audit.signatures",
    "AuditCheck": "qemlflow.audit.signatures",
    "Meaning": "qemlflow.audit.signatures",
    "check_signatures": "qemlflow.audit.signatures",
    "check_signed_objects": "qemlflow.audit.signatures",
    "object_digest": "qemlflow.audit.signatures",
    "run_digest": "qemlflow.audit.signatures",
    "sign": "qemlflow.audit.signatures",
    "signature_checks": "qemlflow.audit.signatures",
    "signatures_for": "qemlflow.audit.signatures",
}

__all__ = [
    "MEANINGS",
    "AuditCheck",
    "AuthorityError",
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
    "run_digest",
    "sign",
    "signature_checks",
    "signatures_for",
]

if TYPE_CHECKING:
    from qemlflow.audit.errors import AuthorityError, IdentityError, SignatureError
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
        run_digest,
        sign,
        signature_checks,
        signatures_for,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qemlflow.audit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
