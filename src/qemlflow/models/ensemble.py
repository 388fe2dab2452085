"""Ensembles of registered estimators: averaged or stacked, their spread an uncertainty.

An :class:`Ensemble` fits several members (any registered estimator, the D-MPNN
included) on the same molecules and combines their predictions: ``mean`` averages them
(classification: the positive-class probabilities), ``stacking`` fits a ridge (regression)
or logistic (classification, on the members' logits) meta-model on out-of-fold member
predictions. The members' standard deviation per molecule and task is the spread that
QeMLflow reports as ``ensemble_sd``, beside the conformal interval.

Inputs. An ensemble of feature models reads the experiment's feature matrix. An ensemble
with a graph member (the D-MPNN) reads the ``smiles`` column instead, and each of its
feature members names its own ``features`` (a featurizer spec), computed from the SMILES
inside the ensemble; members with the same spec share one featurization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold

from qemlflow.errors import ConfigError

__all__ = [
    "COMBINE_METHODS",
    "Ensemble",
    "check_ensemble_params",
    "ensemble_libraries",
    "ensemble_reads",
    "ensemble_runtime",
    "spread_summary",
]

FloatArray = npt.NDArray[np.float64]

COMBINE_METHODS = ("mean", "stacking")
_MEMBER_KEYS = ("estimator", "params", "features")
_STACKING_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)
_LOGIT_CLIP = 1e-6


def _members_of(params: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    members = (params or {}).get("members") or []
    return [m for m in members if isinstance(m, Mapping)]


def _reads_smiles(member: Mapping[str, Any]) -> bool:
    from qemlflow.models.registry import get_spec

    return get_spec(member.get("estimator", "")).reads == "smiles"


def ensemble_reads(params: Mapping[str, Any] | None) -> str:
    """``"smiles"`` when a member reads graphs or names its own features, else ``"features"``.

    Examples
    --------
    >>> ensemble_reads({"members": [{"estimator": "linear"}, {"estimator": "knn"}]})
    'features'
    >>> ensemble_reads({"members": [{"estimator": "dmpnn"}, {"estimator": "linear",
    ...     "features": {"type": "ecfp"}}]})
    'smiles'
    """
    for member in _members_of(params):
        if member.get("features") is not None or _reads_smiles(member):
            return "smiles"
    return "features"


def ensemble_libraries(params: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The distributions the members (and their own featurizers) add to a fit's key."""
    from qemlflow.features import make_featurizer
    from qemlflow.models.registry import get_spec

    names: set[str] = set()
    for member in _members_of(params):
        names.update(get_spec(member.get("estimator", "")).libraries)
        if member.get("features") is not None:
            names.update(make_featurizer(member["features"]).required_libraries())
    return tuple(sorted(names))


def ensemble_runtime(params: Mapping[str, Any], n_jobs: int | None) -> dict[str, str]:
    """The members' runtime settings (the D-MPNN's device and threads), merged, and the
    code versions of the members' own featurizers (those above 1: the ensemble computes
    their features inside its fit and prediction)."""
    from qemlflow.features.spec import code_versions
    from qemlflow.models.registry import get_spec

    merged: dict[str, set[str]] = {}
    for member in _members_of(params):
        spec = get_spec(member.get("estimator", ""))
        if spec.runtime is not None:
            for key, value in spec.runtime(dict(member.get("params") or {}), n_jobs).items():
                merged.setdefault(key, set()).add(value)
    runtime = {key: " | ".join(sorted(values)) for key, values in merged.items()}
    runtime.update(code_versions(*(m.get("features") for m in _members_of(params))))
    return dict(sorted(runtime.items()))


def check_ensemble_params(task: str, params: Mapping[str, Any]) -> None:
    """Raise ConfigError unless ``params`` (members, combine, folds) make a usable ensemble.

    Every member is checked as its own estimator would check it (name, parameters,
    optional packages), with the ensemble's seed and threads.
    """
    from qemlflow.features import SmilesColumn, make_featurizer
    from qemlflow.models.registry import get_spec

    members = params.get("members")
    if isinstance(members, str | bytes) or not isinstance(members, Sequence) or len(members) < 2:
        raise ConfigError(
            f"an ensemble needs a list of at least 2 members, got {members!r}",
            "give members: [{estimator: lightgbm}, {estimator: random_forest}, ...]",
        )
    if params.get("combine") not in COMBINE_METHODS:
        raise ConfigError(
            f"unknown ensemble combine {params.get('combine')!r}", "use combine: mean or stacking"
        )
    folds = params.get("folds")
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= 20:
        raise ConfigError(
            f"ensemble folds must be a whole number from 2 to 20, got {folds!r}",
            "set params: {folds: 5} (the out-of-fold splits stacking learns from)",
        )
    reads = ensemble_reads(params)
    for i, member in enumerate(members):
        where = f"ensemble member {i}"
        if not isinstance(member, Mapping):
            raise ConfigError(
                f"{where} is {member!r}, not a model", "write it as {estimator: NAME, params: {}}"
            )
        unknown = sorted(set(member) - set(_MEMBER_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} in {where}",
                f"a member takes only {', '.join(_MEMBER_KEYS)}",
            )
        name = member.get("estimator")
        if name == "ensemble":
            raise ConfigError(
                f"{where} is itself an ensemble", "list its members in this ensemble instead"
            )
        spec = get_spec(name if isinstance(name, str) else "")
        if spec.check_installed is not None:
            spec.check_installed()
        spec.resolve_params(
            task,  # type: ignore[arg-type]
            member.get("params"),
            random_state=params.get("random_state"),
            n_jobs=params.get("n_jobs"),
        )
        features = member.get("features")
        if features is not None:
            if spec.reads == "smiles":
                raise ConfigError(
                    f"{where} ({name}) reads molecules as graphs and takes no features",
                    "remove features from that member",
                )
            if isinstance(make_featurizer(features), SmilesColumn):
                raise ConfigError(
                    f"{where} ({name}) needs numeric features, not 'smiles'",
                    "give it e.g. features: [{type: ecfp, counts: true}, rdkit2d]",
                )
        elif reads == "smiles" and spec.reads != "smiles":
            raise ConfigError(
                f"{where} ({name}) reads a feature matrix, but this ensemble reads SMILES "
                "(a member reads graphs or names its own features)",
                "give that member its own features, e.g. features: [{type: ecfp, counts: true}]",
            )


def spread_summary(truth: FloatArray, score: FloatArray, spread: FloatArray) -> dict[str, Any]:
    """How informative the members' spread was on labelled molecules (a run's test part).

    ``mean_sd``: the mean ``ensemble_sd``; ``sd_error_spearman``: Spearman's rank
    correlation between the spread and the absolute error (regression) or
    ``|label - probability|`` (classification), pooled over tasks; above 0 means the
    members disagree more where the ensemble is more wrong. None where undefined.

    Examples
    --------
    >>> spread_summary(np.array([1.0, 2.0, 3.0]), np.array([1.1, 2.5, 1.0]),
    ...                np.array([0.1, 0.4, 0.9]))
    {'mean_sd': 0.4666666666666666, 'sd_error_spearman': 1.0, 'n': 3}
    """
    from scipy.stats import spearmanr

    labelled = ~np.isnan(truth) & np.isfinite(score) & np.isfinite(spread)
    errors = np.abs(truth[labelled] - score[labelled])
    sds = spread[labelled]
    rho: float | None = None
    if len(sds) >= 3 and np.ptp(sds) > 0 and np.ptp(errors) > 0:
        rho = float(spearmanr(sds, errors).statistic)
    mean_sd = float(sds.mean()) if len(sds) else None
    return {"mean_sd": mean_sd, "sd_error_spearman": rho, "n": int(labelled.sum())}


def _positive_score(model: Any, X: npt.NDArray[Any]) -> FloatArray:
    """A classifier's uncalibrated probability of class 1 (logistic of its margin if none)."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)
    margin = np.asarray(model.decision_function(X), dtype=np.float64)
    return np.asarray(1.0 / (1.0 + np.exp(-margin)), dtype=np.float64)


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.asarray(np.log(clipped / (1.0 - clipped)), dtype=np.float64)


class _Constant:
    """A member's stand-in on a task it cannot learn (one class in its rows): the prior."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, X: npt.NDArray[Any]) -> FloatArray:
        return np.full(len(X), self.value, dtype=np.float64)

    def predict_proba(self, X: npt.NDArray[Any]) -> FloatArray:
        p = self.predict(X)
        return np.column_stack([1.0 - p, p])


class Ensemble(BaseEstimator):  # type: ignore[misc]
    """Several registered estimators fitted on the same molecules, averaged or stacked.

    Parameters
    ----------
    members : list of dict
        Each ``{"estimator": NAME, "params": {...}}`` (and, when the ensemble reads SMILES,
        ``"features": SPEC`` for a feature model). Member ``i`` is seeded with
        ``random_state + i``.
    combine : {"mean", "stacking"}, default="mean"
        ``mean``: the members' average (classification: of positive-class probabilities).
        ``stacking``: a meta-model per task (``RidgeCV`` on the members' predictions;
        ``LogisticRegression`` on their logits) fitted on out-of-fold predictions of
        ``folds``-fold cross-validation of the training rows; the members are then refitted
        on every training row. A task the meta-model cannot learn (one class) is averaged.
    folds : int, default=5
        Folds of the stacking cross-validation (seeded by ``random_state``).
    task : {"regression", "classification"}, default="regression"
        What ``y`` holds (classification: 0/1 labels, NaN missing).
    random_state : int or None, default=0
        Seed of the folds; member ``i`` gets ``random_state + i``.
    n_jobs : int or None, default=1
        Threads for members that take them, processes for their featurizers.

    Attributes
    ----------
    models_ : list
        Per member: the fitted joint model (graph members), or a list of one fitted
        model per task.
    meta_models_ : list
        Per task, the stacking meta-model (None: averaged). Empty for ``mean``.
    oof_predictions_ : ndarray of shape (n_members, n_samples, n_tasks)
        Stacking only: the out-of-fold member predictions the meta-models learned from.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((40, 4)); y = X[:, 0] + rng.normal(0, 0.05, 40)
    >>> ens = Ensemble([{"estimator": "linear"}, {"estimator": "knn"}]).fit(X, y)
    >>> mean, sd = ens.predict_tasks(X[:3])
    >>> mean.shape, sd.shape, bool((sd >= 0).all())
    ((3, 1), (3, 1), True)
    """

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]] = (),
        combine: str = "mean",
        folds: int = 5,
        task: str = "regression",
        random_state: int | None = 0,
        n_jobs: int | None = 1,
    ) -> None:
        self.members = members
        self.combine = combine
        self.folds = folds
        self.task = task
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ members
    def _params(self) -> dict[str, Any]:
        return self.get_params(deep=False)  # type: ignore[no-any-return]

    def _member_specs(self) -> list[tuple[Any, dict[str, Any], Any]]:
        """Per member: its EstimatorSpec, resolved parameters and features spec (or None)."""
        from qemlflow.models.registry import get_spec

        built = []
        for i, member in enumerate(self.members):
            spec = get_spec(member["estimator"])
            seed = None if self.random_state is None else int(self.random_state) + i
            resolved = spec.resolve_params(
                self.task,  # type: ignore[arg-type]
                member.get("params"),
                random_state=seed,
                n_jobs=self.n_jobs,
            )
            built.append((spec, resolved, member.get("features")))
        return built

    def _inputs(self, X: npt.NDArray[Any]) -> list[npt.NDArray[Any]]:
        """Each member's input: the matrix, the SMILES column, or its own features of them."""
        if ensemble_reads(self._params()) == "features":
            return [X for _ in self.members]
        from qemlflow.features import make_featurizer
        from qemlflow.pipeline.config import without_n_jobs

        n_jobs = 1 if self.n_jobs is None else int(self.n_jobs)
        computed: dict[str, npt.NDArray[Any]] = {}
        inputs = []
        for member in self.members:
            features = member.get("features")
            if features is None:
                inputs.append(X)
                continue
            featurizer = make_featurizer(features)
            key = repr(without_n_jobs(featurizer.to_spec()))
            if key not in computed:
                featurizer.set_params(n_jobs=n_jobs)
                computed[key] = np.asarray(featurizer.transform(X))
            inputs.append(computed[key])
        return inputs

    def _fit_member(
        self,
        spec: Any,
        resolved: dict[str, Any],
        X: npt.NDArray[Any],
        Y: FloatArray,
        validation: dict[str, Any],
    ) -> Any:
        from qemlflow.models.molecular_model import _fit_checked

        if spec.joint_tasks:
            return _fit_checked(spec.build(self.task, resolved), X, Y, **validation)
        fitted: list[Any] = []
        for t in range(Y.shape[1]):
            rows = ~np.isnan(Y[:, t])
            y_t = Y[rows, t]
            if not len(y_t):
                fitted.append(_Constant(0.5 if self.task == "classification" else 0.0))
            elif self.task == "classification" and len(np.unique(y_t)) < 2:
                fitted.append(_Constant(float((y_t.sum() + 0.5) / (len(y_t) + 1.0))))
            else:
                labels = y_t.astype(np.int64) if self.task == "classification" else y_t
                fitted.append(_fit_checked(spec.build(self.task, resolved), X[rows], labels))
        return fitted

    def _member_output(self, model: Any, X: npt.NDArray[Any]) -> FloatArray:
        """One member's (n, n_tasks) predictions: values, or positive-class probabilities."""
        if not isinstance(model, list):
            return np.asarray(model.predict_tasks(X)[0], dtype=np.float64)
        if self.task == "classification":
            return np.column_stack([_positive_score(m, X) for m in model])
        return np.column_stack([np.asarray(m.predict(X), dtype=np.float64) for m in model])

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: npt.ArrayLike,
        X_val: Any | None = None,
        y_val: npt.ArrayLike | None = None,
    ) -> Ensemble:
        """Fit every member on ``(X, y)``; for stacking, first learn the meta-models.

        ``X_val, y_val`` go to the members that pick an epoch on them (the D-MPNN) and are
        never trained on.
        """
        check_ensemble_params(self.task, self._params())
        X = np.asarray(X)
        Y = np.asarray(y, dtype=np.float64)
        self.multi_output_ = Y.ndim == 2
        Y = Y.reshape(len(Y), -1)
        self.n_tasks_ = Y.shape[1]
        specs = self._member_specs()
        inputs = self._inputs(X)
        validation: list[dict[str, Any]] = [{} for _ in specs]
        if X_val is not None and y_val is not None:
            Y_val = np.asarray(y_val, dtype=np.float64).reshape(len(np.asarray(y_val)), -1)
            val_inputs = self._inputs(np.asarray(X_val))
            validation = [
                {"X_val": val_inputs[i], "y_val": Y_val} if spec.joint_tasks else {}
                for i, (spec, _, _) in enumerate(specs)
            ]
        self.meta_models_: list[Any] = []
        if self.combine == "stacking":
            self.oof_predictions_ = self._out_of_fold(specs, inputs, Y, validation)
            self.meta_models_ = [
                self._fit_meta(self.oof_predictions_[:, :, t], Y[:, t])
                for t in range(self.n_tasks_)
            ]
        self.models_ = [
            self._fit_member(spec, resolved, inputs[i], Y, validation[i])
            for i, (spec, resolved, _) in enumerate(specs)
        ]
        return self

    def _out_of_fold(
        self,
        specs: list[tuple[Any, dict[str, Any], Any]],
        inputs: list[npt.NDArray[Any]],
        Y: FloatArray,
        validation: list[dict[str, Any]],
    ) -> FloatArray:
        """Every training row predicted by members fitted on the other folds only."""
        n = len(Y)
        n_splits = min(int(self.folds), n)
        if n_splits < 2:
            raise ConfigError(
                f"stacking needs at least 2 training molecules, got {n}", "use combine: mean"
            )
        single_class_task = self.task == "classification" and Y.shape[1] == 1
        labels = Y[:, 0]
        splitter: Any
        if single_class_task and not np.isnan(labels).any():
            fewest = int(np.bincount(labels.astype(np.int64), minlength=2).min())
            if fewest >= n_splits:
                splitter = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
                split = list(splitter.split(np.zeros(n), labels))
            else:
                split = list(KFold(n_splits, shuffle=True, random_state=self.random_state).split(Y))
        else:
            split = list(KFold(n_splits, shuffle=True, random_state=self.random_state).split(Y))
        oof = np.full((len(specs), n, Y.shape[1]), np.nan)
        for train, held_out in split:
            for i, (spec, resolved, _) in enumerate(specs):
                model = self._fit_member(spec, resolved, inputs[i][train], Y[train], validation[i])
                oof[i, held_out] = self._member_output(model, inputs[i][held_out])
        return oof

    def _fit_meta(self, predictions: FloatArray, y: FloatArray) -> Any:
        """One task's meta-model on (n_members, n) out-of-fold predictions; None: average."""
        rows = ~np.isnan(y) & np.isfinite(predictions).all(axis=0)
        features, target = predictions[:, rows].T, y[rows]
        if self.task == "classification":
            if len(np.unique(target)) < 2:
                return None
            return LogisticRegression(C=1.0, max_iter=1000).fit(
                _logit(features), target.astype(np.int64)
            )
        if len(target) < 2:
            return None
        return RidgeCV(alphas=_STACKING_ALPHAS).fit(features, target)

    # ------------------------------------------------------------------ prediction
    def member_predictions(self, X: Any) -> FloatArray:
        """Return every member's predictions: shape (n_members, n_samples, n_tasks).

        Regression values, or uncalibrated positive-class probabilities.
        """
        X = np.asarray(X)
        inputs = self._inputs(X)
        return np.stack(
            [self._member_output(model, inputs[i]) for i, model in enumerate(self.models_)]
        )

    def predict_tasks(self, X: Any) -> tuple[FloatArray, FloatArray]:
        """Return the combined (n, n_tasks) prediction and the members' standard deviation."""
        outputs = self.member_predictions(X)
        spread = np.asarray(outputs.std(axis=0), dtype=np.float64)
        combined = np.asarray(outputs.mean(axis=0), dtype=np.float64)
        for t, meta in enumerate(self.meta_models_):
            if meta is None:
                continue
            if self.task == "classification":
                combined[:, t] = meta.predict_proba(_logit(outputs[:, :, t].T))[:, 1]
            else:
                combined[:, t] = meta.predict(outputs[:, :, t].T)
        return combined, spread

    def _shape(self, values: FloatArray) -> FloatArray:
        return values if self.multi_output_ else values[:, 0]

    def predict(self, X: Any) -> FloatArray:
        """Return the combined prediction: values (regression) or 0/1 labels."""
        combined = self.predict_tasks(X)[0]
        if self.task == "classification":
            combined = (combined >= 0.5).astype(np.float64)
        return self._shape(combined)

    def predict_proba(self, X: Any) -> FloatArray:
        """Return ``(n, 2)`` class probabilities (one task) or ``(n, n_tasks)`` positives."""
        if self.task != "classification":
            raise AttributeError("predict_proba is only available for classification")
        positive = self.predict_tasks(X)[0]
        if self.multi_output_:
            return positive
        return np.column_stack([1.0 - positive[:, 0], positive[:, 0]])
