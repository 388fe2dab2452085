"""The full RDKit 2D descriptor set as float64 rows, with unusable values as NaN."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rdkit import Chem
from rdkit.Chem import Descriptors

__all__ = ["MAX_ABS_DESCRIPTOR", "descriptor_names", "descriptor_row"]

MAX_ABS_DESCRIPTOR = 1e10
"""Values larger than this in magnitude (e.g. ``Ipc`` of big molecules) become NaN."""


@lru_cache(maxsize=1)
def _descriptor_functions() -> tuple[tuple[str, Callable[[Chem.Mol], Any]], ...]:
    return tuple((name, function) for name, function in Descriptors._descList)


def descriptor_names() -> tuple[str, ...]:
    """Return the names of every RDKit 2D descriptor, in output column order.

    This is ``rdkit.Chem.Descriptors._descList``, so the count follows the RDKit version.

    Examples
    --------
    >>> names = descriptor_names()
    >>> "MolWt" in names and "TPSA" in names
    True
    """
    return tuple(name for name, _ in _descriptor_functions())


def descriptor_row(mol: Chem.Mol) -> NDArray[np.float64]:
    """Return every RDKit 2D descriptor of ``mol`` as float64; failures and absurd values are NaN.

    A descriptor that raises, is not finite, or exceeds :data:`MAX_ABS_DESCRIPTOR` in
    magnitude gives NaN, so downstream models see "missing" rather than a huge number.

    Examples
    --------
    >>> row = descriptor_row(Chem.MolFromSmiles("CCO"))
    >>> round(float(row[descriptor_names().index("MolWt")]), 2)
    46.07
    """
    values: list[float] = []
    append = values.append
    for _, function in _descriptor_functions():
        try:
            append(float(function(mol)))
        except Exception:  # RDKit descriptors raise many unrelated types on odd molecules
            append(np.nan)
    row = np.array(values, dtype=np.float64)
    # "not <=" also catches NaN, so inf, NaN and huge values are all cleaned in one pass
    row[~(np.abs(row) <= MAX_ABS_DESCRIPTOR)] = np.nan
    return row
