"""The step cache repository: one immutable row per computed pipeline step.

A step's row is keyed by its content key (:func:`~qemlflow.store.keys.content_key`) and
points at its output blob. Rows are not audited one by one: a cache entry is
content-addressed and immutable, and the run that computed it is audited (see
:mod:`qemlflow.store.runs`).
"""

from __future__ import annotations

import builtins

from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from qemlflow.store import schema
from qemlflow.store.blobs import BlobStore, is_digest
from qemlflow.store.errors import StoreError
from qemlflow.store.keys import plain_json
from qemlflow.store.records import StepRecord
from qemlflow.store.transactions import MIN_PREFIX, Database, insert_ignore, is_hex

__all__ = ["StepCache"]


def _step_from(row: RowMapping) -> StepRecord:
    return StepRecord(
        key=row["key"],
        step=row["step"],
        version=row["version"],
        params=row["params"],
        inputs=tuple(row["inputs"]),
        output=row["output"],
        seconds=row["seconds"],
        created_at=row["created_at"],
        libraries=row["libraries"],
    )


class StepCache:
    """The cached steps of a store (``store.steps``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from qemlflow.store import Store, content_key
    >>> with Store.open(Path(tempfile.mkdtemp())) as store:
    ...     key = content_key("split", 1, {"seed": 0}, [], {})
    ...     output = store.blobs.put_bytes(b"split")
    ...     stored = store.steps.put(StepRecord(key, "split", "1", {}, (), output))
    ...     stored.key == key, store.steps.get(key) == stored
    (True, True)
    """

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def get(self, key: str) -> StepRecord | None:
        """Return the cached step with content key ``key``, or ``None``."""
        with self._db.reading() as conn:
            row = conn.execute(select(schema.steps).where(schema.steps.c.key == key)).first()
        return None if row is None else _step_from(row._mapping)

    def put(self, record: StepRecord) -> StepRecord:
        """Record a computed step; when ``record.key`` exists the existing row is kept.

        Returns the row as stored (the existing one after a lost race).
        """
        if not is_digest(record.key):
            raise StoreError(
                f"step key {record.key!r} is not a sha256 hex digest",
                "compute it with qemlflow.store.content_key",
            )
        self._blobs.require(f"step {record.step} ({record.key[:12]})", record.output)
        values = {
            "key": record.key,
            "step": record.step,
            "version": str(record.version),
            "params": plain_json(record.params),
            "inputs": list(record.inputs),
            "output": record.output,
            "created_at": record.created_at,
            "seconds": float(record.seconds),
            "libraries": None if record.libraries is None else dict(record.libraries),
        }
        with self._db.changing() as conn:
            insert_ignore(conn, schema.steps, values)
            row = conn.execute(select(schema.steps).where(schema.steps.c.key == record.key)).one()
        return _step_from(row._mapping)

    def find(
        self, *, key_prefix: str | None = None, output_prefix: str | None = None
    ) -> builtins.list[StepRecord]:
        """Return the cached steps whose key (or output digest) starts with the prefix.

        A prefix must be at least 6 hex characters, so that it names something.
        """
        t = schema.steps
        column, prefix = (
            (t.c.key, key_prefix) if key_prefix is not None else (t.c.output, output_prefix)
        )
        if prefix is None or len(prefix) < MIN_PREFIX or not is_hex(prefix):
            return []
        with self._db.reading() as conn:
            rows = conn.execute(
                select(t).where(column.like(f"{prefix.lower()}%")).order_by(t.c.created_at)
            ).all()
        return [_step_from(r._mapping) for r in rows]
