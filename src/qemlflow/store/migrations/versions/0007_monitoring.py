"""Monitoring of served models: ``monitor_minutes`` and ``monitor_references``.

One row of ``monitor_minutes`` is what one service process saw of one model version in one
aggregation window (counts and fixed-bin histograms, never SMILES); ``monitor_references``
holds each version's training reference. Neither is audited row by row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the two monitoring tables."""
    op.create_table(
        "monitor_minutes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("minute", sa.String(32), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("molecules", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("out_of_domain", sa.Integer(), nullable=False),
        sa.Column("latency_counts", sa.JSON(), nullable=False),
        sa.Column("prediction_counts", sa.JSON(), nullable=False),
        sa.Column("similarity_counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_monitor_minutes"),
    )
    op.create_index("ix_monitor_minutes_name", "monitor_minutes", ["name", "version", "minute"])
    op.create_table(
        "monitor_references",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("molecules", sa.Integer(), nullable=False),
        sa.Column("ood_rate", sa.Float(), nullable=False),
        sa.Column("prediction_edges", sa.JSON(), nullable=False),
        sa.Column("prediction_counts", sa.JSON(), nullable=False),
        sa.Column("similarity_counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="pk_monitor_references"),
    )


def downgrade() -> None:
    """Drop the monitoring tables."""
    op.drop_index("ix_monitor_minutes_name", table_name="monitor_minutes")
    op.drop_table("monitor_minutes")
    op.drop_table("monitor_references")
