"""The experiment pipeline: configuration, the end-to-end run, saved predictors."""

from qemlflow.pipeline.config import ExperimentConfig, load_config, parse_config
from qemlflow.pipeline.predictor import Predictor, load_model
from qemlflow.pipeline.runner import RunResult, run

__all__ = [
    "ExperimentConfig",
    "Predictor",
    "RunResult",
    "load_config",
    "load_model",
    "parse_config",
    "run",
]
