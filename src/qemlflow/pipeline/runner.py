"""Run an experiment end to end and write its results to a folder."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from qemlflow.errors import DataError
from qemlflow.limits import DEFAULT_LIMITS, MoleculeLimits
from qemlflow.pipeline.config import (
    DatasetConfig,
    ExperimentConfig,
    load_config,
    parse_config,
    without_n_jobs,
)
from qemlflow.pipeline.output_folder import OutputFolder
from qemlflow.pipeline.predictor import (
    MANIFEST_FILENAME,
    MODEL_FILENAME,
    Predictor,
    dump_predictor,
    write_model,
)
from qemlflow.pipeline.preflight import preflight
from qemlflow.pipeline.progress import ProgressReporter, SilentProgress
from qemlflow.pipeline.steps import (
    STEP_ORDER,
    ArrayCodec,
    BytesCodec,
    DatasetCodec,
    JsonCodec,
    PredictorCodec,
    ScoresCodec,
    SplitCodec,
    StepExecutor,
    StepResult,
    step_libraries,
)
from qemlflow.pipeline.versions import library_versions

if TYPE_CHECKING:
    from qemlflow.data import Dataset, RawData
    from qemlflow.splits import Split
    from qemlflow.store import Store

__all__ = ["MIN_MOLECULES", "RunResult", "execute", "execute_data_steps", "portable_raw", "run"]

_FEATURIZE_CHUNK = 2048
# A config that leaves `n_jobs` unset featurizes sets this big on every core: each
# molecule's row is computed on its own, so the features are the same bit for bit, and at
# about a millisecond per molecule (descriptors) a pool of processes pays from here on.
_PARALLEL_FEATURIZE_FROM = 2000
# The smallest dataset an experiment runs on: 20 molecules leave a 16-molecule training
# part in the default 80/10/10 split (or 16 per fold in 5-fold cross-validation), enough
# for cross-conformal intervals at the default 90 % coverage (ceil(17 * 0.9) = 16).
MIN_MOLECULES = 20


@dataclass
class RunResult:
    """Everything a run produced; ``out_dir`` holds the same on disk when one was given.

    ``scores`` maps output names (``prediction``, ``lower``, ``upper`` or ``probability``)
    to (n_molecules, n_tasks) arrays over the whole dataset. ``steps`` lists every
    pipeline step with its content key, output digest and whether the cache served it;
    ``run_id`` is set when the run was recorded in a store.
    """

    config: ExperimentConfig
    dataset: Dataset
    split: Split
    predictor: Predictor
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    steps: list[StepResult[Any]] = field(default_factory=list)
    out_dir: Path | None = None
    run_id: str | None = None

    @property
    def cache_hits(self) -> list[str]:
        """The steps whose output came from the cache."""
        return [s.step for s in self.steps if s.cache_hit]


def _as_config(config: ExperimentConfig | dict[str, Any] | str | Path) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def portable_raw(raw: RawData) -> RawData:
    """The raw data as the pipeline sees it: named by file name, not by where it lies.

    A file's folder must not change any step's output, or the same data read from two
    places (or reproduced on another machine) would look like different data.
    """
    if raw.source.startswith("bundled:"):
        return raw
    return replace(raw, source=raw.filename)


def execute(
    cfg: ExperimentConfig,
    raw: RawData,
    executor: StepExecutor,
    report: ProgressReporter | None = None,
) -> RunResult:
    """Run every step of ``cfg`` on ``raw`` through ``executor`` (cache or not)."""
    from qemlflow.features import make_featurizer

    report = report or SilentProgress()
    limits = cfg.limits.molecule_limits()
    _, std_step = execute_data_steps(cfg.dataset, raw, executor, report, limits=limits)
    dataset: Dataset = std_step.value
    if len(dataset) < MIN_MOLECULES:
        raise _too_few_molecules(dataset)
    # What the config leaves out (features, estimator) is the best default for the task,
    # which is known for sure only now: the standardize step infers it from the labels.
    cfg = cfg.with_task_defaults(dataset.task)
    # A doomed experiment fails here, in seconds, not after featurizing and fitting.
    preflight(cfg, dataset)

    featurizer = make_featurizer(cfg.features)
    feature_spec = without_n_jobs(featurizer.to_spec())
    featurizer.set_params(n_jobs=featurize_jobs(cfg, len(dataset)))

    def featurize() -> np.ndarray:
        blocks = []
        for start in range(0, len(dataset), _FEATURIZE_CHUNK):
            chunk = dataset.smiles[start : start + _FEATURIZE_CHUNK]
            blocks.append(featurizer.transform(chunk))
            report.advance("featurize", len(chunk))
        return np.vstack(blocks)

    report.start("featurize", len(dataset))
    feat_step = executor.run(
        "featurize",
        {"spec": feature_spec},
        [std_step.key],
        featurize,
        ArrayCodec(),
        step_libraries("featurize", featurizer.required_libraries(), featurizer.code_versions()),
    )
    X: np.ndarray = feat_step.value
    report.finish("featurize", _cached(feat_step, f"{X.shape[1]} features"))

    split_params = {
        "method": cfg.split.method,
        "sizes": list(cfg.split.sizes),
        "seed": cfg.seed,
        "params": dict(cfg.split.params),
    }
    report.start("split")
    split_step = executor.run(
        "split",
        split_params,
        [std_step.key],
        lambda: _make_split(cfg, dataset),
        SplitCodec(),
    )
    parts: Split = split_step.value
    cross_validation = cfg.split.method == "kfold"
    report.finish(
        "split",
        _cached(
            split_step,
            f"{cfg.split.k} folds"
            if cross_validation
            else f"{len(parts.train)}/{len(parts.valid)}/{len(parts.test)}",
        ),
    )

    def fit() -> Predictor:
        # With cross-validation the final model is fitted on every molecule (train is all
        # of them, valid is empty): its intervals are then cross-conformal.
        return _fit_predictor(cfg, dataset, X, parts.train, parts.valid, feature_spec, limits)

    fit_params = {
        "estimator": cfg.model.estimator,
        # For an ensemble also its members and combine; other models' params unchanged.
        "params": cfg.model.estimator_params(),
        "coverage": cfg.model.coverage,
        "calibration": cfg.model.calibration,
        "seed": cfg.seed,
        "limits": limits.to_dict(),  # they travel inside the model file
    }
    report.start("fit")
    fit_step = executor.run(
        "fit",
        fit_params,
        [feat_step.key, split_step.key, std_step.key],
        fit,
        PredictorCodec(),
        _model_libraries(cfg, "fit"),
    )
    predictor: Predictor = fit_step.value
    report.finish("fit", _cached(fit_step, cfg.model.estimator))

    report.start("predict")
    if cross_validation:
        # Each molecule is scored by the fold model that did not see it (out of fold).
        predict_step = executor.run(
            "predict",
            {"out_of_fold": fit_params},
            [fit_step.key, feat_step.key, split_step.key],
            lambda: _out_of_fold_outputs(cfg, dataset, X, parts, feature_spec, limits),
            ScoresCodec(),
            _model_libraries(cfg, "predict"),
        )
    else:
        predict_step = executor.run(
            "predict",
            {},
            [fit_step.key, feat_step.key],
            lambda: _outputs(predictor, X, cfg, dataset.n_tasks),
            ScoresCodec(),
            _model_libraries(cfg, "predict"),
        )
    scores: dict[str, np.ndarray] = predict_step.value
    report.finish("predict", _cached(predict_step, f"{len(X)} molecules"))

    eval_params = {
        "n_bootstrap": cfg.evaluation.n_bootstrap,
        "confidence": cfg.evaluation.confidence,
        "seed": cfg.seed,
        "coverage": cfg.model.coverage,
    }
    report.start("evaluate")
    eval_step = executor.run(
        "evaluate",
        eval_params,
        [predict_step.key, split_step.key, std_step.key],
        lambda: _evaluate_parts(cfg, dataset, parts, scores, predictor),
        JsonCodec(),
    )
    metrics: dict[str, Any] = eval_step.value
    report.finish("evaluate", _cached(eval_step, _headline(metrics)))

    return RunResult(
        config=cfg,
        dataset=dataset,
        split=parts,
        predictor=predictor,
        metrics=metrics,
        predictions=_prediction_table(dataset, parts, scores),
        scores=scores,
        timings={s.step: s.seconds for s in executor.results},
        steps=list(executor.results),
    )


def _model_libraries(cfg: ExperimentConfig, step: str) -> dict[str, str]:
    """The libraries map of a fit or predict step: the estimator's, with its runtime."""
    from qemlflow.models import get_spec

    spec = get_spec(cfg.model.estimator)
    params = cfg.model.estimator_params()
    runtime = spec.runtime(params, cfg.n_jobs) if spec.runtime is not None else None
    return step_libraries(step, spec.required_libraries_for(params), runtime)


def _make_split(cfg: ExperimentConfig, dataset: Dataset) -> Split:
    """The run's split; for ``kfold``, every molecule in train and test with its fold.

    The fold of each molecule is ``params["fold"]``; folds are seeded by the run's seed
    and stratified by class for a single-task classification set.
    """
    from qemlflow.splits import Split, kfold
    from qemlflow.splits import split as make_split

    if cfg.split.method != "kfold":
        return make_split(
            cfg.split.method,
            n=len(dataset),
            smiles=dataset.smiles,
            y=dataset.y,
            sizes=cfg.split.sizes,
            seed=cfg.seed,
            **cfg.split.params,
        )
    stratify = dataset.task == "classification" and dataset.n_tasks == 1
    folds = kfold(
        "stratified" if stratify else "random",
        n=len(dataset),
        smiles=dataset.smiles,  # copies of a molecule (same InChIKey) share a fold
        y=dataset.y[:, 0] if stratify else None,
        k=cfg.split.k,
        seed=cfg.seed,
    )
    fold_of = np.empty(len(dataset), dtype=np.int64)
    for f, (_, test) in enumerate(folds):
        fold_of[test] = f
    everything = np.arange(len(dataset))
    return Split(
        train=everything,
        valid=everything[:0],
        test=everything,
        method="kfold",
        seed=cfg.seed,
        params={"k": cfg.split.k, "fold": fold_of.tolist()},
    )


def _folds(parts: Split) -> list[np.ndarray]:
    """The test rows of each cross-validation fold."""
    fold_of = np.asarray(parts.params["fold"], dtype=np.int64)
    return [np.flatnonzero(fold_of == f) for f in range(int(parts.params["k"]))]


def _outputs(
    predictor: Predictor, X: np.ndarray, cfg: ExperimentConfig, n_tasks: int
) -> dict[str, np.ndarray]:
    """``predictor.outputs(X)``, tasks side by side when :func:`fit_jobs` says so (each
    task's predictions are its own: the same numbers on any number of threads)."""
    with _task_threads(predictor.model, cfg, n_tasks):
        return predictor.outputs(X)


def _fit_predictor(
    cfg: ExperimentConfig,
    dataset: Dataset,
    X: np.ndarray,
    train: np.ndarray,
    valid: np.ndarray,
    feature_spec: Any,
    limits: MoleculeLimits,
) -> Predictor:
    """Fit the model on ``train``, calibrated on ``valid`` when it is not empty."""
    y = dataset.y[:, 0] if dataset.n_tasks == 1 else dataset.y
    model = cfg.make_model(dataset.task)
    calibration: dict[str, Any] = {}
    if len(valid):
        calibration = {"X_cal": X[valid], "y_cal": y[valid]}
    with _task_threads(model, cfg, dataset.n_tasks):
        model.fit(X[train], y[train], **calibration)
    return Predictor(
        model=model,
        feature_spec=feature_spec,
        task=dataset.task,
        target_names=list(dataset.target_names),
        standardize=cfg.dataset.standardize,
        tautomer=cfg.dataset.tautomer,
        limits=limits,
        chemistry=cfg.dataset.chemistry.policy(),
        # Beside the library versions, the code versions (above 1) of the featurizers it
        # computes with: a model file fitted before a featurizer's fix warns when loaded.
        versions={**library_versions(), **cfg.featurizer_versions()},
    )


def _out_of_fold_outputs(
    cfg: ExperimentConfig,
    dataset: Dataset,
    X: np.ndarray,
    parts: Split,
    feature_spec: Any,
    limits: MoleculeLimits,
) -> dict[str, np.ndarray]:
    """Every molecule's scores from a model fitted on the other folds."""
    scores: dict[str, np.ndarray] = {}
    everything = np.arange(len(dataset))
    for test in _folds(parts):
        train = np.setdiff1d(everything, test)
        fold_model = _fit_predictor(cfg, dataset, X, train, test[:0], feature_spec, limits)
        for name, matrix in fold_model.outputs(X[test]).items():
            scores.setdefault(name, np.full((len(dataset), matrix.shape[1]), np.nan))
            scores[name][test] = matrix
    return scores


def execute_data_steps(
    config: DatasetConfig,
    raw: RawData,
    executor: StepExecutor,
    report: ProgressReporter | None = None,
    *,
    limits: MoleculeLimits = DEFAULT_LIMITS,
) -> tuple[StepResult[bytes], StepResult[Dataset]]:
    """Run the ``dataset`` (raw bytes) and ``standardize`` steps.

    ``limits`` are the admission limits: a molecule over them is rejected as ``too_large``.
    """
    from qemlflow.data import dataset_from_raw

    report = report or SilentProgress()
    chemistry = config.chemistry.policy()
    raw = portable_raw(raw)
    report.start("dataset")
    data_step = executor.run(
        "dataset",
        {"filename": raw.filename, "name": raw.name, "source": raw.source},
        [raw.digest],
        lambda: raw.data,
        BytesCodec(),
    )
    report.finish("dataset", _cached(data_step, f"sha256 {data_step.output[:12]}"))

    params: dict[str, Any] = {
        "smiles_column": config.smiles_column,
        "target_columns": config.target_columns,
        "task": config.task,
        "duplicates": config.duplicates,
        "standardize": config.standardize,
        "tautomer": config.tautomer,
        # Only when given, so that the steps of configs without it keep their keys.
        **({"header": config.header} if config.header is not None else {}),
    }
    report.start("standardize")
    std_step = executor.run(
        "standardize",
        {**params, "limits": limits.to_dict(), "chemistry": chemistry.to_dict()},
        [data_step.key],
        lambda: dataset_from_raw(raw, **params, limits=limits, chemistry=chemistry),
        DatasetCodec(),
    )
    dataset: Dataset = std_step.value
    report.finish(
        "standardize",
        _cached(std_step, f"{len(dataset)} molecules, {len(dataset.rejected)} rejected"),
    )
    return data_step, std_step


def _cached(step: StepResult[Any], detail: str) -> str:
    return f"{detail} (cached)" if step.cache_hit else detail


class _TooFewMoleculesError(DataError):
    def __init__(self, dataset: Dataset, where: str) -> None:
        self.dataset = dataset
        super().__init__(
            f"only {len(dataset)} valid molecules in {dataset.source} "
            f"({len(dataset.rejected)} rows rejected)",
            f"an experiment needs at least {MIN_MOLECULES}; the reasons are in {where}",
        )


def featurize_jobs(cfg: ExperimentConfig, n_molecules: int) -> int:
    """Processes for featurizing ``n_molecules``: the config's ``n_jobs`` when it sets one,
    else all cores from :data:`_PARALLEL_FEATURIZE_FROM` molecules (the same features).

    Examples
    --------
    >>> from qemlflow.pipeline.config import parse_config
    >>> featurize_jobs(parse_config({"dataset": {"source": "esol"}}), 5000)
    -1
    >>> featurize_jobs(parse_config({"dataset": {"source": "esol"}, "n_jobs": 1}), 5000)
    1
    >>> featurize_jobs(parse_config({"dataset": {"source": "esol"}}), 1117)
    1
    """
    return _unset_jobs(cfg, every_core=n_molecules >= _PARALLEL_FEATURIZE_FROM)


def fit_jobs(cfg: ExperimentConfig, n_tasks: int) -> int:
    """Threads for fitting a model of ``n_tasks`` tasks: the config's ``n_jobs`` when it
    sets one, else every core for two tasks or more of an estimator fitted per task.

    Per-task fits run side by side on threads, each estimator on one, and are merged in
    task order, so the model is the same for any ``n_jobs`` (tests/test_many_tasks.py);
    only the time changes. A joint multi-task network (the D-MPNN) keeps the config's:
    its own threads could change its sums.

    Examples
    --------
    >>> from qemlflow.pipeline.config import parse_config
    >>> fit_jobs(parse_config({"dataset": {"source": "tox21"}}), 12)
    -1
    >>> fit_jobs(parse_config({"dataset": {"source": "tox21"}, "n_jobs": 1}), 12)
    1
    >>> fit_jobs(parse_config({"dataset": {"source": "esol"}}), 1)
    1
    >>> fit_jobs(parse_config({"dataset": {"source": "tox21"}, "model": "dmpnn"}), 12)
    1
    """
    from qemlflow.models import get_spec

    per_task = n_tasks >= 2 and not get_spec(cfg.model.estimator).joint_tasks
    return _unset_jobs(cfg, every_core=per_task)


def _unset_jobs(cfg: ExperimentConfig, *, every_core: bool) -> int:
    """The config's ``n_jobs`` when it sets one; else -1 (every core) where that pays and
    changes no result (``every_core``), or the default."""
    if every_core and "n_jobs" not in cfg.model_fields_set:
        return -1
    return cfg.n_jobs


@contextmanager
def _task_threads(model: Any, cfg: ExperimentConfig, n_tasks: int) -> Iterator[None]:
    """Run the block with ``model`` on :func:`fit_jobs` threads, then give it back the
    config's ``n_jobs``: the model written is the config's, byte for byte."""
    jobs = fit_jobs(cfg, n_tasks)
    if jobs == cfg.n_jobs:
        yield
        return
    model.set_params(n_jobs=jobs)
    try:
        yield
    finally:
        model.set_params(n_jobs=cfg.n_jobs)
        resolved = getattr(model, "params_", None)  # the estimator parameters it records
        if isinstance(resolved, dict) and resolved.get("n_jobs") == jobs:
            model.params_ = {**resolved, "n_jobs": cfg.n_jobs}


def _too_few_molecules(dataset: Dataset) -> DataError:
    return _TooFewMoleculesError(dataset, "Dataset.rejected of qemlflow.load_dataset(...)")


def _with_rejected_report(exc: _TooFewMoleculesError, folder: OutputFolder | None) -> DataError:
    """Write the rejected rows where the results would have gone; point the error at them.

    They become the output folder when it is missing or empty; earlier results there are
    left alone, and the rows go next to them instead.
    """
    if folder is None:
        return exc
    target = folder.target
    if target.exists() and any(target.iterdir()):
        path = exc.dataset.write_rejected(target.parent / f"{target.name}-rejected.csv")
    else:
        exc.dataset.write_rejected(folder.path / "rejected.csv")
        path = folder.publish() / "rejected.csv"
    return _TooFewMoleculesError(exc.dataset, str(path))


def run(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    out: str | Path | None = None,
    *,
    store: Store | None = None,
    progress: ProgressReporter | None = None,
) -> RunResult:
    """Run dataset -> standardize -> featurize -> split -> fit -> predict -> evaluate.

    Parameters
    ----------
    config
        An :class:`ExperimentConfig`, a mapping with the same keys, or a YAML path.
    out
        A folder to write the results into. It appears only when complete (written
        aside, then renamed into place; after the run is recorded when there is a store),
        so an interrupted run leaves none. It may be missing, empty, or hold earlier
        results (replaced as a whole); a folder with other files is refused.
        ``None`` keeps everything in memory.
    store
        A provenance store: steps already computed there are read back instead of
        recomputed, and the run is recorded (config, step keys, environment, metrics,
        artifacts, status). ``None`` runs without either.
    progress
        Receives step progress (the CLI passes a progress bar).
    """
    from qemlflow.data import read_raw

    cfg = _as_config(config)
    if cfg.dataset.task is not None:  # a declared task: record the config as it will run
        cfg = cfg.with_task_defaults(cfg.dataset.task)
    raw = read_raw(cfg.dataset.source)
    folder = OutputFolder.begin(out, _ARTIFACT_KINDS) if out is not None else None
    try:
        if store is not None:
            result = _recorded_run(cfg, raw, store, folder, progress)
        else:
            result = execute(cfg, raw, StepExecutor(), progress)
            if folder is not None:
                _write_artifacts(result, folder.path)
        if folder is not None:
            result.out_dir = folder.publish()
    except _TooFewMoleculesError as exc:
        raise _with_rejected_report(exc, folder) from None
    finally:
        if folder is not None:
            folder.discard()  # a no-op once published
    return result


def _recorded_run(
    cfg: ExperimentConfig,
    raw: RawData,
    store: Store,
    folder: OutputFolder | None,
    progress: ProgressReporter | None,
) -> RunResult:
    with store.in_flight(f"run {cfg.name}"):  # gc keeps what it writes until recorded
        return _recorded_steps(cfg, raw, store, folder, progress)


def _recorded_steps(
    cfg: ExperimentConfig,
    raw: RawData,
    store: Store,
    folder: OutputFolder | None,
    progress: ProgressReporter | None,
) -> RunResult:
    from qemlflow.store import canonical_json, capture_environment

    environment = store.blobs.put_bytes(canonical_json(capture_environment(Path.cwd())))
    run_id = store.runs.create(cfg.name, cfg.resolved(), cfg.seed, environment)
    position = iter(range(len(STEP_ORDER) * 2))

    def record(step: StepResult[Any]) -> None:
        store.runs.record_step(
            run_id, next(position), step.step, step.key, step.output, step.cache_hit, step.seconds
        )

    try:
        result = execute(cfg, raw, StepExecutor(store, on_step=record), progress)
        result.run_id = run_id
        _register_dataset_version(store, result)
        with tempfile.TemporaryDirectory(prefix="qemlflow-run-") as scratch:
            written = _write_artifacts(result, folder.path if folder else Path(scratch))
            for path in sorted(written.iterdir()):
                if path.is_file() and path.name in _ARTIFACT_KINDS:
                    digest = store.blobs.put_file(path)
                    store.runs.add_artifact(run_id, path.name, digest, _ARTIFACT_KINDS[path.name])
        store.runs.finish(run_id, result.metrics)
    except BaseException as exc:
        store.runs.fail(run_id, f"{type(exc).__name__}: {exc}".strip())
        raise
    return result


def _register_dataset_version(store: Store, result: RunResult) -> None:
    """Record the standardized dataset of a run as a dataset version."""
    from qemlflow.pipeline.datasets import record_dataset_version

    by_step = {s.step: s for s in result.steps}
    record_dataset_version(store, by_step["dataset"], by_step["standardize"], result.dataset)


def _evaluate_parts(
    cfg: ExperimentConfig,
    dataset: Dataset,
    parts: Split,
    scored: dict[str, np.ndarray],
    predictor: Predictor,
) -> dict[str, Any]:
    """Metrics per part; with ``kfold``, ``test`` is the pooled out-of-fold predictions.

    Cross-validation adds ``folds`` (each fold's metrics) and ``cross_validation`` (k,
    mean and standard deviation over folds, and that the saved model is fitted on every
    molecule). Regression adds ``interval`` with its coverage, width and method.
    """
    from qemlflow.evaluation import evaluate

    score = scored["prediction"] if dataset.task == "regression" else scored["probability"]
    level = round(cfg.evaluation.confidence * 100)
    metrics: dict[str, Any] = {
        "task": dataset.task,
        "targets": list(dataset.target_names),
        "n": {},
        f"ci{level}": {},
        "per_task": {},
    }
    cross_validation = parts.method == "kfold"
    # With cross-validation every molecule is in train (the final model) and in test
    # (out of fold): only the out-of-fold part measures anything.
    names = ("test",) if cross_validation else ("train", "valid", "test")

    def scored_part(index: np.ndarray, n_bootstrap: int) -> dict[str, Any]:
        return evaluate(
            dataset.y[index],
            score[index],
            dataset.task,
            n_bootstrap=n_bootstrap,
            seed=cfg.seed,
            confidence=cfg.evaluation.confidence,
            task_names=list(dataset.target_names),
        ).to_dict()

    for name in names:
        index = getattr(parts, name)
        if len(index) == 0:
            continue
        result = scored_part(index, cfg.evaluation.n_bootstrap if name == "test" else 0)
        metrics[name] = result["metrics"]
        metrics["n"][name] = len(index)
        if name == "test":
            metrics[f"ci{level}"][name] = result.get(f"ci{level}", {})
            metrics["per_task"][name] = result.get("per_task", {})
    if cross_validation:
        folds = [
            {"fold": f, "n": len(index), **scored_part(index, 0)["metrics"]}
            for f, index in enumerate(_folds(parts))
        ]
        metrics["folds"] = folds
        metrics["cross_validation"] = {
            "k": len(folds),
            "test": "pooled out-of-fold predictions of all folds",
            "fold_mean": _fold_summary(folds, np.mean),
            "fold_std": _fold_summary(folds, np.std),
            "final_model": f"fitted on all {len(dataset)} molecules",
        }
    if dataset.task == "regression" and len(parts.test):
        truth = dataset.y[parts.test]
        inside = (truth >= scored["lower"][parts.test]) & (truth <= scored["upper"][parts.test])
        labelled = ~np.isnan(truth)
        width = (scored["upper"] - scored["lower"])[parts.test][labelled]
        methods = list(getattr(predictor.model, "interval_methods_", []))
        metrics["interval"] = {
            "nominal_coverage": cfg.model.coverage,
            "test_coverage": _clean(float(inside[labelled].mean())),
            "test_mean_width": _clean(float(width.mean())),
            # How the saved model's intervals were calibrated (per task when several).
            "interval_method": methods[0] if len(set(methods)) == 1 else methods,
        }
        if cross_validation:
            metrics["interval"]["test_intervals"] = (
                "from each fold model, cross-conformal on its training folds"
            )
    if "ensemble_sd" in scored and len(parts.test):
        from qemlflow.models.ensemble import spread_summary

        test = parts.test
        sd = scored["ensemble_sd"][test]
        metrics["ensemble_spread"] = spread_summary(dataset.y[test], score[test], sd)
    metrics["leakage"] = leakage(dataset.smiles, parts)
    # Rows folded into another row's molecule; each is listed in rejected.csv.
    metrics["duplicates"] = {**dataset.duplicates(), "resolution": cfg.dataset.duplicates}
    rejected = dataset.rejected["reason"]
    metrics["chemistry"] = {
        **cfg.dataset.chemistry.model_dump(),
        "unsupported_chemistry": int((rejected == "unsupported_chemistry").sum()),
        "parent_too_small": int((rejected == "parent_too_small").sum()),
    }
    model = predictor.model
    targets = list(dataset.target_names)
    metrics["tasks_not_modelled"] = {
        targets[t]: reason for t, reason in getattr(model, "tasks_not_modelled_", {}).items()
    }
    if dataset.task == "classification":
        sources = list(getattr(model, "calibration_sources_", []))
        methods = list(getattr(model, "calibration_methods_", []))
        metrics["tasks_not_calibrated"] = {
            targets[t]: reason for t, reason in getattr(model, "tasks_not_calibrated_", {}).items()
        }
        metrics["calibration"] = {
            "method": methods[0] if len(set(methods)) == 1 else methods,
            "fitted_on": sources[0] if len(set(sources)) == 1 else sources,
            # Every task's map (Platt, tie-free isotonic or none) is strictly increasing in
            # the model's own score: ROC-AUC and PR-AUC of the reported probabilities are
            # those of the uncalibrated scores.
            "ranking_scores": "calibrated_tie_free",
            # Tasks calibrated by a stated fallback (too few of a class to calibrate on).
            "fallbacks": {
                targets[t]: reason
                for t, reason in getattr(model, "calibration_fallbacks_", {}).items()
            },
        }
    return metrics


def leakage(smiles: list[str], parts: Split) -> dict[str, Any]:
    """What the parts of a split share, which a held-out score should not see.

    ``duplicates_across_parts``: molecules whose standard InChIKey (which also merges the
    mobile-hydrogen tautomers that distinct SMILES can hide) occurs in another part;
    ``shared_scaffolds``: Bemis-Murcko scaffolds present in more than one part, computed
    as the split computed them (stereo-free unless the split kept stereo); scaffold splits
    only, ``None`` for others, which do not promise to separate scaffolds. Splits keep
    copies of a molecule together, so both counts are 0 for runs of this version.

    Examples
    --------
    >>> from qemlflow.splits import Split
    >>> parts = Split(train=[0, 1], valid=[], test=[2, 3], method="random", seed=0)
    >>> leakage(["Oc1ccccn1", "CCO", "O=c1cccc[nH]1", "CCN"], parts)["duplicates_across_parts"]
    2
    """
    from qemlflow.chem import murcko_scaffold, smiles_inchikey

    groups = _folds(parts) if parts.method == "kfold" else [parts.train, parts.valid, parts.test]
    part_of = np.full(len(smiles), -1, dtype=np.int64)
    for number, index in enumerate(groups):
        part_of[np.asarray(index, dtype=np.int64)] = number
    key_of = [smiles_inchikey(text) if part_of[i] >= 0 else "" for i, text in enumerate(smiles)]
    parts_of_key: dict[str, set[int]] = {}
    for key, part in zip(key_of, part_of.tolist(), strict=True):
        if key:
            parts_of_key.setdefault(key, set()).add(part)
    duplicates = sum(1 for key in key_of if key and len(parts_of_key[key]) > 1)
    shared: int | None = None
    if parts.method in ("scaffold", "scaffold_deepchem"):
        stereo = bool(parts.params.get("stereo", False))
        scaffolds: dict[str, set[int]] = {}
        for i, text in enumerate(smiles):
            if part_of[i] >= 0 and (scaffold := murcko_scaffold(text, stereo=stereo)):
                scaffolds.setdefault(scaffold, set()).add(int(part_of[i]))
        shared = sum(1 for found in scaffolds.values() if len(found) > 1)
    return {
        "duplicates_across_parts": duplicates,
        "shared_scaffolds": shared,
        "compared_by": (
            "standard InChIKey of the standardized molecule; Murcko scaffolds "
            + ("with stereo" if parts.params.get("stereo") else "without stereo")
        ),
    }


def _fold_summary(folds: list[dict[str, Any]], statistic: Any) -> dict[str, float | None]:
    """``statistic`` (mean or std) over folds of each metric, skipping undefined folds."""
    summary: dict[str, float | None] = {}
    for name in folds[0]:
        if name in ("fold", "n"):
            continue
        values = [f[name] for f in folds if isinstance(f.get(name), float | int)]
        values = [v for v in values if math.isfinite(v)]
        summary[name] = float(statistic(values)) if values else None
    return summary


def _clean(value: float) -> float | None:
    # An interval of a task without residuals is unbounded: null, not a crash at the end.
    return value if math.isfinite(value) else None


def _headline(metrics: dict[str, Any]) -> str:
    test = metrics.get("test", {})
    key = "rmse" if metrics["task"] == "regression" else "roc_auc"
    value = test.get(key)
    return f"test {key} {value:.3f}" if isinstance(value, float) else ""


def _prediction_table(
    dataset: Dataset, parts: Split, scored: dict[str, np.ndarray]
) -> pd.DataFrame:
    """One row per input row, in input order, rejected rows included with their reason."""
    rows = dataset.rows
    mol_index = rows["mol_index"].to_numpy(dtype=np.int64)
    found = mol_index >= 0
    assignment = np.full(len(dataset), "", dtype=object)
    for name in ("train", "valid", "test"):
        assignment[getattr(parts, name)] = name
    table = pd.DataFrame(
        {
            "row": rows["row"].to_numpy(),
            "smiles": rows["input_smiles"].astype(str).to_numpy(),
            "standardized_smiles": [dataset.smiles[i] if i >= 0 else "" for i in mol_index],
            "split": np.where(found, assignment[np.where(found, mol_index, 0)], "rejected"),
        }
    )
    if parts.method == "kfold":  # the fold whose model scored the row (-1: rejected)
        fold_of = np.asarray(parts.params["fold"], dtype=np.int64)
        table["fold"] = np.where(found, fold_of[np.where(found, mol_index, 0)], -1)
    single = dataset.n_tasks == 1
    for t, target in enumerate(dataset.target_names):
        label = dataset.y[np.where(found, mol_index, 0), t]
        table["label" if single else f"label_{target}"] = np.where(found, label, np.nan)
    for base, matrix in scored.items():
        for t, target in enumerate(dataset.target_names):
            values = matrix[np.where(found, mol_index, 0), t]
            table[base if single else f"{base}_{target}"] = np.where(found, values, np.nan)
    reasons = rows["reason"].fillna("").astype(str)
    details = rows["detail"].fillna("").astype(str)
    table["error"] = [
        "" if ok else (f"{r}: {d}" if d else r)
        for ok, r, d in zip(found, reasons, details, strict=True)
    ]
    return table


_ARTIFACT_KINDS = {
    "config.yaml": "application/yaml",
    "metrics.json": "application/json",
    "predictions.csv": "text/csv",
    "rejected.csv": "text/csv",
    MODEL_FILENAME: "application/x-qemlflow-model",
    MANIFEST_FILENAME: "application/json",
    "parity.png": "image/png",
    "roc.png": "image/png",
    "run.json": "application/json",
}


def _write_artifacts(result: RunResult, out: Path) -> Path:
    from qemlflow.evaluation import parity_plot, roc_plot

    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    (out / "config.yaml").write_text(
        yaml.safe_dump(cfg.resolved(), sort_keys=False), encoding="utf-8"
    )
    _write_json(out / "metrics.json", result.metrics)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    result.dataset.write_rejected(out / "rejected.csv")
    fit = next((s for s in result.steps if s.step == "fit" and s.encoded is not None), None)
    # The recorded blob itself, so the file's digest is the fit step's output digest; the
    # manifest (model.json) describes it without unpickling.
    encoded = fit.encoded if fit is not None and fit.encoded is not None else None
    data = encoded if encoded is not None else dump_predictor(result.predictor)
    write_model(out / MODEL_FILENAME, result.predictor, data, run_id=result.run_id)
    plots: list[str] = []
    if cfg.evaluation.plots and len(result.split.test):
        test = result.split.test
        y_true = result.dataset.y[test]
        scores = {name: matrix[test] for name, matrix in result.scores.items()}
        if result.dataset.task == "regression":
            parity_plot(
                y_true,
                scores["prediction"],
                out / "parity.png",
                lower=scores["lower"],
                upper=scores["upper"],
                title=f"{cfg.name}: test set",
            )
            plots.append("parity.png")
        else:
            roc_plot(y_true, scores["probability"], out / "roc.png", title=f"{cfg.name}: test set")
            plots.append("roc.png")
    _write_json(
        out / "run.json",
        {
            "experiment": cfg.name,
            "run_id": result.run_id,
            "seed": cfg.seed,
            "dataset": {
                "source": cfg.dataset.source,
                "sha256": result.dataset.source_digest,
                **result.dataset.summary(),
            },
            "split": {
                **{k: len(getattr(result.split, k)) for k in ("train", "valid", "test")},
                **({"k": result.split.params["k"]} if result.split.method == "kfold" else {}),
            },
            "steps": [
                {"step": s.step, "key": s.key, "output": s.output, "cache_hit": s.cache_hit}
                for s in result.steps
            ],
            "timings_s": result.timings,
            "versions": library_versions(),
            "files": sorted(
                [
                    "config.yaml",
                    "metrics.json",
                    "predictions.csv",
                    "rejected.csv",
                    MODEL_FILENAME,
                    MANIFEST_FILENAME,
                    *plots,
                ]
            ),
        },
    )
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
