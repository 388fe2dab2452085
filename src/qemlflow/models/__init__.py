"""Models for molecules: MolecularModel with conformal intervals or calibrated odds.

Examples
--------
>>> from qemlflow.models import ESTIMATORS
>>> sorted(ESTIMATORS)
['dmpnn', 'ensemble', 'extra_trees', 'knn', 'lightgbm', 'linear', 'random_forest', 'svm']
"""

from __future__ import annotations

from qemlflow.models.conformal import conformal_quantile
from qemlflow.models.dmpnn import DMPNN
from qemlflow.models.ensemble import Ensemble
from qemlflow.models.molecular_model import MolecularModel, make_model
from qemlflow.models.registry import ESTIMATORS, EstimatorSpec, get_spec
from qemlflow.models.tanimoto import TanimotoKNN, tanimoto_similarity

__all__ = [
    "DMPNN",
    "ESTIMATORS",
    "Ensemble",
    "EstimatorSpec",
    "MolecularModel",
    "TanimotoKNN",
    "conformal_quantile",
    "get_spec",
    "make_model",
    "tanimoto_similarity",
]
