"""A run's keys and its store's audit chain, checked by a third party's script.

A demo run is exported with ``qemlflow runs export`` and checked by
scripts/verify_bundle.py in a subprocess (standard library and rfc8785 only); a one-byte
change in a step's params, and in an audit event, each makes it fail naming the culprit.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qemlflow.pipeline.runner import run
from qemlflow.store import Store

ROOT = Path(__file__).resolve().parents[1]
VERIFIER = ROOT / "scripts" / "verify_bundle.py"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def _verify(bundle: Path) -> subprocess.CompletedProcess[str]:
    # A clean interpreter with nothing of QeMLflow on its path: the script stands alone.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(bundle)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Path:
    """A 60-molecule demo run in a fresh store, exported with the CLI."""
    folder = tmp_path_factory.mktemp("bundle")
    data = folder / "demo.csv"
    esol_frame.head(60).to_csv(data, index=False)
    config = {
        "name": "demo",
        "seed": 0,
        "dataset": {"source": str(data)},
        # reg_lambda 2.0: an integral float, which the key records as such
        "model": {"estimator": "lightgbm", "params": {"n_estimators": 20, "reg_lambda": 2.0}},
        "evaluation": {"n_bootstrap": 0, "plots": False},
    }
    with Store.open(folder / "store") as store:
        result = run(config, store=store)
    assert result.run_id is not None
    bundle = folder / "bundle.json"
    done = _cli(
        "runs", "export", result.run_id, "--out", str(bundle), "--store", str(folder / "store")
    )
    assert done.returncode == 0, done.stderr
    return bundle


def test_the_verifier_imports_nothing_but_hashlib_json_argparse_sys_and_rfc8785() -> None:
    tree = ast.parse(VERIFIER.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported == {"argparse", "hashlib", "json", "sys", "rfc8785"}


def test_an_exported_run_verifies(exported: Path) -> None:
    bundle = json.loads(exported.read_text(encoding="utf-8"))
    assert [s["step"] for s in bundle["steps"]] == [
        "dataset",
        "standardize",
        "featurize",
        "split",
        "fit",
        "predict",
        "evaluate",
    ]
    fit = next(s for s in bundle["steps"] if s["step"] == "fit")["record"]
    assert {"lightgbm", "scikit-learn", "numpy"} <= set(fit["libraries"])
    assert fit["params"]["params"]["reg_lambda"] == 2.0
    assert bundle["datasets"] and "qemlflow:standardize" in bundle["datasets"][0]["libraries"]
    assert {e["hash_scheme"] for e in bundle["audit"]["events"]} == {"jcs-signed"}
    done = _verify(exported)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK - 7 step keys, 1 dataset version(s)" in done.stdout


def _one_byte_changed(text: str, prefix: str, new: str) -> str:
    """``text`` with the character right after the first ``prefix`` replaced by ``new``."""
    where = text.index(prefix) + len(prefix)
    assert len(text[where].encode()) == len(new.encode()) == 1 and text[where] != new
    return text[:where] + new + text[where + 1 :]


def test_a_one_byte_change_in_step_params_is_named(exported: Path, tmp_path: Path) -> None:
    text = exported.read_text(encoding="utf-8")
    tampered = tmp_path / "params.json"
    # n_estimators 20 -> 21 in the fit step's record
    tampered.write_text(_one_byte_changed(text, '"n_estimators": 2', "1"), encoding="utf-8")
    done = _verify(tampered)
    assert done.returncode == 1
    assert "MISMATCH step 4 (fit" in done.stdout and "key mismatch" in done.stdout


def test_a_one_byte_change_in_an_audit_event_is_named(exported: Path, tmp_path: Path) -> None:
    text = exported.read_text(encoding="utf-8")
    bundle = json.loads(text)
    actor = bundle["audit"]["events"][0]["actor"]
    tampered = tmp_path / "audit.json"
    changed = "X" if actor[0] != "X" else "Y"  # the first letter of the first actor
    tampered.write_text(_one_byte_changed(text, '"actor": "', changed), encoding="utf-8")
    done = _verify(tampered)
    assert done.returncode == 1
    assert "MISMATCH audit event 1" in done.stdout and "hash mismatch" in done.stdout


def test_events_hashed_before_rfc_8785_verify_with_the_legacy_encoder(tmp_path: Path) -> None:
    from qemlflow.store.audit import AuditEvent, next_event
    from qemlflow.store.keys import legacy_canonical_json, sha256_hex

    content = {
        "seq": 1,
        "timestamp": "2026-01-01T00:00:00.000000+00:00",
        "actor": "Ada",
        "action": "store.gc",
        "objects": {},
        "reason": None,
        "details": {"grace_seconds": 3600.0},
        "prev_hash": "0" * 64,
    }
    old = {**content, "hash": sha256_hex(legacy_canonical_json(content))}
    old["hash_scheme"] = "legacy-json"
    new = next_event(AuditEvent(**old), "run.started", {"run": "r1"}, actor="Ada").to_dict()
    bundle = {"run": {"id": "r1"}, "steps": [], "datasets": [], "audit": {"events": [old, new]}}
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    done = _verify(path)
    assert done.returncode == 0, done.stdout
    old["hash_scheme"] = "jcs"  # the same content under the other encoder: another hash
    path.write_text(json.dumps(bundle), encoding="utf-8")
    done = _verify(path)
    assert (
        done.returncode == 1 and "MISMATCH audit event 1 (store.gc): hash mismatch" in done.stdout
    )
