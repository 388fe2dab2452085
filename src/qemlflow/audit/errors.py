"""Errors raised by identities and electronic signatures."""

from __future__ import annotations

from qemlflow.errors import QeMLflowError

__all__ = ["IdentityError", "SignatureError"]


class IdentityError(QeMLflowError):
    """A signing identity is missing, malformed, or its key cannot be unlocked.

    Examples
    --------
    >>> str(IdentityError("no identity in /tmp/x", "run `qemlflow identity init`"))
    'no identity in /tmp/x; run `qemlflow identity init`'
    """


class SignatureError(QeMLflowError):
    """A signature cannot be made as asked (unknown meaning, unsignable object, ...)."""
