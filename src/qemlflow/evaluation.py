"""Score predictions: metrics with bootstrap confidence intervals, parity and ROC plots.

Metrics are computed by vectorized formulas over a whole batch of bootstrap resamples at
once (one row per resample), so 1000 resamples of 1000 molecules take a fraction of a
second. The formulas match scikit-learn and SciPy (``mean_squared_error``, ``r2_score``,
``spearmanr``, ``roc_auc_score``, ``average_precision_score``, ``matthews_corrcoef``,
``balanced_accuracy_score``); a metric that is undefined for the data (R2 of constant
targets, ROC-AUC with one class) is NaN, never an exception.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from qemlflow.errors import ConfigError, DataError

__all__ = [
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "TASKS",
    "Evaluation",
    "classification_metrics",
    "evaluate",
    "parity_plot",
    "regression_metrics",
    "roc_plot",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Task = Literal["regression", "classification"]

TASKS: Final = ("regression", "classification")
REGRESSION_METRICS: Final = ("rmse", "mae", "r2", "spearman")
CLASSIFICATION_METRICS: Final = ("roc_auc", "pr_auc", "mcc", "balanced_accuracy")

# Bootstrap resamples are scored in chunks of about this many cells, bounding memory.
_CHUNK_CELLS: Final = 2_000_000


# --------------------------------------------------------------------------- batched formulas
# Each takes (B, m) matrices: targets, predictions and a mask of usable cells, and returns
# one (B,) array per metric. Masked cells may hold anything finite.


def _masked_ranks(values: FloatArray, mask: BoolArray) -> FloatArray:
    """Average ranks (1-based) of the masked cells among themselves, per row."""
    # Unused cells are pushed past every real value so they cannot change real ranks.
    return np.asarray(rankdata(np.where(mask, values, np.inf), axis=1), dtype=np.float64)


def _pearson(a: FloatArray, b: FloatArray, mask: BoolArray, count: FloatArray) -> FloatArray:
    mean_a = (a * mask).sum(axis=1) / count
    mean_b = (b * mask).sum(axis=1) / count
    da = (a - mean_a[:, None]) * mask
    db = (b - mean_b[:, None]) * mask
    denominator = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    # Constant inputs: ranks are equal up to rounding, so compare with a tolerance.
    tiny = denominator <= 1e-12 * np.maximum(count, 1.0) ** 2
    return np.where(tiny, np.nan, (da * db).sum(axis=1) / np.where(tiny, 1.0, denominator))


def _regression_batch(
    y_true: FloatArray, y_pred: FloatArray, mask: BoolArray
) -> dict[str, FloatArray]:
    count = mask.sum(axis=1).astype(np.float64)
    t = np.where(mask, y_true, 0.0)
    p = np.where(mask, y_pred, 0.0)
    error = (p - t) * mask
    mean_t = t.sum(axis=1) / count
    ss_res = (error * error).sum(axis=1)
    centred = (t - mean_t[:, None]) * mask
    ss_tot = (centred * centred).sum(axis=1)
    # Constant targets leave R2 undefined; compare with a relative tolerance for rounding.
    flat = ss_tot <= 1e-12 * np.maximum((t * t).sum(axis=1), 1e-300)
    r2 = np.where(flat, np.nan, 1.0 - ss_res / np.where(flat, 1.0, ss_tot))
    spearman = _pearson(_masked_ranks(t, mask), _masked_ranks(p, mask), mask, count)
    enough = count >= 2
    return {
        "rmse": np.sqrt(ss_res / count),
        "mae": np.abs(error).sum(axis=1) / count,
        "r2": np.where(enough, r2, np.nan),
        "spearman": np.where(enough, spearman, np.nan),
    }


def _average_precision(
    score: FloatArray, positive: BoolArray, mask: BoolArray, row_length: int | None = None
) -> FloatArray:
    """Step-wise average precision, as ``sklearn.metrics.average_precision_score``.

    ``row_length``: the rows are the usable cells of longer rows, moved to the front in
    their order (see :func:`_labelled_cells`); the final sum then runs over rows padded
    back to that length, so its floating-point rounding is that of the full rows.
    """
    m = score.shape[1]
    key = np.where(mask, score, -np.inf)  # unused cells sort last and never count
    order = np.argsort(-key, axis=1, kind="stable")
    ranked = np.take_along_axis(key, order, axis=1)
    hits = np.take_along_axis(positive & mask, order, axis=1).astype(np.float64)
    precision = np.cumsum(hits, axis=1) / np.arange(1, m + 1)
    # Tied scores share one threshold: use the precision at the end of each tie block.
    is_end = np.ones_like(ranked, dtype=bool)
    is_end[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    end = np.where(is_end, np.arange(m), m)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]
    block_precision = np.take_along_axis(precision, end, axis=1)
    n_pos = hits.sum(axis=1)
    weighted = hits * block_precision
    if row_length is not None and row_length > m:
        # Usable cells sort first in a full row too: the same values, then zeros.
        weighted = np.pad(weighted, ((0, 0), (0, row_length - m)))
    average: FloatArray = weighted.sum(axis=1) / np.where(n_pos > 0, n_pos, 1.0)
    return average


def _classification_batch(
    y_true: FloatArray,
    y_score: FloatArray,
    mask: BoolArray,
    threshold: float,
    row_length: int | None = None,
) -> dict[str, FloatArray]:
    positive = mask & (y_true == 1)
    negative = mask & (y_true == 0)
    n_pos = positive.sum(axis=1).astype(np.float64)
    n_neg = negative.sum(axis=1).astype(np.float64)
    score = np.where(mask, y_score, 0.0)
    both = (n_pos > 0) & (n_neg > 0)
    pairs = np.where(both, n_pos * n_neg, 1.0)

    # ROC-AUC as the Mann-Whitney U statistic (average ranks handle ties like sklearn).
    rank_sum = (_masked_ranks(score, mask) * positive).sum(axis=1)
    roc_auc = (rank_sum - n_pos * (n_pos + 1) / 2) / pairs

    predicted = score >= threshold
    tp = (predicted & positive).sum(axis=1).astype(np.float64)
    fp = (predicted & negative).sum(axis=1).astype(np.float64)
    fn = n_pos - tp
    tn = n_neg - fp
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    # One predicted class only: sklearn's convention (and the limit value) is MCC = 0.
    mcc = np.where(
        denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1), 0.0
    )
    balanced_accuracy = (tp / np.maximum(n_pos, 1) + tn / np.maximum(n_neg, 1)) / 2

    metrics = {
        "roc_auc": roc_auc,
        "pr_auc": _average_precision(score, positive, mask, row_length),
        "mcc": mcc,
        "balanced_accuracy": balanced_accuracy,
    }
    # Every metric here compares the two classes: with one class present, none is defined.
    return {name: np.where(both, value, np.nan) for name, value in metrics.items()}


# --------------------------------------------------------------------------- input checks


def _check_task(task: Any) -> str:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}")
    return str(task)


def _as_matrix(values: Any, name: str) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} is not numeric ({exc})", f"give {name} as numbers") from exc
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{name} has shape {array.shape}", f"give {name} as (n,) or (n, tasks)")
    return array


def _prepare(y_true: Any, y_pred: Any, task: str) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Return 2-D targets, predictions and the mask of labelled cells, after checks."""
    t = _as_matrix(y_true, "y_true")
    p = _as_matrix(y_pred, "y_pred")
    if t.shape != p.shape:
        raise DataError(
            f"y_true has shape {t.shape} but y_pred has shape {p.shape}",
            "give one prediction per label",
        )
    mask = ~np.isnan(t)
    if np.any(~np.isfinite(p[mask])):
        raise DataError(
            "y_pred holds NaN or infinite values where labels exist",
            "drop those molecules or fix the model output",
        )
    if np.any(np.isinf(t[mask])):
        raise DataError("y_true holds infinite values", "use NaN for missing labels")
    if task == "classification" and not np.all(np.isin(t[mask], (0.0, 1.0))):
        raise DataError(
            "classification labels must be 0 or 1 (NaN for missing)",
            "binarize y_true, e.g. y_true = (y_true == positive_class)",
        )
    return t, p, mask


def _scorer(task: str, threshold: float) -> Callable[..., dict[str, FloatArray]]:
    if task == "regression":
        return _regression_batch
    return lambda t, p, m: _classification_batch(t, p, m, threshold)


def _labelled_cells(
    rows: npt.NDArray[np.int64], t: FloatArray, p: FloatArray
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """One task's resampled labelled cells, each row's moved to the front in order.

    ``rows`` is a (B, n) matrix of resampled molecules; a sparse task labels few of them.
    Returns (B, w) targets, scores and usable mask, w the most labelled cells of a row:
    the classification metrics of these rows equal those of the full (B, n) rows
    (ranks and orders among usable cells are kept, and their sums are of whole or half
    numbers, exact in any order; average precision sums as the full rows do, see
    :func:`_average_precision`), at the cost of w columns instead of n.
    """
    usable = ~np.isnan(t)[rows]
    count = usable.sum(axis=1)
    width = int(count.max()) if count.size else 0
    row, column = np.nonzero(usable)  # row-major: each row's cells in their order
    slot = np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count)
    picked = np.zeros((len(rows), width), dtype=np.int64)
    picked[row, slot] = rows[row, column]
    mask = np.zeros((len(rows), width), dtype=bool)
    mask[row, slot] = True
    return np.where(mask, t[picked], np.nan), np.where(mask, p[picked], 0.0), mask


def _score_once(t: FloatArray, p: FloatArray, task: str, threshold: float) -> dict[str, float]:
    mask = ~np.isnan(t)
    scorer = _scorer(task, threshold)
    with np.errstate(divide="ignore", invalid="ignore"):  # undefined metrics become NaN
        batch = scorer(t[None, :], p[None, :], mask[None, :])
    return {name: float(value[0]) for name, value in batch.items()}


# --------------------------------------------------------------------------- public metrics


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Return RMSE, MAE, R2 and Spearman correlation of one set of predictions.

    Rows with a NaN target are ignored. R2 and Spearman are NaN when undefined (fewer
    than two rows or constant values).

    Examples
    --------
    >>> m = regression_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.0])
    >>> {k: round(v, 4) for k, v in m.items()}
    {'rmse': 0.3536, 'mae': 0.25, 'r2': 0.9, 'spearman': 1.0}
    """
    t, p, _ = _prepare(np.ravel(y_true), np.ravel(y_pred), "regression")
    return _score_once(t[:, 0], p[:, 0], "regression", 0.5)


def classification_metrics(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, float]:
    """Return ROC-AUC, PR-AUC (average precision), MCC and balanced accuracy.

    ``y_true`` holds 0/1 labels (NaN rows are ignored), ``y_score`` the score or
    probability of class 1; MCC and balanced accuracy call ``y_score >= threshold``
    positive. With only one class in ``y_true`` every metric is NaN.

    Examples
    --------
    >>> m = classification_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9])
    >>> {k: round(v, 4) for k, v in m.items()}
    {'roc_auc': 0.75, 'pr_auc': 0.8333, 'mcc': 0.0, 'balanced_accuracy': 0.5}
    >>> classification_metrics([1, 1], [0.2, 0.9])["roc_auc"]
    nan
    """
    t, p, _ = _prepare(np.ravel(y_true), np.ravel(y_score), "classification")
    return _score_once(t[:, 0], p[:, 0], "classification", threshold)


# --------------------------------------------------------------------------- evaluate


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _nanmean_rows(values: FloatArray) -> FloatArray:
    """Mean over the last axis ignoring NaN; all-NaN gives NaN without a warning."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=-1)
    total = np.where(defined, values, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one set of predictions, per task and overall, with bootstrap CIs.

    ``metrics`` holds, per metric, the mean over tasks where it is defined (NaN when it
    is defined for none). ``ci`` holds percentile bootstrap intervals of those means at
    level ``confidence``; it is empty when ``n_bootstrap`` was 0. ``n`` counts molecules
    with at least one label, ``n_per_task`` the labels of each task.
    """

    task: str
    metrics: dict[str, float]
    per_task: dict[str, dict[str, float]]
    ci: dict[str, tuple[float, float]]
    n: int
    n_per_task: dict[str, int] = field(default_factory=dict)
    confidence: float = 0.95
    n_bootstrap: int = 1000
    seed: int = 0

    @property
    def ci_key(self) -> str:
        """Name of the interval entry in :meth:`to_dict`, e.g. ``'ci95'``."""
        return f"ci{self.confidence * 100:g}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable record; undefined values (NaN) become ``None``.

        Examples
        --------
        >>> import json
        >>> e = evaluate([1.0, 2.0, 3.0], [1.0, 2.0, 2.0], "regression", n_bootstrap=0)
        >>> d = e.to_dict()
        >>> sorted(d)[:4]
        ['ci95', 'confidence', 'metrics', 'n']
        >>> json.loads(json.dumps(d))["per_task"]["task_0"]["mae"] == d["metrics"]["mae"]
        True
        """
        return {
            "task": self.task,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            self.ci_key: {k: [_json_float(lo), _json_float(hi)] for k, (lo, hi) in self.ci.items()},
            "per_task": {
                name: {k: _json_float(v) for k, v in values.items()}
                for name, values in self.per_task.items()
            },
            "n": self.n,
            "n_per_task": dict(self.n_per_task),
            "confidence": self.confidence,
            "n_bootstrap": self.n_bootstrap,
            "seed": self.seed,
        }


def _check_evaluate_options(
    n_bootstrap: Any, seed: Any, confidence: Any, n_tasks: int, task_names: Any
) -> list[str]:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ConfigError(
            f"n_bootstrap {n_bootstrap!r} is not a non-negative integer",
            "give e.g. n_bootstrap=1000 (0 turns confidence intervals off)",
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed {seed!r} is not a non-negative integer", "give e.g. seed=0")
    if not isinstance(confidence, float | int) or not 0.0 < confidence < 1.0:
        raise ConfigError(
            f"confidence {confidence!r} is not between 0 and 1", "give e.g. confidence=0.95"
        )
    if task_names is None:
        return [f"task_{i}" for i in range(n_tasks)]
    names = [str(name) for name in task_names]
    if len(names) != n_tasks or len(set(names)) != n_tasks:
        raise ConfigError(
            f"task_names {names!r} do not name the {n_tasks} task(s) once each",
            f"give {n_tasks} distinct names",
        )
    return names


def _bootstrap(
    t: FloatArray,
    p: FloatArray,
    scorer: Callable[..., dict[str, FloatArray]],
    names: Sequence[str],
    n_bootstrap: int,
    seed: int,
    threshold: float | None = None,
) -> dict[str, FloatArray]:
    """Task-averaged metric values of each resample of molecules, shape (n_bootstrap,).

    With a ``threshold`` (classification) each task is scored on its labelled cells
    only (:func:`_labelled_cells`): the same values, far cheaper for sparse tasks.
    """
    n, n_tasks = t.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    collected: dict[str, list[FloatArray]] = {name: [] for name in names}
    for start in range(0, n_bootstrap, chunk):
        rows = rng.integers(0, n, size=(min(chunk, n_bootstrap - start), n))
        per_task = []
        for j in range(n_tasks):
            with np.errstate(divide="ignore", invalid="ignore"):  # undefined metrics -> NaN
                if threshold is not None:
                    tj, pj, usable = _labelled_cells(rows, t[:, j], p[:, j])
                    per_task.append(_classification_batch(tj, pj, usable, threshold, n))
                else:
                    tj, pj = t[rows, j], p[rows, j]
                    per_task.append(scorer(tj, pj, ~np.isnan(tj)))
        for name in names:
            stacked = np.stack([scores[name] for scores in per_task], axis=1)
            collected[name].append(_nanmean_rows(stacked))
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def evaluate(
    y_true: Any,
    y_pred: Any,
    task: Task,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
    task_names: Sequence[str] | None = None,
) -> Evaluation:
    """Score predictions per task and overall, with percentile bootstrap intervals.

    ``y_true`` and ``y_pred`` have shape ``(n,)`` or ``(n, tasks)``; NaN in ``y_true``
    marks a missing label, ignored for that task only. For classification ``y_pred``
    holds class-1 scores. The bootstrap resamples molecules (rows) with replacement,
    ``n_bootstrap`` times with ``numpy.random.default_rng(seed)``, scores every task on
    each resample and averages over tasks, so intervals account for the tasks sharing
    molecules. Resamples on which a metric is undefined are left out of its interval.

    Examples
    --------
    >>> e = evaluate([1.0, 2.0, 3.0, 4.0, 5.0], [1.1, 1.9, 3.2, 3.8, 5.1], "regression",
    ...              n_bootstrap=200, seed=0)
    >>> round(e.metrics["rmse"], 3), e.n
    (0.148, 5)
    >>> low, high = e.ci["rmse"]
    >>> bool(low <= e.metrics["rmse"] <= high)
    True
    >>> y = [[0, 1], [1, float("nan")], [1, 0], [0, 1]]
    >>> s = [[0.2, 0.7], [0.8, 0.5], [0.6, 0.3], [0.4, 0.9]]
    >>> evaluate(y, s, "classification", n_bootstrap=0).per_task["task_1"]["roc_auc"]
    1.0
    """
    kind = _check_task(task)
    t, p, mask = _prepare(y_true, y_pred, kind)
    names = _check_evaluate_options(n_bootstrap, seed, confidence, t.shape[1], task_names)
    labelled = mask.any(axis=1)
    t, p, mask = t[labelled], p[labelled], mask[labelled]
    metric_names = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS

    per_task = {
        name: _score_once(t[:, j], p[:, j], task, threshold) for j, name in enumerate(names)
    }
    metrics = {
        metric: float(_nanmean_rows(np.array([per_task[name][metric] for name in names])))
        for metric in metric_names
    }

    ci: dict[str, tuple[float, float]] = {}
    if n_bootstrap > 0 and len(t) > 0:
        cells = threshold if kind == "classification" else None
        samples = _bootstrap(t, p, _scorer(kind, threshold), metric_names, n_bootstrap, seed, cells)
        tail = (1.0 - float(confidence)) / 2 * 100
        for metric, values in samples.items():
            defined = values[~np.isnan(values)]
            if defined.size == 0:
                ci[metric] = (math.nan, math.nan)
            else:
                low, high = np.percentile(defined, [tail, 100 - tail])
                ci[metric] = (float(low), float(high))
    elif n_bootstrap > 0:
        ci = dict.fromkeys(metric_names, (math.nan, math.nan))

    return Evaluation(
        task=kind,
        metrics=metrics,
        per_task=per_task,
        ci=ci,
        n=len(t),
        n_per_task={name: int(mask[:, j].sum()) for j, name in enumerate(names)},
        confidence=float(confidence),
        n_bootstrap=int(n_bootstrap),
        seed=int(seed),
    )


# --------------------------------------------------------------------------- plots


def _new_figure(size: tuple[float, float] = (5.0, 5.0)) -> Any:
    # The object-oriented API with the Agg canvas: no pyplot global state, no GUI backend,
    # and the user's own matplotlib backend choice is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save_png(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Write the figure atomically: temp file in the same folder, fsync, rename."""
    from qemlflow._atomic import write_atomic

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, lambda temp: figure.savefig(temp, format="png"))
    return target


def _task_labels(n_tasks: int, task_names: Sequence[str] | None) -> list[str]:
    if task_names is None:
        return [f"task_{i}" for i in range(n_tasks)]
    names = [str(name) for name in task_names]
    if len(names) != n_tasks:
        raise ConfigError(f"{len(names)} task_names for {n_tasks} task(s)", f"give {n_tasks} names")
    return names


def parity_plot(
    y_true: Any,
    y_pred: Any,
    path: str | os.PathLike[str],
    *,
    lower: Any = None,
    upper: Any = None,
    title: str | None = None,
    task_names: Sequence[str] | None = None,
) -> Path:
    """Draw predicted against true values with the y = x line; write a PNG; return its path.

    ``lower``/``upper`` (same shape as ``y_pred``) draw prediction intervals as error bars.
    Each task gets its own colour; the legend gives its RMSE and R2. Rows with a NaN
    target are skipped.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> parity_plot([1.0, 2.0, 3.0], [1.2, 1.8, 3.3], folder / "parity.png").read_bytes()[:4]
    b'\\x89PNG'
    """
    t, p, mask = _prepare(y_true, y_pred, "regression")
    bounds = [
        None if b is None else _as_matrix(b, name)
        for b, name in ((lower, "lower"), (upper, "upper"))
    ]
    for bound in bounds:
        if bound is not None and bound.shape != p.shape:
            raise DataError(
                f"interval bounds have shape {bound.shape}, predictions {p.shape}",
                "give lower and upper with the shape of y_pred",
            )
    labels = _task_labels(t.shape[1], task_names)
    figure = _new_figure()
    axes = figure.add_subplot()
    for j, label in enumerate(labels):
        rows = mask[:, j]
        if not rows.any():
            continue
        tj, pj = t[rows, j], p[rows, j]
        scores = _score_once(tj, pj, "regression", 0.5)
        legend = f"RMSE {scores['rmse']:.3g}, R² {scores['r2']:.3g}"
        if t.shape[1] > 1:
            legend = f"{label}: {legend}"
        low, high = (None if b is None else b[rows, j] for b in bounds)
        if low is not None or high is not None:
            below = np.zeros_like(pj) if low is None else np.clip(pj - low, 0.0, None)
            above = np.zeros_like(pj) if high is None else np.clip(high - pj, 0.0, None)
            axes.errorbar(
                tj, pj, yerr=np.vstack([below, above]), fmt="none", alpha=0.3, color=f"C{j}"
            )
        axes.scatter(tj, pj, s=12, alpha=0.7, color=f"C{j}", label=legend)
    finite = np.concatenate([t[mask], p[mask]])
    if finite.size:
        span = float(finite.max() - finite.min()) or 1.0
        edge = (float(finite.min()) - 0.05 * span, float(finite.max()) + 0.05 * span)
        axes.plot(edge, edge, color="grey", linestyle="--", linewidth=1, label="y = x")
        axes.set_xlim(edge)
        axes.set_ylim(edge)
    axes.set_aspect("equal")
    axes.set_xlabel("true")
    axes.set_ylabel("predicted")
    axes.set_title(title or "Parity")
    axes.legend(loc="upper left", fontsize="small")
    return _save_png(figure, path)


# Above this many tasks (a ToxCast-style set has hundreds) the ROC plot draws the curves
# thin and unlabelled, with one legend line of their AUCs, instead of a legend per task.
ROC_LEGEND_MAX_TASKS: Final = 20


def _many_roc_curves(axes: Any, t: FloatArray, s: FloatArray, mask: BoolArray) -> None:
    """Every task's ROC curve in one colour, summarized in a single legend entry."""
    from sklearn.metrics import roc_curve

    aucs, single = [], 0
    for j in range(t.shape[1]):
        rows = mask[:, j]
        tj, sj = t[rows, j], s[rows, j]
        auc = _score_once(tj, sj, "classification", 0.5)["roc_auc"]
        if math.isnan(auc):
            single += 1
            continue
        aucs.append(auc)
        fpr, tpr, _ = roc_curve(tj, sj)
        axes.plot(fpr, tpr, color="C0", alpha=0.15, linewidth=0.6)
    summary = f"{len(aucs)} tasks: mean AUC {np.mean(aucs):.3f}" if aucs else "no task"
    summary += f" ({single} with one class, no ROC)" if single else ""
    axes.plot([], [], color="C0", label=summary)


def roc_plot(
    y_true: Any,
    y_score: Any,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    task_names: Sequence[str] | None = None,
) -> Path:
    """Draw the ROC curve of each task that has both classes; write a PNG; return its path.

    The legend gives each curve's AUC. Tasks with a single class have no ROC curve and
    are listed as such in the legend rather than failing. With more than
    ``ROC_LEGEND_MAX_TASKS`` tasks the curves share one colour and one legend line (their
    count and mean AUC), so hundreds of tasks still give a readable plot.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> roc_plot([0, 1, 0, 1], [0.1, 0.8, 0.4, 0.3], folder / "roc.png").stat().st_size > 1000
    True
    """
    from sklearn.metrics import roc_curve

    t, s, mask = _prepare(y_true, y_score, "classification")
    labels = _task_labels(t.shape[1], task_names)
    figure = _new_figure()
    axes = figure.add_subplot()
    axes.plot((0, 1), (0, 1), color="grey", linestyle="--", linewidth=1, label="chance")
    if t.shape[1] > ROC_LEGEND_MAX_TASKS:
        _many_roc_curves(axes, t, s, mask)
    for j, label in enumerate(labels if t.shape[1] <= ROC_LEGEND_MAX_TASKS else []):
        rows = mask[:, j]
        tj, sj = t[rows, j], s[rows, j]
        auc = _score_once(tj, sj, "classification", 0.5)["roc_auc"]
        prefix = f"{label}: " if t.shape[1] > 1 else ""
        if math.isnan(auc):
            axes.plot([], [], color=f"C{j}", label=f"{prefix}one class, no ROC")
            continue
        fpr, tpr, _ = roc_curve(tj, sj)
        axes.plot(fpr, tpr, color=f"C{j}", label=f"{prefix}AUC {auc:.3f}")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title(title or "ROC")
    axes.legend(loc="lower right", fontsize="small")
    return _save_png(figure, path)
