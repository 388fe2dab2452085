"""The step cache repository (``store.steps``)."""

from __future__ import annotations

import pytest

from qemlflow.store import StepRecord, Store, StoreError, content_key


def _record(store: Store, seed: int, output: bytes = b"split") -> StepRecord:
    key = content_key("split", 1, {"seed": seed}, [], {})
    return StepRecord(key, "split", "1", {"seed": seed}, (), store.blobs.put_bytes(output), 0.5)


def test_put_then_get(store: Store) -> None:
    record = _record(store, 0)
    assert store.steps.get(record.key) is None
    stored = store.steps.put(record)
    assert stored == record
    assert store.steps.get(record.key) == record
    assert store.get_step(record.key) == record


def test_an_existing_key_keeps_its_first_row(store: Store) -> None:
    first = store.steps.put(_record(store, 0, b"first"))
    again = store.steps.put(_record(store, 0, b"second"))
    assert again.output == first.output
    assert store.blobs.get_bytes(store.steps.get(first.key).output) == b"first"  # type: ignore[union-attr]


def test_put_refuses_bad_keys_and_missing_outputs(store: Store) -> None:
    record = _record(store, 0)
    with pytest.raises(StoreError, match="not a sha256 hex digest"):
        store.steps.put(StepRecord("k", "split", "1", {}, (), record.output))
    with pytest.raises(StoreError, match="not in the store"):
        store.steps.put(StepRecord(record.key, "split", "1", {}, (), "0" * 64))
    assert store.db.table_counts()["steps"] == 0


def test_find_by_key_or_output_prefix(store: Store) -> None:
    a = store.steps.put(_record(store, 0, b"a"))
    b = store.steps.put(_record(store, 1, b"b"))
    assert store.steps.find(key_prefix=a.key[:6]) == [a]
    assert store.steps.find(output_prefix=b.output[:8].upper()) == [b]
    assert store.steps.find(key_prefix=a.key[:5]) == []  # too short to name anything
    assert store.steps.find(key_prefix="zzzzzz") == []  # not hex
    assert store.steps.find() == []
