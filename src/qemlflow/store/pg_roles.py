"""PostgreSQL roles that make the database itself refuse edits of the audit trail.

The append-only triggers (migrations 0002, 0003) only hold against a role that cannot drop
or disable them, and PostgreSQL lets whoever *owns* a table do both. So on PostgreSQL the
store's objects belong to a role the application never logs in as:

``qemlflow_owner`` (NOLOGIN)
    Owns every table, sequence and trigger function of the store. Migrations run as a
    role that may ``SET ROLE qemlflow_owner`` (a superuser, or a DBA granted the role).
``qemlflow_app`` (NOLOGIN)
    SELECT and INSERT on the append-only tables (those of
    :data:`~qemlflow.store.audit.APPEND_ONLY_TRIGGERS`, plus ``audit_checkpoints``),
    SELECT, INSERT, UPDATE and DELETE on the other tables, SELECT on ``alembic_version``,
    USAGE on the sequences. The application logs in as a role that is a member of it::

        CREATE ROLE alice LOGIN PASSWORD '...';
        GRANT qemlflow_app TO alice;

PUBLIC keeps nothing on these objects, and nobody else keeps UPDATE, DELETE, TRUNCATE,
TRIGGER or REFERENCES on an append-only table. :func:`secure_postgres` does all of this,
idempotently, after every migration run (:func:`~qemlflow.store.database.upgrade_schema`)
and on ``qemlflow store migrate``, so tables added by later migrations are covered too.
Roles are global to a PostgreSQL cluster: two stores on one server share them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

from qemlflow.store.errors import StoreError

if TYPE_CHECKING:
    from qemlflow.store.transactions import Database

__all__ = [
    "APP_ROLE",
    "OWNER_DATABASE_ENV",
    "OWNER_ROLE",
    "append_only_tables",
    "check_may_migrate",
    "prepare_migration",
    "privilege_warnings",
    "secure_postgres",
    "store_tables",
]

OWNER_ROLE = "qemlflow_owner"
APP_ROLE = "qemlflow_app"
OWNER_DATABASE_ENV = "QEMLFLOW_OWNER_DATABASE_URL"
"""A URL of the store's database for a role that may migrate it (``SET ROLE qemlflow_owner``)."""

MIGRATE_FIX = (
    "run `qemlflow store migrate --owner-url postgresql://DBA@HOST/DB` (or set "
    f"{OWNER_DATABASE_ENV}) as a superuser or a role granted {OWNER_ROLE}"
)
_WRITE_AROUND = "UPDATE, DELETE, TRUNCATE, TRIGGER, REFERENCES"


def append_only_tables() -> tuple[str, ...]:
    """Return the tables the application may only read and append to.

    Examples
    --------
    >>> "audit_events" in append_only_tables(), "runs" in append_only_tables()
    (True, False)
    """
    from qemlflow.store.audit import APPEND_ONLY_TRIGGERS

    tables = {table for table, _ in APPEND_ONLY_TRIGGERS["postgresql"].values()}
    return tuple(sorted(tables | {"audit_checkpoints"}))


def store_tables(conn: Connection) -> list[str]:
    """Return the store's tables that exist in the connection's current schema.

    Those of the store's metadata, ``alembic_version`` and the append-only ones: other
    tables of a shared schema are not the store's to take over.
    """
    from qemlflow.store.schema import metadata

    wanted = {*metadata.tables, "alembic_version", *append_only_tables()}
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_class c "
            "WHERE c.relnamespace = to_regnamespace(current_schema()) "
            "AND c.relkind IN ('r', 'p')"
        )
    )
    return sorted(str(name) for (name,) in rows if name in wanted)


def _quote(conn: Connection, name: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(name))


def _role_exists(conn: Connection, role: str) -> bool:
    found = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
    return found.first() is not None


def _is_superuser(conn: Connection) -> bool:
    row = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    return bool(row.scalar())


def _may_act_as_owner(conn: Connection) -> bool:
    # PostgreSQL 16 splits membership: a CREATEROLE role administers the roles it made
    # without the SET right, and ALTER ... OWNER TO needs that right.
    query = text(
        "SELECT pg_has_role(current_user, :r, CASE WHEN "
        "current_setting('server_version_num')::int >= 160000 THEN 'SET' ELSE 'MEMBER' END)"
    )
    return bool(conn.execute(query, {"r": OWNER_ROLE}).scalar())


def check_may_migrate(conn: Connection, current: str | None, head: str) -> None:
    """Raise a one-line :class:`StoreError` unless the connected role may migrate the store.

    It may when it is a superuser, a member of ``qemlflow_owner``, or (before the roles
    exist) a role allowed to create them.
    """
    if _is_superuser(conn):
        return
    user = str(conn.execute(text("SELECT current_user")).scalar())
    where = f"revision {current}" if current is not None else "empty"
    if _role_exists(conn, OWNER_ROLE):
        if _may_act_as_owner(conn):
            return
        why = f"role {user} is not a member of {OWNER_ROLE}"
    else:
        creates = conn.execute(
            text("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar()
        if creates:
            return
        why = f"role {user} may not create the role {OWNER_ROLE}"
    what = (
        f"the store's schema is {where} and this QeMLflow needs revision {head}"
        if current != head
        else "setting up the store's PostgreSQL roles was asked for"
    )
    raise StoreError(f"{what}, but {why} and so may not migrate the store", MIGRATE_FIX)


def _create_role(conn: Connection, role: str) -> None:
    # Two databases of one cluster may be migrated at once; roles are cluster-wide.
    conn.execute(
        text(
            "DO $$ BEGIN "
            f"CREATE ROLE {_quote(conn, role)} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; "
            "END $$"
        )
    )


def _ensure_roles(conn: Connection) -> None:
    for role in (OWNER_ROLE, APP_ROLE):
        if not _role_exists(conn, role):
            _create_role(conn, role)
    if not _is_superuser(conn) and not _may_act_as_owner(conn):
        # The CREATEROLE role that made the owner role: membership is what
        # ALTER ... OWNER TO qemlflow_owner needs.
        conn.execute(text(f"GRANT {_quote(conn, OWNER_ROLE)} TO CURRENT_USER"))


def _schema_grants(conn: Connection) -> None:
    schema = _quote(conn, str(conn.execute(text("SELECT current_schema()")).scalar()))
    owner, app = _quote(conn, OWNER_ROLE), _quote(conn, APP_ROLE)
    # Objects planted in the schema by others could be picked up by the owner's DDL
    # through search_path; PostgreSQL 15+ already refuses PUBLIC this.
    conn.execute(text(f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC"))
    conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {owner}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {app}"))


def _owner_can_create(conn: Connection) -> bool:
    query = text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')")
    return bool(conn.execute(query, {"r": OWNER_ROLE}).scalar())


def prepare_migration(conn: Connection) -> None:
    """Before migrating: make the roles, hand existing objects to the owner, and
    ``SET LOCAL ROLE qemlflow_owner`` so that the new objects are the owner's too.

    Call inside the migration's transaction; :func:`secure_postgres` afterwards resets the
    role. Where the owner may not create in the schema (a DBA who cannot grant it), the
    migration runs as the connected role and :func:`secure_postgres` hands its objects over.
    """
    _ensure_roles(conn)
    _schema_grants(conn)
    _hand_over(conn)
    if _owner_can_create(conn):
        conn.execute(text(f"SET LOCAL ROLE {_quote(conn, OWNER_ROLE)}"))


def _sequences(conn: Connection, tables: list[str]) -> list[str]:
    """Sequences owned by a column of ``tables`` (serial and identity columns)."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT s.oid::regclass::text FROM pg_class s "
            "JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass "
            "JOIN pg_class t ON t.oid = d.refobjid "
            "WHERE s.relkind = 'S' AND t.relname = ANY(:tables) "
            "AND t.relnamespace = to_regnamespace(current_schema())"
        ),
        {"tables": tables},
    )
    return sorted(str(name) for (name,) in rows)


def _trigger_functions(conn: Connection, tables: list[str]) -> list[str]:
    """The functions the triggers on ``tables`` run, as ``name(args)`` signatures."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT t.tgfoid::regprocedure::text FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT t.tgisinternal AND c.relname = ANY(:tables) "
            "AND c.relnamespace = to_regnamespace(current_schema())"
        ),
        {"tables": tables},
    )
    return sorted(str(name) for (name,) in rows)


def _hand_over(conn: Connection) -> None:
    owner = _quote(conn, OWNER_ROLE)
    tables = store_tables(conn)
    for table in tables:
        conn.execute(text(f"ALTER TABLE {_quote(conn, table)} OWNER TO {owner}"))
    for sequence in _sequences(conn, tables):
        conn.execute(text(f"ALTER SEQUENCE {sequence} OWNER TO {owner}"))
    for function in _trigger_functions(conn, tables):
        conn.execute(text(f"ALTER FUNCTION {function} OWNER TO {owner}"))


def _other_grantees(conn: Connection, table: str) -> list[str]:
    """Roles other than the owner and the app role holding a privilege on ``table``."""
    rows = conn.execute(
        text(
            "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
            "ELSE quote_ident(pg_get_userbyid(a.grantee)) END "
            "FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.relname = :t AND c.relnamespace = to_regnamespace(current_schema()) "
            "AND a.grantee NOT IN (c.relowner, "
            "(SELECT oid FROM pg_roles WHERE rolname = :app))"
        ),
        {"t": table, "app": APP_ROLE},
    )
    return [str(name) for (name,) in rows]


def secure_postgres(conn: Connection) -> None:
    """Give the store's objects to ``qemlflow_owner`` and grant ``qemlflow_app`` what the
    application needs, no more (see the module docstring). Idempotent.

    Runs as the connected (session) role, which must be a superuser or a member of
    ``qemlflow_owner`` (and, while the roles are missing, allowed to create them).
    """
    conn.execute(text("RESET ROLE"))
    _ensure_roles(conn)
    _schema_grants(conn)
    _hand_over(conn)
    app = _quote(conn, APP_ROLE)
    append_only = set(append_only_tables())
    tables = store_tables(conn)
    for table in tables:
        name = _quote(conn, table)
        conn.execute(text(f"REVOKE ALL ON TABLE {name} FROM PUBLIC, {app}"))
        if table == "alembic_version":
            granted = "SELECT"
        elif table in append_only:
            granted = "SELECT, INSERT"
            for grantee in _other_grantees(conn, table):
                conn.execute(text(f"REVOKE {_WRITE_AROUND} ON TABLE {name} FROM {grantee}"))
        else:
            granted = "SELECT, INSERT, UPDATE, DELETE"
        conn.execute(text(f"GRANT {granted} ON TABLE {name} TO {app}"))
    for sequence in _sequences(conn, tables):
        conn.execute(text(f"REVOKE ALL ON SEQUENCE {sequence} FROM PUBLIC"))
        conn.execute(text(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {app}"))
    for function in _trigger_functions(conn, tables):
        conn.execute(text(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC"))
        conn.execute(text(f"GRANT EXECUTE ON FUNCTION {function} TO {app}"))


def privilege_warnings(db: Database) -> list[str]:
    """Return warnings when the store's role could remove the audit trail's protection.

    A superuser, an owner of an append-only table or a member of its owner may drop or
    disable the triggers; tables not owned by ``qemlflow_owner`` mean the store was never
    secured (migrated before these roles existed). Empty on SQLite. ``store verify`` and
    ``audit verify`` print these as warnings, not problems: the trail itself is intact.
    """
    if db.backend != "postgresql":
        return []
    with db.reading() as conn:
        return _privilege_warnings(conn)


def _privilege_warnings(conn: Connection) -> list[str]:
    user = str(conn.execute(text("SELECT current_user")).scalar())
    if _is_superuser(conn):
        return [
            f"connected as superuser {user}: it can drop or disable the append-only "
            f"triggers; let the application log in as a member of {APP_ROLE}"
        ]
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_userbyid(c.relowner), "
            "pg_has_role(current_user, c.relowner, 'MEMBER') FROM pg_class c "
            "WHERE c.relname = ANY(:tables) AND c.relkind IN ('r', 'p') "
            "AND c.relnamespace = to_regnamespace(current_schema())"
        ),
        {"tables": list(append_only_tables())},
    )
    warnings: list[str] = []
    for table, owner, member in rows:
        if owner != OWNER_ROLE:
            warnings.append(
                f"table {table} is owned by {owner}, not {OWNER_ROLE}: the store's roles "
                f"are not set up; {MIGRATE_FIX}"
            )
        elif member:
            warnings.append(
                f"role {user} may act as {owner}, the owner of {table}: it can drop or "
                f"disable the append-only triggers; let the application log in as a "
                f"member of {APP_ROLE} only"
            )
    return warnings
