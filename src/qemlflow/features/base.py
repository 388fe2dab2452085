"""The featurizer contract: a scikit-learn transformer from SMILES to a 2-D float array."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin

from qemlflow.errors import DataError, FeaturizerError
from qemlflow.features import _engine
from qemlflow.features._engine import Block, compute

__all__ = ["Featurizer", "as_smiles_list"]


def as_smiles_list(X: Any) -> list[object]:
    """Return the SMILES of ``X`` (list, tuple, 1-D or one-column array, Series) as a list.

    Entries are not checked here: anything that is not a parsable SMILES string
    becomes a NaN row later.

    Examples
    --------
    >>> as_smiles_list(np.array([["CCO"], ["CC"]]))
    ['CCO', 'CC']
    """
    if isinstance(X, str | bytes):
        raise DataError(
            "expected a sequence of SMILES, got a single string",
            "wrap it in a list: transform([smiles])",
        )
    if hasattr(X, "to_numpy"):  # pandas Series / one-column DataFrame
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise DataError(
                f"expected a 1-D sequence of SMILES, got an array of shape {X.shape}",
                "pass one column of SMILES strings",
            )
        return list(X.tolist())
    try:
        return list(X)
    except TypeError:
        raise DataError(
            f"expected a sequence of SMILES, got {type(X).__name__}",
            "pass a list, NumPy array or pandas Series of SMILES strings",
        ) from None


def check_int(owner: str, name: str, value: object, minimum: int) -> None:
    """Raise FeaturizerError unless ``value`` is an int (not bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise FeaturizerError(
            f"{owner} parameter {name!r} must be an integer >= {minimum}, got {value!r}",
            f"set {name} to a whole number such as {max(minimum, 2)}",
        )


def check_bool(owner: str, name: str, value: object) -> None:
    """Raise FeaturizerError unless ``value`` is a bool."""
    if not isinstance(value, bool | np.bool_):
        raise FeaturizerError(
            f"{owner} parameter {name!r} must be true or false, got {value!r}",
            f"set {name} to True or False",
        )


class Featurizer(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Base class: turns a sequence of SMILES into a 2-D float array, one row per input.

    Subclasses declare their parameters in ``__init__`` (stored unchanged) and describe
    their columns with ``_blocks`` and ``_feature_names``. Rows of SMILES that cannot be
    parsed (or are empty, None or not text) are all NaN; no row is ever dropped.
    Fingerprints come out as float32 (exact for integers below 2**24, and able to hold
    NaN); anything with descriptors is float64.
    """

    #: The name used in specs (``{"type": ...}``) and in :data:`FEATURIZERS`.
    type_name: ClassVar[str] = ""
    #: The distributions whose versions can change the output; the featurize step's key
    #: names them (tests/test_key_completeness.py checks the list against what runs).
    #: RDKit computes every fingerprint and descriptor.
    libraries: ClassVar[tuple[str, ...]] = ("rdkit", "numpy")
    #: This featurizer's own code version, bumped (2, 3, ...) when a fix changes its output
    #: for the same parameters and libraries. Above 1 it is named in the keys of the steps
    #: that compute with it (``featurizer:<type>`` in their libraries map) and in benchmark
    #: digests, so the fix recomputes its features and what was fitted on them, and nothing
    #: else. At 1 it adds nothing: the keys of featurizers never fixed stay as they were.
    code_version: ClassVar[int] = 1

    n_jobs: int

    def code_versions(self) -> dict[str, str]:
        """Return ``{"featurizer:<type>": "<version>"}`` where the code version is above 1.

        Examples
        --------
        >>> from qemlflow.features import ECFP
        >>> ECFP().code_versions()  # never fixed: adds nothing to a key
        {}
        """
        if self.code_version <= 1:
            return {}
        return {f"featurizer:{self.type_name}": str(self.code_version)}

    def required_libraries(self) -> tuple[str, ...]:
        """Return the distributions this featurizer's output depends on, sorted.

        Examples
        --------
        >>> from qemlflow.features import ECFP
        >>> ECFP().required_libraries()
        ('numpy', 'rdkit')
        """
        return tuple(sorted(set(self.libraries)))

    def fit(self, X: Any, y: Any = None) -> Self:
        """Check the parameters and return ``self``; featurizers learn nothing from data."""
        self._validate()
        return self

    def transform(self, X: Any) -> NDArray[np.floating[Any]]:
        """Return the feature matrix of the SMILES in ``X``: shape (len(X), n_features)."""
        self._validate()
        return compute(self._blocks(), as_smiles_list(X), n_jobs=self.n_jobs)

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """Return the output column names."""
        return np.asarray(self._feature_names(), dtype=object)

    @property
    def n_features_out(self) -> int:
        """Number of output columns."""
        return sum(block.width for block in self._blocks())

    @property
    def output_dtype(self) -> np.dtype[Any]:
        """The dtype ``transform`` returns: float32 for fingerprints only, else float64."""
        return np.dtype(_engine.output_dtype(self._blocks()))

    def to_spec(self) -> dict[str, Any]:
        """Return a JSON-compatible dict from which ``make_featurizer`` rebuilds this featurizer."""
        params = {name: _plain(value) for name, value in self.get_params(deep=False).items()}
        return {"type": self.type_name, **params}

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.string = True
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.allow_nan = True
        return tags

    # --- for subclasses -------------------------------------------------------------

    def _validate(self) -> None:
        n_jobs = self.n_jobs
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | np.integer) or n_jobs == 0:
            raise FeaturizerError(
                f"{self.type_name} parameter 'n_jobs' must be a non-zero integer, got {n_jobs!r}",
                "use 1 for serial, -1 for all cores, or a number of processes",
            )

    def _blocks(self) -> Sequence[Block]:
        raise NotImplementedError

    def _feature_names(self) -> list[str]:
        raise NotImplementedError


def _plain(value: Any) -> Any:
    """NumPy scalars to Python ones, so specs survive ``json.dumps``."""
    return value.item() if isinstance(value, np.generic) else value
