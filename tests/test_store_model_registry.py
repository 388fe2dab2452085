"""The model registry repository (``store.registry``): versions and alias history."""

from __future__ import annotations

import pytest

from qemlflow.store import Store, StoreError


def _finished_run(store: Store) -> tuple[str, str]:
    run_id = store.runs.create("demo", {}, 0, None)
    store.runs.finish(run_id, {"test": {"rmse": 0.4}})
    return run_id, store.blobs.put_bytes(f"model of {run_id}".encode())


def test_versions_count_up_per_name_with_an_event_each(store: Store) -> None:
    run_id, model = _finished_run(store)
    first = store.registry.register("sol", run_id, model, "f" * 64, "regression", ["logS"], {})
    second = store.registry.register("sol", run_id, model, "f" * 64, "regression", ["logS"], {})
    other = store.registry.register("tox", run_id, model, "f" * 64, "regression", ["y"], {})
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert store.registry.get("sol", 2) == second
    assert store.registry.versions("sol") == [first, second]
    assert store.registry.versions() == [first, second, other]
    events = store.audit_trail.events(action="model.registered")
    assert [e.objects["model_version"] for e in events] == ["sol@1", "sol@2", "tox@1"]
    assert all(e.objects["run"] == run_id for e in events)


def test_register_refuses_unfinished_runs_and_bad_names(store: Store) -> None:
    running = store.runs.create("demo", {}, 0, None)
    model = store.blobs.put_bytes(b"m")
    with pytest.raises(StoreError, match="is running; only a finished run"):
        store.registry.register("sol", running, model, "f" * 64, "regression", [], {})
    with pytest.raises(StoreError, match="no run 'nope'"):
        store.registry.register("sol", "nope", model, "f" * 64, "regression", [], {})
    with pytest.raises(StoreError, match="model name 'Sol' is not allowed"):
        store.registry.register("Sol", running, model, "f" * 64, "regression", [], {})
    assert store.registry.versions() == []
    assert store.audit_trail.events(action="model.*") == []


def test_get_names_what_is_missing(store: Store) -> None:
    run_id, model = _finished_run(store)
    store.registry.register("sol", run_id, model, "f" * 64, "regression", [], {})
    with pytest.raises(StoreError, match="no model named 'tox'"):
        store.registry.get("tox", 1)
    with pytest.raises(StoreError, match="has no version 3"):
        store.registry.get("sol", 3)
    with pytest.raises(StoreError, match="has no version"):
        store.registry.get("sol", 2**40)


def test_aliases_move_and_keep_their_history(store: Store) -> None:
    run_id, model = _finished_run(store)
    for _ in range(2):
        store.registry.register("sol", run_id, model, "f" * 64, "regression", [], {})
    store.registry.set_alias("sol", "production", 1, "first", details={"gates": ["rmse"]})
    store.registry.set_alias("sol", "production", 2, "better")
    store.registry.set_alias("sol", "staging", 2)
    store.registry.set_alias("sol", "production", 1, "regression", action="rolled_back")
    assert store.registry.aliases("sol") == {"production": 1, "staging": 2}
    store.registry.set_alias("sol", "staging", None, "retired")
    assert store.registry.aliases("sol") == {"production": 1}
    history = store.registry.alias_history("sol", "production")
    assert [(h.version, h.action) for h in history] == [
        (1, "promoted"),
        (2, "promoted"),
        (1, "rolled_back"),
    ]
    assert [h.alias for h in store.registry.alias_history("sol")].count("staging") == 2
    events = store.audit_trail.events(object_ref="sol")
    actions = [e.action for e in events if e.action != "model.registered"]
    assert actions == [
        "model.promoted",
        "model.promoted",
        "model.promoted",
        "model.rolled_back",
        "model.alias_removed",
    ]
    promoted = [e for e in events if e.action == "model.promoted"]
    assert promoted[0].details["gates"] == ["rmse"]
    assert promoted[1].details["previous"] == 1


def test_set_alias_refuses_reserved_and_unknown_targets(store: Store) -> None:
    run_id, model = _finished_run(store)
    store.registry.register("sol", run_id, model, "f" * 64, "regression", [], {})
    with pytest.raises(StoreError, match="reserved"):
        store.registry.set_alias("sol", "latest", 1)
    with pytest.raises(StoreError, match="reserved"):
        store.registry.set_alias("sol", "2", 1)
    with pytest.raises(StoreError, match="has no version 5"):
        store.registry.set_alias("sol", "production", 5)
    with pytest.raises(StoreError, match="pass version=None"):
        store.registry.set_alias("sol", "production", 1, action="removed")
    assert store.registry.alias_history("sol") == []
