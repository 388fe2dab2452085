"""The database enforces the audit trail too: PostgreSQL owner and application roles.

Against a real server (``tests/postgres_fixture.py``): the store is migrated by the
superuser, then used through a login role that is only a member of ``qemlflow_app``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from psycopg import errors, sql
from tests.postgres_fixture import PostgresServer

from qemlflow.cli.main import main
from qemlflow.store import StepRecord, Store, StoreError, content_key, head_revision
from qemlflow.store.database import MIGRATIONS_DIR
from qemlflow.store.pg_roles import (
    APP_ROLE,
    OWNER_DATABASE_ENV,
    OWNER_ROLE,
    append_only_tables,
    privilege_warnings,
    secure_postgres,
)

# Each is refused by PostgreSQL itself (not by a trigger) for a member of qemlflow_app.
TAMPERING = [
    "UPDATE {t} SET {c} = {c}",
    "DELETE FROM {t}",
    "TRUNCATE {t}",
    "DROP TRIGGER {t}_append_only ON {t}",
    "DROP TRIGGER {t}_no_truncate ON {t}",
    "ALTER TABLE {t} DISABLE TRIGGER {t}_append_only",
    "ALTER TABLE {t} DISABLE TRIGGER ALL",
    "ALTER TABLE {t} OWNER TO CURRENT_USER",
    "DROP TABLE {t}",
    "ALTER TABLE {t} ADD COLUMN sneaky integer",
    "CREATE TRIGGER sneaky BEFORE INSERT ON {t} "
    "FOR EACH ROW EXECUTE FUNCTION qemlflow_audit_events_append_only()",
]
FIRST_COLUMN = {"audit_events": "actor", "model_versions": "task", "alias_events": "alias"}


@dataclass(frozen=True)
class Roles:
    """A store's database migrated by the superuser, and a login role of the app."""

    superuser_url: str
    app_url: str
    app_role: str


def _login_role(server: PostgresServer, member_of: str | None) -> str:
    name = f"app_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        # Trust authentication in the test server; a real one gives it a PASSWORD.
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        if member_of is not None:
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), sql.Identifier(name))
            )
    return name


def _as(url: str, role: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


@pytest.fixture
def roles(postgres_server: PostgresServer, postgres_url: str, tmp_path: Path) -> Iterator[Roles]:
    with Store.open(tmp_path / "migrated", database_url=postgres_url):
        pass  # migrating as the superuser sets up the roles
    role = _login_role(postgres_server, APP_ROLE)
    yield Roles(postgres_url, _as(postgres_url, role), role)


def _finished_run(store: Store) -> tuple[str, str, str]:
    """A finished run, its model blob and the key of the step that fitted it."""
    run_id = store.runs.create("demo", {}, 0, None)
    model = store.blobs.put_bytes(f"model of {run_id}".encode())
    fit = store.steps.put(StepRecord(content_key("fit", 1, {}, [], {}), "fit", "1", {}, (), model))
    store.runs.finish(run_id, {"test": {"rmse": 0.4}})
    return run_id, model, fit.key


def test_the_app_role_works_but_cannot_touch_the_trail_or_its_triggers(
    roles: Roles, tmp_path: Path
) -> None:
    with Store.open(tmp_path / "app", database_url=roles.app_url) as store:
        run_id, model, fit_key = _finished_run(store)
        store.registry.register("sol", run_id, model, fit_key, "regression", ["logS"], {})
        store.registry.set_alias("sol", "production", 1, "first")
        store.audit_trail.append("note", {"run": run_id}, reason="works as the app role")
        store.blobs.put_bytes(b"nothing refers to this")
        assert len(store.gc(grace_seconds=0)) == 1
        assert store.backup(tmp_path / "backup").ok
        assert store.verify().ok
        assert privilege_warnings(store.db) == []
        n_events = len(store.audit_trail.events())
        assert n_events >= 6

    refused = []
    with psycopg.connect(roles.app_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (roles.app_role,)
        for table in ("audit_events", "model_versions", "alias_events"):
            for statement in TAMPERING:
                try:
                    conn.execute(statement.format(t=table, c=FIRST_COLUMN[table]))
                except errors.InsufficientPrivilege as exc:
                    refused.append(str(exc))
                else:
                    pytest.fail(f"the app role was allowed: {statement.format(t=table, c='x')}")
        for statement in (
            "CREATE OR REPLACE FUNCTION qemlflow_audit_events_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            "DROP FUNCTION qemlflow_audit_events_append_only() CASCADE",
            f"SET ROLE {OWNER_ROLE}",
            "SET session_replication_role = replica",
            "UPDATE alembic_version SET version_num = '0001'",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
    assert any("must be owner of table audit_events" in message for message in refused)
    assert any("permission denied for table audit_events" in message for message in refused)

    with Store.open(tmp_path / "app", database_url=roles.app_url) as store:
        assert len(store.audit_trail.events()) == n_events
        assert store.audit_trail.verify().ok


def test_the_app_role_restores_a_backup_into_a_store_the_dba_created(
    postgres_server: PostgresServer, roles: Roles, tmp_path: Path
) -> None:
    with Store.open(tmp_path / "app", database_url=roles.app_url) as store:
        _finished_run(store)
        n_events = len(store.audit_trail.events())
        assert store.backup(tmp_path / "backup").ok
    target = f"qemlflow_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target)))
    try:
        with Store.open(tmp_path / "dba", database_url=postgres_server.url(target)):
            pass  # the DBA creates the store
        app_url = _as(postgres_server.url(target), roles.app_role)
        with Store.open(tmp_path / "restored", database_url=app_url) as restored:
            assert restored.restore(tmp_path / "backup").ok
            assert len(restored.audit_trail.events()) == n_events + 1  # and store.restore
            assert restored.audit_trail.events()[-1].action == "store.restore"
            assert restored.verify().ok
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target)))


def test_objects_belong_to_the_owner_role_and_public_holds_nothing(roles: Roles) -> None:
    with psycopg.connect(roles.superuser_url) as conn:
        owners = dict(
            conn.execute(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')"
            ).fetchall()
        )
        functions = conn.execute(
            "SELECT proname, pg_get_userbyid(proowner) FROM pg_proc WHERE proname LIKE 'qemlflow%'"
        ).fetchall()
        public = conn.execute(
            "SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = 0"
        ).fetchall()

        def app_may(table: str, privilege: str) -> bool:
            query = "SELECT has_table_privilege(%s, %s, %s)"
            return bool(conn.execute(query, (APP_ROLE, table, privilege)).fetchone()[0])  # type: ignore[index]

        for table in append_only_tables():
            if table in owners:
                assert app_may(table, "SELECT") and app_may(table, "INSERT")
                assert not any(app_may(table, p) for p in ("UPDATE", "DELETE", "TRUNCATE"))
        for table in ("runs", "steps", "api_keys"):
            assert all(app_may(table, p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE"))
            assert not app_may(table, "TRUNCATE")
        assert not app_may("alembic_version", "UPDATE")
    assert {"audit_events", "model_versions", "runs", "alembic_version"} <= set(owners)
    assert set(owners.values()) == {OWNER_ROLE}
    assert functions and {owner for _, owner in functions} == {OWNER_ROLE}
    assert public == []


def test_securing_again_takes_back_what_was_given_away(roles: Roles, tmp_path: Path) -> None:
    with psycopg.connect(roles.superuser_url, autocommit=True) as conn:
        # What an older setup, or a careless DBA, may have left behind.
        conn.execute("ALTER TABLE runs OWNER TO postgres")
        conn.execute("GRANT ALL ON audit_events TO PUBLIC")
        conn.execute(
            sql.SQL("GRANT UPDATE, TRUNCATE ON audit_events TO {}").format(
                sql.Identifier(roles.app_role)
            )
        )
    with Store.open(tmp_path / "a", database_url=roles.superuser_url) as store:
        assert any("superuser" in w for w in privilege_warnings(store.db))
        with store.db.engine.begin() as conn:
            secure_postgres(conn)
        with store.db.engine.begin() as conn:
            secure_postgres(conn)  # idempotent
    with psycopg.connect(roles.app_url, autocommit=True) as conn:
        for statement in ("UPDATE audit_events SET actor = actor", "TRUNCATE audit_events"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        owner = conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname='runs'")
        assert owner.fetchone() == (OWNER_ROLE,)


def test_a_pending_migration_needs_the_owner_url(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Store.open(tmp_path / "other", database_url=postgres_url):
        pass  # makes sure the roles exist on the server
    fresh = f"qemlflow_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh)))
    superuser_url = postgres_server.url(fresh)
    app_url = _as(superuser_url, _login_role(postgres_server, APP_ROLE))
    store = str(tmp_path / "app")
    monkeypatch.delenv(OWNER_DATABASE_ENV, raising=False)
    monkeypatch.setenv("QEMLFLOW_DATABASE_URL", app_url)
    try:
        with pytest.raises(StoreError, match="not a member of qemlflow_owner") as caught:
            Store.open(store)
        assert "qemlflow store migrate --owner-url" in str(caught.value)
        assert main(["store", "verify", "--store", store]) == 2
        assert "store migrate --owner-url" in capsys.readouterr().err

        assert main(["store", "migrate", "--store", store, "--owner-url", superuser_url]) == 0
        assert "roles qemlflow_owner, qemlflow_app set" in capsys.readouterr().out
        assert main(["store", "verify", "--store", store]) == 0
        assert "warning" not in capsys.readouterr().out

        monkeypatch.setenv("QEMLFLOW_DATABASE_URL", superuser_url)
        for command in (["store", "verify"], ["audit", "verify"]):
            assert main([*command, "--store", store]) == 0  # a warning, not a problem
            assert "warning: connected as superuser postgres" in capsys.readouterr().out
        assert main(["store", "verify", "--store", store, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["warnings"]
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(fresh)))


def test_tables_of_a_later_migration_are_covered_and_the_owner_url_migrates_on_open(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app_url = _as(postgres_url, _login_role(postgres_server, APP_ROLE))
    # A store of an older release: before the registry tables (migration 0003).
    with (
        Store.open(tmp_path / "seed", database_url=postgres_url) as seed,
        seed.db.engine.begin() as conn,
    ):
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
    with pytest.raises(StoreError, match=r"revision 0002 .* not a member of qemlflow_owner"):
        Store.open(tmp_path / "app", database_url=app_url)
    monkeypatch.setenv(OWNER_DATABASE_ENV, postgres_url)
    with Store.open(tmp_path / "app", database_url=app_url) as store:
        assert store.schema_revision() == head_revision()
        assert privilege_warnings(store.db) == []
        run_id, model, fit_key = _finished_run(store)
        store.registry.register("sol", run_id, model, fit_key, "regression", ["logS"], {})
        store.api_keys.create("ci")
    with psycopg.connect(app_url, autocommit=True) as conn:
        for statement in (
            "DELETE FROM model_versions",
            "DROP TRIGGER alias_events_append_only ON alias_events",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("DELETE FROM api_keys").rowcount == 1  # not append-only


def test_a_dba_granted_the_owner_role_migrates_without_being_superuser(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    with Store.open(tmp_path / "seed", database_url=postgres_url):
        pass  # makes sure the roles exist on the server
    dba = _login_role(postgres_server, OWNER_ROLE)
    name = f"qemlflow_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(dba))
        )
    try:
        with Store.open(
            tmp_path / "dba", database_url=_as(postgres_server.url(name), dba)
        ) as store:
            warnings = privilege_warnings(store.db)
        assert any(f"may act as {OWNER_ROLE}" in w for w in warnings)
        app_url = _as(postgres_server.url(name), _login_role(postgres_server, APP_ROLE))
        with Store.open(tmp_path / "app", database_url=app_url) as store:
            store.audit_trail.append("note", {}, reason="after a DBA's migration")
            assert privilege_warnings(store.db) == []
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_store_migrate_on_sqlite_has_no_roles_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "s")
    assert main(["store", "migrate", "--store", store]) == 0
    out = capsys.readouterr().out
    assert f"store schema at revision {head_revision()}" in out and "roles" not in out
    assert main(["store", "migrate", "--store", store, "--owner-url", "postgresql://x@h/db"]) == 2
    assert "--owner-url is for PostgreSQL stores" in capsys.readouterr().err
    with Store.open(store) as opened:
        assert privilege_warnings(opened.db) == []


def test_the_app_role_may_not_set_up_the_roles(
    roles: Roles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QEMLFLOW_DATABASE_URL", roles.app_url)
    store = str(tmp_path / "app")
    args = ["store", "migrate", "--store", store]
    assert main([*args, "--owner-url", roles.app_url]) == 2
    error = capsys.readouterr().err
    assert f"role {roles.app_role} is not a member of qemlflow_owner" in error
    assert "store migrate --owner-url" in error and len(error.strip().splitlines()) == 1
    assert main([*args, "--owner-url", roles.superuser_url]) == 0
