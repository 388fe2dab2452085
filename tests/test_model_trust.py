"""No code from untrusted model files: ``predict``, ``screen`` and ``serve`` as real processes.

A crafted ``model.joblib`` is a valid QeMLflow model that also touches a marker file when
it is unpickled. Given as a file, as a run folder, or as a folder named like a registry
reference, it must never be unpickled unless ``--trust-file`` says so; with the flag it is
(the marker appears), and the decision is in the audit trail.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.bundled import bundled_csv
from tests.extras import require_extra

import qemlflow as qm
from qemlflow import registry
from qemlflow.pipeline.predictor import load_model
from qemlflow.store import Store

CONFIG: dict[str, Any] = {
    "name": "trusted",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp", "size": 512}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 0, "plots": False},
}
pytestmark = pytest.mark.filterwarnings("ignore:the training molecules:UserWarning")


class _TouchWhenUnpickled:
    """Unpickling this calls ``Path.touch(marker)``: the pickle names only stdlib code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@dataclass
class Setup:
    store: Path
    run: Path
    evil: bytes
    marker: Path
    molecules: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("trust")
    pd.read_csv(bundled_csv("esol")).head(120).to_csv(folder / "train.csv", index=False)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "source": str(folder / "train.csv")}}
    with Store.open(folder / "store") as store:
        result = qm.run(config, folder / "run", store=store)
        assert result.run_id is not None
        registry.register(store, result.run_id, "sol")
        registry.promote(store, "sol", 1, to="production")
    # A model that works (predictions succeed when it is trusted) and runs code on loading.
    marker = folder / "UNPICKLED"
    payload = {
        "format": "qemlflow.predictor/1",
        "predictor": load_model(folder / "run"),
        "side_effect": _TouchWhenUnpickled(marker),
    }
    evil = gzip.compress(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL), mtime=0)
    molecules = folder / "molecules.csv"
    pd.DataFrame({"smiles": ["CCO", "c1ccccc1O", "not a smiles"]}).to_csv(molecules, index=False)
    yield Setup(folder / "store", folder / "run", evil, marker, molecules)


@pytest.fixture
def env(setup: Setup) -> Iterator[dict[str, str]]:
    """The environment of the CLI processes: the default store is the one that trained."""
    setup.marker.unlink(missing_ok=True)
    yield {**os.environ, "QEMLFLOW_HOME": str(setup.store), "QEMLFLOW_ACTOR": "Ada <ada@lab>"}
    setup.marker.unlink(missing_ok=True)


def _qemlflow(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def _command(kind: str, model: str | Path, setup: Setup, out: Path) -> list[str | Path]:
    return [kind, model, setup.molecules, "-o", out.with_suffix(".csv")]


def _refused_in_one_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("kind", ["predict", "screen"])
def test_a_model_file_the_store_does_not_know_is_never_unpickled(
    kind: str, setup: Setup, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(setup.evil)
    digest = hashlib.sha256(setup.evil).hexdigest()
    for given in (folder / "model.joblib", folder):  # the file, and a run-like folder
        done = _qemlflow(env, *_command(kind, given, setup, tmp_path / "out"))
        _refused_in_one_line(done, "--trust-file", digest[:12], "not known to the store")
        assert not setup.marker.exists(), f"{kind} {given} unpickled the file"
        assert not (tmp_path / "out.csv").exists()
    with Store.open(setup.store) as store:
        assert not store.has_blob(digest)  # refused files are not even kept


@pytest.mark.parametrize("kind", ["predict", "screen"])
def test_trust_file_loads_the_file_and_records_who_trusted_what(
    kind: str, setup: Setup, env: dict[str, str], tmp_path: Path
) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(setup.evil)
    digest = hashlib.sha256(setup.evil).hexdigest()
    done = _qemlflow(env, *_command(kind, model, setup, tmp_path / "out"), "--trust-file")
    assert done.returncode == 0, done.stderr
    assert setup.marker.exists(), "--trust-file did not load the file"
    assert f"model from file {model} sha256 {digest[:12]}" in done.stderr
    assert "trusted with --trust-file" in done.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 3
    with Store.open(setup.store) as store:
        event = store.audit_events(action="model.trusted")[-1]
        assert event.objects == {"model": digest}
        assert event.details["path"] == str(model) and event.details["sha256"] == digest
        assert event.details["command"] == kind
        # $QEMLFLOW_ACTOR credits nobody: the actor is the account that signed the event
        assert event.actor != "Ada <ada@lab>" and event.actor == store.identities.owner().display
        assert store.has_blob(digest)  # kept, so `audit verify` re-hashes what was trusted
        assert store.verify_audit().ok


@pytest.mark.parametrize("kind", ["predict", "screen"])
def test_a_folder_named_like_a_registry_reference_never_shadows_the_registry(
    kind: str, setup: Setup, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "work"
    (cwd / "sol@production").mkdir(parents=True)
    (cwd / "sol@production" / "model.joblib").write_bytes(setup.evil)
    monkeypatch.chdir(cwd)  # the CLI processes run here
    with Store.open(setup.store) as store:
        version = registry.resolve(store, "sol@production")

    done = _qemlflow(env, *_command(kind, "sol@production", setup, cwd / "reg"))
    assert done.returncode == 0, done.stderr
    assert not setup.marker.exists(), "the local folder shadowed the registry"
    said = done.stderr.splitlines()[0]
    assert said.startswith(f"model from registry sol@production (version {version.version})")
    assert f"sha256 {version.model_digest[:12]}" in said
    assert "the local 'sol@production' is not used" in said

    # Written as a path, it is the folder: a file like any other, refused unread...
    done = _qemlflow(env, *_command(kind, "./sol@production", setup, cwd / "path"))
    _refused_in_one_line(done, "--trust-file")
    assert not setup.marker.exists()
    # ...unless the user trusts it.
    done = _qemlflow(env, *_command(kind, "./sol@production", setup, cwd / "path"), "--trust-file")
    assert done.returncode == 0, done.stderr
    assert setup.marker.exists()


@pytest.mark.parametrize("kind", ["predict", "screen"])
def test_a_run_folder_of_the_store_needs_no_flag(
    kind: str, setup: Setup, env: dict[str, str], tmp_path: Path
) -> None:
    done = _qemlflow(env, *_command(kind, setup.run, setup, tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256((setup.run / "model.joblib").read_bytes()).hexdigest()
    assert f"model from file {setup.run / 'model.joblib'} sha256 {digest[:12]}" in done.stderr
    assert "known to the store, run " in done.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 3


def test_the_run_folder_describes_its_model_without_unpickling(setup: Setup) -> None:
    import json

    manifest = json.loads((setup.run / "model.json").read_text())
    digest = hashlib.sha256((setup.run / "model.joblib").read_bytes()).hexdigest()
    assert manifest["model_sha256"] == digest
    assert manifest["model_file"] == "model.joblib"
    assert manifest["task"] == "regression" and manifest["target_names"] == ["logp"]
    predictor = load_model(setup.run)  # what the pickle holds, the manifest says
    assert manifest["feature_spec"] == predictor.feature_spec
    assert manifest["standardize"] is predictor.standardize is True
    assert "scikit-learn" in manifest["versions"]
    with Store.open(setup.store) as store:
        run = store.get_run(manifest["run_id"])
        assert next(s.output for s in run.steps if s.step == "fit") == digest
        assert "model.json" in {a.name for a in run.artifacts}


def test_a_model_that_does_not_match_its_manifest_is_refused_even_when_trusted(
    setup: Setup, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "run-copy"
    shutil.copytree(setup.run, folder)
    (folder / "model.joblib").write_bytes(setup.evil)  # swapped under a genuine manifest
    for flags in ([], ["--trust-file"]):
        done = _qemlflow(env, *_command("predict", folder, setup, tmp_path / "out"), *flags)
        _refused_in_one_line(done, "does not match its manifest")
        assert not setup.marker.exists()


def test_serve_takes_registry_references_only(
    setup: Setup, env: dict[str, str], tmp_path: Path
) -> None:
    require_extra("fastapi")
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(setup.evil)
    for given in (folder, folder / "model.joblib"):
        done = _qemlflow(env, "serve", given, "--port", "8799", "--poll", "0")
        assert done.returncode == 2, done.stderr
        assert "no model named" in done.stderr and "Traceback" not in done.stderr
        assert not setup.marker.exists()
