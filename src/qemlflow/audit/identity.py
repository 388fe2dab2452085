"""A user's signing identity: a name, an email and a passphrase-protected Ed25519 key.

The identity lives in one folder, ``$QEMLFLOW_IDENTITY_DIR`` or ``~/.config/qemlflow``:

- ``identity.json`` - the public part: ``name``, ``email``, ``public_key`` (the raw
  32-byte Ed25519 public key, base64), ``fingerprint`` (sha256 hex of the raw public key)
  and ``created_at``; the name and email are normalized and look-alikes refused
  (:mod:`qemlflow.audit.emails`). ``qemlflow identity show --json`` prints it for an admin
  to enroll (``qemlflow identity enroll FILE --role R``): a store trusts only enrolled keys;
  once unlocked (:mod:`qemlflow.audit.unlock`, :mod:`qemlflow.audit.agent`) it signs the
  events it writes.
- ``signing_key.pem`` - the private key, PKCS#8 PEM encrypted with the passphrase
  (file mode 0600). It never leaves this folder and is never stored unencrypted.

Examples
--------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> alice = init_identity("Alice Smith", "alice@example.org", "correct horse", directory=folder)
>>> alice.display
'Alice Smith <alice@example.org>'
>>> load_identity(folder) == alice
True
>>> len(load_signing_key("correct horse", folder).sign(b"data"))
64
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from qemlflow.audit.emails import normalize_email, normalize_name
from qemlflow.audit.errors import IdentityError
from qemlflow.store.keys import sha256_hex
from qemlflow.store.records import utc_now

__all__ = [
    "IDENTITY_DIR_ENV",
    "IDENTITY_FILE",
    "MIN_PASSPHRASE_LENGTH",
    "SIGNING_KEY_FILE",
    "Identity",
    "fingerprint_of",
    "identity_dir",
    "init_identity",
    "load_identity",
    "load_signing_key",
    "read_identity_file",
    "read_passphrase_fd",
    "write_identity",
    "write_private",
]

IDENTITY_DIR_ENV = "QEMLFLOW_IDENTITY_DIR"
IDENTITY_FILE = "identity.json"
SIGNING_KEY_FILE = "signing_key.pem"
MIN_PASSPHRASE_LENGTH = 8
_INIT_FIX = "create one with `qemlflow identity init`"
_MAX_PASSPHRASE_BYTES = 4096


def identity_dir() -> Path:
    """Return the identity folder: ``$QEMLFLOW_IDENTITY_DIR`` or ``~/.config/qemlflow``.

    Examples
    --------
    >>> identity_dir().is_absolute()
    True
    """
    configured = os.environ.get(IDENTITY_DIR_ENV)
    folder = Path(configured) if configured else Path("~/.config/qemlflow")
    return folder.expanduser().absolute()


def fingerprint_of(public_key: bytes) -> str:
    """Return the fingerprint of a raw Ed25519 public key: its sha256, lowercase hex.

    Examples
    --------
    >>> fingerprint_of(bytes(32))[:16]
    '66687aadf862bd77'
    """
    return sha256_hex(public_key)


@dataclass(frozen=True)
class Identity:
    """The public part of a signing identity, as ``identity.json`` holds it.

    Examples
    --------
    >>> key = bytes(32)
    >>> who = Identity("Alice", "alice@example.org", base64.b64encode(key).decode(),
    ...                fingerprint_of(key))
    >>> who.display
    'Alice <alice@example.org>'
    """

    name: str
    email: str
    public_key: str
    fingerprint: str
    created_at: str = ""

    @property
    def display(self) -> str:
        """Return ``"Name <email>"``, the form audit events use for actors."""
        return f"{self.name} <{self.email}>"

    @property
    def public_key_bytes(self) -> bytes:
        """Return the raw 32-byte Ed25519 public key."""
        return base64.b64decode(self.public_key, validate=True)

    def to_dict(self) -> dict[str, str]:
        """Return the identity as ``identity.json`` stores it."""
        return asdict(self)


def _raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only (mode 0600).

    ``exclusive``: keep a file already at ``path`` (another process wrote it first) rather
    than replace it.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o600)  # os.open's mode is filtered by the umask
        if exclusive:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        else:
            tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # gone already after a replace


def init_identity(
    name: str,
    email: str,
    passphrase: str,
    *,
    directory: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Identity:
    """Create a new Ed25519 signing identity and return its public part.

    Parameters
    ----------
    name, email
        Who signs; signatures show ``"name <email>"``.
    passphrase
        Encrypts the private key (at least :data:`MIN_PASSPHRASE_LENGTH` characters);
        it is needed for every signature and cannot be recovered.
    directory
        The identity folder; default :func:`identity_dir`.
    overwrite
        Replace an existing identity. Its key is lost: signatures it made stay valid,
        but a store that bound the email to the old key flags the new key as a takeover.

    Raises
    ------
    IdentityError
        The passphrase is too short, the name or email is malformed or a look-alike
        (see :mod:`qemlflow.audit.emails`), or an identity already exists and
        ``overwrite`` is false.
    """
    name, email = normalize_name(name), normalize_email(email)
    folder = Path(directory).expanduser() if directory is not None else identity_dir()
    if not overwrite and (
        (folder / IDENTITY_FILE).exists() or (folder / SIGNING_KEY_FILE).exists()
    ):
        raise IdentityError(
            f"an identity already exists in {folder}",
            "keep using it, or pass overwrite (`--force`) to replace it and lose its key",
        )
    return write_identity(folder, name, email, Ed25519PrivateKey.generate(), passphrase)


def write_identity(
    folder: str | os.PathLike[str],
    name: str,
    email: str,
    key: Ed25519PrivateKey,
    passphrase: str,
) -> Identity:
    """Write ``key`` encrypted with ``passphrase`` and its public part into ``folder``.

    Replaces the identity files there, each atomically, the key first.

    Raises
    ------
    IdentityError
        The passphrase is too short.
    """
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise IdentityError(
            f"the passphrase is too short ({len(passphrase)} characters)",
            f"choose a passphrase of at least {MIN_PASSPHRASE_LENGTH} characters",
        )
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = _raw_public_key(key.public_key())
    identity = Identity(
        name=name,
        email=email,
        public_key=base64.b64encode(raw).decode("ascii"),
        fingerprint=fingerprint_of(raw),
        created_at=utc_now(),
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode("utf-8")),
    )
    write_private(folder / SIGNING_KEY_FILE, pem)
    text = json.dumps(identity.to_dict(), indent=2, sort_keys=True) + "\n"
    write_private(folder / IDENTITY_FILE, text.encode("utf-8"))
    return identity


def _folder(directory: str | os.PathLike[str] | None) -> Path:
    return Path(directory).expanduser() if directory is not None else identity_dir()


def load_identity(directory: str | os.PathLike[str] | None = None) -> Identity:
    """Return the public part of the identity in ``directory`` (default :func:`identity_dir`).

    Raises
    ------
    IdentityError
        There is no identity, or ``identity.json`` is malformed or its fingerprint does
        not match its public key.
    """
    path = _folder(directory) / IDENTITY_FILE
    if not path.exists():
        raise IdentityError(f"no identity in {path.parent}", _INIT_FIX)
    return read_identity_file(path)


def read_identity_file(path: str | os.PathLike[str]) -> Identity:
    """Return the public identity that ``path`` holds (``identity.json``, or the output of
    ``qemlflow identity show --json``), its fingerprint checked against its public key.

    Raises
    ------
    IdentityError
        The file is missing or malformed, or its fingerprint does not match its key.
    """
    path = Path(path)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdentityError(
            f"no identity file {path}", "give the identity.json the person sent you"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IdentityError(f"cannot read {path}: {exc}", _INIT_FIX) from None
    fields = ("name", "email", "public_key", "fingerprint")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        raise IdentityError(
            f"{path} is not an identity file (it needs {', '.join(fields)})", _INIT_FIX
        )
    identity = Identity(**{f: data[f] for f in fields}, created_at=str(data.get("created_at", "")))
    try:
        raw = identity.public_key_bytes
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32 or fingerprint_of(raw) != identity.fingerprint:
        raise IdentityError(
            f"{path} is damaged: its fingerprint does not match its public key",
            "restore it from a backup or create a new identity with `qemlflow identity init`",
        )
    return identity


def load_signing_key(
    passphrase: str, directory: str | os.PathLike[str] | None = None
) -> Ed25519PrivateKey:
    """Unlock and return the private signing key of the identity in ``directory``.

    Raises
    ------
    IdentityError
        There is no key, the passphrase is wrong, the key is not an encrypted Ed25519 key,
        or it does not belong to the public key in ``identity.json``.
    """
    identity = load_identity(directory)
    path = _folder(directory) / SIGNING_KEY_FILE
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"the signing key {path} is missing", _INIT_FIX) from None
    except OSError as exc:
        raise IdentityError(f"cannot read the signing key {path}: {exc}", _INIT_FIX) from None
    if b"ENCRYPTED" not in pem:
        raise IdentityError(
            f"the signing key {path} is not encrypted",
            "create a new identity with `qemlflow identity init --force`",
        )
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise IdentityError(
            f"wrong passphrase for the signing key of {identity.display}",
            "type the passphrase given to `qemlflow identity init`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"the signing key {path} is not an Ed25519 key", _INIT_FIX)
    if _raw_public_key(key.public_key()) != identity.public_key_bytes:
        raise IdentityError(
            f"the signing key {path} does not belong to {identity.display}",
            "restore the pair from a backup or create a new identity",
        )
    return key


def read_passphrase_fd(fd: int) -> str:
    """Read a passphrase from file descriptor ``fd``: its first line, without the newline.

    For scripts and tests (``--passphrase-fd 3 3<secret``); the descriptor is left open.

    Raises
    ------
    IdentityError
        The descriptor cannot be read, or gives no passphrase.
    """
    data = b""
    try:
        while b"\n" not in data and len(data) <= _MAX_PASSPHRASE_BYTES:
            chunk = os.read(fd, 1024)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise IdentityError(
            f"cannot read a passphrase from file descriptor {fd} ({exc.strerror})",
            "give a descriptor that is open for reading (e.g. `--passphrase-fd 3 3<file`)",
        ) from None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        raise IdentityError(
            f"file descriptor {fd} gives no passphrase", "write the passphrase as its first line"
        )
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityError(
            f"the passphrase from file descriptor {fd} is not UTF-8 text",
            "write the passphrase as UTF-8",
        ) from None
