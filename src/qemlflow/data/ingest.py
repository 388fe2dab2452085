"""Read a table of molecules from CSV, TSV, SMILES, SD or Parquet files, with clear errors."""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from pathlib import Path

import pandas as pd

from qemlflow.chem import parse_smiles
from qemlflow.chem.sdf import sdf_to_frame
from qemlflow.errors import DataError

__all__ = ["SUPPORTED_EXTENSIONS", "read_file_bytes", "read_table", "table_from_bytes"]

#: Extensions read_table understands; each text format may also end in ``.gz``.
SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".txt", ".smi", ".sdf", ".parquet")
_TEXT_DELIMITERS = {
    ".csv": (",", ";", "\t", "|"),
    ".tsv": ("\t", ",", ";", "|"),
    ".txt": ("\t", ",", ";", "|", " "),
    ".smi": ("\t", " ", ",", ";", "|"),
}
_SNIFF_LINES = 50
_SUPPORTED_TEXT = ", ".join(
    [*SUPPORTED_EXTENSIONS, *(f"{ext}.gz" for ext in SUPPORTED_EXTENSIONS if ext != ".parquet")]
)


def _format_of(name: str) -> tuple[str, bool]:
    """Return (extension, gzipped) for a file name, or raise for an unsupported one."""
    lower = name.lower()
    gzipped = lower.endswith(".gz")
    stem = lower[:-3] if gzipped else lower
    ext = next((e for e in SUPPORTED_EXTENSIONS if stem.endswith(e)), "")
    if not ext or (gzipped and ext == ".parquet"):
        suffix = "".join(Path(name).suffixes) or "none"
        raise DataError(
            f"cannot read {name!r}: unsupported file type (extension {suffix})",
            f"use one of {_SUPPORTED_TEXT}",
        )
    return ext, gzipped


def _looks_binary(data: bytes) -> bool:
    sample = data[:65536]
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return controls > max(1, len(sample) // 100)


def _decode(data: bytes, label: str) -> str:
    if _looks_binary(data):
        raise DataError(
            f"{label} is not a text table (it contains binary data)",
            "give a CSV, TSV, SMILES, SD or Parquet file",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{label} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "save the file as UTF-8",
        ) from None


def _sniff_delimiter(lines: list[str], candidates: tuple[str, ...]) -> str:
    """Pick the first candidate that splits every sampled line into the same >1 fields."""
    for delimiter in candidates:
        counts = {len(row) for row in csv.reader(lines, delimiter=delimiter)}
        if len(counts) == 1 and counts.pop() > 1:
            return delimiter
    for delimiter in candidates:  # ragged rows: trust the delimiter that splits the header
        if len(next(csv.reader(lines[:1], delimiter=delimiter), [])) > 1:
            return delimiter
    return candidates[0]  # a single column


def _read_text_table(text: str, ext: str, label: str) -> pd.DataFrame:
    lines = [line for line in text.splitlines() if line.strip()][:_SNIFF_LINES]
    if not lines:
        raise DataError(f"{label} is empty", "give a file with a header row and data rows")
    delimiter = _sniff_delimiter(lines, _TEXT_DELIMITERS[ext])
    first = next(csv.reader(lines[:1], delimiter=delimiter))
    # A .smi file often has no header: the first field of the first line is a molecule.
    headerless = ext == ".smi" and bool(first) and parse_smiles(first[0]).ok
    names = None
    if headerless:
        names = ["smiles", *(("name",) if len(first) == 2 else ())]
        names += [f"column_{i}" for i in range(len(names), len(first))]
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None if headerless else "infer",
            names=names,
            skip_blank_lines=True,
            skipinitialspace=delimiter == " ",
        )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{label} is empty", "give a file with a header row and data rows"
        ) from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[0]
        raise DataError(
            f"cannot parse {label}: {detail}",
            "check that every row has the same delimiter and quoting as the header",
        ) from None
    return frame


def _read_parquet(data: bytes, label: str) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(
            f"reading {label} needs pyarrow", "install it with: pip install 'qemlflow[parquet]'"
        ) from None
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{label} is not a readable Parquet file ({detail})",
            "check that the file is Parquet, or give a CSV file",
        ) from None


def table_from_bytes(data: bytes, name: str, label: str | None = None) -> pd.DataFrame:
    """Read a table from raw file bytes; ``name`` (a file name) decides the format.

    This is :func:`read_table` without the file system: the bundled datasets use it.

    Examples
    --------
    >>> table_from_bytes(b"smiles;logS\\nCCO;0.5\\n", "data.csv").columns.tolist()
    ['smiles', 'logS']
    """
    label = label or repr(name)
    ext, gzipped = _format_of(name)
    if not data:
        raise DataError(
            f"{label} is empty (0 bytes)", "give a file with a header row and data rows"
        )
    if gzipped:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            raise DataError(
                f"{label} is not a valid gzip file", "decompress it or gzip it again"
            ) from None
    if ext == ".parquet":
        frame = _read_parquet(data, label)
    elif ext == ".sdf":
        frame = sdf_to_frame(_decode(data, label))
        if frame.empty:
            raise DataError(
                f"{label} has no SD records", "give an SD file with at least one molecule"
            )
    else:
        frame = _read_text_table(_decode(data, label), ext, label)
    if len(frame) == 0:
        columns = ", ".join(map(str, frame.columns))
        raise DataError(
            f"{label} has a header ({columns}) but no data rows", "add at least one row of data"
        )
    return frame


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the bytes of a data file after checking its extension and that it exists.

    Examples
    --------
    >>> read_file_bytes("missing.csv")
    Traceback (most recent call last):
    ...
    qemlflow.errors.DataError: file not found: 'missing.csv'; check the path
    """
    file = Path(path)
    if file.is_dir():
        raise DataError(f"'{file}' is a directory, not a file", "give the path of a data file")
    _format_of(file.name)
    if not file.exists():
        raise DataError(f"file not found: '{file}'", "check the path")
    return file.read_bytes()


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV, TSV, SMILES, SD or Parquet file into a DataFrame.

    The format comes from the extension (``.csv``, ``.tsv``, ``.txt``, ``.smi``, ``.sdf``,
    each optionally ``.gz``, or ``.parquet``); the delimiter of text files is sniffed. An SD
    file gives a ``smiles`` column plus one column per property; a record RDKit cannot
    read keeps its row with an empty ``smiles``. Problems raise a one-line DataError.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "data.tsv"
    ...     _ = path.write_text("smiles\\tlogS\\nCCO\\t0.5\\nc1ccccc1\\t-1.6\\n")
    ...     read_table(path).shape
    (2, 2)
    """
    name = Path(path).name
    return table_from_bytes(read_file_bytes(path), name, f"'{name}'")
