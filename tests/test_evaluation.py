"""Tests for qemlflow.evaluation: metrics, bootstrap intervals and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn import metrics as skm

from qemlflow.errors import ConfigError, DataError
from qemlflow.evaluation import (
    classification_metrics,
    evaluate,
    parity_plot,
    regression_metrics,
    roc_plot,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _regression_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    return y, y + 0.5 * rng.normal(size=n)


def _classification_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    score = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1).round(2)  # rounded: ties
    return y, score


# --------------------------------------------------------------------------- metrics


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 3.0])
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    assert m["mae"] == pytest.approx(0.5)
    assert m["r2"] == pytest.approx(1 - 2 / 5)
    assert set(m) == {"rmse", "mae", "r2", "spearman"}


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_match_sklearn(seed: int) -> None:
    y, p = _regression_data(50, seed)
    p = p.round(1)  # ties for Spearman
    m = regression_metrics(y, p)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert m["spearman"] == pytest.approx(spearmanr(y, p).statistic)


def test_regression_undefined_metrics_are_nan() -> None:
    m = regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert math.isnan(m["r2"]) and math.isnan(m["spearman"])
    assert m["mae"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed: int) -> None:
    y, s = _classification_data(80, seed)
    m = classification_metrics(y, s, threshold=0.5)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, s >= 0.5))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, s >= 0.5))


def test_single_class_gives_nan_not_a_crash() -> None:
    m = classification_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert all(math.isnan(v) for v in m.values())
    e = evaluate([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], "classification", n_bootstrap=50)
    assert math.isnan(e.metrics["roc_auc"])
    assert all(math.isnan(lo) and math.isnan(hi) for lo, hi in e.ci.values())
    assert e.to_dict()["metrics"]["roc_auc"] is None


def test_one_predicted_class_gives_zero_mcc() -> None:
    m = classification_metrics([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert m["mcc"] == 0.0
    assert m["balanced_accuracy"] == 0.5
    assert m["roc_auc"] == pytest.approx(0.75)


def test_bad_inputs() -> None:
    with pytest.raises(DataError):
        classification_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(DataError):
        regression_metrics([1.0, 2.0], [1.0])
    with pytest.raises(DataError):
        regression_metrics([1.0, 2.0], [1.0, float("nan")])
    with pytest.raises(ConfigError):
        evaluate([1.0], [1.0], "ranking")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        evaluate([1.0, 2.0], [1.0, 2.0], "regression", confidence=1.5)
    with pytest.raises(ConfigError):
        evaluate([1.0, 2.0], [1.0, 2.0], "regression", task_names=["a", "b"])


# --------------------------------------------------------------------------- evaluate


def test_multitask_ignores_missing_labels_per_task() -> None:
    y, p = _regression_data(40, 1)
    y2, p2 = _regression_data(40, 2)
    Y = np.c_[y, y2]
    Y[::3, 0] = np.nan
    Y[1::4, 1] = np.nan
    e = evaluate(Y, np.c_[p, p2], "regression", n_bootstrap=0, task_names=["sol", "logd"])
    keep0, keep1 = ~np.isnan(Y[:, 0]), ~np.isnan(Y[:, 1])
    assert e.per_task["sol"] == pytest.approx(regression_metrics(y[keep0], p[keep0]))
    assert e.per_task["logd"] == pytest.approx(regression_metrics(y2[keep1], p2[keep1]))
    assert e.metrics["rmse"] == pytest.approx(
        (e.per_task["sol"]["rmse"] + e.per_task["logd"]["rmse"]) / 2
    )
    assert e.n_per_task == {"sol": int(keep0.sum()), "logd": int(keep1.sum())}
    assert e.n == int((keep0 | keep1).sum()) == 37  # rows with no label at all are dropped


def test_multitask_mean_skips_undefined_tasks() -> None:
    y = np.array([[0, 1], [1, 1], [0, 1], [1, np.nan]])
    s = np.array([[0.1, 0.9], [0.9, 0.8], [0.2, 0.3], [0.7, 0.5]])
    e = evaluate(y, s, "classification", n_bootstrap=0)
    assert math.isnan(e.per_task["task_1"]["roc_auc"])
    assert e.metrics["roc_auc"] == pytest.approx(1.0)


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    y, p = _regression_data(300)
    a = evaluate(y, p, "regression", n_bootstrap=500, seed=7)
    b = evaluate(y, p, "regression", n_bootstrap=500, seed=7)
    c = evaluate(y, p, "regression", n_bootstrap=500, seed=8)
    assert a.ci == b.ci
    assert a.ci != c.ci
    for name, (low, high) in a.ci.items():
        assert low <= a.metrics[name] <= high, name


def test_bootstrap_ci_narrows_with_more_data() -> None:
    small = evaluate(*_regression_data(100), "regression", n_bootstrap=300)
    large = evaluate(*_regression_data(2000), "regression", n_bootstrap=300)
    for name in ("rmse", "mae", "r2", "spearman"):
        width_small = small.ci[name][1] - small.ci[name][0]
        width_large = large.ci[name][1] - large.ci[name][0]
        assert width_large < width_small / 2, name


def test_classification_bootstrap_matches_resampled_sklearn() -> None:
    y, s = _classification_data(60)
    e = evaluate(y, s, "classification", n_bootstrap=200, seed=3)
    rows = np.random.default_rng(3).integers(0, 60, size=(200, 60))
    reference = [skm.roc_auc_score(y[r], s[r]) for r in rows if len(set(y[r])) == 2]
    low, high = np.percentile(reference, [2.5, 97.5])
    assert e.ci["roc_auc"] == pytest.approx((low, high))
    assert e.ci["roc_auc"][0] <= e.metrics["roc_auc"] <= e.ci["roc_auc"][1]


def test_regression_bootstrap_matches_resampled_formulas() -> None:
    """Each resample of the vectorized bootstrap scores like sklearn and SciPy on the same
    rows; 1000 resamples of 2500 molecules are scored in two batches (800 + 200). Its speed
    is measured by benchmarks/bootstrap.py, not asserted here."""
    y, p = _regression_data(2500)
    e = evaluate(y, p, "regression", n_bootstrap=1000, seed=5)
    rows = np.random.default_rng(5).integers(0, 2500, size=(1000, 2500))
    reference = {
        "rmse": [math.sqrt(skm.mean_squared_error(y[r], p[r])) for r in rows],
        "mae": [skm.mean_absolute_error(y[r], p[r]) for r in rows],
        "r2": [skm.r2_score(y[r], p[r]) for r in rows],
        "spearman": [spearmanr(y[r], p[r]).statistic for r in rows],
    }
    for name, values in reference.items():
        assert e.ci[name] == pytest.approx(tuple(np.percentile(values, [2.5, 97.5]))), name


def test_to_dict_is_json_serializable() -> None:
    y, s = _classification_data(50)
    e = evaluate(y, s, "classification", n_bootstrap=100, confidence=0.9)
    record = json.loads(json.dumps(e.to_dict(), allow_nan=False))
    assert set(record) >= {"metrics", "ci90", "per_task", "n"}
    assert record["n"] == 50
    assert set(record["ci90"]) == {"roc_auc", "pr_auc", "mcc", "balanced_accuracy"}
    constant = evaluate([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "regression", n_bootstrap=20)
    json.dumps(constant.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


def test_parity_plot_writes_png(tmp_path: Path) -> None:
    y, p = _regression_data(100)
    out = parity_plot(
        y, p, tmp_path / "plots" / "parity.png", lower=p - 0.3, upper=p + 0.3, title="ESOL"
    )
    assert out == tmp_path / "plots" / "parity.png"
    _assert_png(out)
    assert [f.name for f in out.parent.iterdir()] == ["parity.png"]  # no temp files left


def test_parity_plot_multitask_with_missing(tmp_path: Path) -> None:
    y, p = _regression_data(60)
    Y = np.c_[y, y + 1]
    Y[::2, 1] = np.nan
    _assert_png(parity_plot(Y, np.c_[p, p + 1], tmp_path / "mt.png", task_names=["a", "b"]))


def test_roc_plot_writes_png(tmp_path: Path) -> None:
    y, s = _classification_data(100)
    _assert_png(roc_plot(y, s, tmp_path / "roc.png"))
    Y = np.c_[y, np.ones_like(y), y[::-1]]  # the middle task has one class only
    S = np.c_[s, s, s]
    _assert_png(roc_plot(Y, S, tmp_path / "roc_mt.png", title="three tasks"))
