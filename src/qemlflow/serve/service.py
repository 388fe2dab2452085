"""The model behind the prediction service: loaded, smoke-tested, batched, swapped.

:class:`ServedModel` is one registered model version ready to answer: its predictor
(from a hash-verified blob), a fast featurization plan, its applicability domain and a
cache of the molecules already prepared for it. :class:`ModelService` holds the version
being served and scores requests: the per-molecule work whose cost grows with the
molecule runs in killable worker processes (:mod:`qemlflow.serve.workers`), each molecule
within the model's time budget; the model call and the domain similarity run here, once
for every request whose molecules are ready at about the same time (which amortizes the
model's per-call cost). The service follows the registry: when the alias moves, the new
version is loaded and smoke-tested in the background and swapped in with one assignment,
so no request ever sees a half-loaded model. A version that fails its smoke test is never
served; the refusal is recorded in the audit trail as ``model.auto_rollback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
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
from qemlflow.serve.workers import (
    FeatureCache,
    FeatureRecipe,
    MoleculeWorkers,
    Prepared,
    WorkerJob,
    prepare_molecule,
    worker_processes,
)

if TYPE_CHECKING:
    from qemlflow.data.reader import Molecule
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.registry import ModelVersion
    from qemlflow.serve.metrics import ServiceMetrics
    from qemlflow.serve.monitoring import Reference, TrafficMonitor
    from qemlflow.store import Store

__all__ = [
    "AnswerCache",
    "BatchTooLargeError",
    "ModelNotReadyError",
    "ModelService",
    "ServeError",
    "ServedModel",
    "SmokeTestError",
    "molecules_from_table",
    "smiles_from_table",
]

log = logging.getLogger("qemlflow.serve")

_SMOKE_TEST_SECONDS = 120.0  # longest wait for a new version's test molecules
# A model call of this many rows or more is split over two threads when each row is
# scored on its own (trees: per row, the same comparisons and sums in any batch).
_SPLIT_ROWS = 256
_ROW_WISE_ESTIMATORS = frozenset({"lightgbm", "random_forest", "extra_trees"})


class ServeError(QeMLflowError):
    """The prediction service cannot do what was asked."""


class ModelNotReadyError(ServeError):
    """No model has been loaded and smoke-tested yet."""


class BatchTooLargeError(ServeError):
    """A request holds more molecules than the service accepts at once."""


class SmokeTestError(ServeError):
    """A model version failed its readiness check and will not be served."""


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


class AnswerCache:
    """Results one model version has already given, by input SMILES.

    A version's answer for a molecule never changes (its features, its model and its
    training set are fixed), so a molecule asked for again is answered from here on the
    event loop: no worker, no dispatcher thread, no model call. Only results without an
    error are kept (a timeout depends on the load); past ``max_entries`` (about 2 KB each:
    ~32 MB by default, beside the feature cache's 256 MB) the least recently used go
    first. Used from the event loop thread only.
    """

    def __init__(self, max_entries: int = 16_384) -> None:
        self.max_entries = max_entries
        self._rows: dict[str, PredictionResult] = {}
        self._json: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, smiles: Sequence[str]) -> list[PredictionResult] | None:
        """The results for every one of ``smiles``, or None unless all are known."""
        rows = self._rows
        found = []
        for text in smiles:
            row = rows.pop(text, None)
            if row is None:
                return None
            rows[text] = row  # most recently used last
            found.append(row)
        return found

    def json(self, rows: Sequence[PredictionResult]) -> list[bytes]:
        """The JSON of each of ``rows`` (as :meth:`get` gave them), serialized once each:
        pydantic's ``model_dump_json``, the bytes FastAPI writes for the row."""
        kept = self._json
        found = []
        for row in rows:
            text = kept.get(row.smiles)
            if text is None:
                text = kept[row.smiles] = row.model_dump_json(by_alias=True).encode()
            found.append(text)
        return found

    def put(self, rows: Sequence[PredictionResult]) -> None:
        """Remember the results of ``rows`` that have no error."""
        for row in rows:
            if row.error is None and row.smiles not in self._rows:
                self._rows[row.smiles] = row
        while len(self._rows) > self.max_entries:
            oldest = next(iter(self._rows))
            del self._rows[oldest]
            self._json.pop(oldest, None)


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, loaded from its verified blob and ready to score."""

    version: ModelVersion
    predictor: Predictor
    domain: ApplicabilityDomain
    plan: FeaturePlan = field(repr=False)
    loaded_at: float = field(default_factory=time.time)
    cache: FeatureCache = field(default_factory=FeatureCache, repr=False, compare=False)
    answers: AnswerCache = field(default_factory=AnswerCache, repr=False, compare=False)
    reference: Reference | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        store: Store,
        version: ModelVersion,
        threshold: float = DEFAULT_THRESHOLD,
        *,
        score: Callable[[ServedModel, list[str]], list[PredictionResult]] | None = None,
    ) -> ServedModel:
        """Load ``version`` (hash-verified), build its domain, and smoke-test it.

        ``score`` is how the smoke test scores (the service's worker processes); by
        default the molecules are prepared in this process.

        Raises
        ------
        SmokeTestError
            The model's own test molecules do not all get a finite prediction.
        """
        from qemlflow import registry

        predictor = registry.load_version(store, version)
        training = _training_smiles(store, version)
        domain = ApplicabilityDomain(threshold=threshold).fit(training)
        model = cls(version, predictor, domain, FeaturePlan(predictor.feature_spec))
        model.smoke_test(registry.test_molecules(store, version), score)
        return dataclasses.replace(model, reference=model.training_reference(training, score))

    def training_reference(
        self,
        training: Sequence[str],
        score: Callable[[ServedModel, list[str]], list[PredictionResult]] | None = None,
        limit: int = 2000,
    ) -> Reference:
        """What monitoring compares traffic with: the model's predictions on (at most
        ``limit``, evenly spaced) training molecules, and the training set's leave-one-out
        domain similarity and out-of-domain rate."""
        from qemlflow.serve.monitoring import reference_of, row_value

        step = max(1, len(training) // limit)
        sample = list(training[::step])
        rows = self.score(sample) if score is None else score(self, sample)
        values = [v for v in map(row_value, rows) if v is not None]
        similarity = self.domain.leave_one_out_similarity(limit).tolist()
        return reference_of(values, similarity, float(self.domain.threshold))

    def response(self, results: list[PredictionResult]) -> PredictResponse:
        """This version's response holding ``results`` (already validated: not again)."""
        return PredictResponse.model_construct(
            model=self.name,
            model_version=self.number,
            domain_threshold=float(self.domain.threshold),
            results=results,
        )

    @cached_property
    def response_head(self) -> bytes:
        """The JSON of a response of this version up to its results: ``{..."results":[``."""
        text = self.response([]).model_dump_json(by_alias=True).encode()
        assert text.endswith(b"[]}")  # results is the last field
        return text[: -len(b"]}")]

    @property
    def name(self) -> str:
        """The registered model name."""
        return str(self.version.name)

    @property
    def number(self) -> int:
        """The version number."""
        return int(self.version.version)

    @cached_property
    def recipe(self) -> FeatureRecipe:
        """What a worker process needs to prepare molecules for this model."""
        p = self.predictor
        return FeatureRecipe(p.feature_spec, p.standardize, p.tautomer, p.limits, p.chemistry)

    def smoke_test(
        self,
        smiles: Sequence[str],
        score: Callable[[ServedModel, list[str]], list[PredictionResult]] | None = None,
    ) -> None:
        """Raise SmokeTestError unless every molecule gets finite outputs and no error."""
        if not smiles:
            raise SmokeTestError(f"{self.version_label} has no test molecules to check it on")
        rows = self.score(list(smiles)) if score is None else score(self, list(smiles))
        for row in rows:
            values = [row.prediction, row.lower, row.upper, row.probability, row.ensemble_sd]
            for task in (row.tasks or {}).values():
                values += [task.prediction, task.lower, task.upper, task.probability]
                values += [task.ensemble_sd]
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

    def score(self, smiles: Sequence[str]) -> list[PredictionResult]:
        """Score molecules in this process: one result per input, in order.

        The numbers are exactly those of ``Predictor.predict`` for the same SMILES. The
        service prepares molecules in worker processes instead and calls :meth:`results`.
        """
        recipe = self.recipe
        return self.results(smiles, [prepare_molecule(recipe, self.plan, s) for s in smiles])

    def results(
        self, smiles: Sequence[str], prepared: Sequence[Prepared]
    ) -> list[PredictionResult]:
        """The results of prepared molecules: the model's outputs and the domain scores.

        Rows of valid molecules are stacked and scored in one model call, so the numbers
        equal ``Predictor.predict``'s however the molecules were batched.
        """
        good = [i for i, row in enumerate(prepared) if not row.error]
        width = self.domain.fingerprints_.shape[1] * 8
        if good:
            X = np.stack([_row(prepared[i].features) for i in good])
            bits = np.stack([_row(prepared[i].bits) for i in good])
        else:
            X = np.empty((0, 0))
            bits = np.zeros((0, width), dtype=np.uint8)
        similarity = np.full(len(smiles), np.nan)
        if len(good) >= _SPLIT_ROWS and self._rows_independent:
            columns, similarity[good] = self._outputs_in_threads(X, bits)
        else:
            columns = self._model_outputs(X)
            similarity[good] = self.domain.similarity_packed(bits)
        in_domain = self.domain.in_domain(similarity).tolist()
        position = dict(zip(good, range(len(good)), strict=True))
        threshold = float(self.domain.threshold)
        results = []
        for i, (given, row_prepared) in enumerate(zip(smiles, prepared, strict=True)):
            row = position.get(i)
            values: dict[str, Any] = {"prediction": None}
            if row is not None:
                values = self._values(columns, row)
            results.append(
                PredictionResult.model_construct(
                    smiles=given,
                    standardized_smiles=row_prepared.smiles or None,
                    **values,
                    domain=DomainScore.model_construct(
                        similarity=_number(float(similarity[i])),
                        in_domain=bool(in_domain[i]),
                        threshold=threshold,
                    ),
                    model=self.name,
                    model_version=self.number,
                    error=row_prepared.error or None,
                )
            )
        return results

    @cached_property
    def _rows_independent(self) -> bool:
        """Whether each row's outputs are computed on their own (a tree ensemble's are):
        then scoring the rows in parts gives exactly the numbers of one call."""
        return getattr(self.predictor.model, "estimator", None) in _ROW_WISE_ESTIMATORS

    def _outputs_in_threads(
        self, X: NDArray[Any], bits: NDArray[np.uint8]
    ) -> tuple[dict[str, NDArray[np.float64]], NDArray[np.float64]]:
        """The model's outputs and the domain similarity of many rows on two cores: the
        model call (which releases the GIL) in halves, the similarity beside them."""
        from concurrent.futures import ThreadPoolExecutor

        half = len(X) // 2
        with ThreadPoolExecutor(2, thread_name_prefix="qemlflow-score") as pool:
            first = pool.submit(self._model_outputs, X[:half])
            similarity = pool.submit(self.domain.similarity_packed, bits)
            second = self._model_outputs(X[half:])
            head = first.result()
            columns = {name: np.concatenate([head[name], m]) for name, m in second.items()}
            return columns, similarity.result()

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


def _row(values: NDArray[Any] | None) -> NDArray[Any]:
    assert values is not None  # a prepared molecule without an error has both rows
    return values


def _training_smiles(store: Store, version: ModelVersion) -> list[str]:
    """The standardized SMILES the version's model was fitted on (train split of its run)."""
    smiles = training_smiles(store, version.run_id)
    if smiles is None:
        raise SmokeTestError(
            f"run {version.run_id} has no recorded dataset or split",
            "register a model from a run recorded in this store",
        )
    return smiles


def molecules_from_table(
    data: bytes,
    filename: str | None,
    column: str | None,
    *,
    max_rows: int | None = None,
    max_bytes: int | None = None,
    max_field_bytes: int | None = None,
) -> list[Molecule]:
    """The molecules of an uploaded table (any format the reader knows, by file name;
    default CSV; gzip also by its first bytes), one per row, with each row's read error.

    The upload is decompressed and parsed as a stream, stopped with InputTooLargeError
    as soon as it passes ``max_bytes`` decompressed or ``max_rows`` rows (a Parquet file
    is checked against its footer first); a row over ``max_field_bytes`` is a row error.
    """
    from qemlflow.data.reader import DEFAULT_MAX_FIELD_BYTES, ReadLimits, open_molecules

    name = filename if filename and "." in filename else "upload.csv"
    limits = ReadLimits(
        max_field_bytes=max_field_bytes or DEFAULT_MAX_FIELD_BYTES,
        max_bytes=max_bytes,
        max_rows=max_rows,
    )
    source = open_molecules(data, name=name, label=f"the upload {name!r}", limits=limits)
    return list(source.molecules(column))


def smiles_from_table(
    data: bytes, filename: str | None, column: str | None, **limits: int | None
) -> list[str]:
    """The SMILES column of an uploaded table (see :func:`molecules_from_table`, which
    takes the same ``limits``), one entry per row; a row that cannot be read gives an
    empty SMILES (an invalid molecule)."""
    return [m.smiles for m in molecules_from_table(data, filename, column, **limits)]


@dataclass(frozen=True)
class _Answer:
    """Who waits for a job: the model version that scores it and how to hand over the result."""

    model: ServedModel
    settle: Callable[[PredictResponse | BaseException], None]


def _settle(
    future: asyncio.Future[PredictResponse], outcome: PredictResponse | BaseException
) -> None:
    """Complete ``future`` on its event loop, unless its client has gone (then do nothing)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


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
        How long a checked API key is trusted before the store is asked again: a revoked
        key is refused by every service process within this time (at most 1 s).
    workers
        Worker processes that prepare molecules (default: one per core, at least two).
    metrics
        Where counters go; None records nothing.
    monitor
        Where per-window traffic aggregates go; None keeps none.
    """

    def __init__(
        self,
        store: Store,
        spec: str,
        *,
        poll_seconds: float = 10.0,
        domain_threshold: float = DEFAULT_THRESHOLD,
        max_batch: int = 10_000,
        key_cache_seconds: float = 0.5,
        workers: int | None = None,
        metrics: ServiceMetrics | None = None,
        monitor: TrafficMonitor | None = None,
    ) -> None:
        self.store = store
        self.monitor = monitor
        self.spec = spec
        self.poll_seconds = poll_seconds
        self.domain_threshold = domain_threshold
        self.max_batch = max_batch
        self.key_cache_seconds = key_cache_seconds
        self.workers = workers or worker_processes()
        self.metrics = metrics
        self.current: ServedModel | None = None
        self.refused: dict[tuple[str, int], str] = {}
        self._keys: dict[str, float] = {}
        self._key_checks: dict[str, tuple[float, asyncio.Future[bool]]] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._pool: MoleculeWorkers | None = None

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> ServedModel:
        """Start the worker processes, load and smoke-test the spec's version, then poll."""
        from qemlflow import registry

        pool = MoleculeWorkers(self.workers, self._finish, self.metrics)
        pool.start()
        self._pool = pool
        if self.metrics is not None:
            self.metrics.workers_live.set_function(lambda: pool.live)
        try:
            model = ServedModel.load(
                self.store,
                registry.resolve(self.store, self.spec),
                self.domain_threshold,
                score=self._score_waiting,
            )
        except BaseException:
            self.stop()
            raise
        self._serve(model)
        self._stop.clear()
        if self.monitor is not None:
            self.monitor.start()
        if self.poll_seconds > 0:
            self._poller = threading.Thread(target=self._follow, name="qemlflow-poll", daemon=True)
            self._poller.start()
        return model

    def stop(self) -> None:
        """Stop the worker processes (a request still waiting gets 503), then the poller.

        The workers go first: a smoke test the poller may be waiting for then fails at once.
        """
        self._stop.set()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        if self._poller is not None:
            self._poller.join(timeout=2)
            self._poller = None
        if self.monitor is not None:
            self.monitor.stop()  # the open windows go to the store

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has run (and :meth:`stop` has not)."""
        return self._pool is not None

    @property
    def ready(self) -> bool:
        """A smoke-tested model is served, the dispatcher runs and a worker process lives."""
        pool = self._pool
        return self.current is not None and pool is not None and pool.healthy

    # -- predictions -------------------------------------------------------------------

    async def predict(self, smiles: list[str]) -> PredictResponse:
        """Score ``smiles`` with the model being served (one version for the whole list).

        The answer arrives through the event loop: a client that goes away (its task
        cancelled) leaves the scorer untouched, and its molecules still fill the cache.
        """
        model, pool = self._serving(smiles)
        known = model.answers.get(smiles)
        if known is not None:
            return self._answered(model, known)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[PredictResponse] = loop.create_future()

        def settle(outcome: PredictResponse | BaseException) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, answer, outcome)

        pool.submit(
            WorkerJob(model.recipe, model.cache, smiles, _Answer(model, settle), answer.done)
        )
        started = time.perf_counter()
        try:
            response = await answer
        except Exception:
            if self.monitor is not None:
                self.monitor.record_failure(
                    model.name, model.number, len(smiles), time.perf_counter() - started
                )
            raise
        model.answers.put(response.results)
        if self.monitor is not None:
            self.monitor.record(
                model.name, model.number, response.results, time.perf_counter() - started
            )
        return response

    def answered_json(self, smiles: list[str]) -> bytes | None:
        """The JSON body of :meth:`predict`'s response when the model being served has
        answered every one of ``smiles`` before (counted in the metrics and monitoring as
        that response), else None.

        The bytes are those FastAPI writes for the response (each result serialized once,
        when first asked for again), without building and serializing it per request.
        """
        started = time.perf_counter()
        model, _ = self._serving(smiles)
        rows = model.answers.get(smiles)
        if rows is None:
            return None
        body = b"".join((model.response_head, b",".join(model.answers.json(rows)), b"]}"))
        self._count_answered(model, rows, started)
        return body

    def _serving(self, smiles: list[str]) -> tuple[ServedModel, MoleculeWorkers]:
        """The version that answers a request for ``smiles``, and the worker processes.

        Raises
        ------
        BatchTooLargeError, ModelNotReadyError
        """
        if len(smiles) > self.max_batch:
            raise BatchTooLargeError(
                f"{len(smiles)} molecules in one request; at most {self.max_batch} are accepted",
                "split the molecules over several requests",
            )
        model, pool = self.current, self._pool  # read once: the whole request is one version
        if model is None or pool is None or not self.ready:
            raise ModelNotReadyError(
                "the scorer cannot take work now", "wait until /readyz says ready"
            )
        return model, pool

    def _answered(self, model: ServedModel, rows: list[PredictionResult]) -> PredictResponse:
        """The response to a request whose every molecule ``model`` has answered before."""
        started = time.perf_counter()
        response = model.response(rows)
        self._count_answered(model, rows, started)
        return response

    def _count_answered(
        self, model: ServedModel, rows: list[PredictionResult], started: float
    ) -> None:
        """Count a request answered from ``model``'s answers in the metrics and monitoring."""
        if self.metrics is not None:
            self.metrics.record_cache(len({row.smiles for row in rows}), 0)
            self.metrics.record_molecules(rows)
        if self.monitor is not None:
            self.monitor.record(model.name, model.number, rows, time.perf_counter() - started)

    def _score_waiting(self, model: ServedModel, smiles: list[str]) -> list[PredictionResult]:
        """Score through the worker processes from a plain thread (the smoke tests)."""
        pool = self._pool
        if pool is None:
            raise ModelNotReadyError("the worker processes are not running", "start the service")
        done = threading.Event()
        outcome: list[PredictResponse | BaseException] = []

        def settle(result: PredictResponse | BaseException) -> None:
            outcome.append(result)
            done.set()

        pool.submit(WorkerJob(model.recipe, model.cache, smiles, _Answer(model, settle)))
        if not done.wait(_SMOKE_TEST_SECONDS):
            raise SmokeTestError(
                f"{model.version_label}: its test molecules were not scored in "
                f"{_SMOKE_TEST_SECONDS:g} s"
            )
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return list(outcome[0].results)

    def _finish(self, jobs: list[WorkerJob]) -> None:
        """Score prepared jobs (on the dispatcher thread): one model call per version."""
        groups: dict[int, list[WorkerJob]] = {}
        for job in jobs:
            answer: _Answer = job.owner
            if job.failure is not None:
                answer.settle(ModelNotReadyError(job.failure, "send the request again"))
                continue
            groups.setdefault(id(answer.model), []).append(job)
        for group in groups.values():
            model: ServedModel = group[0].owner.model
            try:
                rows = model.results(
                    [s for job in group for s in job.smiles],
                    [row for job in group for row in job.rows if row is not None],
                )
            except Exception as exc:
                log.exception("scoring failed")
                for job in group:
                    job.owner.settle(exc)
                continue
            if self.metrics is not None:
                self.metrics.record_molecules(rows)
            start = 0
            for job in group:
                results = rows[start : start + len(job.smiles)]
                start += len(job.smiles)
                job.owner.settle(model.response(results))

    # -- following the registry -------------------------------------------------------

    def _serve(self, model: ServedModel) -> None:
        self.current = model  # one reference assignment: atomic for every reader
        if self.monitor is not None and model.reference is not None:
            self.monitor.track(model.name, model.number, model.reference)
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
            model = ServedModel.load(
                self.store, wanted, self.domain_threshold, score=self._score_waiting
            )
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
            limits=model.predictor.limits.to_dict(),
            refused_versions=sorted(n for name, n in self.refused if name == model.name),
        )

    # -- API keys ----------------------------------------------------------------------

    async def key_allowed(self, presented: str) -> bool:
        """Whether ``presented`` is an active API key, asking the store once for all the
        requests that present it at the same time.

        A key found valid is trusted for ``key_cache_seconds`` from the start of its check.
        Past half of that, the next request starts one check in a worker thread and goes
        on meanwhile, so under steady traffic no request waits for the store; a request
        whose key is not trusted waits for the check in flight (started less than
        ``key_cache_seconds`` ago) or starts one. Before, every request in flight when the
        trust lapsed made its own store query in a thread (32 clients: 32 SQLite
        connections every half second), and those requests waited tens of milliseconds.
        A revoked key is still refused within ``key_cache_seconds``: an answer counts only
        from a check that started after the last trusted check.
        """
        digest = hashlib.sha256(presented.encode()).hexdigest()
        now = time.monotonic()
        trusted_until = self._keys.get(digest, 0.0)
        if trusted_until > now:
            if trusted_until - now < self.key_cache_seconds / 2:
                self._key_check(digest, presented, now)  # ahead of the lapse, not awaited
            return True
        return await asyncio.shield(self._key_check(digest, presented, now))

    def _key_check(self, digest: str, presented: str, now: float) -> asyncio.Future[bool]:
        """The store check of a key in flight, or a new one if none started less than
        ``key_cache_seconds`` ago (so its answer holds for a request arriving now)."""
        running = self._key_checks.get(digest)
        if running is not None and now - running[0] < self.key_cache_seconds:
            return running[1]
        check = asyncio.get_running_loop().run_in_executor(None, self.key_is_valid, presented)

        def done(future: asyncio.Future[bool]) -> None:
            if self._key_checks.get(digest, (0.0, None))[1] is future:
                del self._key_checks[digest]
            if not future.cancelled():
                future.exception()  # a refresh nobody awaits: the next request asks again

        check.add_done_callback(done)
        self._key_checks[digest] = (now, check)
        return check

    def key_is_valid(self, presented: str) -> bool:
        """Whether ``presented`` is an active API key of the store (asks the store)."""
        digest = hashlib.sha256(presented.encode()).hexdigest()
        now = time.monotonic()
        if self.store.check_api_key(presented) is None:
            self._keys.pop(digest, None)
            return False
        self._keys[digest] = now + self.key_cache_seconds
        return True
