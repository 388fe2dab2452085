"""Errors raised by identities and electronic signatures."""

from __future__ import annotations

from qemlflow.errors import QeMLflowError

__all__ = ["AuthorityError", "IdentityError", "SignatureError"]


class IdentityError(QeMLflowError):
    """A signing identity is missing, malformed, or its key cannot be unlocked.

    Examples
    --------
    >>> str(IdentityError("no identity in /tmp/x", "run `qemlflow identity init`"))
    'no identity in /tmp/x; run `qemlflow identity init`'
    """


class SignatureError(QeMLflowError):
    """A signature cannot be made as asked (unknown meaning, unsignable object, ...)."""


class AuthorityError(QeMLflowError):
    """The acting identity may not do this: it is not enrolled, its key is revoked, or its
    role (or the way it was unlocked) does not allow the action.

    Examples
    --------
    >>> str(AuthorityError("model.promoted needs role approver or higher; a@b.org is a "
    ...                    "contributor", "ask an admin"))
    'model.promoted needs role approver or higher; a@b.org is a contributor; ask an admin'
    """
