"""Initial schema: steps, datasets, runs, run_steps, artifacts.

Revision ID: 0001
Revises:
Create Date: 2026-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

DIGEST = sa.String(64)
TIMESTAMP = sa.String(32)


def upgrade() -> None:
    """Create the five tables of the first store format."""
    op.create_table(
        "steps",
        sa.Column("key", DIGEST, nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("output", DIGEST, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_steps"),
    )
    op.create_table(
        "datasets",
        sa.Column("id", DIGEST, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("raw_digest", DIGEST, nullable=True),
        sa.Column("table_digest", DIGEST, nullable=False),
        sa.Column("rejected_digest", DIGEST, nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
    )
    op.create_index("ix_datasets_name", "datasets", ["name"])
    op.create_index("ix_datasets_created_at", "datasets", ["created_at"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("environment", DIGEST, nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_started", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed', 'aborted')",
            name="ck_runs_status_known",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_table(
        "run_steps",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("key", DIGEST, nullable=False),
        sa.Column("output", DIGEST, nullable=True),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_steps_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", "position", name="pk_run_steps"),
    )
    op.create_index("ix_run_steps_key", "run_steps", ["key"])
    op.create_table(
        "artifacts",
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_artifacts_run_id_runs"),
        sa.PrimaryKeyConstraint("run_id", "name", name="pk_artifacts"),
    )
    op.create_index("ix_artifacts_digest", "artifacts", ["digest"])


def downgrade() -> None:
    """Drop every table (the store becomes empty)."""
    for index, table in [
        ("ix_artifacts_digest", "artifacts"),
        ("ix_run_steps_key", "run_steps"),
        ("ix_runs_started_at", "runs"),
        ("ix_runs_status", "runs"),
        ("ix_datasets_created_at", "datasets"),
        ("ix_datasets_name", "datasets"),
    ]:
        op.drop_index(index, table_name=table)
    for table in ("artifacts", "run_steps", "runs", "datasets", "steps"):
        op.drop_table(table)
