"""Alembic migrations of the store's metadata schema (run programmatically at open)."""
