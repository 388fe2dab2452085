"""The model registry's rows and API keys as frozen dataclasses, each with ``to_dict()``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = [
    "ALIAS_ACTIONS",
    "AliasAction",
    "AliasEventRecord",
    "ApiKeyRecord",
    "ModelVersionRecord",
]

AliasAction = Literal["promoted", "rolled_back", "removed"]
ALIAS_ACTIONS: tuple[str, ...] = get_args(AliasAction)


@dataclass(frozen=True)
class ModelVersionRecord:
    """One registered, immutable model version: ``name`` version ``version`` is run ``run_id``'s
    model, the blob ``model_digest`` (the exact bytes of its ``model.joblib``).

    Examples
    --------
    >>> r = ModelVersionRecord(name="sol", version=1, run_id="r", model_digest="a" * 64,
    ...                        fit_key="b" * 64, task="regression", target_names=("logS",),
    ...                        metrics={"rmse": 0.7}, created_at="t", created_by="Ada")
    >>> r.spec, r.to_dict()["target_names"]
    ('sol@1', ['logS'])
    """

    name: str
    version: int
    run_id: str
    model_digest: str
    fit_key: str
    task: str
    target_names: tuple[str, ...]
    metrics: dict[str, Any]
    created_at: str
    created_by: str

    @property
    def spec(self) -> str:
        """``NAME@VERSION``: how :func:`qemlflow.registry.resolve` names this version."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-compatible dict."""
        out = dataclasses.asdict(self)
        out["target_names"] = list(self.target_names)
        return out


@dataclass(frozen=True)
class AliasEventRecord:
    """One move of an alias: from then on ``name@alias`` is ``version`` (``None``: removed)."""

    id: int
    name: str
    alias: str
    version: int | None
    action: str
    at: str
    actor: str
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-compatible dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as stored: its id and name, never its secret (only a hash is kept)."""

    id: str
    name: str
    created_at: str
    revoked_at: str | None
    created_by: str

    @property
    def active(self) -> bool:
        """Whether the key still opens the door (not revoked)."""
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-compatible dict (with ``active``)."""
        return {**dataclasses.asdict(self), "active": self.active}
