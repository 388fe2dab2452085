"""Signed checkpoints of the audit chain head: ``audit_checkpoints``.

Each row pins the head of the chain at one event (``seq``, its ``hash``) and is signed by the
principal that wrote it (Ed25519, see :mod:`qemlflow.store.checkpoints`). A checkpoint past
the log's last event shows that the tail was truncated, without an anchor kept outside the
store. Triggers refuse UPDATE and DELETE on the table (and TRUNCATE on PostgreSQL), as on
``audit_events``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_TABLE = "audit_checkpoints"
_SQLITE_TRIGGERS = {
    f"{_TABLE}_no_update": "UPDATE",
    f"{_TABLE}_no_delete": "DELETE",
}
_PG_FUNCTION = "qemlflow_audit_checkpoints_append_only"


def upgrade() -> None:
    """Create ``audit_checkpoints`` and the triggers that keep it append-only."""
    op.create_table(
        _TABLE,
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("timestamp", sa.String(32), nullable=False),
        sa.Column("signer", sa.String(64), nullable=False),
        sa.Column("auth", sa.String(32), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=f"pk_{_TABLE}"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # No '%' in the SQL: the driver would take it for a parameter marker.
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            f"  RAISE EXCEPTION USING MESSAGE = '{_TABLE} is append-only: ' || TG_OP || "
            "' refused';\n"
            "END;\n"
            "$$"
        )
        op.execute(
            f"CREATE TRIGGER {_TABLE}_append_only BEFORE UPDATE OR DELETE ON {_TABLE} "
            f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
        op.execute(
            f"CREATE TRIGGER {_TABLE}_no_truncate BEFORE TRUNCATE ON {_TABLE} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_FUNCTION}()"
        )
    else:
        for name, operation in _SQLITE_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {operation} ON {_TABLE} BEGIN "
                f"SELECT RAISE(ABORT, '{_TABLE} is append-only: {operation} refused'); END"
            )


def downgrade() -> None:
    """Drop the checkpoints (the chain itself is untouched)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_no_truncate ON {_TABLE}")
        op.execute(f"DROP TRIGGER IF EXISTS {_TABLE}_append_only ON {_TABLE}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table(_TABLE)
