"""Data ingest and loading: real files in tmp_path, every input row accounted for."""

from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.extras import require_extra

from qemlflow.data import (
    BUNDLED,
    DUPLICATE_POLICIES,
    Dataset,
    list_datasets,
    load_dataset,
    read_table,
)
from qemlflow.errors import ConfigError, DataError, QeMLflowError


def accounted(ds: Dataset, n_input: int) -> dict[str, int]:
    """Assert the row invariants and return the status counts."""
    rows = ds.rows
    assert list(rows.columns) == ["row", "input_smiles", "status", "mol_index", "reason", "detail"]
    assert rows["row"].tolist() == list(range(n_input))
    counts = rows["status"].value_counts().to_dict()
    assert sum(counts.values()) == n_input
    assert set(counts) <= {"ok", "merged", "rejected"}
    assert counts.get("ok", 0) == len(ds) == len(ds.smiles) == ds.y.shape[0]
    assert ds.y.shape == (len(ds), ds.n_tasks)
    assert ds.y.dtype == np.float64
    ok = rows[rows["status"] != "rejected"]
    assert sorted(set(ok["mol_index"])) == list(range(len(ds)))
    rejected = rows[rows["status"] == "rejected"]
    assert (rejected["mol_index"] == -1).all()
    assert (rejected["reason"] != "").all()
    summary = ds.summary()
    assert summary["ok"] + summary["merged"] + summary["rejected"] == summary["rows"] == n_input
    assert sum(summary["rejected_by_reason"].values()) == summary["rejected"]
    return {str(k): int(v) for k, v in counts.items()}


def reasons(ds: Dataset) -> dict[str, str]:
    """input_smiles -> reason, for the rejected rows."""
    return dict(zip(ds.rejected["input_smiles"], ds.rejected["reason"], strict=True))


def one_line(err: pytest.ExceptionInfo[QeMLflowError], *parts: str) -> str:
    """Assert the error is one line with a fix, mentioning every part; return it."""
    message = str(err.value)
    assert "\n" not in message
    assert err.value.fix, message
    for part in parts:
        assert part in message, message
    return message


CSV = "smiles,logS\nCCO,-0.2\nc1ccccc1,-1.6\nCC(=O)O,0.5\nCCN,0.1\n"


# ---------------------------------------------------------------- formats


def test_csv_loads(tmp_path: Path) -> None:
    path = tmp_path / "sol.csv"
    path.write_text(CSV)
    ds = load_dataset(path)
    assert accounted(ds, 4) == {"ok": 4}
    assert ds.name == "sol"
    assert ds.smiles == ["CCO", "c1ccccc1", "CC(=O)O", "CCN"]
    assert ds.target_names == ["logS"]
    assert ds.smiles_column == "smiles"
    assert ds.task == "regression"
    assert ds.y[:, 0].tolist() == [-0.2, -1.6, 0.5, 0.1]
    assert ds.source == str(path)
    assert ds.source_digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tsv_and_gzip_and_semicolons(tmp_path: Path) -> None:
    tsv = tmp_path / "sol.tsv"
    tsv.write_text(CSV.replace(",", "\t"))
    gz = tmp_path / "sol.csv.gz"
    gz.write_bytes(gzip.compress(CSV.encode()))
    semi = tmp_path / "sol_eu.csv"
    semi.write_text(CSV.replace(",", ";"))
    txt = tmp_path / "sol.txt"
    txt.write_text(CSV.replace(",", "|"))
    for path in (tsv, gz, semi, txt):
        ds = load_dataset(path)
        assert accounted(ds, 4) == {"ok": 4}, path
        assert ds.target_names == ["logS"]
    assert load_dataset(gz).name == "sol"
    assert read_table(gz).shape == (4, 2)


def test_smi_without_header(tmp_path: Path) -> None:
    path = tmp_path / "screen.smi"
    path.write_text("CCO ethanol\nc1ccccc1 benzene\nC1CC broken\n")
    table = read_table(path)
    assert table.columns.tolist() == ["smiles", "name"]
    assert len(table) == 3
    with pytest.raises(DataError) as err:  # a screening file has no labels
        load_dataset(path)
    one_line(err, "no numeric target column", "screen.smi", "target_columns")


def _molblock(title: str, atoms: list[str], bonds: list[tuple[int, int, int]]) -> str:
    lines = [title, "  qemlflow-test", ""]
    lines.append(f"{len(atoms):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000")
    for atom in atoms:
        lines.append(f"{0:10.4f}{0:10.4f}{0:10.4f} {atom:<3} 0  0  0  0  0  0  0  0  0  0  0  0")
    for a, b, order in bonds:
        lines.append(f"{a:3d}{b:3d}{order:3d}  0")
    lines.append("M  END")
    return "\n".join(lines)


def _record(block: str, props: dict[str, str]) -> str:
    data = "".join(f"> <{k}>\n{v}\n\n" for k, v in props.items())
    return f"{block}\n{data}$$$$\n"


def _sdf_text() -> str:
    ethanol = _molblock("ethanol", ["C", "C", "O"], [(1, 2, 1), (2, 3, 1)])
    # pentavalent carbon: RDKit reads the block but cannot sanitize it
    bad_valence = _molblock("bad", ["C"] * 6, [(1, i, 1) for i in range(2, 7)])
    garbled = "garbled\n  x\n\nthis is not a counts line\nM  END"
    propanol = _molblock("propanol", ["C", "C", "C", "O"], [(1, 2, 1), (2, 3, 1), (3, 4, 1)])
    return "".join(
        [
            _record(ethanol, {"ID": "E1", "logS": "1.1"}),
            _record(bad_valence, {"ID": "B1", "logS": "0.3"}),
            _record(garbled, {"ID": "G1", "logS": "0.4"}),
            _record(propanol, {"ID": "W1", "logS": "2.0", "note": "wet"}),
        ]
    )


def test_sdf_keeps_broken_records_as_rejected_rows(tmp_path: Path) -> None:
    path = tmp_path / "mols.sdf"
    path.write_text(_sdf_text())
    table = read_table(path)
    assert table.columns.tolist() == ["smiles", "ID", "logS", "note"]
    assert table["smiles"].tolist() == ["CCO", "", "", "CCCO"]
    assert table["logS"].tolist() == [1.1, 0.3, 0.4, 2.0]

    ds = load_dataset(path)
    assert ds.target_names == ["logS"]  # ID and note are text, not targets
    assert accounted(ds, 4) == {"ok": 2, "rejected": 2}
    assert ds.smiles == ["CCO", "CCCO"]
    rejected = ds.rejected.set_index("row")
    assert rejected.loc[1, "reason"] == "sanitization_error"
    assert "SD record 2 ('bad')" in str(rejected.loc[1, "detail"])
    assert rejected.loc[2, "reason"] == "unparsable"
    assert "garbled" in str(rejected.loc[2, "detail"])

    gz = tmp_path / "mols.sdf.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert accounted(load_dataset(gz), 4) == {"ok": 2, "rejected": 2}


def test_parquet_loads(tmp_path: Path) -> None:
    require_extra("pyarrow")
    path = tmp_path / "sol.parquet"
    frame = pd.DataFrame(
        {"SMILES": ["CCO", "c1ccccc1", "C1CC"], "y1": [1.0, 0.0, 1.0], "y2": [0, 1, None]}
    )
    frame.to_parquet(path)
    assert read_table(path).shape == (3, 3)
    ds = load_dataset(path)
    assert ds.smiles_column == "SMILES"
    assert ds.target_names == ["y1", "y2"]
    assert ds.task == "classification"
    assert accounted(ds, 3) == {"ok": 2, "rejected": 1}
    assert reasons(ds) == {"C1CC": "unparsable"}


# ---------------------------------------------------------------- unreadable input


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"


@pytest.mark.parametrize(
    ("name", "data", "parts"),
    [
        ("empty.csv", b"", ["empty.csv", "empty (0 bytes)", "header row"]),
        ("blank.csv", b"\n  \n", ["blank.csv", "is empty"]),
        ("head.csv", b"smiles,logS\n", ["head.csv", "header (smiles, logS) but no data rows"]),
        ("random.csv", random.Random(0).randbytes(2048), ["random.csv", "binary data"]),
        ("picture.csv", PNG * 20, ["picture.csv", "binary data"]),
        ("latin.csv", "smiles,név\nCCO,1\n".encode("latin-1"), ["not UTF-8", "UTF-8"]),
        ("broken.csv.gz", b"\x1f\x8bnot really gzip", ["not a valid gzip file"]),
        ("fake.parquet", b"PAR1 but not parquet", ["not a readable Parquet file"]),
        ("book.xlsx", b"PK\x03\x04", ["unsupported file type", ".xlsx", ".csv", ".parquet"]),
        ("nothing.sdf", b"\n\n", ["nothing.sdf", "no SD records"]),
    ],
)
def test_unreadable_files_give_one_line_errors(
    tmp_path: Path, name: str, data: bytes, parts: list[str]
) -> None:
    path = _write(tmp_path, name, data)
    with pytest.raises(DataError) as err:
        read_table(path)
    one_line(err, *parts)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    one_line(err, *parts)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        read_table(tmp_path / "absent.csv")
    one_line(err, "file not found", "absent.csv", "check the path")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "absent.csv")
    one_line(err, "file not found")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    one_line(err, "is a directory")


def test_unknown_bundled_name_lists_bundled() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("esoll")
    one_line(err, "unknown dataset 'esoll'", *BUNDLED)


# ---------------------------------------------------------------- columns


def test_wrong_column_names(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("smiles,logS\nCCO,1.0\n")
    with pytest.raises(DataError) as err:
        load_dataset(path, smiles_column="smile")
    message = one_line(err, "column 'smile' not found in 'data.csv'", "(columns: smiles, logS)")
    assert message.endswith("pass the right name with --smiles-column / smiles_column")
    with pytest.raises(DataError) as err:
        load_dataset(path, target_columns=["logs"])
    one_line(err, "'logs' not found", "did you mean 'logS'?", "--target / target_columns")


def test_column_defaults(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("name,mol,pIC50,active\nA,CCO,5.5,1\nB,CCN,6.1,0\n")
    ds = load_dataset(path)
    assert ds.smiles_column == "mol"
    assert ds.target_names == ["pIC50", "active"]
    assert load_dataset(path, target_columns="active").task == "classification"

    nosmiles = tmp_path / "nosmiles.csv"
    nosmiles.write_text("structure,y\nCCO,1\n")
    with pytest.raises(DataError) as err:
        load_dataset(nosmiles)
    one_line(err, "no SMILES column", "structure, y", "--smiles-column / smiles_column")
    assert load_dataset(nosmiles, smiles_column="structure").smiles == ["CCO"]

    with_id = tmp_path / "with_id.csv"
    with_id.write_text("compound_id,smiles,y\n1,CCO,0.5\n2,CCN,0.7\n")
    with pytest.raises(DataError) as err:
        load_dataset(with_id)
    one_line(err, "cannot tell the target columns", "compound_id", "--target / target_columns")
    assert load_dataset(with_id, target_columns=["y"]).y.ravel().tolist() == [0.5, 0.7]


def test_target_column_without_numbers(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("smiles,logS,name\nCCO,1.0,ethanol\nCCN,2.0,ethylamine\n")
    with pytest.raises(DataError) as err:
        load_dataset(path, target_columns=["name"])
    one_line(err, "target column 'name'", "no numeric values", "'ethanol'", "target_columns")
    empty = tmp_path / "empty_col.csv"
    empty.write_text("smiles,logS,y\nCCO,1.0,\nCCN,2.0,\n")
    with pytest.raises(DataError) as err:
        load_dataset(empty, target_columns=["logS", "y"])
    one_line(err, "target column 'y'", "has no values")


# ---------------------------------------------------------------- rejected rows


def test_bad_rows_are_rejected_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_text(
        "smiles,logS\n"
        "CCO,1.0\n"
        "C1CC,2.0\n"  # unclosed ring
        "c1cccc1,2.0\n"  # cannot be kekulized
        ",3.0\n"  # empty SMILES
        "   ,3.5\n"  # blank SMILES
        "CCN,\n"  # missing label
        "CCC,abc\n"  # non-numeric label
        "CCCl,inf\n"  # not a finite number
        "c1ccccc1,-1.6\n"
    )
    ds = load_dataset(path)
    assert accounted(ds, 9) == {"ok": 2, "rejected": 7}
    assert ds.smiles == ["CCO", "c1ccccc1"]
    by_row = ds.rejected.set_index("row")
    assert by_row["reason"].to_dict() == {
        1: "unparsable",
        2: "sanitization_error",
        3: "empty",
        4: "empty",
        5: "missing_label",
        6: "non_numeric_label",
        7: "non_numeric_label",
    }
    assert "column 'logS'" in str(by_row.loc[6, "detail"])
    assert "'abc'" in str(by_row.loc[6, "detail"])
    assert by_row.loc[3, "input_smiles"] == ""
    assert by_row.loc[4, "input_smiles"] == "   "
    assert ds.summary()["rejected_by_reason"] == {
        "empty": 2,
        "missing_label": 1,
        "non_numeric_label": 2,
        "sanitization_error": 1,
        "unparsable": 1,
    }

    out = ds.write_rejected(tmp_path / "rejected.csv")
    report = pd.read_csv(out, keep_default_na=False)
    assert report.columns.tolist() == [
        "row",
        "input_smiles",
        "reason",
        "detail",
        "smiles",
        "logS",
    ]
    assert report["row"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert report.loc[5, "logS"] == "abc"


def test_missing_labels_multi_task(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text("smiles,a,b\nCCO,1,\nCCN,,0\nCCC,,\nCCCl,0,1\n")
    ds = load_dataset(path)
    assert ds.target_names == ["a", "b"]
    assert ds.task == "classification"
    assert accounted(ds, 4) == {"ok": 3, "rejected": 1}
    assert reasons(ds) == {"CCC": "missing_label"}
    assert "any of the 2 target columns" in ds.rejected["detail"].iloc[0]
    np.testing.assert_array_equal(ds.y, [[1, np.nan], [np.nan, 0], [0, 1]])


def test_non_numeric_label_in_one_of_several_tasks(tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text("smiles,a,b\nCCO,1.5,2.5\nCCN,2.5,oops\nCCC,3.5,4.5\n")
    ds = load_dataset(path, target_columns=["a", "b"])
    assert accounted(ds, 3) == {"ok": 2, "rejected": 1}
    assert reasons(ds) == {"CCN": "non_numeric_label"}
    assert "column 'b' has non-numeric value 'oops'" in ds.rejected["detail"].iloc[0]


def test_all_rows_rejected_still_accounted(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("smiles,y\nC1CC,1.0\nnot_a_smiles,2.0\n")
    ds = load_dataset(path)
    assert accounted(ds, 2) == {"rejected": 2}
    assert len(ds) == 0
    assert ds.y.shape == (0, 1)


# ---------------------------------------------------------------- task


def test_task_inference_and_validation(tmp_path: Path) -> None:
    binary = tmp_path / "binary.csv"
    binary.write_text("smiles,active\nCCO,1\nCCN,0\nCCC,\n")
    assert load_dataset(binary).task == "classification"
    assert load_dataset(binary, task="regression").task == "regression"
    boolean = tmp_path / "bool.csv"
    boolean.write_text("smiles,active\nCCO,True\nCCN,False\n")
    ds = load_dataset(boolean)
    assert ds.task == "classification"
    assert ds.y.ravel().tolist() == [1.0, 0.0]
    real = tmp_path / "real.csv"
    real.write_text("smiles,logS\nCCO,1\nCCN,0.5\n")
    assert load_dataset(real).task == "regression"
    with pytest.raises(DataError) as err:
        load_dataset(real, task="classification")
    one_line(err, "needs 0/1 labels", "'logS'", "0.5", "regression")
    with pytest.raises(ConfigError) as cerr:
        load_dataset(real, task="ranking")  # type: ignore[arg-type]
    one_line(cerr, "unknown task 'ranking'", "regression, classification")


# ---------------------------------------------------------------- duplicates


def _dupes(tmp_path: Path) -> Path:
    # ethanol three times (one as a salt-free alias), acetic acid twice (free acid + sodium
    # salt, which standardize to the same parent), benzene once
    path = tmp_path / "dupes.csv"
    path.write_text(
        "smiles,y\n"
        "CCO,1.0\n"
        "CC(=O)O,2.0\n"
        "OCC,3.0\n"
        "c1ccccc1,5.0\n"
        "CC(=O)[O-].[Na+],2.0000000001\n"
        "C(C)O,5.0\n"
    )
    return path


def test_duplicates_mean(tmp_path: Path) -> None:
    ds = load_dataset(_dupes(tmp_path), duplicates="mean")
    assert accounted(ds, 6) == {"ok": 3, "merged": 3}
    assert ds.smiles == ["CCO", "CC(=O)O", "c1ccccc1"]
    np.testing.assert_allclose(ds.y.ravel(), [3.0, 2.0, 5.0])
    merged = ds.rows[ds.rows["status"] == "merged"]
    assert merged["row"].tolist() == [2, 4, 5]
    assert merged["mol_index"].tolist() == [0, 1, 0]
    assert "merged into row 0" in merged["detail"].iloc[0]


def test_duplicates_first(tmp_path: Path) -> None:
    ds = load_dataset(_dupes(tmp_path), duplicates="first")
    assert accounted(ds, 6) == {"ok": 3, "merged": 3}
    assert ds.y.ravel().tolist() == [1.0, 2.0, 5.0]


def test_duplicates_drop_conflicting(tmp_path: Path) -> None:
    ds = load_dataset(_dupes(tmp_path), duplicates="drop_conflicting")
    assert accounted(ds, 6) == {"ok": 2, "merged": 1, "rejected": 3}
    assert ds.smiles == ["CC(=O)O", "c1ccccc1"]  # acetic acid copies agree within 1e-6
    assert reasons(ds) == {
        "CCO": "conflicting_duplicate",
        "OCC": "conflicting_duplicate",
        "C(C)O": "conflicting_duplicate",
    }
    assert "3 copies disagree on 'y' (1, 3, 5: rejected)" in ds.rejected["detail"].iloc[0]


def test_duplicates_classification_majority_and_ties(tmp_path: Path) -> None:
    path = tmp_path / "cls.csv"
    path.write_text(
        "smiles,a,b\n"
        "CCO,1,0\n"
        "OCC,1,1\n"
        "C(C)O,0,\n"  # ethanol: a = 1,1,0 -> 1; b = 0,1 -> tie -> missing
        "CCN,1,1\n"
        "NCC,0,0\n"  # ethylamine: both tasks tie -> conflicting
        "CCC,0,1\n"
    )
    ds = load_dataset(path)
    assert ds.task == "classification"
    assert accounted(ds, 6) == {"ok": 2, "merged": 2, "rejected": 2}
    assert ds.smiles == ["CCO", "CCC"]
    np.testing.assert_array_equal(ds.y, [[1, np.nan], [0, 1]])
    assert reasons(ds) == {"CCN": "conflicting_duplicate", "NCC": "conflicting_duplicate"}
    assert load_dataset(path, duplicates="drop_conflicting").smiles == ["CCC"]


def test_bad_duplicate_policy(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(CSV)
    with pytest.raises(ConfigError) as err:
        load_dataset(path, duplicates="median")  # type: ignore[arg-type]
    one_line(err, "unknown duplicate policy 'median'", *DUPLICATE_POLICIES)


def test_standardize_off_keeps_salts_apart(tmp_path: Path) -> None:
    ds = load_dataset(_dupes(tmp_path), standardize=False)
    assert accounted(ds, 6) == {"ok": 4, "merged": 2}
    assert "CC(=O)[O-].[Na+]" in ds.smiles


# ---------------------------------------------------------------- Dataset


def test_subset(tmp_path: Path) -> None:
    ds = load_dataset(_dupes(tmp_path))
    sub = ds.subset([2, 0])
    assert sub.smiles == ["c1ccccc1", "CCO"]
    np.testing.assert_allclose(sub.y.ravel(), [5.0, 3.0])
    assert sub.rows["row"].tolist() == [0, 2, 3, 5]
    assert sub.rows["mol_index"].tolist() == [1, 1, 0, 1]
    with pytest.raises(DataError):
        ds.subset([0, 0])
    with pytest.raises(DataError):
        ds.subset([7])


# ---------------------------------------------------------------- bundled


def test_list_datasets() -> None:
    info = list_datasets()
    assert [d["name"] for d in info] == list(BUNDLED)
    assert len(info) == 7
    for d in info:
        assert d["task"] in {"regression", "classification"}
        assert d["split"] in {"random", "scaffold"}
        assert d["metric"] in {"rmse", "roc_auc"}
        assert d["target_columns"]
        assert "MoleculeNet" in d["citation"]


EXPECTED = {  # name: (rows, molecules, rejected)
    "esol": (1128, 1110, 7),
    "freesolv": (642, 628, 14),
    "lipophilicity": (4200, 4200, 0),
    "bbbp": (2039, 1951, 27),
    "bace": (1513, 1512, 0),
    "clintox": (1478, 1353, 109),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bundled_datasets_load(name: str) -> None:
    rows, molecules, _ = EXPECTED[name]
    entry = BUNDLED[name]
    ds = load_dataset(name.upper() if name == "esol" else name)
    assert ds.name == name
    assert ds.source == f"bundled:{name}"
    assert ds.source_digest == entry.sha256
    assert (entry.n_rows, entry.n_molecules) == (rows, molecules)
    summary = ds.summary()
    assert (summary["rows"], summary["molecules"], summary["rejected"]) == EXPECTED[name]
    accounted(ds, rows)
    assert ds.task == entry.task
    assert ds.target_names == list(entry.target_columns)
    # Metal-containing, inorganic and mixture rows, and parents under 3 heavy atoms, are
    # refused by the chemistry policy (docs/design.md); nothing else is rejected.
    allowed = {"conflicting_duplicate", "unsupported_chemistry", "parent_too_small"}
    assert set(summary["rejected_by_reason"]) <= allowed


@pytest.mark.slow  # standardizes ~7800 molecules: several seconds
def test_tox21_unparsable_rows_are_rejected_not_dropped() -> None:
    ds = load_dataset("tox21")
    accounted(ds, 7831)
    assert len(ds) == BUNDLED["tox21"].n_molecules == 7484
    assert ds.n_tasks == 12
    assert ds.task == "classification"
    assert ds.summary()["rejected_by_reason"] == {
        "parent_too_small": 2,
        "sanitization_error": 8,
        "unsupported_chemistry": 160,
    }
    assert np.isnan(ds.y).any()  # missing labels are kept as NaN
    assert set(np.unique(ds.y[~np.isnan(ds.y)])) == {0.0, 1.0}
