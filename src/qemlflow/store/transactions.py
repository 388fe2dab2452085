"""The one database engine a store's repositories share, and the transactions they use.

Every repository (:mod:`~qemlflow.store.runs`, :mod:`~qemlflow.store.datasets`, ...) is
handed the same :class:`Database`: there is one engine (one connection pool) per open
store, and a write that spans repositories (a run's row and its audit event) happens in one
transaction on one connection, opened with :meth:`Database.writing`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from qemlflow.store import schema
from qemlflow.store.audit import PRINCIPAL_INFO, lock_audit_log
from qemlflow.store.database import READ_ONLY
from qemlflow.store.errors import StoreError

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal

PrincipalProvider = Callable[[Connection], "Principal"]
"""Returns who acts in a write transaction, given its connection (resolved lazily)."""

__all__ = [
    "MIN_PREFIX",
    "Database",
    "PrincipalProvider",
    "insert_ignore",
    "is_hex",
    "row_by_id",
]

MIN_PREFIX = 6
"""The fewest hex characters a digest or key prefix needs to name something."""


class Database:
    """The metadata database of one store: its engine and its three kinds of transaction.

    Parameters
    ----------
    engine
        The store's engine (see :func:`~qemlflow.store.database.create_store_engine`).
    principal
        Who acts in write transactions: called with the connection at the first audit
        event of each transaction that appends one (``None``: writes that append events
        are refused).
    """

    def __init__(self, engine: Engine, principal: PrincipalProvider | None = None) -> None:
        self.engine = engine
        self.principal = principal

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @contextlib.contextmanager
    def writing(self, principal: Principal | None = None) -> Iterator[Connection]:
        """A write transaction that may append audit events (appends serialized first).

        Everything done on the connection commits together, or rolls back together. Its
        events are signed by ``principal``, default the store's acting identity
        (``conn.info["qemlflow.principal"]`` holds who that is, for
        :func:`~qemlflow.store.audit.append_event`).
        """
        provider = self.principal if principal is None else (lambda _conn: principal)
        with self.engine.begin() as conn:
            lock_audit_log(conn)
            if provider is not None:
                conn.info[PRINCIPAL_INFO] = provider
            try:
                yield conn
            finally:  # conn.info outlives the checkout: the pooled connection keeps it
                conn.info.pop(PRINCIPAL_INFO, None)

    @contextlib.contextmanager
    def changing(self) -> Iterator[Connection]:
        """A write transaction that appends no audit event (immutable cache rows), so it
        need not wait for the audit lock."""
        with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only transaction: one consistent view of the database."""
        with (
            self.engine.connect().execution_options(**{READ_ONLY: True}) as conn,
            conn.begin(),
        ):
            yield conn

    def table_counts(self) -> dict[str, int]:
        """Return the number of rows of each metadata table."""
        with self.reading() as conn:
            return {
                table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for table in schema.metadata.sorted_tables
            }

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()


def insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert a row unless its primary key exists (race-safe, no error); return if inserted."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt = sqlite_dialect.insert(table).values(**values).on_conflict_do_nothing()
        return bool(conn.execute(stmt).rowcount == 1)
    if dialect == "postgresql":  # psycopg reports no rowcount here: ask for the new row
        stmt_pg = pg_dialect.insert(table).values(**values).on_conflict_do_nothing()
        key = next(iter(table.primary_key.columns))
        return conn.execute(stmt_pg.returning(key)).first() is not None
    try:  # pragma: no cover - other backends are not supported
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
    except IntegrityError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def row_by_id(conn: Connection, table: Table, value: str, what: str, fix: str) -> RowMapping:
    """Return the row whose ``id`` is, or uniquely starts with, ``value``.

    Raises
    ------
    StoreError
        No row matches, or the prefix matches several.
    """
    column = table.c.id
    row = conn.execute(select(table).where(column == value)).first()
    if row is not None:
        return row._mapping
    prefix = value.strip().lower()
    if not prefix:
        raise StoreError(f"an empty {what} id was given", fix)
    rows = conn.execute(
        select(table).where(column.startswith(prefix, autoescape=True)).limit(6)
    ).all()
    if not rows:
        raise StoreError(f"no {what} matches {value!r}", fix)
    if len(rows) > 1:
        shown = ", ".join(r._mapping["id"] for r in rows[:5])
        more = ", ..." if len(rows) > 5 else ""
        raise StoreError(
            f"{what} id prefix {value!r} is ambiguous ({shown}{more})",
            "give more characters of the id",
        )
    return rows[0]._mapping


def is_hex(text: str) -> bool:
    """Return whether ``text`` holds only hex digits."""
    return all(c in "0123456789abcdefABCDEF" for c in text)
