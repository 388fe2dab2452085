"""The molecule itself as a feature: one column of SMILES, for models that read structures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from qemlflow.errors import FeaturizerError
from qemlflow.features._engine import Block
from qemlflow.features.base import Featurizer, as_smiles_list

__all__ = ["SmilesColumn"]


class SmilesColumn(Featurizer):
    """Pass the SMILES through as an (n, 1) unicode array, for graph models such as the D-MPNN.

    The graph model builds its own molecular graphs from this column, so the pipeline's
    featurize step (and its cache) stays the same for every model. Entries that are not
    text become ``""``, which the model then reports as an unparsable molecule. It cannot
    be concatenated with numeric featurizers.

    Parameters
    ----------
    n_jobs : int, default=1
        Accepted for the featurizer contract; copying strings needs no processes.

    Examples
    --------
    >>> x = SmilesColumn().transform(["CCO", "c1ccccc1"])
    >>> x.shape, x.dtype.kind, str(x[1, 0])
    ((2, 1), 'U', 'c1ccccc1')
    """

    type_name = "smiles"
    # The strings pass through untouched, but the featurizers' module imports RDKit, so
    # the key names it (free: the graph model that reads the column needs RDKit anyway).

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    def transform(self, X: Any) -> NDArray[Any]:
        """Return the SMILES of ``X`` as a unicode array of shape (len(X), 1)."""
        self._validate()
        texts = [s if isinstance(s, str) else "" for s in as_smiles_list(X)]
        return np.asarray(texts, dtype=np.str_).reshape(len(texts), 1)

    @property
    def n_features_out(self) -> int:
        """One column: the SMILES."""
        return 1

    @property
    def output_dtype(self) -> np.dtype[Any]:
        """Unicode strings (the width follows the longest SMILES)."""
        return np.dtype(np.str_)

    def _blocks(self) -> Sequence[Block]:
        raise FeaturizerError(
            "the 'smiles' featurizer cannot be combined with numeric featurizers",
            "use features: smiles on its own (the D-MPNN adds RDKit descriptors itself "
            "with params: {descriptors: rdkit2d})",
        )

    def _feature_names(self) -> list[str]:
        return ["smiles"]
