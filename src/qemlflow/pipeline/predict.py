"""Score a file of molecules with a saved model, row-aligned with the input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from qemlflow.errors import DataError
from qemlflow.pipeline.predictor import load_model

__all__ = ["SMILES_COLUMN_NAMES", "find_smiles_column", "predict_file"]

SMILES_COLUMN_NAMES = ("smiles", "SMILES", "Smiles", "smi", "canonical_smiles", "mol")


def find_smiles_column(table: pd.DataFrame, requested: str | None, source: str) -> str:
    """Return the SMILES column: the requested one, or a conventionally named one.

    Examples
    --------
    >>> find_smiles_column(pd.DataFrame({"SMILES": ["C"], "y": [1]}), None, "x.csv")
    'SMILES'
    """
    columns = [str(c) for c in table.columns]
    if requested is not None:
        if requested not in columns:
            raise DataError(
                f"column '{requested}' not found in {source} (columns: {', '.join(columns)})",
                "pass the right name with --smiles",
            )
        return requested
    for name in SMILES_COLUMN_NAMES:
        if name in columns:
            return name
    if len(columns) == 1:
        return columns[0]
    raise DataError(
        f"no SMILES column found in {source} (columns: {', '.join(columns)})",
        "name it with --smiles",
    )


def predict_file(
    model: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    *,
    smiles_column: str | None = None,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Score every row of ``input_path``; write the table to ``output`` when given."""
    from qemlflow.data import read_table

    predictor = load_model(model)
    table = read_table(input_path)
    column = find_smiles_column(table, smiles_column, str(input_path))
    result = predictor.predict(table[column].tolist(), n_jobs=n_jobs)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(output, index=False)
    return result
