"""The store's shared database (qemlflow.store.transactions): one engine for every
repository, atomic writes across a change and its audit event, id-prefix lookup."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from qemlflow.store import Store, StoreError, schema
from qemlflow.store.audit import append_event
from qemlflow.store.transactions import insert_ignore, row_by_id


def test_every_repository_shares_the_store_database(store: Store) -> None:
    repositories = [
        store.steps,
        store.datasets,
        store.runs,
        store.registry,
        store.api_keys,
        store.audit_trail,
        store.identities,
    ]
    assert all(repo._db is store.db for repo in repositories)
    assert store.db.engine is store._engine
    assert store.objects is store.blobs
    assert store.db.backend == store.backend


def test_a_change_and_its_audit_event_roll_back_together(store: Store) -> None:
    class BoomError(Exception):
        pass

    with pytest.raises(BoomError), store.db.writing() as conn:
        conn.execute(
            insert(schema.datasets).values(
                id="d" * 64,
                name="x",
                source="x.csv",
                table_digest=store.blobs.put_bytes(b"t"),
                params={},
                summary={},
                created_at="2026-01-01T00:00:00Z",
            )
        )
        append_event(conn, "dataset.added", {"dataset": "d" * 64})
        raise BoomError
    assert store.db.table_counts()["datasets"] == 0
    assert store.audit_trail.events() == []
    # A bad event name fails the whole transaction, the row written before it too.
    with pytest.raises(StoreError, match="dotted name"), store.db.writing() as conn:
        append_event(conn, "ok.event")
        append_event(conn, "bad event")
    assert store.audit_trail.events() == []


def test_a_repository_write_commits_with_its_event(store: Store) -> None:
    run_id = store.runs.create("demo", {}, 0, None)
    counts = store.db.table_counts()
    assert counts["runs"] == 1
    assert counts["audit_events"] == 2  # the owner's event, then run.started
    assert [e.action for e in store.audit_trail.events(object_ref=run_id)] == ["run.started"]


def test_insert_ignore_reports_whether_it_inserted(store: Store) -> None:
    digest = store.blobs.put_bytes(b"out")
    values = {
        "key": "a" * 64,
        "step": "split",
        "version": "1",
        "params": {},
        "inputs": [],
        "output": digest,
        "created_at": "2026-01-01T00:00:00Z",
        "seconds": 0.0,
        "libraries": None,
    }
    with store.db.changing() as conn:
        assert insert_ignore(conn, schema.steps, values) is True
        assert insert_ignore(conn, schema.steps, {**values, "step": "other"}) is False
        steps = conn.execute(select(schema.steps.c.step)).scalars().all()
    assert steps == ["split"]


def test_row_by_id_takes_an_id_or_a_unique_prefix(store: Store) -> None:
    first = store.runs.create("a", {}, 0, None)
    second = store.runs.create("b", {}, 0, None)
    with store.db.reading() as conn:
        assert row_by_id(conn, schema.runs, first, "run", "fix")["name"] == "a"
        assert row_by_id(conn, schema.runs, second.upper(), "run", "fix")["name"] == "b"
        with pytest.raises(StoreError, match="ambiguous"):
            row_by_id(conn, schema.runs, first[:4], "run", "fix")  # the same year
        with pytest.raises(StoreError, match="no run matches"):
            row_by_id(conn, schema.runs, "1999", "run", "fix")
        with pytest.raises(StoreError, match="empty run id"):
            row_by_id(conn, schema.runs, "  ", "run", "fix")
