"""Who may do what: the roles of a store's identities and the least role each action needs.

Roles are ordered, each including the ones before it: ``viewer`` (reads, writes nothing)
< ``contributor`` (datasets, runs, registrations, routine work) < ``approver`` (approves
and reviews, moves production aliases) < ``admin`` (identities, API keys, garbage
collection, restore). The check runs in one place, inside
:func:`~qemlflow.store.audit.append_event`, against the live identity tables, so no
command can forget it; ``audit verify`` runs it again over the chain replayed alone (the
role an identity held at that event's seq).

Examples
--------
>>> required_role("run.started", {}), required_role("model.promoted", {})
('contributor', 'approver')
>>> required_role("signature", {"meaning": "approved"})
'approver'
>>> authority_problem("run.started", {}, role="viewer", auth="os-account", email="a@b.org")
'run.started needs role contributor or higher; a@b.org is a viewer'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "ACTION_ROLES",
    "DEFAULT_ROLE",
    "PASSPHRASE_ONLY_MEANINGS",
    "ROLES",
    "authority_fix",
    "authority_problem",
    "required_role",
    "role_at_least",
]

ROLES: Final = ("viewer", "contributor", "approver", "admin")
"""The roles, least to most powerful."""

DEFAULT_ROLE: Final = "contributor"
"""The role an action not named in :data:`ACTION_ROLES` needs."""

ACTION_ROLES: Final[dict[str, str]] = {
    # identities and credentials
    "store.owner": "admin",
    "identity.enrolled": "admin",
    "identity.role_changed": "admin",
    "identity.revoked": "admin",  # or the holder itself, see required_role
    "identity.key_rotated": "viewer",  # only ever the holder: signed by the old key
    "identity.registered": "admin",  # legacy trust-on-first-use events (never written now)
    "apikey.created": "admin",
    "apikey.revoked": "admin",
    # store care that destroys or replaces data
    "store.gc": "admin",
    "store.restore": "admin",
    "store.backup": "contributor",
    # the registry: moving an alias serves another model
    "model.promoted": "approver",
    "model.rolled_back": "approver",
    "model.alias_removed": "approver",
    # monitoring of served models
    "monitor.alert": "contributor",
    "model.registered": "contributor",
    "model.promotion_refused": "contributor",
    "model.auto_rollback": "contributor",  # the server refusing a broken version
    "model.trusted": "contributor",
    # data and runs
    "dataset.added": "contributor",
    "run.started": "contributor",
    "run.finished": "contributor",
    "run.failed": "contributor",
    "run.aborted": "contributor",
    "screen.completed": "contributor",
    "explain.completed": "contributor",
    "suggest.completed": "contributor",
    # electronic signatures: by meaning, see required_role
    "signature": "contributor",
}
"""The least role each audited action needs (actions not listed: :data:`DEFAULT_ROLE`)."""

PASSPHRASE_ONLY_MEANINGS: Final = ("approved", "reviewed", "authored")
"""Signature meanings only a passphrase-unlocked key may sign (never an OS or service key)."""

_MEANING_ROLES: Final = {"approved": "approver", "reviewed": "approver", "authored": "contributor"}


def role_at_least(role: str | None, needed: str) -> bool:
    """Whether ``role`` includes ``needed`` (an unknown or missing role includes nothing).

    Examples
    --------
    >>> role_at_least("admin", "approver"), role_at_least("viewer", "contributor")
    (True, False)
    """
    if role not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


def required_role(action: str, details: Mapping[str, Any], *, email: str | None = None) -> str:
    """Return the least role that may append ``action`` with these ``details``.

    A signature needs the role of its meaning (``approved``/``reviewed``: approver,
    ``authored``: contributor); an identity may revoke its own key whatever its role.
    """
    if action == "signature":
        return _MEANING_ROLES.get(str(details.get("meaning")), "approver")
    if (
        action == "identity.revoked"
        and email is not None
        and str(details.get("email", "")).casefold() == email.casefold()
    ):
        return "viewer"
    return ACTION_ROLES.get(action, DEFAULT_ROLE)


def authority_problem(
    action: str, details: Mapping[str, Any], *, role: str | None, auth: str, email: str
) -> str | None:
    """Return why ``email`` (holding ``role``, authenticated by ``auth``) may not append
    ``action``, or ``None`` when it may."""
    if action == "signature" and auth != "passphrase":
        return (
            f"a {details.get('meaning', '')} signature needs a passphrase-unlocked key; "
            f"{email} acts with its {auth} key"
        )
    needed = required_role(action, details, email=email)
    if role_at_least(role, needed):
        return None
    held = "not enrolled" if role is None else f"a {role}"
    return f"{action} needs role {needed} or higher; {email} is {held}"


def authority_fix(action: str, details: Mapping[str, Any], email: str) -> str:
    """Return how to get the authority :func:`authority_problem` found missing."""
    if action == "signature":
        needed = required_role(action, details)
        return (
            f"sign with your passphrase identity (`qemlflow identity unlock`), enrolled with "
            f"role {needed} or higher by an admin (`qemlflow identity role {email} {needed}`)"
        )
    needed = required_role(action, details, email=email)
    return (
        f"ask an admin to run `qemlflow identity role {email} {needed} --reason ...`, "
        "or act as an identity that holds it"
    )
