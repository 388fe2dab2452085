"""Reading molecules to screen, a fixed-size chunk at a time, whatever the file's size.

Chunk ``i`` is always input rows ``[i * size, (i + 1) * size)``: the same file cut the same
way gives the same chunks, which is what makes a screen resumable and its output
independent of how the chunks are scored. The rows come from the one reader of
:mod:`qemlflow.data.reader`, so a file screens exactly as ``predict`` reads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qemlflow.data.reader import MoleculeFile, open_molecules

__all__ = ["InputChunk", "ScreenInput", "open_input"]


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
    errors: list[str] = field(default_factory=list)
    """Per row, why it could not be read ('' when it could); empty when every row could."""

    def __post_init__(self) -> None:
        if self.rows < 0:
            object.__setattr__(self, "rows", len(self.smiles))


@dataclass(frozen=True)
class ScreenInput:
    """A file of molecules to screen: its format and which columns hold SMILES and ids.

    ``total`` and ``unit`` size the progress: bytes of the file (rows are unknown until
    the end) or, for Parquet, rows. ``smiles_column`` is None for a headerless ``.smi``.
    """

    path: Path
    format: str
    gzipped: bool
    smiles_column: str | None
    id_column: str | None
    total: int
    unit: str
    header: bool | None = None
    file: MoleculeFile | None = field(default=None, repr=False, compare=False)

    def chunks(self, size: int) -> Iterator[InputChunk]:
        """Yield the input as chunks of ``size`` rows (the last one may be shorter)."""
        source = self.file or open_molecules(self.path, header=self.header)
        ids: list[str] = []
        smiles: list[str] = []
        errors: list[str] = []
        failed = False
        index = start = 0
        for molecule in source.molecules(self.smiles_column, self.id_column):
            ids.append(molecule.id)
            smiles.append(molecule.smiles)
            errors.append(molecule.error)
            failed = failed or bool(molecule.error)
            if len(smiles) == size:
                yield InputChunk(
                    index, start, ids, smiles, source.position, errors=errors if failed else []
                )
                ids, smiles, errors, failed = [], [], [], False
                index, start = index + 1, start + size
        if smiles:
            yield InputChunk(
                index, start, ids, smiles, source.position, errors=errors if failed else []
            )


def open_input(
    path: str | Path,
    *,
    smiles_column: str | None = None,
    id_column: str | None = None,
    header: bool | None = None,
) -> ScreenInput:
    """Check a file of molecules and find its SMILES (and id) columns.

    The rules are those of :mod:`qemlflow.data.reader`: a table's SMILES column is
    ``smiles_column``, else found by name, else the only column; ids come from
    ``id_column``, else they are the 1-based row numbers. A headerless ``.smi`` line is
    ``SMILES [whitespace name]``; ``header=False`` reads a table without a header row.
    """
    file = open_molecules(path, header=header)
    column = file.smiles_column(smiles_column)
    ident = file.id_column(id_column)
    headerless_smi = file.format == "smi" and not file.header
    return ScreenInput(
        path=Path(path),
        format=file.format,
        gzipped=file.gzipped,
        smiles_column=None if headerless_smi else column,
        id_column=None if headerless_smi and id_column is None else ident,
        total=file.total,
        unit=file.unit,
        header=header,
        file=file,
    )
