"""Out-of-domain SMILES of a monitoring window, kept only when the model's policy asks.

``monitor_minutes.ood_smiles`` is NULL unless the model's ``promotion.monitoring`` sets
``store_smiles: true``; then it holds at most 100 SMILES of the window's out-of-domain
molecules, as the requests gave them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the nullable ``ood_smiles`` column."""
    with op.batch_alter_table("monitor_minutes") as batch:
        batch.add_column(sa.Column("ood_smiles", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop ``ood_smiles``."""
    with op.batch_alter_table("monitor_minutes") as batch:
        batch.drop_column("ood_smiles")
