"""The model behind the prediction service: loaded, smoke-tested, batched, swapped.

:class:`ServedModel` is one registered model version ready to answer: its predictor
(from a hash-verified blob), a fast featurization plan and its applicability domain.
:class:`ModelService` holds the version being served, scores requests on one worker
thread (requests that arrive while it is busy are scored together, which amortizes the
model's per-call cost), and follows the registry: when the alias moves, the new version
is loaded and smoke-tested in the background and swapped in with one assignment, so no
request ever sees a half-loaded model. A version that fails its smoke test is never
served; the refusal is recorded in the audit trail as ``model.auto_rollback``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from qemlflow.errors import QeMLflowError
from qemlflow.pipeline.scoring import FeaturePlan, training_smiles
from qemlflow.serve.domain import DEFAULT_THRESHOLD, ApplicabilityDomain
from qemlflow.serve.schemas import (
    DomainScore,
    ModelInfo,
    PredictionResult,
    PredictResponse,
    TaskPrediction,
)

if TYPE_CHECKING:
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.registry import ModelVersion
    from qemlflow.serve.metrics import ServiceMetrics
    from qemlflow.store import Store

__all__ = [
    "BatchTooLargeError",
    "ModelNotReadyError",
    "ModelService",
    "ServeError",
    "ServedModel",
    "SmokeTestError",
    "smiles_from_table",
]

log = logging.getLogger("qemlflow.serve")

_STANDARDIZE_CACHE = 65_536  # input SMILES remembered with their standardized form
_BATCH_MOLECULES = 2_048  # molecules scored together at most (one big request may exceed it)


class ServeError(QeMLflowError):
    """The prediction service cannot do what was asked."""


class ModelNotReadyError(ServeError):
    """No model has been loaded and smoke-tested yet."""


class BatchTooLargeError(ServeError):
    """A request holds more molecules than the service accepts at once."""


class SmokeTestError(ServeError):
    """A model version failed its readiness check and will not be served."""


@lru_cache(maxsize=_STANDARDIZE_CACHE)
def _prepared(smiles: str, standardize: bool, tautomer: bool) -> tuple[str, str]:
    """(standardized SMILES, error): exactly what ``Predictor.predict`` computes per input."""
    from qemlflow.chem import parse_smiles, standardize_smiles

    parsed = standardize_smiles(smiles, tautomer=tautomer) if standardize else parse_smiles(smiles)
    if parsed.ok:
        return parsed.smiles or "", ""
    error = f"{parsed.reason}: {parsed.detail}" if parsed.detail else str(parsed.reason)
    return "", error


# Below this many molecules, a round trip to the worker processes costs more than it saves.
_PARALLEL_FROM = 256


def _prepare_chunk(job: tuple[list[str], bool, bool]) -> list[tuple[str, str]]:
    """Standardize a chunk in a worker process (module level, so it can be pickled)."""
    smiles, standardize, tautomer = job
    return [_prepared(s, standardize, tautomer) for s in smiles]


def _prepare_all(
    smiles: Sequence[str], standardize: bool, tautomer: bool, pool: Executor | None
) -> list[tuple[str, str]]:
    """Standardize every input; big batches are spread over the worker processes."""
    if pool is None or len(smiles) < _PARALLEL_FROM:
        return [_prepared(s, standardize, tautomer) for s in smiles]
    size = -(-len(smiles) // ((os.cpu_count() or 1) * 2))
    jobs = [
        (list(smiles[i : i + size]), standardize, tautomer) for i in range(0, len(smiles), size)
    ]
    return [row for chunk in pool.map(_prepare_chunk, jobs) for row in chunk]


def _start_pool() -> Executor | None:
    """Worker processes for standardizing big batches, started before any thread is."""
    workers = os.cpu_count() or 1
    if workers < 2:
        return None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    # Processes start on demand; make them all now, while this process has one thread.
    list(pool.map(time.sleep, [0.05] * workers))
    return pool


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, loaded from its verified blob and ready to score."""

    version: ModelVersion
    predictor: Predictor
    domain: ApplicabilityDomain
    plan: FeaturePlan = field(repr=False)
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def load(
        cls, store: Store, version: ModelVersion, threshold: float = DEFAULT_THRESHOLD
    ) -> ServedModel:
        """Load ``version`` (hash-verified), build its domain, and smoke-test it.

        Raises
        ------
        SmokeTestError
            The model's own test molecules do not all get a finite prediction.
        """
        from qemlflow import registry

        predictor = registry.load_version(store, version)
        domain = ApplicabilityDomain(threshold=threshold).fit(_training_smiles(store, version))
        model = cls(version, predictor, domain, FeaturePlan(predictor.feature_spec))
        model.smoke_test(registry.test_molecules(store, version))
        return model

    @property
    def name(self) -> str:
        """The registered model name."""
        return str(self.version.name)

    @property
    def number(self) -> int:
        """The version number."""
        return int(self.version.version)

    def smoke_test(self, smiles: Sequence[str]) -> None:
        """Raise SmokeTestError unless every molecule gets finite outputs and no error."""
        if not smiles:
            raise SmokeTestError(f"{self.version_label} has no test molecules to check it on")
        rows = self.score(list(smiles))
        for row in rows:
            values = [row.prediction, row.lower, row.upper, row.probability]
            for task in (row.tasks or {}).values():
                values += [task.prediction, task.lower, task.upper, task.probability]
            given = [v for v in values if v is not None]
            if row.error or not given or not all(math.isfinite(v) for v in given):
                raise SmokeTestError(
                    f"{self.version_label} failed its smoke test on {row.smiles!r}: "
                    + (row.error or "no finite prediction")
                )

    @property
    def version_label(self) -> str:
        """``NAME@N``."""
        return f"{self.name}@{self.number}"

    def score(self, smiles: Sequence[str], pool: Executor | None = None) -> list[PredictionResult]:
        """Score molecules: one result per input, in order; invalid ones carry an error.

        The numbers are exactly those of ``Predictor.predict`` for the same SMILES.
        ``pool`` standardizes big batches in worker processes.
        """
        p = self.predictor
        prepared = _prepare_all(smiles, p.standardize, p.tautomer, pool)
        good = [i for i, (_, error) in enumerate(prepared) if not error]
        X, bits = self.plan.compute([prepared[i][0] for i in good])
        columns = self._model_outputs(X)
        similarity = np.full(len(smiles), np.nan)
        similarity[good] = self.domain.similarity_packed(bits)
        in_domain = self.domain.in_domain(similarity).tolist()
        position = dict(zip(good, range(len(good)), strict=True))
        threshold = float(self.domain.threshold)
        results = []
        for i, (given, (std, error)) in enumerate(zip(smiles, prepared, strict=True)):
            row = position.get(i)
            values: dict[str, Any] = {"prediction": None}
            if row is not None:
                values = self._values(columns, row)
            results.append(
                PredictionResult.model_construct(
                    smiles=given,
                    standardized_smiles=std or None,
                    **values,
                    domain=DomainScore.model_construct(
                        similarity=_number(float(similarity[i])),
                        in_domain=bool(in_domain[i]),
                        threshold=threshold,
                    ),
                    model=self.name,
                    model_version=self.number,
                    error=error or None,
                )
            )
        return results

    def _model_outputs(self, X: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
        """Output name -> (n, n_tasks) matrix; the calls ``Predictor.predict`` makes."""
        if not len(X):
            return {}
        return self.predictor.outputs(X)

    def _values(self, columns: dict[str, NDArray[np.float64]], row: int) -> dict[str, Any]:
        targets = self.predictor.target_names
        if len(targets) == 1:
            return {name: _number(float(m[row, 0])) for name, m in columns.items()}
        tasks = {
            target: TaskPrediction(
                **{name: _number(float(m[row, t])) for name, m in columns.items()}
            )
            for t, target in enumerate(targets)
        }
        return {"prediction": None, "tasks": tasks}


def _training_smiles(store: Store, version: ModelVersion) -> list[str]:
    """The standardized SMILES the version's model was fitted on (train split of its run)."""
    smiles = training_smiles(store, version.run_id)
    if smiles is None:
        raise SmokeTestError(
            f"run {version.run_id} has no recorded dataset or split",
            "register a model from a run recorded in this store",
        )
    return smiles


def smiles_from_table(
    data: bytes,
    filename: str | None,
    column: str | None,
    *,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_field_bytes: int | None = None,
) -> list[str]:
    """The SMILES column of an uploaded table (any format the reader knows, by file
    name; default CSV; gzip also by its first bytes), one entry per row.

    The upload is decompressed and parsed as a stream, stopped with InputTooLargeError
    as soon as it passes ``max_bytes`` decompressed or ``max_rows`` rows (a Parquet file
    is checked against its footer first); a row over ``max_field_bytes`` is an error.
    A row that cannot be read gives an empty SMILES (an invalid molecule, in its place).
    """
    from qemlflow.data.reader import DEFAULT_MAX_FIELD_BYTES, ReadLimits, open_molecules

    name = filename if filename and "." in filename else "upload.csv"
    limits = ReadLimits(
        max_field_bytes=max_field_bytes or DEFAULT_MAX_FIELD_BYTES,
        max_bytes=max_bytes,
        max_rows=max_rows,
    )
    source = open_molecules(data, name=name, label=f"the upload {name!r}", limits=limits)
    return [molecule.smiles for molecule in source.molecules(column)]


_Job = tuple[list[str], "Future[PredictResponse]"]


class ModelService:
    """Serves one registry spec (``NAME``, ``NAME@ALIAS`` or ``NAME@N``) and follows it.

    Parameters
    ----------
    store
        The store holding the registry and the model blobs.
    spec
        What to serve; an alias is re-resolved every ``poll_seconds``.
    poll_seconds
        How often the registry is checked for a moved alias (0: never).
    domain_threshold
        Applicability-domain similarity threshold reported with every prediction.
    max_batch
        Most molecules one request may hold.
    key_cache_seconds
        How long a checked API key is trusted before the store is asked again (a revoked
        key stops working within this time).
    metrics
        Where counters go; None records nothing.
    """

    def __init__(
        self,
        store: Store,
        spec: str,
        *,
        poll_seconds: float = 10.0,
        domain_threshold: float = DEFAULT_THRESHOLD,
        max_batch: int = 10_000,
        key_cache_seconds: float = 5.0,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.poll_seconds = poll_seconds
        self.domain_threshold = domain_threshold
        self.max_batch = max_batch
        self.key_cache_seconds = key_cache_seconds
        self.metrics = metrics
        self.current: ServedModel | None = None
        self.refused: dict[tuple[str, int], str] = {}
        self._keys: dict[str, float] = {}
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: Executor | None = None

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> ServedModel:
        """Load and smoke-test the spec's version, then start the worker and the poller."""
        from qemlflow import registry

        model = ServedModel.load(
            self.store, registry.resolve(self.store, self.spec), self.domain_threshold
        )
        self._serve(model)
        if self._pool is None:
            self._pool = _start_pool()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._work, name="qemlflow-serve", daemon=True)]
        if self.poll_seconds > 0:
            self._threads.append(
                threading.Thread(target=self._follow, name="qemlflow-poll", daemon=True)
            )
        for thread in self._threads:
            thread.start()
        return model

    def stop(self) -> None:
        """Stop the poller and the worker (requests in flight are answered first)."""
        self._stop.set()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`stop` has not)."""
        return bool(self._threads)

    @property
    def ready(self) -> bool:
        """A smoke-tested model is being served and the worker is running."""
        return self.current is not None and any(
            t.name == "qemlflow-serve" and t.is_alive() for t in self._threads
        )

    # -- predictions -------------------------------------------------------------------

    async def predict(self, smiles: list[str]) -> PredictResponse:
        """Score ``smiles`` with the model being served (one version for the whole list)."""
        if len(smiles) > self.max_batch:
            raise BatchTooLargeError(
                f"{len(smiles)} molecules in one request; at most {self.max_batch} are accepted",
                "split the molecules over several requests",
            )
        if not self.ready:
            raise ModelNotReadyError("no model is loaded yet", "wait until /readyz says ready")
        future: Future[PredictResponse] = Future()
        self._jobs.put((smiles, future))
        return await asyncio.wrap_future(future)

    def _work(self) -> None:
        """Worker loop: take every waiting job (up to a batch), score them in one go."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            jobs, size = [job], len(job[0])
            while size < _BATCH_MOLECULES:
                try:
                    extra = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if extra is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                jobs.append(extra)
                size += len(extra[0])
            self._score_jobs(jobs)

    def _score_jobs(self, jobs: list[_Job]) -> None:
        model = self.current  # read once: the whole batch is one version
        try:
            assert model is not None
            rows = model.score([s for smiles, _ in jobs for s in smiles], self._pool)
        except Exception as exc:
            for _, future in jobs:
                future.set_exception(exc)
            return
        if self.metrics is not None:
            self.metrics.record_molecules(rows)
        start = 0
        for smiles, future in jobs:
            results = rows[start : start + len(smiles)]
            start += len(smiles)
            future.set_result(
                PredictResponse.model_construct(
                    model=model.name,
                    model_version=model.number,
                    domain_threshold=float(model.domain.threshold),
                    results=results,
                )
            )

    # -- following the registry -------------------------------------------------------

    def _serve(self, model: ServedModel) -> None:
        self.current = model  # one reference assignment: atomic for every reader
        log.info("serving %s", model.version_label)
        if self.metrics is not None:
            self.metrics.record_serving(model.name, model.number)

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception as exc:  # keep serving whatever the registry does
                log.warning("registry poll failed: %s", exc)

    def poll_once(self) -> str:
        """Check the spec once; return ``"unchanged"``, ``"swapped"`` or ``"refused"``.

        A new version is loaded and smoke-tested before it replaces the current one; a
        version that fails is refused (once, with a ``model.auto_rollback`` audit event)
        and the current one keeps serving.
        """
        from qemlflow import registry

        wanted = registry.resolve(self.store, self.spec)
        current = self.current
        key = (str(wanted.name), int(wanted.version))
        if current is not None and (current.name, current.number) == key:
            return "unchanged"
        if key in self.refused:
            return "refused"
        try:
            model = ServedModel.load(self.store, wanted, self.domain_threshold)
        except Exception as exc:
            self._refuse(wanted, current, exc)
            return "refused"
        self._serve(model)
        if self.metrics is not None:
            self.metrics.swaps.inc()
        return "swapped"

    def _refuse(self, wanted: ModelVersion, current: ServedModel | None, exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}"
        label = f"{wanted.name}@{wanted.version}"
        self.refused[(str(wanted.name), int(wanted.version))] = why
        kept = current.version_label if current is not None else "nothing"
        log.error("refused %s (%s); still serving %s", label, why, kept)
        if self.metrics is not None:
            self.metrics.auto_rollbacks.inc()
        self.store.audit(
            "model.auto_rollback",
            {"model": str(wanted.model_digest), "run": str(wanted.run_id)},
            reason=f"{label} failed its readiness check ({why}); kept serving {kept}",
            details={
                "name": str(wanted.name),
                "refused_version": int(wanted.version),
                "serving_version": None if current is None else current.number,
                "spec": self.spec,
                "error": why,
            },
        )

    def describe(self) -> ModelInfo:
        """What is being served, with the model's aliases now (reads the store)."""
        model = self.current
        if model is None:
            raise ModelNotReadyError("no model is loaded yet", "wait until /readyz says ready")
        v = model.version
        return ModelInfo(
            name=model.name,
            version=model.number,
            spec=self.spec,
            run_id=str(v.run_id),
            model_digest=str(v.model_digest),
            task=str(v.task),
            target_names=[str(t) for t in v.target_names],
            metrics=dict(v.metrics),
            aliases=self.store.current_aliases(model.name),
            loaded_at=datetime.fromtimestamp(model.loaded_at, UTC).isoformat(timespec="seconds"),
            refused_versions=sorted(n for name, n in self.refused if name == model.name),
        )

    # -- API keys ----------------------------------------------------------------------

    def key_is_cached(self, presented: str) -> bool:
        """Whether ``presented`` was found valid less than ``key_cache_seconds`` ago."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return self._keys.get(digest, 0.0) > time.monotonic()

    def key_is_valid(self, presented: str) -> bool:
        """Whether ``presented`` is an active API key of the store (asks the store)."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        now = time.monotonic()
        if self.store.check_api_key(presented) is None:
            self._keys.pop(digest, None)
            return False
        self._keys[digest] = now + self.key_cache_seconds
        return True
