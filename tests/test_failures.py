"""Clean failure everywhere: hostile CLI input, killed runs, gc beside runs, missing triggers.

Every hostile invocation below runs as a real ``qemlflow`` process and must end with
exit code 2 and exactly one line on stderr: no traceback, no "internal error".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sqlalchemy import text
from tests.bundled import bundled_csv

from qemlflow.errors import FeaturizerError
from qemlflow.features import make_featurizer
from qemlflow.store import Store

SRC = Path(__file__).resolve().parents[1] / "src"

SMALL_CONFIG = {
    "name": "small",
    "seed": 0,
    "dataset": {"source": "", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp", "size": 256}],
    "split": {"sizes": [0.8, 0.1, 0.1]},
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 0, "plots": False},
}


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["QEMLFLOW_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    # QEMLFLOW_IDENTITY_DIR is inherited (tests/conftest.py): the CLI acts as the same OS
    # account as the test process, which owns the stores either of them made.
    for name in ("QEMLFLOW_DATABASE_URL", "QEMLFLOW_PASSPHRASE"):
        env.pop(name, None)
    return env


def _qemlflow(
    args: list[str], home: Path, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", *args],
        stdin=subprocess.DEVNULL,  # no terminal: nothing may wait for an answer
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=_env(home),
    )


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed as an input error should; return its one line."""
    err = done.stderr
    assert done.returncode == 2, (done.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _write_config(folder: Path, source: Path, **changes: object) -> Path:
    config = json.loads(json.dumps(SMALL_CONFIG))
    config["dataset"]["source"] = str(source)
    config.update(changes)
    path = folder / f"experiment-{len(list(folder.glob('experiment-*')))}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class Workspace:
    """A folder with a store holding one recorded run, registered as model ``sol``."""

    root: Path
    home: Path
    run_dir: Path
    run_id: str
    config: Path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("hostile")
    home = root / "store"
    data = root / "small.csv"
    pd.read_csv(bundled_csv("esol")).head(120).to_csv(data, index=False)
    config = _write_config(root, data)
    done = _qemlflow(["run", str(config), "--out", "results"], home, root)
    assert done.returncode == 0, done.stderr
    run_id = json.loads((root / "results" / "run.json").read_text())["run_id"]
    done = _qemlflow(["models", "register", run_id, "--name", "sol"], home, root)
    assert done.returncode == 0, done.stderr
    (root / "molecules.csv").write_text("smiles\nCCO\nc1ccccc1\n")
    (root / "a-folder").mkdir()
    (root / "binary.csv").write_bytes(b"\xff\xfe\x00\x81 not text\n")
    (root / "bad.yaml").write_text("name: [unclosed\n")
    (root / "deep.yaml").write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("mine")
    for name, features in {
        "huge-size": [{"type": "ecfp", "size": 10**11}],
        "huge-radius": [{"type": "ecfp", "radius": 10**6}],
        "huge-atompair": [{"type": "atompair", "size": 10**9}],
        "huge-jobs": [{"type": "ecfp", "n_jobs": 10**6}],
    }.items():
        (root / f"{name}.yaml").write_text(
            yaml.safe_dump({**SMALL_CONFIG, "dataset": {"source": str(data)}, "features": features})
        )
    for name, changes in {
        "zero-jobs": {"n_jobs": 0},
        "negative-seed": {"seed": -1},
        "huge-bootstrap": {"evaluation": {"n_bootstrap": 10**11}},
    }.items():
        (root / f"{name}.yaml").write_text(
            yaml.safe_dump({**SMALL_CONFIG, "dataset": {"source": str(data)}, **changes})
        )
    return Workspace(root, home, root / "results", run_id, config)


BIG = "99999999999999999999"

# (id, arguments; {run}/{config} are filled in, expected words in the error line)
MOLS = "molecules.csv"
HOSTILE: list[tuple[str, list[str], str]] = [
    ("promote-20-digit-version", ["models", "promote", "sol", BIG, "--to", "production"], BIG),
    ("promote-version-0", ["models", "promote", "sol", "0"], "no version 0"),
    ("model-reference-20-digits", ["lineage", f"sol@{BIG}"], "sol@"),
    ("unknown-option", ["models", "show", "sol", "--version", "3"], "--help"),
    ("missing-argument", ["run"], "Missing argument"),
    ("negative-limit", ["runs", "list", "--limit", "-1"], "--limit"),
    ("gc-negative-grace", ["store", "gc", "--grace", "-5"], "grace"),
    ("gc-nan-grace", ["store", "gc", "--grace", "nan"], "grace"),
    ("predict-output-is-folder", ["predict", "{run}", MOLS, "-o", "a-folder"], "folder"),
    (
        "predict-output-unwritable",
        ["predict", "{run}", MOLS, "-o", "/proc/x/o.csv"],
        "/proc",
    ),
    ("predict-input-is-folder", ["predict", "{run}", "a-folder"], "a-folder"),
    ("predict-input-binary", ["predict", "{run}", "binary.csv"], "binary"),
    ("predict-model-missing", ["predict", "nothing-here", "molecules.csv"], "no model"),
    ("screen-output-is-folder", ["screen", "{run}", MOLS, "-o", "a-folder"], "a-folder"),
    (
        "screen-20-digit-workers",
        ["screen", "{run}", MOLS, "-o", "s.csv", "--workers", BIG],
        "too large",
    ),
    (
        "screen-nan-domain-threshold",
        ["screen", "{run}", MOLS, "-o", "s.csv", "--domain-threshold", "nan"],
        "--domain-threshold",
    ),
    (
        "screen-negative-top",
        ["screen", "{run}", MOLS, "-o", "s.csv", "--top", "-5"],
        "--top",
    ),
    ("audit-anchor-output-is-folder", ["audit", "anchor", "-o", "a-folder"], "a-folder"),
    ("audit-anchor-output-missing-dir", ["audit", "anchor", "-o", "/proc/x/head.json"], "/proc"),
    (
        "audit-report-output-is-folder",
        ["audit", "report", "{run_id}", "-o", "a-folder"],
        "a-folder",
    ),
    ("audit-verify-anchor-is-folder", ["audit", "verify", "--anchor", "a-folder"], "a-folder"),
    ("audit-verify-anchor-binary", ["audit", "verify", "--anchor", "binary.csv"], "anchor"),
    ("audit-log-bad-since", ["audit", "log", "--since", "yesterday-ish"], "ISO"),
    ("backup-into-a-file", ["store", "backup", "molecules.csv"], "empty folder"),
    ("backup-unwritable", ["store", "backup", "/proc/x/backup"], "/proc"),
    ("restore-from-a-file", ["store", "restore", "molecules.csv"], "molecules.csv"),
    ("run-out-is-a-file", ["run", "{config}", "--out", "molecules.csv"], "is a file"),
    ("run-out-holds-other-files", ["run", "{config}", "--out", "other"], "notes.txt"),
    ("run-out-is-current-folder", ["run", "{config}", "--out", "."], "current folder"),
    ("run-bad-yaml", ["run", "bad.yaml"], "YAML"),
    ("run-binary-config", ["run", "binary.csv"], "YAML"),
    ("run-deep-yaml", ["run", "deep.yaml"], "YAML"),
    ("run-config-is-folder", ["run", "a-folder"], "a-folder"),
    ("run-huge-ecfp-size", ["run", "huge-size.yaml"], "limit of 65536"),
    ("run-huge-ecfp-radius", ["run", "huge-radius.yaml"], "limit of 10"),
    ("run-huge-atompair-size", ["run", "huge-atompair.yaml"], "limit of 65536"),
    ("run-huge-featurizer-jobs", ["run", "huge-jobs.yaml"], "n_jobs"),
    ("run-zero-jobs", ["run", "zero-jobs.yaml"], "n_jobs"),
    ("run-zero-jobs-option", ["run", "{config}", "--n-jobs", "0"], "n_jobs"),
    ("run-huge-jobs-option", ["run", "{config}", "--n-jobs", "100000000"], "n_jobs"),
    ("run-negative-seed", ["run", "negative-seed.yaml"], "seed"),
    ("run-huge-bootstrap", ["run", "huge-bootstrap.yaml"], "n_bootstrap"),
    ("register-empty-name", ["models", "register", "{run_id}", "--name", ""], "model name"),
    ("data-add-folder", ["data", "add", "a-folder", "--smiles", "smiles"], "a-folder"),
    ("keys-create-empty", ["keys", "create", ""], "name"),
    ("keys-create-line-break", ["keys", "create", "ci\nclient"], "line breaks"),
    ("data-add-bad-task", ["data", "add", MOLS, "--smiles", "smiles", "--task", "x"], "--task"),
    ("data-add-bad-duplicates", ["data", "add", MOLS, "--duplicates", "x"], "--duplicates"),
    ("benchmark-20-digit-seeds", ["benchmark", "--seeds", BIG], "--seeds"),
    ("identity-init-no-terminal", ["identity", "init", "--name", "A", "--email", "a@b.c"], "PASS"),
    ("sign-no-terminal", ["sign", "{run_id}", "--meaning", "approved", "--reason", "x"], "PASS"),
    (
        "store-unreachable-database",
        ["runs", "list", "--store", "postgresql://u@127.0.0.1:1/x"],
        "127",
    ),
]


@pytest.fixture(scope="module")
def hostile_results(workspace: Workspace) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every hostile invocation, run as real processes four at a time."""

    def invoke(case: tuple[str, list[str], str]) -> subprocess.CompletedProcess[str]:
        args = [
            a.format(run=workspace.run_dir, run_id=workspace.run_id, config=workspace.config)
            for a in case[1]
        ]
        return _qemlflow(args, workspace.home, workspace.root, timeout=120)

    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(invoke, HOSTILE))
    return {case[0]: result for case, result in zip(HOSTILE, done, strict=True)}


@pytest.mark.parametrize(("case", "expected"), [(c[0], c[2]) for c in HOSTILE], ids=lambda v: v)
def test_hostile_input_is_one_line_with_exit_2(
    hostile_results: dict[str, subprocess.CompletedProcess[str]], case: str, expected: str
) -> None:
    line = _one_line_error(hostile_results[case])
    assert expected in line, line


def test_hostile_input_left_the_users_files_alone(
    hostile_results: dict[str, subprocess.CompletedProcess[str]], workspace: Workspace
) -> None:
    assert (workspace.root / "other" / "notes.txt").read_text() == "mine"
    assert (workspace.root / "molecules.csv").read_text().startswith("smiles\n")
    assert not list(workspace.root.glob(".*partial*"))


def test_debug_still_shows_the_traceback(workspace: Workspace) -> None:
    done = _qemlflow(
        ["--debug", "predict", str(workspace.run_dir), "molecules.csv", "-o", "a-folder"],
        workspace.home,
        workspace.root,
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "IsADirectoryError" in done.stderr


def test_featurizer_parameters_are_bounded() -> None:
    with pytest.raises(FeaturizerError, match="'size' is 100000000000, above the limit of 65536"):
        make_featurizer({"type": "ecfp", "size": 10**11})
    with pytest.raises(FeaturizerError, match=r"'radius'.*limit of 10"):
        make_featurizer([{"type": "rdkit2d"}, {"type": "fcfp", "radius": 11}])
    assert make_featurizer({"type": "ecfp", "size": 65536, "radius": 10}).n_features_out == 65536


# -- run output folders appear whole -----------------------------------------------------


def _start_run(workspace: Workspace, out: Path, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qemlflow", "run", str(workspace.config), "--out", str(out)],
        cwd=workspace.root,
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: object, proc: subprocess.Popen[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert proc.poll() is None, (
            f"the run ended first: {proc.stderr.read() if proc.stderr else ''}"
        )
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("moment", ["model-written", "store-opened"])
def test_a_killed_run_leaves_no_usable_output_folder(
    workspace: Workspace, tmp_path: Path, moment: str
) -> None:
    out = tmp_path / "results"
    home = tmp_path / "store"
    proc = _start_run(workspace, out, home)
    if moment == "model-written":  # as late as possible: every file written, not yet renamed

        def ready() -> bool:
            return any((p / "run.json").exists() for p in tmp_path.glob(".results.partial-*"))

    else:

        def ready() -> bool:
            return (home / "metadata.db").exists()

    _wait_for(ready, proc)
    _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    line = _one_line_error(_qemlflow(["predict", str(out), "molecules.csv"], home, workspace.root))
    assert "no model" in line
    if moment == "model-written":  # the run was in flight: its lease died with it
        assert list((home / "leases").glob("*.json"))
        with Store.open(home) as store:
            store.gc(grace_seconds=0)
            assert [r.status for r in store.list_runs()] == ["aborted"]
        assert not list((home / "leases").glob("*.json"))

    # The next run into the same folder clears the leftovers and publishes a whole folder.
    done = _qemlflow(["run", str(workspace.config), "--out", str(out)], home, workspace.root)
    assert done.returncode == 0, done.stderr
    assert (out / "model.joblib").is_file() and (out / "run.json").is_file()
    assert not list(tmp_path.glob(".results.*"))


def test_a_killed_rerun_keeps_the_earlier_results_whole(
    workspace: Workspace, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    home = tmp_path / "store"
    done = _qemlflow(["run", str(workspace.config), "--out", str(out)], home, workspace.root)
    assert done.returncode == 0, done.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = _start_run(workspace, out, home)
    _wait_for(lambda: bool(list(tmp_path.glob(".results.partial-*"))), proc)
    _kill(proc)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_rerun_replaces_earlier_results_as_a_whole(workspace: Workspace, tmp_path: Path) -> None:
    from qemlflow.pipeline.runner import run

    out = tmp_path / "results"
    out.mkdir()  # an empty folder is fine
    config = yaml.safe_load(workspace.config.read_text())
    first = run(config, out)
    (out / "rejected.csv").unlink()  # earlier results need not be complete
    second = run({**config, "seed": 1}, out)
    assert first.out_dir == second.out_dir == out
    assert json.loads((out / "run.json").read_text())["seed"] == 1
    assert (out / "rejected.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


# -- garbage collection beside in-flight runs --------------------------------------------

_WRITER = """
import sys
from qemlflow.store import Store

with Store.open(sys.argv[1]) as store, store.in_flight("test writer"):
    print(store.put_bytes(b"written by an in-flight run"), flush=True)
    sys.stdin.readline()  # wait: the parent runs gc now
"""


def test_gc_keeps_what_an_in_flight_process_wrote(tmp_path: Path) -> None:
    home = tmp_path / "store"
    Store.open(home).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(home)],
        env=_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        digest = writer.stdout.readline().strip()
        done = _qemlflow(["store", "gc", "--grace", "0"], home, tmp_path)
        assert done.returncode == 0, done.stderr
        with Store.open(home) as store:
            assert store.has_blob(digest)
    finally:
        _kill(writer)
    # Its process is gone (SIGKILL, no clean-up): the lease no longer protects anything.
    with Store.open(home) as store:
        assert store.gc(grace_seconds=0) == [digest]
        assert not list((home / "leases").iterdir())


def test_gc_with_no_grace_beside_a_real_run_removes_nothing_it_records(
    workspace: Workspace, tmp_path: Path
) -> None:
    home = tmp_path / "store"
    Store.open(home).close()
    proc = _start_run(workspace, tmp_path / "results", home)
    with Store.open(home) as store:
        while proc.poll() is None:
            store.gc(grace_seconds=0)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
        report = store.verify()
        assert report.ok, report.issues
        runs = store.list_runs()
        assert [r.status for r in runs] == ["finished"]
        assert all(store.has_blob(a.digest) for a in runs[0].artifacts)


def test_a_blob_touched_while_gc_moves_it_aside_is_put_back(tmp_path: Path) -> None:
    with Store.open(tmp_path / "store") as store:
        digest = store.put_bytes(b"old garbage")
        path = store.objects.path_for(digest)
        os.utime(path, (1.0, 1.0))
        assert store.objects.remove_unless_touched(digest, cutoff=0.5) is False
        assert store.get_bytes(digest) == b"old garbage"
        assert store.objects.remove_unless_touched(digest, cutoff=time.time()) is True
        assert not store.has_blob(digest)
        assert store.put_bytes(b"old garbage") == digest  # written again, not just touched
        assert store.get_bytes(digest) == b"old garbage"


# -- the append-only triggers --------------------------------------------------------------


def _drop_trigger(store: Store, name: str, table: str) -> None:
    on = f" ON {table}" if store.backend == "postgresql" else ""
    with store._engine.begin() as conn:
        conn.execute(text(f"DROP TRIGGER {name}{on}"))


@pytest.fixture
def store_with_a_run(store: Store) -> Iterator[Store]:
    run_id = store.create_run("x", {}, 0, None)
    store.finish_run(run_id, {})
    yield store


def test_verify_names_a_missing_append_only_trigger(store_with_a_run: Store) -> None:
    store = store_with_a_run
    assert store.verify().ok and store.verify_audit().ok
    if store.backend == "postgresql":
        dropped = ("audit_events_no_truncate", "audit_events")
        with store._engine.begin() as conn:  # disabled counts as missing
            conn.execute(
                text("ALTER TABLE model_versions DISABLE TRIGGER model_versions_append_only")
            )
        disabled = "model_versions_append_only"
    else:
        dropped = ("audit_events_no_delete", "audit_events")
        disabled = "alias_events_no_update"
        _drop_trigger(store, disabled, "alias_events")
    _drop_trigger(store, *dropped)

    audit = store.verify_audit()
    assert not audit.ok
    assert audit.first_bad_seq is None  # the events themselves are intact
    named = [p for p in audit.problems if p.startswith("trigger ")]
    assert len(named) == 2
    assert any(dropped[0] in p for p in named) and any(disabled in p for p in named)
    report = store.verify()
    assert not report.ok
    assert sum(dropped[0] in i.problem for i in report.issues) == 1


def test_store_and_audit_verify_commands_exit_1_naming_the_trigger(tmp_path: Path) -> None:
    home = tmp_path / "store"
    with Store.open(home) as store:
        _drop_trigger(store, "model_versions_no_delete", "model_versions")
    for command in (["store", "verify"], ["audit", "verify"]):
        done = _qemlflow(command, home, tmp_path)
        assert done.returncode == 1, done.stderr
        assert "model_versions_no_delete" in done.stdout
        assert "NOT sound" in done.stdout


def test_no_arguments_shows_the_help_and_no_error(tmp_path: Path) -> None:
    done = _qemlflow([], tmp_path / "store", tmp_path)
    assert done.returncode == 2
    assert "Usage" in done.stdout and "run" in done.stdout
    assert done.stderr.strip() == ""
