"""Who acts: the identity that signs a process's audit events in a store.

:func:`resolve_principal` tries, in this order, and the first key *enrolled* in the store
(active, not revoked) wins:

1. a service key: the unencrypted PEM file named by ``$QEMLFLOW_SERVICE_KEY_FILE``
   (unattended CI; an admin enrolls it with ``qemlflow identity service``);
2. the passphrase identity of the identity folder, unlocked
   (:func:`qemlflow.audit.unlock.unlocked_principal`);
3. the key of the operating-system account (``account.json`` and ``account_key.pem`` in
   the identity folder, mode 0600, unencrypted): made on demand when a store has no owner
   yet, so that the first command on a fresh machine needs no setup step and makes its
   user the store's owner.

None enrolled: :class:`~qemlflow.audit.errors.AuthorityError`, naming the enroll command.
``$QEMLFLOW_ACTOR`` decides nothing.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from qemlflow.audit.errors import AuthorityError, IdentityError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from qemlflow.audit.principal import Principal
    from qemlflow.store.store import Store

__all__ = [
    "ACCOUNT_FILE",
    "ACCOUNT_KEY_FILE",
    "SERVICE_KEY_ENV",
    "account_principal",
    "principal_for",
    "resolve_principal",
    "service_principal",
    "write_service_key",
]

SERVICE_KEY_ENV = "QEMLFLOW_SERVICE_KEY_FILE"
ACCOUNT_FILE = "account.json"
ACCOUNT_KEY_FILE = "account_key.pem"

_KEYS: dict[tuple[str, int], Principal] = {}  # (path, mtime): loading a key is not free


def _account_names() -> tuple[str, str]:
    """The OS account's user name and its email ``user@host`` (normalized)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError, ImportError):  # no login name (containers, odd uids)
        user = ""
    local = re.sub(r"[^A-Za-z0-9._-]", "", user).strip(".") or "user"
    host = socket.gethostname().strip().lower().rstrip(".")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", host):
        host = "localhost"
    if "." not in host:  # an email domain has two labels at least
        host += ".local"
    return user.strip() or local, f"{local}@{host}"


def _load_pem(path: Path, name: str, email: str, auth: str) -> Principal:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qemlflow.audit.principal import Principal

    try:
        stat = path.stat()
        cache_key = (str(path), stat.st_mtime_ns)
        if cache_key in _KEYS:
            return _KEYS[cache_key]
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise IdentityError(
            f"cannot read the key {path}: {exc}",
            "point at the unencrypted Ed25519 PEM file the key was written to",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"the key {path} is not an Ed25519 key", "use a key QeMLflow wrote")
    principal = Principal.from_private_key(key, name, email, auth)
    _KEYS[cache_key] = principal
    return principal


def _write_new_key(path: Path) -> None:
    """Write a new unencrypted Ed25519 key to ``path`` (0600), unless one is there."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    from qemlflow.audit.identity import write_private

    write_private(path, pem, exclusive=True)  # another process made one first: keep it


def account_principal(
    identity_dir: str | os.PathLike[str] | None = None, *, create: bool = False
) -> Principal | None:
    """Return the OS account's principal (auth ``os-account``), or ``None`` when it has no
    key yet and ``create`` is false.

    The key is ``account_key.pem`` (unencrypted, mode 0600) in the identity folder;
    ``account.json`` holds its public part: ``name`` (the OS user), ``email``
    (``user@host``), ``public_key``, ``fingerprint``, ``created_at``.
    """
    from qemlflow.audit.identity import identity_dir as default_dir
    from qemlflow.audit.principal import AUTH_ACCOUNT
    from qemlflow.store.records import utc_now

    folder = Path(identity_dir).expanduser() if identity_dir is not None else default_dir()
    key_path, info_path = folder / ACCOUNT_KEY_FILE, folder / ACCOUNT_FILE
    if not key_path.is_file():
        if not create:
            return None
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new_key(key_path)
    name, email = _account_names()
    principal = _load_pem(key_path, name, email, AUTH_ACCOUNT)
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("fingerprint") != principal.fingerprint:
        info = {
            "name": name,
            "email": email,
            "public_key": principal.public_key,
            "fingerprint": principal.fingerprint,
            "created_at": utc_now(),
        }
        tmp = info_path.with_name(f".{info_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(info_path)
    return principal


def service_principal() -> Principal | None:
    """Return the principal of ``$QEMLFLOW_SERVICE_KEY_FILE`` (auth ``service-key``), or
    ``None`` when unset. Its name and email come from the store's enrollment."""
    from qemlflow.audit.principal import AUTH_SERVICE

    configured = os.environ.get(SERVICE_KEY_ENV, "").strip()
    if not configured:
        return None
    path = Path(configured).expanduser()
    return _load_pem(path, "service", f"service@{path.stem or 'key'}.invalid", AUTH_SERVICE)


def write_service_key(path: str | os.PathLike[str]) -> str:
    """Write a new service key to ``path`` (unencrypted PEM, mode 0600) and return its
    public key (base64), for an admin to enroll; refuses to overwrite a file.

    Raises
    ------
    IdentityError
        ``path`` exists already, or cannot be written.
    """
    target = Path(path).expanduser()
    if target.exists():
        raise IdentityError(f"{target} exists already", "choose a new file for the service key")
    try:
        _write_new_key(target)
    except OSError as exc:
        raise IdentityError(
            f"cannot write {target}: {exc.strerror}", "choose a writable path"
        ) from None
    from qemlflow.audit.principal import AUTH_SERVICE

    return _load_pem(target, "service", "service@key.invalid", AUTH_SERVICE).public_key


def _candidates() -> Iterator[Principal]:
    from qemlflow.audit.identity import identity_dir
    from qemlflow.audit.unlock import unlocked_principal

    service = service_principal()
    if service is not None:
        yield service
    unlocked = unlocked_principal(identity_dir())
    if unlocked is not None:
        yield unlocked
    account = account_principal(identity_dir())
    if account is not None:
        yield account


def principal_for(conn: Connection) -> Principal:
    """Return who acts on the store of ``conn`` (see the module for the order).

    Raises
    ------
    AuthorityError
        No candidate key is enrolled in a store that has an owner.
    IdentityError
        A key file named by the environment cannot be read, or a wrong passphrase.
    """
    from qemlflow.store.identities import enrolled_principal, has_owner, not_enrolled_error

    first: Principal | None = None
    for candidate in _candidates():
        first = first or candidate
        enrolled = enrolled_principal(conn, candidate)
        if enrolled is not None:
            return enrolled
    if not has_owner(conn):
        from qemlflow.audit.identity import identity_dir

        account = account_principal(identity_dir(), create=True)
        assert account is not None
        return account
    if first is None:
        name, email = _account_names()
        raise AuthorityError(
            f"you ({name} <{email}>) have no identity enrolled in this store",
            "create one with `qemlflow identity init` and ask an admin to run "
            "`qemlflow identity enroll <path of your identity.json> --role contributor`",
        )
    raise not_enrolled_error(first, conn)


def resolve_principal(store: Store) -> Principal:
    """Return who acts on ``store``: see the module for the order tried.

    Raises
    ------
    AuthorityError
        None of the candidate keys is enrolled in the store (which has an owner).
    """
    with store.db.reading() as conn:
        return principal_for(conn)
