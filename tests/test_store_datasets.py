"""The datasets repository (``store.datasets``)."""

from __future__ import annotations

import pytest

from qemlflow.store import DatasetRecord, Store, StoreError


def _dataset(store: Store, n: int, created_at: str) -> DatasetRecord:
    return DatasetRecord(
        id=f"{n:x}" * 64,
        name=f"set{n}",
        source=f"set{n}.csv",
        table_digest=store.blobs.put_bytes(f"table {n}".encode()),
        raw_digest=store.blobs.put_bytes(f"raw {n}".encode()),
        summary={"rows": n, "ratio": float("nan")},
        created_at=created_at,
    )


def test_add_records_a_version_once_with_one_event(store: Store) -> None:
    record = _dataset(store, 1, "2026-01-01T00:00:00Z")
    stored = store.datasets.add(record)
    assert stored.summary == {"rows": 1, "ratio": None}  # NaN kept as null
    again = store.datasets.add(
        DatasetRecord(id=record.id, name="other", source="x", table_digest=record.table_digest)
    )
    assert again == stored  # the stored version wins
    events = store.audit_trail.events(object_ref=record.id)
    assert [e.action for e in events] == ["dataset.added"]
    assert events[0].objects["table"] == record.table_digest


def test_add_refuses_a_missing_blob_and_writes_nothing(store: Store) -> None:
    record = DatasetRecord(id="e" * 64, name="x", source="x.csv", table_digest="0" * 64)
    with pytest.raises(StoreError, match="dataset 'x' refers to blob"):
        store.datasets.add(record)
    assert store.datasets.list() == []
    assert store.audit_trail.events() == []


def test_list_newest_first_and_get_by_prefix(store: Store) -> None:
    old = store.datasets.add(_dataset(store, 1, "2026-01-01T00:00:00Z"))
    new = store.datasets.add(_dataset(store, 2, "2026-02-01T00:00:00Z"))
    assert [d.id for d in store.datasets.list()] == [new.id, old.id]
    assert store.datasets.get(old.id[:8]) == old
    assert store.get_dataset(new.id) == new
    with pytest.raises(StoreError, match="no dataset matches"):
        store.datasets.get("abc")
