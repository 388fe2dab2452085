"""``qemlflow tune``: a seeded Optuna search whose every trial is a recorded run.

Tuning sees only the training part. Each trial fits on the split's train part and is
scored on its validation part (the fit step is the one ``qemlflow run`` would record for
that configuration, so the best trial's model is a cache hit for the final run); without a
validation part, by inner K-fold cross-validation on the train part, pruned by the median
rule fold by fold. The test part is used once: by the final, normal run of the best
configuration.

The study is kept in the store as its trial runs (named ``<study>/trial-NNNN``, config
``tune: {study, trial}``, metrics ``tune: {params, score, state, ...}``); rerunning the same
command rebuilds the Optuna study from them and continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml

from qemlflow._atomic import write_atomic
from qemlflow.errors import ConfigError
from qemlflow.pipeline.config import ExperimentConfig, TuneConfig, TuneDimension, load_config
from qemlflow.tune.space import (
    DEFAULT_METRICS,
    MAXIMIZED_METRICS,
    MINIMIZED_METRICS,
    apply_point,
    default_space,
    suggest_point,
)

if TYPE_CHECKING:
    import optuna

    from qemlflow.data import Dataset, RawData
    from qemlflow.pipeline.runner import RunResult
    from qemlflow.pipeline.steps import StepExecutor
    from qemlflow.splits import Split
    from qemlflow.store import Store

__all__ = ["BEST_FILENAME", "STUDY_FILENAME", "TrialRecord", "TuneResult", "tune"]

BEST_FILENAME = "best.yaml"
STUDY_FILENAME = "study.json"
BEST_RUN_FOLDER = "best-run"
_INTERRUPTED = "KeyboardInterrupt"
TrialState = Literal["complete", "pruned", "failed"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study: its point (config path -> value), score and run."""

    number: int
    params: dict[str, Any]
    score: float | None
    state: TrialState
    run_id: str
    intermediate: list[float] = field(default_factory=list)
    optuna_params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The trial as ``study.json`` lists it."""
        return {
            "number": self.number,
            "params": self.params,
            "score": self.score,
            "state": self.state,
            "run_id": self.run_id,
            **({"intermediate": self.intermediate} if self.intermediate else {}),
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class TuneResult:
    """What a tuning session leaves: the study, the best configuration and its test run."""

    study: str
    direction: str
    metric: str
    seed: int
    scored_on: str
    trials: list[TrialRecord]
    new_trials: int
    best: TrialRecord
    best_config: ExperimentConfig
    final: RunResult
    out_dir: Path
    seconds: float

    @property
    def test_metrics(self) -> dict[str, Any]:
        """The final run's test metrics: the only scores computed on the test part."""
        test: dict[str, Any] = self.final.metrics.get("test", {})
        return test


@dataclass(frozen=True)
class _Plan:
    """Everything fixed for a study: base config, space, objective and data."""

    cfg: ExperimentConfig
    tuning: TuneConfig
    space: dict[str, TuneDimension]
    metric: str
    direction: Literal["minimize", "maximize"]
    study: str
    scored_on: str


def tune(
    config: ExperimentConfig | str | Path,
    out: str | Path,
    *,
    trials: int,
    store: Store,
    timeout: float | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuneResult:
    """Search the config's space with seeded TPE, then run the best configuration.

    Parameters
    ----------
    config
        The experiment (a config or a YAML path); its ``tune`` section declares the space,
        metric and direction, else the estimator's defaults are searched.
    out
        The folder for ``best.yaml`` (a plain experiment), ``study.json`` and the final
        run's results (``best-run/``).
    trials
        How many trials the study holds when done, counting those an earlier,
        interrupted call recorded (they are not rerun).
    store
        Where trials and the final run are recorded and the step cache lives.
    timeout
        Start no new trial after this many seconds.
    on_trial
        Called with each new trial once it is recorded.
    """
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "qemlflow tune needs optuna", 'install it: pip install "qemlflow[tune]"'
        ) from None

    from qemlflow.data import read_raw
    from qemlflow.store import canonical_json, capture_environment

    started = time.perf_counter()
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config)
    if cfg.split.method == "kfold":
        raise ConfigError(
            "tune needs a held-out test part, but split is kfold (every molecule is tested)",
            "use a split with sizes, e.g. random or scaffold with sizes [0.8, 0.1, 0.1]",
        )
    raw = read_raw(cfg.dataset.source)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with store.in_flight(f"tune {cfg.name}"):
        environment = store.blobs.put_bytes(canonical_json(capture_environment(Path.cwd())))
        data = _prepare(cfg, raw, store)
        plan = _plan(data.cfg, data.dataset, data.parts)
        # Pruning needs a score per step: inner folds give one each (median rule); a single
        # validation score has none, and LightGBM's per-iteration validation score would
        # tune on the part that calibrates the intervals, so those trials run whole.
        pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=1)
            if plan.scored_on != "validation part"
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(
            direction=plan.direction, sampler=_sampler(plan.cfg.seed, 0), pruner=pruner
        )
        records = _recorded_trials(store, plan)
        for record in records:
            study.add_trial(_frozen(record, plan))
        new = 0
        while len(study.trials) < trials:
            if timeout is not None and time.perf_counter() - started > timeout:
                break
            # A sampler seeded per trial number: the point of trial n depends only on the
            # seed and trials 0..n-1, so a resumed study draws what an uninterrupted one
            # would have drawn.
            study.sampler = _sampler(plan.cfg.seed, len(study.trials))
            trial = study.ask()
            record = _run_trial(trial, plan, data, raw, store, environment)
            _tell(study, trial, record)
            records.append(record)
            new += 1
            if on_trial is not None:
                on_trial(record)
    return _finish(plan, records, new, store, Path(out), started)


def _sampler(seed: int, number: int) -> optuna.samplers.TPESampler:
    import optuna

    return optuna.samplers.TPESampler(seed=(seed * 1_000_003 + number) % 2**32)


@dataclass
class _Prepared:
    """The data of the study, computed (or read from the cache) once."""

    cfg: ExperimentConfig
    dataset: Dataset
    parts: Split


def _prepare(cfg: ExperimentConfig, raw: RawData, store: Store) -> _Prepared:
    from qemlflow.pipeline.preflight import preflight
    from qemlflow.pipeline.runner import MIN_MOLECULES, _too_few_molecules, execute_data_steps
    from qemlflow.pipeline.steps import StepExecutor

    executor = StepExecutor(store)
    _, std_step = execute_data_steps(
        cfg.dataset, raw, executor, limits=cfg.limits.molecule_limits()
    )
    dataset: Dataset = std_step.value
    if len(dataset) < MIN_MOLECULES:
        raise _too_few_molecules(dataset)
    cfg = cfg.with_task_defaults(dataset.task)
    preflight(cfg, dataset)
    parts = _split_step(cfg, dataset, std_step.key, executor).value
    return _Prepared(cfg=cfg, dataset=dataset, parts=parts)


def _plan(cfg: ExperimentConfig, dataset: Dataset, parts: Split) -> _Plan:
    from qemlflow.store import canonical_json

    tuning = cfg.tune or TuneConfig()
    task = dataset.task
    metric = tuning.metric or DEFAULT_METRICS[task]
    known = MINIMIZED_METRICS | MAXIMIZED_METRICS
    if metric not in known:
        raise ConfigError(
            f"tune.metric {metric!r} is not a metric qemlflow computes",
            f"use one of: {', '.join(sorted(known))}",
        )
    direction = tuning.direction or ("minimize" if metric in MINIMIZED_METRICS else "maximize")
    space = dict(tuning.space) if tuning.space else default_space(cfg.model.estimator, task)
    base = cfg.model_copy(update={"tune": None})
    if tuning.scoring == "validation" and not len(parts.valid):
        raise ConfigError(
            "tune.scoring is validation, but the split has no validation part",
            "give the split a validation fraction (sizes), or set tune.scoring: cv",
        )
    on_valid = tuning.scoring == "validation" or (tuning.scoring == "auto" and len(parts.valid))
    scored_on = "validation part" if on_valid else f"inner {tuning.folds}-fold CV"
    # The study is named by what decides its trials: the base experiment, the space, the
    # objective. The same command finds (and resumes) the same study; a changed space
    # starts another.
    identity = {
        "config": {k: v for k, v in base.resolved().items() if k not in ("name", "n_jobs")},
        "space": {path: dim.model_dump(mode="json") for path, dim in sorted(space.items())},
        "metric": metric,
        "direction": direction,
        "folds": tuning.folds,
        "scored_on": scored_on,
    }
    digest = hashlib.sha256(canonical_json(identity)).hexdigest()[:12]
    plan = _Plan(
        cfg=base,
        tuning=tuning,
        space=space,
        metric=metric,
        direction=direction,
        study=f"{cfg.name}-{digest}",
        scored_on=scored_on,
    )
    _check_space(plan, task)
    return plan


def _check_space(plan: _Plan, task: str) -> None:
    """Refuse a space whose corners the config or the estimator refuse, before trial 0."""
    for corner in ("low", "high"):
        point: dict[str, Any] = {}
        for path, dim in plan.space.items():
            if dim.type == "categorical":
                choices = list(dim.choices or [])
                point[path] = choices[0] if corner == "low" else choices[-1]
            else:
                value = dim.low if corner == "low" else dim.high
                assert value is not None
                point[path] = int(value) if dim.type == "int" else float(value)
        trial_cfg = apply_point(plan.cfg, point, tune=None)
        trial_cfg.make_model(task)  # unknown or managed parameters fail here


def _split_step(
    cfg: ExperimentConfig, dataset: Dataset, std_key: str, executor: StepExecutor
) -> Any:
    # The split step exactly as qemlflow run keys it (pipeline/runner.py), so it is the
    # cached one and the final run reuses it.
    from qemlflow.pipeline.runner import _make_split
    from qemlflow.pipeline.steps import SplitCodec

    params = {
        "method": cfg.split.method,
        "sizes": list(cfg.split.sizes),
        "seed": cfg.seed,
        "params": dict(cfg.split.params),
    }
    return executor.run("split", params, [std_key], lambda: _make_split(cfg, dataset), SplitCodec())


def _run_trial(
    trial: optuna.Trial,
    plan: _Plan,
    data: _Prepared,
    raw: RawData,
    store: Store,
    environment: str,
) -> TrialRecord:
    """Draw a point, record it as a run, score it on the training part only."""
    from qemlflow.pipeline.runner import execute_data_steps
    from qemlflow.pipeline.steps import STEP_ORDER, StepExecutor, StepResult

    point = suggest_point(trial, plan.space)
    link = {**plan.tuning.model_dump(mode="json"), "study": plan.study, "trial": trial.number}
    trial_cfg = apply_point(plan.cfg, point, tune=link)
    run_id = store.runs.create(
        f"{plan.study}/trial-{trial.number:04d}",
        trial_cfg.resolved(),
        trial_cfg.seed,
        environment,
    )
    position = iter(range(len(STEP_ORDER) * 2))

    def record(step: StepResult[Any]) -> None:
        store.runs.record_step(
            run_id, next(position), step.step, step.key, step.output, step.cache_hit, step.seconds
        )

    executor = StepExecutor(store, on_step=record)
    intermediate: list[float] = []
    try:
        _, std_step = execute_data_steps(
            trial_cfg.dataset, raw, executor, limits=trial_cfg.limits.molecule_limits()
        )
        feat_step = _featurize_step(trial_cfg, data.dataset, std_step.key, executor)
        split_step = _split_step(trial_cfg, data.dataset, std_step.key, executor)
        parts: Split = split_step.value
        if plan.scored_on == "validation part":
            fit_step = _fit_step(trial_cfg, data.dataset, feat_step, split_step, std_step, executor)
            score, metrics = _score(
                plan, data.dataset, fit_step.value, feat_step.value, parts.valid
            )
            state: TrialState = "complete"
        else:
            score, metrics, state = _inner_cv(
                trial, plan, trial_cfg, data.dataset, feat_step, parts
            )
            intermediate = [float(v) for v in metrics.pop("intermediate")]
    except KeyboardInterrupt:
        store.runs.fail(run_id, _INTERRUPTED)
        raise
    except (ValueError, ArithmeticError, MemoryError, RuntimeError) as exc:
        # The point broke the model (a diverging fit, too little memory): a failed trial,
        # recorded as such; the search goes on.
        error = f"{type(exc).__name__}: {exc}".strip()
        store.runs.fail(run_id, error)
        return TrialRecord(trial.number, point, None, "failed", run_id, [], trial.params, error)
    except BaseException as exc:
        store.runs.fail(run_id, f"{type(exc).__name__}: {exc}".strip())
        raise
    record_ = TrialRecord(
        trial.number, point, score, state, run_id, intermediate, dict(trial.params)
    )
    store.runs.finish(
        run_id,
        {
            "task": data.dataset.task,
            "targets": list(data.dataset.target_names),
            **metrics,
            "tune": {
                "study": plan.study,
                "trial": trial.number,
                "metric": plan.metric,
                "direction": plan.direction,
                "scored_on": plan.scored_on,
                "score": score,
                "state": state,
                "params": point,
                "optuna_params": dict(trial.params),
                "intermediate": intermediate,
            },
        },
    )
    return record_


def _featurize_step(
    cfg: ExperimentConfig, dataset: Dataset, std_key: str, executor: StepExecutor
) -> Any:
    # As pipeline/runner.py keys it: computed by the first trial of a feature set, a cache
    # hit for every later one and for the final run.
    from qemlflow.features import make_featurizer
    from qemlflow.pipeline.config import without_n_jobs
    from qemlflow.pipeline.runner import _FEATURIZE_CHUNK
    from qemlflow.pipeline.steps import ArrayCodec, step_libraries

    featurizer = make_featurizer(cfg.features)
    spec = without_n_jobs(featurizer.to_spec())
    featurizer.set_params(n_jobs=cfg.n_jobs)

    def featurize() -> np.ndarray:
        blocks = [
            featurizer.transform(dataset.smiles[start : start + _FEATURIZE_CHUNK])
            for start in range(0, len(dataset), _FEATURIZE_CHUNK)
        ]
        return np.vstack(blocks)

    return executor.run(
        "featurize",
        {"spec": spec},
        [std_key],
        featurize,
        ArrayCodec(),
        step_libraries("featurize", featurizer.required_libraries(), featurizer.code_versions()),
    )


def _fit_step(
    cfg: ExperimentConfig,
    dataset: Dataset,
    feat_step: Any,
    split_step: Any,
    std_step: Any,
    executor: StepExecutor,
) -> Any:
    # The fit step of qemlflow run for this config (same params, inputs and libraries):
    # the best trial's model is then the final run's, read from the cache.
    from qemlflow.features import make_featurizer
    from qemlflow.pipeline.config import without_n_jobs
    from qemlflow.pipeline.runner import _fit_predictor, _model_libraries
    from qemlflow.pipeline.steps import PredictorCodec

    limits = cfg.limits.molecule_limits()
    spec = without_n_jobs(make_featurizer(cfg.features).to_spec())
    parts: Split = split_step.value
    params = {
        "estimator": cfg.model.estimator,
        "params": dict(cfg.model.params),
        "coverage": cfg.model.coverage,
        "calibration": cfg.model.calibration,
        "seed": cfg.seed,
        "limits": limits.to_dict(),
    }
    return executor.run(
        "fit",
        params,
        [feat_step.key, split_step.key, std_step.key],
        lambda: _fit_predictor(
            cfg, dataset, feat_step.value, parts.train, parts.valid, spec, limits
        ),
        PredictorCodec(),
        _model_libraries(cfg, "fit"),
    )


def _score(
    plan: _Plan, dataset: Dataset, predictor: Any, X: np.ndarray, rows: np.ndarray
) -> tuple[float, dict[str, Any]]:
    """The plan's metric of ``predictor`` on ``rows`` (training-part rows only)."""
    from qemlflow.evaluation import evaluate

    scores = predictor.outputs(X[rows])
    name = "prediction" if dataset.task == "regression" else "probability"
    result = evaluate(
        dataset.y[rows],
        scores[name],
        dataset.task,
        n_bootstrap=0,
        task_names=list(dataset.target_names),
    )
    value = result.metrics.get(plan.metric, math.nan)
    score = float(value)
    return score, {"valid": dict(result.metrics), "n": {"valid": len(rows)}}


def _inner_cv(
    trial: optuna.Trial,
    plan: _Plan,
    cfg: ExperimentConfig,
    dataset: Dataset,
    feat_step: Any,
    parts: Split,
) -> tuple[float, dict[str, Any], TrialState]:
    """Mean score over inner folds of the train part; pruned by the median rule."""
    from qemlflow.features import make_featurizer
    from qemlflow.pipeline.config import without_n_jobs
    from qemlflow.pipeline.runner import _fit_predictor
    from qemlflow.splits import kfold

    train = np.asarray(parts.train, dtype=np.int64)
    folds = kfold(
        "random",
        n=len(train),
        smiles=[dataset.smiles[i] for i in train],
        k=plan.tuning.folds,
        seed=cfg.seed,
    )
    limits = cfg.limits.molecule_limits()
    spec = without_n_jobs(make_featurizer(cfg.features).to_spec())
    X: np.ndarray = feat_step.value
    fold_scores: list[float] = []
    running: list[float] = []
    for number, (inner_train, inner_valid) in enumerate(folds):
        fit_rows, score_rows = train[inner_train], train[inner_valid]
        predictor = _fit_predictor(cfg, dataset, X, fit_rows, score_rows, spec, limits)
        score, _ = _score(plan, dataset, predictor, X, score_rows)
        fold_scores.append(score)
        running.append(float(np.mean(fold_scores)))
        trial.report(running[-1], number)
        if trial.should_prune():
            return running[-1], {"folds": fold_scores, "intermediate": running}, "pruned"
    return running[-1], {"folds": fold_scores, "intermediate": running}, "complete"


def _tell(study: optuna.Study, trial: optuna.Trial, record: TrialRecord) -> None:
    import optuna

    if record.state == "complete" and record.score is not None and math.isfinite(record.score):
        study.tell(trial, record.score)
    elif record.state == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _distributions(plan: _Plan) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    found: dict[str, Any] = {}
    for path, dim in plan.space.items():
        if dim.type == "int":
            assert dim.low is not None and dim.high is not None
            found[path] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        elif dim.type == "float":
            assert dim.low is not None and dim.high is not None
            found[path] = FloatDistribution(dim.low, dim.high, log=dim.log)
        else:
            choices = list(dim.choices or [])
            plain = all(c is None or isinstance(c, bool | int | float | str) for c in choices)
            found[path] = CategoricalDistribution(choices if plain else list(range(len(choices))))
    return found


def _frozen(record: TrialRecord, plan: _Plan) -> optuna.trial.FrozenTrial:
    """A recorded trial as Optuna's study holds it (for ``study.add_trial``)."""
    import optuna

    state = {
        "complete": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "failed": optuna.trial.TrialState.FAIL,
    }[record.state]
    distributions = _distributions(plan)
    params = {k: v for k, v in record.optuna_params.items() if k in distributions}
    return optuna.trial.create_trial(
        params=params,
        distributions={k: distributions[k] for k in params},
        value=record.score if state == optuna.trial.TrialState.COMPLETE else None,
        state=state,
        intermediate_values=dict(enumerate(record.intermediate)),
        user_attrs={"run_id": record.run_id},
    )


def _recorded_trials(store: Store, plan: _Plan) -> list[TrialRecord]:
    """The study's trials recorded by earlier calls, in order; interrupted ones dropped.

    A trial that was interrupted (or whose process died) is drawn again: it is always the
    last one of its call, so the numbers stay 0, 1, 2, ...
    """
    prefix = f"{plan.study}/trial-"
    found: dict[int, TrialRecord] = {}
    for summary in store.runs.summaries():
        if not summary.name.startswith(prefix) or summary.status not in ("finished", "failed"):
            continue
        if summary.status == "failed" and (summary.error or "").startswith(_INTERRUPTED):
            continue
        run = store.runs.get(summary.id)
        number = int((run.config.get("tune") or {}).get("trial", -1))
        if number < 0:
            continue
        if run.status == "failed":
            found[number] = TrialRecord(
                number, {}, None, "failed", run.id, error=run.error or "failed"
            )
            continue
        info = (run.metrics or {}).get("tune") or {}
        score = info.get("score")
        found[number] = TrialRecord(
            number=number,
            params=dict(info.get("params") or {}),
            score=float(score) if isinstance(score, int | float) else None,
            state=info.get("state", "complete"),
            run_id=run.id,
            intermediate=[float(v) for v in info.get("intermediate") or []],
            optuna_params=dict(info.get("optuna_params") or {}),
        )
    records: list[TrialRecord] = []
    for number in sorted(found):
        if number != len(records):  # a gap: what follows it belongs to no resumable call
            break
        records.append(found[number])
    return records


def _finish(
    plan: _Plan,
    records: list[TrialRecord],
    new: int,
    store: Store,
    out: Path,
    started: float,
) -> TuneResult:
    from qemlflow.pipeline.runner import run

    scored = [r for r in records if r.state == "complete" and r.score is not None]
    scored = [r for r in scored if r.score is not None and math.isfinite(r.score)]
    if not scored:
        raise ConfigError(
            f"no trial of study {plan.study} completed with a score",
            "see the failed trial runs with `qemlflow runs list`, or allow more trials",
        )
    sign = 1.0 if plan.direction == "minimize" else -1.0
    # Ties go to the earliest trial, as Optuna's best_trial.
    best = min(scored, key=lambda r: (sign * float(r.score or 0.0), r.number))
    best_cfg = apply_point(plan.cfg, best.params, tune=None)
    out.mkdir(parents=True, exist_ok=True)
    best_path = out / BEST_FILENAME
    header = (
        f"# The best configuration of study {plan.study} (trial {best.number}, "
        f"{plan.metric} {best.score:.6g} on the {plan.scored_on}).\n"
        f"# `qemlflow run` this file to reproduce its final run.\n"
    )
    text = header + yaml.safe_dump(best_cfg.resolved(), sort_keys=False)
    write_atomic(best_path, lambda temp: temp.write_text(text, encoding="utf-8"))
    # The only evaluation on the test part: a normal run of the written file.
    final = run(load_config(best_path), out / BEST_RUN_FOLDER, store=store)
    seconds = time.perf_counter() - started
    study = {
        "study": plan.study,
        "direction": plan.direction,
        "metric": plan.metric,
        "seed": plan.cfg.seed,
        "sampler": "optuna TPESampler, seeded per trial from the config seed",
        "pruner": "median rule per inner fold" if "CV" in plan.scored_on else "none",
        "scored_on": plan.scored_on,
        "space": {path: dim.model_dump(mode="json") for path, dim in plan.space.items()},
        "n_trials": len(records),
        "new_trials": new,
        "best": {**best.to_dict(), "config": BEST_FILENAME},
        "final_run": {
            "run_id": final.run_id,
            "folder": BEST_RUN_FOLDER,
            "test": final.metrics.get("test", {}),
        },
        "seconds": round(seconds, 3),
        "trials": [r.to_dict() for r in records],
    }
    text_json = json.dumps(study, indent=2, default=float) + "\n"
    write_atomic(out / STUDY_FILENAME, lambda temp: temp.write_text(text_json, encoding="utf-8"))
    return TuneResult(
        study=plan.study,
        direction=plan.direction,
        metric=plan.metric,
        seed=plan.cfg.seed,
        scored_on=plan.scored_on,
        trials=records,
        new_trials=new,
        best=best,
        best_config=best_cfg,
        final=final,
        out_dir=out,
        seconds=seconds,
    )
