"""Read SD files into a table: one row per record, broken records included."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rdkit import Chem

from qemlflow.chem.molecule import Reason

__all__ = ["RECORD_ERRORS_ATTR", "SdfRecord", "parse_sdf_records", "read_sdf", "sdf_to_frame"]

#: Key in ``DataFrame.attrs`` that maps a row index to ``(reason, detail)`` for the
#: records RDKit could not read; their ``smiles`` cell is empty.
RECORD_ERRORS_ATTR = "sdf_record_errors"


@dataclass(frozen=True, slots=True)
class SdfRecord:
    """One SD record: its SMILES ('' when unreadable), title, properties and error."""

    smiles: str
    title: str
    properties: dict[str, str]
    reason: str = ""
    detail: str = ""


def _split_records(text: str) -> list[list[str]]:
    records: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == "$$$$":
            records.append(current)
            current = []
        else:
            current.append(line)
    if any(line.strip() for line in current):  # last record without a closing $$$$
        records.append(current)
    return records


def _properties(lines: list[str]) -> dict[str, str]:
    props: dict[str, str] = {}
    name: str | None = None
    values: list[str] = []
    for line in lines:
        if line.startswith(">") and "<" in line and ">" in line[1:]:
            if name is not None:
                props[name] = "\n".join(values)
            start = line.index("<") + 1
            name = line[start : line.index(">", start)]
            values = []
        elif name is not None:
            if line.strip():
                values.append(line.rstrip())
            else:
                props[name] = "\n".join(values)
                name = None
    if name is not None:
        props[name] = "\n".join(values)
    return props


def _record(lines: list[str], number: int) -> SdfRecord:
    end = next((i for i, line in enumerate(lines) if line.startswith("M  END")), None)
    block_lines = lines if end is None else lines[: end + 1]
    props = _properties([] if end is None else lines[end + 1 :])
    title = lines[0].strip() if lines else ""
    where = f"SD record {number}" + (f" ({title!r})" if title else "")
    if end is None:
        return SdfRecord("", title, props, Reason.UNPARSABLE.value, f"{where} has no 'M  END'")
    mol = Chem.MolFromMolBlock("\n".join(block_lines), sanitize=False, removeHs=False)
    if mol is None:
        detail = f"{where}: RDKit cannot read the molecule block"
        return SdfRecord("", title, props, Reason.UNPARSABLE.value, detail)
    try:
        Chem.SanitizeMol(mol)
        mol = Chem.RemoveHs(mol)
    except Exception as exc:  # RDKit raises several unrelated exception types here
        message = str(exc).strip().splitlines()
        detail = f"{where}: {message[0] if message else type(exc).__name__}"
        return SdfRecord("", title, props, Reason.SANITIZATION.value, detail)
    if mol.GetNumAtoms() == 0:
        return SdfRecord("", title, props, Reason.NO_ATOMS.value, f"{where} has no atoms")
    return SdfRecord(str(Chem.MolToSmiles(mol)), title, props)


def parse_sdf_records(text: str) -> list[SdfRecord]:
    """Parse the text of an SD file into records; unreadable molecules keep their place.

    Examples
    --------
    >>> block = "water\\n\\n\\n  1  0  0  0  0  0  0  0  0  0999 V2000\\n"
    >>> atom = "    0.0000    0.0000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\\n"
    >>> text = block + atom + "M  END\\n> <logS>\\n1.5\\n\\n$$$$\\n"
    >>> rec = parse_sdf_records(text)[0]
    >>> rec.smiles, rec.title, rec.properties
    ('O', 'water', {'logS': '1.5'})
    """
    return [_record(lines, i + 1) for i, lines in enumerate(_split_records(text))]


def sdf_to_frame(text: str) -> pd.DataFrame:
    """Turn SD file text into a table: a ``smiles`` column, then every property.

    Numeric-looking property columns become numbers. Records RDKit cannot read have an
    empty ``smiles``; their reason code and detail are in
    ``frame.attrs[RECORD_ERRORS_ATTR]`` keyed by row position.
    A property that is itself called ``smiles`` is renamed ``smiles_property``.

    Examples
    --------
    >>> sdf_to_frame("").shape
    (0, 1)
    """
    records = parse_sdf_records(text)
    columns: dict[str, None] = {}
    for rec in records:
        columns.update(dict.fromkeys(rec.properties))
    rename = {name: ("smiles_property" if name == "smiles" else name) for name in columns}
    data: dict[str, list[object]] = {"smiles": [rec.smiles for rec in records]}
    for name in columns:
        data[rename[name]] = [rec.properties.get(name) for rec in records]
    frame = pd.DataFrame(data)
    for name in frame.columns[1:]:
        values = frame[name]
        numeric = pd.to_numeric(values, errors="coerce")
        given = values.notna() & (values.astype(str).str.strip() != "")
        if given.any() and bool(numeric[given].notna().all()):
            frame[name] = numeric.where(given)
    frame.attrs[RECORD_ERRORS_ATTR] = {
        i: (rec.reason, rec.detail) for i, rec in enumerate(records) if rec.reason
    }
    return frame


def read_sdf(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an SD file (``.sdf`` or gzipped) into a table; see :func:`sdf_to_frame`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> block = "x\\n\\n\\n  1  0  0  0  0  0  0  0  0  0999 V2000\\n"
    >>> atom = "    0.0000    0.0000    0.0000 N   0  0  0  0  0  0  0  0  0  0  0  0\\n"
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "one.sdf"
    ...     _ = path.write_text(block + atom + "M  END\\n$$$$\\n")
    ...     read_sdf(path)["smiles"].tolist()
    ['N']
    """
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return sdf_to_frame(raw.decode("utf-8-sig"))
