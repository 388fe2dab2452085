"""The audit trail: events recorded with each change, append-only, and tamper-evident.

Every test that takes ``store`` or ``store_factory`` runs against SQLite and PostgreSQL
(the PostgreSQL variant needs the ``postgres_url`` fixture, tests/postgres_fixture.py).
Tampering bypasses the append-only triggers the way an administrator could: dropping them
(SQLite) or ``ALTER TABLE ... DISABLE TRIGGER ALL`` as superuser (PostgreSQL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from qemlflow.store import (
    AuditEvent,
    DatasetRecord,
    Store,
    StoreError,
    head_revision,
    schema,
    verify_audit_chain,
)
from qemlflow.store.audit import GENESIS_HASH, event_hash, next_event

MakeStore = Callable[[Path], Store]
OWNER = "store.owner"  # the first event of every store: its creator becomes its owner


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("QEMLFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("QEMLFLOW_HOME", raising=False)


def _actions(store: Store) -> list[str]:
    """The actions after the owner's event."""
    return [e.action for e in store.audit_events() if e.action != OWNER]


def _log_of(store: Store, n: int = 10) -> list[AuditEvent]:
    """The owner's event (seq 1), then ``test.e2`` to ``test.e<n>``: event i at seq i."""
    for i in range(1, n):
        store.audit(f"test.e{i + 1}", {"thing": f"{i + 1:064x}"}, details={"i": i + 1})
    events = store.audit_events()
    assert [e.seq for e in events] == list(range(1, n + 1)) and events[0].action == OWNER
    return events


@contextlib.contextmanager
def _triggers_off(store: Store) -> Iterator[Connection]:
    """A write transaction in which the append-only triggers do not fire."""
    with store._engine.begin() as conn:
        if store.backend == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER ALL")
            yield conn
            conn.exec_driver_sql("ALTER TABLE audit_events ENABLE TRIGGER ALL")
            return
        triggers = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        ).all()
        for name, _ in triggers:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
        yield conn
        for _, sql in triggers:
            conn.exec_driver_sql(sql)


def _replace(conn: Connection, event: AuditEvent) -> None:
    t = schema.audit_events
    conn.execute(delete(t).where(t.c.seq == event.seq))
    conn.execute(insert(t).values(**event.to_dict()))


def _resealed(event: AuditEvent, prev_hash: str, **changes: Any) -> AuditEvent:
    """``event`` with ``changes``, linked to ``prev_hash``, its hash recomputed (a forgery)."""
    changed = dataclasses.replace(event, prev_hash=prev_hash, **changes)
    return dataclasses.replace(changed, hash=event_hash(changed.content()))


# -- recording -----------------------------------------------------------------------


def test_store_operations_are_audited_in_order(store: Store, tmp_path: Path) -> None:
    table = store.put_bytes(b"smiles\nCCO\n")
    raw = store.put_bytes(b"raw,smiles\n1,CCO\n")
    dataset = DatasetRecord(
        id="d" * 64, name="esol", source="esol.csv", table_digest=table, raw_digest=raw
    )
    store.add_dataset(dataset)
    store.add_dataset(dataset)  # already there: no event
    env = store.put_json({"python": "3.11"})
    run_id = store.create_run("solubility", {"model": "rf"}, 7, env)
    metrics = {"task": "regression", "test": {"rmse": 0.7, "r2": float("nan")}, "n": {}}
    store.finish_run(run_id, metrics)
    failed = store.create_run("broken", {}, None, None)
    store.fail_run(failed, "ValueError: no molecules")
    registered = store.audit("model.registered", {"run": run_id}, reason="good enough")
    store.put_bytes(b"orphan")
    assert store.gc(grace_seconds=0, dry_run=True) != []
    removed = store.gc(grace_seconds=0)
    assert store.gc(grace_seconds=0) == []  # nothing removed: no event
    store.backup(tmp_path / "backup")

    events = store.audit_events()
    assert [e.action for e in events] == [
        OWNER,
        "dataset.added",
        "run.started",
        "run.finished",
        "run.started",
        "run.failed",
        "model.registered",
        "store.gc",
        "store.backup",
    ]
    assert [e.seq for e in events] == list(range(1, 10))
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    actor = store.principal.display
    assert all(e.actor == actor and e.timestamp.endswith("+00:00") for e in events)
    owner, added, started, finished, _, failed_event, registration, gc, backup = events
    assert added.objects == {"dataset": dataset.id, "raw": raw, "table": table}
    assert started.objects == {"run": run_id, "environment": env}
    assert started.details["name"] == "solubility" and started.details["seed"] == 7
    assert started.details["pid"] == os.getpid() and started.details["host"]
    assert finished.details == {"test": {"rmse": 0.7, "r2": None}}
    assert failed_event.objects == {"run": failed}
    assert failed_event.reason == "ValueError: no molecules"
    assert registration == registered and registration.reason == "good enough"
    assert gc.details["removed"] == 1 and gc.details["digests"] == removed
    assert backup.details["dest"] == str(tmp_path / "backup")
    assert backup.details["audit_head"] == {"seq": 8, "hash": gc.hash}
    assert backup.details["tables"]["audit_events"] == 8 and backup.details["blobs"] == 3

    report = store.verify_audit()
    assert report.ok and report.n_events == 9 and report.first_bad_seq is None
    assert report.to_dict()["head"] == {"seq": 9, "hash": backup.hash}
    assert store.verify().ok and store.verify().audit_events_checked == 9

    head = store.audit_head()
    assert head["seq"] == 9 and head["hash"] == backup.hash and head["events"] == 9
    assert head["store"] == owner.hash and head["timestamp"] == backup.timestamp


def test_reading_filters(store: Store) -> None:
    assert store.audit_events() == []
    assert store.audit_head() == {
        "seq": 0,
        "hash": GENESIS_HASH,
        "timestamp": None,
        "events": 0,
        "store": None,
    }
    assert store.verify_audit().ok
    run_id = store.create_run("r", {}, 0, None)
    store.finish_run(run_id, {"rmse": 1.0, "nested": {"x": 1}})
    digest = "ab" * 32
    store.audit("model.registered", {"model": digest, "run": run_id})
    assert [e.action for e in store.audit_events(object_ref=run_id)] == [
        "run.started",
        "run.finished",
        "model.registered",
    ]
    assert store.audit_events(object_ref=run_id)[1].details == {"rmse": 1.0}
    assert len(store.audit_events(object_ref=digest[:6])) == 1
    assert store.audit_events(object_ref=digest[:5]) == []  # too short for a prefix
    assert [e.action for e in store.audit_events(action="run.*")] == [
        "run.started",
        "run.finished",
    ]
    assert len(store.audit_events(action="model.registered")) == 1
    first = store.audit_events()[0]
    assert first.action == OWNER
    assert len(store.audit_events(since=first.timestamp[:10])) == 4
    assert len(store.audit_events(since=first.timestamp)) == 4
    assert store.audit_events(since="2999-01-01") == []
    with pytest.raises(StoreError, match="ISO"):
        store.audit_events(since="last tuesday")


def test_bad_events_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="dotted name"):
        store.audit("")
    with pytest.raises(StoreError, match="dotted name"):
        store.audit("run finished; drop table")
    with pytest.raises(StoreError, match="string"):
        store.audit("x.y", {"run": 3})  # type: ignore[dict-item]
    with pytest.raises(StoreError, match="canonical JSON"):
        store.audit("x.y", details={"what": object()})
    assert store.audit_events() == []  # nothing half-written
    event = store.audit("x.y", details={"score": float("nan")})
    assert event.details == {"score": None} and event.actor == store.principal.display


def test_update_delete_and_truncate_are_refused(store: Store) -> None:
    _log_of(store, 3)
    t = schema.audit_events
    with pytest.raises(DBAPIError, match="append-only"), store._engine.begin() as conn:
        conn.execute(update(t).where(t.c.seq == 2).values(actor="Eve"))
    with pytest.raises(DBAPIError, match="append-only"), store._engine.begin() as conn:
        conn.execute(delete(t).where(t.c.seq == 3))
    with pytest.raises(DBAPIError, match="append-only"), store._engine.begin() as conn:
        conn.execute(delete(t))
    if store.backend == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), store._engine.begin() as conn:
            conn.exec_driver_sql("TRUNCATE audit_events")
    report = store.verify_audit()
    assert report.ok and report.n_events == 3


def test_the_audit_event_commits_with_its_change(store: Store) -> None:
    run_id = store.create_run("r", {}, 0, None)
    store.finish_run(run_id, {})
    with pytest.raises(StoreError, match="already finished"):
        store.fail_run(run_id, "late")  # refused: no event either
    assert _actions(store) == ["run.started", "run.finished"]
    with pytest.raises(StoreError, match="dotted name"), store._writing() as conn:
        store._audit(conn, "ok.event")
        store._audit(conn, "bad event")  # the whole transaction rolls back
    assert _actions(store) == ["run.started", "run.finished"]


# -- tampering -----------------------------------------------------------------------


def test_untouched_log_verifies(store: Store) -> None:
    events = _log_of(store)
    anchor = store.audit_head()
    report = store.verify_audit(anchor=anchor)
    assert report.ok and report.anchored and report.head == (10, events[-1].hash)
    assert all(e.signature is not None for e in events)


def test_edited_event_is_named(store: Store) -> None:
    events = _log_of(store)
    t = schema.audit_events
    with _triggers_off(store) as conn:
        conn.execute(update(t).where(t.c.seq == 4).values(actor="Eve <eve@evil.org>"))
    report = store.verify_audit()
    assert not report.ok and report.first_bad_seq == 4
    assert report.problems[0].startswith(f"event 4 (test.e4 at {events[3].timestamp})")
    assert any("signature does not verify" in p for p in report.problems)
    assert "the event was edited" in report.problems[0]
    verify = store.verify()
    assert not verify.ok and verify.issues[0].object == "audit trail"

    with _triggers_off(store) as conn:  # the details of another, earlier event too
        conn.execute(update(t).where(t.c.seq == 2).values(details={"i": 99}))
    assert store.verify_audit().first_bad_seq == 2


def test_deleted_event_is_named(store: Store) -> None:
    _log_of(store)
    t = schema.audit_events
    with _triggers_off(store) as conn:
        conn.execute(delete(t).where(t.c.seq == 5))
    report = store.verify_audit()
    assert report.first_bad_seq == 5 and report.problems[0].startswith("event 5 is missing")
    assert any("event 6" in p and "prev_hash" in p for p in report.problems)


def test_forged_events_are_named(store: Store) -> None:
    events = _log_of(store)
    # appended at the end, self-consistent, but not linked to the real head
    forged = next_event(events[6], "signature", {"run": "x"}, actor="Eve")
    forged = dataclasses.replace(forged, seq=11)  # the real head is event 10
    forged = dataclasses.replace(forged, hash=event_hash(forged.content()))
    with _triggers_off(store) as conn:
        conn.execute(insert(schema.audit_events).values(**forged.to_dict()))
    report = store.verify_audit()
    assert report.first_bad_seq == 11 and "prev_hash" in report.problems[0]


def test_replaced_event_is_caught_at_the_broken_link(store: Store) -> None:
    events = _log_of(store)
    # event 5 deleted and re-inserted: new content, its own hash right, linked to event 4
    with _triggers_off(store) as conn:
        _replace(conn, _resealed(events[4], events[3].hash, actor="Eve <eve@evil.org>"))
    report = store.verify_audit()
    # its hash is right, but it was signed by no enrolled key: named at once
    assert report.first_bad_seq == 5
    assert "signature does not verify" in report.problems[0]
    assert any("event 5 was replaced" in p for p in report.problems)
    # an anchor at event 5 pins it down
    assert store.verify_audit(anchor={"seq": 5, "hash": events[4].hash}).first_bad_seq == 5


def test_swapped_events_are_named(store: Store) -> None:
    events = _log_of(store)
    with _triggers_off(store) as conn:
        _replace(conn, dataclasses.replace(events[6], seq=3))
        _replace(conn, dataclasses.replace(events[2], seq=7))
    report = store.verify_audit()
    assert report.first_bad_seq == 3 and "edited" in report.problems[0]
    assert any(p.startswith("event 7") for p in report.problems)


def test_truncated_tail_is_caught_with_an_anchor(store: Store) -> None:
    _log_of(store)
    anchor = store.audit_head()
    t = schema.audit_events
    with _triggers_off(store) as conn:
        conn.execute(delete(t).where(t.c.seq >= 8))
    assert store.verify_audit().ok  # without an anchor a shorter log looks whole
    report = store.verify_audit(anchor=anchor)
    assert not report.ok and report.first_bad_seq == 8
    assert "truncated" in report.problems[0] and "events 8 to 10" in report.problems[0]


def test_rewritten_chain_is_caught_with_an_anchor(store: Store) -> None:
    events = _log_of(store)
    anchor = store.audit_head()
    # edit event 4, then recompute every hash after it: a consistent, fake chain
    fake = events[:3]
    for event in events[3:]:
        changes: dict[str, Any] = {"details": {"i": -1}} if event.seq == 4 else {}
        fake.append(_resealed(event, fake[-1].hash, **changes))
    with _triggers_off(store) as conn:
        for event in fake[3:]:
            _replace(conn, event)
    # The hashes agree, but the events' signatures do not: forged without the owner's key.
    assert any("signature does not verify" in p for p in store.verify_audit().problems)
    report = store.verify_audit(anchor=anchor)
    assert report.first_bad_seq == 4
    assert any("rewritten at or before event 10" in p for p in report.problems)
    assert (
        store.verify_audit(anchor={**anchor, "seq": 3, "hash": events[2].hash}).first_bad_seq == 4
    )

    # rewritten from the very first event: the anchor's store id no longer matches
    first = _resealed(events[0], GENESIS_HASH, actor="Eve")
    with _triggers_off(store) as conn:
        _replace(conn, first)
        _replace(conn, _resealed(fake[1], first.hash))
    assert store.verify_audit(anchor=anchor).first_bad_seq == 1


def test_verify_audit_chain_pure() -> None:
    a = next_event(None, "a.one", actor="Ada")
    b = next_event(a, "a.two", actor="Ada")
    c = next_event(b, "a.three", actor="Ada")
    assert verify_audit_chain([a, b, c]).ok
    assert verify_audit_chain([]).ok and verify_audit_chain([]).head == (0, GENESIS_HASH)
    reordered = verify_audit_chain([a, c, b])
    assert reordered.first_bad_seq == 2 and "out of order" in reordered.problems[0]
    duplicated = verify_audit_chain([a, b, b, c])
    assert duplicated.first_bad_seq == 2
    assert verify_audit_chain([b, c]).first_bad_seq == 1  # the first event is missing

    def no_eve(events: Any) -> list[tuple[int, str]]:
        return [(e.seq, f"event {e.seq}: signed by Eve") for e in events if e.action == "a.two"]

    checked = verify_audit_chain([a, b, c], checks=(no_eve,))
    assert checked.first_bad_seq == 2 and checked.problems == ("event 2: signed by Eve",)
    with pytest.raises(StoreError, match="anchor"):
        verify_audit_chain([a], anchor={"seq": "x"})


def test_store_verify_audit_passes_checks(store: Store) -> None:
    _log_of(store, 3)

    def flag_second(events: Any) -> list[tuple[int, str]]:
        return [(2, "event 2: bad signature")]

    report = store.verify_audit(checks=(flag_second,))
    assert report.first_bad_seq == 2 and report.problems == ("event 2: bad signature",)


# -- backup, restore, migration ------------------------------------------------------


def test_restore_copies_the_trail_and_appends(store_factory: MakeStore, tmp_path: Path) -> None:
    source = store_factory(tmp_path / "source")
    run_id = source.create_run("r", {}, 0, None)
    source.finish_run(run_id, {"rmse": 1.0})
    before = source.audit_events()
    assert source.backup(tmp_path / "backup").ok
    target = store_factory(tmp_path / "target")
    report = target.restore(tmp_path / "backup")
    assert report.ok, report.problems
    events = target.audit_events()
    assert events[:3] == before  # verbatim (the owner's event, the run's two)
    assert events[3].action == "store.restore" and events[3].prev_hash == before[-1].hash
    assert events[3].details["audit_head"] == {"seq": 3, "hash": before[-1].hash}
    assert target.verify_audit(anchor=source.audit_head() | {"seq": 3, "hash": before[-1].hash}).ok
    assert target.audit_head()["store"] == source.audit_head()["store"]
    assert target.verify().ok


def test_a_store_at_revision_0001_is_upgraded(tmp_path: Path) -> None:
    from alembic import command

    from qemlflow.store.database import _alembic_config, create_store_engine

    root = tmp_path / "old"
    root.mkdir()
    engine = create_store_engine(f"sqlite:///{root / 'metadata.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0001")
    engine.dispose()
    with Store.open(root) as store:
        assert store.schema_revision() == head_revision()
        store.create_run("r", {}, 0, None)
        assert _actions(store) == ["run.started"] and store.verify_audit().ok


def test_a_chain_hashed_before_rfc_8785_still_verifies_and_grows(tmp_path: Path) -> None:
    """Events written at revision 0003 were hashed over Python's json.dumps: they verify
    with that legacy encoder after the upgrade, and new events (JCS) extend their chain."""
    from alembic import command
    from sqlalchemy import select

    from qemlflow.store import schema
    from qemlflow.store.database import _alembic_config, create_store_engine
    from qemlflow.store.keys import legacy_canonical_json, sha256_hex

    root = tmp_path / "old"
    root.mkdir()
    engine = create_store_engine(f"sqlite:///{root / 'metadata.db'}")
    # As QeMLflow wrote them before: the hash over the legacy bytes; 1.0 stays "1.0".
    content = {
        "seq": 1,
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "actor": "Ada",
        "action": "store.gc",
        "objects": {},
        "reason": None,
        "details": {"grace_seconds": 3600.0, "removed": 0},
        "prev_hash": GENESIS_HASH,
    }
    legacy_hash = sha256_hex(legacy_canonical_json(content))
    assert legacy_hash != event_hash(content)  # the float: the two encoders differ here
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
        conn.execute(
            text(
                "INSERT INTO audit_events (seq, timestamp, actor, action, objects, reason, "
                "details, prev_hash, hash) VALUES (1, :timestamp, :actor, :action, '{}', NULL, "
                ":details, :prev_hash, :hash)"
            ),
            {**content, "details": json.dumps(content["details"]), "hash": legacy_hash},
        )
    engine.dispose()
    with Store.open(root) as store:
        store.create_run("r", {}, 0, None)
        events = store.audit_events()
        # The first write after the upgrade makes the acting OS account the owner.
        assert [e.action for e in events] == ["store.gc", OWNER, "run.started"]
        assert [e.hash_scheme for e in events] == ["legacy-json", "jcs-signed", "jcs-signed"]
        assert events[1].prev_hash == legacy_hash and events[0].signature is None
        assert store.verify_audit().ok
        with store._engine.connect() as conn:
            schemes = conn.execute(select(schema.audit_events.c.hash_scheme)).scalars().all()
        assert schemes == [None, "jcs-signed", "jcs-signed"]  # old rows untouched
        # A legacy event edited (the float changed) no longer verifies.
        with _triggers_off(store) as conn:
            conn.execute(
                update(schema.audit_events)
                .where(schema.audit_events.c.seq == 1)
                .values(details={"grace_seconds": 3601.0, "removed": 0})
            )
        report = store.verify_audit()
        assert not report.ok and report.first_bad_seq == 1


# -- concurrency and crashes ---------------------------------------------------------

_WORKER = """
from qemlflow.store import Store, DatasetRecord
store = Store.open(root)
table = store.put_bytes(b"smiles\\nC\\n")
store.add_dataset(DatasetRecord(id="e" * 64, name="shared", source="s", table_digest=table))
for r in range(3):
    run_id = store.create_run(f"w{worker}-{r}", {"worker": worker}, r, None)
    store.audit("model.registered", {"run": run_id}, details={"worker": worker})
    store.finish_run(run_id, {"worker": worker})
store.close()
"""


def test_eight_concurrent_processes_keep_one_chain(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=exec, args=(_WORKER, {"root": str(store.root), "worker": i}))
        for i in range(8)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0] * 8
    events = store.audit_events()
    assert len(events) == 2 + 8 * 3 * 3  # the owner, the shared dataset added once
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert _actions(store).count("dataset.added") == 1
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    report = store.verify_audit()
    assert report.ok, report.problems


_KILLED_CHILD = """
import os, signal
from qemlflow.store import Store
store = Store.open(root)
store.create_run("doomed", {}, 1, None)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkilled_run_gets_an_aborted_event(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=exec, args=(_KILLED_CHILD, {"root": str(store.root)}))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    (run,) = store.list_runs()
    assert run.status == "aborted"
    started, aborted = store.audit_events(object_ref=run.id)
    assert (started.action, aborted.action) == ("run.started", "run.aborted")
    assert aborted.reason == f"process {child.pid} on {run.host} is gone"
    assert store.mark_aborted_runs() == [] and len(store.audit_events()) == 3  # + the owner
    assert store.verify_audit().ok
