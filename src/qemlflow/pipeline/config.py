"""The experiment configuration: a YAML file validated by pydantic."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from qemlflow.chemistry import ChemistryPolicy
from qemlflow.errors import ConfigError, QeMLflowError
from qemlflow.limits import MoleculeLimits

__all__ = [
    "TASK_DEFAULTS",
    "DatasetConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "LimitsConfig",
    "MemberConfig",
    "ModelConfig",
    "SplitConfig",
    "TuneConfig",
    "TuneDimension",
    "load_config",
    "parse_config",
    "without_n_jobs",
]

FeatureSpec = str | dict[str, Any] | list[str | dict[str, Any]]


# What an experiment that leaves out `features` (or `model.estimator`) runs, per task type:
# the best classical configuration of the MoleculeNet benchmark (docs/benchmarks/moleculenet.md,
# `qemlflow benchmark`). Filled in by `ExperimentConfig.with_task_defaults` once the task
# is known; the plain field defaults below are the regression entry.
# The features are ECFP4 counts + the curated `physchem` descriptors, not the full RDKit 2D
# set: within one standard deviation of it on every benchmark set at a tenth of its cost
# (docs/benchmarks.md, "A default that earns its cost"; benchmarks/default_choice.py).
# The model is LightGBM with 500 trees at learning rate 0.09 instead of the estimator's
# 1,500 at 0.03: within one sd on every set, a third of the work to fit and predict, which is
# what a many-task set and the screening path pay for (same section, "The trees").
# Both task types get the same choice today; the entries are one value, copied on use.
_BEST_CLASSICAL: dict[str, Any] = {
    "features": [{"type": "ecfp", "counts": True}, {"type": "physchem"}],
    "model": {"estimator": "lightgbm", "params": {"n_estimators": 500, "learning_rate": 0.09}},
}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "regression": _BEST_CLASSICAL,
    "classification": _BEST_CLASSICAL,
}


def _default_features() -> FeatureSpec:
    features: FeatureSpec = copy.deepcopy(TASK_DEFAULTS["regression"]["features"])
    return features


def without_n_jobs(spec: Any) -> Any:
    """Drop ``n_jobs`` from a featurizer spec: it changes speed, never the result."""
    if isinstance(spec, dict):
        return {k: without_n_jobs(v) for k, v in spec.items() if k != "n_jobs"}
    if isinstance(spec, list):
        return [without_n_jobs(v) for v in spec]
    return spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChemistryConfig(_Strict):
    """What standardization does with chemistry a model cannot represent
    (see :class:`qemlflow.chem.ChemistryPolicy`).

    ``unsupported: reject`` (default) refuses metal-containing molecules, inorganics and
    mixtures as ``unsupported_chemistry``; ``largest_fragment`` keeps the largest organic
    fragment instead. A parent under ``min_heavy_atoms`` is refused as ``parent_too_small``.
    """

    unsupported: Literal["reject", "largest_fragment"] = "reject"
    min_heavy_atoms: int = Field(default=3, ge=1, le=1_000)

    def policy(self) -> ChemistryPolicy:
        """This policy as the chemistry layer takes it."""
        return ChemistryPolicy(**self.model_dump())


class DatasetConfig(_Strict):
    """Where the molecules come from and how to read them."""

    source: str = Field(description="A bundled dataset name (e.g. esol) or a file path.")
    smiles_column: str | None = None
    target_columns: list[str] | None = None
    task: Literal["regression", "classification"] | None = None
    duplicates: Literal["mean", "first", "drop_conflicting"] = "mean"
    standardize: bool = True
    tautomer: bool = False
    chemistry: ChemistryConfig = Field(default_factory=ChemistryConfig)
    header: bool | None = Field(
        default=None,
        description="Whether the file's first line names its columns (false: numbered "
        "1, 2, ...); default: yes, and detected for .smi.",
    )

    @field_validator("target_columns", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


DEFAULT_FOLDS = 5


class SplitConfig(_Strict):
    """How molecules are divided into train, validation and test sets, or into k folds.

    ``method: kfold`` (with ``k``, default 5) evaluates by k-fold cross-validation:
    ``sizes`` is then unused. ``split: {method: kfold, k: 5}`` is stored as
    ``params: {k: 5}``, so configs without it keep their resolved form (and digests).
    ``scaffold`` is Chemprop's balanced scaffold split (seeded); ``scaffold_deepchem`` is
    DeepChem's deterministic largest-first one (the MoleculeNet paper's). Both use
    stereo-free scaffolds; ``stereo: true`` (stored as ``params: {stereo: true}``) keeps
    stereochemistry in them, ``balanced: false`` makes ``scaffold`` largest-first.
    """

    method: Literal["random", "scaffold", "scaffold_deepchem", "stratified", "cluster", "kfold"] = (
        "random"
    )
    sizes: tuple[float, float, float] = (0.8, 0.1, 0.1)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _k_shorthand(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        method = data.get("method")
        if "k" in data and method != "kfold":
            raise ValueError("k is only for method: kfold")
        if "stereo" in data and method not in ("scaffold", "scaffold_deepchem"):
            raise ValueError("stereo is only for method: scaffold or scaffold_deepchem")
        if "balanced" in data and method != "scaffold":
            raise ValueError("balanced is only for method: scaffold")
        moved = {key: data[key] for key in ("k", "stereo", "balanced") if key in data}
        if not moved:
            return data
        rest = {key: value for key, value in data.items() if key not in moved}
        return {**rest, "params": {**dict(data.get("params") or {}), **moved}}

    @model_validator(mode="after")
    def _folds(self) -> SplitConfig:
        if self.method != "kfold":
            return self
        unknown = sorted(set(self.params) - {"k"})
        if unknown:
            raise ValueError(f"method kfold takes only k, not {', '.join(unknown)}")
        k = self.params.get("k", DEFAULT_FOLDS)
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 100:
            raise ValueError(f"k must be a whole number of folds from 2 to 100, got {k!r}")
        return self

    @property
    def k(self) -> int:
        """The number of cross-validation folds (``method: kfold``)."""
        return int(self.params.get("k", DEFAULT_FOLDS))

    @field_validator("sizes")
    @classmethod
    def _fractions(cls, sizes: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s < 0 for s in sizes) or abs(sum(sizes) - 1.0) > 1e-6:
            raise ValueError(
                f"sizes must be three non-negative fractions summing to 1, got {sizes}"
            )
        if sizes[0] == 0 or sizes[2] == 0:
            raise ValueError("the train and test fractions must be above 0")
        return sizes


MemberEstimator = Literal[
    "lightgbm", "random_forest", "extra_trees", "knn", "svm", "linear", "dmpnn"
]
Estimator = Literal[
    "lightgbm", "random_forest", "extra_trees", "knn", "svm", "linear", "dmpnn", "ensemble"
]
# Estimators that read molecules as graphs (the ``smiles`` featurizer), not feature vectors.
_GRAPH_ESTIMATORS = frozenset({"dmpnn"})


class MemberConfig(_Strict):
    """One member of an ensemble: an estimator, its parameters and, when the ensemble
    reads SMILES (it has a graph member), the member's own features."""

    estimator: MemberEstimator
    params: dict[str, Any] = Field(default_factory=dict)
    features: FeatureSpec | None = None

    @field_validator("features")
    @classmethod
    def _canonical_features(cls, value: FeatureSpec | None) -> Any:
        # Stored in the featurizer's own spec form, so equal features give equal keys.
        if value is None:
            return None
        from qemlflow.features import make_featurizer

        return without_n_jobs(make_featurizer(value).to_spec())

    @model_serializer(mode="wrap")
    def _without_unset_features(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and self.features is None:
            data.pop("features", None)
        return data


class ModelConfig(_Strict):
    """Which estimator to fit, and its uncertainty settings.

    ``estimator: ensemble`` fits ``members`` (each ``{estimator, params}``) and combines
    them by ``combine`` (``mean`` or ``stacking``); its own ``params`` take ``folds``
    (stacking's out-of-fold splits, default 5). ``members`` and ``combine`` exist only for
    ensembles: other models' resolved configs (and keys) do not name them.
    """

    estimator: Estimator = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    coverage: float = Field(default=0.9, gt=0.0, lt=1.0)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"
    members: list[MemberConfig] = Field(default_factory=list)
    combine: Literal["mean", "stacking"] = "mean"

    @model_validator(mode="after")
    def _members_only_for_ensembles(self) -> ModelConfig:
        if self.estimator != "ensemble":
            extra = sorted({"members", "combine"} & self.model_fields_set)
            if extra:
                raise ValueError(
                    f"{' and '.join(extra)} only apply to estimator: ensemble; "
                    "remove them or set estimator: ensemble"
                )
            return self
        if len(self.members) < 2:
            raise ValueError(
                "an ensemble needs members: a list of at least 2 models such as "
                "{estimator: lightgbm, params: {}}"
            )
        misplaced = sorted({"members", "combine"} & set(self.params))
        if misplaced:
            raise ValueError(
                f"{', '.join(misplaced)} go under model, not model.params: write "
                "model: {estimator: ensemble, members: [...], combine: mean}"
            )
        return self

    @model_serializer(mode="wrap")
    def _ensemble_fields_only_for_ensembles(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Configs without an ensemble keep their resolved form, and so their digests.
        data = handler(self)
        if isinstance(data, dict) and self.estimator != "ensemble":
            data.pop("members", None)
            data.pop("combine", None)
        return data

    def reads_smiles(self) -> bool:
        """Whether the model reads the ``smiles`` column (graph models, and ensembles with
        a graph member or members with their own features) rather than a feature matrix."""
        if self.estimator == "ensemble":
            return any(
                m.estimator in _GRAPH_ESTIMATORS or m.features is not None for m in self.members
            )
        return self.estimator in _GRAPH_ESTIMATORS

    def estimator_params(self) -> dict[str, Any]:
        """The parameters the estimator is built with: ``params``, and for an ensemble its
        ``members`` and ``combine`` too (the fit step's key names them)."""
        params = dict(self.params)
        if self.estimator == "ensemble":
            params["members"] = [m.model_dump(mode="json") for m in self.members]
            params["combine"] = self.combine
        return params


class EvaluationConfig(_Strict):
    """How the fitted model is scored."""

    n_bootstrap: int = Field(default=1000, ge=0, le=100_000)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    plots: bool = True


class LimitsConfig(_Strict):
    """Admission limits per molecule (see :class:`qemlflow.chem.MoleculeLimits`).

    They apply when the dataset is standardized (a molecule over a limit is rejected as
    ``too_large``, kept with its reason) and travel with the model to ``predict``,
    ``screen`` and the prediction service.
    """

    max_smiles_length: int = Field(default=5_000, ge=1, le=10_000_000)
    max_heavy_atoms: int = Field(default=300, ge=1, le=1_000_000)
    time_budget_seconds: float = Field(default=5.0, gt=0.0, le=3_600.0)

    def molecule_limits(self) -> MoleculeLimits:
        """These limits as the chemistry layer takes them."""
        return MoleculeLimits(**self.model_dump())


class TuneDimension(_Strict):
    """One dimension of a search space for ``qemlflow tune``.

    ``int`` and ``float`` take ``low``, ``high`` and ``log``; ``categorical`` takes
    ``choices`` (any YAML values: numbers, strings, feature specs).
    """

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> TuneDimension:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical dimension takes a non-empty choices list only")
            return self
        if self.choices is not None or self.low is None or self.high is None:
            raise ValueError(f"an {self.type} dimension takes low and high, not choices")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got {self.low} and {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log dimension needs low above 0")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("an int dimension needs whole-number low and high")
        return self


class TuneConfig(_Strict):
    """What ``qemlflow tune`` searches; ``qemlflow run`` ignores it.

    ``space`` maps dotted config paths (``model.params.num_leaves``, ``features``) to
    dimensions; left out, the estimator's documented default space is searched
    (:data:`qemlflow.tune.DEFAULT_SPACES`). ``metric`` defaults to ``rmse`` (regression)
    or ``roc_auc`` (classification), ``direction`` to the metric's better side.
    ``scoring`` says what scores a trial: ``validation`` (the split's validation part),
    ``cv`` (inner ``folds``-fold cross-validation on the train part, pruned fold by fold)
    or ``auto`` (the validation part when the split has one, else ``cv``). ``trials`` is
    the default of ``--trials``. ``study`` and ``trial`` are set by ``qemlflow tune`` on
    the recorded config of each trial run, linking it to its study.
    """

    metric: str | None = None
    direction: Literal["minimize", "maximize"] | None = None
    trials: int | None = Field(default=None, ge=1, le=100_000)
    scoring: Literal["auto", "validation", "cv"] = "auto"
    folds: int = Field(default=3, ge=2, le=20)
    space: dict[str, TuneDimension] | None = None
    study: str | None = None
    trial: int | None = Field(default=None, ge=0)


class ExperimentConfig(_Strict):
    """A whole experiment: dataset -> standardize -> featurize -> split -> fit -> evaluate.

    Examples
    --------
    >>> cfg = parse_config({"dataset": {"source": "esol"}})
    >>> cfg.model.estimator, cfg.split.method, cfg.seed
    ('lightgbm', 'random', 0)
    """

    name: str = "experiment"
    seed: int = Field(default=0, ge=0)
    n_jobs: int = Field(default=1, ge=-1024, le=1024)
    dataset: DatasetConfig
    features: FeatureSpec = Field(default_factory=_default_features)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    promotion: dict[str, Any] | None = Field(
        default=None,
        description="Promotion gates for the registry, e.g. "
        "{'metrics': {'rmse': {'max': 0.7}}, 'require_signature': 'approved'}.",
    )
    # Read by `qemlflow tune` only; absent, the resolved config (and every digest of it)
    # is what it was before tuning existed.
    tune: TuneConfig | None = None

    @field_validator("promotion")
    @classmethod
    def _valid_promotion(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Checked now, not at promotion: a NaN threshold would be stored as null.
        if value is not None:
            from qemlflow.registry import validate_policy

            validate_policy(value, "the experiment's 'promotion'")
        return value

    @field_validator("n_jobs")
    @classmethod
    def _some_jobs(cls, value: int) -> int:
        if value == 0:
            raise ValueError("n_jobs must be a number of processes, or -1 for all cores, not 0")
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _estimator_shorthand(cls, value: Any) -> Any:
        # `model: dmpnn` is short for `model: {estimator: dmpnn}`.
        return {"estimator": value} if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _graph_models_read_smiles(cls, data: Any) -> Any:
        # A graph model with no features given reads the molecules themselves.
        if not isinstance(data, dict) or "features" in data:
            return data
        model = data.get("model")
        estimator = model if isinstance(model, str) else (model or {}).get("estimator")
        if isinstance(model, dict | str) and estimator in _GRAPH_ESTIMATORS:
            return {**data, "features": "smiles"}
        # An ensemble with a graph member (or members with their own features) too.
        members = model.get("members") if isinstance(model, dict) else None
        if estimator == "ensemble" and isinstance(members, list):
            for member in members:
                if isinstance(member, dict) and (
                    member.get("estimator") in _GRAPH_ESTIMATORS or "features" in member
                ):
                    return {**data, "features": "smiles"}
        return data

    @model_validator(mode="after")
    def _features_are_buildable(self) -> ExperimentConfig:
        from qemlflow.features import SmilesColumn, make_featurizer

        featurizer = make_featurizer(self.features)
        reads_smiles = isinstance(featurizer, SmilesColumn)
        estimator = self.model.estimator
        if estimator == "ensemble":
            self._check_ensemble_inputs(reads_smiles, featurizer.to_spec()["type"])
            return self
        if estimator in _GRAPH_ESTIMATORS and not reads_smiles:
            raise ConfigError(
                f"estimator {estimator!r} reads molecules as graphs, but features is "
                f"{featurizer.to_spec()['type']!r}",
                "use features: smiles (or leave features out); for RDKit descriptors as "
                "extra inputs set model.params.descriptors: rdkit2d",
            )
        if reads_smiles and estimator not in _GRAPH_ESTIMATORS:
            raise ConfigError(
                f"features 'smiles' gives no numbers for estimator {estimator!r}",
                "use estimator: dmpnn, or numeric features such as ecfp or rdkit2d",
            )
        return self

    def _check_ensemble_inputs(self, reads_smiles: bool, feature_type: str) -> None:
        """An ensemble reads the feature matrix, or (with a graph member, or members with
        their own features) the SMILES column, from which each feature member computes
        its own features."""
        if not self.model.reads_smiles():
            if reads_smiles:
                raise ConfigError(
                    "features 'smiles' gives no numbers for the ensemble's feature members",
                    "use numeric features such as [ecfp, rdkit2d], or give each member its "
                    "own features",
                )
            return
        if not reads_smiles:
            raise ConfigError(
                "this ensemble reads SMILES (it has a graph member, or members with their "
                f"own features), but features is {feature_type!r}",
                "use features: smiles (or leave features out) and give every feature "
                "member its own features, e.g. features: [{type: ecfp, counts: true}]",
            )
        for i, member in enumerate(self.model.members):
            if member.estimator in _GRAPH_ESTIMATORS and member.features is not None:
                raise ConfigError(
                    f"ensemble member {i} ({member.estimator}) reads graphs and takes no features",
                    "remove features from that member",
                )
            if member.estimator not in _GRAPH_ESTIMATORS and member.features is None:
                raise ConfigError(
                    f"ensemble member {i} ({member.estimator}) needs a feature matrix, but "
                    "the ensemble reads SMILES for its graph member",
                    "give that member its own features, e.g. features: "
                    "[{type: ecfp, counts: true}, rdkit2d]",
                )

    def with_task_defaults(self, task: Literal["regression", "classification"]) -> ExperimentConfig:
        """This config with what it leaves out filled in by the best defaults for ``task``.

        ``features`` when the config has none, and ``model.estimator`` (with its
        ``params``) when it names none; everything the config sets stays as it is.

        Examples
        --------
        >>> cfg = parse_config({"dataset": {"source": "bbbp"}, "model": {"coverage": 0.8}})
        >>> full = cfg.with_task_defaults("classification")
        >>> full.model.estimator == TASK_DEFAULTS["classification"]["model"]["estimator"]
        True
        >>> full.model.coverage
        0.8
        """
        best = TASK_DEFAULTS[task]
        update: dict[str, Any] = {}
        if "features" not in self.model_fields_set:
            update["features"] = copy.deepcopy(best["features"])
        if "model" not in self.model_fields_set or "estimator" not in self.model.model_fields_set:
            chosen = {**self.model.model_dump(exclude_unset=True), **copy.deepcopy(best["model"])}
            update["model"] = ModelConfig.model_validate(chosen)
        return self.model_copy(update=update) if update else self

    def make_model(self, task: str) -> Any:
        """Return the unfitted :class:`~qemlflow.models.MolecularModel` this experiment fits
        for ``task`` (its estimator, parameters, coverage, calibration, seed and n_jobs)."""
        from qemlflow.models import make_model

        return make_model(
            self.model.estimator,
            task,  # type: ignore[arg-type]
            params=self.model.estimator_params(),
            coverage=self.model.coverage,
            calibration=self.model.calibration,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )

    def featurizer_versions(self) -> dict[str, str]:
        """The code versions above 1 of every featurizer the experiment computes with: its
        ``features`` and its ensemble members' own (:attr:`Featurizer.code_version`).

        Examples
        --------
        >>> parse_config({"dataset": {"source": "esol"}}).featurizer_versions()
        {}
        """
        from qemlflow.features.spec import code_versions

        return code_versions(self.features, *(m.features for m in self.model.members))

    def resolved(self) -> dict[str, Any]:
        """Return the full configuration, defaults filled in, as plain JSON-compatible data."""
        from qemlflow.features import make_featurizer

        data = self.model_dump(mode="json")
        data["features"] = without_n_jobs(make_featurizer(self.features).to_spec())
        if data["tune"] is None:  # configs without it keep their resolved form
            del data["tune"]
        return data


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """Walk ``loc`` through nested config models to list the keys allowed at its parent."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        current = field.annotation
    return list(current.model_fields)


def _describe(error: dict[str, Any], source: str) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(ExperimentConfig, loc))
        return f"unknown key '{where}' in {source}; allowed keys here: {allowed}"
    if error["type"] == "missing":
        return f"missing required key '{where}' in {source}; add it to the file"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"bad value for '{where}' in {source}: {message}"


def parse_config(data: Any, *, source: str = "the configuration") -> ExperimentConfig:
    """Validate a mapping as an experiment; errors name the bad key and the allowed values."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} is not a mapping of keys to values",
            "write the experiment as YAML keys such as 'dataset:', 'features:', 'model:'",
        )
    try:
        return ExperimentConfig.model_validate(data)
    except QeMLflowError:
        raise
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_describe(dict(first), source)) from None


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found", "check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML ({reason})", "fix the syntax") from None
    return parse_config(data, source=str(path))
