"""Every audit event is signed by its author: the attacks ``audit verify`` must now catch.

Each attack writes around QeMLflow the way someone with database access could (the
append-only triggers dropped or not even needed: appends are INSERTs), with a hash that is
correct for its content and linked to the real head. Only the event signature, checked
against the key enrolled for its signer at that seq, can tell. Runs on SQLite and
PostgreSQL (``store`` fixture).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert
from tests.identities_helpers import person

from qemlflow.audit.errors import AuthorityError
from qemlflow.audit.principal import AUTH_ACCOUNT, AUTH_PASSPHRASE, Principal
from qemlflow.store import AuditEvent, Store, schema
from qemlflow.store.audit import event_hash, next_event


def _append_raw(store: Store, event: AuditEvent) -> None:
    """INSERT a row as it stands: no authority check, no signing by the store."""
    with store.db.changing() as conn:
        conn.execute(insert(schema.audit_events).values(**event.to_dict()))


def _head(store: Store) -> AuditEvent:
    return store.audit_events()[-1]


def _problems(store: Store) -> list[str]:
    report = store.verify_audit()
    assert not report.ok
    return list(report.problems)


def _some_history(store: Store) -> None:
    run_id = store.create_run("r", {}, 0, None)
    store.finish_run(run_id, {"rmse": 0.5})


def test_every_event_is_signed_by_the_acting_identity(store: Store) -> None:
    _some_history(store)
    events = store.audit_events()
    me = store.principal
    assert [e.action for e in events] == ["store.owner", "run.started", "run.finished"]
    for event in events:
        assert event.hash_scheme == "jcs-signed"
        assert (event.signer, event.auth, event.actor) == (me.fingerprint, me.auth, me.display)
        assert me.verify(event.signed_message(), __import__("base64").b64decode(event.signature))
    # the signature covers the chain position: the same content at another seq is another message
    moved = dataclasses.replace(events[1], seq=7)
    assert moved.signed_message() != events[1].signed_message()
    assert events[1].signed_message().startswith(b"qemlflow.audit-event/1\n")
    assert store.verify_audit().ok


def test_a_forged_unsigned_append_with_a_valid_hash_fails(store: Store) -> None:
    _some_history(store)
    forged = next_event(_head(store), "model.promoted", {"model": "ab" * 32}, actor="Eve <e@x.org>")
    assert forged.computed_hash() == forged.hash and forged.prev_hash == _head(store).hash
    _append_raw(store, forged)
    [problem] = _problems(store)
    assert problem.startswith(f"event {forged.seq} (model.promoted")
    assert "unsigned after signed events" in problem


def test_an_event_signed_by_an_unknown_key_fails(store: Store) -> None:
    _some_history(store)
    eve = Principal.from_private_key(
        Ed25519PrivateKey.generate(), "Eve", "eve@lab.org", AUTH_PASSPHRASE
    )
    forged = next_event(_head(store), "model.promoted", {"model": "ab" * 32}, principal=eve)
    _append_raw(store, forged)
    [problem] = _problems(store)
    assert "not enrolled in this store" in problem
    # through the store, the same key is refused before anything is written
    with (
        pytest.raises(AuthorityError, match="not enrolled"),
        Store.open(store.root, database_url=_url(store), principal=eve) as as_eve,
    ):
        as_eve.audit("model.registered", {"model": "ab" * 32})


def _url(store: Store) -> str | None:
    return (
        store._engine.url.render_as_string(hide_password=False)
        if store.backend != "sqlite"
        else None
    )


def test_an_event_claiming_another_actor_fails(store: Store) -> None:
    _some_history(store)
    me = store.principal
    # signed with the owner's real key, but naming Ada as the actor
    ada = dataclasses.replace(me, name="Ada Lovelace", email="ada@lab.org")
    forged = next_event(_head(store), "run.started", {"run": "x"}, principal=ada)
    _append_raw(store, forged)
    [problem] = _problems(store)
    assert "its actor 'Ada Lovelace <ada@lab.org>' is not its signer" in problem


def test_an_edited_event_resealed_with_a_valid_hash_fails(store: Store) -> None:
    _some_history(store)
    events = store.audit_events()
    # the whole chain recomputed from event 2 on, with Ada as the actor of event 2
    forged: list[AuditEvent] = []
    previous = events[0]
    for event in events[1:]:
        changed = dataclasses.replace(
            event,
            prev_hash=previous.hash,
            actor="Ada Lovelace <ada@lab.org>" if event.seq == 2 else event.actor,
        )
        changed = dataclasses.replace(changed, hash=event_hash(changed.content(), "jcs-signed"))
        forged.append(changed)
        previous = changed
    other = store_copy_with(store, events[:1] + forged)
    report = other.verify_audit()
    assert report.first_bad_seq == 2 and "signature does not verify" in report.problems[0]
    other.close()


def store_copy_with(store: Store, events: list[AuditEvent]) -> Store:
    """A new SQLite store whose audit table holds ``events`` (and the same identities)."""
    copy = Store.open(store.root.parent / "copy")
    with copy.db.changing() as conn:
        for event in events:
            conn.execute(insert(schema.audit_events).values(**event.to_dict()))
    return copy


def test_a_replayed_event_fails(store: Store) -> None:
    _some_history(store)
    original = store.audit_events()[1]
    head = _head(store)
    # the same content, signature and signer, placed at the head: its hash made right
    replayed = dataclasses.replace(original, seq=head.seq + 1, prev_hash=head.hash)
    replayed = dataclasses.replace(replayed, hash=event_hash(replayed.content(), "jcs-signed"))
    _append_raw(store, replayed)
    [problem] = _problems(store)
    assert problem.startswith(f"event {replayed.seq} (run.started")
    assert "signature does not verify" in problem and "replayed" in problem


def test_a_revoked_key_cannot_act_and_its_late_events_fail(store: Store, tmp_path: Path) -> None:
    bob = person(store, tmp_path / "bob", "Bob Builder", "bob@lab.org", "contributor")
    with Store.open(store.root, database_url=_url(store), principal=bob) as as_bob:
        assert as_bob.audit("model.registered", {"model": "ab" * 32}).actor == bob.display
        store.identities.revoke("bob@lab.org", reason="left the lab")
        with pytest.raises(AuthorityError, match="revoked"):
            as_bob.audit("model.registered", {"model": "cd" * 32})
    assert store.verify_audit().ok  # his earlier event stays valid
    late = next_event(_head(store), "model.registered", {"model": "ef" * 32}, principal=bob)
    _append_raw(store, late)
    [problem] = _problems(store)
    assert "of bob@lab.org, revoked at event" in problem


def test_a_signature_by_a_non_approver_fails(store: Store, tmp_path: Path) -> None:
    carol = person(store, tmp_path / "carol", "Carol", "carol@lab.org", "contributor")
    details = {"meaning": "approved", "kind": "run", "signer": {}, "signed_at": "t"}
    with (
        Store.open(store.root, database_url=_url(store), principal=carol) as as_carol,
        pytest.raises(AuthorityError, match="signature needs role approver or higher"),
    ):
        as_carol.audit("signature", {"object": "r"}, reason="ok", details=details)
    forged = next_event(
        _head(store), "signature", {"object": "r"}, reason="ok", details=details, principal=carol
    )
    _append_raw(store, forged)
    [problem] = _problems(store)
    assert "signature needs role approver or higher; carol@lab.org is a contributor" in problem


def test_an_os_account_key_cannot_make_a_signature(store: Store) -> None:
    _some_history(store)
    assert store.principal.auth == AUTH_ACCOUNT
    with pytest.raises(AuthorityError, match="needs a passphrase-unlocked key"):
        store.audit("signature", {"object": "r"}, details={"meaning": "authored"})


def test_the_actor_variable_credits_nobody(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMLFLOW_ACTOR", "Ada Lovelace <ada@lab.org>")
    _some_history(store)
    actors = {e.actor for e in store.audit_events()}
    assert actors == {store.principal.display} and "ada@lab.org" not in str(actors)


def test_the_actor_variable_credits_nobody_in_the_cli(tmp_path: Path) -> None:
    env_store = tmp_path / "cli-store"
    with Store.open(env_store) as store:
        run_id = store.create_run("r", {}, 0, None)
        store.finish_run(run_id, {})
        me = store.principal.display
    import os

    env = {**os.environ, "QEMLFLOW_ACTOR": "Ada Lovelace <ada@lab.org>"}
    done = subprocess.run(
        [sys.executable, "-m", "qemlflow", "keys", "create", "ci", "--store", str(env_store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with Store.open(env_store) as store:
        [created] = store.audit_events(action="apikey.created")
        assert created.actor == me and store.verify_audit().ok
        assert store.list_api_keys()[0].created_by == me


def test_a_viewer_cannot_run(store: Store, tmp_path: Path) -> None:
    vic = person(store, tmp_path / "vic", "Vic Viewer", "vic@lab.org", "viewer")
    with Store.open(store.root, database_url=_url(store), principal=vic) as as_vic:
        with pytest.raises(AuthorityError, match=r"run\.started needs role contributor"):
            as_vic.create_run("r", {}, 0, None)
        assert as_vic.list_runs() == []  # nothing half-written
        assert as_vic.audit_events()[-1].action == "identity.enrolled"  # reading is fine
