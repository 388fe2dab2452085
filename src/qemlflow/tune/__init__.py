"""Hyperparameter search: ``qemlflow tune`` (seeded Optuna TPE over the training part)."""

from qemlflow.tune.search import BEST_FILENAME, STUDY_FILENAME, TrialRecord, TuneResult, tune
from qemlflow.tune.space import DEFAULT_SPACES, default_space

__all__ = [
    "BEST_FILENAME",
    "DEFAULT_SPACES",
    "STUDY_FILENAME",
    "TrialRecord",
    "TuneResult",
    "default_space",
    "tune",
]
