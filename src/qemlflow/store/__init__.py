"""The provenance store: content-addressed blobs plus a metadata database.

Only this package touches the database and the blob files. Names load lazily (PEP 562):
``from qemlflow.store import canonical_json`` does not import SQLAlchemy.

Examples
--------
>>> from qemlflow.store import content_key
>>> len(content_key("split", 1, {"seed": 0}, [], {}))
64
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "Store": "qemlflow.store.store",
    "default_root": "qemlflow.store.store",
    "StepRecord": "qemlflow.store.records",
    "DatasetRecord": "qemlflow.store.records",
    "RunRecord": "qemlflow.store.records",
    "RunStepRecord": "qemlflow.store.records",
    "ArtifactRecord": "qemlflow.store.records",
    "ModelVersionRecord": "qemlflow.store.registry_records",
    "AliasEventRecord": "qemlflow.store.registry_records",
    "ApiKeyRecord": "qemlflow.store.registry_records",
    "VerifyReport": "qemlflow.store.care",
    "VerifyIssue": "qemlflow.store.care",
    "BackupReport": "qemlflow.store.care",
    "StoreError": "qemlflow.store.errors",
    "CorruptBlobError": "qemlflow.store.errors",
    "BlobNotFoundError": "qemlflow.store.errors",
    "canonical_json": "qemlflow.store.keys",
    "content_key": "qemlflow.store.keys",
    "plain_json": "qemlflow.store.keys",
    "sha256_hex": "qemlflow.store.keys",
    "capture_environment": "qemlflow.store.environment",
    "environment_drift": "qemlflow.store.environment",
    "head_revision": "qemlflow.store.database",
    "AuditEvent": "qemlflow.store.audit",
    "AuditReport": "qemlflow.store.audit",
    "verify_audit_chain": "qemlflow.store.audit",
}

__all__ = [
    "AliasEventRecord",
    "ApiKeyRecord",
    "ArtifactRecord",
    "AuditEvent",
    "AuditReport",
    "BackupReport",
    "BlobNotFoundError",
    "CorruptBlobError",
    "DatasetRecord",
    "ModelVersionRecord",
    "RunRecord",
    "RunStepRecord",
    "StepRecord",
    "Store",
    "StoreError",
    "VerifyIssue",
    "VerifyReport",
    "canonical_json",
    "capture_environment",
    "content_key",
    "default_root",
    "environment_drift",
    "head_revision",
    "plain_json",
    "sha256_hex",
    "verify_audit_chain",
]

if TYPE_CHECKING:
    from qemlflow.store.audit import AuditEvent, AuditReport, verify_audit_chain
    from qemlflow.store.care import BackupReport, VerifyIssue, VerifyReport
    from qemlflow.store.database import head_revision
    from qemlflow.store.environment import capture_environment, environment_drift
    from qemlflow.store.errors import BlobNotFoundError, CorruptBlobError, StoreError
    from qemlflow.store.keys import canonical_json, content_key, plain_json, sha256_hex
    from qemlflow.store.records import (
        ArtifactRecord,
        DatasetRecord,
        RunRecord,
        RunStepRecord,
        StepRecord,
    )
    from qemlflow.store.registry_records import (
        AliasEventRecord,
        ApiKeyRecord,
        ModelVersionRecord,
    )
    from qemlflow.store.store import Store, default_root


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qemlflow.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
