"""The bundled datasets as plain CSV files, for tests that read a file from disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["bundled_csv"]


def bundled_csv(name: str) -> Path:
    """A bundled dataset as the plain CSV it ships as (the same bytes as
    ``../shared/data/NAME.csv``), written once to a temporary folder: the tests need
    nothing but the repository."""
    from qemlflow.data import read_raw

    folder = Path(tempfile.gettempdir()) / f"qemlflow-test-data-{os.getuid()}"
    path = folder / f"{name}.csv"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.{os.getpid()}.partial"
        partial.write_bytes(read_raw(name).data)
        partial.replace(path)
    return path
