"""Errors that list a file's columns stay one readable line, however wide the header."""

from __future__ import annotations

from pathlib import Path

import pytest

import qemlflow as qm
from qemlflow.errors import DataError


def test_a_wide_header_is_shown_bounded_in_the_missing_column_error(tmp_path: Path) -> None:
    header = ",".join(f"measured_property_{i:03d}" for i in range(300))
    path = tmp_path / "wide.csv"
    path.write_text(header + "\n" + ",".join("1" for _ in range(300)) + "\n")
    with pytest.raises(DataError) as caught:
        qm.load_dataset(path, smiles_column="smiles")
    message = str(caught.value)
    assert "\n" not in message
    assert "measured_property_000" in message  # the first names, named
    assert "... and 292 more" in message  # the rest counted, not printed
    assert len(message) < 800, len(message)  # the whole header is ~6,600 characters


def test_no_numeric_target_lists_columns_bounded(tmp_path: Path) -> None:
    names = [f"label_{i}" for i in range(40)]
    path = tmp_path / "text.csv"
    path.write_text("smiles," + ",".join(names) + "\nCCO," + ",".join("x" for _ in names) + "\n")
    with pytest.raises(DataError, match=r"no numeric target column .*\.\.\. and 33 more"):
        qm.load_dataset(path)
