"""Run an experiment end to end and write its results to a folder."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from qemlflow.errors import DataError
from qemlflow.pipeline.config import ExperimentConfig, load_config, parse_config
from qemlflow.pipeline.predictor import MODEL_FILENAME, Predictor
from qemlflow.pipeline.progress import ProgressReporter, SilentProgress
from qemlflow.pipeline.versions import library_versions

if TYPE_CHECKING:
    from qemlflow.data import Dataset
    from qemlflow.splits import Split

__all__ = ["RunResult", "run"]

_FEATURIZE_CHUNK = 2048
_MIN_MOLECULES = 10


@dataclass
class RunResult:
    """Everything a run produced; ``out_dir`` holds the same on disk when one was given.

    ``scores`` maps output names (``prediction``, ``lower``, ``upper`` or ``probability``)
    to (n_molecules, n_tasks) arrays over the whole dataset.
    """

    config: ExperimentConfig
    dataset: Dataset
    split: Split
    predictor: Predictor
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None


def _as_config(config: ExperimentConfig | dict[str, Any] | str | Path) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[step] = round(time.perf_counter() - start, 4)


def run(
    config: ExperimentConfig | dict[str, Any] | str | Path,
    out: str | Path | None = None,
    *,
    progress: ProgressReporter | None = None,
) -> RunResult:
    """Run dataset -> standardize -> featurize -> split -> fit -> evaluate.

    Parameters
    ----------
    config
        An :class:`ExperimentConfig`, a mapping with the same keys, or a YAML path.
    out
        A folder to write the results into (created when missing); ``None`` keeps
        everything in memory.
    progress
        Receives step progress (the CLI passes a progress bar).
    """
    from qemlflow.data import load_dataset
    from qemlflow.features import make_featurizer
    from qemlflow.models import make_model
    from qemlflow.splits import split as make_split

    cfg = _as_config(config)
    report: ProgressReporter = progress or SilentProgress()
    timings: dict[str, float] = {}

    report.start("dataset")
    with _timed(timings, "dataset"):
        d = cfg.dataset
        dataset = load_dataset(
            d.source,
            smiles_column=d.smiles_column,
            target_columns=d.target_columns,
            task=d.task,
            duplicates=d.duplicates,
            standardize=d.standardize,
            tautomer=d.tautomer,
        )
    summary = dataset.summary()
    if len(dataset) < _MIN_MOLECULES:
        where = "Dataset.rejected"
        if out is not None:
            where = str(dataset.write_rejected(Path(out) / "rejected.csv"))
        raise DataError(
            f"only {len(dataset)} valid molecules in {dataset.source} "
            f"({len(dataset.rejected)} rows rejected)",
            f"an experiment needs at least {_MIN_MOLECULES}; the reasons are in {where}",
        )
    report.finish("dataset", f"{len(dataset)} molecules, {len(dataset.rejected)} rejected")

    featurizer = make_featurizer(cfg.features)
    featurizer.set_params(n_jobs=cfg.n_jobs)
    report.start("featurize", len(dataset))
    with _timed(timings, "featurize"):
        blocks = []
        for start in range(0, len(dataset), _FEATURIZE_CHUNK):
            chunk = dataset.smiles[start : start + _FEATURIZE_CHUNK]
            blocks.append(featurizer.transform(chunk))
            report.advance("featurize", len(chunk))
        X = np.vstack(blocks)
    report.finish("featurize", f"{X.shape[1]} features")

    report.start("split")
    with _timed(timings, "split"):
        parts = make_split(
            cfg.split.method,
            n=len(dataset),
            smiles=dataset.smiles,
            y=dataset.y,
            sizes=cfg.split.sizes,
            seed=cfg.seed,
            **cfg.split.params,
        )
    report.finish("split", f"{len(parts.train)}/{len(parts.valid)}/{len(parts.test)}")

    y = dataset.y[:, 0] if dataset.n_tasks == 1 else dataset.y
    report.start("fit")
    with _timed(timings, "fit"):
        model = make_model(
            cfg.model.estimator,
            dataset.task,
            params=cfg.model.params,
            coverage=cfg.model.coverage,
            calibration=cfg.model.calibration,
            random_state=cfg.seed,
            n_jobs=cfg.n_jobs,
        )
        calibration: dict[str, Any] = {}
        if len(parts.valid):
            calibration = {"X_cal": X[parts.valid], "y_cal": y[parts.valid]}
        model.fit(X[parts.train], y[parts.train], **calibration)
    report.finish("fit", cfg.model.estimator)

    predictor = Predictor(
        model=model,
        feature_spec=featurizer.to_spec(),
        task=dataset.task,
        target_names=list(dataset.target_names),
        standardize=cfg.dataset.standardize,
        tautomer=cfg.dataset.tautomer,
        metadata={"experiment": cfg.name, "dataset": dataset.source, "seed": cfg.seed},
    )

    report.start("evaluate")
    with _timed(timings, "evaluate"):
        scored = _score_matrix(predictor, model, X)
        metrics = _evaluate_parts(cfg, dataset, parts, scored)
    report.finish("evaluate", _headline(metrics))

    predictions = _prediction_table(dataset, parts, scored)
    result = RunResult(
        config=cfg,
        dataset=dataset,
        split=parts,
        predictor=predictor,
        metrics=metrics,
        predictions=predictions,
        scores=scored,
        timings=timings,
    )
    if out is not None:
        result.out_dir = _write_outputs(result, Path(out), summary)
    return result


def _score_matrix(predictor: Predictor, model: Any, X: np.ndarray) -> dict[str, np.ndarray]:
    """Predict every molecule of the dataset from its already computed features."""
    from qemlflow.pipeline.predictor import _as_2d

    if predictor.task == "regression":
        lower, upper = model.predict_interval(X)
        return {
            "prediction": _as_2d(model.predict(X)),
            "lower": _as_2d(lower),
            "upper": _as_2d(upper),
        }
    proba = _as_2d(model.predict_proba(X))
    return {"prediction": (proba >= 0.5).astype(float), "probability": proba}


def _evaluate_parts(
    cfg: ExperimentConfig, dataset: Dataset, parts: Split, scored: dict[str, np.ndarray]
) -> dict[str, Any]:
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
    for name in ("train", "valid", "test"):
        index = getattr(parts, name)
        if len(index) == 0:
            continue
        result = evaluate(
            dataset.y[index],
            score[index],
            dataset.task,
            n_bootstrap=cfg.evaluation.n_bootstrap if name == "test" else 0,
            seed=cfg.seed,
            confidence=cfg.evaluation.confidence,
            task_names=list(dataset.target_names),
        ).to_dict()
        metrics[name] = result["metrics"]
        metrics["n"][name] = len(index)
        if name == "test":
            metrics[f"ci{level}"][name] = result.get(f"ci{level}", {})
            metrics["per_task"][name] = result.get("per_task", {})
    if dataset.task == "regression" and len(parts.test):
        truth = dataset.y[parts.test]
        inside = (truth >= scored["lower"][parts.test]) & (truth <= scored["upper"][parts.test])
        labelled = ~np.isnan(truth)
        width = (scored["upper"] - scored["lower"])[parts.test][labelled]
        metrics["interval"] = {
            "nominal_coverage": cfg.model.coverage,
            "test_coverage": _clean(float(inside[labelled].mean())),
            "test_mean_width": _clean(float(width.mean())),
        }
    return metrics


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else value


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


def _write_outputs(result: RunResult, out: Path, summary: dict[str, Any]) -> Path:
    from qemlflow.evaluation import parity_plot, roc_plot

    out.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    resolved = cfg.resolved()
    (out / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    _write_json(out / "metrics.json", result.metrics)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    result.dataset.write_rejected(out / "rejected.csv")
    result.predictor.save(out / MODEL_FILENAME)
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
            "seed": cfg.seed,
            "dataset": {
                "source": result.dataset.source,
                "sha256": result.dataset.source_digest,
                **summary,
            },
            "split": {k: len(getattr(result.split, k)) for k in ("train", "valid", "test")},
            "timings_s": result.timings,
            "versions": library_versions(),
            "files": sorted(
                [
                    "config.yaml",
                    "metrics.json",
                    "predictions.csv",
                    "rejected.csv",
                    MODEL_FILENAME,
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
