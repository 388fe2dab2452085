"""QeMLflow: reproducible, auditable molecular machine learning.

The public API is loaded lazily (PEP 562) so that ``import qemlflow`` stays fast:
RDKit, scikit-learn and LightGBM are imported only when a name that needs them is used.

Examples
--------
>>> import qemlflow as qm
>>> "load_dataset" in qm.__all__
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from qemlflow._version import __version__

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "load_dataset": "qemlflow.data",
    "list_datasets": "qemlflow.data",
    "read_table": "qemlflow.data",
    "Dataset": "qemlflow.data",
    "standardize_smiles": "qemlflow.chem",
    "featurize": "qemlflow.features",
    "make_featurizer": "qemlflow.features",
    "split": "qemlflow.splits",
    "Split": "qemlflow.splits",
    "evaluate": "qemlflow.evaluation",
    "make_model": "qemlflow.models",
    "MolecularModel": "qemlflow.models",
    "run": "qemlflow.pipeline",
    "RunResult": "qemlflow.pipeline",
    "ExperimentConfig": "qemlflow.pipeline",
    "load_config": "qemlflow.pipeline",
    "load_model": "qemlflow.pipeline",
    "Predictor": "qemlflow.pipeline",
    "Client": "qemlflow.serve.client",
    "QeMLflowError": "qemlflow.errors",
    "ConfigError": "qemlflow.errors",
    "DataError": "qemlflow.errors",
    "FeaturizerError": "qemlflow.errors",
    "ModelError": "qemlflow.errors",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from qemlflow.chem import standardize_smiles
    from qemlflow.data import Dataset, list_datasets, load_dataset, read_table
    from qemlflow.errors import ConfigError, DataError, FeaturizerError, ModelError, QeMLflowError
    from qemlflow.evaluation import evaluate
    from qemlflow.features import featurize, make_featurizer
    from qemlflow.models import MolecularModel, make_model
    from qemlflow.pipeline import (
        ExperimentConfig,
        Predictor,
        RunResult,
        load_config,
        load_model,
        run,
    )
    from qemlflow.serve.client import Client
    from qemlflow.splits import Split, split


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qemlflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
