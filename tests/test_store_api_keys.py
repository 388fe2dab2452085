"""The API keys repository (``store.api_keys``)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from qemlflow.store import Store, StoreError, schema


def test_a_key_is_shown_once_and_stored_hashed(store: Store) -> None:
    record, key = store.api_keys.create("  ci runner ")
    assert record.name == "ci runner"
    assert key.startswith(f"qmf_{record.id}_")
    with store.db.reading() as conn:
        stored = conn.execute(select(schema.api_keys.c.key_hash)).scalar_one()
    assert key.rsplit("_", 1)[1] not in stored
    assert store.api_keys.check(key) == record
    assert store.api_keys.check(f"  {key}\n") == record
    assert store.api_keys.check(key[:-1] + ("0" if key[-1] != "0" else "1")) is None
    assert store.api_keys.check("qmf_qk_00000000_" + "0" * 64) is None  # unknown id
    assert store.api_keys.check("not a key") is None
    event = store.audit_trail.events(object_ref=record.id)[0]
    assert (event.action, event.details) == ("apikey.created", {"name": "ci runner"})
    assert key.rsplit("_", 1)[1] not in str(event.to_dict())


def test_revoking_ends_a_key_once(store: Store) -> None:
    record, key = store.api_keys.create("ci")
    other, other_key = store.api_keys.create("dashboard")
    revoked = store.api_keys.revoke(key, "leaked")  # the whole key names its id
    assert revoked.id == record.id and revoked.revoked_at is not None
    assert store.api_keys.revoke(record.id).revoked_at == revoked.revoked_at
    assert store.api_keys.check(key) is None
    assert store.api_keys.check(other_key) == other
    assert [e.action for e in store.audit_trail.events(object_ref=record.id)] == [
        "apikey.created",
        "apikey.revoked",
    ]
    listed = store.api_keys.list()
    assert {k.id: k.revoked_at is not None for k in listed} == {record.id: True, other.id: False}
    with pytest.raises(StoreError, match="no API key 'qk_missing'"):
        store.api_keys.revoke("qk_missing")


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "x" * 201])
def test_a_key_needs_a_printable_name(store: Store, name: str) -> None:
    with pytest.raises(StoreError, match="printable characters"):
        store.api_keys.create(name)
    assert store.api_keys.list() == []
