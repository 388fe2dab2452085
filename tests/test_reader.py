"""One reader: predict, screen, data add and the library read a file the same way.

Real files in tmp_path, the real CLI in-process, one small model trained for the module
(registered, so that ``screen`` takes it by registry spec from its store).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

import qemlflow as qm
from qemlflow import registry
from qemlflow.cli.main import main
from qemlflow.data import BUNDLED, load_dataset, read_table
from qemlflow.data.reader import ReadLimits, open_molecules
from qemlflow.data.registry import bundled_bytes
from qemlflow.errors import DataError
from qemlflow.pipeline.predict import predict_file
from qemlflow.store import Store

pytestmark = pytest.mark.filterwarnings("ignore:the training molecules:UserWarning")
CONFIG: dict[str, Any] = {
    "name": "reader",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp"}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 10, "plots": False},
}


@dataclass
class Trained:
    store: Path
    model: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Trained:
    folder = tmp_path_factory.mktemp("reader")
    esol_frame.head(120).to_csv(folder / "train.csv", index=False)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "source": str(folder / "train.csv")}}
    with Store.open(folder / "store") as store:
        run_id = qm.run(config, folder / "run", store=store).run_id
        assert run_id is not None
        registry.register(store, run_id, "rd")
    return Trained(folder / "store", folder / "run" / "model.joblib")


@pytest.fixture(autouse=True)
def _wide_help(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "250")  # --help lines unwrapped, option names whole
    yield


def _screen(trained: Trained, source: Path, out: Path, *args: str) -> int:
    return main(
        ["screen", "rd@1", str(source), "-o", str(out), "--store", str(trained.store), *args]
    )


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    text = " ".join(captured.err.split())  # rich may wrap one message over lines
    assert "Traceback" not in captured.err and "internal error" not in text
    assert text.count("error:") == 1, text  # after the line naming the model, if any
    return text[text.index("error:") :]


def _options_exist(message: str, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Every --option the message names is in the command's --help."""
    named = set(re.findall(r"--[a-z][a-z-]*", message))
    assert named, message
    assert main([*command, "--help"]) == 0
    helped = capsys.readouterr().out
    for option in named:
        assert re.search(rf"{option}\b", helped), f"{option} is not an option of {command}"


# ---------------------------------------------------------------- rows with extra fields


EXTRA = "smiles,name\nCCO,ethanol\nc1ccccc1,benzene,OCC\nCCN,ethylamine\n\nCC(=O)O,acetic acid,\n"


def test_extra_fields_are_errors_in_place_everywhere(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "extra.csv"
    source.write_text(EXTRA)  # row 2 would score 'benzene' (or OCC) if shifted
    table = predict_file(trained.model, source, trust_file=True)
    assert table["smiles"].tolist() == ["CCO", "", "CCN", "CC(=O)O"]
    errors = table["error"].tolist()
    assert errors[1] == (
        "too_many_fields: line 3 has 3 fields but the header has 2 (quote a value that "
        "contains the delimiter ','); fields as read: ['c1ccccc1', 'benzene', 'OCC']"
    )
    assert errors[0] == errors[2] == errors[3] == ""  # an empty trailing field is allowed
    assert table["prediction"].isna().tolist() == [False, True, False, False]

    out = tmp_path / "screened.csv"
    assert _screen(trained, source, out, "--id-column", "name") == 0
    screened = pd.read_csv(out, keep_default_na=False)
    assert screened["id"].tolist() == ["ethanol", "2", "ethylamine", "acetic acid"]
    assert screened["error"].tolist() == errors
    assert float(screened["prediction"][0]) == pytest.approx(table["prediction"][0])

    (tmp_path / "labelled.csv").write_text("smiles,y\nCCO,1.5\nCCN,2.5,OCC\nCCC,0.5\n")
    ds = load_dataset(tmp_path / "labelled.csv")
    assert ds.rows["status"].tolist() == ["ok", "rejected", "ok"]
    assert ds.rows["reason"].tolist()[1] == "too_many_fields"
    assert ds.smiles == ["CCO", "CCC"]
    # Rejected, not lost: rejected.csv keeps the row's fields as read.
    rejected = pd.read_csv(ds.write_rejected(tmp_path / "rejected.csv"), keep_default_na=False)
    assert rejected["row"].tolist() == [1]
    assert rejected["detail"][0].endswith("fields as read: ['CCN', '2.5', 'OCC']")


def test_the_three_readers_agree_on_a_smi_gz_with_extra_fields(
    trained: Trained, tmp_path: Path
) -> None:
    lines = ["CCO\tethanol", "c1ccccc1\tbenzene\tA\tB", "CCN\tx\ty", "C1CC", "", "CCC"]
    source = tmp_path / "library.smi.gz"
    source.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table = predict_file(trained.model, source, trust_file=True)
    out = tmp_path / "screened.parquet"
    assert _screen(trained, source, out) == 0
    screened = pq.read_table(out).to_pandas()
    smiles = ["CCO", "c1ccccc1", "CCN", "C1CC", "", "CCC"]
    assert table["smiles"].tolist() == screened["smiles"].tolist() == smiles
    assert screened["id"].tolist() == ["ethanol", "benzene\tA\tB", "x\ty", "4", "5", "6"]
    assert screened["error"].fillna("").tolist() == table["error"].tolist()
    assert [bool(e) for e in table["error"]] == [False, False, False, True, True, False]
    assert read_table(source)["smiles"].fillna("").tolist() == smiles


# ---------------------------------------------------------------- headers and hints


def test_headerless_tsv_hint_names_options_that_exist(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "headerless.tsv"
    source.write_text("CCO\t1\nc1ccccc1\t2\nCCN\t3\n")
    for command in (
        [
            "predict",
            "rd@1",
            str(source),
            "-o",
            str(tmp_path / "p.csv"),
            "--store",
            str(trained.store),
        ],
        [
            "screen",
            "rd@1",
            str(source),
            "-o",
            str(tmp_path / "s.csv"),
            "--store",
            str(trained.store),
        ],
        ["data", "add", str(source)],
    ):
        message = _one_line_error(capsys, main(command))
        assert "--no-header" in message, message
        _options_exist(message, command[:2] if command[0] == "data" else command[:1], capsys)
    out = tmp_path / "s.csv"
    assert _screen(trained, source, out, "--no-header", "--id-column", "2") == 0
    screened = pd.read_csv(out, keep_default_na=False)
    assert screened["smiles"].tolist() == ["CCO", "c1ccccc1", "CCN"]
    assert screened["id"].astype(str).tolist() == ["1", "2", "3"]
    table = predict_file(trained.model, source, header=False, trust_file=True)
    assert table["error"].tolist() == ["", "", ""]


def test_naming_the_first_smiles_is_refused_not_dropped(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "headerless.csv"
    source.write_text("CCO,1.5\nCCN,2.5\nCCC,0.5\n")
    for command in (
        ["predict", "rd@1", str(source), "--smiles", "CCO", "--store", str(trained.store)],
        [
            "screen",
            "rd@1",
            str(source),
            "-o",
            str(tmp_path / "s.csv"),
            "--smiles-column",
            "CCO",
            "--store",
            str(trained.store),
        ],
        ["data", "add", str(source), "--smiles", "CCO"],
    ):
        message = _one_line_error(capsys, main(command))
        assert "'CCO'" in message and "--no-header" in message, message
        _options_exist(message, command[:2] if command[0] == "data" else command[:1], capsys)
    out = tmp_path / "s.csv"
    assert _screen(trained, source, out, "--no-header", "--smiles-column", "1") == 0
    assert pd.read_csv(out)["smiles"].tolist() == ["CCO", "CCN", "CCC"]  # no row lost
    ds = load_dataset(source, header=False, smiles_column="1", target_columns=["2"])
    assert ds.smiles == ["CCO", "CCN", "CCC"] and ds.y.ravel().tolist() == [1.5, 2.5, 0.5]
    # --header says the first line is a header after all: then it is one.
    assert _screen(trained, source, out, "--header", "--smiles", "CCO") == 0
    assert pd.read_csv(out)["smiles"].tolist() == ["CCN", "CCC"]


def test_wrong_column_hints_name_the_option_of_each_command(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "mols.csv"
    source.write_text("structure,y\nCCO,1\nCCN,2\n")
    for command in (
        ["predict", "rd@1", str(source), "--store", str(trained.store)],
        [
            "screen",
            "rd@1",
            str(source),
            "-o",
            str(tmp_path / "s.csv"),
            "--store",
            str(trained.store),
        ],
        ["data", "add", str(source)],
        ["predict", "rd@1", str(source), "--smiles-column", "smile", "--store", str(trained.store)],
        [
            "screen",
            "rd@1",
            str(source),
            "-o",
            str(tmp_path / "s.csv"),
            "--id-column",
            "nope",
            "--store",
            str(trained.store),
            "--smiles",
            "structure",
        ],
        ["data", "add", str(source), "--smiles-column", "smile"],
    ):
        message = _one_line_error(capsys, main(command))
        _options_exist(message, command[:2] if command[0] == "data" else command[:1], capsys)
    assert _screen(trained, source, tmp_path / "s.csv", "--smiles", "structure") == 0


# ---------------------------------------------------------------- sizes


def test_a_10_mb_field_is_a_row_error_not_an_internal_error(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "huge.csv"
    source.write_text("smiles,y\nCCO,1\n" + "C" * 10_000_000 + ",2\nCCN,3\n")
    table = predict_file(trained.model, source, trust_file=True)
    assert table["error"].tolist()[0] == "" and table["error"].tolist()[2] == ""
    assert table["error"].tolist()[1].startswith("row_too_large: line 3 is over 1,048,576 bytes")
    out = tmp_path / "s.csv"
    assert _screen(trained, source, out) == 0
    assert pd.read_csv(out, keep_default_na=False)["error"].tolist() == table["error"].tolist()
    ds = load_dataset(source)
    assert ds.rows["reason"].tolist() == ["", "row_too_large", ""]
    quoted = tmp_path / "unclosed.csv"
    quoted.write_text('smiles,y\nCCO,1\n"CCN,2\nCCC,3\n')
    code = main(
        ["predict", str(trained.model), str(quoted), "-o", str(tmp_path / "q.csv"), "--trust-file"]
    )
    message = _one_line_error(capsys, code)
    assert "line 3 opens a quoted field that is never closed" in message


def test_limits_stop_a_stream_early() -> None:
    from qemlflow.errors import InputTooLargeError

    data = gzip.compress(b"smiles\n" + b"CCO\n" * 100_000)
    rows = open_molecules(data, name="x.csv.gz", limits=ReadLimits(max_rows=10)).molecules()
    with pytest.raises(InputTooLargeError, match="more than 10 rows"):
        list(rows)
    limited = open_molecules(data, name="x.csv.gz", limits=ReadLimits(max_bytes=1000))
    with pytest.raises(InputTooLargeError, match="over 1,000 bytes decompressed"):
        list(limited.molecules())
    with pytest.raises(DataError, match="Parquet file"):
        open_molecules(b"PAR1", name="x.parquet", header=False)


# ---------------------------------------------------------------- unchanged behaviour


def test_bundled_datasets_read_exactly_as_pandas_reads_them() -> None:
    for name, entry in BUNDLED.items():
        data = gzip.decompress(bundled_bytes(name))
        expected = pd.read_csv(pd.io.common.BytesIO(data))
        got = open_molecules(data, name=entry.filename.removesuffix(".gz")).table()
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_run_and_data_add_read_headerless_files(
    tmp_path: Path, esol_frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "headerless.csv"
    esol_frame.head(200)[["smiles", "logp"]].to_csv(source, index=False, header=False)
    config = {
        **CONFIG,
        "dataset": {"source": str(source), "header": False, "smiles_column": "1"},
    }
    result = qm.run(config, tmp_path / "run")
    assert result.dataset.target_names == ["2"]
    assert len(result.dataset.rows) == 200  # the first molecule is a row, not a header
    store = str(tmp_path / "store")
    code = main(
        ["data", "add", str(source), "--no-header", "--smiles-column", "1", "--store", store]
    )
    assert code == 0, capsys.readouterr().err
    # Two of them (methanol, iodomethane) are refused as parent_too_small (chemistry policy).
    assert "200 rows -> 198 molecules, 2 rejected" in capsys.readouterr().out


def test_sd_files_predict_and_screen_row_aligned(trained: Trained, tmp_path: Path) -> None:
    block = (
        "{title}\n  test\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\n"
        "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
        "    1.5000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
        "    3.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
        "  1  2  1  0\n  2  3  1  0\nM  END\n"
    )
    records = [block.format(title="ethanol"), "broken\nno end\n", block.format(title="")]
    source = tmp_path / "mols.sdf.gz"
    source.write_bytes(gzip.compress("".join(r + "$$$$\n" for r in records).encode()))
    table = predict_file(trained.model, source, trust_file=True)
    assert table["smiles"].tolist() == ["CCO", "", "CCO"]
    assert [bool(e) for e in table["error"]] == [False, True, False]
    out = tmp_path / "s.csv"
    assert _screen(trained, source, out) == 0
    screened = pd.read_csv(out, keep_default_na=False)
    assert screened["id"].astype(str).tolist() == ["ethanol", "broken", "3"]  # SD titles
    assert screened["error"].tolist() == table["error"].tolist()
