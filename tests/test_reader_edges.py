"""The molecule reader on the files users actually bring: aliases, byte-order marks,
repeated headers, headerless SMILES files, SD and Parquet quirks, and the limits the
service sets. Real files and bytes, no model: each check takes milliseconds."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qemlflow.data.reader import ReadLimits, open_molecules
from qemlflow.errors import DataError, InputTooLargeError


def _rows(source: bytes, name: str, **options: object) -> list[tuple[str, str, str]]:
    file = open_molecules(source, name=name, **options)  # type: ignore[arg-type]
    return [(m.smiles, m.id, m.error) for m in file.molecules()]


def test_a_folder_or_an_unknown_extension_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory, not a file"):
        open_molecules(tmp_path)
    with pytest.raises(DataError, match=r"unsupported file type \(extension .parquet.gz\)"):
        open_molecules(b"x", name="mols.parquet.gz")


def test_smiles_and_pq_aliases_name_their_formats(tmp_path: Path) -> None:
    smiles = open_molecules(b"CCO ethanol\nc1ccccc1 benzene\n", name="set.SMILES")
    assert smiles.format == "smi"
    assert [(m.smiles, m.id) for m in smiles.molecules()] == [
        ("CCO", "ethanol"),
        ("c1ccccc1", "benzene"),
    ]
    path = tmp_path / "set.pq"
    pq.write_table(pa.table({"smiles": ["CCO"]}), path)
    assert open_molecules(path).format == "parquet"


def test_a_byte_order_mark_and_repeated_names_as_pandas_reads_them() -> None:
    file = open_molecules("\ufeffsmiles,y,y,,y.1\nCCO,1,2,3,4\n".encode(), name="x.csv")
    assert file.columns == ["smiles", "y", "y.1", "Unnamed: 3", "y.1.1"]
    assert file.smiles_column() == "smiles"


def test_headerless_smi_columns_by_name_or_number() -> None:
    file = open_molecules(b"CCO first\nCCN second\n", name="x.smi")
    assert (file.header, file.columns) == (False, ["smiles", "name"])
    assert file.id_column(None) == "name"
    assert file.id_column("2") == "name"  # headerless: columns also go by number
    with pytest.raises(DataError, match=r"no column 'id' in 'x.smi' \(columns: smiles, name\)"):
        file.id_column("id")


def test_a_smi_header_is_taken_when_the_requested_column_is_on_it() -> None:
    # "structure" names no SMILES column, so the first line is not taken for a header...
    file = open_molecules(b"structure label\nCCO a\n", name="x.smi")
    assert file.header is False
    # ...until the user asks for the column by that name.
    assert file.smiles_column("structure") == "structure"
    assert file.header is True and file.columns == ["structure", "label"]


def test_a_header_that_is_a_molecule_asks_for_header_false() -> None:
    file = open_molecules(b"CCO,1\nCCN,2\n", name="x.csv")
    with pytest.raises(DataError, match="seems to have no header row"):
        file.smiles_column("CCO")
    with pytest.raises(DataError, match=r"did you mean 'Smiles'\?"):
        open_molecules(b"Smiles,y\nCCO,1\n", name="x.csv").smiles_column("smiles")


def test_sd_files_have_no_header_and_ids_are_properties() -> None:
    record = b"\n  RDKit          2D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
    record += b"    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
    record += b"M  END\n> <ID>\nmethane\n\n$$$$\n"
    with pytest.raises(DataError, match="is an SD file: it has no header row"):
        open_molecules(record, name="x.sdf", header=False)
    file = open_molecules(record, name="x.sdf")
    assert file.id_column("ID") == "ID"
    assert [(m.smiles, m.id) for m in file.molecules(id_column="ID")] == [("C", "methane")]


def test_an_sd_record_over_the_row_limit_is_one_error_row() -> None:
    big = b"\n  big\n\n" + b"x" * 400 + b"\nM  END\n$$$$\n"
    small = b"\n  RDKit\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
    small += (
        b"    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n$$$$\n"
    )
    rows = _rows(big + small, "x.sdf", limits=ReadLimits(max_field_bytes=200))
    assert rows[0][2] == "row_too_large: SD record 1 is over 200 bytes"
    assert rows[1][0] == "O"


def test_a_first_line_over_the_limit_is_no_header() -> None:
    with pytest.raises(DataError, match=r"the first line of 'x\.csv' is over 100 bytes"):
        open_molecules(
            b"s" * 300 + b"\nCCO\n", name="x.csv", limits=ReadLimits(max_field_bytes=100)
        )


def test_a_long_row_in_a_text_file_is_one_error_row() -> None:
    data = b"smiles,y\nCCO,1\n" + b"C" * 300 + b",2\nCCN,3\n"
    rows = _rows(data, "x.csv", limits=ReadLimits(max_field_bytes=100))
    assert rows[0] == ("CCO", "1", "")
    assert rows[1][2].startswith("row_too_large")
    assert rows[2] == ("CCN", "3", "")


def test_a_quoted_field_that_never_closes_is_refused() -> None:
    data = b'smiles,y\n"CCO' + b"\nC" * 100 + b"\n"
    with pytest.raises(DataError):
        _rows(data, "x.csv", limits=ReadLimits(max_field_bytes=50))


def test_headerless_rows_count_fields_against_the_first_line() -> None:
    rows = _rows(b"CCO,1\nCCN,2,3\n", "x.csv", header=False)
    assert rows[0] == ("CCO", "1", "")
    assert rows[1][2].startswith(
        "too_many_fields: line 2 has 3 fields but the first line has 2 (quote a value"
    )
    assert rows[1][2].endswith("fields as read: ['CCN', '2', '3']")


def test_parquet_dictionary_columns_nulls_and_long_values(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    smiles = pa.array(["CCO", "CCN", "C" * 50]).dictionary_encode()
    pq.write_table(pa.table({"smiles": smiles, "id": ["a", None, "c"]}), path)
    file = open_molecules(
        path.read_bytes(), name="x.parquet", limits=ReadLimits(max_field_bytes=20)
    )
    rows = [(m.smiles, m.id, m.error) for m in file.molecules(id_column="id")]
    assert rows[0] == ("CCO", "a", "")
    assert rows[1] == ("CCN", "2", "")  # no id: the row number
    assert rows[2] == ("", "c", "row_too_large: row 3 has a value over 20 bytes")
    with pytest.raises(DataError, match="Parquet file: its columns always have names"):
        open_molecules(path, header=False)


def test_parquet_over_the_byte_limit_is_refused_before_and_while_decoding(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"smiles": ["C" * 40] * 50}), path)
    with pytest.raises(InputTooLargeError, match="over 100 bytes decompressed"):
        list(open_molecules(path, limits=ReadLimits(max_bytes=100)).molecules())
    # Dictionary encoding makes the chunks small, the decoded values are not.
    repeated = tmp_path / "repeated.parquet"
    pq.write_table(pa.table({"smiles": ["C" * 200] * 400}), repeated, use_dictionary=True)
    with pytest.raises(InputTooLargeError, match="decompressed"):
        list(open_molecules(repeated, limits=ReadLimits(max_bytes=20_000)).molecules())


def test_a_corrupt_parquet_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    with pytest.raises(DataError, match="is not a readable Parquet file"):
        open_molecules(path)
