"""Keeping a store sound: verify, backup, restore and garbage collection.

A backup is a folder: ``metadata.sqlite`` (every row of every table, copied through
SQLAlchemy into a fresh SQLite database at the same schema revision, so a PostgreSQL
store backs up the same way), ``objects/`` (the blobs) and ``manifest.json`` (row counts
and blob digests), checked against the manifest right after it is written.

Registered model versions (``model_versions``) refer to their model blob: verify checks
it, gc keeps it, and a backup carries it with the registry and API key tables.

The audit trail records each backup (``store.backup``), restore (``store.restore``, after
the copied events, which are restored verbatim) and garbage collection (``store.gc``).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, create_engine, func, insert, select
from sqlalchemy.engine import Connection, Engine

from qemlflow._atomic import write_atomic
from qemlflow._version import __version__
from qemlflow.store import schema
from qemlflow.store.audit import append_event, audit_head
from qemlflow.store.blobs import BlobStore
from qemlflow.store.database import READ_ONLY, current_revision, head_revision, upgrade_schema
from qemlflow.store.errors import StoreError
from qemlflow.store.records import utc_now

if TYPE_CHECKING:
    from qemlflow.store.store import Store

__all__ = [
    "BACKUP_FORMAT",
    "BackupReport",
    "VerifyIssue",
    "VerifyReport",
    "backup_store",
    "collect_garbage",
    "restore_store",
    "verify_store",
]

BACKUP_FORMAT = 1
MANIFEST = "manifest.json"
BACKUP_DB = "metadata.sqlite"
_BATCH = 1000
_HEX64 = re.compile(r"[0-9a-f]{64}")
STALE_TEMP_SECONDS = 60.0
_CLOCK_SLACK = 2.0  # file times are coarser than time.time(): never cut a lease short

# (table, columns naming the row, column holding a blob digest)
BLOB_REFERENCES: tuple[tuple[Table, tuple[str, ...], str], ...] = (
    (schema.steps, ("key",), "output"),
    (schema.datasets, ("id",), "raw_digest"),
    (schema.datasets, ("id",), "table_digest"),
    (schema.datasets, ("id",), "rejected_digest"),
    (schema.runs, ("id",), "environment"),
    (schema.run_steps, ("run_id", "position"), "output"),
    (schema.artifacts, ("run_id", "name"), "digest"),
    (schema.model_versions, ("name", "version"), "model_digest"),
)
# Scanned by gc for digests. An audit event's objects count (what the trail names is
# kept); its details do not (a store.gc event lists the digests it removed).
JSON_COLUMNS: tuple[tuple[Table, str], ...] = tuple(
    (table, column.name)
    for table in schema.metadata.sorted_tables
    for column in table.columns
    if column.type.__class__.__name__ == "JSON"
    and (table.name, column.name) != ("audit_events", "details")
)


@dataclass(frozen=True)
class VerifyIssue:
    """One problem found by :func:`verify_store`: which object, and what is wrong."""

    object: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        """Return the issue as a JSON-compatible dict."""
        return {"object": self.object, "problem": self.problem}


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of :meth:`Store.verify`; ``ok`` when no issue was found.

    Examples
    --------
    >>> VerifyReport(blobs_checked=2, references_checked=3).ok
    True
    """

    blobs_checked: int
    references_checked: int
    issues: tuple[VerifyIssue, ...] = ()
    aborted_runs: tuple[str, ...] = ()
    temp_files_removed: int = 0
    audit_events_checked: int = 0

    @property
    def ok(self) -> bool:
        """Whether the store is sound."""
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-compatible dict."""
        return {
            "ok": self.ok,
            "blobs_checked": self.blobs_checked,
            "references_checked": self.references_checked,
            "issues": [i.to_dict() for i in self.issues],
            "aborted_runs": list(self.aborted_runs),
            "temp_files_removed": self.temp_files_removed,
            "audit_events_checked": self.audit_events_checked,
        }


@dataclass(frozen=True)
class BackupReport:
    """The outcome of a backup or a restore: what was copied and what did not match.

    Examples
    --------
    >>> BackupReport(path="/b", tables={"runs": 1}, blobs=2, bytes=10).to_dict()["ok"]
    True
    """

    path: str
    tables: dict[str, int]
    blobs: int
    bytes: int
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether the copy matches its manifest."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-compatible dict."""
        return {
            "ok": self.ok,
            "path": self.path,
            "tables": dict(self.tables),
            "blobs": self.blobs,
            "bytes": self.bytes,
            "problems": list(self.problems),
        }


def _row_label(table: Table, names: tuple[str, ...], row: Any) -> str:
    ident = "/".join(str(getattr(row, n)) for n in names)
    return f"{table.name} {ident}"


def _reading(engine: Engine) -> Connection:
    return engine.connect().execution_options(**{READ_ONLY: True})


def verify_store(store: Store) -> VerifyReport:
    """Check a store: re-hash every blob, check that every reference resolves, and check
    the audit chain (:meth:`Store.verify_audit`, without an anchor).

    Also marks the runs of dead processes ``aborted`` and removes temp files of killed
    writers older than a minute.
    """
    aborted = store.runs.mark_aborted()
    removed = store.blobs.clean_temp(STALE_TEMP_SECONDS)
    issues: list[VerifyIssue] = []
    present: set[str] = set()
    for digest in store.blobs.digests():
        present.add(digest)
        try:
            actual = store.blobs.hash_of(digest)
        except OSError as exc:
            issues.append(VerifyIssue(f"blob {digest}", f"cannot be read: {exc.strerror}"))
            continue
        if actual != digest:
            issues.append(
                VerifyIssue(f"blob {digest}", f"content changed on disk (now hashes to {actual})")
            )
    checked = 0
    with store.db.reading() as conn:
        for table, names, column in BLOB_REFERENCES:
            cols = [table.c[n] for n in names]
            query = select(*cols, table.c[column]).where(table.c[column].is_not(None))
            for row in conn.execute(query):
                checked += 1
                digest = getattr(row, column)
                if digest not in present:
                    issues.append(
                        VerifyIssue(
                            _row_label(table, names, row),
                            f"{column} refers to blob {digest}, which is missing",
                        )
                    )
        rs, steps = schema.run_steps, schema.steps
        dangling = select(rs.c.run_id, rs.c.position, rs.c.key).where(
            ~select(steps.c.key).where(steps.c.key == rs.c.key).exists()
        )
        checked += int(conn.execute(select(func.count()).select_from(rs)).scalar_one())
        for run_id, position, key in conn.execute(dangling):
            issues.append(
                VerifyIssue(
                    f"run_steps {run_id}/{position}",
                    f"key {key} is not in the step cache (steps)",
                )
            )
        mv = schema.model_versions
        unfitted = select(mv.c.name, mv.c.version, mv.c.fit_key).where(
            ~select(steps.c.key).where(steps.c.key == mv.c.fit_key).exists()
        )
        checked += int(conn.execute(select(func.count()).select_from(mv)).scalar_one())
        for name, version, key in conn.execute(unfitted):
            issues.append(
                VerifyIssue(
                    f"model_versions {name}/{version}",
                    f"fit key {key} is not in the step cache (steps)",
                )
            )
    audit = store.audit_trail.verify()
    issues += [VerifyIssue("audit trail", problem) for problem in audit.problems]
    return VerifyReport(
        blobs_checked=len(present),
        references_checked=checked,
        issues=tuple(issues),
        aborted_runs=tuple(aborted),
        temp_files_removed=len(removed),
        audit_events_checked=audit.n_events,
    )


def _referenced_digests(conn: Connection) -> set[str]:
    """Every digest a column refers to, plus any sha256-looking string in JSON columns."""
    found: set[str] = set()
    for table, _, column in BLOB_REFERENCES:
        found.update(d for d in conn.execute(select(table.c[column])).scalars() if d is not None)
    for table, column in JSON_COLUMNS:
        for value in conn.execute(select(table.c[column])).scalars():
            found.update(_HEX64.findall(json.dumps(value)))
    return found


def collect_garbage(store: Store, grace_seconds: float = 3600, dry_run: bool = False) -> list[str]:
    """Remove the blobs that nothing refers to and that are older than ``grace_seconds``.

    A blob counts as referenced when a digest column names it, or when its digest
    appears anywhere in a JSON column (conservative; audit event details excepted). Blobs
    written since the oldest in-flight run began (see :meth:`Store.in_flight`) are kept
    whatever the grace period, and so is anything written after gc started; the grace
    period protects what other writers have written but not registered yet. Returns the
    digests removed (or, with ``dry_run``, the ones that would be); a removal appends one
    ``store.gc`` audit event listing them.
    """
    from qemlflow.store.leases import live_leases

    if not math.isfinite(grace_seconds) or grace_seconds < 0:
        raise StoreError(
            f"the grace period must be a number of seconds >= 0, got {grace_seconds}",
            "give e.g. --grace 3600 (0 removes every unreferenced blob not in use)",
        )
    started = time.time()
    if not dry_run:
        store.blobs.clean_temp(STALE_TEMP_SECONDS)
    # Leases before references: a run that ends in between committed its references
    # before it dropped its lease, so the snapshot below holds them.
    leases = live_leases(store.root, remove_dead=not dry_run)
    with store.db.reading() as conn:
        referenced = _referenced_digests(conn)
    cutoff = min([started - grace_seconds, *(lease.started_at - _CLOCK_SLACK for lease in leases)])
    removed: list[str] = []
    for digest in store.blobs.digests():
        if digest in referenced:
            continue
        try:
            mtime = store.blobs.path_for(digest).stat().st_mtime
        except FileNotFoundError:
            continue
        if mtime > cutoff:
            continue
        if not dry_run and not store.blobs.remove_unless_touched(digest, cutoff):
            continue
        removed.append(digest)
    if removed and not dry_run:
        store.audit_trail.append(
            "store.gc",
            details={"removed": len(removed), "digests": removed, "grace_seconds": grace_seconds},
        )
    return removed


# -- backup and restore --------------------------------------------------------------


def _copy_rows(source: Connection, target: Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in schema.metadata.sorted_tables:
        query = select(table).order_by(*table.primary_key.columns)
        count = 0
        batch: list[dict[str, Any]] = []
        for row in source.execution_options(yield_per=_BATCH).execute(query):
            batch.append(dict(row._mapping))
            if len(batch) >= _BATCH:
                target.execute(insert(table), batch)
                count += len(batch)
                batch = []
        if batch:
            target.execute(insert(table), batch)
            count += len(batch)
        counts[table.name] = count
    return counts


def _sqlite_engine(path: Path) -> Engine:
    return create_engine(f"sqlite:///{path}")


def _count_rows(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in schema.metadata.sorted_tables
        }


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))


def _copy_blobs(
    source: BlobStore, target: BlobStore, digests: list[str], problems: list[str]
) -> tuple[list[str], int]:
    """Copy blobs (re-hashed while copying); a corrupt source blob is left out."""
    copied: list[str] = []
    size = 0
    for digest in digests:
        path = source.open_path(digest)
        got = target.put_file(path)
        if got != digest:
            target.remove(got)
            problems.append(f"blob {digest} is corrupt in {source.root}; not copied")
            continue
        copied.append(digest)
        size += path.stat().st_size
    _remove_empty_tmp(target)
    return copied, size


def _remove_empty_tmp(blobs: BlobStore) -> None:
    with contextlib.suppress(OSError):
        blobs.tmp_dir.rmdir()


def _check_copy(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Compare a backup folder (its database and blobs) with its manifest."""
    problems: list[str] = []
    engine = _sqlite_engine(folder / BACKUP_DB)
    try:
        counts = _count_rows(engine)
    finally:
        engine.dispose()
    for name, expected in manifest["tables"].items():
        if counts.get(name) != expected:
            problems.append(f"table {name}: {counts.get(name)} rows, manifest says {expected}")
    blobs = BlobStore(folder / "objects", create=False)
    for digest in manifest["blobs"]:
        if not blobs.has(digest):
            problems.append(f"blob {digest} is missing from the backup")
        elif blobs.hash_of(digest) != digest:
            problems.append(f"blob {digest} in the backup is corrupt")
    return problems


def backup_store(store: Store, dest: Path) -> BackupReport:
    """Write a backup of ``store`` into the new or empty folder ``dest``; check it."""
    dest = dest.expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreError(
            f"backup destination {dest} is not an empty folder",
            "give a new folder for the backup",
        )
    dest.mkdir(parents=True, exist_ok=True)
    store.runs.mark_aborted()
    target = _sqlite_engine(dest / BACKUP_DB)
    try:
        upgrade_schema(target)
        # Rows first, then blobs: every blob a copied row refers to already exists.
        reading = _reading(store.db.engine)
        if store.backend == "postgresql":  # one snapshot for all tables
            reading = reading.execution_options(isolation_level="REPEATABLE READ")
        with reading as source, source.begin(), target.begin() as out:
            counts = _copy_rows(source, out)
            head = audit_head(out)  # the last event the backup holds
    finally:
        target.dispose()
    problems: list[str] = []
    digests, size = _copy_blobs(
        store.blobs, BlobStore(dest / "objects"), list(store.blobs.digests()), problems
    )
    manifest = {
        "format": BACKUP_FORMAT,
        "created_at": utc_now(),
        "qemlflow_version": __version__,
        "schema_revision": head_revision(),
        "source_backend": store.backend,
        "tables": counts,
        "blobs": digests,
    }
    _write_json(dest / MANIFEST, manifest)
    problems += _check_copy(dest, manifest)
    store.audit_trail.append(
        "store.backup",
        details={
            "dest": str(dest),
            "tables": counts,
            "blobs": len(digests),
            "audit_head": {"seq": head["seq"], "hash": head["hash"]},
            "ok": not problems,
        },
    )
    return BackupReport(
        path=str(dest), tables=counts, blobs=len(digests), bytes=size, problems=tuple(problems)
    )


def _read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(
            f"{src} is not a QeMLflow backup (no {MANIFEST})",
            "give the folder written by `qemlflow store backup`",
        ) from None
    except ValueError as exc:
        raise StoreError(
            f"{src / MANIFEST} is not valid JSON: {exc}", "use another backup"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise StoreError(
            f"{src} holds a backup format this QeMLflow does not know",
            "restore it with the QeMLflow version that wrote it",
        )
    return manifest


@contextlib.contextmanager
def _backup_engine(src: Path) -> Iterator[Engine]:
    """Yield an engine on the backup's database, upgraded to head in a temp copy if older."""
    engine = _sqlite_engine(src / BACKUP_DB)
    if current_revision(engine) == head_revision():
        try:
            yield engine
        finally:
            engine.dispose()
        return
    engine.dispose()
    with tempfile.TemporaryDirectory(prefix="qemlflow-restore-") as tmp:
        copy = Path(tmp) / BACKUP_DB
        shutil.copyfile(src / BACKUP_DB, copy)
        engine = _sqlite_engine(copy)
        try:
            upgrade_schema(engine)
            yield engine
        finally:
            engine.dispose()


def restore_store(store: Store, src: Path) -> BackupReport:
    """Fill the empty ``store`` from the backup folder ``src`` and check the result."""
    src = src.expanduser().absolute()
    manifest = _read_manifest(src)
    if not store.is_empty():
        counts = store.db.table_counts()
        raise StoreError(
            f"the store at {store.root} is not empty ({counts.get('runs', 0)} runs, "
            f"{counts.get('steps', 0)} cached steps, blobs present)",
            "restore into a new, empty store folder (and database)",
        )
    problems = _check_copy(src, manifest)
    if problems:
        raise StoreError(
            f"the backup in {src} does not match its manifest: {problems[0]}",
            "use another backup",
        )
    digests, size = _copy_blobs(
        BlobStore(src / "objects"), store.blobs, list(manifest["blobs"]), problems
    )
    store.blobs.tmp_dir.mkdir(parents=True, exist_ok=True)
    with (
        _backup_engine(src) as engine,
        _reading(engine) as source,
        source.begin(),
        store.db.writing() as out,
    ):
        copied = _copy_rows(source, out)  # audit events verbatim: inserts pass the triggers
        head = audit_head(out)
        append_event(
            out,
            "store.restore",
            details={
                "source": str(src),
                "tables": copied,
                "blobs": len(digests),
                "audit_head": {"seq": head["seq"], "hash": head["hash"]},
                "backup_created_at": manifest.get("created_at"),
            },
        )
    counts = store.db.table_counts()
    audit_table = schema.audit_events.name
    for name, expected in manifest["tables"].items():
        restored = counts.get(name, 0) - (1 if name == audit_table else 0)  # + the restore event
        if restored != expected:
            problems.append(f"table {name}: {restored} rows restored, expected {expected}")
    missing = [d for d in manifest["blobs"] if not store.blobs.has(d)]
    problems += [f"blob {d} was not restored" for d in missing]
    return BackupReport(
        path=str(src), tables=counts, blobs=len(digests), bytes=size, problems=tuple(problems)
    )
