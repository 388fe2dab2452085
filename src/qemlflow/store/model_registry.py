"""The model registry repository: immutable model versions and the history of their aliases.

Registering a version and moving an alias each append an audit event in the same
transaction as the row. The registry's rules (promotion gates, policies) live in
:mod:`qemlflow.registry`; this repository stores what they decided.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, RowMapping

from qemlflow.store import schema
from qemlflow.store.audit import append_event
from qemlflow.store.blobs import BlobStore, is_digest
from qemlflow.store.errors import StoreError
from qemlflow.store.keys import plain_json
from qemlflow.store.records import utc_now
from qemlflow.store.registry_records import (
    ALIAS_ACTIONS,
    AliasAction,
    AliasEventRecord,
    ModelVersionRecord,
)
from qemlflow.store.runs import RUNS_FIX, run_status
from qemlflow.store.transactions import Database

__all__ = ["MODELS_FIX", "MODEL_NAME_PATTERN", "ModelRegistry"]

MODELS_FIX = "list registered models with `qemlflow models list`"
MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,99}")
"""Model names and aliases: lowercase letters, digits, ``_``, ``.``, ``-``; at most 100."""
_MAX_VERSION = 2**31 - 1  # the version column is a 32-bit integer on PostgreSQL


def _model_version_from(row: Mapping[Any, Any]) -> ModelVersionRecord:
    return ModelVersionRecord(
        name=row["name"],
        version=int(row["version"]),
        run_id=row["run_id"],
        model_digest=row["model_digest"],
        fit_key=row["fit_key"],
        task=row["task"],
        target_names=tuple(row["target_names"]),
        metrics=dict(row["metrics"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
    )


def _alias_event_from(row: Mapping[Any, Any]) -> AliasEventRecord:
    return AliasEventRecord(
        id=int(row["id"]),
        name=row["name"],
        alias=row["alias"],
        version=None if row["version"] is None else int(row["version"]),
        action=row["action"],
        at=row["at"],
        actor=row["actor"],
        reason=row["reason"],
    )


def check_model_name(name: str, what: str = "model name") -> None:
    """Refuse a model name (or alias, ``what``) outside :data:`MODEL_NAME_PATTERN`."""
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise StoreError(
            f"{what} {name!r} is not allowed",
            "use lowercase letters, digits, '_', '.' and '-', starting with a letter or digit "
            "(at most 100 characters)",
        )


def _version_row(conn: Connection, name: str, version: int) -> RowMapping:
    t = schema.model_versions
    row = None
    if 1 <= int(version) <= _MAX_VERSION:  # beyond it no row can exist (nor be queried)
        row = conn.execute(select(t).where(t.c.name == name, t.c.version == int(version))).first()
    if row is None:
        exists = conn.execute(select(t.c.name).where(t.c.name == name).limit(1)).first()
        if exists is None:
            raise StoreError(f"no model named {name!r}", MODELS_FIX)
        raise StoreError(
            f"model {name!r} has no version {version}",
            f"list its versions with `qemlflow models show {name}`",
        )
    return row._mapping


def _aliases(conn: Connection, name: str) -> dict[str, int]:
    t = schema.alias_events
    current: dict[str, int | None] = {}
    for alias, version in conn.execute(
        select(t.c.alias, t.c.version).where(t.c.name == name).order_by(t.c.id)
    ):
        current[alias] = version
    return {a: int(v) for a, v in sorted(current.items()) if v is not None}


class ModelRegistry:
    """The registered models of a store (``store.registry``).

    Register through :func:`qemlflow.registry.register` and promote through
    :func:`qemlflow.registry.promote`, which find the digests and run the gates; this
    repository records what they decided.
    """

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def register(
        self,
        name: str,
        run_id: str,
        model_digest: str,
        fit_key: str,
        task: str,
        target_names: Sequence[str],
        metrics: Mapping[str, Any],
    ) -> ModelVersionRecord:
        """Register the model of finished run ``run_id`` as the next version of ``name``.

        Versions count 1, 2, ... per name (drawn inside the write transaction); a version
        is immutable. Appends a ``model.registered`` audit event.
        """
        check_model_name(name)
        self._blobs.require(f"model {name!r}", model_digest)
        if not is_digest(fit_key):
            raise StoreError(f"fit key {fit_key!r} is not a sha256 hex digest", RUNS_FIX)
        t = schema.model_versions
        with self._db.writing() as conn:
            status = run_status(conn, run_id)
            if status != "finished":
                raise StoreError(
                    f"run {run_id} is {status}; only a finished run's model can be registered",
                    "register a finished run (`qemlflow runs list`)",
                )
            latest = conn.execute(select(func.max(t.c.version)).where(t.c.name == name)).scalar()
            values = {
                "name": name,
                "version": int(latest or 0) + 1,
                "run_id": run_id,
                "model_digest": model_digest,
                "fit_key": fit_key,
                "task": task,
                "target_names": [str(n) for n in target_names],
                "metrics": plain_json(dict(metrics)),
                "created_at": utc_now(),
            }
            # The event first: its actor is the authenticated identity, the registrant.
            event = append_event(
                conn,
                "model.registered",
                {
                    "model_name": name,
                    "model_version": f"{name}@{values['version']}",
                    "model": model_digest,
                    "run": run_id,
                },
                details={
                    "name": name,
                    "version": values["version"],
                    "fit_key": fit_key,
                    "task": task,
                    "metrics": values["metrics"],
                },
            )
            values["created_by"] = event.actor
            conn.execute(insert(t).values(**values))
            record = _model_version_from(values)
        return record

    def get(self, name: str, version: int) -> ModelVersionRecord:
        """Return version ``version`` of model ``name`` (a :class:`StoreError` if none)."""
        with self._db.reading() as conn:
            return _model_version_from(_version_row(conn, name, version))

    def versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        """Return the registered versions (of ``name``, or of every model), by name and version."""
        t = schema.model_versions
        query = select(t).order_by(t.c.name, t.c.version)
        if name is not None:
            query = query.where(t.c.name == name)
        with self._db.reading() as conn:
            rows = conn.execute(query).all()
        return [_model_version_from(r._mapping) for r in rows]

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None,
        reason: str | None = None,
        *,
        action: AliasAction = "promoted",
        details: Mapping[str, Any] | None = None,
    ) -> AliasEventRecord:
        """Point ``name@alias`` at ``version`` (``None`` removes the alias); return the move.

        Appends a row to the alias history and, in the same transaction, the audit event
        ``model.promoted`` or ``model.rolled_back`` (``action``), or ``model.alias_removed``
        when ``version`` is ``None``. ``details`` (small JSON) go into the event, e.g. the
        promotion gates that passed. This moves the alias unconditionally: promote through
        :func:`qemlflow.registry.promote`, which runs the promotion gates first.
        """
        check_model_name(name)
        check_model_name(alias, "alias")
        if alias.isdigit() or alias == "latest":
            raise StoreError(
                f"alias {alias!r} is reserved",
                "NAME@N means version N and NAME@latest the newest: give the alias a name",
            )
        if action not in ALIAS_ACTIONS:
            raise StoreError(f"unknown alias action {action!r}", f"use one of {ALIAS_ACTIONS}")
        if version is None:
            action = "removed"
        elif action == "removed":
            raise StoreError("action 'removed' moves the alias to no version", "pass version=None")
        t = schema.alias_events
        with self._db.writing() as conn:
            target = None if version is None else _version_row(conn, name, version)
            previous = _aliases(conn, name).get(alias)
            last_id = conn.execute(select(func.max(t.c.id))).scalar()
            values: dict[str, Any] = {
                "id": int(last_id or 0) + 1,
                "name": name,
                "alias": alias,
                "version": None if version is None else int(version),
                "action": action,
                "at": utc_now(),
                "reason": reason,
            }
            objects: dict[str, str | None] = {"model_name": name}
            if target is not None:
                objects.update(
                    model_version=f"{name}@{version}",
                    model=target["model_digest"],
                    run=target["run_id"],
                )
            event = append_event(
                conn,
                "model.alias_removed" if version is None else f"model.{action}",
                objects,
                reason=reason,
                details={
                    "name": name,
                    "alias": alias,
                    "version": values["version"],
                    "previous": previous,
                    **plain_json(dict(details or {})),
                },
            )
            values["actor"] = event.actor  # the authenticated identity, as its event says
            conn.execute(insert(t).values(**values))
        return _alias_event_from(values)

    def aliases(self, name: str) -> dict[str, int]:
        """Return alias -> version for model ``name`` (removed aliases left out)."""
        with self._db.reading() as conn:
            return _aliases(conn, name)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEventRecord]:
        """Return every move of ``name@alias`` (of every alias of ``name``), oldest first."""
        t = schema.alias_events
        query = select(t).where(t.c.name == name).order_by(t.c.id)
        if alias is not None:
            query = query.where(t.c.alias == alias)
        with self._db.reading() as conn:
            rows = conn.execute(query).all()
        return [_alias_event_from(r._mapping) for r in rows]
