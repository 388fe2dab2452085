"""Read a table of molecules from CSV, TSV, SMILES, SD or Parquet files, with clear errors.

The reading itself (formats, delimiters, header, per-row errors, limits) is
:mod:`qemlflow.data.reader`, shared with ``predict``, ``screen`` and the service.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from qemlflow.data.reader import SUPPORTED_EXTENSIONS, _format_of, open_molecules
from qemlflow.errors import DataError

__all__ = ["SUPPORTED_EXTENSIONS", "read_file_bytes", "read_table", "table_from_bytes"]


def table_from_bytes(
    data: bytes, name: str, label: str | None = None, *, header: bool | None = None
) -> pd.DataFrame:
    """Read a table from raw file bytes; ``name`` (a file name) decides the format.

    This is :func:`read_table` without the file system: the bundled datasets use it.

    Examples
    --------
    >>> table_from_bytes(b"smiles;logS\\nCCO;0.5\\n", "data.csv").columns.tolist()
    ['smiles', 'logS']
    """
    return open_molecules(data, name=name, label=label or repr(name), header=header).table()


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


def read_table(path: str | os.PathLike[str], *, header: bool | None = None) -> pd.DataFrame:
    """Read a CSV, TSV, SMILES, SD or Parquet file into a DataFrame.

    The format comes from the extension (``.csv``, ``.tsv``, ``.txt``, ``.smi``, ``.sdf``,
    each optionally ``.gz``, or ``.parquet``); the delimiter of text files is sniffed. An SD
    file gives a ``smiles`` column plus one column per property; a record RDKit cannot
    read keeps its row with an empty ``smiles``. A row with more fields than the header
    keeps its place with empty values (its reason is in ``frame.attrs``). ``header=False``
    reads a file without a header row (columns ``1``, ``2``, ...). Problems with the file
    itself raise a one-line DataError. The rules are those of
    :mod:`qemlflow.data.reader`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "data.tsv"
    ...     _ = path.write_text("smiles\\tlogS\\nCCO\\t0.5\\nc1ccccc1\\t-1.6\\n")
    ...     read_table(path).shape
    (2, 2)
    """
    return open_molecules(path, header=header).table()
