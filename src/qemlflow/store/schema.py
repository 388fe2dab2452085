"""The metadata tables (SQLAlchemy Core), portable between SQLite and PostgreSQL.

Timestamps are UTC ISO-8601 strings with microseconds (``2026-11-27T09:15:02.123456+00:00``):
the same text on every backend, sortable as text, JSON-ready. Digests and keys are
64-character sha256 hex strings. Blob digests are not foreign keys (blobs live on disk);
:meth:`qemlflow.store.Store.verify` checks every reference.

Any change here needs a new migration in ``store/migrations/versions/``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "RUN_STATUSES",
    "alias_events",
    "api_keys",
    "artifacts",
    "audit_checkpoints",
    "audit_events",
    "datasets",
    "identities",
    "identity_keys",
    "metadata",
    "model_versions",
    "monitor_minutes",
    "monitor_references",
    "run_steps",
    "runs",
    "steps",
]

RUN_STATUSES = ("running", "finished", "failed", "aborted")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

DIGEST = String(64)
TIMESTAMP = String(32)

steps = Table(
    "steps",
    metadata,
    Column("key", DIGEST, primary_key=True),
    Column("step", String(200), nullable=False),
    Column("version", String(64), nullable=False),
    Column("params", JSON, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("output", DIGEST, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("seconds", Float, nullable=False),
    # {library: version} as hashed into the key (NULL before migration 0004).
    Column("libraries", JSON, nullable=True),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", DIGEST, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("source", Text, nullable=False),
    Column("raw_digest", DIGEST, nullable=True),
    Column("table_digest", DIGEST, nullable=False),
    Column("rejected_digest", DIGEST, nullable=True),
    Column("params", JSON, nullable=False),
    Column("summary", JSON, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    # {library: version} as hashed into the id (NULL before migration 0004).
    Column("libraries", JSON, nullable=True),
    Index("ix_datasets_name", "name"),
    Index("ix_datasets_created_at", "created_at"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("config", JSON, nullable=False),
    Column("seed", BigInteger, nullable=True),
    Column("started_at", TIMESTAMP, nullable=False),
    Column("finished_at", TIMESTAMP, nullable=True),
    Column("error", Text, nullable=True),
    Column("environment", DIGEST, nullable=True),
    Column("metrics", JSON, nullable=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_started", BigInteger, nullable=True),
    CheckConstraint("status IN ('running', 'finished', 'failed', 'aborted')", name="status_known"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_started_at", "started_at"),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("step", String(200), nullable=False),
    Column("key", DIGEST, nullable=False),
    Column("output", DIGEST, nullable=True),
    Column("cache_hit", Boolean, nullable=False),
    Column("seconds", Float, nullable=False),
    Index("ix_run_steps_key", "key"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", String(40), ForeignKey("runs.id"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("kind", String(100), nullable=False),
    Index("ix_artifacts_digest", "digest"),
)

audit_events = Table(
    "audit_events",
    metadata,
    # seq is assigned by the writer (head + 1, under the write lock), never by the database.
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("timestamp", TIMESTAMP, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(100), nullable=False),
    Column("objects", JSON, nullable=False),
    Column("reason", Text, nullable=True),
    Column("details", JSON, nullable=False),
    Column("prev_hash", DIGEST, nullable=False),
    Column("hash", DIGEST, nullable=False),
    # How ``hash`` was taken: "jcs" (RFC 8785); NULL: the legacy json.dumps encoding of
    # events written before migration 0004. Not hashed itself: see store/audit.py.
    Column("hash_scheme", String(16), nullable=True),
    # Who signed the event (key fingerprint), how they authenticated, and the Ed25519
    # signature (base64); NULL on events written before migration 0005.
    Column("signer", DIGEST, nullable=True),
    Column("auth", String(32), nullable=True),
    Column("signature", Text, nullable=True),
    Index("ix_audit_events_timestamp", "timestamp"),
    Index("ix_audit_events_action", "action"),
)
"""The audit trail: append-only (triggers refuse UPDATE/DELETE), hash-chained by seq."""

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    # seq is the head the checkpoint pins (one checkpoint per head), not a row counter.
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("hash", DIGEST, nullable=False),
    Column("timestamp", TIMESTAMP, nullable=False),
    Column("signer", DIGEST, nullable=False),
    Column("auth", String(32), nullable=False),
    Column("public_key", Text, nullable=True),
    Column("signature", Text, nullable=False),
)
"""Signed checkpoints of the audit chain head: append-only, like ``audit_events``."""

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(40), ForeignKey("runs.id"), nullable=False),
    Column("model_digest", DIGEST, nullable=False),
    Column("fit_key", DIGEST, nullable=False),
    Column("task", String(32), nullable=False),
    Column("target_names", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("created_by", Text, nullable=False),
    Index("ix_model_versions_run_id", "run_id"),
)
"""Registered model versions: immutable (triggers refuse UPDATE/DELETE), numbered per name."""

alias_events = Table(
    "alias_events",
    metadata,
    # id is assigned by the writer (max + 1, under the write lock), as audit_events.seq is:
    # a restore copies rows verbatim and no database sequence has to be reset afterwards.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("alias", String(100), nullable=False),
    Column("version", Integer, nullable=True),
    Column("action", String(32), nullable=False),
    Column("at", TIMESTAMP, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=True),
    ForeignKeyConstraint(["name", "version"], ["model_versions.name", "model_versions.version"]),
    Index("ix_alias_events_name", "name", "alias"),
)
"""Where each alias pointed, and when: append-only; the latest row of (name, alias) is current.

A ``version`` of NULL means the alias was removed.
"""

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", DIGEST, nullable=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("revoked_at", TIMESTAMP, nullable=True),
    Column("created_by", Text, nullable=False),
)
"""API keys: only a salted hash of each secret is kept (see ``Store.create_api_key``)."""

identities = Table(
    "identities",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("enrolled_seq", Integer, nullable=False),
    Column("updated_seq", Integer, nullable=False),
    CheckConstraint("role IN ('viewer', 'contributor', 'approver', 'admin')", name="role_known"),
    CheckConstraint("kind IN ('person', 'service')", name="kind_known"),
    CheckConstraint("status IN ('active', 'revoked')", name="status_known"),
)
"""Enrolled identities, one role each: a projection of the audit chain's identity events."""

identity_keys = Table(
    "identity_keys",
    metadata,
    Column("fingerprint", DIGEST, primary_key=True),
    Column("email", String(320), ForeignKey("identities.email"), nullable=False),
    Column("public_key", String(64), nullable=False),
    Column("auth", String(32), nullable=False),
    Column("valid_from_seq", Integer, nullable=False),
    Column("revoked_seq", Integer, nullable=True),
    Index("ix_identity_keys_email", "email"),
)
"""Each identity's Ed25519 keys (raw public key, base64) and the chain span they are valid for."""

monitor_minutes = Table(
    "monitor_minutes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("minute", TIMESTAMP, nullable=False),
    Column("seconds", Integer, nullable=False),
    Column("requests", Integer, nullable=False),
    Column("molecules", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("out_of_domain", Integer, nullable=False),
    Column("latency_counts", JSON, nullable=False),
    Column("prediction_counts", JSON, nullable=False),
    Column("similarity_counts", JSON, nullable=False),
    # NULL unless the model's policy sets store_smiles (migration 0008): then at most 100
    # SMILES of the window's out-of-domain molecules.
    Column("ood_smiles", JSON, nullable=True),
    Index("ix_monitor_minutes_name", "name", "version", "minute"),
)
"""What a service saw of one model version in one aggregation window (counts, histograms;
no SMILES unless the policy asks). Several service processes may each write a row for the
same minute."""

monitor_references = Table(
    "monitor_references",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("created_at", TIMESTAMP, nullable=False),
    Column("molecules", Integer, nullable=False),
    Column("ood_rate", Float, nullable=False),
    Column("prediction_edges", JSON, nullable=False),
    Column("prediction_counts", JSON, nullable=False),
    Column("similarity_counts", JSON, nullable=False),
)
"""The training reference of a model version: its training-set prediction histogram (bins
cut at their deciles), leave-one-out domain similarity histogram and out-of-domain rate."""
