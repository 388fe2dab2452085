"""Who acts: an enrolled identity whose key has been unlocked, and how it was unlocked.

Every audit event is signed by the *principal* of the process that writes it. A principal
is the public part of an identity (name, email, Ed25519 public key and its fingerprint), a
way to sign with its private key (in this process, or through the unlock agent), and the
authentication method that unlocked it:

- ``"passphrase"``: a passphrase-protected key, unlocked by its holder (a prompt, the unlock
  agent, or a passphrase handed over non-interactively); the only method that may make
  meaningful signatures (approvals);
- ``"os-account"``: the key of the operating-system account, protected by file permissions
  (mode 0600), made when the account first creates a store: routine work only;
- ``"service-key"``: the key of an unattended service (CI), enrolled by an admin and handed
  to the service as a secret file: routine work only.

Examples
--------
>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> ada = Principal.from_private_key(
...     Ed25519PrivateKey.generate(), "Ada Lovelace", "ada@lab.org", AUTH_PASSPHRASE)
>>> ada.display, ada.auth
('Ada Lovelace <ada@lab.org>', 'passphrase')
>>> ada.verify(b"hello", ada.sign(b"hello"))
True
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from qemlflow.store.keys import sha256_hex

__all__ = [
    "AUTH_ACCOUNT",
    "AUTH_METHODS",
    "AUTH_PASSPHRASE",
    "AUTH_SERVICE",
    "Principal",
    "public_key_b64",
    "verify_signature",
]

AUTH_PASSPHRASE: Final = "passphrase"  # noqa: S105 - a method name, not a secret
AUTH_ACCOUNT: Final = "os-account"
AUTH_SERVICE: Final = "service-key"
AUTH_METHODS: Final = (AUTH_PASSPHRASE, AUTH_ACCOUNT, AUTH_SERVICE)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """Return the raw 32-byte public key, base64 (the form identities and events store)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def verify_signature(public_key: str, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``message`` by ``public_key`` (base64).

    Examples
    --------
    >>> verify_signature("not base64!", b"m", bytes(64))
    False
    """
    try:
        raw = base64.b64decode(public_key, validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


@dataclass(frozen=True)
class Principal:
    """An unlocked identity: who it is, how it signs, and how it was authenticated.

    ``signer`` signs a message with the private key (in this process, or by asking the
    unlock agent); it is left out of comparisons and of ``repr``.
    """

    name: str
    email: str
    public_key: str
    fingerprint: str
    auth: str
    signer: Callable[[bytes], bytes] = field(compare=False, repr=False)

    @classmethod
    def from_private_key(
        cls, key: Ed25519PrivateKey, name: str, email: str, auth: str
    ) -> Principal:
        """Return the principal that signs with ``key`` in this process."""
        public = public_key_b64(key.public_key())
        return cls(
            name=name,
            email=email,
            public_key=public,
            fingerprint=sha256_hex(base64.b64decode(public)),
            auth=auth,
            signer=key.sign,
        )

    @property
    def display(self) -> str:
        """``"Name <email>"``: the actor that audit events show."""
        return f"{self.name} <{self.email}>"

    def sign(self, message: bytes) -> bytes:
        """Return the Ed25519 signature of ``message`` (64 bytes)."""
        return self.signer(message)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this principal's signature of ``message``."""
        return verify_signature(self.public_key, message, signature)
