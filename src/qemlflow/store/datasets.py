"""The datasets repository: immutable dataset versions and the blobs they are made of.

A dataset version points at its raw file, its curated table and its rejected rows (blobs);
adding a new version appends a ``dataset.added`` audit event in the same transaction.
"""

from __future__ import annotations

import builtins

from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from qemlflow.store import schema
from qemlflow.store.audit import append_event
from qemlflow.store.blobs import BlobStore
from qemlflow.store.keys import plain_json
from qemlflow.store.records import DatasetRecord
from qemlflow.store.transactions import Database, insert_ignore, row_by_id

__all__ = ["DATASETS_FIX", "Datasets"]

DATASETS_FIX = "list datasets with `qemlflow data list`"


def _dataset_from(row: RowMapping) -> DatasetRecord:
    return DatasetRecord(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        table_digest=row["table_digest"],
        raw_digest=row["raw_digest"],
        rejected_digest=row["rejected_digest"],
        params=row["params"],
        summary=row["summary"],
        created_at=row["created_at"],
        libraries=row["libraries"],
    )


class Datasets:
    """The dataset versions of a store (``store.datasets``)."""

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def add(self, record: DatasetRecord) -> DatasetRecord:
        """Record a dataset version; adding an existing ``id`` returns the stored one.

        A new version appends a ``dataset.added`` audit event.
        """
        self._blobs.require(
            f"dataset {record.name!r}",
            record.table_digest,
            record.raw_digest,
            record.rejected_digest,
        )
        values = {
            "id": record.id,
            "name": record.name,
            "source": record.source,
            "raw_digest": record.raw_digest,
            "table_digest": record.table_digest,
            "rejected_digest": record.rejected_digest,
            "params": plain_json(record.params),
            "summary": plain_json(record.summary),
            "created_at": record.created_at,
            "libraries": None if record.libraries is None else dict(record.libraries),
        }
        with self._db.writing() as conn:
            if insert_ignore(conn, schema.datasets, values):
                append_event(
                    conn,
                    "dataset.added",
                    {
                        "dataset": record.id,
                        "raw": record.raw_digest,
                        "table": record.table_digest,
                    },
                    details={"name": record.name, "source": record.source},
                )
            row = conn.execute(
                select(schema.datasets).where(schema.datasets.c.id == record.id)
            ).one()
        return _dataset_from(row._mapping)

    def list(self) -> builtins.list[DatasetRecord]:
        """Return every dataset version, newest first."""
        t = schema.datasets
        with self._db.reading() as conn:
            rows = conn.execute(select(t).order_by(t.c.created_at.desc(), t.c.id)).all()
        return [_dataset_from(r._mapping) for r in rows]

    def get(self, id_or_prefix: str) -> DatasetRecord:
        """Return the dataset whose id is, or uniquely starts with, ``id_or_prefix``."""
        with self._db.reading() as conn:
            row = row_by_id(conn, schema.datasets, id_or_prefix, "dataset", DATASETS_FIX)
        return _dataset_from(row)
