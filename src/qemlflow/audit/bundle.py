"""A run's verification bundle: everything a third party needs to recompute its keys.

:func:`run_bundle` gathers a run's step records (step, version, params, inputs, libraries,
key, output digest), the dataset version it read, and the store's whole audit chain (each
event's hashed content, previous hash, hash and hash scheme). ``scripts/verify_bundle.py``
recomputes every key and the chain from the bundle with hashlib and an RFC 8785 library
only, no QeMLflow: docs/keys.md states the formulas it applies.

The bundle is written with Python's ``json`` (``1.0`` stays ``1.0``), so that a reader
can tell the integral floats that a key records apart (``integral_floats``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow._atomic import write_atomic

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["BUNDLE_FORMAT", "run_bundle", "write_run_bundle"]

BUNDLE_FORMAT = "qemlflow-verification-bundle/1"


def run_bundle(store: Store, run: str) -> dict[str, Any]:
    """Return the verification bundle of ``run`` (an id or a unique prefix).

    A step whose record is gone (garbage-collected) or was written before records kept
    their libraries is listed with ``"record": null`` or ``"libraries": null``: its key
    cannot be recomputed, and the verifier says so.
    """
    from qemlflow.pipeline.datasets import DATASET_VERSION

    record = store.get_run(run)
    steps: list[dict[str, Any]] = []
    for position in record.steps:
        step = store.get_step(position.key)
        entry: dict[str, Any] = {
            "position": position.position,
            "step": position.step,
            "key": position.key,
            "output": position.output,
            "cache_hit": position.cache_hit,
            "record": None,
        }
        if step is not None:
            entry["record"] = {
                "step": step.step,
                "version": step.version,
                "params": step.params,
                "inputs": list(step.inputs),
                "libraries": step.libraries,
                "output": step.output,
            }
        steps.append(entry)
    raw = next((s["output"] for s in steps if s["step"] == "dataset"), None)
    datasets = [
        {
            "id": d.id,
            "name": d.name,
            "step": "dataset_version",
            "version": DATASET_VERSION,
            "params": d.params,
            "inputs": [d.raw_digest],
            "libraries": d.libraries,
        }
        for d in store.list_datasets()
        if raw is not None and d.raw_digest == raw and d.libraries is not None
    ]
    events = [event.to_dict() for event in store.audit_events()]
    return {
        "format": BUNDLE_FORMAT,
        "hashing": {
            "digest": "sha256, lowercase hex",
            "canonical_json": "RFC 8785 (JSON Canonicalization Scheme)",
            "formulas": "docs/keys.md",
        },
        "run": {
            "id": record.id,
            "name": record.name,
            "status": record.status,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
        },
        "steps": steps,
        "datasets": datasets,
        "audit": {"events": events, "head": store.audit_head()},
    }


def write_run_bundle(store: Store, run: str, path: Path) -> dict[str, Any]:
    """Write :func:`run_bundle` to ``path`` (atomically) and return it."""
    bundle = run_bundle(store, run)
    text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))
    return bundle
