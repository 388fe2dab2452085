"""The ``qemlflow`` command as a user meets it: outputs, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from qemlflow.cli.main import main

CONFIG = {
    "name": "cli-test",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp", "size": 1024, "counts": True}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 40}},
    "evaluation": {"n_bootstrap": 50, "plots": False},
}


def _write_config(tmp_path: Path, source: Path, **changes: object) -> Path:
    config = json.loads(json.dumps(CONFIG))
    config["dataset"]["source"] = str(source)
    config.update(changes)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_run_then_predict(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path, small_esol_csv)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "rmse" in printed.out
    # the two bad rows, and methanol and iodomethane (parent_too_small)
    assert "4 input rows rejected" in printed.out
    assert json.loads((out / "metrics.json").read_text())["test"]["rmse"] > 0

    molecules = tmp_path / "new.csv"
    pd.DataFrame({"SMILES": ["CCO", "C1CC", "", "c1ccccc1"]}).to_csv(molecules, index=False)
    scored = tmp_path / "scored.csv"
    assert main(["predict", str(out), str(molecules), "-o", str(scored)]) == 0
    table = pd.read_csv(scored, keep_default_na=False)
    assert table["smiles"].tolist() == ["CCO", "C1CC", "", "c1ccccc1"]
    assert table["error"].tolist()[0] == "" and table["error"].tolist()[3] == ""
    assert table["error"].tolist()[1].startswith("unparsable")
    assert table["error"].tolist()[2].startswith("empty")
    assert "2 invalid" in " ".join(capsys.readouterr().out.split())  # rich wraps long lines


def test_datasets_lists_the_bundled_sets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.lower()
    for name in ("esol", "freesolv", "lipophilicity", "bbbp", "bace", "clintox", "tox21"):
        assert name in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("qemlflow ")


def _bad_inputs(tmp_path: Path, esol_csv_text: str) -> dict[str, tuple[Path, str, str]]:
    """name -> (data file, target column, expected text in the error or rejected reason)."""
    cases: dict[str, tuple[Path, str, str]] = {}

    def write(name: str, content: str | bytes, suffix: str = ".csv") -> Path:
        path = tmp_path / f"{name}{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    head = "\n".join(esol_csv_text.splitlines()[:60])
    cases["invalid_smiles"] = (write("invalid", head + "\nC1CC(,-1.0\n"), "logp", "unparsable")
    cases["empty_smiles"] = (write("empty_smiles", head + "\n,-1.0\n"), "logp", "empty")
    cases["missing_label"] = (write("missing_label", head + "\nCCO,\n"), "logp", "missing_label")
    cases["non_numeric_label"] = (
        write("non_numeric", head + "\nCCO,abc\n"),
        "logp",
        "non_numeric_label",
    )
    cases["wrong_column"] = (write("wrong_column", head), "logS", "'logS' not found")
    cases["empty_file"] = (write("empty_file", ""), "logp", "empty")
    cases["binary_file"] = (
        write("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4),
        "logp",
        "binary",
    )
    return cases


@pytest.mark.parametrize(
    "case",
    [
        "invalid_smiles",
        "empty_smiles",
        "missing_label",
        "non_numeric_label",
        "wrong_column",
        "empty_file",
        "binary_file",
    ],
)
def test_bad_input_gets_a_one_line_error_or_rejected_rows(
    tmp_path: Path, esol_frame: pd.DataFrame, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = esol_frame.to_csv(index=False)
    path, target, expected = _bad_inputs(tmp_path, text)[case]
    config = _write_config(tmp_path, path)
    raw = yaml.safe_load(config.read_text())
    raw["dataset"]["target_columns"] = [target]
    raw["split"] = {"sizes": [0.7, 0.15, 0.15]}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"

    code = main(["run", str(config), "--out", str(out)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    if code == 0:
        rejected = pd.read_csv(out / "rejected.csv")
        assert len(rejected) == 1
        assert expected in rejected["reason"].iloc[0]
        predictions = pd.read_csv(out / "predictions.csv")
        assert len(predictions) == 60  # 59 good rows + the bad one
    else:
        assert code == 2
        lines = _error_lines(captured.err)
        assert len(lines) == 1, captured.err
        assert expected.lower() in lines[0].lower()
        assert ";" in lines[0]  # problem; fix


def test_unknown_config_key_is_one_line(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path, small_esol_csv, modle={"estimator": "lightgbm"})
    assert main(["run", str(config)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "unknown key 'modle'" in lines[0]
    assert "model" in lines[0]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not found"):
        main(["--debug", "run", str(tmp_path / "missing.yaml")])


def test_missing_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    molecules = tmp_path / "m.csv"
    molecules.write_text("smiles\nCCO\n")
    assert main(["predict", str(tmp_path / "nothing"), str(molecules)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "no model" in lines[0]


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "Missing argument" in capsys.readouterr().err


def test_the_installed_command_runs_the_demo(tmp_path: Path) -> None:
    """The README's demo: the real entry point, bundled ESOL, the shipped default config."""
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "qemlflow", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["rmse"] <= 0.65
    # 1128 rows: 11 duplicate structures merged, 7 parents under 3 heavy atoms (methane, ...)
    assert sum(metrics["n"].values()) == 1110
    assert "rmse" in done.stdout
    assert len(pd.read_csv(out / "predictions.csv")) == 1128


def test_serve_without_the_serve_extra_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "qemlflow.serve.app", None)  # as if fastapi were missing
    assert main(["serve", "sol", "--port", "8765"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "serve extra" in lines[0]


def test_error_messages_keep_square_brackets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Errors name things like "qemlflow[gnn]" or a user's path: the console must print
    # them as text, not read "[...]" as style markup and drop it.
    (tmp_path / "one.smi").write_text("CCO\n")
    spec = str(tmp_path / "no[red]pe.joblib")
    code = main(["screen", spec, str(tmp_path / "one.smi"), "-o", str(tmp_path / "o.parquet")])
    assert code == 2
    assert "no[red]pe.joblib" in capsys.readouterr().err
