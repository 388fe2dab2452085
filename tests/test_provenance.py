"""Provenance end to end: cached steps, recorded runs, reproduce, lineage, store care.

The tests that matter for both metadata backends run on SQLite and on a real
PostgreSQL server (started by tests/postgres_fixture.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

import qemlflow as qm
from qemlflow.cli.main import main
from qemlflow.pipeline.reproduce import reproduce
from qemlflow.pipeline.steps import STEP_ORDER
from qemlflow.store import Store

FEATURES = [{"type": "ecfp", "radius": 2, "size": 512, "counts": True}]


def _config(source: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "provenance",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": FEATURES,
        "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
        "evaluation": {"n_bootstrap": 50},
    }
    config.update(changes)
    return config


def _corrupt(store: Store, digest: str) -> None:
    path = store.open_blob_path(digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_second_run_is_served_from_the_cache_and_reproduces(
    store: Store, small_esol_csv: Path, tmp_path: Path
) -> None:
    first = qm.run(_config(small_esol_csv), tmp_path / "a", store=store)
    assert first.cache_hits == []
    second = qm.run(_config(small_esol_csv), tmp_path / "b", store=store)
    assert second.cache_hits == list(STEP_ORDER)
    assert [s.output for s in second.steps] == [s.output for s in first.steps]
    assert (tmp_path / "a" / "predictions.csv").read_bytes() == (
        tmp_path / "b" / "predictions.csv"
    ).read_bytes()

    runs = store.list_runs()
    assert [r.id for r in runs] == [second.run_id, first.run_id]
    assert {r.status for r in runs} == {"finished"}
    recorded = store.get_run(second.run_id or "")
    assert [s.cache_hit for s in recorded.steps] == [True] * len(STEP_ORDER)
    assert {a.name for a in recorded.artifacts} >= {"predictions.csv", "metrics.json"}

    report = reproduce(store, first.run_id or "")
    assert report.identical, report.to_dict()
    assert [s.step for s in report.steps] == list(STEP_ORDER)


def test_changing_a_featurizer_parameter_recomputes_only_what_follows(
    store: Store, small_esol_csv: Path
) -> None:
    qm.run(_config(small_esol_csv), store=store)
    changed = _config(small_esol_csv, features=[{**FEATURES[0], "radius": 3}])
    result = qm.run(changed, store=store)
    hits = {s.step: s.cache_hit for s in result.steps}
    assert hits == {
        "dataset": True,
        "standardize": True,
        "split": True,
        "featurize": False,
        "fit": False,
        "predict": False,
        "evaluate": False,
    }


def test_an_altered_blob_is_caught_by_verify_and_reproduce(
    store: Store, small_esol_csv: Path
) -> None:
    result = qm.run(_config(small_esol_csv), store=store)
    assert store.verify().ok
    featurized = next(s for s in result.steps if s.step == "featurize")
    _corrupt(store, featurized.output)

    verdict = store.verify()
    assert not verdict.ok
    assert featurized.output in json.dumps(verdict.to_dict())
    report = reproduce(store, result.run_id or "")
    assert not report.identical
    assert [p.digest for p in report.blob_problems] == [featurized.output]


def test_reproduce_names_the_first_step_that_differs(
    store: Store, small_esol_csv: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(small_esol_csv.read_bytes())
    result = qm.run(_config(data), store=store)
    frame = pd.read_csv(data)
    frame.loc[5, "logp"] += 1.0  # a measured value was edited after the run
    frame.to_csv(data, index=False)

    report = reproduce(store, result.run_id or "")
    assert not report.identical
    first = report.first_difference
    assert first is not None and first.step == "dataset"
    later = {s.step: s.identical for s in report.steps}
    assert later["featurize"] is True  # the molecules did not change, the labels did
    assert later["evaluate"] is False


def test_reproduce_falls_back_to_the_stored_raw_copy(
    store: Store, small_esol_csv: Path, tmp_path: Path
) -> None:
    data = tmp_path / "moved.csv"
    data.write_bytes(small_esol_csv.read_bytes())
    result = qm.run(_config(data), store=store)
    data.unlink()
    report = reproduce(store, result.run_id or "")
    assert report.identical
    assert "raw copy in the store" in report.data_note


def test_lineage_reaches_the_raw_file_digest(
    store: Store, small_esol_csv: Path, tmp_path: Path
) -> None:
    result = qm.run(_config(small_esol_csv), tmp_path / "out", store=store)
    raw_digest = hashlib.sha256(small_esol_csv.read_bytes()).hexdigest()
    from qemlflow.pipeline.lineage import lineage

    graph = lineage(store, result.run_id or "")
    text = json.dumps(graph)
    assert raw_digest in text
    assert {"standardize", "featurize", "split", "fit", "predict", "evaluate"} <= {
        step for step in STEP_ORDER if f'"step": "{step}"' in text
    }
    model = lineage(store, str(tmp_path / "out" / "model.joblib"))
    assert model["kind"] == "step" and model["step"] == "fit"
    assert raw_digest in json.dumps(model)
    assert model["used_by_runs"] == [result.run_id]
    # The run's folder stands for its model; an artifact or a step key by digest prefix.
    assert lineage(store, str(tmp_path / "out")) == model
    own = next(a for a in graph["artifacts"] if a["produced_by"] == "run")
    by_artifact = lineage(store, own["digest"][:16])
    assert (by_artifact["kind"], by_artifact["name"]) == ("artifact", own["name"])
    assert by_artifact["run"]["id"] == result.run_id
    fit_key = model["key"]
    assert lineage(store, fit_key[:20])["key"] == fit_key
    with pytest.raises(qm.errors.QeMLflowError, match="is not a run, model, artifact or step"):
        lineage(store, "f" * 40)


def test_dataset_versions_are_content_addressed(
    store: Store, small_esol_csv: Path, tmp_path: Path
) -> None:
    from qemlflow.pipeline.datasets import add_dataset_version

    copy = tmp_path / "elsewhere" / small_esol_csv.name
    copy.parent.mkdir()
    copy.write_bytes(small_esol_csv.read_bytes())
    first, dataset = add_dataset_version(store, small_esol_csv, target_columns=["logp"])
    again, _ = add_dataset_version(store, copy, target_columns=["logp"])
    assert first.id == again.id
    assert len(store.list_datasets()) == 1
    assert first.raw_digest == hashlib.sha256(small_esol_csv.read_bytes()).hexdigest()
    # the two bad rows, and methanol and iodomethane (parent_too_small)
    assert first.summary["rejected"] == 4 == len(dataset.rejected)
    rejected = store.get_bytes(first.rejected_digest or "").decode()
    assert "unparsable" in rejected and "empty" in rejected and "parent_too_small" in rejected
    other, _ = add_dataset_version(
        store, small_esol_csv, target_columns=["logp"], duplicates="first"
    )
    assert other.id != first.id


def test_eight_processes_record_runs_into_one_sqlite_store(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    store_path = tmp_path / "shared-store"
    Store.open(store_path).close()
    configs = []
    for i in range(8):
        config = tmp_path / f"experiment{i}.yaml"
        config.write_text(yaml.safe_dump(_config(small_esol_csv, seed=i % 3)))
        configs.append(config)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qemlflow",
                "run",
                str(c),
                "--store",
                str(store_path),
                "--out",
                str(tmp_path / f"out-{c.stem}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in configs
    ]
    errors = [child.communicate(timeout=600)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 8, errors
    assert not any("locked" in e for e in errors)
    with Store.open(store_path) as opened:
        runs = opened.list_runs()
        assert len(runs) == 8 and {r.status for r in runs} == {"finished"}
        assert opened.verify().ok
        assert opened.verify_audit().ok


def _cli(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", *args, "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _wait_for_a_running_run(db: Path, child: subprocess.Popen[bytes]) -> None:
    """Return once the store at ``db`` holds a run with status running (or the child ends)."""
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if db.is_file():
            with contextlib.suppress(sqlite3.Error):
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                try:
                    query = "SELECT count(*) FROM runs WHERE status = 'running'"
                    if conn.execute(query).fetchone()[0]:
                        return
                finally:
                    conn.close()
        time.sleep(0.05)


def test_sigkill_at_random_points_leaves_the_store_consistent(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    store = tmp_path / "store"
    rng = random.Random(7)
    config = tmp_path / "experiment.yaml"
    killed = 0
    for attempt in range(6):
        slow = _config(small_esol_csv, seed=attempt, features=[*FEATURES, {"type": "rdkit2d"}])
        config.write_text(yaml.safe_dump(slow))
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qemlflow",
                "run",
                str(config),
                "--store",
                str(store),
                "--out",
                str(tmp_path / f"out{attempt}"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if attempt % 2:
            # Every other kill lands while a run is recorded as running, however slowly
            # the process started (a loaded machine): an aborted run to be found below.
            _wait_for_a_running_run(store / "metadata.db", child)
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            time.sleep(rng.uniform(0.5, 3.5))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        child.wait()
    assert killed >= 3

    verify = _cli("store", "verify", store=store)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = json.loads(_cli("runs", "list", "--json", store=store).stdout)
    assert {r["status"] for r in listed} <= {"aborted", "finished"}
    assert "running" not in {r["status"] for r in listed}
    assert sum(r["status"] == "aborted" for r in listed) >= 1
    assert not any(
        p.is_file()
        for p in (store / "objects").rglob("*")
        if "tmp" in p.parts and p.stat().st_mtime < time.time() - 120
    )

    config.write_text(yaml.safe_dump(_config(small_esol_csv, seed=0)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qemlflow",
            "run",
            str(config),
            "--store",
            str(store),
            "--out",
            str(tmp_path / "final"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert _cli("store", "verify", store=store).returncode == 0


def test_the_cli_records_lists_compares_reproduces_and_looks_after_the_store(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(_config(small_esol_csv)))
    assert main(["run", str(config), "--store", store, "--out", str(tmp_path / "a")]) == 0
    config.write_text(yaml.safe_dump(_config(small_esol_csv, seed=3)))
    assert main(["run", str(config), "--store", store, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()

    assert main(["runs", "list", "--json", "--store", store]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in listed] == ["finished", "finished"]
    newest, oldest = listed[0]["id"], listed[1]["id"]
    assert listed[0]["started_at"] > listed[1]["started_at"]

    assert main(["runs", "show", oldest, "--store", store]) == 0
    shown = capsys.readouterr().out
    assert "featurize" in shown and "finished" in shown

    assert main(["runs", "compare", oldest, newest, "--store", store, "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["config"]["seed"] == [0, 3]
    assert diff.get("metrics")

    assert main(["reproduce", oldest, "--store", store]) == 0
    assert "IDENTICAL" in capsys.readouterr().out

    assert main(["lineage", oldest, "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == oldest
    assert main(["lineage", oldest, "--store", store]) == 0
    assert "raw data" in capsys.readouterr().out

    assert main(["data", "add", str(small_esol_csv), "--target", "logp", "--store", store]) == 0
    assert "dataset version" in capsys.readouterr().out
    assert main(["data", "list", "--store", store, "--json"]) == 0
    versions = json.loads(capsys.readouterr().out)
    assert len(versions) == 1  # the runs already recorded this exact version
    assert main(["data", "show", versions[0]["id"][:10], "--store", store]) == 0
    assert json.loads(capsys.readouterr().out)["raw_digest"]

    backup = tmp_path / "backup"
    assert main(["store", "backup", str(backup), "--store", store]) == 0
    restored = str(tmp_path / "restored")
    assert main(["store", "restore", str(backup), "--store", restored]) == 0
    assert main(["store", "verify", "--store", restored]) == 0
    assert main(["reproduce", oldest, "--store", restored]) == 0

    orphan = Store.open(store)
    stray = orphan.put_bytes(b"nobody refers to me")
    orphan.close()
    assert main(["store", "gc", "--grace", "0", "--store", store]) == 0
    with Store.open(store) as opened:
        assert not opened.has_blob(stray)
        assert opened.verify().ok
    capsys.readouterr()
    assert main(["reproduce", "nonexistent-run", "--store", store]) == 2
    assert "nonexistent-run" in capsys.readouterr().err


def test_reproduce_reports_environment_drift(
    tmp_path: Path,
    small_esol_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import qemlflow.store as store_module

    store = str(tmp_path / "store")
    with Store.open(store) as opened:
        run_id = qm.run(_config(small_esol_csv), store=opened).run_id or ""
    real = store_module.capture_environment

    def upgraded(project_dir: Any = None) -> dict[str, Any]:
        environment = real(project_dir)
        environment["packages"]["numpy"] = "99.0"
        return environment

    monkeypatch.setattr(store_module, "capture_environment", upgraded)
    capsys.readouterr()
    assert main(["reproduce", run_id, "--store", store]) == 0  # same results, other numpy
    out = capsys.readouterr().out
    assert "environment drift" in out and "-> 99.0" in out and "IDENTICAL" in out
