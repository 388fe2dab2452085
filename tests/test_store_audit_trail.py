"""The audit trail repository (``store.audit_trail``): append, read, head, verify."""

from __future__ import annotations

from sqlalchemy import text

from qemlflow.store import Store


def test_append_chains_events_and_verify_accepts_them(store: Store) -> None:
    first = store.audit_trail.append("run.started", {"run": "r1"}, reason="started")
    second = store.audit_trail.append("model.registered", {"model": "ab" * 32})
    assert (first.seq, second.seq) == (2, 3)  # 1: the owner's event, at the first write
    assert second.prev_hash == first.hash
    owner = store.audit_trail.events()[0]
    assert owner.action == "store.owner" and first.prev_hash == owner.hash
    assert store.audit_trail.events() == [owner, first, second]
    assert {e.actor for e in (owner, first, second)} == {store.principal.display}
    report = store.audit_trail.verify()
    assert report.ok, report.problems
    assert store.verify_audit().ok


def test_events_filter_by_object_action_and_time(store: Store) -> None:
    store.audit_trail.append("run.started", {"run": "20260101-000000-aaaaaa"})
    store.audit_trail.append("run.finished", {"run": "20260101-000000-aaaaaa"})
    store.audit_trail.append("dataset.added", {"dataset": "d" * 64})
    assert len(store.audit_trail.events(object_ref="20260101-000000-aaaaaa")) == 2
    assert [e.action for e in store.audit_trail.events(action="run.*")] == [
        "run.started",
        "run.finished",
    ]
    assert len(store.audit_trail.events(object_ref="dddddd")) == 1  # a 6-character prefix
    assert store.audit_trail.events(since="2999-01-01") == []


def test_head_anchors_the_chain(store: Store) -> None:
    assert store.audit_trail.head()["seq"] == 0
    store.audit_trail.append("model.registered", {"run": "r"})
    head = store.audit_trail.head()
    assert head["seq"] == 2 and head["events"] == 2
    store.audit_trail.append("model.registered", {"run": "r"})
    assert store.audit_trail.verify(anchor=head).ok  # growth past the anchor is fine
    forged = {**head, "hash": "0" * 64}
    assert not store.audit_trail.verify(anchor=forged).ok


def test_verify_reports_a_missing_trigger(store: Store) -> None:
    store.audit_trail.append("model.registered", {"run": "r"})
    if store.backend == "sqlite":
        with store.db.changing() as conn:
            names = (
                conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
                .scalars()
                .all()
            )
            conn.execute(text(f'DROP TRIGGER "{names[0]}"'))
    else:
        with store.db.changing() as conn:
            name = conn.execute(
                text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal LIMIT 1")
            ).scalar_one()
            table = conn.execute(
                text("SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = :n"),
                {"n": name},
            ).scalar_one()
            conn.execute(text(f'DROP TRIGGER "{name}" ON {table}'))
    report = store.audit_trail.verify()
    assert not report.ok
    assert any("trigger" in p for p in report.problems)
