"""Killable worker processes that prepare molecules for the prediction service.

Everything whose cost grows with the molecule (the admission check, parsing,
standardization and featurization, with the ECFP4 bits of the applicability domain) runs
in worker processes, never in the server process; the server keeps the bounded parts, the
model call and the domain similarity. :class:`MoleculeWorkers` feeds the workers from one
dispatcher thread and hears back after every molecule, so it knows which molecule each
worker is on and since when: a worker over the molecule's time budget is SIGKILLed and
replaced, that molecule gets a ``timeout`` error and the rest of its chunk goes to a
worker again. Workers come from a forkserver (a clean, single-threaded process with RDKit
and QeMLflow already imported), never from a fork of the threaded server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from qemlflow.chemistry import DEFAULT_POLICY, ChemistryPolicy
from qemlflow.limits import DEFAULT_LIMITS, MoleculeLimits

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from qemlflow.pipeline.scoring import FeaturePlan
    from qemlflow.serve.metrics import ServiceMetrics

__all__ = [
    "FeatureCache",
    "FeatureRecipe",
    "MoleculeWorkers",
    "Prepared",
    "WorkerJob",
    "prepare_molecule",
]

log = logging.getLogger("qemlflow.serve")

# What the forkserver imports once, so that a fresh worker starts in milliseconds.
_PRELOAD = [
    "qemlflow.serve.workers",
    "qemlflow.chem",
    "qemlflow.chem.descriptors",
    "qemlflow.features",
    "qemlflow.pipeline.scoring",
    "qemlflow.serve.domain",
]
_CHUNK = 16  # most molecules handed to a worker at once (results come back one by one)
_TICK = 0.25  # the dispatcher wakes at least this often (heartbeat, stop, budgets)
_STALE = 10.0  # a dispatcher silent this long is not healthy
_FAILED_TTL = 60.0  # seconds a timeout or a worker crash is remembered for an input
_START_SECONDS = 60.0  # a worker not ready this long after its start is replaced
_READY = "ready"
_NICE = 5


@dataclass(frozen=True)
class Prepared:
    """One molecule after a worker: its standardized SMILES and features, or an error."""

    smiles: str
    error: str
    features: NDArray[Any] | None = field(default=None, repr=False)
    bits: NDArray[np.uint8] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FeatureRecipe:
    """What a worker needs to know about a model to prepare molecules for it."""

    spec: Any
    standardize: bool
    tautomer: bool
    limits: MoleculeLimits = DEFAULT_LIMITS
    chemistry: ChemistryPolicy = DEFAULT_POLICY

    @cached_property
    def key(self) -> str:
        """Identity of the recipe (workers keep one feature plan per key)."""
        text = repr((self.spec, self.standardize, self.tautomer, self.limits, self.chemistry))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def time_budget(self) -> float:
        """Seconds one molecule may take (the model's ``limits.time_budget_seconds``)."""
        return float(self.limits.time_budget_seconds)


def prepare_molecule(recipe: FeatureRecipe, plan: FeaturePlan, smiles: str) -> Prepared:
    """Admission check, parse/standardize and featurize one molecule, as ``Predictor.predict``.

    Anything RDKit raises on a hostile input becomes the molecule's error, not a crash.
    A standardized molecule whose SMILES is the one given (a canonical input) is featurized
    as it is where the plan takes molecules (:func:`~qemlflow.pipeline.scoring.as_given`:
    the same features as its SMILES read back).
    """
    from qemlflow.chem import parse_smiles, standardize_smiles
    from qemlflow.pipeline.scoring import as_given

    try:
        parsed = (
            standardize_smiles(
                smiles, tautomer=recipe.tautomer, limits=recipe.limits, policy=recipe.chemistry
            )
            if recipe.standardize
            else parse_smiles(smiles, limits=recipe.limits)
        )
        if not parsed.ok:
            error = f"{parsed.reason}: {parsed.detail}" if parsed.detail else str(parsed.reason)
            return Prepared("", error)
        std = parsed.smiles or ""
        reuse = recipe.standardize and plan.takes_molecules and as_given(smiles, parsed)
        X, bits = plan.compute([parsed.mol if reuse else std])
        return Prepared(std, "", X[0], bits[0])
    except Exception as exc:  # a string RDKit cannot take (e.g. a lone surrogate)
        return Prepared("", f"failed: {type(exc).__name__}: {str(exc)[:200]}")


# -- the worker process ----------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent (the forkserver) goes away."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker_main(conn: Connection) -> None:
    """Prepare the molecules of each task received, sending one result per molecule."""
    from qemlflow.pipeline.scoring import FeaturePlan

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    _die_with_parent()
    # The server's own work (HTTP, answers from the cache, the model call) is bounded and
    # comes first; preparing new molecules takes the CPU that is left.
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    plans: dict[str, FeaturePlan] = {}
    try:
        conn.send(_READY)  # only now does a molecule's time budget start to run
    except (EOFError, OSError):
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        task_id, recipe, smiles = task
        plan = plans.get(recipe.key)
        if plan is None:
            if len(plans) >= 4:
                plans.clear()
            plan = plans[recipe.key] = FeaturePlan(recipe.spec)
        for position, text in enumerate(smiles):
            try:
                conn.send((task_id, position, prepare_molecule(recipe, plan, text)))
            except (EOFError, OSError):
                return


# -- the parent's side -----------------------------------------------------------------


class FeatureCache:
    """Prepared molecules of one model, by input SMILES and by standardized SMILES.

    Features are deterministic for a model, so a molecule seen before needs no worker.
    A timeout or a worker crash is remembered for a minute only: it depends on the load.
    Feature rows are bounded in bytes, inputs in number; the oldest go first.
    """

    def __init__(self, max_inputs: int = 65_536, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_inputs = max_inputs
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._inputs: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._rows: OrderedDict[str, tuple[NDArray[Any], NDArray[np.uint8]]] = OrderedDict()
        self._bytes = 0

    def get(self, smiles: str) -> Prepared | None:
        """The molecule prepared before, or None."""
        known = self._inputs.get(smiles)
        if known is not None:
            std, error, expires = known
            if error and expires > time.monotonic():
                self.hits += 1
                return Prepared("", error)
            row = self._rows.get(std) if not error else None
            if row is not None:
                self._inputs.move_to_end(smiles)
                self._rows.move_to_end(std)
                self.hits += 1
                return Prepared(std, "", row[0], row[1])
        self.misses += 1
        return None

    def put(self, smiles: str, prepared: Prepared, *, transient: bool = False) -> None:
        """Remember ``prepared``; a ``transient`` error expires after a minute."""
        expires = time.monotonic() + _FAILED_TTL if transient else math.inf
        self._inputs[smiles] = (prepared.smiles, prepared.error, expires)
        self._inputs.move_to_end(smiles)
        while len(self._inputs) > self.max_inputs:
            self._inputs.popitem(last=False)
        if prepared.features is None or prepared.bits is None or prepared.smiles in self._rows:
            return
        self._rows[prepared.smiles] = (prepared.features, prepared.bits)
        self._bytes += prepared.features.nbytes + prepared.bits.nbytes
        while self._bytes > self.max_bytes and len(self._rows) > 1:
            _, (features, bits) = self._rows.popitem(last=False)
            self._bytes -= features.nbytes + bits.nbytes


@dataclass(eq=False)
class WorkerJob:
    """Molecules to prepare for one request; ``rows`` is filled in, then ``owner`` is told.

    ``cancelled`` says whether anyone still waits for the answer (the client may be gone);
    ``failure`` says why the job could not be done (the service is stopping), else None.
    """

    recipe: FeatureRecipe
    cache: FeatureCache
    smiles: list[str]
    owner: Any
    cancelled: Callable[[], bool] = lambda: False
    rows: list[Prepared | None] = field(default_factory=list)
    missing: int = 0
    pending: deque[int] = field(default_factory=deque)
    copies: dict[int, list[int]] = field(default_factory=dict)
    queued: bool = False
    failure: str | None = None


@dataclass(eq=False)
class _Task:
    id: int
    job: WorkerJob
    indices: list[int]
    done: int = 0


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    task: _Task | None = None
    since: float = field(default_factory=time.monotonic)  # start, then current molecule
    ready: bool = False


class MoleculeWorkers:
    """A supervised pool of killable worker processes, fed by one dispatcher thread.

    Parameters
    ----------
    processes
        Worker processes to keep running.
    finish
        Called on the dispatcher thread with every job whose molecules are all prepared
        (those completed at about the same time together, so the model is called once).
    metrics
        Where restarts, timeouts and cache hits are counted; None counts nothing.
    """

    def __init__(
        self,
        processes: int,
        finish: Callable[[list[WorkerJob]], None],
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.processes = max(1, processes)
        self.finish = finish
        self.metrics = metrics
        self.live = 0
        self.heartbeat = 0.0
        self._inbox: deque[WorkerJob] = deque()
        self._queue: deque[WorkerJob] = deque()
        self._done: list[WorkerJob] = []
        self._workers: list[_Worker | None] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._task_ids = 0
        self._retry_at = 0.0

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and the dispatcher; raises if not one worker can start."""
        if "forkserver" in multiprocessing.get_all_start_methods():
            context: Any = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD)
        else:  # no forkserver on this platform: fresh interpreters, slower to start
            context = multiprocessing.get_context("spawn")
        self._context = context
        self._stopping.clear()
        self._workers = [self._spawn() for _ in range(self.processes)]
        self.live = sum(w is not None for w in self._workers)
        if not self.live:
            raise RuntimeError("no worker process could be started")
        self.heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._supervise, name="qemlflow-dispatch")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the dispatcher, fail what is still waiting and kill every worker."""
        self._stopping.set()
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=timeout)
        if thread is None or not thread.is_alive():  # the dispatcher's state is ours now
            self._fail_everything("the service is stopping")  # what came in meanwhile
        for worker in self._workers:
            if worker is not None:
                self._kill(worker)
        self._workers = []
        self.live = 0

    @property
    def healthy(self) -> bool:
        """Whether work can be taken: the dispatcher runs and at least one worker lives."""
        thread = self._thread
        return (
            thread is not None
            and thread.is_alive()
            and not self._stopping.is_set()
            and self.live > 0
            and time.monotonic() - self.heartbeat < _STALE
        )

    def submit(self, job: WorkerJob) -> None:
        """Queue ``job``; ``finish`` is called with it once every molecule is prepared."""
        if self._stopping.is_set():
            job.failure = "the service is stopping"
            self.finish([job])
            return
        self._inbox.append(job)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer already means "wake up"
            self._wake_w.send(b"x")

    # -- workers -----------------------------------------------------------------------

    def _spawn(self) -> _Worker | None:
        try:
            parent, child = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_worker_main, args=(child,), name="qemlflow-worker", daemon=True
            )
            process.start()
            child.close()
        except Exception as exc:
            log.error("could not start a worker process: %s", exc)
            return None
        return _Worker(process, parent)

    def _kill(self, worker: _Worker) -> None:
        with contextlib.suppress(Exception):
            worker.process.kill()
        with contextlib.suppress(Exception):
            worker.process.join(timeout=1.0)
        with contextlib.suppress(Exception):
            worker.conn.close()
        with contextlib.suppress(Exception):
            worker.process.close()

    def _replace(self, slot: int, reason: str) -> None:
        """Kill the worker in ``slot`` (over budget, or dead) and start another in its place.

        The molecule it was on gets an error; the rest of its chunk is queued again.
        """
        worker = self._workers[slot]
        assert worker is not None
        task = worker.task
        if task is not None and task.done < len(task.indices):
            index = task.indices[task.done]
            job = task.job
            if reason == "timeout":
                error = (
                    f"timeout: preparing the molecule took over {job.recipe.time_budget:g} s, "
                    "the model's time budget per molecule, and was stopped "
                    "(raise limits.time_budget_seconds to allow more)"
                )
            else:
                with contextlib.suppress(Exception):
                    worker.process.join(timeout=1.0)
                code = worker.process.exitcode
                error = f"failed: the worker preparing the molecule died (exit code {code})"
            self._store(job, index, Prepared("", error), transient=True)
            self._requeue(job, task.indices[task.done + 1 :])
            if self.metrics is not None and reason == "timeout":
                self.metrics.molecule_timeouts.inc()
        self._kill(worker)
        if self.metrics is not None:
            self.metrics.worker_restarts.labels(reason).inc()
        log.warning("worker process restarted (%s)", reason)
        self._workers[slot] = self._spawn()
        self.live = sum(w is not None for w in self._workers)

    # -- the dispatcher ----------------------------------------------------------------

    def _supervise(self) -> None:
        """Run the dispatcher; an unexpected error fails what is in flight, not the service."""
        while not self._stopping.is_set():
            try:
                self._dispatch()
            except Exception:
                log.exception("the dispatcher failed; restarting it and its workers")
                self._fail_everything("the scorer failed while preparing this request")
                for slot, worker in enumerate(self._workers):
                    if worker is not None:
                        worker.task = None
                        self._replace(slot, "dispatcher")
        self._fail_everything("the service is stopping")

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            self.heartbeat = time.monotonic()
            self._take_new()
            self._restart_missing()
            self._assign()
            self._read(self._wait_seconds())
            self._enforce_budgets()
            self._finish_done()

    def _take_new(self) -> None:
        while self._inbox:
            job = self._inbox.popleft()
            job.rows = [None] * len(job.smiles)
            first: dict[str, int] = {}
            for i, text in enumerate(job.smiles):
                if text in first:  # the same molecule twice: prepared once
                    job.copies.setdefault(first[text], []).append(i)
                    continue
                first[text] = i
                known = job.cache.get(text)
                if known is not None:
                    job.rows[i] = known
                else:
                    job.pending.append(i)
            for i, copies in job.copies.items():
                for j in copies:
                    job.rows[j] = job.rows[i]
            job.missing = sum(row is None for row in job.rows)
            if self.metrics is not None:
                self.metrics.record_cache(len(first) - len(job.pending), len(job.pending))
            if job.missing == 0:
                self._done.append(job)
            else:
                job.queued = True
                self._queue.append(job)

    def _restart_missing(self) -> None:
        now = time.monotonic()
        if self.live == len(self._workers) or now < self._retry_at:
            return
        for slot, worker in enumerate(self._workers):
            if worker is None:
                self._workers[slot] = self._spawn()
        self.live = sum(w is not None for w in self._workers)
        if self.live < len(self._workers):
            self._retry_at = now + 1.0

    def _assign(self) -> None:
        idle = [w for w in self._workers if w is not None and w.ready and w.task is None]
        while idle and self._queue:
            job = self._queue[0]
            if job.cancelled() or not job.pending:
                self._queue.popleft()
                job.queued = False
                continue
            waiting = sum(len(j.pending) for j in self._queue)
            size = max(1, min(_CHUNK, -(-waiting // max(1, self.live)), len(job.pending)))
            indices = [job.pending.popleft() for _ in range(size)]
            self._queue.rotate(-1)  # round robin: a big request does not hold up small ones
            if not job.pending:
                self._queue.remove(job)
                job.queued = False
            worker = idle.pop()
            self._task_ids += 1
            task = _Task(self._task_ids, job, indices)
            try:
                worker.conn.send((task.id, job.recipe, [job.smiles[i] for i in indices]))
            except (OSError, ValueError):
                self._requeue(job, indices)
                continue  # its death is noticed by _read
            worker.task = task
            worker.since = time.monotonic()

    def _requeue(self, job: WorkerJob, indices: Sequence[int]) -> None:
        if not indices:
            return
        job.pending.extendleft(reversed(indices))
        if not job.queued:
            job.queued = True
            self._queue.appendleft(job)

    def _wait_seconds(self) -> float:
        if self._done:  # answered from the cache: no reason to wait for anything
            return 0.0
        now = time.monotonic()
        seconds = _TICK
        for worker in self._workers:
            if worker is not None and worker.task is not None:
                deadline = worker.since + worker.task.job.recipe.time_budget
                seconds = min(seconds, deadline - now)
        return max(0.0, seconds)

    def _read(self, timeout: float) -> None:
        watched: list[Any] = [self._wake_r]
        for worker in self._workers:
            if worker is not None:
                watched += [worker.conn, worker.process.sentinel]
        ready = set(wait(watched, timeout))
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        for slot, worker in enumerate(self._workers):
            if worker is None:
                continue
            if worker.conn in ready and not self._drain(worker):
                self._replace(slot, "died")
            elif worker.process.sentinel in ready and worker.conn not in ready:
                self._drain(worker)
                self._replace(slot, "died")

    def _drain(self, worker: _Worker) -> bool:
        """Take every result the worker has sent; False when it is gone."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message == _READY:
                    worker.ready = True
                    continue
                task_id, position, prepared = message
                task = worker.task
                if task is None or task.id != task_id or position != task.done:
                    continue  # a result nobody waits for any more
                self._store(task.job, task.indices[position], prepared)
                task.done += 1
                worker.since = time.monotonic()
                if task.done == len(task.indices):
                    worker.task = None
        except (EOFError, OSError):
            return False
        return True

    def _store(
        self, job: WorkerJob, index: int, prepared: Prepared, transient: bool = False
    ) -> None:
        job.cache.put(job.smiles[index], prepared, transient=transient)
        for i in (index, *job.copies.get(index, ())):
            if job.rows[i] is None:
                job.rows[i] = prepared
                job.missing -= 1
        if job.missing == 0:
            self._done.append(job)

    def _enforce_budgets(self) -> None:
        now = time.monotonic()
        for slot, worker in enumerate(self._workers):
            if worker is not None and not worker.ready and now - worker.since > _START_SECONDS:
                self._replace(slot, "died")  # never came up
                continue
            if worker is None or worker.task is None:
                continue
            if now - worker.since <= worker.task.job.recipe.time_budget:
                continue
            if not self._drain(worker):  # it may have just finished
                self._replace(slot, "died")
            elif (
                worker.task is not None and now - worker.since > worker.task.job.recipe.time_budget
            ):
                self._replace(slot, "timeout")

    def _finish_done(self) -> None:
        done = [job for job in self._done if not job.cancelled()]
        self._done.clear()
        if done:
            self.finish(done)

    def _fail_everything(self, why: str) -> None:
        """Hand every job still waiting back with ``failure`` set."""
        jobs = list(self._inbox) + list(self._queue)
        for worker in self._workers:
            if worker is not None and worker.task is not None:
                jobs.append(worker.task.job)
                worker.task = None
        self._inbox.clear()
        self._queue.clear()
        unique = list({id(job): job for job in jobs}.values())
        for job in unique:
            job.failure = why
            self._done.append(job)
        with contextlib.suppress(Exception):
            self._finish_done()


def worker_processes() -> int:
    """Default worker count: one per core, at least two (one can be busy with a runaway)."""
    return max(2, os.cpu_count() or 1)
