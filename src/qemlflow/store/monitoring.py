"""The monitoring repository: per-window traffic rows and training references of served models.

Rows hold counts and histograms; ``ood_smiles`` stays NULL unless the model's policy
sets ``store_smiles``. Rows are written with ``db.changing()``: one per model version and
aggregation window per service process, no audit event each (an alert is audited, see
``qemlflow monitor``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert, select

from qemlflow.store import schema
from qemlflow.store.records import utc_now
from qemlflow.store.transactions import Database, insert_ignore

__all__ = ["Monitoring"]


class Monitoring:
    """Monitoring rows of a store (``store.monitoring``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from qemlflow.store import Store
    >>> with Store.open(Path(tempfile.mkdtemp())) as store:
    ...     row = {"requests": 1, "molecules": 2, "errors": 0, "out_of_domain": 1,
    ...            "latency_counts": [1], "prediction_counts": [2], "similarity_counts": [2]}
    ...     store.monitoring.add_minute("m", 1, "2026-11-30T10:00:00Z", 60, row)
    ...     [r["molecules"] for r in store.monitoring.minutes("m", 1, "2026-11-30T09:00:00Z")]
    [2]
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_minute(
        self, name: str, version: int, minute: str, seconds: int, counts: Mapping[str, Any]
    ) -> None:
        """Record what a service saw of ``name`` version ``version`` in one window.

        ``counts`` may carry ``ood_smiles`` (a list; kept only when given and not None).
        """
        fields = (
            "requests",
            "molecules",
            "errors",
            "out_of_domain",
            "latency_counts",
            "prediction_counts",
            "similarity_counts",
        )
        values = {key: counts[key] for key in fields}
        if counts.get("ood_smiles") is not None:  # only when the model's policy asks
            values["ood_smiles"] = list(counts["ood_smiles"])
        with self._db.changing() as conn:
            conn.execute(
                insert(schema.monitor_minutes).values(
                    name=name, version=version, minute=minute, seconds=seconds, **values
                )
            )

    def minutes(self, name: str, version: int, since: str) -> list[dict[str, Any]]:
        """The rows of ``name`` version ``version`` whose window starts at or after ``since``."""
        t = schema.monitor_minutes
        with self._db.reading() as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.name == name, t.c.version == version, t.c.minute >= since)
                .order_by(t.c.minute, t.c.id)
            ).all()
        return [dict(row._mapping) for row in rows]

    def set_reference(self, name: str, version: int, reference: Mapping[str, Any]) -> bool:
        """Keep the training reference of a version (the first one written stays)."""
        values = {
            "name": name,
            "version": version,
            "created_at": utc_now(),
            **{
                key: reference[key]
                for key in (
                    "molecules",
                    "ood_rate",
                    "prediction_edges",
                    "prediction_counts",
                    "similarity_counts",
                )
            },
        }
        with self._db.changing() as conn:
            return insert_ignore(conn, schema.monitor_references, values)

    def reference(self, name: str, version: int) -> dict[str, Any] | None:
        """The training reference of a version, or None before a service has loaded it."""
        t = schema.monitor_references
        with self._db.reading() as conn:
            row = conn.execute(select(t).where(t.c.name == name, t.c.version == version)).first()
        return None if row is None else dict(row._mapping)
