"""The estimators QeMLflow can train, with their defaults and input preprocessing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import SVC, SVR

from qemlflow.errors import ConfigError
from qemlflow.models.dmpnn import DMPNN, dmpnn_runtime, require_gnn
from qemlflow.models.ensemble import (
    Ensemble,
    check_ensemble_params,
    ensemble_libraries,
    ensemble_reads,
    ensemble_runtime,
)
from qemlflow.models.forests import (
    OrderedExtraTreesClassifier,
    OrderedExtraTreesRegressor,
    OrderedRandomForestClassifier,
    OrderedRandomForestRegressor,
)
from qemlflow.models.tanimoto import TanimotoKNN

__all__ = ["ESTIMATORS", "MODEL_LIBRARIES", "EstimatorSpec", "Task", "get_spec"]

Task = Literal["regression", "classification"]
Preprocessing = Literal["none", "impute", "impute_scale", "impute_minmax"]
Reads = Literal["features", "smiles"]

MODEL_LIBRARIES = ("lightgbm", "numpy", "rdkit", "scikit-learn", "scipy")
"""What every model's fit and prediction depends on: MolecularModel (conformal intervals,
calibration: NumPy, SciPy, scikit-learn), this registry, which imports both classical
back ends (scikit-learn, LightGBM) whichever one is chosen, and RDKit, which the model
file's featurizer (and the D-MPNN) use. Naming RDKit costs no cache hit: the features a
model is fitted on are keyed with RDKit's version already."""

# Parameters MolecularModel sets itself, so that the seed and threads are recorded once.
_MANAGED = ("random_state", "n_jobs", "task")


def _lightgbm_native_names() -> frozenset[str]:
    """Every LightGBM parameter name and alias (they pass through **kwargs)."""
    try:
        from lightgbm.basic import _ConfigAliases

        aliases: dict[str, list[str]] = _ConfigAliases._get_all_param_aliases()
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return frozenset()
    names = set(aliases)
    for group in aliases.values():
        names.update(group)
    return frozenset(names)


_TREES = {"n_estimators": 500, "min_samples_leaf": 1}
_LIGHTGBM = {
    "n_estimators": 1500,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_child_samples": 5,
    "colsample_bytree": 0.4,
    "subsample": 0.8,
    "subsample_freq": 1,
    "reg_lambda": 1.0,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}


@dataclass(frozen=True)
class EstimatorSpec:
    """How to build one named estimator for either task.

    Parameters
    ----------
    name : str
        Registry key, e.g. ``"lightgbm"``.
    regressor, classifier : type
        scikit-learn compatible classes for each task.
    regression_defaults, classification_defaults : Mapping
        Defaults, overridden by the user's ``params``.
    preprocessing : {"none", "impute", "impute_scale", "impute_minmax"}
        What goes in front of the model: nothing (NaN handled natively), median
        imputation, imputation plus standardization, or imputation plus min-max scaling
        to [0, 1] (keeps features non-negative for Tanimoto).
    native_params : frozenset of str
        Extra parameter names the model accepts through ``**kwargs``.
    managed_aliases : frozenset of str
        Other spellings of the seed/thread parameters, refused in ``params``.
    takes_n_jobs : bool
        Whether ``n_jobs`` is passed on (some classes deprecate it).
    reads : {"features", "smiles"}
        What the model takes as ``X``: a numeric feature matrix, or the (n, 1) SMILES
        column of the ``smiles`` featurizer (graph models).
    joint_tasks : bool
        One model predicts every task at once (missing labels masked in its loss),
        instead of one model per task.
    check_installed : callable or None
        Raises ConfigError when an optional package the model needs is missing.
    libraries : tuple of str
        The distributions whose versions can change a fitted model or its predictions,
        beyond what every model uses (``MODEL_LIBRARIES``); the fit and predict step
        keys name their union (tests/test_key_completeness.py checks the list).
    runtime : callable or None
        ``runtime(resolved_params, n_jobs) -> {name: value}``: settings outside the
        parameters that change the bits (the D-MPNN's device and CPU threads); they go
        into the step keys next to the library versions.
    reads_of : callable or None
        ``reads_of(params) -> "features" | "smiles"`` when what the model reads depends
        on its parameters (an ensemble with a graph member reads SMILES); else ``reads``.
    libraries_of : callable or None
        ``libraries_of(params) -> names``: libraries that depend on the parameters (an
        ensemble's members), added to ``libraries``.
    check_params : callable or None
        ``check_params(task, resolved_params)`` raises ConfigError for parameters that
        the names alone do not validate (an ensemble's members).

    Examples
    --------
    >>> spec = ESTIMATORS["linear"]
    >>> spec.resolve_params("classification", {"C": 0.5}, random_state=0, n_jobs=1)["C"]
    0.5
    """

    name: str
    regressor: type[Any]
    classifier: type[Any]
    regression_defaults: Mapping[str, Any]
    classification_defaults: Mapping[str, Any]
    preprocessing: Preprocessing
    native_params: frozenset[str] = field(default_factory=frozenset)
    managed_aliases: frozenset[str] = field(default_factory=frozenset)
    takes_n_jobs: bool = True
    reads: Reads = "features"
    joint_tasks: bool = False
    check_installed: Callable[[], None] | None = None
    libraries: tuple[str, ...] = ()
    runtime: Callable[[Mapping[str, Any], int | None], dict[str, str]] | None = None
    reads_of: Callable[[Mapping[str, Any] | None], str] | None = None
    libraries_of: Callable[[Mapping[str, Any] | None], tuple[str, ...]] | None = None
    check_params: Callable[[str, Mapping[str, Any]], None] | None = None

    def reads_for(self, params: Mapping[str, Any] | None) -> str:
        """What the model built with ``params`` takes as ``X``: features or smiles."""
        return self.reads if self.reads_of is None else self.reads_of(params)

    def required_libraries_for(self, params: Mapping[str, Any] | None) -> tuple[str, ...]:
        """:meth:`required_libraries`, with those its ``params`` add (an ensemble's)."""
        if self.libraries_of is None:
            return self.required_libraries()
        return tuple(sorted({*self.required_libraries(), *self.libraries_of(params)}))

    def required_libraries(self) -> tuple[str, ...]:
        """Return every distribution a fit or prediction of this estimator depends on.

        Examples
        --------
        >>> get_spec("random_forest").required_libraries()
        ('lightgbm', 'numpy', 'rdkit', 'scikit-learn', 'scipy')
        """
        return tuple(sorted({*MODEL_LIBRARIES, *self.libraries}))

    def model_class(self, task: Task) -> type[Any]:
        """Return the class used for `task`."""
        return self.regressor if task == "regression" else self.classifier

    def accepted_params(self, task: Task) -> frozenset[str]:
        """Return the parameter names a user may pass in ``params``."""
        names = set(self.model_class(task)._get_param_names()) | self.native_params
        managed = set(_MANAGED) | self.managed_aliases
        return frozenset(names - managed)

    def resolve_params(
        self,
        task: Task,
        params: Mapping[str, Any] | None,
        *,
        random_state: int | None,
        n_jobs: int | None,
    ) -> dict[str, Any]:
        """Merge defaults, user `params` and the managed seed/threads; check the names.

        Raises
        ------
        ConfigError
            If a parameter is unknown to the estimator or is one MolecularModel manages.
        """
        params = dict(params or {})
        managed = set(_MANAGED) | self.managed_aliases
        for key in params:
            if key in managed:
                raise ConfigError(
                    f"parameter {key!r} cannot go in params for estimator {self.name!r}",
                    f"set it on MolecularModel itself (e.g. MolecularModel({key}=...))"
                    if key in ("random_state", "n_jobs")
                    else "MolecularModel sets it from its own arguments",
                )
        unknown = sorted(set(params) - self.accepted_params(task))
        if unknown:
            listed = sorted(self.accepted_params(task) - self.native_params)
            more = f" (or any native {self.name} parameter)" if self.native_params else ""
            raise ConfigError(
                f"unknown parameter(s) {', '.join(map(repr, unknown))} for estimator "
                f"{self.name!r} ({self.model_class(task).__name__})",
                f"use one of: {', '.join(listed)}{more}",
            )
        defaults = (
            self.regression_defaults if task == "regression" else self.classification_defaults
        )
        resolved = {**defaults, **params}
        accepted = set(self.model_class(task)._get_param_names())
        if "random_state" in accepted:
            resolved["random_state"] = random_state
        if "n_jobs" in accepted and self.takes_n_jobs:
            resolved["n_jobs"] = n_jobs
        if "task" in accepted:
            resolved["task"] = task
        if self.check_params is not None:
            self.check_params(task, resolved)
        return resolved

    def build(self, task: Task, resolved_params: Mapping[str, Any]) -> Any:
        """Return an unfitted model (a Pipeline when preprocessing is needed)."""
        model = self.model_class(task)(**resolved_params)
        if self.preprocessing == "none":
            return model
        # keep_empty_features keeps all-NaN columns (as zeros) so shapes never change.
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
        ]
        if self.preprocessing == "impute_scale":
            steps.append(("scale", StandardScaler()))
        elif self.preprocessing == "impute_minmax":
            steps.append(("scale", MinMaxScaler(clip=True)))
        steps.append(("model", model))
        return Pipeline(steps)


ESTIMATORS: dict[str, EstimatorSpec] = {
    "random_forest": EstimatorSpec(
        name="random_forest",
        regressor=OrderedRandomForestRegressor,
        classifier=OrderedRandomForestClassifier,
        regression_defaults={**_TREES, "max_features": 0.33},
        classification_defaults={**_TREES, "max_features": "sqrt"},
        preprocessing="none",
    ),
    "extra_trees": EstimatorSpec(
        name="extra_trees",
        regressor=OrderedExtraTreesRegressor,
        classifier=OrderedExtraTreesClassifier,
        regression_defaults={**_TREES, "max_features": 0.33},
        classification_defaults={**_TREES, "max_features": "sqrt"},
        preprocessing="none",
    ),
    "lightgbm": EstimatorSpec(
        name="lightgbm",
        regressor=LGBMRegressor,
        classifier=LGBMClassifier,
        regression_defaults=_LIGHTGBM,
        classification_defaults=_LIGHTGBM,
        preprocessing="none",
        native_params=_lightgbm_native_names(),
        managed_aliases=frozenset(
            {"seed", "random_seed", "num_threads", "nthread", "nthreads", "num_thread"}
        ),
    ),
    "knn": EstimatorSpec(
        name="knn",
        regressor=TanimotoKNN,
        classifier=TanimotoKNN,
        regression_defaults={"n_neighbors": 5, "weights": "distance"},
        classification_defaults={"n_neighbors": 5, "weights": "distance"},
        preprocessing="impute_minmax",
    ),
    "svm": EstimatorSpec(
        name="svm",
        regressor=SVR,
        classifier=SVC,
        regression_defaults={"C": 10.0, "epsilon": 0.1, "kernel": "rbf", "gamma": "scale"},
        classification_defaults={"C": 1.0, "kernel": "rbf", "gamma": "scale"},
        preprocessing="impute_scale",
    ),
    "linear": EstimatorSpec(
        name="linear",
        regressor=RidgeCV,
        classifier=LogisticRegression,
        regression_defaults={"alphas": (0.1, 1.0, 10.0, 100.0, 1000.0)},
        classification_defaults={"C": 0.1, "max_iter": 2000},
        preprocessing="impute_scale",
        # LogisticRegression ignores n_jobs since scikit-learn 1.8 and warns about it.
        takes_n_jobs=False,
    ),
    "dmpnn": EstimatorSpec(
        name="dmpnn",
        regressor=DMPNN,
        classifier=DMPNN,
        regression_defaults={},
        classification_defaults={},
        preprocessing="none",
        reads="smiles",
        joint_tasks=True,
        check_installed=require_gnn,
        # chemprop builds the graphs with RDKit (in MODEL_LIBRARIES, as the rdkit2d
        # descriptors); chemprop's models are lightning modules.
        libraries=("chemprop", "lightning", "torch"),
        runtime=dmpnn_runtime,
    ),
    # Members and combine come from the experiment's model section (ModelConfig); every
    # member is checked as its own estimator when the ensemble's parameters are resolved.
    "ensemble": EstimatorSpec(
        name="ensemble",
        regressor=Ensemble,
        classifier=Ensemble,
        regression_defaults={"combine": "mean", "folds": 5},
        classification_defaults={"combine": "mean", "folds": 5},
        preprocessing="none",
        joint_tasks=True,
        runtime=ensemble_runtime,
        reads_of=ensemble_reads,
        libraries_of=ensemble_libraries,
        check_params=check_ensemble_params,
    ),
}


def get_spec(name: str) -> EstimatorSpec:
    """Return the registered estimator called `name`.

    Raises
    ------
    ConfigError
        If `name` is not registered; the message lists the allowed names.

    Examples
    --------
    >>> get_spec("lightgbm").name
    'lightgbm'
    """
    try:
        return ESTIMATORS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown estimator {name!r}",
            f"choose one of: {', '.join(sorted(ESTIMATORS))}",
        ) from None
