"""The provenance store: one folder of blobs plus a metadata database.

Open it with :meth:`Store.open`; every read and write of QeMLflow's cache index,
datasets, runs and artifacts goes through it. Each state change appends an event to the
audit trail (:mod:`qemlflow.store.audit`) in the same transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from qemlflow.store import schema
from qemlflow.store.audit import (
    AuditCheck,
    AuditEvent,
    AuditReport,
    append_event,
    audit_head,
    current_actor,
    lock_audit_log,
    missing_append_only_triggers,
    read_events,
    verify_audit_chain,
)
from qemlflow.store.blobs import BlobStore, is_digest
from qemlflow.store.database import (
    READ_ONLY,
    create_store_engine,
    current_revision,
    folder_lock,
    is_postgres_url,
    normalize_database_url,
    upgrade_schema,
)
from qemlflow.store.errors import StoreError
from qemlflow.store.keys import canonical_json, plain_json
from qemlflow.store.processes import hostname, process_alive, process_start_time
from qemlflow.store.records import (
    ArtifactRecord,
    DatasetRecord,
    RunRecord,
    RunStepRecord,
    StepRecord,
    utc_now,
)
from qemlflow.store.registry_records import (
    ALIAS_ACTIONS,
    AliasAction,
    AliasEventRecord,
    ApiKeyRecord,
    ModelVersionRecord,
)

if TYPE_CHECKING:  # care imports this module
    from qemlflow.store.care import BackupReport, VerifyReport

__all__ = [
    "API_KEY_PREFIX",
    "DEFAULT_DIRNAME",
    "MODEL_NAME_PATTERN",
    "STORE_FORMAT",
    "Store",
    "default_root",
]

DEFAULT_DIRNAME = ".qemlflow"
STORE_FORMAT = 1
HOME_ENV = "QEMLFLOW_HOME"
DATABASE_ENV = "QEMLFLOW_DATABASE_URL"
_RUNS_FIX = "list runs with `qemlflow runs list`"
_DATASETS_FIX = "list datasets with `qemlflow data list`"
_MODELS_FIX = "list registered models with `qemlflow models list`"
MODEL_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,99}")
"""Model names and aliases: lowercase letters, digits, ``_``, ``.``, ``-``; at most 100."""
_MAX_VERSION = 2**31 - 1  # the version column is a 32-bit integer on PostgreSQL
API_KEY_PREFIX = "qmf_"
_API_KEY_ID = re.compile(r"qk_[0-9a-f]{8}")
_API_KEY_SECRET = re.compile(r"[0-9a-f]{64}")
_API_KEY_HASH_TAG = b"qemlflow.api-key/1"


def default_root() -> Path:
    """Return the default store folder: ``$QEMLFLOW_HOME`` or ``./.qemlflow``.

    Examples
    --------
    >>> import os
    >>> os.environ.get("QEMLFLOW_HOME") is not None or default_root().name == ".qemlflow"
    True
    """
    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser().absolute() if home else Path.cwd() / DEFAULT_DIRNAME


def _new_run_id() -> str:
    now = datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreError(
            f"cannot read the store settings {path}: {exc}",
            "fix or delete the file (it only records the database URL)",
        ) from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not a JSON object", "fix or delete the file")
    return data


def _write_settings(path: Path, settings: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold a password
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(dict(settings), handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _insert_ignore(conn: Connection, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert a row unless its primary key exists (race-safe, no error); return if inserted."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt = sqlite_dialect.insert(table).values(**values).on_conflict_do_nothing()
        return bool(conn.execute(stmt).rowcount == 1)
    if dialect == "postgresql":  # psycopg reports no rowcount here: ask for the new row
        stmt_pg = pg_dialect.insert(table).values(**values).on_conflict_do_nothing()
        key = next(iter(table.primary_key.columns))
        return conn.execute(stmt_pg.returning(key)).first() is not None
    try:  # pragma: no cover - other backends are not supported
        with conn.begin_nested():
            conn.execute(insert(table).values(**values))
    except IntegrityError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def _test_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's metrics an audit event keeps: the test scores, or the scalars."""
    test = metrics.get("test")
    if isinstance(test, Mapping):
        return {"test": plain_json(dict(test))}
    return {
        k: plain_json(v)
        for k, v in metrics.items()
        if v is None or isinstance(v, bool | int | float | str)
    }


def _step_from(row: RowMapping) -> StepRecord:
    return StepRecord(
        key=row["key"],
        step=row["step"],
        version=row["version"],
        params=row["params"],
        inputs=tuple(row["inputs"]),
        output=row["output"],
        seconds=row["seconds"],
        created_at=row["created_at"],
        libraries=row["libraries"],
    )


def _dataset_from(row: RowMapping) -> DatasetRecord:
    return DatasetRecord(
        id=row["id"],
        name=row["name"],
        source=row["source"],
        table_digest=row["table_digest"],
        raw_digest=row["raw_digest"],
        rejected_digest=row["rejected_digest"],
        params=row["params"],
        summary=row["summary"],
        created_at=row["created_at"],
        libraries=row["libraries"],
    )


def _run_from(
    row: RowMapping,
    steps: Sequence[RunStepRecord] = (),
    artifacts: Sequence[ArtifactRecord] = (),
) -> RunRecord:
    return RunRecord(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        config=row["config"],
        seed=row["seed"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        environment=row["environment"],
        metrics=row["metrics"],
        host=row["host"],
        pid=row["pid"],
        pid_started=row["pid_started"],
        steps=tuple(steps),
        artifacts=tuple(artifacts),
    )


def _api_key_hash(key_id: str, secret: str) -> str:
    """sha256 of a tag, the key id (a per-key salt) and the 256-bit random secret.

    No slow KDF (scrypt, PBKDF2): the secret is 256 random bits, not a password, so there
    is nothing to brute-force, and a slow hash would only slow every checked request.
    """
    message = b"\0".join((_API_KEY_HASH_TAG, key_id.encode(), secret.encode()))
    return hashlib.sha256(message).hexdigest()


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


def _api_key_from(row: Mapping[Any, Any]) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        created_by=row["created_by"],
    )


def _check_model_name(name: str, what: str = "model name") -> None:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise StoreError(
            f"{what} {name!r} is not allowed",
            "use lowercase letters, digits, '_', '.' and '-', starting with a letter or digit "
            "(at most 100 characters)",
        )


class Store:
    """A QeMLflow store: content-addressed blobs in a folder, metadata in SQL.

    Use :meth:`Store.open` rather than the constructor. A store is a context manager;
    :meth:`close` releases the database connections.

    Examples
    --------
    >>> import tempfile
    >>> with Store.open(Path(tempfile.mkdtemp()) / "store") as store:
    ...     digest = store.put_bytes(b"features")
    ...     store.get_bytes(digest)
    b'features'
    """

    def __init__(self, root: Path, engine: Engine) -> None:
        self.root = root
        self._engine = engine
        self.objects = BlobStore(root / "objects")

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
    ) -> Store:
        """Open the store at ``location``, creating it (and its schema) when missing.

        Parameters
        ----------
        location
            The store folder. Default: ``$QEMLFLOW_HOME``, else ``.qemlflow`` in the
            current directory. A ``postgresql://`` URL here is taken as ``database_url``,
            with the blobs in the default folder.
        database_url
            Where the metadata lives. Default: ``$QEMLFLOW_DATABASE_URL``, else the URL the
            store was created with (kept in ``<root>/store.json``), else the SQLite file
            ``<root>/metadata.db``.
        """
        if is_postgres_url(location):
            if database_url is not None and database_url != location:
                raise StoreError(
                    "two database URLs were given (location and database_url)",
                    "give the PostgreSQL URL once, as database_url",
                )
            database_url, location = str(location), None
        root = default_root() if location is None else Path(location).expanduser().absolute()
        if root.exists() and not root.is_dir():
            raise StoreError(f"store location {root} is a file", "give a folder path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store folder {root}: {exc.strerror}",
                "choose a writable location or set QEMLFLOW_HOME",
            ) from None
        with folder_lock(root):
            settings_path = root / "store.json"
            settings = _read_settings(settings_path)
            url = database_url or os.environ.get(DATABASE_ENV) or settings.get("database_url")
            if url is not None:
                url = normalize_database_url(str(url))
            if not settings:
                _write_settings(settings_path, {"format": STORE_FORMAT, "database_url": url})
            elif int(settings.get("format", STORE_FORMAT)) > STORE_FORMAT:
                raise StoreError(
                    f"the store at {root} has a newer format than this QeMLflow knows",
                    "upgrade QeMLflow (pip install -U qemlflow)",
                )
            engine = create_store_engine(url or f"sqlite:///{root / 'metadata.db'}")
            try:
                upgrade_schema(engine)
            except BaseException:
                engine.dispose()
                raise
        store = cls(root, engine)
        store.objects.tmp_dir.mkdir(parents=True, exist_ok=True)
        return store

    @property
    def backend(self) -> str:
        """The metadata backend: ``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def database_url(self) -> str:
        """The metadata database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def schema_revision(self) -> str | None:
        """Return the Alembic revision the metadata schema is at."""
        return current_revision(self._engine)

    def close(self) -> None:
        """Release the database connections (blobs need no closing)."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store(root={str(self.root)!r}, database={self.database_url!r})"

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction that may append audit events (appends serialized first)."""
        with self._engine.begin() as conn:
            lock_audit_log(conn)
            yield conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with (
            self._engine.connect().execution_options(**{READ_ONLY: True}) as conn,
            conn.begin(),
        ):
            yield conn

    @contextlib.contextmanager
    def in_flight(self, what: str) -> Iterator[None]:
        """Mark this process as writing into the store for the block: :meth:`gc` keeps
        every blob written from now on until the block ends, whatever its grace period.

        Enter it before writing the first blob that is referenced only later, and leave it
        once the references are committed. A killed process's claim ends with it.
        """
        from qemlflow.store.leases import hold_lease

        with hold_lease(self.root, what):
            yield

    # -- blobs -------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` as a blob and return its sha256 digest (existing: a no-op)."""
        return self.objects.put_bytes(data)

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Copy a file into the blob store (streamed) and return its digest."""
        return self.objects.put_file(path)

    def get_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """Return a blob's content; re-hashed unless ``verify=False``.

        Raises
        ------
        BlobNotFoundError
            The blob is not in the store.
        CorruptBlobError
            The content no longer matches the digest.
        """
        return self.objects.get_bytes(digest, verify=verify)

    def open_blob_path(self, digest: str) -> Path:
        """Return the path of a blob, to read in place (never write to it)."""
        return self.objects.open_path(digest)

    def has_blob(self, digest: str) -> bool:
        """Return whether blob ``digest`` is in the store."""
        return self.objects.has(digest)

    def blob_problem(self, digest: str) -> Literal["missing", "altered"] | None:
        """Re-hash blob ``digest`` (streamed): ``None`` when intact, else what is wrong."""
        if not self.objects.has(digest):
            return "missing"
        return None if self.objects.hash_of(digest) == digest else "altered"

    def blob_digests(self) -> Iterator[str]:
        """Yield the digest of every blob in the store, sorted."""
        return self.objects.digests()

    def put_json(self, obj: Any) -> str:
        """Store ``obj`` as a canonical JSON blob and return its digest."""
        return self.put_bytes(canonical_json(obj))

    def get_json(self, digest: str) -> Any:
        """Return the JSON value held in blob ``digest`` (verified)."""
        return json.loads(self.get_bytes(digest))

    def _require_blobs(self, what: str, *digests: str | None) -> None:
        for digest in digests:
            if digest is None:
                continue
            if not is_digest(digest):
                raise StoreError(
                    f"{what}: {digest!r} is not a blob digest",
                    "pass the digest returned by put_bytes/put_file",
                )
            if not self.objects.has(digest):
                raise StoreError(
                    f"{what} refers to blob {digest}, which is not in the store",
                    "write the content with put_bytes/put_file before recording it",
                )

    # -- step cache --------------------------------------------------------------------

    def get_step(self, key: str) -> StepRecord | None:
        """Return the cached step with content key ``key``, or ``None``."""
        with self._reading() as conn:
            row = conn.execute(select(schema.steps).where(schema.steps.c.key == key)).first()
        return None if row is None else _step_from(row._mapping)

    def put_step(self, record: StepRecord) -> StepRecord:
        """Record a computed step; when ``record.key`` exists the existing row is kept.

        Returns the row as stored (the existing one after a lost race). Not audited one by
        one: a cache entry is content-addressed and immutable, and the run that computed it
        is (see :mod:`qemlflow.store.audit`).
        """
        if not is_digest(record.key):
            raise StoreError(
                f"step key {record.key!r} is not a sha256 hex digest",
                "compute it with qemlflow.store.content_key",
            )
        self._require_blobs(f"step {record.step} ({record.key[:12]})", record.output)
        values = {
            "key": record.key,
            "step": record.step,
            "version": str(record.version),
            "params": plain_json(record.params),
            "inputs": list(record.inputs),
            "output": record.output,
            "created_at": record.created_at,
            "seconds": float(record.seconds),
            "libraries": None if record.libraries is None else dict(record.libraries),
        }
        with self._engine.begin() as conn:
            _insert_ignore(conn, schema.steps, values)
            row = conn.execute(select(schema.steps).where(schema.steps.c.key == record.key)).one()
        return _step_from(row._mapping)

    def find_steps(
        self, *, key_prefix: str | None = None, output_prefix: str | None = None
    ) -> list[StepRecord]:
        """Return the cached steps whose key (or output digest) starts with the prefix.

        A prefix must be at least 6 hex characters, so that it names something.
        """
        t = schema.steps
        column, prefix = (
            (t.c.key, key_prefix) if key_prefix is not None else (t.c.output, output_prefix)
        )
        if prefix is None or len(prefix) < _MIN_PREFIX or not _is_hex(prefix):
            return []
        with self._reading() as conn:
            rows = conn.execute(
                select(t).where(column.like(f"{prefix.lower()}%")).order_by(t.c.created_at)
            ).all()
        return [_step_from(r._mapping) for r in rows]

    def runs_using_step(self, key: str) -> list[str]:
        """Return the ids of the runs that executed (or were served) step ``key``."""
        t = schema.run_steps
        with self._reading() as conn:
            rows = conn.execute(
                select(t.c.run_id).where(t.c.key == key).distinct().order_by(t.c.run_id)
            ).all()
        return [str(r[0]) for r in rows]

    def find_artifacts(self, *, digest_prefix: str) -> list[ArtifactRecord]:
        """Return the run artifacts whose blob digest starts with ``digest_prefix``."""
        if len(digest_prefix) < _MIN_PREFIX or not _is_hex(digest_prefix):
            return []
        t = schema.artifacts
        with self._reading() as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.digest.like(f"{digest_prefix.lower()}%"))
                .order_by(t.c.run_id, t.c.name)
            ).all()
        return [
            ArtifactRecord(run_id=r.run_id, name=r.name, digest=r.digest, kind=r.kind) for r in rows
        ]

    # -- datasets ----------------------------------------------------------------------

    def add_dataset(self, record: DatasetRecord) -> DatasetRecord:
        """Record a dataset version; adding an existing ``id`` returns the stored one.

        A new version appends a ``dataset.added`` audit event.
        """
        self._require_blobs(
            f"dataset {record.name!r}",
            record.table_digest,
            record.raw_digest,
            record.rejected_digest,
        )
        values = {
            "id": record.id,
            "name": record.name,
            "source": record.source,
            "raw_digest": record.raw_digest,
            "table_digest": record.table_digest,
            "rejected_digest": record.rejected_digest,
            "params": plain_json(record.params),
            "summary": plain_json(record.summary),
            "created_at": record.created_at,
            "libraries": None if record.libraries is None else dict(record.libraries),
        }
        with self._writing() as conn:
            if _insert_ignore(conn, schema.datasets, values):
                self._audit(
                    conn,
                    "dataset.added",
                    {
                        "dataset": record.id,
                        "raw": record.raw_digest,
                        "table": record.table_digest,
                    },
                    details={"name": record.name, "source": record.source},
                )
            row = conn.execute(
                select(schema.datasets).where(schema.datasets.c.id == record.id)
            ).one()
        return _dataset_from(row._mapping)

    def list_datasets(self) -> list[DatasetRecord]:
        """Return every dataset version, newest first."""
        t = schema.datasets
        with self._reading() as conn:
            rows = conn.execute(select(t).order_by(t.c.created_at.desc(), t.c.id)).all()
        return [_dataset_from(r._mapping) for r in rows]

    def get_dataset(self, id_or_prefix: str) -> DatasetRecord:
        """Return the dataset whose id is, or uniquely starts with, ``id_or_prefix``."""
        with self._reading() as conn:
            row = self._by_prefix(conn, schema.datasets, id_or_prefix, "dataset", _DATASETS_FIX)
        return _dataset_from(row)

    @staticmethod
    def _by_prefix(conn: Connection, table: Table, value: str, what: str, fix: str) -> RowMapping:
        column = table.c.id
        row = conn.execute(select(table).where(column == value)).first()
        if row is not None:
            return row._mapping
        prefix = value.strip().lower()
        if not prefix:
            raise StoreError(f"an empty {what} id was given", fix)
        rows = conn.execute(
            select(table).where(column.startswith(prefix, autoescape=True)).limit(6)
        ).all()
        if not rows:
            raise StoreError(f"no {what} matches {value!r}", fix)
        if len(rows) > 1:
            shown = ", ".join(r._mapping["id"] for r in rows[:5])
            more = ", ..." if len(rows) > 5 else ""
            raise StoreError(
                f"{what} id prefix {value!r} is ambiguous ({shown}{more})",
                "give more characters of the id",
            )
        return rows[0]._mapping

    # -- runs --------------------------------------------------------------------------

    def create_run(
        self,
        name: str,
        config: Mapping[str, Any],
        seed: int | None,
        environment_digest: str | None,
    ) -> str:
        """Start a run owned by this process and return its id (time-sortable, UTC).

        Appends a ``run.started`` audit event.

        Examples
        --------
        >>> import tempfile
        >>> with Store.open(Path(tempfile.mkdtemp())) as store:
        ...     run_id = store.create_run("demo", {"model": "rf"}, 0, None)
        ...     store.finish_run(run_id, {"rmse": 0.7})
        ...     store.get_run(run_id[:17]).status
        'finished'
        """
        self.mark_aborted_runs()
        self._require_blobs(f"run {name!r} environment", environment_digest)
        pid = os.getpid()
        base = {
            "name": name,
            "status": "running",
            "config": plain_json(dict(config)),
            "seed": seed,
            "finished_at": None,
            "error": None,
            "environment": environment_digest,
            "metrics": None,
            "host": hostname(),
            "pid": pid,
            "pid_started": process_start_time(pid),
        }
        details = {"name": name, "seed": seed, "host": base["host"], "pid": pid}
        for _ in range(10):
            run_id = _new_run_id()
            try:
                with self._writing() as conn:
                    conn.execute(
                        insert(schema.runs).values(id=run_id, started_at=utc_now(), **base)
                    )
                    self._audit(
                        conn,
                        "run.started",
                        {"run": run_id, "environment": environment_digest},
                        details=details,
                    )
            except IntegrityError:  # the same id in the same second: draw again
                continue
            return run_id
        raise StoreError("could not draw a unique run id", "try again")  # pragma: no cover

    def _require_run(self, conn: Connection, run_id: str) -> str:
        status = conn.execute(
            select(schema.runs.c.status).where(schema.runs.c.id == run_id)
        ).scalar()
        if status is None:
            raise StoreError(f"no run {run_id!r}", _RUNS_FIX)
        return str(status)

    def record_run_step(
        self,
        run_id: str,
        position: int,
        step: str,
        key: str,
        output: str | None,
        cache_hit: bool,
        seconds: float,
    ) -> None:
        """Record that step number ``position`` of run ``run_id`` produced ``output``.

        Not audited one by one (immutable; the run's events cover its steps).
        """
        self._require_blobs(f"run {run_id} step {position} ({step})", output)
        with self._engine.begin() as conn:
            self._require_run(conn, run_id)
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(schema.run_steps).values(
                            run_id=run_id,
                            position=position,
                            step=step,
                            key=key,
                            output=output,
                            cache_hit=bool(cache_hit),
                            seconds=float(seconds),
                        )
                    )
            except IntegrityError:
                raise StoreError(
                    f"run {run_id} already has a step at position {position}",
                    "number the steps of a run 0, 1, 2, ... once each",
                ) from None

    def add_artifact(self, run_id: str, name: str, digest: str, kind: str) -> None:
        """Attach blob ``digest`` to run ``run_id`` as artifact ``name`` (e.g. a media type).

        Adding the same name with the same digest again is a no-op; another digest is
        refused (artifacts are immutable). Not audited one by one: the run's events cover
        its artifacts.
        """
        self._require_blobs(f"artifact {name!r} of run {run_id}", digest)
        t = schema.artifacts
        with self._engine.begin() as conn:
            self._require_run(conn, run_id)
            _insert_ignore(
                conn, t, {"run_id": run_id, "name": name, "digest": digest, "kind": kind}
            )
            stored = conn.execute(
                select(t.c.digest).where(t.c.run_id == run_id, t.c.name == name)
            ).scalar_one()
        if stored != digest:
            raise StoreError(
                f"run {run_id} already has an artifact {name!r} with other content",
                "give the new artifact another name",
            )

    def _end_run(
        self,
        run_id: str,
        values: Mapping[str, Any],
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        t = schema.runs
        with self._writing() as conn:
            result = conn.execute(
                update(t)
                .where(t.c.id == run_id, t.c.status == "running")
                .values(finished_at=utc_now(), **values)
            )
            if result.rowcount == 1:
                environment = conn.execute(select(t.c.environment).where(t.c.id == run_id)).scalar()
                self._audit(
                    conn,
                    f"run.{values['status']}",
                    {"run": run_id, "environment": environment},
                    reason=reason,
                    details=details,
                )
                return
            status = self._require_run(conn, run_id)
        raise StoreError(f"run {run_id} is already {status}", "start a new run")

    def finish_run(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        """Mark a running run ``finished`` with its metrics (NaN stored as null).

        Appends a ``run.finished`` audit event holding the test metrics.
        """
        self._end_run(
            run_id,
            {"status": "finished", "metrics": plain_json(dict(metrics))},
            details=_test_metrics(metrics),
        )

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a running run ``failed`` with the error message (a ``run.failed`` event)."""
        self._end_run(run_id, {"status": "failed", "error": str(error)}, reason=str(error))

    def mark_aborted_runs(self) -> list[str]:
        """Mark ``aborted`` every running run of this host whose process is gone.

        A process counts as gone when its pid no longer exists, is a zombie, or now
        belongs to a process with another start time (pid reuse). Returns the run ids; each
        gets a ``run.aborted`` audit event.
        """
        t = schema.runs
        host = hostname()
        with self._reading() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.pid, t.c.pid_started).where(
                    t.c.status == "running", t.c.host == host
                )
            ).all()
        dead = [r for r in rows if not process_alive(r.pid, r.pid_started)]
        aborted: list[str] = []
        for run_id, pid, _ in dead:
            with self._writing() as conn:
                result = conn.execute(
                    update(t)
                    .where(t.c.id == run_id, t.c.status == "running")
                    .values(
                        status="aborted",
                        finished_at=utc_now(),
                        error=(
                            f"process {pid} on {host} ended without finishing the run "
                            "(killed or crashed)"
                        ),
                    )
                )
                if result.rowcount == 1:
                    self._audit(
                        conn,
                        "run.aborted",
                        {"run": run_id},
                        reason=f"process {pid} on {host} is gone",
                        details={"host": host, "pid": pid},
                    )
            if result.rowcount == 1:
                aborted.append(run_id)
        return aborted

    def _run_details(
        self, conn: Connection, run_ids: Sequence[str]
    ) -> tuple[dict[str, list[RunStepRecord]], dict[str, list[ArtifactRecord]]]:
        steps: dict[str, list[RunStepRecord]] = {i: [] for i in run_ids}
        artifacts: dict[str, list[ArtifactRecord]] = {i: [] for i in run_ids}
        rs, art = schema.run_steps, schema.artifacts
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            for row in conn.execute(
                select(rs).where(rs.c.run_id.in_(chunk)).order_by(rs.c.run_id, rs.c.position)
            ):
                m = row._mapping
                steps[m["run_id"]].append(
                    RunStepRecord(
                        run_id=m["run_id"],
                        position=m["position"],
                        step=m["step"],
                        key=m["key"],
                        output=m["output"],
                        cache_hit=bool(m["cache_hit"]),
                        seconds=m["seconds"],
                    )
                )
            for row in conn.execute(
                select(art).where(art.c.run_id.in_(chunk)).order_by(art.c.run_id, art.c.name)
            ):
                m = row._mapping
                artifacts[m["run_id"]].append(
                    ArtifactRecord(
                        run_id=m["run_id"], name=m["name"], digest=m["digest"], kind=m["kind"]
                    )
                )
        return steps, artifacts

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Return runs newest first (with their steps and artifacts), at most ``limit``."""
        self.mark_aborted_runs()
        t = schema.runs
        query = select(t).order_by(t.c.started_at.desc(), t.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._reading() as conn:
            rows = [r._mapping for r in conn.execute(query).all()]
            steps, artifacts = self._run_details(conn, [r["id"] for r in rows])
        return [_run_from(r, steps[r["id"]], artifacts[r["id"]]) for r in rows]

    def get_run(self, id_or_prefix: str) -> RunRecord:
        """Return the run whose id is, or uniquely starts with, ``id_or_prefix``."""
        self.mark_aborted_runs()
        with self._reading() as conn:
            row = self._by_prefix(conn, schema.runs, id_or_prefix, "run", _RUNS_FIX)
            steps, artifacts = self._run_details(conn, [row["id"]])
        return _run_from(row, steps[row["id"]], artifacts[row["id"]])

    # -- model registry ----------------------------------------------------------------

    def register_model_version(
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
        is immutable. Appends a ``model.registered`` audit event. Use
        :func:`qemlflow.registry.register`, which finds the digests from the run.
        """
        _check_model_name(name)
        self._require_blobs(f"model {name!r}", model_digest)
        if not is_digest(fit_key):
            raise StoreError(f"fit key {fit_key!r} is not a sha256 hex digest", _RUNS_FIX)
        t = schema.model_versions
        with self._writing() as conn:
            status = self._require_run(conn, run_id)
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
                "created_by": current_actor(),
            }
            conn.execute(insert(t).values(**values))
            record = _model_version_from(values)
            self._audit(
                conn,
                "model.registered",
                {
                    "model_name": name,
                    "model_version": record.spec,
                    "model": model_digest,
                    "run": run_id,
                },
                details={
                    "name": name,
                    "version": record.version,
                    "fit_key": fit_key,
                    "task": task,
                    "metrics": values["metrics"],
                },
                actor=record.created_by,
            )
        return record

    @staticmethod
    def _model_version_row(conn: Connection, name: str, version: int) -> RowMapping:
        t = schema.model_versions
        row = None
        if 1 <= int(version) <= _MAX_VERSION:  # beyond it no row can exist (nor be queried)
            row = conn.execute(
                select(t).where(t.c.name == name, t.c.version == int(version))
            ).first()
        if row is None:
            exists = conn.execute(select(t.c.name).where(t.c.name == name).limit(1)).first()
            if exists is None:
                raise StoreError(f"no model named {name!r}", _MODELS_FIX)
            raise StoreError(
                f"model {name!r} has no version {version}",
                f"list its versions with `qemlflow models show {name}`",
            )
        return row._mapping

    def get_model_version(self, name: str, version: int) -> ModelVersionRecord:
        """Return version ``version`` of model ``name`` (a :class:`StoreError` if none)."""
        with self._reading() as conn:
            return _model_version_from(self._model_version_row(conn, name, version))

    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        """Return the registered versions (of ``name``, or of every model), by name and version."""
        t = schema.model_versions
        query = select(t).order_by(t.c.name, t.c.version)
        if name is not None:
            query = query.where(t.c.name == name)
        with self._reading() as conn:
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
        _check_model_name(name)
        _check_model_name(alias, "alias")
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
        with self._writing() as conn:
            target = None if version is None else self._model_version_row(conn, name, version)
            previous = self._aliases(conn, name).get(alias)
            last_id = conn.execute(select(func.max(t.c.id))).scalar()
            values: dict[str, Any] = {
                "id": int(last_id or 0) + 1,
                "name": name,
                "alias": alias,
                "version": None if version is None else int(version),
                "action": action,
                "at": utc_now(),
                "actor": current_actor(),
                "reason": reason,
            }
            conn.execute(insert(t).values(**values))
            objects: dict[str, str | None] = {"model_name": name}
            if target is not None:
                objects.update(
                    model_version=f"{name}@{version}",
                    model=target["model_digest"],
                    run=target["run_id"],
                )
            self._audit(
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
                actor=values["actor"],
            )
        return _alias_event_from(values)

    @staticmethod
    def _aliases(conn: Connection, name: str) -> dict[str, int]:
        t = schema.alias_events
        current: dict[str, int | None] = {}
        for alias, version in conn.execute(
            select(t.c.alias, t.c.version).where(t.c.name == name).order_by(t.c.id)
        ):
            current[alias] = version
        return {a: int(v) for a, v in sorted(current.items()) if v is not None}

    def current_aliases(self, name: str) -> dict[str, int]:
        """Return alias -> version for model ``name`` (removed aliases left out)."""
        with self._reading() as conn:
            return self._aliases(conn, name)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEventRecord]:
        """Return every move of ``name@alias`` (of every alias of ``name``), oldest first."""
        t = schema.alias_events
        query = select(t).where(t.c.name == name).order_by(t.c.id)
        if alias is not None:
            query = query.where(t.c.alias == alias)
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return [_alias_event_from(r._mapping) for r in rows]

    # -- API keys ----------------------------------------------------------------------

    def create_api_key(self, name: str) -> tuple[ApiKeyRecord, str]:
        """Create an API key; return its record and the key ``qmf_<id>_<secret>``.

        The key is returned this once: the store keeps only a salted sha256 of the
        256-bit random secret. Appends an ``apikey.created`` audit event (no secret in it).
        """
        name = name.strip()
        if not name or len(name) > 200 or not name.isprintable():
            raise StoreError(
                "an API key needs a name of 1 to 200 printable characters "
                "(no line breaks or control characters)",
                "name it after who or what will use it",
            )
        actor = current_actor()
        for _ in range(10):
            key_id, secret = f"qk_{secrets.token_hex(4)}", secrets.token_hex(32)
            values = {
                "id": key_id,
                "name": name,
                "key_hash": _api_key_hash(key_id, secret),
                "created_at": utc_now(),
                "revoked_at": None,
                "created_by": actor,
            }
            try:
                with self._writing() as conn:
                    conn.execute(insert(schema.api_keys).values(**values))
                    self._audit(conn, "apikey.created", {"apikey": key_id}, details={"name": name})
            except IntegrityError:  # the same id drawn twice: draw again
                continue
            return _api_key_from(values), f"{API_KEY_PREFIX}{key_id}_{secret}"
        raise StoreError("could not draw a unique API key id", "try again")  # pragma: no cover

    def revoke_api_key(self, key_id: str, reason: str | None = None) -> ApiKeyRecord:
        """Revoke an API key (an ``apikey.revoked`` event); revoking it again changes nothing."""
        t = schema.api_keys
        key_id = key_id.strip()
        if key_id.startswith(API_KEY_PREFIX):  # a whole key was given: keep only its id
            key_id = key_id[len(API_KEY_PREFIX) :][:11]
        with self._writing() as conn:
            result = conn.execute(
                update(t)
                .where(t.c.id == key_id, t.c.revoked_at.is_(None))
                .values(revoked_at=utc_now())
            )
            row = conn.execute(select(t).where(t.c.id == key_id)).first()
            if row is None:
                raise StoreError(f"no API key {key_id!r}", "list keys with `qemlflow keys list`")
            if result.rowcount == 1:
                self._audit(
                    conn,
                    "apikey.revoked",
                    {"apikey": key_id},
                    reason=reason,
                    details={"name": row.name},
                )
        return _api_key_from(row._mapping)

    def check_api_key(self, presented: str) -> ApiKeyRecord | None:
        """Return the key's record when ``presented`` is a valid, unrevoked key, else ``None``.

        The hash comparison is constant-time; an unknown id costs the same hash.
        """
        body = presented.strip().removeprefix(API_KEY_PREFIX)
        key_id, separator, secret = body[:11], body[11:12], body[12:]
        if (
            not presented.strip().startswith(API_KEY_PREFIX)
            or separator != "_"
            or not _API_KEY_ID.fullmatch(key_id)
            or not _API_KEY_SECRET.fullmatch(secret)
        ):
            return None
        t = schema.api_keys
        with self._reading() as conn:
            row = conn.execute(select(t).where(t.c.id == key_id)).first()
        stored = "0" * 64 if row is None else str(row.key_hash)
        matches = hmac.compare_digest(_api_key_hash(key_id, secret), stored)
        if row is None or not matches or row.revoked_at is not None:
            return None
        return _api_key_from(row._mapping)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every API key (revoked ones too), oldest first; never a secret."""
        t = schema.api_keys
        with self._reading() as conn:
            rows = conn.execute(select(t).order_by(t.c.created_at, t.c.id)).all()
        return [_api_key_from(r._mapping) for r in rows]

    # -- audit trail -------------------------------------------------------------------

    def _audit(
        self,
        conn: Connection,
        action: str,
        objects: Mapping[str, str | None] | None = None,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> AuditEvent:
        """Append an audit event inside ``conn``'s write transaction (commits with it)."""
        return append_event(conn, action, objects, reason=reason, details=details, actor=actor)

    def audit(
        self,
        action: str,
        objects: Mapping[str, str] | None = None,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> AuditEvent:
        """Append an event to the audit trail and return it (hash-chained, append-only).

        Parameters
        ----------
        action
            A dotted name: ``"signature"``, ``"model.registered"``, ...
        objects
            What the event is about, role -> key, digest or id (``{"run": run_id}``).
        reason
            Why (free text), e.g. the meaning of a signature.
        details
            Small, plain JSON data (NaN is stored as null).
        actor
            Who; default :func:`~qemlflow.store.audit.current_actor`.

        Examples
        --------
        >>> import tempfile
        >>> with Store.open(Path(tempfile.mkdtemp())) as store:
        ...     event = store.audit("model.registered", {"model": "ab" * 32}, actor="Ada")
        ...     event.seq, store.verify_audit().ok
        (1, True)
        """
        with self._writing() as conn:
            return self._audit(conn, action, objects, reason=reason, details=details, actor=actor)

    def audit_events(
        self,
        *,
        object_ref: str | None = None,
        since: str | None = None,
        action: str | None = None,
    ) -> list[AuditEvent]:
        """Return audit events in seq order, filtered; see :func:`~.audit.read_events`.

        ``object_ref`` is a key, digest or id (or a prefix of 6+ characters) named in the
        event's objects; ``since`` an ISO time or date; ``action`` a name or ``"run.*"``.
        """
        with self._reading() as conn:
            return read_events(conn, object_ref=object_ref, since=since, action=action)

    def audit_head(self) -> dict[str, Any]:
        """Return the head of the audit chain (``seq``, ``hash``, ``timestamp``, ``events``,
        ``store``): keep it outside the store as an anchor for :meth:`verify_audit`."""
        with self._reading() as conn:
            return audit_head(conn)

    def verify_audit(
        self, anchor: Mapping[str, Any] | None = None, checks: Sequence[AuditCheck] = ()
    ) -> AuditReport:
        """Check the whole audit chain (every row, by seq), see :func:`verify_audit_chain`,
        and that the triggers keeping the trail and the registry append-only are in place."""
        with self._reading() as conn:
            events = read_events(conn)
            missing = missing_append_only_triggers(conn)
        report = verify_audit_chain(events, anchor=anchor, checks=checks)
        if not missing:
            return report
        return dataclasses.replace(report, problems=(*missing, *report.problems))

    # -- care --------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """Return whether the store holds no rows and no blobs."""
        return not any(self.table_counts().values()) and next(self.blob_digests(), None) is None

    def table_counts(self) -> dict[str, int]:
        """Return the number of rows of each metadata table."""
        with self._reading() as conn:
            return {
                table.name: int(conn.execute(select(func.count()).select_from(table)).scalar_one())
                for table in schema.metadata.sorted_tables
            }

    def verify(self) -> VerifyReport:
        """Re-hash every blob, check every reference and the audit chain.

        See :func:`~.care.verify_store`.
        """
        from qemlflow.store.care import verify_store

        return verify_store(self)

    def backup(self, dest: str | os.PathLike[str]) -> BackupReport:
        """Copy the whole store into the empty folder ``dest``, then check the copy."""
        from qemlflow.store.care import backup_store

        return backup_store(self, Path(dest))

    def restore(self, src: str | os.PathLike[str]) -> BackupReport:
        """Fill this (empty) store from the backup folder ``src``, then check it."""
        from qemlflow.store.care import restore_store

        return restore_store(self, Path(src))

    def gc(self, grace_seconds: float = 3600, dry_run: bool = False) -> list[str]:
        """Remove blobs nothing refers to and older than ``grace_seconds``; return them."""
        from qemlflow.store.care import collect_garbage

        return collect_garbage(self, grace_seconds=grace_seconds, dry_run=dry_run)


_MIN_PREFIX = 6


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
