"""Reading molecules to screen, a fixed-size chunk at a time, whatever the file's size.

Chunk ``i`` is always input rows ``[i * size, (i + 1) * size)``: the same file cut the same
way gives the same chunks, which is what makes a screen resumable and its output
independent of how the chunks are scored.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qemlflow.errors import DataError

__all__ = ["InputChunk", "ScreenInput", "open_input"]

_FORMATS = {
    ".smi": "smi",
    ".smiles": "smi",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_KNOWN = ".smi, .csv, .tsv (each optionally .gz) or .parquet"


@dataclass(frozen=True)
class InputChunk:
    """Consecutive input rows: ``ids`` and ``smiles`` of rows ``start`` to ``start + len``."""

    index: int
    start: int
    ids: list[str]
    smiles: list[str]
    position: int
    """How far into the input (bytes, or rows for Parquet) the chunk's last row lies."""
    rows: int = -1
    """Rows in the chunk (kept when ``ids`` and ``smiles`` are dropped); -1: ``len(smiles)``."""

    def __post_init__(self) -> None:
        if self.rows < 0:
            object.__setattr__(self, "rows", len(self.smiles))


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it (progress on compressed input)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return int(n or 0)

    def close(self) -> None:
        self.raw.close()
        super().close()


@dataclass(frozen=True)
class ScreenInput:
    """A file of molecules to screen: its format and which columns hold SMILES and ids.

    ``total`` and ``unit`` size the progress: bytes of the file (rows are unknown until
    the end) or, for Parquet, rows.
    """

    path: Path
    format: str
    gzipped: bool
    smiles_column: str | None
    id_column: str | None
    total: int
    unit: str

    def chunks(self, size: int) -> Iterator[InputChunk]:
        """Yield the input as chunks of ``size`` rows (the last one may be shorter)."""
        ids: list[str] = []
        smiles: list[str] = []
        index = start = position = 0
        for piece_ids, piece_smiles, position in self._pieces(size):
            ids.extend(piece_ids)
            smiles.extend(piece_smiles)
            while len(smiles) >= size:
                yield InputChunk(index, start, ids[:size], smiles[:size], position)
                ids, smiles = ids[size:], smiles[size:]
                index, start = index + 1, start + size
        if smiles:
            yield InputChunk(index, start, ids, smiles, position)

    def _pieces(self, size: int) -> Iterator[tuple[list[str], list[str], int]]:
        if self.format == "parquet":
            yield from self._parquet_pieces(size)
            return
        with self._open_binary() as (counter, stream):
            if self.format == "smi":
                yield from _smi_pieces(stream, counter, size)
            else:
                yield from self._table_pieces(stream, counter, size)

    def _open_binary(self) -> _Opened:
        return _Opened(self.path, self.gzipped)

    def _table_pieces(
        self, stream: IO[bytes], counter: _CountingReader, size: int
    ) -> Iterator[tuple[list[str], list[str], int]]:
        import pandas as pd

        assert self.smiles_column is not None
        columns = [self.smiles_column] + ([self.id_column] if self.id_column else [])
        reader = pd.read_csv(
            stream,
            sep="\t" if self.format == "tsv" else ",",
            usecols=columns,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            chunksize=size,
            encoding="utf-8",
        )
        row = 0
        with reader:
            for frame in reader:
                smiles = frame[self.smiles_column].tolist()
                if self.id_column:
                    ids = frame[self.id_column].tolist()
                else:
                    ids = [str(i) for i in range(row + 1, row + len(smiles) + 1)]
                row += len(smiles)
                yield ids, smiles, counter.count

    def _parquet_pieces(self, size: int) -> Iterator[tuple[list[str], list[str], int]]:
        import pyarrow.parquet as pq

        assert self.smiles_column is not None
        columns = [self.smiles_column] + ([self.id_column] if self.id_column else [])
        row = 0
        with pq.ParquetFile(self.path) as file:
            for batch in file.iter_batches(batch_size=size, columns=columns):
                smiles = ["" if s is None else str(s) for s in batch.column(0).to_pylist()]
                if self.id_column:
                    ids = ["" if v is None else str(v) for v in batch.column(1).to_pylist()]
                else:
                    ids = [str(i) for i in range(row + 1, row + len(smiles) + 1)]
                row += len(smiles)
                yield ids, smiles, row


class _Opened:
    """``with _Opened(path, gzipped) as (counter, stream)``: a decompressed binary stream
    and the counter of raw bytes read beneath it."""

    def __init__(self, path: Path, gzipped: bool) -> None:
        self.counter = _CountingReader(path.open("rb", buffering=0))
        buffered = io.BufferedReader(self.counter, buffer_size=1 << 20)
        self.stream: IO[bytes] = (
            gzip.GzipFile(fileobj=buffered) if gzipped else buffered  # type: ignore[assignment]
        )

    def __enter__(self) -> tuple[_CountingReader, IO[bytes]]:
        return self.counter, self.stream

    def __exit__(self, *exc: object) -> None:
        self.stream.close()
        self.counter.close()


def _smi_pieces(
    stream: IO[bytes], counter: _CountingReader, size: int
) -> Iterator[tuple[list[str], list[str], int]]:
    """``SMILES [whitespace id]`` per line; a line without an id gets its line number."""
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline=None)
    ids: list[str] = []
    smiles: list[str] = []
    for number, line in enumerate(text, start=1):
        parts = line.split(None, 1)
        smiles.append(parts[0] if parts else "")
        ids.append(parts[1].strip() if len(parts) > 1 else str(number))
        if len(smiles) >= size:
            yield ids, smiles, counter.count
            ids, smiles = [], []
    if smiles:
        yield ids, smiles, counter.count


def _format_of(path: Path) -> tuple[str, bool]:
    name = path.name.lower()
    gzipped = name.endswith(".gz")
    stem = name[:-3] if gzipped else name
    fmt = next((f for ext, f in _FORMATS.items() if stem.endswith(ext)), None)
    if fmt is None or (gzipped and fmt == "parquet"):
        raise DataError(f"cannot screen '{path}': unsupported file type", f"give {_KNOWN}")
    return fmt, gzipped


def open_input(
    path: str | Path, *, smiles_column: str | None = None, id_column: str | None = None
) -> ScreenInput:
    """Check a file of molecules and find its SMILES (and id) columns.

    A table's SMILES column is ``smiles_column``, else found by the rules of
    :func:`qemlflow.data.loading.find_smiles_column` (or the only column there is); ids
    come from ``id_column``, else they are the 1-based row (or line) numbers. A ``.smi``
    line is ``SMILES [whitespace id]``.
    """
    import pandas as pd

    from qemlflow.pipeline.predict import find_smiles_column

    file = Path(path)
    fmt, gzipped = _format_of(file)
    if not file.is_file():
        raise DataError(f"file not found: '{file}'", "check the path")
    size = file.stat().st_size
    if fmt == "smi":
        if smiles_column or id_column:
            raise DataError(
                f"'{file}' is a .smi file: it has no named columns",
                "drop --smiles-column/--id-column (a line is 'SMILES [id]')",
            )
        return ScreenInput(file, fmt, gzipped, None, None, size, "bytes")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(file) as parquet:
            names = list(parquet.schema_arrow.names)
            total, unit = parquet.metadata.num_rows, "rows"
    else:
        with _Opened(file, gzipped) as (_, stream):
            header = pd.read_csv(stream, sep="\t" if fmt == "tsv" else ",", nrows=0, dtype=str)
        names = [str(c) for c in header.columns]
        total, unit = size, "bytes"
    column = find_smiles_column(pd.DataFrame(columns=names), smiles_column, f"'{file}'")
    if id_column is not None and id_column not in names:
        raise DataError(
            f"no column {id_column!r} in '{file}' (columns: {', '.join(names)})",
            "name the id column with --id-column",
        )
    return ScreenInput(file, fmt, gzipped, column, id_column, total, unit)
