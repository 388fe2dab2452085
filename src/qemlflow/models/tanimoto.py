"""Tanimoto similarity and a k-nearest-neighbour estimator built on it."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from qemlflow.errors import ConfigError, ModelInputError

__all__ = ["TanimotoKNN", "tanimoto_similarity"]

FloatArray = npt.NDArray[np.float64]


def _is_binary(X: FloatArray) -> bool:
    return bool(np.all((X == 0.0) | (X == 1.0)))


def _similarity_block(
    A: FloatArray, B: FloatArray, a_sums: FloatArray, b_sums: FloatArray, b_binary: bool
) -> FloatArray:
    # min(a, b) = (a + b - |a - b|) / 2 and max(a, b) = (a + b + |a - b|) / 2, so the
    # min-max ratio needs only the row sums and the L1 distance. For 0/1 rows the L1
    # distance comes from one matrix product, which is far faster than cdist.
    if b_binary and _is_binary(A):
        l1 = a_sums[:, None] + b_sums[None, :] - 2.0 * (A @ B.T)
    else:
        l1 = cdist(A, B, metric="cityblock")
    total = a_sums[:, None] + b_sums[None, :]
    denominator = total + l1
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (total - l1) / denominator
    # Two all-zero rows are identical, so their similarity is 1.
    sim[denominator == 0.0] = 1.0
    return np.asarray(sim, dtype=np.float64)


def _check_non_negative(X: npt.ArrayLike, name: str) -> FloatArray:
    try:
        return np.asarray(
            check_array(X, dtype=np.float64, ensure_non_negative=True, input_name=name),
            dtype=np.float64,
        )
    except ValueError as exc:
        raise ModelInputError(
            f"Tanimoto similarity cannot use {name}: {exc}",
            "give non-negative, finite features such as fingerprint bits or counts "
            "(impute NaN and min-max scale descriptors first)",
        ) from exc


def tanimoto_similarity(A: npt.ArrayLike, B: npt.ArrayLike, chunk_size: int = 512) -> FloatArray:
    """Return the Tanimoto similarity between every row of `A` and every row of `B`.

    For 0/1 features this is the classic Tanimoto (Jaccard) coefficient
    ``|a & b| / |a | b|``; for counts or other non-negative values it is the min-max
    generalisation ``sum(min(a, b)) / sum(max(a, b))``. Two all-zero rows have
    similarity 1.

    Parameters
    ----------
    A : array-like of shape (n_a, n_features)
        Non-negative features.
    B : array-like of shape (n_b, n_features)
        Non-negative features.
    chunk_size : int, default=512
        Rows of `A` processed at a time, which bounds the memory used.

    Returns
    -------
    ndarray of shape (n_a, n_b)
        Similarities in [0, 1].

    Examples
    --------
    >>> tanimoto_similarity([[1, 1, 0, 0]], [[1, 0, 1, 0], [1, 1, 0, 0]])
    array([[0.33333333, 1.        ]])
    >>> tanimoto_similarity([[2, 1]], [[1, 1]])
    array([[0.66666667]])
    """
    A_ = _check_non_negative(A, "A")
    B_ = _check_non_negative(B, "B")
    if A_.shape[1] != B_.shape[1]:
        raise ModelInputError(
            f"A has {A_.shape[1]} features but B has {B_.shape[1]}",
            "compute both with the same featurizer",
        )
    b_sums = B_.sum(axis=1)
    b_binary = _is_binary(B_)
    out = np.empty((A_.shape[0], B_.shape[0]), dtype=np.float64)
    for start in range(0, A_.shape[0], chunk_size):
        block = A_[start : start + chunk_size]
        out[start : start + chunk_size] = _similarity_block(
            block, B_, block.sum(axis=1), b_sums, b_binary
        )
    return out


class TanimotoKNN(BaseEstimator):  # type: ignore[misc]
    """k-nearest-neighbour regressor or classifier under Tanimoto similarity.

    Neighbours are the training molecules most similar to the query; predictions are
    their distance-weighted mean (regression) or class vote (classification), with
    distance ``1 - similarity``. Exact matches (distance 0) take all the weight.

    Parameters
    ----------
    n_neighbors : int, default=5
        Number of neighbours (capped at the number of training rows).
    task : {"regression", "classification"}, default="regression"
        What `y` is and what `predict` returns.
    weights : {"distance", "uniform"}, default="distance"
        ``"distance"`` weighs each neighbour by ``1 / (1 - similarity)``.
    chunk_size : int, default=512
        Query rows compared with the training set at a time; bounds memory.

    Attributes
    ----------
    X_fit_ : ndarray of shape (n_samples, n_features)
        Training features.
    y_fit_ : ndarray of shape (n_samples,)
        Training targets (class indices for classification).
    classes_ : ndarray
        Class labels (classification only).
    n_features_in_ : int
        Number of features seen in `fit`.

    Examples
    --------
    >>> X = [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 1, 1, 1]]
    >>> knn = TanimotoKNN(n_neighbors=2).fit(X, [1.0, 2.0, 5.0, 6.0])
    >>> knn.predict([[1, 1, 0, 0]])
    array([1.])
    >>> clf = TanimotoKNN(n_neighbors=2, task="classification").fit(X, [0, 0, 1, 1])
    >>> clf.predict_proba([[0, 0, 1, 1]])
    array([[0., 1.]])
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        task: Literal["regression", "classification"] = "regression",
        weights: Literal["distance", "uniform"] = "distance",
        chunk_size: int = 512,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.task = task
        self.weights = weights
        self.chunk_size = chunk_size

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        # Tanimoto similarity is defined for non-negative features only.
        tags.input_tags.positive_only = True
        if self.task == "classification":
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags()
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        return tags

    def _check_params(self) -> None:
        if self.task not in ("regression", "classification"):
            raise ConfigError(f"unknown task {self.task!r}", "use 'regression' or 'classification'")
        if self.weights not in ("distance", "uniform"):
            raise ConfigError(f"unknown weights {self.weights!r}", "use 'distance' or 'uniform'")
        if not isinstance(self.n_neighbors, int | np.integer) or self.n_neighbors < 1:
            raise ConfigError(
                f"n_neighbors must be a positive integer, got {self.n_neighbors!r}",
                "pass e.g. n_neighbors=5",
            )
        if not isinstance(self.chunk_size, int | np.integer) or self.chunk_size < 1:
            raise ConfigError(
                f"chunk_size must be a positive integer, got {self.chunk_size!r}",
                "pass e.g. chunk_size=512",
            )

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> TanimotoKNN:
        """Store the training set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Non-negative features (fingerprint bits or counts).
        y : array-like of shape (n_samples,)
            Targets or class labels.

        Returns
        -------
        TanimotoKNN
            This estimator, fitted.
        """
        self._check_params()
        X_checked = _check_non_negative(X, "X")
        _, y_arr = check_X_y(X_checked, y, dtype=np.float64, y_numeric=False)
        self.X_fit_ = X_checked
        self.row_sums_ = X_checked.sum(axis=1)
        self.binary_ = _is_binary(X_checked)
        if self.task == "classification":
            try:
                check_classification_targets(y_arr)
            except ValueError as exc:
                raise ModelInputError(
                    f"y is not a set of class labels: {exc}", "use task='regression'"
                ) from exc
            self.classes_, self.y_fit_ = np.unique(y_arr, return_inverse=True)
        else:
            self.y_fit_ = np.asarray(y_arr, dtype=np.float64)
        self.n_features_in_ = X_checked.shape[1]
        return self

    def _neighbours(self, X: npt.ArrayLike) -> tuple[npt.NDArray[np.intp], FloatArray]:
        """Indices of the nearest training rows and their weights, per query row."""
        check_is_fitted(self, "X_fit_")
        Q = _check_non_negative(X, "X")
        if Q.shape[1] != self.n_features_in_:
            raise ModelInputError(
                f"X has {Q.shape[1]} features, but TanimotoKNN is expecting "
                f"{self.n_features_in_} features as input",
                "featurize the query molecules exactly as the training ones",
            )
        k = min(self.n_neighbors, self.X_fit_.shape[0])
        indices = np.empty((Q.shape[0], k), dtype=np.intp)
        weights = np.empty((Q.shape[0], k), dtype=np.float64)
        for start in range(0, Q.shape[0], self.chunk_size):
            block = Q[start : start + self.chunk_size]
            sim = _similarity_block(
                block, self.X_fit_, block.sum(axis=1), self.row_sums_, self.binary_
            )
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            top_sim = np.take_along_axis(sim, top, axis=1)
            indices[start : start + len(block)] = top
            weights[start : start + len(block)] = self._weights(1.0 - top_sim)
        return indices, weights

    def _weights(self, distance: FloatArray) -> FloatArray:
        if self.weights == "uniform":
            return np.ones_like(distance)
        exact = distance <= 0.0
        with np.errstate(divide="ignore"):
            w = 1.0 / distance
        has_exact = exact.any(axis=1)
        w[has_exact] = exact[has_exact].astype(np.float64)
        return np.asarray(w, dtype=np.float64)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        """Return the weighted neighbour mean (regression) or the most likely class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Non-negative features.

        Returns
        -------
        ndarray of shape (n_samples,)
            Predictions.
        """
        if self.task == "classification":
            proba = self.predict_proba(X)
            return np.asarray(self.classes_[np.argmax(proba, axis=1)])
        indices, weights = self._neighbours(X)
        values = self.y_fit_[indices]
        return np.asarray((weights * values).sum(axis=1) / weights.sum(axis=1))

    @available_if(lambda self: self.task == "classification")  # type: ignore[untyped-decorator]
    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        """Return the weighted share of neighbours in each class.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Non-negative features.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Class probabilities in the order of `classes_`.
        """
        indices, weights = self._neighbours(X)
        one_hot = np.eye(len(self.classes_))[self.y_fit_[indices]]
        votes = (weights[:, :, None] * one_hot).sum(axis=1)
        return np.asarray(votes / votes.sum(axis=1, keepdims=True), dtype=np.float64)

    def score(self, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Return R² (regression) or accuracy (classification) on `(X, y)`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Non-negative features.
        y : array-like of shape (n_samples,)
            True targets or labels.

        Returns
        -------
        float
            The score.
        """
        if self.task == "classification":
            return float(accuracy_score(y, self.predict(X)))
        return float(r2_score(y, self.predict(X)))
