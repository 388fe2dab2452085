"""Signed checkpoints of the audit chain head (``store.checkpoints``): a truncated tail, a
rewritten log and a forged checkpoint fail verification without an external anchor."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError

from qemlflow.audit.errors import AuthorityError
from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal
from qemlflow.store import Store, schema
from qemlflow.store.audit import AuditEvent, append_event, next_event, verify_audit_chain
from qemlflow.store.checkpoints import (
    CHECKPOINT_EVERY,
    Checkpoint,
    checkpoint_findings,
    checkpoint_message,
    verified_checkpoint,
)
from qemlflow.store.identities import rotation_message


def _principal(name: str = "Ada Lovelace", email: str = "ada@lab.org") -> Principal:
    return Principal.from_private_key(Ed25519PrivateKey.generate(), name, email, AUTH_PASSPHRASE)


def _lookup(*principals: Principal) -> dict[str, str]:
    """Keys by fingerprint (``.get`` is a key lookup for the checks alone)."""
    return {p.fingerprint: p.public_key for p in principals}


@pytest.fixture(params=["sqlite", "postgresql"])
def owned(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Principal]]:
    """A new store, on each backend, and its owner Ada (a passphrase identity): the first
    write makes her the owner (event 1, ``store.owner``); she signs every event after."""
    ada = _principal()
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    store = Store.open(tmp_path / "store", database_url=url, principal=ada)
    yield store, ada
    store.close()


def _grow_to(store: Store, head: int, batch: int = 50) -> None:
    """Append events (signed by the store's principal) until the head is at seq ``head``."""
    while store.audit_trail.head()["seq"] < head:
        with store.db.writing() as conn:
            for _ in range(batch):
                event = append_event(conn, "run.started", {"run": "run-x"})
                if event.seq >= head:
                    break


def _delete_events_from(store: Store, first: int) -> None:
    """Delete the events from seq ``first`` on as an attacker with access to the database
    would: around the triggers, which are put back afterwards so that the trigger check
    of ``verify`` sees nothing amiss."""
    with store.db.changing() as conn:
        if store.backend == "sqlite":
            triggers = conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'audit_events'"
                )
            ).all()
            for name, _ in triggers:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
            conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": first})
            for _, sql in triggers:
                conn.execute(text(sql))
        else:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
            conn.execute(text("DELETE FROM audit_events WHERE seq >= :s"), {"s": first})
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


# -- on real stores ------------------------------------------------------------------


def test_checkpoints_pin_the_head_every_100_events(owned: tuple[Store, Principal]) -> None:
    store, ada = owned
    _grow_to(store, 250)
    checkpoints = store.checkpoints.list()
    assert [c.seq for c in checkpoints] == [100, 200]
    events = {e.seq: e for e in store.audit_trail.events()}
    for checkpoint in checkpoints:
        assert checkpoint.hash == events[checkpoint.seq].hash
        assert (checkpoint.signer, checkpoint.auth) == (ada.fingerprint, AUTH_PASSPHRASE)
        signed = checkpoint.message(store=events[1].hash)
        assert ada.verify(signed, base64.b64decode(checkpoint.signature))
    assert store.checkpoints.latest() == checkpoints[-1]
    report = store.audit_trail.verify()  # keys as the chain enrolls them
    assert report.ok, report.problems
    assert report.checkpoint == 200
    assert report.to_dict()["checkpoint"] == 200


def test_a_tail_truncated_after_a_checkpoint_fails_verify(owned: tuple[Store, Principal]) -> None:
    store, _ = owned
    _grow_to(store, 250)
    _delete_events_from(store, 150)
    events = store.audit_trail.events()
    assert events[-1].seq == 149
    assert verify_audit_chain(events).ok  # the chain alone: a shorter, valid, signed chain
    report = store.audit_trail.verify()
    assert not report.ok
    assert report.first_bad_seq == 150
    assert report.problems == (
        "events 150..200 missing: the log ends at event 149, but checkpoint 200 pins event "
        "200 - the tail was truncated after checkpoint 200",
    )
    assert report.checkpoint == 100  # the latest checkpoint the log still agrees with


def test_a_truncation_before_the_first_checkpoint_goes_unseen_without_an_anchor(
    owned: tuple[Store, Principal],
) -> None:
    # The documented limit: a log that has not reached CHECKPOINT_EVERY events has no
    # checkpoint, so a cut-off tail leaves a valid, shorter chain. An anchor catches it.
    store, _ = owned
    _grow_to(store, 60)
    anchor = store.audit_trail.head()
    _delete_events_from(store, 41)
    assert store.checkpoints.list() == []
    report = store.audit_trail.verify()
    assert report.ok and report.n_events == 40 and report.checkpoint is None
    assert not store.audit_trail.verify(anchor=anchor).ok


def test_a_checkpoint_with_a_bad_signature_is_forged(owned: tuple[Store, Principal]) -> None:
    store, _ = owned
    _grow_to(store, 120)
    good = store.checkpoints.list()[0]
    forged = dataclasses.replace(
        good,
        seq=110,
        hash=store.audit_trail.events()[109].hash,
        signature=base64.b64encode(bytes(64)).decode(),
    )
    with store.db.changing() as conn:  # INSERT passes the append-only triggers
        conn.execute(insert(schema.audit_checkpoints).values(**forged.to_dict()))
    report = store.audit_trail.verify()
    assert not report.ok
    assert report.first_bad_seq == 110
    assert len(report.problems) == 1
    assert "checkpoint 110" in report.problems[0]
    assert "signature does not verify" in report.problems[0]
    assert report.checkpoint == 100


def test_a_checkpoint_by_a_key_not_enrolled_at_its_seq_is_forged(
    owned: tuple[Store, Principal],
) -> None:
    store, _ = owned
    eve = _principal("Eve Mallory", "eve@lab.org")
    _grow_to(store, 30)
    with pytest.raises(AuthorityError, match="not enrolled"):
        store.audit_trail.checkpoint(eve)
    # Eve writes one anyway, around the store (a valid signature by her own key) ...
    store_id = store.audit_trail.events()[0].hash
    head = store.audit_trail.head()
    message = checkpoint_message(30, head["hash"], head["timestamp"], eve.fingerprint, store_id)
    row = Checkpoint(
        seq=30,
        hash=head["hash"],
        timestamp=head["timestamp"],
        signer=eve.fingerprint,
        auth=eve.auth,
        signature=base64.b64encode(eve.sign(message)).decode(),
        public_key=eve.public_key,
    )
    with store.db.changing() as conn:
        conn.execute(insert(schema.audit_checkpoints).values(**row.to_dict()))
    # ... and even once she is enrolled (at event 31), it predates her key.
    store.identities.enroll(
        name=eve.name,
        email=eve.email,
        public_key=eve.public_key,
        role="contributor",
        auth=AUTH_PASSPHRASE,
    )
    report = store.audit_trail.verify()
    assert not report.ok
    assert report.problems == (
        f"checkpoint 30 (written {head['timestamp']}): signed by key {eve.fingerprint[:16]}, "
        "which is not enrolled in this store at event 30 - the checkpoint was forged",
    )
    assert store.audit_trail.checkpoint(eve) is not None  # enrolled now: her pin of event 31
    assert store.audit_trail.verify().problems == report.problems


def test_a_checkpoint_by_a_key_rotated_away_is_forged(tmp_path: Path) -> None:
    old_key = Ed25519PrivateKey.generate()
    ada = Principal.from_private_key(old_key, "Ada Lovelace", "ada@lab.org", AUTH_PASSPHRASE)
    new_key = Ed25519PrivateKey.generate()
    renewed = Principal.from_private_key(new_key, ada.name, ada.email, AUTH_PASSPHRASE)
    with Store.open(tmp_path / "store", principal=ada) as store:
        _grow_to(store, 120)
        proof = renewed.sign(rotation_message(ada.email, ada.fingerprint, renewed.fingerprint))
        store.identities.rotate(renewed.public_key, base64.b64encode(proof).decode())
    with Store.open(tmp_path / "store", principal=renewed) as store:
        _grow_to(store, 200)
        assert [c.signer for c in store.checkpoints.list()] == [
            ada.fingerprint,
            renewed.fingerprint,
        ]
        assert store.audit_trail.verify().ok  # checkpoint 100 predates the rotation
        # the old key, leaked after the rotation, signs a checkpoint of a later event
        event = store.audit_trail.events()[149]
        store_id = store.audit_trail.events()[0].hash
        message = checkpoint_message(150, event.hash, event.timestamp, ada.fingerprint, store_id)
        late = Checkpoint(
            seq=150,
            hash=event.hash,
            timestamp=event.timestamp,
            signer=ada.fingerprint,
            auth=ada.auth,
            signature=base64.b64encode(ada.sign(message)).decode(),
        )
        with store.db.changing() as conn:
            conn.execute(insert(schema.audit_checkpoints).values(**late.to_dict()))
        report = store.audit_trail.verify()
        assert len(report.problems) == 1
        assert "not enrolled in this store at event 150" in report.problems[0]
        assert report.checkpoint == 200


def test_the_checkpoints_table_is_append_only(owned: tuple[Store, Principal]) -> None:
    store, _ = owned
    _grow_to(store, 100)
    statements = [
        "UPDATE audit_checkpoints SET hash = 'x' WHERE seq = 100",
        "DELETE FROM audit_checkpoints WHERE seq = 100",
    ]
    if store.backend == "postgresql":
        statements.append("TRUNCATE audit_checkpoints")
    for statement in statements:
        refused = pytest.raises(DBAPIError, match="audit_checkpoints is append-only")
        with refused, store.db.changing() as conn:
            conn.execute(text(statement))
    assert [c.seq for c in store.checkpoints.list()] == [100]


def test_verify_reports_a_missing_checkpoint_trigger(owned: tuple[Store, Principal]) -> None:
    store, _ = owned
    _grow_to(store, 2)
    with store.db.changing() as conn:
        if store.backend == "sqlite":
            conn.execute(text("DROP TRIGGER audit_checkpoints_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints"))
    problems = store.audit_trail.verify().problems
    assert len(problems) == 1 and "on audit_checkpoints is missing" in problems[0]


def test_an_explicit_checkpoint_pins_the_head_once(owned: tuple[Store, Principal]) -> None:
    store, ada = owned
    assert store.audit_trail.checkpoint() is None  # an empty log: nothing to pin
    _grow_to(store, 7)
    checkpoint = store.audit_trail.checkpoint()  # the store's acting identity signs
    assert checkpoint is not None and (checkpoint.seq, checkpoint.signer) == (7, ada.fingerprint)
    assert store.audit_trail.checkpoint() == checkpoint  # no event since: the same pin
    with store.db.writing() as conn:  # the repository writes in the caller's transaction
        append_event(conn, "run.finished", {"run": "run-x"})
        assert store.checkpoints.write(conn) is not None
    assert store.checkpoints.create() is not None
    assert [c.seq for c in store.checkpoints.list()] == [7, 8]
    assert store.audit_trail.verify().checkpoint == 8


def test_audit_verify_names_the_checkpoint_it_checked(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    with Store.open(folder, principal=_principal()) as store:
        _grow_to(store, 250)

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "qemlflow", "audit", "verify", "--store", str(folder)]
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=120, check=False
        )

    sound = verify()
    assert sound.returncode == 0, sound.stdout + sound.stderr
    assert "checked against checkpoint at event 200" in sound.stdout
    assert json.loads(verify("--json").stdout)["checkpoint"] == 200
    with Store.open(folder) as store:
        _delete_events_from(store, 150)
    truncated = verify()
    assert truncated.returncode == 1
    out = " ".join(truncated.stdout.split())  # rich wraps long lines
    assert "the tail was truncated after checkpoint 200" in out
    assert "checked against checkpoint at event 100" in out


def test_a_restore_keeps_the_checkpoints_and_may_make_one(tmp_path: Path) -> None:
    ada = _principal()
    with Store.open(tmp_path / "source", principal=ada) as source:
        _grow_to(source, CHECKPOINT_EVERY - 1)
        source.audit_trail.checkpoint()  # pins event 99
        assert source.backup(tmp_path / "backup").ok  # the backup holds events 1..99
    with Store.open(tmp_path / "target", principal=ada) as target:
        restored = target.restore(tmp_path / "backup")  # its own event is the 100th
        assert restored.ok, restored.problems
        assert [c.seq for c in target.checkpoints.list()] == [99, 100]
        report = target.audit_trail.verify()
        assert report.ok, report.problems
        assert report.checkpoint == 100


# -- the checks alone ------------------------------------------------------------------


def _chain(count: int, actor: str = "Ada") -> list[AuditEvent]:
    events = [next_event(None, "run.started", {"run": "r1"}, actor=actor)]
    for i in range(2, count + 1):
        events.append(next_event(events[-1], "run.started", {"run": f"r{i}"}, actor=actor))
    return events


def _signed(principal: Principal, seq: int, digest: str, store: str) -> Checkpoint:
    timestamp = "2026-11-30T12:00:00.000000+00:00"
    message = checkpoint_message(seq, digest, timestamp, principal.fingerprint, store)
    return Checkpoint(
        seq=seq,
        hash=digest,
        timestamp=timestamp,
        signer=principal.fingerprint,
        auth=principal.auth,
        signature=base64.b64encode(principal.sign(message)).decode(),
    )


def test_a_checkpoint_whose_hash_differs_shows_a_rewritten_log() -> None:
    ada = _principal()
    original = _chain(5)
    pinned = _signed(ada, 5, original[4].hash, original[0].hash)
    keys = _lookup(ada).get
    assert checkpoint_findings(original, [pinned], keys) == []
    assert verified_checkpoint(original, [pinned], keys) == 5
    # event 3 edited, and the chain recomputed from there: a valid chain, another head
    rewritten = original[:2]
    for i in range(3, 6):
        rewritten.append(next_event(rewritten[-1], "run.started", {"run": f"x{i}"}, actor="Eve"))
    assert verify_audit_chain(rewritten).ok
    findings = checkpoint_findings(rewritten, [pinned], keys)
    assert len(findings) == 1 and findings[0][0] == 5
    assert "the log was rewritten at or before event 5" in findings[0][1]
    assert verified_checkpoint(rewritten, [pinned], keys) is None


def test_a_checkpoint_is_bound_to_its_store() -> None:
    ada = _principal()
    ours, theirs = _chain(3), _chain(3, actor="Bob")
    assert ours[0].hash != theirs[0].hash  # another event 1: another store
    carried = _signed(ada, 3, ours[2].hash, theirs[0].hash)  # signed for the other store
    carried = dataclasses.replace(carried, hash=ours[2].hash)
    findings = checkpoint_findings(ours, [carried], _lookup(ada).get)
    assert [seq for seq, _ in findings] == [3]
    assert "signature does not verify" in findings[0][1]


def test_a_fully_emptied_log_still_names_the_truncation() -> None:
    ada = _principal()
    events = _chain(100)
    pinned = _signed(ada, 100, events[99].hash, events[0].hash)
    findings = checkpoint_findings([], [pinned], _lookup(ada).get)
    assert findings[0] == (
        1,
        "events 1..100 missing: the log ends at event 0, but checkpoint 100 pins event 100 "
        "- the tail was truncated after checkpoint 100",
    )
