"""Errors raised by the provenance store."""

from __future__ import annotations

from qemlflow.errors import QeMLflowError

__all__ = ["BlobNotFoundError", "CorruptBlobError", "StoreError"]


class StoreError(QeMLflowError):
    """The store cannot do what was asked (missing object, bad location, refused operation).

    Examples
    --------
    >>> str(StoreError("no run 'x'", "list runs with `qemlflow runs list`"))
    "no run 'x'; list runs with `qemlflow runs list`"
    """


class BlobNotFoundError(StoreError):
    """A blob digest is not in the store's ``objects/`` folder."""


class CorruptBlobError(StoreError):
    """A blob's content no longer hashes to its digest: it was altered on disk."""
