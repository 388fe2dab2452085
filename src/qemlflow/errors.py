"""The QeMLflow error hierarchy: every error names the problem and the fix."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "FeaturizerError",
    "InputTooLargeError",
    "ModelError",
    "ModelInputError",
    "QeMLflowError",
]


class QeMLflowError(Exception):
    """Base of every error QeMLflow raises on purpose.

    The message is one line that says what is wrong and how to fix it; the CLI prints
    it without a traceback.

    Examples
    --------
    >>> str(QeMLflowError("file 'x.csv' is empty", "give a CSV with a header row"))
    "file 'x.csv' is empty; give a CSV with a header row"
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class ConfigError(QeMLflowError):
    """An experiment configuration or a parameter is invalid."""


class DataError(QeMLflowError):
    """Input data cannot be read or has the wrong shape."""


class FeaturizerError(QeMLflowError):
    """A featurizer was asked for something it cannot do."""


class ModelError(QeMLflowError):
    """A model cannot be fitted, loaded or used as asked."""


class InputTooLargeError(DataError):
    """Input exceeds a stated limit (bytes, rows, field size); the message names the limit.

    The prediction service answers it with 413; the CLI prints it as one line.
    """


class ModelInputError(DataError, ValueError):
    """An estimator was given a malformed ``X`` or ``y``.

    Also a ValueError, as scikit-learn's estimator contract asks of bad input, so
    scikit-learn's tools (``cross_val_score``'s error handling, the estimator checks)
    treat QeMLflow's models as their own.
    """
