"""Connecting to the metadata database and keeping its schema at the Alembic head.

SQLite (the default, ``<root>/metadata.db``) is set up for many concurrent writer
processes: WAL journal, ``synchronous=NORMAL``, foreign keys on, a 30 s busy timeout, and
every write transaction opened with ``BEGIN IMMEDIATE`` (the pysqlite recipe from the
SQLAlchemy documentation), so writers queue on the lock instead of failing with
"database is locked" when a read transaction tries to upgrade to a write.
PostgreSQL URLs are rewritten to the ``psycopg`` (v3) driver.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError, ProgrammingError
from sqlalchemy.pool import ConnectionPoolEntry

from qemlflow.store.errors import StoreError

__all__ = [
    "MIGRATIONS_DIR",
    "READ_ONLY",
    "create_store_engine",
    "current_revision",
    "folder_lock",
    "head_revision",
    "is_postgres_url",
    "normalize_database_url",
    "upgrade_schema",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30.0
READ_ONLY = "qemlflow_read_only"
"""Execution option: a transaction that only reads starts with a deferred ``BEGIN``."""

# Any 64-bit constant: serializes schema upgrades of one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x71E3F10C0DE


def is_postgres_url(value: object) -> bool:
    """Return whether ``value`` is a PostgreSQL URL (any driver).

    Examples
    --------
    >>> is_postgres_url("postgresql://u@h/db"), is_postgres_url(".qemlflow")
    (True, False)
    """
    return isinstance(value, str) and value.split("://", 1)[0].split("+", 1)[0] in (
        "postgresql",
        "postgres",
    )


def normalize_database_url(url: str) -> str:
    """Return the SQLAlchemy URL for ``url``: PostgreSQL goes through psycopg 3.

    Examples
    --------
    >>> normalize_database_url("postgresql://u@h:5432/db")
    'postgresql+psycopg://u@h:5432/db'
    >>> normalize_database_url("postgres://h/db")
    'postgresql+psycopg://h/db'
    >>> normalize_database_url("sqlite:////tmp/m.db")
    'sqlite:////tmp/m.db'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError(
            f"{url!r} is not a database URL",
            "give a URL like postgresql://user@host:5432/dbname",
        )
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if base == "sqlite":
        return url
    raise StoreError(
        f"database URL scheme {scheme!r} is not supported",
        "use postgresql://... for a server, or leave it out for the SQLite file",
    )


def _sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # pysqlite's own BEGIN handling is off; the "begin" hook below emits ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_store_engine(url: str) -> Engine:
    """Return an engine for ``url`` (normalized), with the SQLite settings above."""
    url = normalize_database_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"cannot parse database URL: {exc}", "check the URL") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """Return the newest schema revision this version of QeMLflow knows.

    Examples
    --------
    >>> head_revision() >= "0004"  # migrations are numbered 0001, 0002, ...
    True
    """
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the schema revision the database is at (``None`` when empty)."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
        return MigrationContext.configure(conn).get_current_revision()


def _upgrade_once(engine: Engine, head: str, known: set[str], secure: bool) -> None:
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head and not (postgres and secure):
            return
        if current is not None and current not in known:
            raise StoreError(
                f"the store's schema is at revision {current}, newer than this QeMLflow "
                f"knows (head {head})",
                "upgrade QeMLflow (pip install -U qemlflow)",
            )
        if not postgres:
            command.upgrade(_alembic_config(conn), "head")
            return
        from qemlflow.store.pg_roles import check_may_migrate, prepare_migration, secure_postgres

        check_may_migrate(conn, current, head)
        prepare_migration(conn)
        command.upgrade(_alembic_config(conn), "head")
        # After every migration run, so that tables added by later migrations, too,
        # belong to the owner role and are shut to the application's DDL.
        secure_postgres(conn)


def _migrating_engine(engine: Engine, owner_url: str | None, head: str, secure: bool) -> Engine:
    """The engine to migrate with: a new one on ``owner_url`` when there is work for it."""
    if owner_url is None or engine.dialect.name != "postgresql":
        return engine
    if not secure and current_revision(engine) == head:
        return engine
    owner_engine = create_store_engine(owner_url)
    if owner_engine.dialect.name != "postgresql":
        owner_engine.dispose()
        raise StoreError(
            "the owner URL is not a PostgreSQL URL",
            "give the store's PostgreSQL database, as a role that may migrate it",
        )
    return owner_engine


def upgrade_schema(
    engine: Engine,
    attempts: int = 5,
    *,
    owner_url: str | None = None,
    secure: bool = False,
) -> None:
    """Create or upgrade the schema to the head revision; safe under concurrent opens.

    Callers also hold :func:`folder_lock`; PostgreSQL upgrades additionally take an
    advisory lock, and an "already exists" race (another host creating the tables) is
    retried after re-reading the revision.

    On PostgreSQL every migration run ends with
    :func:`~qemlflow.store.pg_roles.secure_postgres` (the owner and application roles).
    A pending migration runs through ``owner_url`` when given (a role that may migrate
    the same database, while ``engine`` is the application's); ``secure=True`` applies the
    roles even when no migration is pending (``qemlflow store migrate``).

    Raises
    ------
    StoreError
        The schema cannot be migrated, e.g. the connected role is the application's.
    """
    script = ScriptDirectory.from_config(_alembic_config())
    head = script.get_current_head()
    assert head is not None
    known = {rev.revision for rev in script.walk_revisions()}
    migrating = _migrating_engine(engine, owner_url, head, secure)
    try:
        _upgrade_with_retries(migrating, head, known, secure, attempts)
    finally:
        if migrating is not engine:
            migrating.dispose()
    if migrating is not engine and current_revision(engine) != head:
        raise StoreError(
            "the owner URL migrated another database than the store's",
            "give the owner URL of the store's own database (same host, port and name)",
        )


def _upgrade_with_retries(
    engine: Engine, head: str, known: set[str], secure: bool, attempts: int
) -> None:
    for attempt in range(attempts):
        try:
            _upgrade_once(engine, head, known, secure)
            return
        except (ProgrammingError, OperationalError, DatabaseError) as exc:
            message = str(exc).lower()
            transient = "already exists" in message or "locked" in message
            if not transient or attempt == attempts - 1:
                denied = "permission denied" in message or "must be owner" in message
                fix = (
                    "migrate as the store's owner: run `qemlflow store migrate --owner-url "
                    "postgresql://DBA@HOST/DB` as a superuser or a member of qemlflow_owner"
                    if denied
                    else "check that the database is reachable and writable"
                )
                raise StoreError(
                    f"cannot create or upgrade the store schema: {exc.orig or exc}", fix
                ) from exc
            time.sleep(0.2 * (attempt + 1))


@contextlib.contextmanager
def folder_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<root>/.lock`` (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
