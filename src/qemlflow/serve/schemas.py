"""The shapes of the prediction service's requests and responses (its OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DomainScore",
    "HealthResponse",
    "ModelInfo",
    "ModelsResponse",
    "PredictRequest",
    "PredictResponse",
    "PredictionResult",
    "ReadyResponse",
    "TaskPrediction",
]


class PredictRequest(BaseModel):
    """Molecules to score, as SMILES; the response has one result per entry, in order."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"smiles": ["CCO", "c1ccccc1O"]}]}
    )

    smiles: list[str] = Field(description="SMILES strings, one molecule each.")


class DomainScore(BaseModel):
    """How close the molecule is to the training set (nearest-neighbour ECFP4 Tanimoto)."""

    similarity: float | None = Field(
        description="Highest Tanimoto similarity to a training molecule (null if invalid)."
    )
    in_domain: bool = Field(description="similarity >= threshold.")
    threshold: float = Field(description="The similarity threshold used.")


class TaskPrediction(BaseModel):
    """The prediction for one task of a multi-task model."""

    prediction: float | None = None
    lower: float | None = None
    upper: float | None = None
    probability: float | None = None
    ensemble_sd: float | None = None


class PredictionResult(BaseModel):
    """The result for one input molecule: its prediction, or why it has none."""

    smiles: str = Field(description="The SMILES as given.")
    standardized_smiles: str | None = Field(
        description="The SMILES the model scored (null if the molecule is invalid)."
    )
    prediction: float | None = Field(
        description="Predicted value (regression) or class 0/1 (classification)."
    )
    lower: float | None = Field(default=None, description="Prediction interval, lower end.")
    upper: float | None = Field(default=None, description="Prediction interval, upper end.")
    probability: float | None = Field(default=None, description="Probability of class 1.")
    ensemble_sd: float | None = Field(
        default=None,
        description="Standard deviation of an ensemble's members' predictions (values, or "
        "class-1 probabilities): their spread, beside the interval (null for other models).",
    )
    tasks: dict[str, TaskPrediction] | None = Field(
        default=None, description="Per-task predictions of a multi-task model (else null)."
    )
    domain: DomainScore
    model: str = Field(description="Registered model name.")
    model_version: int = Field(description="Version of the model that answered.")
    error: str | None = Field(description="Why the molecule was not scored (null if it was).")


class PredictResponse(BaseModel):
    """Results row-aligned with the request: ``results[i]`` belongs to ``smiles[i]``."""

    model: str
    model_version: int
    domain_threshold: float
    results: list[PredictionResult]


class ModelInfo(BaseModel):
    """The model being served."""

    name: str
    version: int
    spec: str = Field(description="What the service follows: NAME, NAME@ALIAS or NAME@N.")
    run_id: str
    model_digest: str
    task: str
    target_names: list[str]
    metrics: dict[str, object]
    aliases: dict[str, int] = Field(description="The model's aliases in the registry now.")
    loaded_at: str
    limits: dict[str, float] = Field(
        description="The model's admission limits per molecule (max_smiles_length, "
        "max_heavy_atoms, time_budget_seconds); a molecule over them gets a per-row error."
    )
    refused_versions: list[int] = Field(
        description="Versions that failed their smoke test and were never served."
    )


class ModelsResponse(BaseModel):
    """What ``GET /models`` returns."""

    serving: ModelInfo
    poll_seconds: float


class HealthResponse(BaseModel):
    """Liveness."""

    status: str = "ok"


class ReadyResponse(BaseModel):
    """Readiness: a model is loaded and passed its smoke test."""

    ready: bool
    model: str | None = None
    model_version: int | None = None
