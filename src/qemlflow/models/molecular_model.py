"""MolecularModel: one estimator for molecules, with conformal intervals or calibrated odds."""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import lightgbm
import numpy as np
import numpy.typing as npt
import sklearn
from lightgbm.basic import LightGBMError
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_array, check_is_fitted

from qemlflow._version import __version__
from qemlflow.errors import ConfigError, ModelError, ModelInputError
from qemlflow.models.conformal import conformal_quantile, cv_plus_interval
from qemlflow.models.dmpnn import as_smiles_column
from qemlflow.models.registry import EstimatorSpec, Task, get_spec

__all__ = ["MolecularModel", "make_model"]

FloatArray = npt.NDArray[np.float64]
Calibration = Literal["auto", "sigmoid", "isotonic", "none"]

_N_FOLDS = 5
# "auto" calibration: isotonic regression needs many points to beat Platt scaling.
_ISOTONIC_MIN_POINTS = 1000
# Below this many calibration points a split-conformal quantile is too coarse (and, under
# (1 + 1/coverage) points, infinite): the interval comes from cross-conformal residuals
# on the training and calibration rows together instead. The bundled benchmark sets'
# validation parts (ESOL 113, FreeSolv 64 molecules) stay split-conformal.
MIN_SPLIT_CONFORMAL_POINTS = 50
# Small sets (at most this many residuals) keep their fold models for CV+ intervals; above
# it the cross-conformal quantile is as good and k models would be carried for nothing.
CV_PLUS_MAX_POINTS = 500
# Below this many calibration labels of either class, probabilities are calibrated by
# cross-validation on the training and calibration rows together.
MIN_CALIBRATION_PER_CLASS = 5


# What a per-task fit records, one entry per task (lists) or per task it concerns (dicts).
_PER_TASK_LISTS = (
    "estimators_",
    "base_estimators_",
    "n_train_per_task_",
    "n_calibration_per_task_",
    "calibration_methods_",
    "interval_methods_",
    "calibration_sources_",
    "cv_plus_",
)
_PER_TASK_DICTS = ("tasks_not_modelled_", "tasks_not_calibrated_", "calibration_fallbacks_")

# Predictions of several tasks go to threads only from this many molecules on.
_THREADED_MIN_ROWS = 256

_T = TypeVar("_T")
_R = TypeVar("_R")


def _task_workers(n_jobs: int | None, n_tasks: int) -> int:
    """Threads for per-task work: ``n_jobs`` (negative counts back from all cores), at
    most one per task; 1 for a single task, which keeps its estimator's own threads."""
    if n_tasks < 2 or n_jobs is None or n_jobs == 1:
        return 1
    cores = os.cpu_count() or 1
    wanted = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, min(wanted, n_tasks))


def _map_tasks(work: Callable[[_T], _R], items: Iterable[_T], workers: int) -> list[_R]:
    """``[work(item) for item in items]``, on ``workers`` threads; results in item order."""
    if workers <= 1:
        return [work(item) for item in items]
    # scikit-learn's configuration is per thread: the workers run under the caller's.
    config = sklearn.get_config()

    def configured(item: _T) -> _R:
        with sklearn.config_context(**config):
            return work(item)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(configured, items))


class _CVPlus:
    """What CV+ intervals need at prediction time: the fold models and their residuals."""

    def __init__(self, models: list[Any], residuals: FloatArray, fold_of: npt.NDArray[Any]) -> None:
        self.models = models
        self.residuals = residuals
        self.fold_of = fold_of

    def interval(self, X: npt.NDArray[Any], coverage: float) -> tuple[FloatArray, FloatArray]:
        fold_predictions = np.column_stack([m.predict(X) for m in self.models])
        return cv_plus_interval(fold_predictions, self.residuals, self.fold_of, coverage)


class _ConstantModel:
    """Stands in for a model on a task that could not be modelled (one class, no labels).

    Classification predicts the task's smoothed prior ``(positives + 0.5) / (labels + 1)``
    (never a confident 0 or 1 from a handful of labels); regression the mean label.
    """

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, X: npt.NDArray[Any]) -> FloatArray:
        return np.full(X.shape[0], self.value, dtype=np.float64)

    def predict_proba(self, X: npt.NDArray[Any]) -> FloatArray:
        p = self.predict(X)
        return np.column_stack([1.0 - p, p])


class _ConstantProbability:
    """The single-class stand-in in models saved by older versions: kept so they still load."""

    def __init__(self, positive_probability: float) -> None:
        self.positive_probability = positive_probability

    def predict_proba(self, X: npt.NDArray[Any]) -> FloatArray:
        p = np.full(X.shape[0], self.positive_probability, dtype=np.float64)
        return np.column_stack([1.0 - p, p])


def _smoothed_prior(labels: FloatArray) -> float:
    """The positive rate with Jeffreys' half-count, ``0.5`` without labels."""
    return float((np.sum(labels) + 0.5) / (len(labels) + 1.0))


def _positive_score(model: Any, X: npt.NDArray[Any]) -> FloatArray:
    """The model's uncalibrated score for class 1, in [0, 1].

    ``predict_proba`` when the model has it, else the logistic of ``decision_function``
    (a strictly increasing map, so the ranking is the model's own).
    """
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)
    margin = np.asarray(model.decision_function(X), dtype=np.float64)
    return np.asarray(1.0 / (1.0 + np.exp(-margin)), dtype=np.float64)


def tie_free_isotonic(scores: FloatArray, labels: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Knots ``(x, y)`` of an isotonic calibration map that never ties distinct scores.

    Isotonic regression is a step function: every score in a step gets the same value, so
    thousands of test molecules collapse onto a few dozen probabilities and ROC-AUC drops.
    Here each flat step (including the clipped ends, extended to scores 0 and 1) is tilted
    by the uncalibrated score, from a quarter of the way down to the step below to a
    quarter of the way up to the step above (0 and 1 past the ends). The map is then
    strictly increasing: the ranking, and so ROC-AUC and PR-AUC, is exactly the model's
    own, while each step keeps its isotonic value at its middle.
    Interpolate with ``numpy.interp(score, x, y)``.

    Examples
    --------
    >>> x, y = tie_free_isotonic(np.array([0.2, 0.4, 0.6, 0.8]), np.array([0, 1, 0, 1]))
    >>> p = np.interp([0.1, 0.3, 0.5, 0.7, 0.9], x, y)
    >>> bool(np.all(np.diff(p) > 0)), bool(p.min() >= 0 and p.max() <= 1)
    (True, True)
    """
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    x = np.asarray(fitted.X_thresholds_, dtype=np.float64)
    y = np.asarray(fitted.y_thresholds_, dtype=np.float64)
    if x[0] > 0.0:
        x, y = np.concatenate([[0.0], x]), np.concatenate([[y[0]], y])
    if x[-1] < 1.0:
        x, y = np.concatenate([x, [1.0]]), np.concatenate([y, [y[-1]]])
    tilted = y.copy()
    start = 0
    while start < len(y):
        end = start
        while end + 1 < len(y) and y[end + 1] == y[start]:
            end += 1
        if end > start:  # a flat step from x[start] to x[end]
            below = y[start - 1] if start > 0 else 0.0
            above = y[end + 1] if end + 1 < len(y) else 1.0
            tilted[start] = y[start] - (y[start] - below) / 4
            tilted[end] = y[end] + (above - y[end]) / 4
        start = end + 1
    return x, tilted


class _ScoreCalibrator:
    """Maps one task's raw probability from a joint multi-task model to a calibrated one.

    ``"sigmoid"`` is Platt scaling on the logit, ``"isotonic"`` isotonic regression made
    tie-free (:func:`tie_free_isotonic`), ``"none"`` the identity and ``"constant"`` a task
    that could not be modelled (its smoothed prior).
    """

    def __init__(self, method: str, constant: float = 0.0) -> None:
        self.method = method
        self.constant = constant
        self.model: Any = None

    def fit(self, scores: FloatArray, labels: FloatArray) -> _ScoreCalibrator:
        if self.method == "sigmoid":
            self.model = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(scores), labels)
        elif self.method == "isotonic":
            self.model = tie_free_isotonic(scores, labels)
        return self

    def reverses_ranking(self) -> bool:
        """Whether the fitted Platt map decreases (higher score, lower probability)."""
        return self.method == "sigmoid" and float(self.model.coef_[0, 0]) < 0.0

    def transform(self, scores: FloatArray) -> FloatArray:
        if self.method == "constant":
            return np.full(len(scores), self.constant)
        if self.method == "sigmoid":
            return np.asarray(self.model.predict_proba(_logit(scores))[:, 1], dtype=np.float64)
        if self.method == "isotonic":
            if isinstance(self.model, IsotonicRegression):  # a model saved before tie-free
                return np.asarray(self.model.predict(scores), dtype=np.float64)
            x, y = self.model
            return np.asarray(np.interp(scores, x, y), dtype=np.float64)
        return np.asarray(scores, dtype=np.float64)


class _CalibratedScores:
    """A fitted classifier whose positive-class probability goes through a calibrator."""

    def __init__(self, model: Any, calibrator: _ScoreCalibrator) -> None:
        self.model = model
        self.calibrator = calibrator

    def predict_proba(self, X: npt.NDArray[Any]) -> FloatArray:
        p = self.calibrator.transform(_positive_score(self.model, X))
        return np.column_stack([1.0 - p, p])


def _single_class_reason(counts: npt.NDArray[np.int64]) -> str:
    """Why a task whose training labels have one class (or none) is not modelled."""
    if counts.sum() == 0:
        return "no labels in the training part"
    only = int(np.argmax(counts))
    return (
        f"every training label is {only} ({counts[only]} "
        f"{'positives' if only else 'negatives'}, no {'negatives' if only else 'positives'})"
    )


_REVERSED = (
    "the calibration labels rank the classes opposite to the model (Platt scaling would "
    "invert every prediction)"
)


def _reverses_ranking(calibrated: CalibratedClassifierCV) -> bool:
    """Whether a fitted sigmoid calibrator maps higher model scores to lower probabilities.

    Platt scaling fits ``p = 1 / (1 + exp(a * score + b))``; on a small or unlucky
    calibration set ``a`` can come out positive, which turns a useful ranking upside down
    (ROC-AUC 1 - x). Such a calibrator is refused and the model's own probabilities kept.
    """
    for fitted in calibrated.calibrated_classifiers_:
        for calibrator in fitted.calibrators:
            if float(getattr(calibrator, "a_", -1.0)) > 0.0:
                return True
    return False


def _stack(
    X: npt.NDArray[Any], y: FloatArray, cal: tuple[npt.NDArray[Any], FloatArray]
) -> tuple[npt.NDArray[Any], FloatArray]:
    """Training and calibration rows as one set (for cross-validated calibration)."""
    return np.concatenate([X, cal[0]]), np.concatenate([y, cal[1]])


def _enough_to_calibrate(task: str, y_cal: FloatArray) -> bool:
    """Whether a held-out calibration set is big enough to calibrate every task on alone.

    Regression: at least ``MIN_SPLIT_CONFORMAL_POINTS`` labels per task. Classification
    (one joint model) keeps its calibration set whatever its size: a task it cannot
    calibrate is reported as uncalibrated per task.
    """
    if task != "regression":
        return True
    labelled = (~np.isnan(y_cal)).sum(axis=0)
    return bool(len(labelled) and labelled.min() >= MIN_SPLIT_CONFORMAL_POINTS)


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(clipped / (1 - clipped)).reshape(-1, 1)


def _rejects_parameter(exc: BaseException) -> bool:
    """Whether `exc` is scikit-learn's parameter-validation error.

    Its class, ``InvalidParameterError`` (a ValueError and TypeError), lives in a private
    module; matching the name keeps a data error from being reported as a bad parameter
    without importing it.
    """
    return any(cls.__name__ == "InvalidParameterError" for cls in type(exc).__mro__)


def _fit_checked(model: Any, X: npt.NDArray[Any], y: npt.NDArray[Any], **kwargs: Any) -> Any:
    """Fit `model`, turning a rejected parameter value into a ConfigError."""
    try:
        return model.fit(X, y, **kwargs)
    except (ValueError, TypeError, LightGBMError) as exc:
        if not isinstance(exc, LightGBMError) and not _rejects_parameter(exc):
            raise
        raise ConfigError(
            f"the estimator rejected a parameter: {exc}",
            "fix that entry of params (see the estimator's documentation)",
        ) from exc


def _final_step(model: Any) -> Any:
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


class MolecularModel(BaseEstimator):  # type: ignore[misc]
    """A regressor with conformal prediction intervals or a calibrated binary classifier.

    One underlying model is fitted per task (column of ``y``) on the rows where that
    task is labelled, so molecules missing some labels still train the other tasks. The
    D-MPNN (``"dmpnn"``) is one network for all tasks instead, with missing labels masked
    out of its loss; it reads the SMILES column of the ``smiles`` featurizer as ``X``.

    Regression: ``predict_interval`` gives conformal intervals with marginal coverage
    `coverage`. The half-width per task is the conformal quantile of absolute residuals
    on ``(X_cal, y_cal)`` (split-conformal) when it has at least
    ``MIN_SPLIT_CONFORMAL_POINTS`` (50) labels, else of 5-fold out-of-fold residuals on the
    training and calibration rows together: CV+ intervals from the 5 fold models (at most
    ``CV_PLUS_MAX_POINTS`` rows; cross-conformal above); with too few residuals for
    `coverage` the largest one is used, so intervals stay finite. The method per task is
    in ``interval_methods_``; the final model is always fitted on ``(X, y)`` alone.

    Classification (labels 0/1): probabilities are calibrated on ``(X_cal, y_cal)`` when
    given with at least ``MIN_CALIBRATION_PER_CLASS`` (5) labels of each class (the
    fitted model is frozen); with fewer, a Platt map is fitted on 5-fold out-of-fold
    scores of the training and calibration rows together (the model stays fitted on the
    training rows, so its ranking is unchanged); without a calibration set, by 5-fold
    cross-validation on the training data (one model refitted on all rows, calibrator
    fitted on out-of-fold scores). The source per task is in ``calibration_sources_``.
    Isotonic calibration is tie-free (:func:`tie_free_isotonic`): probabilities rank as the
    model's scores. A task with one class (or none) in training predicts its smoothed
    prior and is listed in ``tasks_not_modelled_``.
    ``predict_proba`` returns ``(n_samples, 2)`` in the order of ``classes_`` (a list of
    such arrays, one per task, when ``y`` is 2-D); ``predict_positive`` returns the
    positive-class column(s) alone, shaped like ``predict``.

    Parameters
    ----------
    estimator : {"random_forest", "extra_trees", "lightgbm", "knn", "svm", "linear", "dmpnn"}
        Underlying model; see ``qemlflow.models.ESTIMATORS``. ``"knn"`` is
        :class:`TanimotoKNN` after median imputation and min-max scaling to [0, 1];
        ``"svm"`` and ``"linear"`` (RidgeCV / LogisticRegression) get median imputation
        and standardization; tree models take NaN natively.
    task : {"regression", "classification"}, default="regression"
        What ``y`` holds.
    params : dict or None, default=None
        Passed to the underlying estimator, overriding QeMLflow's defaults.
    coverage : float, default=0.9
        Target coverage of regression prediction intervals, in (0, 1).
    calibration : {"auto", "sigmoid", "isotonic", "none"}, default="auto"
        Probability calibration for classification. ``"auto"`` uses sigmoid when the
        calibrator sees fewer than 1000 points and isotonic otherwise.
    random_state : int or None, default=0
        Seed for the estimator and the cross-validation folds.
    n_jobs : int or None, default=1
        Threads for estimators that support them.

    Attributes
    ----------
    estimators_ : list
        Per task, the object that predicts: the fitted model (regression), or the
        calibrated classifier.
    base_estimators_ : list
        Per task, the fitted uncalibrated model on all labelled rows (None for a task
        whose labels had one class).
    params_ : dict
        Parameters the underlying estimator was built with.
    n_tasks_ : int
        Number of tasks (columns of ``y``).
    n_features_in_ : int
        Number of features seen in ``fit``.
    n_train_per_task_ : list of int
        Labelled training rows per task.
    n_calibration_per_task_ : list of int
        Points the conformal quantile or calibrator was fitted on, per task.
    conformal_quantiles_ : ndarray of shape (n_tasks,)
        Interval half-width per task (regression; ``inf`` only without any residual).
    interval_methods_ : list of str
        How each task's intervals were found (regression): ``"split_conformal"``,
        ``"cv_plus"`` (fold models kept in ``cv_plus_``), ``"cross_conformal"``, or any
        with ``"_max_residual"`` when there were too few residuals for `coverage`.
    calibration_methods_ : list of str
        Calibration used per task (classification).
    calibration_sources_ : list of str
        Per task, what the intervals or calibrator were fitted on: ``"calibration_set"``,
        ``"cross_validation"`` or ``"none"``.
    tasks_not_modelled_ : dict of int to str
        Tasks that predict a constant (classification: their smoothed prior
        ``(positives + 0.5) / (labels + 1)``; regression: their mean label) because their
        training labels had one class or none, with the reason.
    tasks_not_calibrated_ : dict of int to str
        Tasks that keep the model's own probabilities, with the reason.
    calibration_fallbacks_ : dict of int to str
        Tasks calibrated on pooled out-of-fold scores instead of the calibration set.
    classes_ : ndarray
        ``array([0, 1])`` (classification).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((60, 5)); y = 3 * X[:, 0] + rng.normal(0, 0.1, 60)
    >>> model = MolecularModel("linear", coverage=0.8).fit(X, y)
    >>> lower, upper = model.predict_interval(X[:3])
    >>> bool(np.all(lower < model.predict(X[:3]))) and lower.shape == (3,)
    True
    >>> clf = MolecularModel("linear", task="classification").fit(X, (y > 1.5).astype(int))
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    >>> clf.predict_positive(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        estimator: str = "lightgbm",
        task: Task = "regression",
        params: Mapping[str, Any] | None = None,
        coverage: float = 0.9,
        calibration: Calibration = "auto",
        random_state: int | None = 0,
        n_jobs: int | None = 1,
    ) -> None:
        self.estimator = estimator
        self.task = task
        self.params = params
        self.coverage = coverage
        self.calibration = calibration
        self.random_state = random_state
        self.n_jobs = n_jobs

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.target_tags.required = True
        tags.target_tags.multi_output = True
        if self.task == "classification":
            tags.estimator_type = "classifier"
            # Binary only: each task's labels are 0/1 (NaN = missing).
            tags.classifier_tags = ClassifierTags(multi_class=False)
        else:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        return tags

    # ------------------------------------------------------------------ checks
    def _resolve(self) -> tuple[EstimatorSpec, dict[str, Any]]:
        """Check the configuration; return the estimator spec and its parameters."""
        if self.task not in ("regression", "classification"):
            raise ConfigError(f"unknown task {self.task!r}", "use 'regression' or 'classification'")
        if not isinstance(self.coverage, float | int) or not 0.0 < self.coverage < 1.0:
            raise ConfigError(
                f"coverage must be a number in (0, 1), got {self.coverage!r}",
                "pass e.g. coverage=0.9",
            )
        if self.calibration not in ("auto", "sigmoid", "isotonic", "none"):
            raise ConfigError(
                f"unknown calibration {self.calibration!r}",
                "use 'auto', 'sigmoid', 'isotonic' or 'none'",
            )
        if self.params is not None and not isinstance(self.params, Mapping):
            raise ConfigError(
                f"params must be a dict, got {type(self.params).__name__}",
                "pass e.g. params={'n_estimators': 300}",
            )
        spec = get_spec(self.estimator)
        if spec.check_installed is not None:
            spec.check_installed()
        resolved = spec.resolve_params(
            self.task, self.params, random_state=self.random_state, n_jobs=self.n_jobs
        )
        if (
            self.task == "classification"
            and self.calibration == "none"
            and not hasattr(spec.build(self.task, resolved), "predict_proba")
        ):
            raise ConfigError(
                f"estimator {self.estimator!r} gives no probabilities without calibration",
                "use calibration='auto' (or 'sigmoid'/'isotonic')",
            )
        return spec, resolved

    def _check_features(
        self, X: npt.ArrayLike, name: str = "X", n_features: int | None = None
    ) -> npt.NDArray[Any]:
        if get_spec(self.estimator).reads_for(self.params) == "smiles":
            smiles = as_smiles_column(X, name)
            return np.asarray(smiles, dtype=np.str_).reshape(len(smiles), 1)
        try:
            X_checked = check_array(
                X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan", input_name=name
            )
        except ValueError as exc:
            raise ModelInputError(
                f"{name} is not a usable feature matrix: {exc}",
                "give a 2-D numeric array; NaN is allowed, infinity is not",
            ) from exc
        if n_features is not None and X_checked.shape[1] != n_features:
            raise ModelInputError(
                f"{name} has {X_checked.shape[1]} features, but MolecularModel is expecting "
                f"{n_features} features as input",
                "featurize these molecules exactly as the training ones",
            )
        return np.asarray(X_checked)

    def _check_y(self, y: npt.ArrayLike, n_rows: int, name: str = "y") -> FloatArray:
        if y is None:
            raise ModelInputError(
                f"MolecularModel requires y to be passed, but the target {name} is None",
                "give one label (or row of labels) per molecule",
            )
        try:
            Y = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ModelInputError(
                f"{name} is not numeric: {exc}", "give numbers, NaN = missing"
            ) from exc
        if Y.ndim == 1:
            Y = Y[:, None]
        if Y.ndim != 2 or Y.shape[0] != n_rows:
            raise ModelInputError(
                f"{name} has shape {np.asarray(y).shape} but needs ({n_rows},) or "
                f"({n_rows}, n_tasks)",
                f"give one row of labels per row of {name.replace('y', 'X')}",
            )
        if np.isinf(Y).any():
            raise ModelInputError(f"{name} contains infinity", "remove or fix those labels")
        if name == "y" and np.isnan(Y).all():
            # One task without labels among others is not modelled (and said so); no
            # label at all is no data.
            raise ModelInputError("y has no labels (every value is NaN)", "give some labels")
        if self.task == "classification":
            labels = Y[~np.isnan(Y)]
            if not np.isin(labels, (0.0, 1.0)).all():
                raise ModelInputError(
                    f"{name} has labels other than 0 and 1: "
                    f"{sorted(set(np.unique(labels)) - {0.0, 1.0})[:5]}. "
                    "Only binary classification is supported",
                    "encode each classification task as 0/1 (NaN = missing), or use "
                    "task='regression' for a continuous target",
                )
        return Y

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        X_cal: npt.ArrayLike | None = None,
        y_cal: npt.ArrayLike | None = None,
    ) -> MolecularModel:
        """Fit one model per task; calibrate intervals or probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; NaN allowed.
        y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            Targets (regression) or 0/1 labels (classification); NaN marks a missing label.
        X_cal, y_cal : array-like, optional
            Held-out calibration set (give both or neither). Without it, 5-fold
            cross-validation on the training data is used.

        Returns
        -------
        MolecularModel
            This model, fitted.

        Raises
        ------
        ConfigError
            For an unknown estimator, task, calibration or parameter.
        ModelInputError
            For malformed X or y, or a task without labels (a DataError and ValueError).
        """
        spec, resolved = self._resolve()
        X_checked = self._check_features(X)
        Y = self._check_y(y, X_checked.shape[0])
        Y_ndim = np.asarray(y).ndim
        if (X_cal is None) != (y_cal is None):
            raise ConfigError(
                "only one of X_cal and y_cal was given", "pass both for a calibration set"
            )
        X_cal_checked: npt.NDArray[Any] | None = None
        Y_cal: FloatArray | None = None
        if X_cal is not None and y_cal is not None:
            X_cal_checked = self._check_features(X_cal, "X_cal", X_checked.shape[1])
            Y_cal = self._check_y(y_cal, X_cal_checked.shape[0], "y_cal")
            if Y_cal.shape[1] != Y.shape[1]:
                raise ModelInputError(
                    f"y_cal has {Y_cal.shape[1]} tasks but y has {Y.shape[1]}",
                    "give calibration labels for the same tasks",
                )

        self.estimators_: list[Any] = []
        self.base_estimators_: list[Any] = []
        self.n_train_per_task_: list[int] = []
        self.n_calibration_per_task_: list[int] = []
        self.calibration_methods_: list[str] = []
        self.interval_methods_: list[str] = []
        self.calibration_sources_: list[str] = []
        self.tasks_not_modelled_: dict[int, str] = {}
        self.tasks_not_calibrated_: dict[int, str] = {}
        self.calibration_fallbacks_: dict[int, str] = {}
        self.cv_plus_: list[_CVPlus | None] = []
        self.joint_ = spec.joint_tasks
        if spec.joint_tasks:
            cal_set = None if X_cal_checked is None or Y_cal is None else (X_cal_checked, Y_cal)
            quantiles = self._fit_joint(spec, resolved, X_checked, Y, cal_set)
        else:
            quantiles = self._fit_per_task(spec, resolved, X_checked, Y, X_cal_checked, Y_cal)

        self.params_ = resolved
        self.n_tasks_ = Y.shape[1]
        self.multi_output_ = Y_ndim == 2
        self.n_features_in_ = X_checked.shape[1]
        sources = set(self.calibration_sources_)
        self.calibration_source_ = sources.pop() if len(sources) == 1 else "per_task"
        if self.task == "regression":
            self.conformal_quantiles_ = np.asarray(quantiles, dtype=np.float64)
        else:
            self.classes_ = np.array([0, 1])
        self._warn_fallbacks()
        return self

    def _warn_fallbacks(self) -> None:
        """One warning per kind of fallback, not one per task (a ToxCast set has hundreds)."""
        for found, what in (
            (self.tasks_not_modelled_, "not modelled (a constant prior is predicted)"),
            (self.tasks_not_calibrated_, "not calibrated"),
        ):
            if not found:
                continue
            shown = "; ".join(f"task {t}: {reason}" for t, reason in list(found.items())[:3])
            more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
            warnings.warn(
                f"{len(found)} task(s) {what}: {shown}{more}; give more labelled molecules "
                "of each class (the full list is in metrics.json)",
                UserWarning,
                stacklevel=3,
            )

    def _not_modelled(self, t: int, reason: str, value: float) -> None:
        """Task `t` predicts a constant: a classifier's prior, a regressor's mean."""
        self.tasks_not_modelled_[t] = reason
        self.estimators_.append(_ConstantModel(value))
        self.base_estimators_.append(None)
        self.calibration_sources_.append("none")
        if self.task == "classification":
            self.calibration_methods_.append("none")
        self.cv_plus_.append(None)

    def _fit_per_task(
        self,
        spec: EstimatorSpec,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        Y: FloatArray,
        X_cal: npt.NDArray[Any] | None,
        Y_cal: FloatArray | None,
    ) -> list[float]:
        """Fit one model per task on its labelled rows; return the conformal half-widths.

        With ``n_jobs`` other than 1 and several tasks, tasks are fitted side by side in
        threads (the estimators release the GIL while they fit), each estimator on one
        thread: a sparse set of hundreds of small tasks is then parallel across tasks,
        not within each small fit. Every task's fit is independent and seeded alike, and
        its results are merged in task order, so the model is the same whatever ``n_jobs``.
        """
        workers = _task_workers(self.n_jobs, Y.shape[1])
        if workers > 1 and "n_jobs" in resolved:
            resolved = {**resolved, "n_jobs": 1}

        def fit_task(t: int) -> tuple[MolecularModel, float | None]:
            # Each task records into its own part, merged below in task order.
            part = self._task_part()
            rows = ~np.isnan(Y[:, t])
            X_t, y_t = X[rows], Y[rows, t]
            cal: tuple[npt.NDArray[Any], FloatArray] | None = None
            if X_cal is not None and Y_cal is not None:
                cal_rows = ~np.isnan(Y_cal[:, t])
                cal = (X_cal[cal_rows], Y_cal[cal_rows, t])
            part.n_train_per_task_.append(int(rows.sum()))
            if not rows.any():
                return part, part._fit_unlabelled_task(t, cal)
            if self.task == "regression":
                return part, part._fit_regression_task(t, spec, resolved, X_t, y_t, cal)
            part._fit_classification_task(t, spec, resolved, X_t, y_t, cal)
            return part, None

        quantiles: list[float] = []
        for part, quantile in _map_tasks(fit_task, range(Y.shape[1]), workers):
            self._merge_task_part(part)
            if quantile is not None:
                quantiles.append(quantile)
        return quantiles

    def _task_part(self) -> MolecularModel:
        """A copy of this model with empty per-task records, for one task's fit."""
        part = copy.copy(self)
        for name in _PER_TASK_LISTS:
            setattr(part, name, [])
        for name in _PER_TASK_DICTS:
            setattr(part, name, {})
        return part

    def _merge_task_part(self, part: MolecularModel) -> None:
        """Append what one task's fit recorded (see :meth:`_task_part`)."""
        for name in _PER_TASK_LISTS:
            getattr(self, name).extend(getattr(part, name))
        for name in _PER_TASK_DICTS:
            getattr(self, name).update(getattr(part, name))

    def _fit_unlabelled_task(
        self, t: int, cal: tuple[npt.NDArray[Any], FloatArray] | None
    ) -> float:
        """A task without training labels predicts what its calibration labels say."""
        seen = np.empty(0) if cal is None else cal[1]
        reason = f"no training labels ({len(seen)} in the calibration part)"
        if self.task == "classification":
            self._not_modelled(t, reason, _smoothed_prior(seen))
            self.n_calibration_per_task_.append(0)
            return math.inf
        mean = float(np.mean(seen)) if len(seen) else 0.0
        self._not_modelled(t, reason, mean)
        return self._conformal(t, np.abs(seen - mean), "not_modelled")

    def _fit_regression_task(
        self,
        t: int,
        spec: EstimatorSpec,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        y: FloatArray,
        cal: tuple[npt.NDArray[Any], FloatArray] | None,
    ) -> float:
        model = _fit_checked(spec.build(self.task, resolved), X, y)
        cv_plus: _CVPlus | None = None
        if cal is not None and len(cal[1]) >= MIN_SPLIT_CONFORMAL_POINTS:
            residuals = np.abs(cal[1] - model.predict(cal[0]))
            method = "split_conformal"
        else:
            # Every training (and calibration) row is scored by a fold model that did not
            # see it, so small data still gives enough residuals. Small sets keep the fold
            # models for CV+ intervals; large ones (cheap to calibrate, costly to carry
            # k models) use the cross-conformal quantile of the residuals.
            X_all, y_all = (X, y) if cal is None else _stack(X, y, cal)
            residuals = np.empty(0)
            method = "cross_conformal"
            if len(y_all) >= 2:
                folds = KFold(
                    min(_N_FOLDS, len(y_all)), shuffle=True, random_state=self.random_state
                )
                oof = np.empty(len(y_all))
                fold_of = np.empty(len(y_all), dtype=np.int64)
                fold_models = []
                for f, (fit_rows, held_out) in enumerate(folds.split(X_all)):
                    fold_model = _fit_checked(
                        spec.build(self.task, resolved), X_all[fit_rows], y_all[fit_rows]
                    )
                    oof[held_out] = fold_model.predict(X_all[held_out])
                    fold_of[held_out] = f
                    fold_models.append(fold_model)
                residuals = np.abs(y_all - oof)
                if len(y_all) <= CV_PLUS_MAX_POINTS:
                    cv_plus = _CVPlus(fold_models, residuals, fold_of)
                    method = "cv_plus"
        self.calibration_sources_.append(
            "calibration_set" if method == "split_conformal" else "cross_validation"
        )
        self.estimators_.append(model)
        self.base_estimators_.append(model)
        self.cv_plus_.append(cv_plus)
        return self._conformal(t, residuals, method)

    def _conformal(self, t: int, residuals: FloatArray, method: str) -> float:
        """The interval half-width for task `t` by `method`; finite whenever residuals exist.

        With fewer than ``1 / (1 - coverage) - 1`` residuals the conformal quantile is
        infinite; the largest residual is used instead (coverage then reaches at most
        ``n / (n + 1)``), stated as the method and in a warning. For CV+ the half-width is
        the cross-conformal one, a summary: the intervals come from the fold models.
        """
        quantile = conformal_quantile(residuals, float(self.coverage))
        if math.isinf(quantile) and len(residuals):
            quantile = float(np.max(residuals))
            method = f"{method}_max_residual"
            warnings.warn(
                f"task {t}: {len(residuals)} calibration residuals are too few for "
                f"coverage {self.coverage}; the interval is the largest residual, covering "
                f"at most {len(residuals) / (len(residuals) + 1):.2f}; give more data or "
                "lower coverage",
                UserWarning,
                stacklevel=4,
            )
        elif math.isinf(quantile):
            warnings.warn(
                f"task {t}: no calibration residuals, so its prediction intervals are "
                "unbounded; give more training data",
                UserWarning,
                stacklevel=4,
            )
        self.n_calibration_per_task_.append(len(residuals))
        self.interval_methods_.append(method)
        return quantile

    def _fit_joint(
        self,
        spec: EstimatorSpec,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        Y: FloatArray,
        cal: tuple[npt.NDArray[Any], FloatArray] | None,
    ) -> list[float]:
        """Fit one model for every task; calibrate each task on its labelled rows.

        The calibration set is also handed to the model as validation data (the D-MPNN
        picks its best epoch on it). Without one, 5-fold out-of-fold predictions are used.
        """
        # The joint network masks missing labels out of its loss, so a classification
        # task without training labels costs nothing: it is not modelled (its calibrator
        # predicts the smoothed prior). A regression task has no such fallback here.
        for t in range(Y.shape[1]):
            if self.task == "regression" and np.isnan(Y[:, t]).all():
                raise ModelInputError(
                    f"task {t} has no labels in the training part",
                    "drop that column of y, or use a per-task estimator such as lightgbm",
                )
        self.n_train_per_task_ = [int((~np.isnan(Y[:, t])).sum()) for t in range(Y.shape[1])]
        validation = {} if cal is None else {"X_val": cal[0], "y_val": cal[1]}
        model = _fit_checked(spec.build(self.task, resolved), X, Y, **validation)
        self.estimators_ = [model]
        self.base_estimators_ = [model]
        if cal is not None and _enough_to_calibrate(self.task, cal[1]):
            scores, truth = model.predict_tasks(cal[0])[0], cal[1]
            method, source = "split_conformal", "calibration_set"
        else:
            X_all, Y_all = (X, Y) if cal is None else _stack(X, Y, cal)
            scores, truth = self._joint_out_of_fold(spec, resolved, X_all, Y_all), Y_all
            method, source = "cross_conformal", "cross_validation"
        quantiles: list[float] = []
        self.calibrators_: list[_ScoreCalibrator] = []
        for t in range(Y.shape[1]):
            usable = ~np.isnan(truth[:, t]) & ~np.isnan(scores[:, t])
            self.calibration_sources_.append(source)
            self.cv_plus_.append(None)
            if self.task == "regression":
                residuals = np.abs(truth[usable, t] - scores[usable, t])
                quantiles.append(self._conformal(t, residuals, method))
            else:
                self._add_task_calibrator(t, Y[:, t], scores[usable, t], truth[usable, t])
        return quantiles

    def _joint_out_of_fold(
        self, spec: EstimatorSpec, resolved: dict[str, Any], X: npt.NDArray[Any], Y: FloatArray
    ) -> FloatArray:
        scores = np.full(Y.shape, np.nan)
        if len(Y) < 2:
            return scores
        folds = KFold(min(_N_FOLDS, len(Y)), shuffle=True, random_state=self.random_state)
        for train, held_out in folds.split(X):
            if np.isnan(Y[train]).all(axis=0).any():
                continue
            model = _fit_checked(clone(spec.build(self.task, resolved)), X[train], Y[train])
            scores[held_out] = model.predict_tasks(X[held_out])[0]
        return scores

    def _add_task_calibrator(
        self, t: int, train: FloatArray, scores: FloatArray, truth: FloatArray
    ) -> None:
        counts = np.bincount(train[~np.isnan(train)].astype(np.int64), minlength=2)
        if counts.min() == 0:
            self.tasks_not_modelled_[t] = _single_class_reason(counts)
            prior = _smoothed_prior(np.concatenate([train[~np.isnan(train)], truth]))
            calibrator, n_cal = _ScoreCalibrator("constant", prior), 0
        elif self.calibration == "none":
            calibrator, n_cal = _ScoreCalibrator("none"), 0
        elif len(np.unique(truth)) == 2:
            method = self._calibration_method(len(truth))
            calibrator, n_cal = _ScoreCalibrator(method).fit(scores, truth), len(truth)
            if calibrator.reverses_ranking():
                self._uncalibrated(t, _REVERSED)
                calibrator, n_cal = _ScoreCalibrator("none"), 0
        else:
            self._uncalibrated(t, "its calibration labels have a single class")
            calibrator, n_cal = _ScoreCalibrator("none"), 0
        self.calibrators_.append(calibrator)
        self.calibration_methods_.append(calibrator.method)
        self.n_calibration_per_task_.append(n_cal)

    def _calibration_method(self, n_points: int) -> str:
        if self.calibration != "auto":
            return str(self.calibration)
        return "sigmoid" if n_points < _ISOTONIC_MIN_POINTS else "isotonic"

    def _fit_classification_task(
        self,
        t: int,
        spec: EstimatorSpec,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        y: FloatArray,
        cal: tuple[npt.NDArray[Any], FloatArray] | None,
    ) -> None:
        labels = y.astype(np.int64)
        counts = np.bincount(labels, minlength=2)
        if counts.min() == 0:
            seen = y if cal is None else np.concatenate([y, cal[1]])
            self._not_modelled(t, _single_class_reason(counts), _smoothed_prior(seen))
            self.n_calibration_per_task_.append(0)
            return

        if self.calibration == "none":
            model = _fit_checked(spec.build(self.task, resolved), X, labels)
            self._add_classifier(model, model, "none", 0)
            self.calibration_sources_.append("none")
            return

        if cal is not None:
            cal_counts = np.bincount(cal[1].astype(np.int64), minlength=2)
            if cal_counts.min() < MIN_CALIBRATION_PER_CLASS:
                rarer = "positives" if cal_counts[1] <= cal_counts[0] else "negatives"
                self.calibration_fallbacks_[t] = (
                    f"{int(cal_counts.min())} {rarer} in the calibration part (need "
                    f"{MIN_CALIBRATION_PER_CLASS}): calibrated on out-of-fold scores of the "
                    "training and calibration parts together"
                )
                self._fit_pooled_calibration(t, spec, resolved, X, y, cal)
                return
            self.calibration_sources_.append("calibration_set")
            model = _fit_checked(spec.build(self.task, resolved), X, labels)
            X_c, y_c = cal[0], cal[1].astype(np.int64)
            method = self._calibration_method(len(y_c))
            if method == "isotonic":
                scores = _positive_score(model, X_c)
                self._add_score_calibrator(t, model, X, labels, scores, cal[1], method)
                return
            calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method)
            calibrated.fit(X_c, y_c)
            if not _reverses_ranking(calibrated):
                self._add_classifier(calibrated, model, method, len(y_c))
                return
            self._uncalibrated(t, _REVERSED)
            self._add_uncalibrated(model, X, labels)
            return

        self.calibration_sources_.append("cross_validation")
        n_splits = min(_N_FOLDS, int(counts.min()))
        if n_splits < 2:
            self._uncalibrated(
                t, f"{int(counts.min())} training label(s) of a class (need 2 for 2 folds)"
            )
            model = _fit_checked(spec.build(self.task, resolved), X, labels)
            self._add_uncalibrated(model, X, labels)
            return
        method = self._calibration_method(len(labels))
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        if method == "isotonic":
            # As CalibratedClassifierCV(ensemble=False): out-of-fold scores calibrate one
            # model refitted on every row; the map is the tie-free isotonic one.
            scores = self._out_of_fold_scores(spec, resolved, X, labels, folds)
            model = _fit_checked(spec.build(self.task, resolved), X, labels)
            self._add_score_calibrator(t, model, X, labels, scores, y, method)
            return
        calibrated = CalibratedClassifierCV(
            spec.build(self.task, resolved), method=method, cv=folds, ensemble=False
        )
        calibrated = _fit_checked(calibrated, X, labels)
        base = calibrated.calibrated_classifiers_[0].estimator
        if _reverses_ranking(calibrated):
            self._uncalibrated(t, _REVERSED)
            self._add_uncalibrated(base, X, labels)
            return
        self._add_classifier(calibrated, base, method, len(labels))

    def _out_of_fold_scores(
        self,
        spec: EstimatorSpec,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        labels: npt.NDArray[np.int64],
        folds: StratifiedKFold,
    ) -> FloatArray:
        scores = np.empty(len(labels))
        for fit_rows, held_out in folds.split(X, labels):
            fold_model = _fit_checked(
                spec.build(self.task, resolved), X[fit_rows], labels[fit_rows]
            )
            scores[held_out] = _positive_score(fold_model, X[held_out])
        return scores

    def _add_score_calibrator(
        self,
        t: int,
        model: Any,
        X: npt.NDArray[Any],
        labels: npt.NDArray[np.int64],
        scores: FloatArray,
        truth: FloatArray,
        method: str,
    ) -> None:
        """Calibrate `model` by a map fitted on (`scores`, `truth`), unless it would reverse."""
        calibrator = _ScoreCalibrator(method).fit(scores, truth)
        if calibrator.reverses_ranking():
            self._uncalibrated(t, _REVERSED)
            self._add_uncalibrated(model, X, labels)
            return
        self._add_classifier(_CalibratedScores(model, calibrator), model, method, len(truth))

    def _fit_pooled_calibration(
        self,
        t: int,
        spec: EstimatorSpec,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        y: FloatArray,
        cal: tuple[npt.NDArray[Any], FloatArray],
    ) -> None:
        """Calibrate on out-of-fold scores of the training and calibration rows together.

        For a calibration set with too few labels of a class to fit a calibrator on. The
        model that predicts is still fitted on the training rows alone and the map is
        Platt scaling (``"auto"``), which is monotone: the model's ranking, and so its
        ROC-AUC, is what it would have been with a larger calibration set.
        """
        labels = y.astype(np.int64)
        model = _fit_checked(spec.build(self.task, resolved), X, labels)
        self.calibration_sources_.append("cross_validation")
        X_all, y_all = _stack(X, y, cal)
        pooled = y_all.astype(np.int64)
        fewest = int(np.bincount(pooled, minlength=2).min())
        n_splits = min(_N_FOLDS, fewest)
        if not hasattr(model, "predict_proba") or n_splits < 2:
            self._uncalibrated(
                t,
                f"{fewest} label(s) of a class in the training and calibration parts "
                "together (need 2 to calibrate by cross-validation)",
            )
            self._add_uncalibrated(model, X, labels)
            return
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        scores = cross_val_predict(
            spec.build(self.task, resolved), X_all, pooled, cv=folds, method="predict_proba"
        )[:, 1]
        method = "sigmoid" if self.calibration == "auto" else str(self.calibration)
        self._add_score_calibrator(
            t, model, X, labels, np.asarray(scores, dtype=np.float64), y_all, method
        )

    def _add_classifier(self, model: Any, base: Any, method: str, n_cal: int) -> None:
        self.estimators_.append(model)
        self.base_estimators_.append(base)
        self.calibration_methods_.append(method)
        self.n_calibration_per_task_.append(n_cal)
        self.cv_plus_.append(None)

    def _add_uncalibrated(self, model: Any, X: npt.NDArray[Any], labels: npt.NDArray[Any]) -> None:
        if hasattr(model, "predict_proba"):
            self._add_classifier(model, model, "none", 0)
            return
        # Models without probabilities (SVC) get Platt scaling on their training scores:
        # optimistic, but the only data there is.
        in_sample = CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid")
        self._add_classifier(in_sample.fit(X, labels), model, "sigmoid-in-sample", len(labels))

    def _uncalibrated(self, t: int, reason: str) -> None:
        """Record why task `t` keeps the model's own probabilities (warned after fit)."""
        self.tasks_not_calibrated_[t] = reason

    # ------------------------------------------------------------------ prediction
    def _shape(self, columns: FloatArray) -> FloatArray:
        return columns if self.multi_output_ else columns[:, 0]

    def _is_regression(self) -> bool:
        return self.task == "regression"

    def _is_classification(self) -> bool:
        return self.task == "classification"

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[Any]:
        """Return predicted values (regression) or 0/1 labels (classification).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; NaN allowed.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_tasks)
            Shape follows the ``y`` given to ``fit``. Labels are 1 where the positive
            class probability is at least 0.5.
        """
        check_is_fitted(self, "estimators_")
        if self.task == "classification":
            return np.asarray(self.predict_positive(X) >= 0.5, dtype=np.int64)
        X_checked = self._check_features(X, n_features=self.n_features_in_)
        if getattr(self, "joint_", False):
            return self._shape(self.estimators_[0].predict_tasks(X_checked)[0])
        columns = np.column_stack(
            self._per_estimator(lambda m: m.predict(X_checked), len(X_checked))
        )
        return self._shape(columns.astype(np.float64))

    def _is_ensemble(self) -> bool:
        return hasattr(get_spec(self.estimator).regressor, "predict_tasks")

    @available_if(_is_ensemble)  # type: ignore[untyped-decorator]
    def predict_spread(self, X: npt.ArrayLike) -> FloatArray:
        """Return the spread (standard deviation) of the ensemble's networks, per task.

        Regression: in the units of ``y``; classification: of the uncalibrated
        probabilities. Zero with ``ensemble_size=1``. A measure of model uncertainty,
        beside the conformal intervals.
        """
        check_is_fitted(self, "estimators_")
        X_checked = self._check_features(X, n_features=self.n_features_in_)
        return self._shape(self.estimators_[0].predict_tasks(X_checked)[1])

    @available_if(_is_ensemble)  # type: ignore[untyped-decorator]
    def predict_with_spread(self, X: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Return ``(values, spread)`` in one pass over the ensemble's members.

        ``values`` is :meth:`predict` (regression) or :meth:`predict_positive`
        (classification); ``spread`` is :meth:`predict_spread`.
        """
        check_is_fitted(self, "estimators_")
        X_checked = self._check_features(X, n_features=self.n_features_in_)
        raw, spread = self.estimators_[0].predict_tasks(X_checked)
        values = self._calibrated(raw) if self.task == "classification" else raw
        return self._shape(np.asarray(values, dtype=np.float64)), self._shape(spread)

    def _calibrated(self, raw: FloatArray) -> FloatArray:
        """A joint model's raw per-task probabilities through each task's calibrator."""
        columns = np.column_stack([c.transform(raw[:, t]) for t, c in enumerate(self.calibrators_)])
        return np.clip(columns, 0.0, 1.0)

    @available_if(_is_regression)  # type: ignore[untyped-decorator]
    def predict_interval(self, X: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Return the conformal prediction interval ``(lower, upper)`` at `coverage`.

        Split-conformal and cross-conformal tasks: the prediction plus or minus the task's
        half-width. CV+ tasks: from the fold models (Barber et al. 2021), widened where
        needed to contain the prediction of the final model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; NaN allowed.

        Returns
        -------
        lower, upper : ndarray of shape (n_samples,) or (n_samples, n_tasks)
            Interval bounds; ``-inf``/``inf`` for a task with too few calibration points.
        """
        _, lower, upper = self.predict_with_interval(X)
        return lower, upper

    @available_if(_is_regression)  # type: ignore[untyped-decorator]
    def predict_with_interval(self, X: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Return ``(prediction, lower, upper)``: :meth:`predict` and :meth:`predict_interval`
        in one pass over the model."""
        prediction = np.asarray(self.predict(X), dtype=np.float64)
        columns = prediction.reshape(len(prediction), -1)
        half_width = self.conformal_quantiles_
        lower, upper = columns - half_width, columns + half_width
        cv_plus = getattr(self, "cv_plus_", [])
        if any(c is not None for c in cv_plus):
            X_checked = self._check_features(X, n_features=self.n_features_in_)
            for t, intervals in enumerate(cv_plus):
                if intervals is not None:
                    low, high = intervals.interval(X_checked, float(self.coverage))
                    lower[:, t] = np.minimum(low, columns[:, t])
                    upper[:, t] = np.maximum(high, columns[:, t])
        return prediction, self._shape(lower), self._shape(upper)

    @available_if(_is_regression)  # type: ignore[untyped-decorator]
    def interval_around(self, prediction: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Return ``(lower, upper)`` around predictions already made by :meth:`predict`.

        The same as :meth:`predict_interval` without predicting a second time; not for a
        model with CV+ intervals, which need the features (use :meth:`predict_with_interval`).
        """
        if any(c is not None for c in getattr(self, "cv_plus_", [])):
            raise ModelError(
                "CV+ intervals come from the fold models and need the features",
                "call predict_with_interval(X) or predict_interval(X)",
            )
        values = np.asarray(prediction, dtype=float)
        half_width = (
            self.conformal_quantiles_ if self.multi_output_ else self.conformal_quantiles_[0]
        )
        return values - half_width, values + half_width

    @available_if(_is_classification)  # type: ignore[untyped-decorator]
    def predict_proba(self, X: npt.ArrayLike) -> FloatArray | list[FloatArray]:
        """Return calibrated class probabilities, as scikit-learn's classifiers do.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; NaN allowed.

        Returns
        -------
        ndarray of shape (n_samples, 2), or list of such arrays
            Columns in the order of ``classes_`` (``[0, 1]``), each row summing to 1.
            When ``y`` was 2-D (multi-task), one array per task, the shape of
            scikit-learn's multi-output classifiers (e.g. ``RandomForestClassifier``).
            :meth:`predict_positive` gives the positive column(s) alone.
        """
        positive = self.predict_positive(X)
        if not self.multi_output_:
            return np.column_stack([1.0 - positive, positive])
        return [np.column_stack([1.0 - p, p]) for p in positive.T]

    @available_if(_is_classification)  # type: ignore[untyped-decorator]
    def predict_positive(self, X: npt.ArrayLike) -> FloatArray:
        """Return the calibrated probability of the positive class (label 1), per task.

        Column 1 of :meth:`predict_proba`, for every task at once: the score QeMLflow
        ranks, thresholds and reports as ``probability``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features; NaN allowed.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_tasks)
            Probabilities in [0, 1]; the shape follows the ``y`` given to ``fit``.
        """
        check_is_fitted(self, "estimators_")
        X_checked = self._check_features(X, n_features=self.n_features_in_)
        if getattr(self, "joint_", False):
            return self._shape(self._calibrated(self.estimators_[0].predict_tasks(X_checked)[0]))
        columns = np.column_stack(
            self._per_estimator(lambda m: m.predict_proba(X_checked)[:, 1], len(X_checked))
        )
        return self._shape(np.clip(columns.astype(np.float64), 0.0, 1.0))

    def _per_estimator(self, work: Callable[[Any], FloatArray], rows: int) -> list[FloatArray]:
        """``work`` on each task's estimator, across ``n_jobs`` threads for several tasks
        and a batch large enough to pay for them (a served molecule stays on one)."""
        workers = _task_workers(self.n_jobs, len(self.estimators_))
        return _map_tasks(work, self.estimators_, workers if rows >= _THREADED_MIN_ROWS else 1)

    def score(self, X: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """Return R² (regression) or accuracy (classification), averaged over tasks.

        Missing labels (NaN) are skipped.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.
        y : array-like of shape (n_samples,) or (n_samples, n_tasks)
            True targets or labels.

        Returns
        -------
        float
            The mean score over tasks.
        """
        from sklearn.metrics import accuracy_score, r2_score

        Y = np.asarray(y, dtype=np.float64).reshape(len(np.asarray(y)), -1)
        P = np.asarray(self.predict(X), dtype=np.float64).reshape(Y.shape)
        metric = r2_score if self.task == "regression" else accuracy_score
        scores = [
            float(metric(Y[~np.isnan(Y[:, t]), t], P[~np.isnan(Y[:, t]), t]))
            for t in range(Y.shape[1])
        ]
        return float(np.mean(scores))

    # ------------------------------------------------------------------ reporting
    @property
    def feature_importances_(self) -> FloatArray:
        """Feature importances of the underlying model, each task's summing to 1, averaged.

        Raises ``AttributeError`` when the underlying model has none (knn, svm, linear).
        """
        check_is_fitted(self, "estimators_")
        per_task = []
        for base in self.base_estimators_:
            importances = getattr(_final_step(base), "feature_importances_", None)
            if base is None or importances is None:
                continue
            values = np.asarray(importances, dtype=np.float64)
            total = values.sum()
            per_task.append(values / total if total > 0 else values)
        if not per_task:
            raise AttributeError(f"estimator {self.estimator!r} has no feature_importances_")
        return np.asarray(np.mean(per_task, axis=0), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        """Return a JSON-compatible record of what this model is and how it was fitted.

        Infinite conformal quantiles are written as ``None``.

        Returns
        -------
        dict
            Estimator name, task, parameters used, coverage or calibration, per-task
            counts and quantiles, seed, and library versions.

        Examples
        --------
        >>> record = MolecularModel("linear").describe()
        >>> record["estimator"], record["fitted"]
        ('linear', False)
        """
        spec, resolved = self._resolve()
        fitted = hasattr(self, "estimators_")
        record: dict[str, Any] = {
            "estimator": spec.name,
            "model_class": spec.model_class(self.task).__name__,
            "task": self.task,
            "params": resolved,
            "preprocessing": spec.preprocessing,
            "random_state": self.random_state,
            "n_jobs": self.n_jobs,
            "fitted": fitted,
            "versions": {
                "qemlflow": __version__,
                "scikit-learn": sklearn.__version__,
                "lightgbm": lightgbm.__version__,
                "numpy": np.__version__,
                **_optional_versions(spec),
            },
        }
        if self.task == "regression":
            record["coverage"] = self.coverage
        else:
            record["calibration"] = self.calibration
        if fitted:
            record.update(
                n_tasks=self.n_tasks_,
                n_features=self.n_features_in_,
                n_train_per_task=self.n_train_per_task_,
                n_calibration_per_task=self.n_calibration_per_task_,
                calibration_source=self.calibration_source_,
                calibration_sources=self.calibration_sources_,
                tasks_not_modelled=getattr(self, "tasks_not_modelled_", {}),
                tasks_not_calibrated=getattr(self, "tasks_not_calibrated_", {}),
                calibration_fallbacks=getattr(self, "calibration_fallbacks_", {}),
            )
            if self.task == "regression":
                record["conformal_quantiles"] = self.conformal_quantiles_.tolist()
                record["interval_methods"] = self.interval_methods_
            else:
                record["calibration_methods"] = self.calibration_methods_
        safe: dict[str, Any] = _json_safe(record)
        return safe


def _optional_versions(spec: EstimatorSpec) -> dict[str, str]:
    """Versions of the optional packages a model needs (read without importing them)."""
    if spec.check_installed is None:
        return {}
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "chemprop"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def make_model(
    estimator: str,
    task: Task,
    *,
    params: Mapping[str, Any] | None = None,
    coverage: float = 0.9,
    calibration: Calibration = "auto",
    random_state: int | None = 0,
    n_jobs: int | None = 1,
) -> MolecularModel:
    """Return an unfitted MolecularModel, checking the configuration now.

    Unlike the constructor (which, as in scikit-learn, does no work), this raises a
    ConfigError for an unknown estimator or parameter straight away.

    Parameters
    ----------
    estimator : str
        A key of ``ESTIMATORS``.
    task : {"regression", "classification"}
        What the labels are.
    params : dict or None, default=None
        Passed to the underlying estimator.
    coverage : float, default=0.9
        Target coverage of regression intervals.
    calibration : {"auto", "sigmoid", "isotonic", "none"}, default="auto"
        How classifier probabilities are calibrated.
    random_state : int or None, default=0
        Seed.
    n_jobs : int or None, default=1
        Threads.

    Returns
    -------
    MolecularModel
        The unfitted model.

    Examples
    --------
    >>> make_model("random_forest", "classification", params={"n_estimators": 50})
    MolecularModel(estimator='random_forest', params={'n_estimators': 50},
                   task='classification')
    """
    model = MolecularModel(
        estimator=estimator,
        task=task,
        params=params,
        coverage=coverage,
        calibration=calibration,
        random_state=random_state,
        n_jobs=n_jobs,
    )
    model._resolve()
    return model
