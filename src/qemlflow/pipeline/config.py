"""The experiment configuration: a YAML file validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qemlflow.errors import ConfigError

__all__ = [
    "DatasetConfig",
    "EvaluationConfig",
    "ExperimentConfig",
    "ModelConfig",
    "SplitConfig",
    "load_config",
    "parse_config",
    "without_n_jobs",
]

FeatureSpec = str | dict[str, Any] | list[str | dict[str, Any]]


def _default_features() -> FeatureSpec:
    return [{"type": "ecfp", "counts": True}, {"type": "rdkit2d"}]


def without_n_jobs(spec: Any) -> Any:
    """Drop ``n_jobs`` from a featurizer spec: it changes speed, never the result."""
    if isinstance(spec, dict):
        return {k: without_n_jobs(v) for k, v in spec.items() if k != "n_jobs"}
    if isinstance(spec, list):
        return [without_n_jobs(v) for v in spec]
    return spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Strict):
    """Where the molecules come from and how to read them."""

    source: str = Field(description="A bundled dataset name (e.g. esol) or a file path.")
    smiles_column: str | None = None
    target_columns: list[str] | None = None
    task: Literal["regression", "classification"] | None = None
    duplicates: Literal["mean", "first", "drop_conflicting"] = "mean"
    standardize: bool = True
    tautomer: bool = False

    @field_validator("target_columns", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SplitConfig(_Strict):
    """How molecules are divided into train, validation and test sets."""

    method: Literal["random", "scaffold", "stratified", "cluster"] = "random"
    sizes: tuple[float, float, float] = (0.8, 0.1, 0.1)
    params: dict[str, Any] = Field(default_factory=dict)

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


class ModelConfig(_Strict):
    """Which estimator to fit, and its uncertainty settings."""

    estimator: Literal["lightgbm", "random_forest", "extra_trees", "knn", "svm", "linear"] = (
        "lightgbm"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    coverage: float = Field(default=0.9, gt=0.0, lt=1.0)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"


class EvaluationConfig(_Strict):
    """How the fitted model is scored."""

    n_bootstrap: int = Field(default=1000, ge=0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    plots: bool = True


class ExperimentConfig(_Strict):
    """A whole experiment: dataset -> standardize -> featurize -> split -> fit -> evaluate.

    Examples
    --------
    >>> cfg = parse_config({"dataset": {"source": "esol"}})
    >>> cfg.model.estimator, cfg.split.method, cfg.seed
    ('lightgbm', 'random', 0)
    """

    name: str = "experiment"
    seed: int = 0
    n_jobs: int = 1
    dataset: DatasetConfig
    features: FeatureSpec = Field(default_factory=_default_features)
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    promotion: dict[str, Any] | None = Field(
        default=None,
        description="Promotion gates for the registry, e.g. "
        "{'metrics': {'rmse': {'max': 0.7}}, 'require_signature': 'approved'}.",
    )

    @model_validator(mode="after")
    def _features_are_buildable(self) -> ExperimentConfig:
        from qemlflow.features import make_featurizer

        make_featurizer(self.features)
        return self

    def resolved(self) -> dict[str, Any]:
        """Return the full configuration, defaults filled in, as plain JSON-compatible data."""
        from qemlflow.features import make_featurizer

        data = self.model_dump(mode="json")
        data["features"] = without_n_jobs(make_featurizer(self.features).to_spec())
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
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML ({reason})", "fix the syntax") from None
    return parse_config(data, source=str(path))
