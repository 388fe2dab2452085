"""Molecules for the benchmarks: ``../shared/data`` when it is there, the bundled sets if not.

The larger benchmarks scale a library of drug-like SMILES to the size they time. The MUV
SMILES (``../shared/data/muv.csv.gz``, about 93,000, beside the repository) are the
library of record for the figures in docs/benchmarks.md; a clone of the repository alone
has no such folder, and then the SMILES of the seven bundled datasets (about 17,000
distinct) stand in, repeated to the size asked for, with a one-line notice. Throughput
on them is comparable (drug-like molecules of similar size), not identical.
"""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SHARED_DATA", "bundled_frame", "library_smiles", "library_source"]

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MUV = SHARED_DATA / "muv.csv.gz"


def _csv_smiles(text: str) -> list[str]:
    """The ``smiles`` column of a CSV (any case), or every line of a headerless file."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    header = lines[0].lower().split(",") if lines else []
    if "smiles" in header:
        column = header.index("smiles")
        return [line.split(",")[column] for line in lines[1:]]
    return lines


def bundled_frame(name: str) -> pd.DataFrame:
    """A bundled dataset's file as it ships (raw rows, before any standardization)."""
    import pandas as pd

    from qemlflow.data import read_raw

    return pd.read_csv(io.BytesIO(read_raw(name).data))


def bundled_smiles() -> list[str]:
    """The distinct SMILES of every bundled dataset, in a fixed order."""
    from qemlflow.data import list_datasets

    seen: dict[str, None] = {}
    for info in list_datasets():
        for smiles in bundled_frame(info["name"])[info["smiles_column"]].dropna().astype(str):
            seen.setdefault(smiles, None)
    return list(seen)


def library_source(path: Path | None = None) -> str:
    """The name of the file :func:`library_smiles` reads, or ``"bundled"`` when it falls back."""
    source = path if path is not None else MUV
    return source.name if source.is_file() else "bundled"


def library_smiles(n: int | None = None, path: Path | None = None) -> list[str]:
    """SMILES to benchmark on: ``path`` (default: the MUV file) when it exists, else the
    bundled datasets' SMILES; repeated in order to ``n`` molecules when ``n`` is given.

    A ``path`` given explicitly must exist; only the default may fall back.
    """
    source = path if path is not None else MUV
    if source.is_file():
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rt", encoding="utf-8") as handle:
            smiles = _csv_smiles(handle.read())
    elif path is not None:
        raise SystemExit(f"{path}: no such file")
    else:
        smiles = bundled_smiles()
        print(
            f"note: {MUV} not found; using the {len(smiles):,} bundled SMILES instead"
            + (f", repeated to {n:,}" if n is not None and n > len(smiles) else ""),
            file=sys.stderr,
        )
    if n is None:
        return smiles
    return (smiles * (n // len(smiles) + 1))[:n]
