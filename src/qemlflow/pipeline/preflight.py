"""Checks that fail a doomed experiment in seconds, before featurizing and fitting.

Everything here reads only the configuration and the standardized labels: a run that
cannot succeed (cross-validation folds that cannot hold both classes, no task with both
classes, an estimator that rejects its parameters) stops with one line that names the
problem and the fix, not after the expensive steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from qemlflow.errors import DataError

if TYPE_CHECKING:
    from qemlflow.data import Dataset
    from qemlflow.pipeline.config import ExperimentConfig

__all__ = ["PreflightError", "preflight"]


class PreflightError(DataError):
    """The data cannot support the experiment as configured (found before any fitting)."""


def preflight(cfg: ExperimentConfig, dataset: Dataset) -> None:
    """Raise a one-line QeMLflowError now if ``cfg`` cannot run to the end on ``dataset``.

    Checked: the model configuration (estimator, parameters, calibration); for
    ``kfold``, that every fold can be filled (``k`` at most the molecules, and for a
    single-task classification set, stratified, at most the rarer class's count); for
    classification, that at least one task has two labelled molecules of each class.
    Tasks too sparse to model or calibrate are not an error: they fall back to a stated
    method and are listed in ``metrics.json``.

    Parameters
    ----------
    cfg : ExperimentConfig
        The experiment, with the task's defaults filled in.
    dataset : Dataset
        The standardized dataset.

    Raises
    ------
    ConfigError
        For a model configuration the estimator rejects.
    PreflightError
        For data that cannot support the experiment.
    """
    # Resolving the model checks the estimator, its parameters and the calibration.
    cfg.make_model(dataset.task)
    if cfg.split.method == "kfold":
        _check_folds(cfg.split.k, dataset)
    if dataset.task == "classification":
        _check_classes(dataset)


def _class_counts(labels: np.ndarray) -> tuple[int, int]:
    known = labels[~np.isnan(labels)]
    return int((known == 0).sum()), int((known == 1).sum())


def _check_folds(k: int, dataset: Dataset) -> None:
    if k > len(dataset):
        raise PreflightError(
            f"kfold with k={k} needs at least {k} molecules, but {dataset.source} has "
            f"{len(dataset)}",
            f"use k <= {len(dataset)}",
        )
    if dataset.task == "classification" and dataset.n_tasks == 1:
        negatives, positives = _class_counts(dataset.y[:, 0])
        fewest = min(negatives, positives)
        if fewest < k:
            name = "positives" if positives <= negatives else "negatives"
            raise PreflightError(
                f"kfold with k={k} stratifies by class, but {dataset.source} has only "
                f"{fewest} {name}: some folds would hold none",
                f"use k <= {fewest}, or add molecules of that class"
                if fewest >= 2
                else "add molecules of that class (cross-validation needs 2 of each)",
            )


def _check_classes(dataset: Dataset) -> None:
    counts = [_class_counts(dataset.y[:, t]) for t in range(dataset.n_tasks)]
    if any(min(pair) >= 2 for pair in counts):
        return
    if dataset.n_tasks == 1:
        negatives, positives = counts[0]
        raise PreflightError(
            f"{dataset.source} has {positives} positive and {negatives} negative labels: "
            "a classifier needs at least 2 of each class",
            "add molecules of the missing class, or use task: regression for a number",
        )
    raise PreflightError(
        f"none of the {dataset.n_tasks} tasks of {dataset.source} has 2 labelled "
        "molecules of each class",
        "add labelled molecules of both classes",
    )
