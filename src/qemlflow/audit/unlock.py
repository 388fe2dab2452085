"""Unlocking a passphrase identity without a prompt: for scripts, CI and tests.

The passphrase of the identity in the identity folder comes from, in this order:

- ``$QEMLFLOW_PASSPHRASE`` (simple, but visible to the process's environment);
- ``$QEMLFLOW_PASSPHRASE_FD``: a file descriptor number the passphrase is read from, once
  per process (``qemlflow run ... 3< passphrase.txt`` with ``QEMLFLOW_PASSPHRASE_FD=3``).

With neither, the unlock agent (``qemlflow identity unlock``, :mod:`qemlflow.audit.agent`)
signs for the identity while it runs; without an agent either, no passphrase identity is
unlocked and the process acts as the next candidate (see
:func:`qemlflow.audit.session.resolve_principal`).

Examples
--------
>>> import os, tempfile
>>> from qemlflow.audit.identity import init_identity
>>> folder = tempfile.mkdtemp()
>>> _ = init_identity("Ada Lovelace", "ada@lab.org", "correct horse", directory=folder)
>>> os.environ[PASSPHRASE_ENV] = "correct horse"
>>> unlocked_principal(folder).display, unlocked_principal(folder).auth
('Ada Lovelace <ada@lab.org>', 'passphrase')
>>> del os.environ[PASSPHRASE_ENV]
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from qemlflow.audit.errors import IdentityError

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal

__all__ = ["PASSPHRASE_ENV", "PASSPHRASE_FD_ENV", "environment_passphrase", "unlocked_principal"]

PASSPHRASE_ENV = "QEMLFLOW_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
PASSPHRASE_FD_ENV = "QEMLFLOW_PASSPHRASE_FD"  # noqa: S105 - a variable name

_FD_PASSPHRASES: dict[int, str] = {}  # a descriptor can be read once: keep what it gave
_UNLOCKED: dict[tuple[str, str, str], Principal] = {}  # unlocking costs a key derivation


def _read_fd(number: int) -> str:
    if number not in _FD_PASSPHRASES:
        chunks: list[bytes] = []
        try:
            while chunk := os.read(number, 4096):
                chunks.append(chunk)
        except OSError as exc:
            raise IdentityError(
                f"cannot read the passphrase from file descriptor {number}: {exc.strerror}",
                f"open it for reading (`3< passphrase.txt` with {PASSPHRASE_FD_ENV}=3)",
            ) from None
        text = b"".join(chunks).decode("utf-8")
        _FD_PASSPHRASES[number] = text[:-1] if text.endswith("\n") else text
    return _FD_PASSPHRASES[number]


def environment_passphrase() -> str | None:
    """Return the passphrase handed over non-interactively, or ``None``.

    Raises
    ------
    IdentityError
        ``$QEMLFLOW_PASSPHRASE_FD`` is not a readable descriptor number.
    """
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        return passphrase
    fd = os.environ.get(PASSPHRASE_FD_ENV, "").strip()
    if not fd:
        return None
    try:
        number = int(fd)
    except ValueError:
        raise IdentityError(
            f"{PASSPHRASE_FD_ENV}={fd!r} is not a file descriptor number",
            f"set {PASSPHRASE_FD_ENV} to the number of a descriptor open for reading",
        ) from None
    return _read_fd(number)


def unlocked_principal(identity_dir: str | os.PathLike[str] | None = None) -> Principal | None:
    """Return the passphrase identity of ``identity_dir``, unlocked, or ``None``.

    ``None`` when the folder holds no identity, no passphrase is at hand and no unlock
    agent runs for it (see the module). A key unlocked here is kept for the rest of the
    process; an agent's key stays in the agent.

    Raises
    ------
    IdentityError
        The passphrase given is wrong, or the key files are damaged.
    """
    from qemlflow.audit.identity import IDENTITY_FILE
    from qemlflow.audit.identity import identity_dir as default_dir

    folder = Path(identity_dir).expanduser() if identity_dir is not None else default_dir()
    if not (folder / IDENTITY_FILE).is_file():
        return None
    passphrase = environment_passphrase()
    if passphrase is None:
        from qemlflow.audit.agent import agent_principal

        return agent_principal(folder)
    from qemlflow.audit.identity import load_identity, load_signing_key
    from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal

    identity = load_identity(folder)
    token = hashlib.sha256(passphrase.encode("utf-8")).hexdigest()
    cache_key = (str(folder.absolute()), identity.fingerprint, token)
    if cache_key not in _UNLOCKED:
        key = load_signing_key(passphrase, folder)
        _UNLOCKED[cache_key] = Principal.from_private_key(
            key, identity.name, identity.email, AUTH_PASSPHRASE
        )
    return _UNLOCKED[cache_key]
