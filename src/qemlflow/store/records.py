"""The store's rows as frozen dataclasses, each with a JSON-ready ``to_dict()``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "ArtifactRecord",
    "DatasetRecord",
    "RunRecord",
    "RunStepRecord",
    "StepRecord",
    "utc_now",
]


def utc_now() -> str:
    """Return the current UTC time as the store writes it (ISO 8601, microseconds).

    Examples
    --------
    >>> utc_now().endswith("+00:00")
    True
    """
    return datetime.now(UTC).isoformat(timespec="microseconds")


class _Record:
    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-compatible dict (tuples become lists)."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True)
class StepRecord(_Record):
    """One cached step output: ``key`` (the content key) -> ``output`` (a blob digest).

    ``libraries`` is the ``{library: version}`` map hashed into ``key``, so that the key
    can be recomputed from the record (``None`` for records written before it was kept).

    Examples
    --------
    >>> r = StepRecord(key="a" * 64, step="featurize", version="1", params={"r": 2},
    ...                inputs=("b" * 64,), output="c" * 64, seconds=0.5)
    >>> r.to_dict()["inputs"] == ["b" * 64]
    True
    """

    key: str
    step: str
    version: str
    params: dict[str, Any]
    inputs: tuple[str, ...]
    output: str
    seconds: float = 0.0
    created_at: str = field(default_factory=utc_now)
    libraries: dict[str, str] | None = None


@dataclass(frozen=True)
class DatasetRecord(_Record):
    """One immutable dataset version; ``id`` is the dataset step's content key.

    ``libraries`` is the ``{library: version}`` map hashed into ``id`` (the standardizer's
    and RDKit's versions); ``None`` for versions recorded before it was kept.
    """

    id: str
    name: str
    source: str
    table_digest: str
    raw_digest: str | None = None
    rejected_digest: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=utc_now)
    libraries: dict[str, str] | None = None


@dataclass(frozen=True)
class RunStepRecord(_Record):
    """One step as executed in a run (``cache_hit`` when it was not recomputed)."""

    run_id: str
    position: int
    step: str
    key: str
    output: str | None
    cache_hit: bool
    seconds: float


@dataclass(frozen=True)
class ArtifactRecord(_Record):
    """A named file a run produced (``predictions.csv``), stored as a blob."""

    run_id: str
    name: str
    digest: str
    kind: str


@dataclass(frozen=True)
class RunRecord(_Record):
    """A run with its steps (by position) and artifacts (by name)."""

    id: str
    name: str
    status: str
    config: dict[str, Any]
    seed: int | None
    started_at: str
    finished_at: str | None
    error: str | None
    environment: str | None
    metrics: dict[str, Any] | None
    host: str
    pid: int
    pid_started: int | None
    steps: tuple[RunStepRecord, ...] = ()
    artifacts: tuple[ArtifactRecord, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the run as a JSON-compatible dict, steps and artifacts as lists of dicts."""
        out = super().to_dict()
        out["steps"] = [s.to_dict() for s in self.steps]
        out["artifacts"] = [a.to_dict() for a in self.artifacts]
        return out
