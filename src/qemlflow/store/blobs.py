"""The content-addressed blob store: ``objects/ab/cdef...`` files named by their sha256.

Writes are atomic: the content goes to a temp file in ``objects/tmp/``, is flushed and
fsync'd, made read-only, renamed into place (``os.replace``) and the directory is fsync'd.
A writer killed half-way leaves only a temp file, which is never listed as a blob and is
removed by :meth:`BlobStore.clean_temp` once stale. Blobs are never modified in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

from qemlflow.store.errors import BlobNotFoundError, CorruptBlobError, StoreError
from qemlflow.store.keys import canonical_json

__all__ = ["BlobStore", "is_digest"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
VERIFY_FIX = "run `qemlflow store verify` and restore the store from a backup"


def is_digest(value: object) -> bool:
    """Return whether ``value`` is a lowercase sha256 hex digest.

    Examples
    --------
    >>> is_digest("0" * 64), is_digest("xyz")
    (True, False)
    """
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BlobStore:
    """Content-addressed files under ``root`` (normally ``<store>/objects``).

    Examples
    --------
    >>> import tempfile
    >>> blobs = BlobStore(Path(tempfile.mkdtemp()) / "objects")
    >>> digest = blobs.put_bytes(b"hello")
    >>> digest[:12], blobs.get_bytes(digest)
    ('2cf24dba5fb0', b'hello')
    >>> blobs.put_bytes(b"hello") == digest  # idempotent
    True
    """

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        if create:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------

    def path_for(self, digest: str) -> Path:
        """Return where the blob ``digest`` lives (whether or not it exists)."""
        if not is_digest(digest):
            raise StoreError(
                f"{digest!r} is not a blob digest",
                "give the 64-character lowercase sha256 hex digest",
            )
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        """Return whether the blob ``digest`` exists."""
        return is_digest(digest) and self.path_for(digest).is_file()

    def open_path(self, digest: str) -> Path:
        """Return the path of an existing blob (read-only; never write to it)."""
        path = self.path_for(digest)
        if not path.is_file():
            raise BlobNotFoundError(f"blob {digest} is missing from {self.root}", VERIFY_FIX)
        return path

    def digests(self) -> Iterator[str]:
        """Yield the digest of every blob, in sorted order; temp files are never listed."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for entry in sorted(sub.iterdir()):
                digest = sub.name + entry.name
                if is_digest(digest) and entry.is_file():
                    yield digest

    # -- writing -----------------------------------------------------------------------

    def _temp_file(self) -> tuple[BinaryIO, Path]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="blob-", suffix=".tmp")
        return os.fdopen(fd, "wb"), Path(name)

    def _commit(self, tmp: Path, digest: str) -> str:
        """Move the finished temp file ``tmp`` into place as blob ``digest``."""
        final = self.path_for(digest)
        if final.is_file() and self._touch(final):
            tmp.unlink(missing_ok=True)
            return digest
        tmp.chmod(_READ_ONLY)
        parent = final.parent
        if not parent.is_dir():
            parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.root)
        tmp.replace(final)
        _fsync_dir(parent)
        return digest

    @staticmethod
    def _touch(path: Path) -> bool:
        """Mark an existing blob as just written; ``False`` when it is gone (write it again).

        A re-written blob is "new" again for gc's grace period and in-flight runs: a run
        that writes it now registers it only later. gc moves a blob aside before deleting
        it, so a touch either lands before (and gc sees it) or fails here.
        """
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        except OSError:  # not ours to change (a read-only store): it is there
            return True
        return True

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its sha256 digest; storing existing content is a no-op."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path_for(digest)
        if final.is_file() and self._touch(final):
            return digest
        handle, tmp = self._temp_file()
        try:
            with handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return self._commit(tmp, digest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Copy the file at ``path`` into the store (streamed, hashed while copying)."""
        source = Path(path)
        hasher = hashlib.sha256()
        handle, tmp = self._temp_file()
        try:
            with handle, source.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    hasher.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            return self._commit(tmp, hasher.hexdigest())
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"file {source} does not exist", "give the path of a file") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- reading -----------------------------------------------------------------------

    def get_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """Return the content of blob ``digest``, re-hashed unless ``verify=False``."""
        data = self.open_path(digest).read_bytes()
        if verify and hashlib.sha256(data).hexdigest() != digest:
            raise CorruptBlobError(f"blob {digest} is corrupt (its content changed)", VERIFY_FIX)
        return data

    def hash_of(self, digest: str) -> str:
        """Return the sha256 of the blob file's current content (streamed)."""
        hasher = hashlib.sha256()
        with self.open_path(digest).open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()

    def problem(self, digest: str) -> Literal["missing", "altered"] | None:
        """Re-hash blob ``digest`` (streamed): ``None`` when intact, else what is wrong."""
        if not self.has(digest):
            return "missing"
        return None if self.hash_of(digest) == digest else "altered"

    # -- JSON --------------------------------------------------------------------------

    def put_json(self, obj: Any) -> str:
        """Store ``obj`` as a canonical JSON blob and return its digest."""
        return self.put_bytes(canonical_json(obj))

    def get_json(self, digest: str) -> Any:
        """Return the JSON value held in blob ``digest`` (verified)."""
        return json.loads(self.get_bytes(digest))

    # -- references --------------------------------------------------------------------

    def require(self, what: str, *digests: str | None) -> None:
        """Check that each digest (``None`` skipped) names a blob in the store.

        The metadata repositories call this before recording a reference, so that no row
        ever points at a blob that was not written first.

        Raises
        ------
        StoreError
            A value is not a digest, or its blob is missing; ``what`` names the referrer.
        """
        for digest in digests:
            if digest is None:
                continue
            if not is_digest(digest):
                raise StoreError(
                    f"{what}: {digest!r} is not a blob digest",
                    "pass the digest returned by put_bytes/put_file",
                )
            if not self.has(digest):
                raise StoreError(
                    f"{what} refers to blob {digest}, which is not in the store",
                    "write the content with put_bytes/put_file before recording it",
                )

    # -- care --------------------------------------------------------------------------

    def clean_temp(self, older_than: float = 60.0) -> list[Path]:
        """Remove temp files older than ``older_than`` seconds (left by killed writers)."""
        removed: list[Path] = []
        if not self.tmp_dir.is_dir():
            return removed
        cutoff = time.time() - older_than
        for entry in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed.append(entry)
        return removed

    def remove_unless_touched(self, digest: str, cutoff: float) -> bool:
        """Delete blob ``digest`` unless it was written after ``cutoff`` (a Unix time).

        The blob is first renamed aside, then its time checked again: a writer re-writing
        it at the same moment either touched it before the rename (it is put back) or finds
        it gone and writes it anew. Returns whether it was deleted.
        """
        path = self.path_for(digest)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        aside = self.tmp_dir / f"gc-{digest}-{os.getpid()}.tmp"
        try:
            path.replace(aside)
        except FileNotFoundError:
            return False
        if aside.stat().st_mtime > cutoff:
            aside.replace(path)  # a writer's copy there meanwhile has the same content
            return False
        aside.unlink()
        return True

    def remove(self, digest: str) -> None:
        """Delete blob ``digest`` (only garbage collection and restore cleanup do this)."""
        # The fan-out folder stays: a concurrent writer may be renaming into it.
        self.path_for(digest).unlink(missing_ok=True)
