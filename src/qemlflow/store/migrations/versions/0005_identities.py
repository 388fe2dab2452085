"""Authenticated actors: signed audit events, enrolled identities and their keys.

- ``audit_events.signer``, ``auth`` and ``signature``: the fingerprint of the key that
  signed the event, how its holder authenticated, and the Ed25519 signature (base64). NULL
  on the events written before this revision (the legacy, unsigned prefix of the chain).
- ``identities`` (one row per enrolled email: name, role, kind, status) and
  ``identity_keys`` (one row per key: its email, public key, auth method and the chain
  span it is valid for). Both are projections of the identity events of the audit chain,
  written in the same transaction; verification replays the chain, not these tables.

Adding nullable columns rewrites no row, so the append-only triggers are not involved.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

DIGEST = sa.String(64)


def upgrade() -> None:
    """Add the signature columns of ``audit_events``; create the identity tables."""
    op.add_column("audit_events", sa.Column("signer", DIGEST, nullable=True))
    op.add_column("audit_events", sa.Column("auth", sa.String(32), nullable=True))
    op.add_column("audit_events", sa.Column("signature", sa.Text(), nullable=True))
    op.create_table(
        "identities",
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("enrolled_seq", sa.Integer(), nullable=False),
        sa.Column("updated_seq", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "role IN ('viewer', 'contributor', 'approver', 'admin')",
            name="ck_identities_role_known",
        ),
        sa.CheckConstraint("kind IN ('person', 'service')", name="ck_identities_kind_known"),
        sa.CheckConstraint("status IN ('active', 'revoked')", name="ck_identities_status_known"),
        sa.PrimaryKeyConstraint("email", name="pk_identities"),
    )
    op.create_table(
        "identity_keys",
        sa.Column("fingerprint", DIGEST, nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("auth", sa.String(32), nullable=False),
        sa.Column("valid_from_seq", sa.Integer(), nullable=False),
        sa.Column("revoked_seq", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["email"], ["identities.email"], name="fk_identity_keys_email_identities"
        ),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_identity_keys"),
    )
    op.create_index("ix_identity_keys_email", "identity_keys", ["email"])


def downgrade() -> None:
    """Drop the identity tables and the signature columns (the signatures are lost)."""
    op.drop_index("ix_identity_keys_email", table_name="identity_keys")
    op.drop_table("identity_keys")
    op.drop_table("identities")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("signature")
        batch.drop_column("auth")
        batch.drop_column("signer")
