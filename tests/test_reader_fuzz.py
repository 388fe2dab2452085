"""Property tests over the one reader: CSV, TSV, SMI, SD, Parquet, and gzip of the texts.

Generated tables have ragged rows, quotes and delimiters inside fields, unicode, blank
lines and NULs. Whatever comes in, the reader either refuses the whole file with a
one-line DataError or returns exactly one row per input record, in order, with the
rows it could not read marked in place. Runs are derandomized (CI is deterministic) and
bounded (the module takes seconds).
"""

from __future__ import annotations

import csv
import gzip
import io
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qemlflow.data.reader import Molecule, ReadLimits, open_molecules
from qemlflow.errors import DataError

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Field text: SMILES characters, quotes, the format's own delimiter, newlines inside
# (quoted) fields, spaces, non-ASCII letters and NUL. The other formats' delimiters are
# left out so that the sniffed delimiter is the one the file was written with.
_SMILES_CHARS = "CNOScnos1234()[]=#+-@/\\"
_FIELD = {
    ",": st.text(alphabet=_SMILES_CHARS + ' ",\n\r\x00éλ😀', max_size=12),
    "\t": st.text(alphabet=_SMILES_CHARS + ' "\t\n\x00éλ😀', max_size=12),
}
_LIMITS = ReadLimits(max_field_bytes=200)


def _read(
    data: bytes, name: str, limits: ReadLimits = _LIMITS, **options: Any
) -> tuple[list[Molecule] | None, str]:
    """(molecules, '') or (None, the one-line error message)."""
    try:
        source = open_molecules(data, name=name, limits=limits, **options)
        return list(source.molecules()), ""
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message and exc.fix, message
        return None, message


def _written(rows: list[list[str]], delimiter: str) -> list[str]:
    """Each row as csv.writer writes it (one record; maybe several lines). CRLF line ends,
    so that the writer quotes every field holding a CR (a bare CR ends a line)."""
    out = []
    for row in rows:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerow(row)
        out.append(buffer.getvalue())
    return out


@st.composite
def tables(draw: Any) -> tuple[str, list[str], list[list[str]], bool]:
    delimiter = draw(st.sampled_from([",", "\t"]))
    width = draw(st.integers(min_value=2, max_value=4))
    header = ["smiles"] + [f"c{i}" for i in range(1, width)]
    rows = draw(
        st.lists(
            st.lists(_FIELD[delimiter], min_size=0, max_size=width + 2), min_size=1, max_size=25
        )
    )
    return delimiter, header, rows, draw(st.booleans())


@FUZZ
@given(tables())
def test_csv_and_tsv_rows_in_equal_rows_out(
    case: tuple[str, list[str], list[list[str]], bool],
) -> None:
    delimiter, header, rows, gz = case
    records = _written(rows, delimiter)
    text = "".join(_written([header], delimiter) + records)
    data = text.encode("utf-8")
    name = "t.csv" if delimiter == "," else "t.tsv"
    if gz:
        data, name = gzip.compress(data), name + ".gz"
    molecules, error = _read(data, name)
    if molecules is None:
        assert "\x00" in text, error  # NULs read as binary data
        return
    # A record is a row unless it is a blank line; a row of empty fields is a row.
    kept = [(row, rec) for row, rec in zip(rows, records, strict=True) if rec.strip()]
    assert len(molecules) == len(kept)
    width = len(header)
    for (row, _), molecule in zip(kept, molecules, strict=True):
        extra = any(field.strip() for field in row[width:])
        if extra:
            assert molecule.error.startswith("too_many_fields"), (row, molecule)
            assert molecule.smiles == ""
        elif len(delimiter.join(row).encode()) + 2 * len(row) + 2 <= 200:
            assert molecule.error == "", (row, molecule)
            # A CR inside a quoted field ends a line, as in pandas: it reads back as \n.
            want = row[0].replace("\r\n", "\n").replace("\r", "\n") if row else ""
            assert molecule.smiles == want


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.text(alphabet=_SMILES_CHARS + "éλ\x00", max_size=10),
            st.text(alphabet=_SMILES_CHARS + " \téλ", max_size=10),
        ),
        min_size=1,
        max_size=25,
    ),
    st.booleans(),
)
def test_headerless_smi_every_line_is_a_row(lines: list[tuple[str, str]], gz: bool) -> None:
    text = "".join(f"{smiles}\t{name}\n" if name else f"{smiles}\n" for smiles, name in lines)
    data = text.encode("utf-8")
    name = "lib.smi"
    if gz:
        data, name = gzip.compress(data), name + ".gz"
    molecules, error = _read(data, name, header=False)
    if molecules is None:
        assert "\x00" in text or not text.strip(), error
        return
    assert len(molecules) == len(lines)
    for (smiles, rest), molecule in zip(lines, molecules, strict=True):
        if "\x00" in smiles + rest:
            assert molecule.error.startswith("unreadable_row")
            continue
        words = f"{smiles}\t{rest}".split(None, 1)
        assert molecule.smiles == (words[0] if words else "")
        assert molecule.error == ""


_MOLBLOCK = (
    "{title}\n  fuzz\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n"
    "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n"
    "    1.5000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n"
    "  1  2  1  0\nM  END\n"
)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.text(alphabet="abcé λ<>$", max_size=8),
            st.text(alphabet="0123456789.-eé\x00 ", max_size=8),
        ),
        min_size=1,
        max_size=12,
    ),
    st.booleans(),
)
def test_sd_records_in_equal_rows_out(records: list[tuple[bool, str, str]], gz: bool) -> None:
    blocks = []
    for good, title, value in records:
        body = _MOLBLOCK.format(title=title.replace("$", "")) if good else "garbage\nno end\n"
        blocks.append(f"{body}> <value>\n{value}\n\n$$$$\n")
    text = "".join(blocks)
    data = text.encode("utf-8")
    name = "mols.sdf"
    if gz:
        data, name = gzip.compress(data), name + ".gz"
    molecules, error = _read(data, name, ReadLimits())  # an SD record is one row
    if molecules is None:
        assert "\x00" in text, error
        return
    assert len(molecules) == len(records)
    for (good, _, _), molecule in zip(records, molecules, strict=True):
        assert (molecule.error == "") == good, molecule
        assert molecule.smiles == ("CO" if good else "")


@FUZZ
@given(
    st.lists(
        st.one_of(st.none(), st.text(alphabet=_SMILES_CHARS + ',"\n\x00éλ', max_size=12)),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.one_of(st.none(), st.integers(-5, 5)), min_size=40, max_size=40),
)
def test_parquet_rows_in_equal_rows_out(smiles: list[str | None], ids: list[int | None]) -> None:
    frame = pd.DataFrame({"smiles": smiles, "id": ids[: len(smiles)]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    source = open_molecules(buffer.getvalue(), name="x.parquet", limits=_LIMITS)
    molecules = list(source.molecules(id_column="id"))
    assert [m.smiles for m in molecules] == ["" if s is None else s for s in smiles]
    assert all(m.error == "" and m.id for m in molecules)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["x.csv", "x.tsv", "x.smi", "x.sdf", "x.csv.gz"]))
def test_arbitrary_bytes_never_raise_anything_but_a_data_error(data: bytes, name: str) -> None:
    _read(data, name)
    _read(data, name, header=False) if not name.endswith(".sdf") else None


@pytest.mark.parametrize("name", ["x.parquet"])
def test_arbitrary_bytes_as_parquet(name: str) -> None:
    for data in (b"PAR1", b"PAR1\x00\x00\x00\x00PAR1", b"garbage" * 10):
        molecules, error = _read(data, name)
        assert molecules is None and "Parquet" in error


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(lambda b: gzip.compress(b, mtime=0), st.binary(max_size=400)),
        st.builds(
            lambda rows: "".join(_written(rows, ",")).encode(),
            st.lists(st.lists(_FIELD[","], max_size=4), min_size=1, max_size=20),
        ),
    ),
    st.sampled_from(["upload.csv", "x.tsv", "x.smi.gz", "x.sdf", "x.parquet", None]),
)
def test_service_uploads_raise_only_data_errors(data: bytes, filename: str | None) -> None:
    from qemlflow.serve.service import smiles_from_table

    try:
        smiles = smiles_from_table(data, filename, None, max_rows=15, max_bytes=2000)
    except DataError as exc:  # InputTooLargeError included: the service answers 413/422
        assert "\n" not in str(exc) and exc.fix
        return
    assert len(smiles) <= 15 and all(isinstance(s, str) for s in smiles)
