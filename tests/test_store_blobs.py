"""The blob repository (``store.blobs``): JSON blobs, integrity checks, references."""

from __future__ import annotations

import os
import stat

import pytest

from qemlflow.store import Store, StoreError, canonical_json


def test_json_blobs_are_canonical_and_round_trip(store: Store) -> None:
    digest = store.blobs.put_json({"b": [1, 2.5], "a": "x"})
    assert digest == store.blobs.put_json({"a": "x", "b": [1, 2.5]})
    assert store.blobs.get_bytes(digest) == canonical_json({"a": "x", "b": [1, 2.5]})
    assert store.blobs.get_json(digest) == {"a": "x", "b": [1, 2.5]}
    assert store.get_json(digest) == store.blobs.get_json(digest)


def test_problem_tells_missing_from_altered(store: Store) -> None:
    digest = store.blobs.put_bytes(b"model bytes")
    assert store.blobs.problem(digest) is None
    path = store.blobs.path_for(digest)
    os.chmod(path, stat.S_IWUSR | stat.S_IRUSR)
    path.write_bytes(b"tampered")
    assert store.blobs.problem(digest) == "altered"
    path.unlink()
    assert store.blobs.problem(digest) == "missing"
    assert store.blob_problem(digest) == "missing"


def test_require_refuses_non_digests_and_missing_blobs(store: Store) -> None:
    present = store.blobs.put_bytes(b"here")
    store.blobs.require("run x", present, None)  # None is skipped
    with pytest.raises(StoreError, match="run x: 'nope' is not a blob digest"):
        store.blobs.require("run x", present, "nope")
    with pytest.raises(StoreError, match="which is not in the store"):
        store.blobs.require("run x", "0" * 64)
