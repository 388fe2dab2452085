"""Where did this come from? The provenance graph of a run, model or artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow.errors import QeMLflowError

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["lineage"]


def _step_node(store: Store, key: str, seen: set[str]) -> dict[str, Any]:
    """A step and, recursively, the steps (and raw data) it was computed from."""
    record = store.steps.get(key)
    if record is None:
        # Not a step key: the dataset step's input is the raw file's digest.
        return {"kind": "raw", "digest": key}
    node: dict[str, Any] = {
        "kind": "step",
        "step": record.step,
        "version": record.version,
        "key": record.key,
        "output": record.output,
        "params": record.params,
    }
    if key in seen:
        node["repeated"] = True
        return node
    seen.add(key)
    node["inputs"] = [_step_node(store, k, seen) for k in record.inputs]
    return node


def _run_node(store: Store, run_id: str) -> dict[str, Any]:
    run = store.runs.get(run_id)
    producers = {s.output: s.step for s in run.steps if s.output}
    final = [s for s in run.steps if s.step == "evaluate"] or list(run.steps[-1:])
    seen: set[str] = set()
    return {
        "kind": "run",
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "started_at": run.started_at,
        "environment": run.environment,
        "artifacts": [
            {
                "kind": "artifact",
                "name": a.name,
                "digest": a.digest,
                "produced_by": producers.get(a.digest, "run"),
            }
            for a in run.artifacts
        ],
        "inputs": [_step_node(store, s.key, seen) for s in final],
    }


def _file_digest(ref: str) -> str | None:
    path = Path(ref)
    if path.is_dir() and (path / "model.joblib").is_file():
        path = path / "model.joblib"
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lineage(store: Store, ref: str) -> dict[str, Any]:
    """Return the provenance graph of a run id, a model or artifact (digest or file), or a
    step key, down to the raw data's digest.

    ``ref`` may be a run id (or unique prefix), a path to a file the store holds (such as
    a ``model.joblib``), a blob digest (or prefix) of a step output or artifact, or a step
    key (or prefix).
    """
    from qemlflow.store import StoreError

    try:
        return _run_node(store, store.runs.get(ref).id)
    except StoreError:
        pass
    digest = _file_digest(ref) or ref.lower()
    for step in store.steps.find(output_prefix=digest):
        node = _step_node(store, step.key, set())
        node["used_by_runs"] = store.runs.using_step(step.key)
        return node
    for artifact in store.runs.find_artifacts(digest_prefix=digest):
        node = _run_node(store, artifact.run_id)
        return {
            "kind": "artifact",
            "name": artifact.name,
            "digest": artifact.digest,
            "run": node,
        }
    for step in store.steps.find(key_prefix=digest):
        node = _step_node(store, step.key, set())
        node["used_by_runs"] = store.runs.using_step(step.key)
        return node
    raise QeMLflowError(
        f"'{ref}' is not a run, model, artifact or step key in this store",
        "give a run id from 'qemlflow runs list', a model file, or a digest",
    )
