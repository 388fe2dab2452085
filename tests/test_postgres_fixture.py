"""The PostgreSQL test fixtures start a real server and hand out isolated databases."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, InternalError, ProgrammingError


def _engine(url: str) -> Engine:
    assert url.startswith("postgresql://")
    return create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))


def test_server_is_real_postgresql(postgres_server, postgres_url) -> None:
    assert postgres_server.host == "127.0.0.1"
    assert postgres_server.superuser == "postgres"
    assert postgres_server.admin_url == (
        f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"
    )
    assert postgres_url.startswith(f"postgresql://postgres@127.0.0.1:{postgres_server.port}/")
    engine = _engine(postgres_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(text("SELECT version()")).scalar_one()
            database = conn.execute(text("SELECT current_database()")).scalar_one()
            fsync = conn.execute(text("SHOW fsync")).scalar_one()
        assert "PostgreSQL" in version
        assert postgres_url.endswith(f"/{database}")
        assert fsync == "off"
    finally:
        engine.dispose()


def test_committed_row_is_visible_to_a_second_connection(postgres_url) -> None:
    engine = _engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE runs (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(text("INSERT INTO runs (name) VALUES ('first')"))
        with engine.connect() as writer, engine.connect() as reader:
            writer.execute(text("INSERT INTO runs (name) VALUES ('second')"))
            # Not committed yet: the other connection must not see it.
            count = reader.execute(text("SELECT count(*) FROM runs")).scalar_one()
            assert count == 1
            reader.rollback()
            writer.commit()
            names = reader.execute(text("SELECT name FROM runs ORDER BY id")).scalars().all()
            assert names == ["first", "second"]
    finally:
        engine.dispose()


def _database_names(admin_url: str) -> set[str]:
    engine = _engine(admin_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()


def test_each_postgres_url_is_a_separate_empty_database(postgres_server, postgres_url) -> None:
    first = postgres_url
    # Request a second one by hand from the same server, exactly as the fixture would.
    import uuid

    import psycopg

    second_name = f"qemlflow_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{second_name}"')
    second = postgres_server.url(second_name)
    assert first != second

    one, two = _engine(first), _engine(second)
    try:
        with one.begin() as conn:
            conn.execute(text("CREATE TABLE only_here (x int)"))
            conn.execute(text("INSERT INTO only_here VALUES (1)"))
        with two.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert tables == 0
            with pytest.raises(ProgrammingError, match="only_here"):
                conn.execute(text("SELECT * FROM only_here"))
    finally:
        one.dispose()
        two.dispose()
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{second_name}" WITH (FORCE)')


_seen_urls: list[str] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_postgres_url_is_fresh_for_every_test(postgres_server, postgres_url, round_) -> None:
    """Two tests get two different databases; the previous one has been dropped."""
    engine = _engine(postgres_url)
    try:
        with engine.begin() as conn:
            assert (
                conn.execute(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                ).scalar_one()
                == 0
            )
            conn.execute(text("CREATE TABLE leftover (x int)"))
    finally:
        engine.dispose()
    assert postgres_url not in _seen_urls
    existing = _database_names(postgres_server.admin_url)
    for previous in _seen_urls:
        assert previous.rsplit("/", 1)[1] not in existing
    _seen_urls.append(postgres_url)


def test_plpgsql_trigger_can_refuse_updates(postgres_url) -> None:
    engine = _engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE audit (id int PRIMARY KEY, note text)"))
            conn.execute(
                text(
                    """
                    CREATE FUNCTION refuse_update() RETURNS trigger
                    LANGUAGE plpgsql AS $$
                    BEGIN
                        RAISE EXCEPTION 'audit rows are append-only (id %)', OLD.id;
                    END;
                    $$
                    """
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_update()"
                )
            )
            conn.execute(text("INSERT INTO audit VALUES (1, 'kept')"))
        with engine.connect() as conn:
            with pytest.raises((InternalError, DBAPIError), match="append-only"):
                conn.execute(text("UPDATE audit SET note = 'changed' WHERE id = 1"))
            conn.rollback()
            note = conn.execute(text("SELECT note FROM audit WHERE id = 1")).scalar_one()
        assert note == "kept"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_binaries_fail_in_ci_and_skip_elsewhere(monkeypatch, ci, outcome) -> None:
    from tests import postgres_fixture

    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"\.ci/install-postgres\.sh"):
        postgres_fixture._missing("PostgreSQL server binaries were not found")
