"""Run each (dataset, model, seed) as a normal experiment and collect its test metric.

Results accumulate in ``moleculenet.json``: a seed whose configuration digest is already
recorded there is not run again, so a long benchmark can be resumed or extended (another
model, more seeds) without recomputing what it already has.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow._atomic import write_atomic
from qemlflow.benchmark.suite import (
    DEFAULT_TUNE_TRIALS,
    SIZES,
    BenchmarkDataset,
    BenchmarkModel,
    resolve_datasets,
    resolve_models,
)
from qemlflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    from qemlflow.pipeline.config import ExperimentConfig
    from qemlflow.pipeline.runner import RunResult
    from qemlflow.store import Store

__all__ = [
    "BenchmarkResult",
    "config_digest",
    "experiment_config",
    "legacy_config_digest",
    "read_results",
    "run_benchmark",
    "summarize",
]

RESULTS_NAME = "{suite}.json"
_MAX_SEEDS = 100  # each seed is a full pass over the suite; more is a typo
_MAX_TUNE_TRIALS = 10_000
TUNING_FOLDER = "tuning"


@dataclass
class BenchmarkResult:
    """What a benchmark call produced: every (dataset, model) entry and what it ran.

    ``results`` is the content of ``<suite>.json``; ``computed`` and ``reused`` list the
    (dataset, model, seed) triples run now and those taken from the file.
    """

    suite: str
    out_dir: Path
    results: dict[str, dict[str, dict[str, Any]]]
    computed: list[tuple[str, str, int]] = field(default_factory=list)
    reused: list[tuple[str, str, int]] = field(default_factory=list)
    wall_s: float = 0.0
    started: str = ""
    files: list[Path] = field(default_factory=list)


def experiment_config(
    dataset: BenchmarkDataset,
    model: BenchmarkModel,
    seed: int,
    n_jobs: int = 1,
    tune_trials: int = DEFAULT_TUNE_TRIALS,
) -> ExperimentConfig:
    """The experiment one benchmark cell runs, with the task's defaults filled in.

    A tuned model's experiment also has a ``tune`` section that pins what decides the
    search: the trial budget, the metric, scoring on the validation part and the full
    search space. It is part of the config digest, so a cell is recomputed when any of
    them changes (``tune_trials`` is ignored for other models).
    """
    from qemlflow.pipeline.config import parse_config

    data: dict[str, Any] = {
        "name": f"benchmark-{dataset.key.replace('@', '-')}-{model.name}-seed{seed}",
        "seed": seed,
        "n_jobs": n_jobs,
        "dataset": {"source": dataset.name, "task": dataset.task},
        # Scaffold sets run under Chemprop's balanced scaffold split (`scaffold`, seeded)
        # and DeepChem's deterministic one (`scaffold_deepchem`, the MoleculeNet paper's).
        "split": {"method": dataset.split, "sizes": list(SIZES)},
        # Only the test metric is read: no bootstrap intervals, no plots.
        "evaluation": {"n_bootstrap": 0, "plots": False},
        **dict(model.experiment),
    }
    if model.smiles_as_written:
        data["dataset"]["standardize"] = False
    if model.tuned:
        data["tune"] = _tune_section(dataset, model, tune_trials)
    cfg = parse_config(data, source=f"benchmark model {model.name!r}")
    with_defaults = getattr(cfg, "with_task_defaults", None)
    return with_defaults(dataset.task) if callable(with_defaults) else cfg


def _tune_section(dataset: BenchmarkDataset, model: BenchmarkModel, trials: int) -> dict[str, Any]:
    from qemlflow.tune import default_space

    estimator = str((model.experiment.get("model") or {}).get("estimator", "lightgbm"))
    space = default_space(estimator, dataset.task)
    return {
        "trials": trials,
        "metric": dataset.metric,
        # The split always has a validation part (SIZES): trials are scored there, inside
        # the training part; the test part is read once, by the best configuration's run.
        "scoring": "validation",
        "space": {path: dim.model_dump(mode="json") for path, dim in sorted(space.items())},
    }


def config_digest(cfg: ExperimentConfig) -> str:
    """sha256 of what decides a cell's result: the resolved config minus name and n_jobs,
    and the version of each pipeline step.

    The step versions are in it because the same config gives another result when a step's
    code changes what it outputs (a new split, say): a recorded cell is then recomputed,
    not reused. Hex sha256 of the RFC 8785 bytes, with ``"integral_floats"`` added (the
    paths of floats such as ``1.0``, which JCS writes as ``1``) when there are any, as in
    step keys (docs/keys.md).
    """
    from qemlflow.store.keys import canonical_json, integral_float_paths

    resolved = _digested_config(cfg)
    floats = integral_float_paths(resolved)
    if floats:
        resolved["integral_floats"] = floats
    return hashlib.sha256(canonical_json(resolved)).hexdigest()


def legacy_config_digest(cfg: ExperimentConfig) -> str:
    """The digest :func:`config_digest` gave before RFC 8785 (Python's ``json.dumps``).

    Only for benchmarks/rehash_report.py: a recorded digest equal to this one was taken
    from the same config, so its result can carry the new digest.
    """
    from qemlflow.store.keys import legacy_canonical_json

    return hashlib.sha256(legacy_canonical_json(_digested_config(cfg))).hexdigest()


def _digested_config(cfg: ExperimentConfig) -> dict[str, Any]:
    from qemlflow.pipeline.steps import STEP_VERSIONS

    resolved = {k: v for k, v in cfg.resolved().items() if k not in ("name", "n_jobs")}
    # Also in the legacy digest, so a cell recorded before a step changed never matches it:
    # benchmarks/rehash_report.py then leaves it to be recomputed, never relabels it.
    resolved["step_versions"] = dict(sorted(STEP_VERSIONS.items()))
    # A fixed featurizer's version (only those above 1, so other cells keep their digests):
    # its cells are recomputed, not reused.
    featurizers = cfg.featurizer_versions()
    if featurizers:
        resolved["featurizer_versions"] = featurizers
    return resolved


def read_results(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The results already in ``path`` (empty when the file does not exist)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})",
            "fix or delete the file; the benchmark rewrites it",
        ) from None
    if not isinstance(data, dict):
        raise DataError(f"{path} does not map datasets to models", "delete it and rerun")
    return data


def summarize(
    dataset: BenchmarkDataset, model: BenchmarkModel, seeds: list[dict[str, Any]]
) -> dict[str, Any]:
    """One (dataset, model) entry of the results, with its check against the literature.

    Metric, mean, sd (ddof=1; 0 with one seed), per-seed values, the dataset and split, and
    ``literature_check`` (:func:`qemlflow.benchmark.report.literature_check`).

    Examples
    --------
    >>> from qemlflow.benchmark.suite import MODELS, resolve_datasets
    >>> esol = resolve_datasets("moleculenet", ["esol"])[0]
    >>> entry = summarize(esol, MODELS["lightgbm"], [{"seed": 0, "value": 0.5},
    ...                                              {"seed": 1, "value": 0.7}])
    >>> entry["metric"], round(entry["mean"], 3), round(entry["sd"], 3), entry["split"]
    ('rmse', 0.6, 0.141, 'random')
    """
    from qemlflow.benchmark.report import literature_check

    ordered = sorted(seeds, key=lambda s: int(s["seed"]))
    values = [float(s["value"]) for s in ordered]
    mean = statistics.fmean(values)
    entry: dict[str, Any] = {
        "metric": dataset.metric,
        "mean": mean,
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "seeds": ordered,
        "dataset": dataset.name,
        "split": dataset.split,
        "task": dataset.task,
        "n_seeds": len(values),
        "description": model.description,
        "family": model.family,
        # Against the literature of this split: far worse fails, far better is suspicious.
        "literature_check": literature_check(
            dataset.name,
            dataset.split,
            model.family,
            dataset.metric,
            mean,
            smiles_as_written=model.smiles_as_written,
        ),
    }
    if model.smiles_as_written:  # only then, so the other entries' JSON stays as it was
        entry["smiles_as_written"] = True
    return entry


def run_benchmark(
    out: str | Path,
    *,
    suite: str = "moleculenet",
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    seeds: int = 3,
    n_jobs: int = 1,
    store: Store | None = None,
    known_models: Mapping[str, BenchmarkModel] | None = None,
    command: str | None = None,
    on_cell: Callable[[str, str, int, dict[str, Any] | None], None] | None = None,
    tune_trials: int = DEFAULT_TUNE_TRIALS,
) -> BenchmarkResult:
    """Run ``suite`` for ``models`` over seeds ``0..seeds-1`` and write the report into ``out``.

    Every cell is a normal experiment (``qemlflow.pipeline.runner.run``), recorded in
    ``store`` when one is given; its step cache then featurizes each dataset once for all
    seeds and models. ``on_cell(dataset, model, seed, entry)`` is called before each cell
    (``entry`` None) and after it (the seed's entry). The JSON is rewritten after every
    cell, so an interrupted run loses at most the cell in progress.
    """
    from qemlflow.benchmark.report import write_report

    if not 1 <= seeds <= _MAX_SEEDS:
        raise ConfigError(
            f"--seeds must be at least 1 and at most {_MAX_SEEDS}, got {seeds}",
            "pass --seeds 3, say",
        )
    if not 1 <= tune_trials <= _MAX_TUNE_TRIALS:
        raise ConfigError(
            f"--tune-trials must be at least 1 and at most {_MAX_TUNE_TRIALS}, got {tune_trials}",
            f"pass --tune-trials {DEFAULT_TUNE_TRIALS}, say",
        )
    chosen_sets = resolve_datasets(suite, datasets)
    chosen_models = resolve_models(models, known_models)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS_NAME.format(suite=suite)
    results = read_results(path)
    started = time.perf_counter()
    outcome = BenchmarkResult(
        suite=suite,
        out_dir=out_dir,
        results=results,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    for dataset in chosen_sets:
        for model in chosen_models:
            previous = results.get(dataset.key, {}).get(model.name, {})
            kept: dict[int, dict[str, Any]] = {}
            for seed in range(seeds):
                cfg = experiment_config(dataset, model, seed, n_jobs, tune_trials)
                digest = config_digest(cfg)
                old = _recorded_seed(previous, seed, digest)
                if old is not None:
                    kept[seed] = old
                    outcome.reused.append((dataset.key, model.name, seed))
                    continue
                if on_cell is not None:
                    on_cell(dataset.key, model.name, seed, None)
                if model.tuned:
                    kept[seed] = _run_tuned_cell(cfg, dataset, digest, store, out_dir)
                else:
                    kept[seed] = _run_cell(cfg, dataset, digest, store)
                outcome.computed.append((dataset.key, model.name, seed))
                # Seeds beyond this call's range stay when their config is unchanged.
                extra = _other_seeds(previous, kept, dataset, model, n_jobs, tune_trials)
                results.setdefault(dataset.key, {})[model.name] = summarize(
                    dataset, model, [*kept.values(), *extra]
                )
                _write_json(path, results)
                if on_cell is not None:
                    on_cell(dataset.key, model.name, seed, kept[seed])
            extra = _other_seeds(previous, kept, dataset, model, n_jobs, tune_trials)
            results.setdefault(dataset.key, {})[model.name] = summarize(
                dataset, model, [*kept.values(), *extra]
            )
    results = _ordered(results)
    outcome.results = results
    _write_json(path, results)
    outcome.wall_s = time.perf_counter() - started
    outcome.files = write_report(outcome, command=command)
    return outcome


def _recorded_seed(previous: dict[str, Any], seed: int, digest: str) -> dict[str, Any] | None:
    for entry in previous.get("seeds", []):
        if (
            isinstance(entry, dict)
            and entry.get("seed") == seed
            and entry.get("config_digest") == digest
            and isinstance(entry.get("value"), int | float)
        ):
            return entry
    return None


def _other_seeds(
    previous: dict[str, Any],
    kept: dict[int, dict[str, Any]],
    dataset: BenchmarkDataset,
    model: BenchmarkModel,
    n_jobs: int,
    tune_trials: int = DEFAULT_TUNE_TRIALS,
) -> list[dict[str, Any]]:
    extra = []
    for entry in previous.get("seeds", []):
        seed = entry.get("seed") if isinstance(entry, dict) else None
        if not isinstance(seed, int) or seed in kept:
            continue
        digest = config_digest(experiment_config(dataset, model, seed, n_jobs, tune_trials))
        if _recorded_seed(previous, seed, digest) is not None:
            extra.append(entry)
    return extra


def _run_cell(
    cfg: ExperimentConfig, dataset: BenchmarkDataset, digest: str, store: Store | None
) -> dict[str, Any]:
    from qemlflow.pipeline.runner import run

    start = time.perf_counter()
    result = run(cfg, store=store)
    return _seed_entry(cfg, dataset, digest, result, time.perf_counter() - start)


def _run_tuned_cell(
    cfg: ExperimentConfig,
    dataset: BenchmarkDataset,
    digest: str,
    store: Store | None,
    out_dir: Path,
) -> dict[str, Any]:
    """Tune the cell's experiment inside its training part; the best run is the result."""
    import contextlib
    import shutil
    import tempfile

    from qemlflow.tune import BEST_FILENAME, STUDY_FILENAME, TrialRecord, tune

    assert cfg.tune is not None and cfg.tune.trials is not None  # set by experiment_config
    start = time.perf_counter()
    searched = start  # when the last new trial ended: the search's share of the cell

    def trial_done(_: TrialRecord) -> None:
        nonlocal searched
        searched = time.perf_counter()

    with contextlib.ExitStack() as stack:
        temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qemlflow-tune-")))
        if store is None:  # tune records its trials: a throwaway store when none is given
            from qemlflow.store import Store as StoreClass

            store = stack.enter_context(StoreClass.open(temp / "store"))
        tuned = tune(cfg, temp / "out", trials=cfg.tune.trials, store=store, on_trial=trial_done)
        # best.yaml reruns the cell's final run (`qemlflow run`); study.json lists the trials.
        kept = out_dir / TUNING_FOLDER / cfg.name
        kept.mkdir(parents=True, exist_ok=True)
        for name in (BEST_FILENAME, STUDY_FILENAME):
            shutil.copyfile(temp / "out" / name, kept / name)
    seconds = time.perf_counter() - start
    entry = _seed_entry(cfg, dataset, digest, tuned.final, seconds)
    entry["tuning"] = {
        "trials": len(tuned.trials),
        # Trials a resumed study took from the store cost nothing now: fewer new trials
        # than trials means the seconds undercount the search.
        "new_trials": tuned.new_trials,
        "seconds": round(searched - start, 2) if tuned.new_trials else 0.0,
        "scored_on": tuned.scored_on,
        "study": tuned.study,
        "best_trial": tuned.best.number,
        "best_score": tuned.best.score,
        "best_params": tuned.best.params,
        "pruned": sum(1 for t in tuned.trials if t.state == "pruned"),
        "failed": sum(1 for t in tuned.trials if t.state == "failed"),
        "files": f"{TUNING_FOLDER}/{cfg.name}",
    }
    return entry


def _seed_entry(
    cfg: ExperimentConfig,
    dataset: BenchmarkDataset,
    digest: str,
    result: RunResult,
    seconds: float,
) -> dict[str, Any]:
    value = result.metrics.get("test", {}).get(dataset.metric)
    if not isinstance(value, int | float) or math.isnan(value):
        raise DataError(
            f"the {cfg.name} run has no test-set {dataset.metric}",
            "check that the test split has labelled molecules of both classes",
        )
    return {
        "seed": cfg.seed,
        "value": float(value),
        "config_digest": digest,
        "seconds": round(seconds, 2),
        "n_test": int(result.metrics.get("n", {}).get("test", 0)),
        "run_id": result.run_id,
        # Exact duplicates across parts and shared scaffolds: a result is only worth its
        # split if this is zero (the report lists it per cell).
        "leakage": result.metrics.get("leakage"),
    }


def _ordered(
    results: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Datasets in suite order (unknown ones last), each split of a dataset after its
    registry one, models in registry order."""
    from qemlflow.benchmark.suite import MODELS, SUITES

    order = {name: i for i, name in enumerate(n for s in SUITES.values() for n in s)}
    model_order = {name: i for i, name in enumerate(MODELS)}

    def place(key: str) -> tuple[int, str, str]:
        name, _, split = key.partition("@")
        return (order.get(name, len(order)), name, split)

    return {
        ds: {
            m: results[ds][m]
            for m in sorted(results[ds], key=lambda m: (model_order.get(m, len(model_order)), m))
        }
        for ds in sorted(results, key=place)
    }


def _write_json(path: Path, data: Any) -> None:
    """Write atomically (temp file, fsync, rename): an interrupted run keeps the old file."""
    text = json.dumps(data, indent=2) + "\n"
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))
