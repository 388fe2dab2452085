"""The provenance store: blobs, metadata, runs, care (verify/backup/restore/gc), keys.

Every test that takes ``store_factory`` runs against SQLite and against PostgreSQL; the
PostgreSQL variant needs the ``postgres_url`` fixture (tests/postgres_fixture.py,
registered as a plugin in conftest).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qemlflow.pipeline.reproduce import drift_lines
from qemlflow.store import (
    CorruptBlobError,
    DatasetRecord,
    StepRecord,
    Store,
    StoreError,
    canonical_json,
    capture_environment,
    content_key,
    environment_drift,
    head_revision,
)
from qemlflow.store.keys import integral_float_paths, legacy_canonical_json

MakeStore = Callable[[Path], Store]


@pytest.fixture(autouse=True)
def _no_store_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QEMLFLOW_DATABASE_URL", raising=False)
    monkeypatch.delenv("QEMLFLOW_HOME", raising=False)


def _step(store: Store, name: str = "featurize", payload: bytes = b"out") -> StepRecord:
    output = store.put_bytes(payload)
    key = content_key(name, 1, {"payload": payload.decode()}, [], {})
    return StepRecord(key=key, step=name, version="1", params={}, inputs=(), output=output)


def _alter(path: Path, data: bytes) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(data)


# -- blobs ---------------------------------------------------------------------------


def test_blob_roundtrip_idempotent_and_read_only(store: Store, tmp_path: Path) -> None:
    digest = store.put_bytes(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    path = store.open_blob_path(digest)
    assert path == store.root / "objects" / digest[:2] / digest[2:]
    assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    inode = path.stat().st_ino
    assert store.put_bytes(b"hello") == digest
    assert path.stat().st_ino == inode  # not rewritten
    assert store.get_bytes(digest) == b"hello"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    file_digest = store.put_file(big)
    assert file_digest == hashlib.sha256(big.read_bytes()).hexdigest()
    assert store.has_blob(file_digest) and not store.has_blob("0" * 64)
    assert sorted(store.blob_digests()) == sorted([digest, file_digest])
    assert list((store.root / "objects" / "tmp").iterdir()) == []


def test_get_bytes_detects_an_altered_blob(store: Store) -> None:
    digest = store.put_bytes(b"original")
    _alter(store.open_blob_path(digest), b"tampered")
    with pytest.raises(CorruptBlobError, match=digest) as err:
        store.get_bytes(digest)
    assert "qemlflow store verify" in str(err.value)
    assert store.get_bytes(digest, verify=False) == b"tampered"
    with pytest.raises(StoreError, match="missing"):
        store.get_bytes("f" * 64)


def test_stale_temp_files_are_not_blobs(store: Store) -> None:
    tmp_dir = store.root / "objects" / "tmp"
    stale = tmp_dir / "blob-killed.tmp"
    stale.write_bytes(b"half written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_dir / "blob-writing.tmp"
    fresh.write_bytes(b"in progress")
    assert list(store.blob_digests()) == []
    report = store.verify()
    assert report.ok and report.temp_files_removed == 1
    assert not stale.exists() and fresh.exists()


# -- metadata ------------------------------------------------------------------------


def test_step_cache_insert_get_and_duplicate(store: Store) -> None:
    record = _step(store)
    assert store.get_step(record.key) is None
    stored = store.put_step(record)
    assert stored == record
    again = store.get_step(record.key)
    assert again is not None and again.to_dict() == record.to_dict()
    other_output = store.put_bytes(b"another result")
    duplicate = StepRecord(
        key=record.key, step=record.step, version="1", params={}, inputs=(), output=other_output
    )
    assert store.put_step(duplicate).output == record.output  # first writer wins, no error
    with pytest.raises(StoreError, match="not in the store"):
        store.put_step(
            StepRecord(key="1" * 64, step="x", version="1", params={}, inputs=(), output="2" * 64)
        )


def test_dataset_idempotent_and_prefix_lookup(store: Store) -> None:
    table = store.put_bytes(b"smiles,logS\nCCO,0.1\n")
    first = DatasetRecord(
        id="ab" + "0" * 62,
        name="esol",
        source="esol.csv",
        table_digest=table,
        params={"smiles": "smiles", "targets": ["logS"]},
        summary={"rows": 1, "rejected": 0},
    )
    assert store.add_dataset(first) == first
    assert store.add_dataset(DatasetRecord(**{**first.__dict__, "name": "other"})) == first
    second = DatasetRecord(id="ab" + "1" * 62, name="esol", source="v2", table_digest=table)
    store.add_dataset(second)
    assert [d.id for d in store.list_datasets()] == [second.id, first.id]
    assert store.get_dataset("ab1").id == second.id
    with pytest.raises(StoreError, match="ambiguous"):
        store.get_dataset("ab")
    with pytest.raises(StoreError, match="no dataset"):
        store.get_dataset("ffff")


def test_run_lifecycle(store: Store) -> None:
    env = store.put_json(capture_environment())
    run_id = store.create_run("solubility", {"model": "rf", "nan": float("nan")}, 42, env)
    step = store.put_step(_step(store))
    store.record_run_step(run_id, 0, "featurize", step.key, step.output, False, 1.5)
    store.record_run_step(run_id, 1, "fit", step.key, None, True, 0.0)
    with pytest.raises(StoreError, match="position 1"):
        store.record_run_step(run_id, 1, "fit", step.key, None, True, 0.0)
    preds = store.put_bytes(b"smiles,pred\nCCO,0.2\n")
    store.add_artifact(run_id, "predictions.csv", preds, "text/csv")
    store.add_artifact(run_id, "predictions.csv", preds, "text/csv")  # same: no-op
    with pytest.raises(StoreError, match="other content"):
        store.add_artifact(run_id, "predictions.csv", env, "text/csv")
    store.finish_run(run_id, {"rmse": 0.71, "r2": float("nan")})
    with pytest.raises(StoreError, match="already finished"):
        store.fail_run(run_id, "late")
    run = store.get_run(run_id)
    assert run.status == "finished" and run.seed == 42 and run.environment == env
    assert run.config == {"model": "rf", "nan": None}
    assert run.metrics == {"rmse": 0.71, "r2": None}
    assert [s.position for s in run.steps] == [0, 1]
    assert run.steps[0].cache_hit is False and run.steps[1].cache_hit is True
    assert [a.name for a in run.artifacts] == ["predictions.csv"]
    assert run.to_dict()["steps"][0]["step"] == "featurize"
    assert run.finished_at is not None and run.finished_at >= run.started_at

    failed = store.create_run("broken", {}, None, None)
    store.fail_run(failed, "ValueError: no molecules")
    assert store.get_run(failed).status == "failed"
    assert store.get_run(failed).error == "ValueError: no molecules"
    assert [r.id for r in store.list_runs()] == [failed, run_id]
    assert [r.id for r in store.list_runs(limit=1)] == [failed]
    with pytest.raises(StoreError, match="no run"):
        store.get_run("19990101")
    with pytest.raises(StoreError, match="no run"):
        store.record_run_step("nope", 0, "x", step.key, None, False, 0.0)


def test_run_prefix_lookup(store: Store) -> None:
    ids = [store.create_run(f"r{i}", {}, i, None) for i in range(3)]
    assert all(len(i) == 22 for i in ids)
    assert store.get_run(ids[1]).id == ids[1]
    assert store.get_run(ids[1][:-2]).id == ids[1]  # unique prefix
    with pytest.raises(StoreError, match="ambiguous"):
        store.get_run(ids[0][:8])


_KILLED_CHILD = """
import os, signal
from qemlflow.store import Store
store = Store.open(root)
store.create_run("doomed", {}, 1, None)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkilled_run_shows_aborted(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=exec, args=(_KILLED_CHILD, {"root": str(store.root)}))
    child.start()
    child.join(60)
    assert child.exitcode == -9
    (run,) = store.list_runs()
    assert run.name == "doomed" and run.status == "aborted"
    assert run.pid == child.pid and "killed" in (run.error or "")
    alive = store.create_run("alive", {}, 1, None)  # this process: stays running
    assert store.mark_aborted_runs() == []
    assert store.get_run(alive).status == "running"


_WORKER = """
from qemlflow.store import Store, StepRecord, content_key
store = Store.open(root)
for r in range(3):
    run_id = store.create_run(f"w{worker}-{r}", {"worker": worker}, r, None)
    for position in range(4):
        # steps shared by all workers race on the same cache key
        output = store.put_bytes(f"step {position}".encode())
        key = content_key("s", 1, {"p": position}, [], {})
        store.put_step(StepRecord(key=key, step="s", version="1", params={}, inputs=(),
                                  output=output))
        store.record_run_step(run_id, position, "s", key, output, False, 0.01)
    art = store.put_bytes(f"predictions {worker} {r}".encode())
    store.add_artifact(run_id, "predictions.csv", art, "text/csv")
    store.finish_run(run_id, {"worker": worker})
store.close()
"""


def test_eight_concurrent_writer_processes(store: Store) -> None:
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
    runs = store.list_runs()
    assert len(runs) == 24 and {r.status for r in runs} == {"finished"}
    assert all(len(r.steps) == 4 and len(r.artifacts) == 1 for r in runs)
    counts = store.table_counts()
    assert counts == {
        "steps": 4,
        "datasets": 0,
        "runs": 24,
        "run_steps": 96,
        "artifacts": 24,
        "audit_events": 49,  # the owner's event, run.started and run.finished of each run
        "audit_checkpoints": 0,  # the first periodic one is at event 100
        "model_versions": 0,
        "alias_events": 0,
        "api_keys": 0,
        "identities": 1,  # the owner: the OS account of the first writer
        "identity_keys": 1,
        "monitor_minutes": 0,
        "monitor_references": 0,
    }
    assert store.verify().ok


# -- care ----------------------------------------------------------------------------


def _populate(store: Store) -> str:
    table = store.put_bytes(b"smiles\nC\n")
    store.add_dataset(DatasetRecord(id="d" * 64, name="d", source="s", table_digest=table))
    step = store.put_step(_step(store))
    run_id = store.create_run("r", {"a": 1}, 0, store.put_json({"python": "3.11"}))
    store.record_run_step(run_id, 0, "featurize", step.key, step.output, False, 0.1)
    store.add_artifact(run_id, "metrics.json", store.put_json({"rmse": 1.0}), "application/json")
    store.finish_run(run_id, {"rmse": 1.0})
    return run_id


def test_verify_sound_altered_missing_and_dangling(store: Store) -> None:
    run_id = _populate(store)
    report = store.verify()
    assert report.ok and report.blobs_checked == 4 and report.to_dict()["ok"] is True

    run = store.get_run(run_id)
    altered = run.artifacts[0].digest
    _alter(store.open_blob_path(altered), b"{}")
    missing = run.environment
    assert missing is not None
    store.open_blob_path(missing).unlink()
    store.record_run_step(run_id, 1, "fit", "e" * 64, None, False, 0.0)  # dangling key

    report = store.verify()
    assert not report.ok
    problems = {i.object: i.problem for i in report.issues}
    assert "changed on disk" in problems[f"blob {altered}"]
    assert missing in problems[f"runs {run_id}"]
    assert "not in the step cache" in problems[f"run_steps {run_id}/1"]
    assert len(report.issues) == 3


def test_backup_restore_roundtrip(store_factory: MakeStore, tmp_path: Path) -> None:
    source = store_factory(tmp_path / "source")
    _populate(source)
    report = source.backup(tmp_path / "backup")
    assert report.ok, report.problems
    assert report.tables["runs"] == 1 and report.blobs == 4
    assert (tmp_path / "backup" / "metadata.sqlite").is_file()
    assert (tmp_path / "backup" / "manifest.json").is_file()
    with pytest.raises(StoreError, match="not an empty folder"):
        source.backup(tmp_path / "backup")

    target = store_factory(tmp_path / "target")
    restored = target.restore(tmp_path / "backup")
    assert restored.ok, restored.problems
    assert target.verify().ok
    assert target.table_counts() == source.table_counts()
    assert list(target.blob_digests()) == list(source.blob_digests())
    assert [r.to_dict() for r in target.list_runs()] == [r.to_dict() for r in source.list_runs()]
    assert target.list_datasets() == source.list_datasets()

    with pytest.raises(StoreError, match="not empty"):
        source.restore(tmp_path / "backup")


def test_restore_into_non_empty_store_is_refused(store: Store, tmp_path: Path) -> None:
    _populate(store)
    assert store.backup(tmp_path / "b").ok
    with pytest.raises(StoreError, match="not empty") as err:
        store.restore(tmp_path / "b")
    assert "new, empty store" in str(err.value)
    with pytest.raises(StoreError, match="not a QeMLflow backup"):
        store.restore(tmp_path)


def test_gc_removes_only_unreferenced_blobs(store: Store) -> None:
    _populate(store)
    referenced = set(store.blob_digests())
    orphan = store.put_bytes(b"written by a run that died")
    assert store.gc() == []  # inside the default grace period
    assert store.gc(grace_seconds=0, dry_run=True) == [orphan] and store.has_blob(orphan)
    assert store.gc(grace_seconds=0) == [orphan]
    assert not store.has_blob(orphan)
    assert set(store.blob_digests()) == referenced
    assert store.verify().ok


# -- schema and opening --------------------------------------------------------------


def test_reopen_is_a_no_op_and_schema_at_head(store: Store) -> None:
    run_id = store.create_run("r", {}, 0, None)
    assert store.schema_revision() == head_revision()
    with Store.open(store.root) as again:  # same database, from store.json for PostgreSQL
        assert again.backend == store.backend
        assert again.schema_revision() == head_revision()
        assert again.get_run(run_id).name == "r"


def test_schema_matches_migrations(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from qemlflow.store.schema import metadata

    with store._engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_open_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with Store.open() as default:
        assert default.root == tmp_path / ".qemlflow"
        assert (default.root / "metadata.db").is_file() and default.backend == "sqlite"
    monkeypatch.setenv("QEMLFLOW_HOME", str(tmp_path / "home"))
    with Store.open() as home:
        assert home.root == tmp_path / "home"
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        Store.open(tmp_path / "file")
    with pytest.raises(StoreError, match="not supported"):
        Store.open(tmp_path / "s", database_url="mysql://h/db")


def test_concurrent_first_opens(tmp_path: Path) -> None:
    code = "from qemlflow.store import Store\nStore.open(root).close()\n"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=exec, args=(code, {"root": str(tmp_path / "s")})) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4


# -- environment and keys ------------------------------------------------------------


def test_capture_environment_and_drift(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()

    env = capture_environment(repo)
    assert env["git"] == {"commit": head, "dirty": False}
    assert env["packages"]["sqlalchemy"] and env["qemlflow"]
    assert list(env["packages"]) == sorted(env["packages"])
    assert env["cpu"]["count"] >= 1 and env["python"]["version"]
    (repo / "a.txt").write_text("changed")
    assert capture_environment(repo)["git"]["dirty"] is True
    assert capture_environment(tmp_path)["git"] is None
    canonical_json(env)  # JSON-ready

    assert environment_drift(env, env)["drifted"] is False
    newer = {**env, "packages": {**env["packages"], "numpy": "99.0", "newpkg": "1.0"}}
    del newer["packages"]["sqlalchemy"]
    drift = environment_drift(env, newer)
    assert drift["drifted"] and drift["packages"]["added"] == {"newpkg": "1.0"}
    assert "sqlalchemy" in drift["packages"]["removed"]
    assert drift["packages"]["changed"]["numpy"]["current"] == "99.0"
    assert drift["cpu"] is None  # the same processor

    # Another processor is drift on its own (the D-MPNN's float sums may round otherwise);
    # a snapshot that never recorded one is not.
    elsewhere = {**env, "cpu": {"model": "Other CPU 9000", "count": 64}}
    moved = environment_drift(env, elsewhere)
    assert moved["drifted"] and moved["cpu"]["current"]["model"] == "Other CPU 9000"
    assert (
        f"cpu {env['cpu']['model']} ({env['cpu']['count']} cores) -> Other CPU 9000 (64 cores)"
        in (drift_lines(moved))
    )
    unrecorded = {k: v for k, v in env.items() if k != "cpu"}
    assert environment_drift(unrecorded, elsewhere)["drifted"] is False


def test_canonical_json_rules() -> None:
    # RFC 8785: an integral float is written as ECMAScript writes it, without a fraction.
    assert canonical_json({"b": 1, "a": [1.0, 0.1]}) == b'{"a":[1,0.1],"b":1}'
    assert canonical_json({"s": {3, 1, 2}}) == b'{"s":[1,2,3]}'
    assert canonical_json("é") == '"é"'.encode()
    for bad in (float("nan"), {"x": float("inf")}, {1: "a"}, object()):
        with pytest.raises(StoreError):
            canonical_json(bad)


def test_canonical_json_is_rfc_8785() -> None:
    # The example of RFC 8785 section 3.2.2 (numbers, escapes, literals) ...
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(value) == expected.encode("utf-8")
    # ... and its key order (section 3.2.3): by UTF-16 code units, not by code points.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    order = list(json.loads(canonical_json(dict.fromkeys(keys, 0))))  # in written order
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    # Python's own sort (by code point) puts the emoji last: the legacy encoder did.
    assert legacy_canonical_json(dict.fromkeys(keys, 0)) != canonical_json(dict.fromkeys(keys, 0))


def test_canonical_json_refuses_integers_json_cannot_hold() -> None:
    assert canonical_json(2**53 - 1) == b"9007199254740991"
    with pytest.raises(StoreError, match="as a string"):
        canonical_json({"seed": 2**53})


def test_content_keys_tell_one_from_one_point_zero() -> None:
    # JCS writes 1.0 as 1, but max_features=1 (one feature) is not max_features=1.0 (all).
    one = content_key("fit", "3", {"params": {"max_features": 1}}, [], {})
    one_float = content_key("fit", "3", {"params": {"max_features": 1.0}}, [], {})
    assert one != one_float
    assert integral_float_paths({"params": {"max_features": 1.0, "alpha": 0.5}}) == [
        ["params", "max_features"]
    ]


def test_the_worked_examples_of_docs_keys_md() -> None:
    libraries = {
        "numpy": "2.3.5",
        "pandas": "3.0.0",
        "rdkit": "2025.9.1",
        "scikit-learn": "1.8.0",
        "scipy": "1.16.3",
    }
    spec = {"type": "ecfp", "radius": 2, "size": 2048, "counts": False}
    spec |= {"chirality": False, "features": False}
    featurize = content_key("featurize", "3", {"spec": spec}, ["9f2c" + "0" * 60], libraries)
    assert featurize == "744d219c227ddb413afbbc736cc0b071a3258b71d68042d4b39b00d6bed49efb"
    fit_params = {"estimator": "random_forest", "params": {"max_features": 1.0}, "seed": 0}
    fit = content_key("fit", "3", fit_params, ["a" * 64], {"numpy": "2.3.5"})
    assert fit == "4293d2a5d3aa299774ebdaff830165dc3e251f014b32a3b563c6a37ec412773c"
    from qemlflow.store.audit import event_hash

    event = {
        "seq": 1,
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "actor": "Ada <ada@example.org>",
        "action": "store.gc",
        "objects": {},
        "reason": None,
        "details": {"grace_seconds": 3600.0, "removed": 0},
        "prev_hash": "0" * 64,
    }
    assert event_hash(event) == "92d4e4f8db1d9bbb8c5d5a2109bf25a48a63b11eabec200ad0883a108143579f"
    assert event_hash(event, "legacy-json") == (
        "0160d5a8bbecc1d14174af4e8a77073656d66a04739e7af2bfaab044e8c808ac"
    )


def test_content_key_stable_and_sensitive() -> None:
    parts = {
        "step": "featurize",
        "version": "2",
        "params": {"radius": 2, "bits": 2048},
        "inputs": ["a" * 64, "b" * 64],
        "libraries": {"rdkit": "2024.09.6"},
    }
    key = content_key(**parts)
    assert key == content_key(**{**parts, "params": {"bits": 2048, "radius": 2}})
    # Pinned: a change here invalidates every cache entry of every user.
    assert key == "3bce5a0a2314f8dfff89b84adfdc9b5b6e5626f8fc308f9d0f2ca5826772accf"
    changes = {
        "step": "describe",
        "version": "3",
        "params": {"radius": 3, "bits": 2048},
        "inputs": ["b" * 64, "a" * 64],
        "libraries": {"rdkit": "2025.03.1"},
    }
    for part, value in changes.items():
        assert content_key(**{**parts, part: value}) != key, part
