"""Score a file of molecules with a saved model, row-aligned with the input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from qemlflow.pipeline.predictor import load_model

__all__ = ["find_smiles_column", "predict_file"]


def find_smiles_column(table: pd.DataFrame, requested: str | None, source: str) -> str:
    """Return the SMILES column of a table to score: the requested one, a conventionally
    named one (the rules of :func:`qemlflow.data.loading.find_smiles_column`), or the only
    column there is.

    Examples
    --------
    >>> find_smiles_column(pd.DataFrame({"SMILES": ["C"], "y": [1]}), None, "x.csv")
    'SMILES'
    """
    from qemlflow.data.loading import find_smiles_column as detect

    if requested is None and len(table.columns) == 1:
        return str(table.columns[0])
    return detect(table, source, requested)


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
