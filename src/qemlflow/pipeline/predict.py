"""Score a file of molecules with a saved model, row-aligned with the input."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from qemlflow.pipeline.model_source import OpenedModel, open_model

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["find_smiles_column", "predict_file"]


def find_smiles_column(table: pd.DataFrame, requested: str | None, source: str) -> str:
    """Return the SMILES column of a table to score: the requested one, a conventionally
    named one, or the only column there is (the rules of :mod:`qemlflow.data.reader`).

    Examples
    --------
    >>> find_smiles_column(pd.DataFrame({"SMILES": ["C"], "y": [1]}), None, "x.csv")
    'SMILES'
    """
    from qemlflow.data.reader import find_smiles_column as find

    return find([str(c) for c in table.columns], source, requested)


def predict_file(
    model: str | Path | OpenedModel,
    input_path: str | Path,
    output: str | Path | None = None,
    *,
    smiles_column: str | None = None,
    id_column: str | None = None,
    header: bool | None = None,
    n_jobs: int = 1,
    store: Store | None = None,
    trust_file: bool = False,
) -> pd.DataFrame:
    """Score every row of ``input_path``; write the table to ``output`` when given.

    ``model`` is opened by :func:`~qemlflow.pipeline.model_source.open_model` with
    ``store`` and ``trust_file``: a file is loaded only when ``store`` made it, or with
    ``trust_file``. The input is read by the rules of :mod:`qemlflow.data.reader`
    (``header=False``: no header row). One output row per input row, in order; a row
    that could not be read (e.g. more fields than the header) keeps its place with its
    reason in ``error``. With ``id_column``, an ``id`` column comes first.
    """
    from qemlflow.data.reader import open_molecules
    from qemlflow.errors import DataError

    source = open_molecules(input_path, header=header)
    source.smiles_column(smiles_column)  # column errors before the model is loaded
    source.id_column(id_column)
    opened = (
        model if isinstance(model, OpenedModel) else open_model(model, store, trust_file=trust_file)
    )
    predictor = opened.predictor
    rows = list(source.molecules(smiles_column, id_column))
    if not rows:
        raise DataError(
            f"{source.label} has a header ({', '.join(source.columns)}) but no data rows",
            "add at least one row of data",
        )
    result = predictor.predict([m.smiles for m in rows], n_jobs=n_jobs)
    unread = np.array([bool(m.error) for m in rows], dtype=bool)
    if unread.any():
        numeric = [c for c in result.columns if c not in ("smiles", "standardized_smiles", "error")]
        result.loc[unread, numeric] = np.nan
        result.loc[unread, "standardized_smiles"] = ""
        result.loc[unread, "error"] = [m.error for m in rows if m.error]
    if id_column is not None:
        result.insert(0, "id", [m.id for m in rows])
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(output, index=False)
    return result
