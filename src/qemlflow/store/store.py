"""The provenance store: one folder of blobs plus a metadata database.

Open it with :meth:`Store.open`; every read and write of QeMLflow's cache index,
datasets, runs and artifacts goes through it. :class:`Store` is a façade over focused
repositories that share one engine (:class:`~qemlflow.store.transactions.Database`):
``store.blobs``, ``store.steps``, ``store.datasets``, ``store.runs``, ``store.registry``,
``store.api_keys`` and ``store.audit_trail``. Each state change appends an event to the
audit trail (:mod:`qemlflow.store.audit`) in the same transaction. The façade's older
methods (``store.get_run(...)``) delegate to the repositories and stay supported.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from sqlalchemy.engine import Connection, Engine

from qemlflow.store.api_keys import API_KEY_PREFIX, ApiKeys
from qemlflow.store.audit import (
    AuditCheck,
    AuditEvent,
    AuditReport,
    append_event,
    count_events,
    read_events,
)
from qemlflow.store.audit_trail import AuditTrail
from qemlflow.store.blobs import BlobStore
from qemlflow.store.checkpoints import Checkpoints
from qemlflow.store.database import (
    create_store_engine,
    current_revision,
    folder_lock,
    is_postgres_url,
    normalize_database_url,
    upgrade_schema,
)
from qemlflow.store.datasets import Datasets
from qemlflow.store.errors import StoreError
from qemlflow.store.identities import Identities
from qemlflow.store.model_registry import MODEL_NAME_PATTERN, ModelRegistry
from qemlflow.store.monitoring import Monitoring
from qemlflow.store.pg_roles import OWNER_DATABASE_ENV
from qemlflow.store.records import (
    ArtifactRecord,
    DatasetRecord,
    RunRecord,
    StepRecord,
)
from qemlflow.store.registry_records import (
    AliasAction,
    AliasEventRecord,
    ApiKeyRecord,
    ModelVersionRecord,
)
from qemlflow.store.runs import Runs, RunSummary
from qemlflow.store.steps import StepCache
from qemlflow.store.transactions import Database

if TYPE_CHECKING:  # care imports this module
    from qemlflow.audit.principal import Principal
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


class Store:
    """A QeMLflow store: content-addressed blobs in a folder, metadata in SQL.

    Use :meth:`Store.open` rather than the constructor. A store is a context manager;
    :meth:`close` releases the database connections.

    Attributes
    ----------
    root : Path
        The store folder.
    db : Database
        The one engine every repository shares, and its transactions.
    blobs : BlobStore
        Content-addressed files (also reachable as ``objects``).
    steps : StepCache
        The step cache.
    datasets : Datasets
        Dataset versions.
    runs : Runs
        Runs, their steps and artifacts.
    registry : ModelRegistry
        Model versions and alias history.
    api_keys : ApiKeys
        The prediction service's API keys.
    audit_trail : AuditTrail
        The hash-chained, signed audit events.
    identities : Identities
        The enrolled identities, their keys and roles.
    checkpoints : Checkpoints
        Signed checkpoints of the audit chain head.

    Examples
    --------
    >>> import tempfile
    >>> with Store.open(Path(tempfile.mkdtemp()) / "store") as store:
    ...     digest = store.blobs.put_bytes(b"features")
    ...     store.blobs.get_bytes(digest), store.get_bytes(digest) == b"features"
    (b'features', True)
    """

    def __init__(self, root: Path, engine: Engine, principal: Principal | None = None) -> None:
        self.root = root
        self._principal = principal
        self.db = Database(engine, self._acting)
        self.blobs = BlobStore(root / "objects")
        self.steps = StepCache(self.db, self.blobs)
        self.datasets = Datasets(self.db, self.blobs)
        self.runs = Runs(self.db, self.blobs)
        self.registry = ModelRegistry(self.db, self.blobs)
        self.api_keys = ApiKeys(self.db)
        self.audit_trail = AuditTrail(self.db)
        self.identities = Identities(self.db)
        self.checkpoints = Checkpoints(self.db)
        self.monitoring = Monitoring(self.db)

    def _acting(self, conn: Connection) -> Principal:
        """Who signs this store's events: resolved at the first write, then kept."""
        if self._principal is None:
            from qemlflow.audit.session import principal_for

            self._principal = principal_for(conn)
        return self._principal

    @property
    def principal(self) -> Principal:
        """The identity that acts on this store (see
        :func:`~qemlflow.audit.session.resolve_principal`), resolved on first use.

        Raises
        ------
        AuthorityError
            No enrolled identity is at hand.
        """
        if self._principal is None:
            from qemlflow.audit.session import resolve_principal

            self._principal = resolve_principal(self)
        return self._principal

    @property
    def objects(self) -> BlobStore:
        """The blob store (the older name of :attr:`blobs`)."""
        return self.blobs

    @property
    def _engine(self) -> Engine:
        return self.db.engine

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        principal: Principal | None = None,
        owner_url: str | None = None,
        secure_roles: bool = False,
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
        principal
            Who acts: signs every event this store object appends. Default: resolved at
            the first write (:func:`~qemlflow.audit.session.resolve_principal`). The first
            write to a store without an owner makes the acting identity its owner.
        owner_url
            PostgreSQL only: the same database as a role that may migrate it (a superuser,
            or a member of ``qemlflow_owner``), used when a migration is pending while
            ``database_url`` is the application's role. Default:
            ``$QEMLFLOW_OWNER_DATABASE_URL``. See :mod:`qemlflow.store.pg_roles`.
        secure_roles
            PostgreSQL only: set up the owner and application roles even when no
            migration is pending (``qemlflow store migrate``).
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
                upgrade_schema(
                    engine,
                    owner_url=owner_url or os.environ.get(OWNER_DATABASE_ENV) or None,
                    secure=secure_roles,
                )
            except BaseException:
                engine.dispose()
                raise
        store = cls(root, engine, principal)
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
        self.db.close()

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

    def _writing(self) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction that may append audit events (see :meth:`Database.writing`)."""
        return self.db.writing()

    def _reading(self) -> contextlib.AbstractContextManager[Connection]:
        return self.db.reading()

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

    # -- the older interface: thin delegates to the repositories -------------------------
    # Kept so that existing callers need not change; new code calls the repositories.

    # blobs (store.blobs)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` as a blob and return its sha256 digest (existing: a no-op)."""
        return self.blobs.put_bytes(data)

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Copy a file into the blob store (streamed) and return its digest."""
        return self.blobs.put_file(path)

    def get_bytes(self, digest: str, *, verify: bool = True) -> bytes:
        """Return a blob's content; re-hashed unless ``verify=False``.

        Raises
        ------
        BlobNotFoundError
            The blob is not in the store.
        CorruptBlobError
            The content no longer matches the digest.
        """
        return self.blobs.get_bytes(digest, verify=verify)

    def open_blob_path(self, digest: str) -> Path:
        """Return the path of a blob, to read in place (never write to it)."""
        return self.blobs.open_path(digest)

    def has_blob(self, digest: str) -> bool:
        """Return whether blob ``digest`` is in the store."""
        return self.blobs.has(digest)

    def blob_problem(self, digest: str) -> Literal["missing", "altered"] | None:
        """Re-hash blob ``digest`` (streamed): ``None`` when intact, else what is wrong."""
        return self.blobs.problem(digest)

    def blob_digests(self) -> Iterator[str]:
        """Yield the digest of every blob in the store, sorted."""
        return self.blobs.digests()

    def put_json(self, obj: Any) -> str:
        """Store ``obj`` as a canonical JSON blob and return its digest."""
        return self.blobs.put_json(obj)

    def get_json(self, digest: str) -> Any:
        """Return the JSON value held in blob ``digest`` (verified)."""
        return self.blobs.get_json(digest)

    # step cache (store.steps)

    def get_step(self, key: str) -> StepRecord | None:
        """Return the cached step with content key ``key``, or ``None``."""
        return self.steps.get(key)

    def put_step(self, record: StepRecord) -> StepRecord:
        """Record a computed step (see :meth:`StepCache.put`)."""
        return self.steps.put(record)

    def find_steps(
        self, *, key_prefix: str | None = None, output_prefix: str | None = None
    ) -> list[StepRecord]:
        """Return the cached steps whose key (or output digest) starts with the prefix."""
        return self.steps.find(key_prefix=key_prefix, output_prefix=output_prefix)

    # datasets (store.datasets)

    def add_dataset(self, record: DatasetRecord) -> DatasetRecord:
        """Record a dataset version (see :meth:`Datasets.add`)."""
        return self.datasets.add(record)

    def list_datasets(self) -> list[DatasetRecord]:
        """Return every dataset version, newest first."""
        return self.datasets.list()

    def get_dataset(self, id_or_prefix: str) -> DatasetRecord:
        """Return the dataset whose id is, or uniquely starts with, ``id_or_prefix``."""
        return self.datasets.get(id_or_prefix)

    # runs (store.runs)

    def create_run(
        self,
        name: str,
        config: Mapping[str, Any],
        seed: int | None,
        environment_digest: str | None,
    ) -> str:
        """Start a run owned by this process and return its id (see :meth:`Runs.create`).

        Examples
        --------
        >>> import tempfile
        >>> with Store.open(Path(tempfile.mkdtemp())) as store:
        ...     run_id = store.create_run("demo", {"model": "rf"}, 0, None)
        ...     store.finish_run(run_id, {"rmse": 0.7})
        ...     store.get_run(run_id[:17]).status
        'finished'
        """
        return self.runs.create(name, config, seed, environment_digest)

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
        """Record that step number ``position`` of run ``run_id`` produced ``output``."""
        self.runs.record_step(run_id, position, step, key, output, cache_hit, seconds)

    def add_artifact(self, run_id: str, name: str, digest: str, kind: str) -> None:
        """Attach blob ``digest`` to run ``run_id`` as artifact ``name`` (immutable)."""
        self.runs.add_artifact(run_id, name, digest, kind)

    def finish_run(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        """Mark a running run ``finished`` with its metrics (a ``run.finished`` event)."""
        self.runs.finish(run_id, metrics)

    def fail_run(self, run_id: str, error: str) -> None:
        """Mark a running run ``failed`` with the error message (a ``run.failed`` event)."""
        self.runs.fail(run_id, error)

    def mark_aborted_runs(self) -> list[str]:
        """Mark ``aborted`` every running run of this host whose process is gone."""
        return self.runs.mark_aborted()

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Return runs newest first (with their steps and artifacts), at most ``limit``."""
        return self.runs.list(limit)

    def run_summaries(self) -> list[RunSummary]:
        """Return every run newest first, lean: no steps or artifacts (see
        :meth:`Runs.summaries`)."""
        return self.runs.summaries()

    def get_run(self, id_or_prefix: str, *, settle: bool = True) -> RunRecord:
        """Return the run whose id is, or uniquely starts with, ``id_or_prefix``
        (``settle=False``: without first marking dead runs aborted, which writes)."""
        return self.runs.get(id_or_prefix, settle=settle)

    def runs_using_step(self, key: str) -> list[str]:
        """Return the ids of the runs that executed (or were served) step ``key``."""
        return self.runs.using_step(key)

    def find_artifacts(self, *, digest_prefix: str) -> list[ArtifactRecord]:
        """Return the run artifacts whose blob digest starts with ``digest_prefix``."""
        return self.runs.find_artifacts(digest_prefix=digest_prefix)

    # model registry (store.registry)

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
        """Register finished run ``run_id``'s model (see :meth:`ModelRegistry.register`)."""
        return self.registry.register(
            name, run_id, model_digest, fit_key, task, target_names, metrics
        )

    def get_model_version(self, name: str, version: int) -> ModelVersionRecord:
        """Return version ``version`` of model ``name`` (a :class:`StoreError` if none)."""
        return self.registry.get(name, version)

    def list_model_versions(self, name: str | None = None) -> list[ModelVersionRecord]:
        """Return the registered versions (of ``name``, or of every model), by name and version."""
        return self.registry.versions(name)

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
        """Point ``name@alias`` at ``version`` (see :meth:`ModelRegistry.set_alias`)."""
        return self.registry.set_alias(name, alias, version, reason, action=action, details=details)

    def current_aliases(self, name: str) -> dict[str, int]:
        """Return alias -> version for model ``name`` (removed aliases left out)."""
        return self.registry.aliases(name)

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasEventRecord]:
        """Return every move of ``name@alias`` (of every alias of ``name``), oldest first."""
        return self.registry.alias_history(name, alias)

    # API keys (store.api_keys)

    def create_api_key(self, name: str) -> tuple[ApiKeyRecord, str]:
        """Create an API key; return its record and the key, shown this once."""
        return self.api_keys.create(name)

    def revoke_api_key(self, key_id: str, reason: str | None = None) -> ApiKeyRecord:
        """Revoke an API key (an ``apikey.revoked`` event); revoking it again changes nothing."""
        return self.api_keys.revoke(key_id, reason)

    def check_api_key(self, presented: str) -> ApiKeyRecord | None:
        """Return the key's record when ``presented`` is a valid, unrevoked key, else ``None``."""
        return self.api_keys.check(presented)

    def list_api_keys(self) -> list[ApiKeyRecord]:
        """Return every API key (revoked ones too), oldest first; never a secret."""
        return self.api_keys.list()

    # audit trail (store.audit_trail)

    def _audit(
        self,
        conn: Connection,
        action: str,
        objects: Mapping[str, str | None] | None = None,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an audit event inside ``conn``'s write transaction (commits with it)."""
        return append_event(conn, action, objects, reason=reason, details=details)

    def audit(
        self,
        action: str,
        objects: Mapping[str, str] | None = None,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        principal: Principal | None = None,
    ) -> AuditEvent:
        """Append an event to the audit trail and return it (see :meth:`AuditTrail.append`).

        Examples
        --------
        >>> import tempfile
        >>> with Store.open(Path(tempfile.mkdtemp())) as store:
        ...     event = store.audit("model.registered", {"model": "ab" * 32})
        ...     event.seq, event.signer == store.principal.fingerprint, store.verify_audit().ok
        (2, True, True)
        """
        return self.audit_trail.append(
            action, objects, reason=reason, details=details, principal=principal
        )

    def audit_events(
        self,
        *,
        object_ref: str | None = None,
        since: str | None = None,
        action: str | None = None,
    ) -> list[AuditEvent]:
        """Return audit events in seq order, filtered (see :meth:`AuditTrail.events`)."""
        return self.audit_trail.events(object_ref=object_ref, since=since, action=action)

    def audit_page(
        self,
        *,
        object_ref: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AuditEvent], int]:
        """Return one page of audit events, newest first, and how many match in all.

        The filters are those of :func:`~.audit.read_events`, applied in SQL: a page
        costs the same with 100 events in the store or 100,000.
        """
        filters: dict[str, Any] = {
            "object_ref": object_ref,
            "actor": actor,
            "action": action,
            "since": since,
            "until": until,
        }
        with self._reading() as conn:
            events = read_events(conn, **filters, limit=limit, offset=offset, newest_first=True)
            total = count_events(conn, **filters)
        return events, total

    def audit_head(self) -> dict[str, Any]:
        """Return the head of the audit chain, an anchor for :meth:`verify_audit`."""
        return self.audit_trail.head()

    def verify_audit(
        self, anchor: Mapping[str, Any] | None = None, checks: Sequence[AuditCheck] = ()
    ) -> AuditReport:
        """Check the whole audit chain and its triggers (see :meth:`AuditTrail.verify`)."""
        return self.audit_trail.verify(anchor, checks)

    # -- care --------------------------------------------------------------------------

    def is_empty(self) -> bool:
        """Return whether the store holds no rows and no blobs."""
        return not any(self.table_counts().values()) and next(self.blob_digests(), None) is None

    def table_counts(self) -> dict[str, int]:
        """Return the number of rows of each metadata table."""
        return self.db.table_counts()

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
