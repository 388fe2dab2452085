"""Score a file of molecules with a saved model, row-aligned with the input."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from qemlflow.pipeline.model_source import OpenedModel, open_model

if TYPE_CHECKING:
    from qemlflow.store import Store

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
    model: str | Path | OpenedModel,
    input_path: str | Path,
    output: str | Path | None = None,
    *,
    smiles_column: str | None = None,
    n_jobs: int = 1,
    store: Store | None = None,
    trust_file: bool = False,
) -> pd.DataFrame:
    """Score every row of ``input_path``; write the table to ``output`` when given.

    ``model`` is opened by :func:`~qemlflow.pipeline.model_source.open_model` with
    ``store`` and ``trust_file``: a file is loaded only when ``store`` made it, or with
    ``trust_file``.
    """
    from qemlflow.data import read_table

    opened = (
        model if isinstance(model, OpenedModel) else open_model(model, store, trust_file=trust_file)
    )
    predictor = opened.predictor
    table = read_table(input_path)
    column = find_smiles_column(table, smiles_column, str(input_path))
    result = predictor.predict(table[column].tolist(), n_jobs=n_jobs)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(output, index=False)
    return result
