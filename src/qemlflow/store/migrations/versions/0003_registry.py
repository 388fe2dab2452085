"""The model registry and API keys: model_versions, alias_events, api_keys.

Triggers refuse UPDATE and DELETE on ``model_versions`` and ``alias_events`` (and
TRUNCATE on PostgreSQL): a registered version is immutable and the alias history only
grows. ``api_keys`` rows are updated once, when a key is revoked.

Revision ID: 0003
Revises: 0002
Create Date: 2026-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

DIGEST = sa.String(64)
TIMESTAMP = sa.String(32)

_APPEND_ONLY = ("model_versions", "alias_events")
_PG_FUNCTION = "qemlflow_registry_append_only"


def upgrade() -> None:
    """Create the registry tables, the API key table and the append-only triggers."""
    op.create_table(
        "model_versions",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("model_digest", DIGEST, nullable=False),
        sa.Column("fit_key", DIGEST, nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("target_names", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_model_versions_run_id_runs"),
        sa.PrimaryKeyConstraint("name", "version", name="pk_model_versions"),
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("alias", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["name", "version"],
            ["model_versions.name", "model_versions.version"],
            name="fk_alias_events_name_model_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alias_events"),
    )
    op.create_index("ix_alias_events_name", "alias_events", ["name", "alias"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("key_hash", DIGEST, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # No '%' in the SQL: the driver would take it for a parameter marker.
        op.execute(
            f"CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  RAISE EXCEPTION USING MESSAGE = "
            "TG_TABLE_NAME || ' is append-only: ' || TG_OP || ' refused';\n"
            "END;\n"
            "$$"
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_FUNCTION}()"
            )
    else:
        for table in _APPEND_ONLY:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {operation} refused'); END"
                )


def downgrade() -> None:
    """Drop the registry and the API keys (their rows are lost; the audit trail keeps events)."""
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for table in _APPEND_ONLY:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    op.drop_table("api_keys")
    op.drop_index("ix_alias_events_name", table_name="alias_events")
    op.drop_table("alias_events")
    op.drop_index("ix_model_versions_run_id", table_name="model_versions")
    op.drop_table("model_versions")
