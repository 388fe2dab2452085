"""Random forests and extra trees whose predictions do not depend on `n_jobs`.

scikit-learn's forests add the trees' predictions from several threads in whatever
order the threads finish, so two identical models can differ in the last bit. These
subclasses fit in parallel (that part is already deterministic for a fixed seed) but
sum the trees in a fixed order when predicting.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy.typing as npt
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

__all__ = [
    "OrderedExtraTreesClassifier",
    "OrderedExtraTreesRegressor",
    "OrderedRandomForestClassifier",
    "OrderedRandomForestRegressor",
]


def _single_threaded(forest: Any) -> Any:
    # A shallow copy shares the fitted trees; only its n_jobs differs.
    twin = copy.copy(forest)
    twin.n_jobs = 1
    return twin


class OrderedRandomForestRegressor(RandomForestRegressor):  # type: ignore[misc]
    """RandomForestRegressor whose predictions do not depend on ``n_jobs``."""

    def predict(self, X: npt.ArrayLike) -> Any:
        """Return the mean of the trees' predictions, summed in tree order."""
        return RandomForestRegressor.predict(_single_threaded(self), X)


class OrderedRandomForestClassifier(RandomForestClassifier):  # type: ignore[misc]
    """RandomForestClassifier whose predictions do not depend on ``n_jobs``."""

    def predict_proba(self, X: npt.ArrayLike) -> Any:
        """Return the mean of the trees' class probabilities, summed in tree order."""
        return RandomForestClassifier.predict_proba(_single_threaded(self), X)


class OrderedExtraTreesRegressor(ExtraTreesRegressor):  # type: ignore[misc]
    """ExtraTreesRegressor whose predictions do not depend on ``n_jobs``."""

    def predict(self, X: npt.ArrayLike) -> Any:
        """Return the mean of the trees' predictions, summed in tree order."""
        return ExtraTreesRegressor.predict(_single_threaded(self), X)


class OrderedExtraTreesClassifier(ExtraTreesClassifier):  # type: ignore[misc]
    """ExtraTreesClassifier whose predictions do not depend on ``n_jobs``."""

    def predict_proba(self, X: npt.ArrayLike) -> Any:
        """Return the mean of the trees' class probabilities, summed in tree order."""
        return ExtraTreesClassifier.predict_proba(_single_threaded(self), X)
