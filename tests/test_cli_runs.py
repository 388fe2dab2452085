"""``qemlflow runs`` and ``qemlflow data`` as tables a person reads (not --json): list,
show, compare (differences only, or --all) and export, on two small recorded runs of a
module's store; the real CLI in-process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import qemlflow as qm
from qemlflow.cli.main import main
from qemlflow.store import Store


@pytest.fixture(scope="module")
def two_runs(
    tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame
) -> Iterator[tuple[Path, str, str]]:
    folder = tmp_path_factory.mktemp("runs")
    source = folder / "esol.csv"
    esol_frame.head(40).to_csv(source, index=False)
    config = {
        "name": "tables",
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": [{"type": "ecfp", "size": 256}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 5}},
        "evaluation": {"n_bootstrap": 10, "plots": False},
    }
    with Store.open(folder / "store") as store:
        first = qm.run(config, folder / "a", store=store).run_id
        second = qm.run({**config, "seed": 1}, folder / "b", store=store).run_id
    assert first and second
    yield folder / "store", first, second


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables and paths unwrapped: ids, values and paths whole. The consoles' own width,
    not COLUMNS: a console made where COLUMNS was set (a pytest-xdist worker) keeps it."""
    from qemlflow.cli import render

    for console in (render.console, render.error_console):
        monkeypatch.setattr(console, "_width", 250)


def _out(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_runs_list_and_show_as_tables(
    two_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store, first, second = two_runs
    listed = _out(capsys, "runs", "list", "--store", str(store))
    assert first in listed and second in listed and "finished" in listed
    assert "rmse" in listed
    assert listed.index(second) < listed.index(first)  # newest first
    shown = _out(capsys, "runs", "show", first, "--store", str(store))
    assert f"run {first} tables: finished" in shown
    for step in ("standardize", "featurize", "fit", "evaluate"):
        assert step in shown
    assert re.search(r"^test: .*rmse \d", shown, re.MULTILINE)
    assert "artifact " in shown and "environment: Python" in shown


def test_runs_compare_shows_differences_or_every_row(
    two_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store, first, second = two_runs
    differences = _out(capsys, "runs", "compare", first, second, "--store", str(store))
    assert "seed" in differences and "metrics" in differences
    assert "model.estimator" not in differences  # equal rows are left out
    every = _out(capsys, "runs", "compare", first, second, "--all", "--store", str(store))
    assert "model.estimator" in every and "random_forest" in every
    same = _out(capsys, "runs", "compare", first, first, "--store", str(store))
    assert "the two runs do not differ" in same


def test_runs_export_writes_a_bundle_of_steps_and_audit_events(
    two_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store, first, _ = two_runs
    bundle = tmp_path / "bundle.json"
    said = _out(capsys, "runs", "export", first, "--out", str(bundle), "--store", str(store))
    assert said.startswith(f"wrote {bundle}: run {first},")
    data = json.loads(bundle.read_text())
    assert data["run"]["id"] == first
    assert {s["step"] for s in data["steps"]} >= {"standardize", "fit", "evaluate"}
    assert data["audit"]["events"][0]["action"] == "store.owner"


def test_data_list_as_a_table(
    two_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store, _, _ = two_runs
    source = tmp_path / "small.csv"
    pd.DataFrame({"smiles": ["CCO", "CCN", "not a smiles"], "y": [1.0, 2.0, 3.0]}).to_csv(
        source, index=False
    )
    added = _out(
        capsys, "data", "add", str(source), "--smiles-column", "smiles",
        "--target", "y", "--store", str(store),
    )  # fmt: skip
    assert "3 rows -> 2 molecules, 1 rejected" in added
    listed = _out(capsys, "data", "list", "--store", str(store))
    row = next(line for line in listed.splitlines() if "small" in line)
    assert " 2 " in row and " 1 " in row and "regression" in row


def test_audit_log_as_a_table_and_anchors_that_are_not_anchors(
    two_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store, _, _ = two_runs
    log = _out(capsys, "audit", "log", "--store", str(store))
    assert "audit trail" in log and "store.owner" in log and "run.finished" in log
    garbled, list_file = tmp_path / "garbled.json", tmp_path / "list.json"
    garbled.write_text("{not json")
    list_file.write_text("[1, 2]")
    for path, said in (
        (garbled, f"cannot read the anchor file '{garbled}' (JSONDecodeError)"),
        (tmp_path / "absent.json", "(FileNotFoundError)"),
        (list_file, f"'{list_file}' is not an audit anchor"),
    ):
        assert main(["audit", "verify", "--anchor", str(path), "--store", str(store)]) == 2
        assert said in capsys.readouterr().err.replace("\n", " ")


def test_run_without_recording_and_with_n_jobs(
    two_runs: tuple[Path, str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store, _, _ = two_runs
    with Store.open(store) as opened:
        config = opened.runs.get(two_runs[1]).config
        before = len(opened.list_runs())
    path = tmp_path / "experiment.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    out = tmp_path / "out"
    said = _out(capsys, "run", str(path), "--out", str(out), "--n-jobs", "1", "--no-record")
    assert f"results written to {out}" in said and "recorded" not in said
    assert (out / "metrics.json").is_file()
    with Store.open(store) as opened:
        assert len(opened.list_runs()) == before
    assert main(["run", str(path), "--n-jobs", "0", "--no-record"]) == 2
    assert "n_jobs" in capsys.readouterr().err
