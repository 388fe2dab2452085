"""The runs repository (``store.runs``): runs, their steps and artifacts, their events."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from qemlflow.store import Store, StoreError, schema


def test_a_run_from_start_to_finish(store: Store) -> None:
    env = store.blobs.put_json({"python": "3.11"})
    run_id = store.runs.create("demo", {"model": "rf"}, 7, env)
    run = store.runs.get(run_id)
    assert (run.status, run.seed, run.config, run.environment) == (
        "running",
        7,
        {"model": "rf"},
        env,
    )
    store.runs.finish(run_id, {"test": {"rmse": 0.5, "r2": float("nan")}, "seconds": 3})
    run = store.runs.get(run_id[:17])
    assert run.status == "finished"
    assert run.metrics == {"test": {"rmse": 0.5, "r2": None}, "seconds": 3}
    events = store.audit_trail.events(object_ref=run_id)
    assert [e.action for e in events] == ["run.started", "run.finished"]
    assert events[1].details == {"test": {"rmse": 0.5, "r2": None}}  # the test scores only
    assert events[1].objects["environment"] == env
    with pytest.raises(StoreError, match="is already finished"):
        store.runs.fail(run_id, "late")
    assert len(store.audit_trail.events(object_ref=run_id)) == 2


def test_a_failed_run_keeps_its_error(store: Store) -> None:
    run_id = store.runs.create("demo", {}, None, None)
    store.runs.fail(run_id, "out of memory")
    run = store.runs.get(run_id)
    assert (run.status, run.error) == ("failed", "out of memory")
    assert store.audit_trail.events(action="run.failed")[0].reason == "out of memory"


def test_create_refuses_a_missing_environment_blob(store: Store) -> None:
    with pytest.raises(StoreError, match="environment refers to blob"):
        store.runs.create("demo", {}, 0, "0" * 64)
    assert store.runs.list() == []


def test_steps_and_artifacts_belong_to_a_run(store: Store) -> None:
    run_id = store.runs.create("demo", {}, 0, None)
    out = store.blobs.put_bytes(b"features")
    store.runs.record_step(run_id, 0, "featurize", "k" * 64, out, False, 1.5)
    store.runs.record_step(run_id, 1, "fit", "f" * 64, None, True, 0.0)
    with pytest.raises(StoreError, match="already has a step at position 1"):
        store.runs.record_step(run_id, 1, "fit", "f" * 64, None, True, 0.0)
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.runs.record_step("nope", 0, "fit", "f" * 64, None, True, 0.0)
    store.runs.add_artifact(run_id, "predictions.csv", out, "text/csv")
    store.runs.add_artifact(run_id, "predictions.csv", out, "text/csv")  # same: a no-op
    with pytest.raises(StoreError, match="with other content"):
        store.runs.add_artifact(run_id, "predictions.csv", store.blobs.put_bytes(b"x"), "text/csv")
    run = store.runs.get(run_id)
    assert [(s.position, s.step, s.cache_hit) for s in run.steps] == [
        (0, "featurize", False),
        (1, "fit", True),
    ]
    assert [(a.name, a.digest) for a in run.artifacts] == [("predictions.csv", out)]
    assert store.runs.using_step("k" * 64) == [run_id]
    assert store.runs.using_step("0" * 64) == []
    assert store.runs.find_artifacts(digest_prefix=out[:6]) == list(run.artifacts)
    assert store.runs.find_artifacts(digest_prefix=out[:5]) == []


def test_list_is_newest_first_and_limited(store: Store) -> None:
    ids = [store.runs.create(f"r{i}", {}, i, None) for i in range(3)]
    assert [r.id for r in store.runs.list()] == ids[::-1]
    assert len(store.runs.list(limit=2)) == 2


def test_a_run_whose_process_is_gone_is_marked_aborted(store: Store) -> None:
    run_id = store.runs.create("demo", {}, 0, None)
    assert store.runs.mark_aborted() == []  # this process is alive
    with store.db.changing() as conn:  # as if the pid now belonged to another process
        conn.execute(update(schema.runs).where(schema.runs.c.id == run_id).values(pid_started=1))
    assert store.runs.mark_aborted() == [run_id]
    assert store.runs.mark_aborted() == []
    run = store.runs.get(run_id)
    assert run.status == "aborted"
    assert "ended without finishing" in (run.error or "")
    assert [e.action for e in store.audit_trail.events(object_ref=run_id)] == [
        "run.started",
        "run.aborted",
    ]
