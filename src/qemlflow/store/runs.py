"""The runs repository: runs, the steps each executed, and the artifacts they attached.

A run is owned by the process that started it (host, pid, and the pid's start time), so
that a run whose process died can be told from one still going and marked ``aborted``.
Starting and ending a run each append an audit event in the same transaction as the row.
"""

from __future__ import annotations

import builtins
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from qemlflow.store import schema
from qemlflow.store.audit import append_event
from qemlflow.store.blobs import BlobStore
from qemlflow.store.errors import StoreError
from qemlflow.store.keys import plain_json
from qemlflow.store.processes import hostname, process_alive, process_start_time
from qemlflow.store.records import ArtifactRecord, RunRecord, RunStepRecord, utc_now
from qemlflow.store.transactions import MIN_PREFIX, Database, insert_ignore, is_hex, row_by_id

__all__ = ["RUNS_FIX", "RunSummary", "Runs", "run_status"]

RUNS_FIX = "list runs with `qemlflow runs list`"


def _new_run_id() -> str:
    now = datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


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


@dataclass(frozen=True)
class RunSummary:
    """What a list of runs shows of each: no steps, artifacts or environment.

    ``test`` holds the test-set metrics and ``ci`` their confidence intervals
    (``{"rmse": [low, high]}``), both empty while a run has none; ``who`` is the actor of
    the run's ``run.started`` audit event (``None`` when the trail does not name it).
    """

    id: str
    name: str
    status: str
    config: dict[str, Any]
    seed: int | None
    started_at: str
    finished_at: str | None
    error: str | None
    test: dict[str, Any]
    ci: dict[str, Any]
    who: str | None


def _summary_from(row: RowMapping, who: str | None) -> RunSummary:
    metrics = row["metrics"] if isinstance(row["metrics"], Mapping) else {}
    test = metrics.get("test")
    intervals = metrics.get("ci95")
    ci = intervals.get("test") if isinstance(intervals, Mapping) else None
    return RunSummary(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        config=row["config"] if isinstance(row["config"], dict) else {},
        seed=row["seed"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        test=dict(test) if isinstance(test, Mapping) else {},
        ci=dict(ci) if isinstance(ci, Mapping) else {},
        who=who,
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


def run_status(conn: Connection, run_id: str) -> str:
    """Return the status of run ``run_id`` inside ``conn``'s transaction.

    Other repositories use it to refer to a run in their own write (the registry only
    registers a finished run's model).

    Raises
    ------
    StoreError
        There is no such run.
    """
    status = conn.execute(select(schema.runs.c.status).where(schema.runs.c.id == run_id)).scalar()
    if status is None:
        raise StoreError(f"no run {run_id!r}", RUNS_FIX)
    return str(status)


class Runs:
    """The runs of a store (``store.runs``).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from qemlflow.store import Store
    >>> with Store.open(Path(tempfile.mkdtemp())) as store:
    ...     run_id = store.runs.create("demo", {"model": "rf"}, 0, None)
    ...     store.runs.finish(run_id, {"rmse": 0.7})
    ...     store.runs.get(run_id[:17]).status
    'finished'
    """

    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    # -- writing -----------------------------------------------------------------------

    def create(
        self,
        name: str,
        config: Mapping[str, Any],
        seed: int | None,
        environment_digest: str | None,
    ) -> str:
        """Start a run owned by this process and return its id (time-sortable, UTC).

        Appends a ``run.started`` audit event.
        """
        self.mark_aborted()
        self._blobs.require(f"run {name!r} environment", environment_digest)
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
                with self._db.writing() as conn:
                    conn.execute(
                        insert(schema.runs).values(id=run_id, started_at=utc_now(), **base)
                    )
                    append_event(
                        conn,
                        "run.started",
                        {"run": run_id, "environment": environment_digest},
                        details=details,
                    )
            except IntegrityError:  # the same id in the same second: draw again
                continue
            return run_id
        raise StoreError("could not draw a unique run id", "try again")  # pragma: no cover

    def record_step(
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
        self._blobs.require(f"run {run_id} step {position} ({step})", output)
        with self._db.changing() as conn:
            run_status(conn, run_id)
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
        self._blobs.require(f"artifact {name!r} of run {run_id}", digest)
        t = schema.artifacts
        with self._db.changing() as conn:
            run_status(conn, run_id)
            insert_ignore(conn, t, {"run_id": run_id, "name": name, "digest": digest, "kind": kind})
            stored = conn.execute(
                select(t.c.digest).where(t.c.run_id == run_id, t.c.name == name)
            ).scalar_one()
        if stored != digest:
            raise StoreError(
                f"run {run_id} already has an artifact {name!r} with other content",
                "give the new artifact another name",
            )

    def _end(
        self,
        run_id: str,
        values: Mapping[str, Any],
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        t = schema.runs
        with self._db.writing() as conn:
            result = conn.execute(
                update(t)
                .where(t.c.id == run_id, t.c.status == "running")
                .values(finished_at=utc_now(), **values)
            )
            if result.rowcount == 1:
                environment = conn.execute(select(t.c.environment).where(t.c.id == run_id)).scalar()
                append_event(
                    conn,
                    f"run.{values['status']}",
                    {"run": run_id, "environment": environment},
                    reason=reason,
                    details=details,
                )
                return
            status = run_status(conn, run_id)
        raise StoreError(f"run {run_id} is already {status}", "start a new run")

    def finish(self, run_id: str, metrics: Mapping[str, Any]) -> None:
        """Mark a running run ``finished`` with its metrics (NaN stored as null).

        Appends a ``run.finished`` audit event holding the test metrics.
        """
        self._end(
            run_id,
            {"status": "finished", "metrics": plain_json(dict(metrics))},
            details=_test_metrics(metrics),
        )

    def fail(self, run_id: str, error: str) -> None:
        """Mark a running run ``failed`` with the error message (a ``run.failed`` event)."""
        self._end(run_id, {"status": "failed", "error": str(error)}, reason=str(error))

    def mark_aborted(self) -> builtins.list[str]:
        """Mark ``aborted`` every running run of this host whose process is gone.

        A process counts as gone when its pid no longer exists, is a zombie, or now
        belongs to a process with another start time (pid reuse). Returns the run ids; each
        gets a ``run.aborted`` audit event.
        """
        t = schema.runs
        host = hostname()
        with self._db.reading() as conn:
            rows = conn.execute(
                select(t.c.id, t.c.pid, t.c.pid_started).where(
                    t.c.status == "running", t.c.host == host
                )
            ).all()
        dead = [r for r in rows if not process_alive(r.pid, r.pid_started)]
        aborted: list[str] = []
        for run_id, pid, _ in dead:
            with self._db.writing() as conn:
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
                    append_event(
                        conn,
                        "run.aborted",
                        {"run": run_id},
                        reason=f"process {pid} on {host} is gone",
                        details={"host": host, "pid": pid},
                    )
            if result.rowcount == 1:
                aborted.append(run_id)
        return aborted

    # -- reading -----------------------------------------------------------------------

    @staticmethod
    def _details(
        conn: Connection, run_ids: Sequence[str]
    ) -> tuple[dict[str, builtins.list[RunStepRecord]], dict[str, builtins.list[ArtifactRecord]]]:
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

    def list(self, limit: int | None = None) -> builtins.list[RunRecord]:
        """Return runs newest first (with their steps and artifacts), at most ``limit``."""
        self.mark_aborted()
        t = schema.runs
        query = select(t).order_by(t.c.started_at.desc(), t.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._db.reading() as conn:
            rows = [r._mapping for r in conn.execute(query).all()]
            steps, artifacts = self._details(conn, [r["id"] for r in rows])
        return [_run_from(r, steps[r["id"]], artifacts[r["id"]]) for r in rows]

    def summaries(self) -> builtins.list[RunSummary]:
        """Return every run, newest first, as a lean :class:`RunSummary` (two queries).

        Unlike :meth:`list` it loads no steps or artifacts, and it only reads: a run whose
        process died stays ``running`` here until a writer marks it aborted.
        """
        t, events = schema.runs, schema.audit_events
        lean = ("id", "name", "status", "config", "seed", "started_at", "finished_at", "error")
        columns = [t.c[name] for name in (*lean, "metrics")]
        with self._db.reading() as conn:
            rows = [
                r._mapping
                for r in conn.execute(
                    select(*columns).order_by(t.c.started_at.desc(), t.c.id.desc())
                )
            ]
            # The action index narrows 100,000s of events to one per run.
            who: dict[str, str] = {}
            for objects, actor in conn.execute(
                select(events.c.objects, events.c.actor).where(events.c.action == "run.started")
            ):
                run_id = objects.get("run") if isinstance(objects, Mapping) else None
                if isinstance(run_id, str):
                    who[run_id] = actor
        return [_summary_from(r, who.get(r["id"])) for r in rows]

    def change_token(self) -> tuple[int, str | None, str | None]:
        """Return (number of runs, latest start, latest end): it changes whenever a run is
        started or ends, so a cache of :meth:`summaries` keyed by it is never stale."""
        t = schema.runs
        with self._db.reading() as conn:
            count, started, finished = conn.execute(
                select(func.count(), func.max(t.c.started_at), func.max(t.c.finished_at))
            ).one()
        return int(count), started, finished

    def get(self, id_or_prefix: str, *, settle: bool = True) -> RunRecord:
        """Return the run whose id is, or uniquely starts with, ``id_or_prefix``.

        ``settle`` first marks aborted the runs whose process is gone (a write, audited);
        readers that must not write (the UI) pass False and see such a run as running.
        """
        if settle:
            self.mark_aborted()
        with self._db.reading() as conn:
            row = row_by_id(conn, schema.runs, id_or_prefix, "run", RUNS_FIX)
            steps, artifacts = self._details(conn, [row["id"]])
        return _run_from(row, steps[row["id"]], artifacts[row["id"]])

    def using_step(self, key: str) -> builtins.list[str]:
        """Return the ids of the runs that executed (or were served) step ``key``."""
        t = schema.run_steps
        with self._db.reading() as conn:
            rows = conn.execute(
                select(t.c.run_id).where(t.c.key == key).distinct().order_by(t.c.run_id)
            ).all()
        return [str(r[0]) for r in rows]

    def find_artifacts(self, *, digest_prefix: str) -> builtins.list[ArtifactRecord]:
        """Return the run artifacts whose blob digest starts with ``digest_prefix``."""
        if len(digest_prefix) < MIN_PREFIX or not is_hex(digest_prefix):
            return []
        t = schema.artifacts
        with self._db.reading() as conn:
            rows = conn.execute(
                select(t)
                .where(t.c.digest.like(f"{digest_prefix.lower()}%"))
                .order_by(t.c.run_id, t.c.name)
            ).all()
        return [
            ArtifactRecord(run_id=r.run_id, name=r.name, digest=r.digest, kind=r.kind) for r in rows
        ]
