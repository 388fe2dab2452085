"""Recomputable keys: the libraries behind each key, the hashing scheme of each event.

- ``steps.libraries`` and ``datasets.libraries``: the ``{library: version}`` map that went
  into the key (``content_key``), so that anyone can recompute a key later from the
  record alone. NULL for rows written before this revision (their keys named a fixed
  library list, see docs/keys.md).
- ``audit_events.hash_scheme``: how the event's hash was taken. ``"jcs"`` (RFC 8785) for
  events written from this revision on; NULL for the events written before, which were
  hashed over Python's ``json.dumps`` and are verified with that legacy encoder.

Adding nullable columns rewrites no row, so the append-only triggers are not involved.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``steps.libraries``, ``datasets.libraries`` and ``audit_events.hash_scheme``."""
    op.add_column("steps", sa.Column("libraries", sa.JSON(), nullable=True))
    op.add_column("datasets", sa.Column("libraries", sa.JSON(), nullable=True))
    op.add_column("audit_events", sa.Column("hash_scheme", sa.String(16), nullable=True))


def downgrade() -> None:
    """Drop the three columns (keys stay valid; they can no longer be recomputed)."""
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hash_scheme")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("libraries")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("libraries")
