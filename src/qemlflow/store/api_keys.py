"""The API keys repository: keys for the prediction service, kept as salted hashes.

A key is ``qmf_<id>_<secret>``: the id is public (it names the key in lists and audit
events), the 256-bit secret is shown once and only its hash is stored. Creating and
revoking a key append audit events in the same transaction as the row.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from qemlflow.store import schema
from qemlflow.store.audit import append_event
from qemlflow.store.errors import StoreError
from qemlflow.store.records import utc_now
from qemlflow.store.registry_records import ApiKeyRecord
from qemlflow.store.transactions import Database

__all__ = ["API_KEY_PREFIX", "ApiKeys"]

API_KEY_PREFIX = "qmf_"
_API_KEY_ID = re.compile(r"qk_[0-9a-f]{8}")
_API_KEY_SECRET = re.compile(r"[0-9a-f]{64}")
_API_KEY_HASH_TAG = b"qemlflow.api-key/1"


def _api_key_hash(key_id: str, secret: str) -> str:
    """sha256 of a tag, the key id (a per-key salt) and the 256-bit random secret.

    No slow KDF (scrypt, PBKDF2): the secret is 256 random bits, not a password, so there
    is nothing to brute-force, and a slow hash would only slow every checked request.
    """
    message = b"\0".join((_API_KEY_HASH_TAG, key_id.encode(), secret.encode()))
    return hashlib.sha256(message).hexdigest()


def _api_key_from(row: Mapping[Any, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        created_by=row["created_by"],
    )


class ApiKeys:
    """The API keys of a store (``store.api_keys``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from qemlflow.store import Store
    >>> with Store.open(Path(tempfile.mkdtemp())) as store:
    ...     record, key = store.api_keys.create("ci")
    ...     store.api_keys.check(key) == record, store.api_keys.check(key + "0")
    (True, None)
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, name: str) -> tuple[ApiKeyRecord, str]:
        """Create an API key; return its record and the key ``qmf_<id>_<secret>``.

        The key is returned this once: the store keeps only a salted sha256 of the
        256-bit random secret. Appends an ``apikey.created`` audit event (no secret in it).
        """
        name = name.strip()
        if not name or len(name) > 200 or not name.isprintable():
            raise StoreError(
                "an API key needs a name of 1 to 200 printable characters "
                "(no line breaks or control characters)",
                "name it after who or what will use it",
            )
        for _ in range(10):
            key_id, secret = f"qk_{secrets.token_hex(4)}", secrets.token_hex(32)
            values = {
                "id": key_id,
                "name": name,
                "key_hash": _api_key_hash(key_id, secret),
                "created_at": utc_now(),
                "revoked_at": None,
            }
            try:
                with self._db.writing() as conn:
                    event = append_event(
                        conn, "apikey.created", {"apikey": key_id}, details={"name": name}
                    )
                    values["created_by"] = event.actor  # the authenticated identity
                    conn.execute(insert(schema.api_keys).values(**values))
            except IntegrityError:  # the same id drawn twice: draw again
                continue
            return _api_key_from(values), f"{API_KEY_PREFIX}{key_id}_{secret}"
        raise StoreError("could not draw a unique API key id", "try again")  # pragma: no cover

    def revoke(self, key_id: str, reason: str | None = None) -> ApiKeyRecord:
        """Revoke an API key (an ``apikey.revoked`` event); revoking it again changes nothing."""
        t = schema.api_keys
        key_id = key_id.strip()
        if key_id.startswith(API_KEY_PREFIX):  # a whole key was given: keep only its id
            key_id = key_id[len(API_KEY_PREFIX) :][:11]
        with self._db.writing() as conn:
            result = conn.execute(
                update(t)
                .where(t.c.id == key_id, t.c.revoked_at.is_(None))
                .values(revoked_at=utc_now())
            )
            row = conn.execute(select(t).where(t.c.id == key_id)).first()
            if row is None:
                raise StoreError(f"no API key {key_id!r}", "list keys with `qemlflow keys list`")
            if result.rowcount == 1:
                append_event(
                    conn,
                    "apikey.revoked",
                    {"apikey": key_id},
                    reason=reason,
                    details={"name": row.name},
                )
        return _api_key_from(row._mapping)

    def check(self, presented: str) -> ApiKeyRecord | None:
        """Return the key's record when ``presented`` is a valid, unrevoked key, else ``None``.

        The hash comparison is constant-time; an unknown id costs the same hash.
        """
        body = presented.strip().removeprefix(API_KEY_PREFIX)
        key_id, separator, secret = body[:11], body[11:12], body[12:]
        if (
            not presented.strip().startswith(API_KEY_PREFIX)
            or separator != "_"
            or not _API_KEY_ID.fullmatch(key_id)
            or not _API_KEY_SECRET.fullmatch(secret)
        ):
            return None
        t = schema.api_keys
        with self._db.reading() as conn:
            row = conn.execute(select(t).where(t.c.id == key_id)).first()
        stored = "0" * 64 if row is None else str(row.key_hash)
        matches = hmac.compare_digest(_api_key_hash(key_id, secret), stored)
        if row is None or not matches or row.revoked_at is not None:
            return None
        return _api_key_from(row._mapping)

    def list(self) -> builtins.list[ApiKeyRecord]:
        """Return every API key (revoked ones too), oldest first; never a secret."""
        t = schema.api_keys
        with self._db.reading() as conn:
            rows = conn.execute(select(t).order_by(t.c.created_at, t.c.id)).all()
        return [_api_key_from(r._mapping) for r in rows]
