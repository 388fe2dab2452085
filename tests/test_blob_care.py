"""The blob folder under the hands of gc, killed writers and careless callers: bad digests,
missing files, stray entries, left temp files and a blob re-written while gc removes it."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from qemlflow.store.blobs import BlobStore
from qemlflow.store.errors import BlobNotFoundError, StoreError


def test_bad_digests_and_missing_blobs_say_what_to_give(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "objects")
    with pytest.raises(StoreError, match="is not a blob digest"):
        blobs.path_for("ABC")
    assert blobs.has("ABC") is False
    missing = hashlib.sha256(b"never written").hexdigest()
    with pytest.raises(BlobNotFoundError, match=f"blob {missing} is missing"):
        blobs.open_path(missing)
    with pytest.raises(StoreError, match="does not exist"):
        blobs.put_file(tmp_path / "no-such-file")
    assert list(blobs.tmp_dir.iterdir()) == []  # the failed copy left no temp file


def test_digests_lists_blobs_only(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "objects")
    assert list(BlobStore(tmp_path / "absent", create=False).digests()) == []
    digest = blobs.put_bytes(b"one")
    source = tmp_path / "two.txt"
    source.write_bytes(b"two")
    second = blobs.put_file(source)
    (blobs.root / "README").write_text("not a blob")
    (blobs.root / digest[:2] / "short").write_text("not a blob either")
    assert list(blobs.digests()) == sorted([digest, second])


def test_old_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "objects")
    old, fresh = blobs.tmp_dir / "old.tmp", blobs.tmp_dir / "fresh.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"writing")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert blobs.clean_temp(older_than=60) == [old]
    assert fresh.exists() and not old.exists()
    assert BlobStore(tmp_path / "gone", create=False).clean_temp() == []


def test_gc_keeps_a_blob_written_again_after_its_cutoff(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "objects")
    digest = blobs.put_bytes(b"content")
    path = blobs.path_for(digest)
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    assert blobs.put_bytes(b"content") == digest  # a writer touches it: new again
    assert blobs.remove_unless_touched(digest, cutoff=time.time() - 60) is False
    assert blobs.get_bytes(digest) == b"content"
    assert blobs.remove_unless_touched(digest, cutoff=time.time() + 60) is True
    assert not blobs.has(digest)
    assert blobs.remove_unless_touched(digest, cutoff=time.time()) is False  # gone already
    assert blobs.put_bytes(b"content") == digest and blobs.has(digest)  # written anew
