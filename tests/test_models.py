"""Tests for qemlflow.models: estimators, conformal intervals, calibration, Tanimoto kNN."""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from qemlflow.errors import ConfigError, DataError
from qemlflow.models import (
    ESTIMATORS,
    MolecularModel,
    TanimotoKNN,
    conformal_quantile,
    make_model,
    tanimoto_similarity,
)

# Small models keep the suite fast; defaults are exercised by describe() and one fit.
FAST: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 30},
    "extra_trees": {"n_estimators": 30},
    "lightgbm": {"n_estimators": 60, "learning_rate": 0.1},
    "knn": {},
    "svm": {},
    "linear": {},
    "ensemble": {"members": [{"estimator": "linear"}, {"estimator": "knn"}]},
}


def regression_data(
    n: int, d: int = 12, seed: int = 0, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    y = 2.0 * X[:, 0] - 1.5 * X[:, 1] + X[:, 2] * X[:, 3] + rng.normal(0, noise, n)
    return X, y


def logistic_data(n: int, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    logit = 4.0 * (X[:, 0] - 0.5) + 3.0 * (X[:, 1] - 0.5)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return X, y


def with_nan(X: np.ndarray, seed: int = 1, rate: float = 0.05) -> np.ndarray:
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    return X


# --------------------------------------------------------------------- each estimator
@pytest.mark.parametrize("name", sorted(n for n, s in ESTIMATORS.items() if s.reads == "features"))
def test_every_estimator_regresses_with_nan_features(name: str) -> None:
    X, y = regression_data(150)
    X = with_nan(X)
    model = MolecularModel(name, params=FAST[name]).fit(X[:120], y[:120])
    pred = model.predict(X[120:])
    lower, upper = model.predict_interval(X[120:])
    assert pred.shape == lower.shape == upper.shape == (30,)
    assert np.all(np.isfinite(pred))
    assert np.all(lower <= pred) and np.all(pred <= upper)
    assert model.n_tasks_ == 1 and model.n_features_in_ == 12
    assert not hasattr(model, "predict_proba")


@pytest.mark.parametrize("name", sorted(n for n, s in ESTIMATORS.items() if s.reads == "features"))
def test_every_estimator_classifies_with_nan_features(name: str) -> None:
    X, y = logistic_data(200)
    X = with_nan(X)
    model = MolecularModel(name, task="classification", params=FAST[name]).fit(X[:160], y[:160])
    proba = model.predict_positive(X[160:])
    labels = model.predict(X[160:])
    assert proba.shape == labels.shape == (40,)
    both = model.predict_proba(X[160:])  # scikit-learn's shape: a column per class
    assert both.shape == (40, 2)
    np.testing.assert_array_equal(both[:, 1], proba)
    np.testing.assert_allclose(both.sum(axis=1), 1.0)
    assert np.all((proba >= 0) & (proba <= 1))
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (proba >= 0.5).astype(int))
    np.testing.assert_array_equal(model.classes_, [0, 1])
    assert model.calibration_methods_ == ["sigmoid"]
    assert not hasattr(model, "predict_interval")


# --------------------------------------------------------------------- conformal
def test_conformal_quantile_rule() -> None:
    r = np.arange(1, 20) / 10  # 19 residuals
    assert conformal_quantile(r, 0.9) == pytest.approx(1.8)  # ceil(20 * 0.9) = 18th
    assert conformal_quantile(r, 0.95) == pytest.approx(1.9)
    assert conformal_quantile(r, 0.96) == np.inf  # ceil(20 * 0.96) = 20 > 19
    assert conformal_quantile([], 0.5) == np.inf


@pytest.mark.parametrize("use_cal_set", [True, False])
def test_intervals_cover_held_out_points(use_cal_set: bool) -> None:
    X, y = regression_data(1400, seed=3)
    train, cal, test = slice(0, 300), slice(300, 600), slice(600, 1400)
    model = MolecularModel("linear", coverage=0.9)
    if use_cal_set:
        model.fit(X[train], y[train], X[cal], y[cal])
        assert model.n_calibration_per_task_ == [300]
    else:
        model.fit(X[train], y[train])
        assert model.n_calibration_per_task_ == [300]  # out-of-fold residuals
    lower, upper = model.predict_interval(X[test])
    covered = np.mean((lower <= y[test]) & (y[test] <= upper))
    assert 0.85 <= covered <= 0.95


def test_small_calibration_set_switches_to_cv_plus() -> None:
    X, y = regression_data(60)
    model = MolecularModel("linear", coverage=0.95).fit(X[:50], y[:50], X[50:55], y[50:55])
    lower, upper = model.predict_interval(X[55:])
    assert np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))
    assert model.interval_methods_ == ["cv_plus"]
    assert model.n_calibration_per_task_ == [55]  # out-of-fold over train + calibration
    assert model.describe()["interval_methods"] == ["cv_plus"]
    assert len(model.cv_plus_[0].models) == 5  # the fold models, kept for prediction


def test_cv_plus_interval_is_the_papers_quantile() -> None:
    # Barber et al. (2021): lower = floor(alpha (n+1))-th smallest of mu_k(i)(x) - R_i,
    # upper = ceil((1-alpha)(n+1))-th smallest of mu_k(i)(x) + R_i; written out by hand.
    from qemlflow.models.conformal import cv_plus_interval

    rng = np.random.default_rng(0)
    n, k, alpha = 37, 5, 0.1
    residuals = rng.exponential(size=n)
    fold_of = rng.integers(0, k, size=n)
    fold_predictions = rng.normal(size=(6, k))
    lower, upper = cv_plus_interval(fold_predictions, residuals, fold_of, 1 - alpha)
    for row in range(6):
        mu = fold_predictions[row, fold_of]
        low = np.sort(mu - residuals)[int(np.floor(alpha * (n + 1))) - 1]
        high = np.sort(mu + residuals)[int(np.ceil((1 - alpha) * (n + 1))) - 1]
        assert lower[row] == pytest.approx(low) and upper[row] == pytest.approx(high)


def test_too_few_residuals_for_coverage_give_the_largest_one() -> None:
    X, y = regression_data(12)
    with pytest.warns(UserWarning, match="largest residual"):
        model = MolecularModel("linear", coverage=0.95).fit(X, y)
    assert model.interval_methods_ == ["cv_plus_max_residual"]
    assert np.isfinite(model.conformal_quantiles_[0]) and model.conformal_quantiles_[0] > 0


def test_large_calibration_set_stays_split_conformal() -> None:
    X, y = regression_data(200)
    model = MolecularModel("linear").fit(X[:100], y[:100], X[100:150], y[100:150])
    assert model.interval_methods_ == ["split_conformal"]
    assert model.n_calibration_per_task_ == [50]


# --------------------------------------------------------------------- calibration
def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.minimum((p * bins).astype(int), bins - 1)
    return float(
        sum(
            abs(p[edges == b].mean() - y[edges == b].mean()) * np.mean(edges == b)
            for b in range(bins)
            if np.any(edges == b)
        )
    )


def test_calibrated_probabilities_beat_uncalibrated_boosting() -> None:
    X, y = logistic_data(4000, seed=5)
    train, test = slice(0, 1500), slice(1500, 4000)
    params = {"n_estimators": 300, "learning_rate": 0.1}
    raw = MolecularModel("lightgbm", "classification", params=params, calibration="none")
    cal = MolecularModel("lightgbm", "classification", params=params)
    p_raw = raw.fit(X[train], y[train]).predict_positive(X[test])
    p_cal = cal.fit(X[train], y[train]).predict_positive(X[test])
    assert cal.calibration_methods_ == ["isotonic"]  # auto: >= 1000 calibration points
    brier_raw = np.mean((p_raw - y[test]) ** 2)
    brier_cal = np.mean((p_cal - y[test]) ** 2)
    assert brier_cal < brier_raw
    assert _ece(p_cal, y[test]) < 0.05


@pytest.mark.parametrize("use_cal_set", [True, False])
def test_isotonic_calibration_costs_no_ranking_quality(use_cal_set: bool) -> None:
    from scipy.stats import rankdata
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import average_precision_score, roc_auc_score

    X, y = logistic_data(4000, seed=7)
    params = {"n_estimators": 100, "learning_rate": 0.1}
    model = MolecularModel("lightgbm", "classification", params=params)
    if use_cal_set:  # 1500 calibration points: auto picks isotonic
        model.fit(X[:1500], y[:1500], X[1500:3000], y[1500:3000])
        assert model.calibration_source_ == "calibration_set"
    else:  # 3000 out-of-fold points
        model.fit(X[:3000], y[:3000])
        assert model.calibration_source_ == "cross_validation"
    assert model.calibration_methods_ == ["isotonic"]
    test, truth = X[3000:], y[3000:]
    calibrated = model.predict_positive(test)
    raw = model.base_estimators_[0].predict_proba(test)[:, 1]
    # Tie-free: the calibrated probabilities rank exactly as the model's own scores.
    np.testing.assert_array_equal(rankdata(calibrated), rankdata(raw))
    assert len(np.unique(calibrated)) >= len(np.unique(raw))
    assert abs(roc_auc_score(truth, calibrated) - roc_auc_score(truth, raw)) <= 1e-12
    assert (
        abs(average_precision_score(truth, calibrated) - average_precision_score(truth, raw))
        <= 1e-12
    )
    # A plain isotonic step function would have collapsed the scores into a few values.
    steps = IsotonicRegression(out_of_bounds="clip").fit(
        model.base_estimators_[0].predict_proba(X[1500:3000])[:, 1], y[1500:3000]
    )
    assert len(np.unique(steps.predict(raw))) < len(np.unique(raw)) / 10
    # ...and the tie-free map is still calibrated.
    assert _ece(calibrated, truth) < 0.05


def test_calibration_set_is_used_for_classification() -> None:
    X, y = logistic_data(900, seed=2)
    model = MolecularModel("random_forest", "classification", params=FAST["random_forest"])
    model.fit(X[:400], y[:400], X[400:700], y[400:700])
    assert model.calibration_methods_ == ["sigmoid"]
    assert model.n_calibration_per_task_ == [300]
    assert model.calibration_source_ == "calibration_set"
    p = model.predict_positive(X[700:])
    assert _ece(p, y[700:]) < 0.12


def test_explicit_calibration_and_svm_without_probabilities() -> None:
    X, y = logistic_data(200)
    model = MolecularModel("linear", "classification", calibration="isotonic").fit(X, y)
    assert model.calibration_methods_ == ["isotonic"]
    with pytest.raises(ConfigError, match="calibration='auto'"):
        MolecularModel("svm", "classification", calibration="none").fit(X, y)


# --------------------------------------------------------------------- multi-task
def test_multitask_uses_every_labelled_row_per_task() -> None:
    X, y = regression_data(200)
    rng = np.random.default_rng(4)
    Y = np.column_stack([y, -y, y**2])
    Y[rng.random(Y.shape) < np.array([0.1, 0.5, 0.3])] = np.nan
    model = MolecularModel("knn").fit(X, Y)
    expected = (~np.isnan(Y)).sum(axis=0).tolist()
    assert model.n_train_per_task_ == expected
    # the fitted kNN of each task holds exactly that task's labelled rows
    assert [m[-1].X_fit_.shape[0] for m in model.estimators_] == expected
    assert model.predict(X[:7]).shape == (7, 3)
    lower, upper = model.predict_interval(X[:7])
    assert lower.shape == upper.shape == (7, 3)
    assert model.conformal_quantiles_.shape == (3,)


def test_multitask_classification_with_single_class_task() -> None:
    X, y = logistic_data(200)
    Y = np.column_stack([y, np.zeros(200), np.where(np.arange(200) % 3 == 0, np.nan, y)])
    with pytest.warns(UserWarning, match="every training label is 0"):
        model = MolecularModel("linear", "classification").fit(X, Y)
    proba = model.predict_positive(X[:10])
    assert proba.shape == (10, 3)
    # Not modelled: the smoothed prior (0 + 0.5) / (200 + 1), never a confident 0.
    np.testing.assert_array_equal(proba[:, 1], 0.5 / 201)
    assert model.tasks_not_modelled_ == {
        1: "every training label is 0 (200 negatives, no positives)"
    }
    # predict_proba: one (n, 2) array per task, as scikit-learn's multi-output classifiers
    per_task = model.predict_proba(X[:10])
    assert isinstance(per_task, list) and [p.shape for p in per_task] == [(10, 2)] * 3
    for t, p in enumerate(per_task):
        np.testing.assert_array_equal(p[:, 1], proba[:, t])
        np.testing.assert_array_equal(p[:, 0], 1.0 - proba[:, t])
    assert model.n_train_per_task_ == [200, 200, int(np.sum(np.arange(200) % 3 != 0))]
    assert model.calibration_methods_ == ["sigmoid", "none", "sigmoid"]


def test_two_dimensional_single_task_keeps_its_shape() -> None:
    X, y = regression_data(80)
    model = MolecularModel("linear").fit(X, y[:, None])
    assert model.predict(X[:4]).shape == (4, 1)


# --------------------------------------------------------------------- Tanimoto kNN
def _brute_similarity(a: np.ndarray, b: np.ndarray) -> float:
    top = sum(min(x, z) for x, z in zip(a, b, strict=True))
    bottom = sum(max(x, z) for x, z in zip(a, b, strict=True))
    return 1.0 if bottom == 0 else top / bottom


@pytest.mark.parametrize("kind", ["binary", "counts"])
def test_tanimoto_knn_matches_brute_force(kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "binary":
        X = (rng.random((60, 32)) < 0.3).astype(np.uint8)
    else:
        X = rng.poisson(0.7, (60, 32)).astype(float) + rng.random((60, 32)) * 0.01
    y = rng.normal(size=60)
    train, query = X[:45], X[45:]
    sim = tanimoto_similarity(query, train, chunk_size=4)
    brute = np.array([[_brute_similarity(q, t) for t in train] for q in query])
    np.testing.assert_allclose(sim, brute, atol=1e-12)

    knn = TanimotoKNN(n_neighbors=4, chunk_size=7).fit(train, y[:45])
    expected = []
    for row in brute:
        order = np.argsort(-row, kind="stable")[:4]
        d = 1.0 - row[order]
        w = (d == 0).astype(float) if np.any(d == 0) else 1.0 / d
        expected.append(np.sum(w * y[:45][order]) / np.sum(w))
    if kind == "counts":  # no ties, so the neighbour sets are unambiguous
        np.testing.assert_allclose(knn.predict(query), expected, atol=1e-12)
    # a training row is its own exact match
    np.testing.assert_allclose(knn.predict(train[:5]), y[:5], atol=1e-12)


def test_tanimoto_knn_classifier_and_errors() -> None:
    X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 1, 1, 1]])
    clf = TanimotoKNN(n_neighbors=3, task="classification", weights="uniform").fit(
        X, ["a", "a", "b", "b"]
    )
    np.testing.assert_allclose(clf.predict_proba(X[:1]).sum(axis=1), 1.0)
    assert clf.predict(X[:1])[0] == "a"
    assert tanimoto_similarity(np.zeros((1, 4)), np.zeros((1, 4)))[0, 0] == 1.0
    with pytest.raises(DataError, match="non-negative"):
        TanimotoKNN().fit(-X, [0, 1, 2, 3])
    with pytest.raises(ConfigError, match="n_neighbors"):
        TanimotoKNN(n_neighbors=0).fit(X, [0, 1, 2, 3])
    assert not hasattr(TanimotoKNN(), "predict_proba")


# --------------------------------------------------------------------- persistence
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_pickle_round_trip_and_determinism(task: str, tmp_path: Any) -> None:
    X, y = (regression_data if task == "regression" else logistic_data)(200)
    X = with_nan(X)
    params = {"n_estimators": 80}
    # n_jobs=1: with 2 cores, LightGBM's OpenMP threads can stall behind scikit-learn's.
    first = MolecularModel("lightgbm", task, params=params).fit(X[:150], y[:150])
    second = MolecularModel("lightgbm", task, params=params).fit(X[:150], y[:150])
    out = first.predict(X[150:]) if task == "regression" else first.predict_positive(X[150:])
    again = second.predict(X[150:]) if task == "regression" else second.predict_positive(X[150:])
    np.testing.assert_array_equal(out, again)

    path = tmp_path / "model.joblib"
    joblib.dump(first, path)
    loaded = joblib.load(path)
    reloaded = loaded.predict(X[150:]) if task == "regression" else loaded.predict_positive(X[150:])
    np.testing.assert_array_equal(out, reloaded)
    assert loaded.describe() == first.describe()


@pytest.mark.parametrize("name", sorted(n for n, s in ESTIMATORS.items() if s.reads == "features"))
def test_every_estimator_writes_a_canonical_model_file(name: str) -> None:
    # The model file is the canonical pickle (pipeline/predictor.py). SVMs hold several
    # empty arrays, whose out-of-band buffers once tripped the pure-Python pickler's memo.
    import pickle

    from qemlflow.pipeline.predictor import _CanonicalPickler

    X, y = regression_data(60)
    params = {"n_estimators": 5} if name in ("random_forest", "extra_trees", "lightgbm") else {}
    params = FAST["ensemble"] if name == "ensemble" else params
    model = MolecularModel(name, "regression", params=params).fit(X[:45], y[:45])

    def dump() -> bytes:
        buffer = io.BytesIO()
        _CanonicalPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(model)
        return buffer.getvalue()

    data = dump()
    assert dump() == data
    np.testing.assert_array_equal(pickle.loads(data).predict(X[45:]), model.predict(X[45:]))


def test_random_forest_is_deterministic() -> None:
    X, y = regression_data(120)
    a = MolecularModel("random_forest", params={"n_estimators": 20}, n_jobs=2).fit(X, y)
    b = MolecularModel("random_forest", params={"n_estimators": 20}, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.conformal_quantiles_, b.conformal_quantiles_)


def test_clone_and_params_follow_the_sklearn_contract() -> None:
    X, y = regression_data(60)
    model = MolecularModel("extra_trees", params={"n_estimators": 10}, random_state=3)
    assert "estimators_" not in vars(model)
    fitted = model.fit(X, y)
    assert fitted is model
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "estimators_")
    with pytest.raises(NotFittedError):
        copy.predict(X)
    assert model.params == {"n_estimators": 10}  # stored unchanged


# --------------------------------------------------------------------- errors
def test_config_errors_name_the_problem() -> None:
    X, y = regression_data(40)
    with pytest.raises(
        ConfigError, match="choose one of: dmpnn, ensemble, extra_trees, knn, lightgbm"
    ):
        MolecularModel("xgboost").fit(X, y)
    with pytest.raises(ConfigError, match="'n_trees'"):
        MolecularModel("random_forest", params={"n_trees": 5}).fit(X, y)
    with pytest.raises(ConfigError, match="'random_state'"):
        make_model("lightgbm", "regression", params={"random_state": 1})
    with pytest.raises(ConfigError, match="n_estimators"):
        MolecularModel("random_forest", params={"n_estimators": -1}).fit(X, y)
    with pytest.raises(ConfigError, match="unknown task"):
        MolecularModel("linear", task="ranking").fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="coverage"):
        MolecularModel("linear", coverage=90).fit(X, y)
    with pytest.raises(ConfigError, match="calibration"):
        MolecularModel("linear", calibration="platt").fit(X, y)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="X_cal and y_cal"):
        MolecularModel("linear").fit(X, y, X_cal=X)
    # native LightGBM parameter names are accepted
    make_model("lightgbm", "regression", params={"feature_fraction_bynode": 0.5, "max_bin": 63})


def test_data_errors() -> None:
    X, y = logistic_data(60)
    with pytest.raises(DataError, match="other than 0 and 1"):
        MolecularModel("linear", "classification").fit(X, y + 1)
    model = MolecularModel("linear").fit(X, y.astype(float))
    with pytest.raises(DataError, match="features"):
        model.predict(X[:, :3])
    with pytest.raises(DataError, match="infinity"):
        MolecularModel("linear").fit(np.where(X > 0.99, np.inf, X), y)
    # A task without a label is not modelled (a sparse multitask set has such tasks in
    # some folds), and says so: never a crash.
    with pytest.warns(UserWarning, match="not modelled"):
        sparse = MolecularModel("linear", "classification").fit(
            X, np.column_stack([y, np.full(60, np.nan)])
        )
    assert sparse.tasks_not_modelled_ == {1: "no training labels (0 in the calibration part)"}
    np.testing.assert_array_equal(sparse.predict_positive(X[:3])[:, 1], 0.5)


# --------------------------------------------------------------------- reporting
def test_describe_is_json_and_records_the_run() -> None:
    X, y = regression_data(80)
    model = MolecularModel("random_forest", params={"n_estimators": 15}).fit(X, y)
    record = json.loads(json.dumps(model.describe(), allow_nan=False))
    assert record["estimator"] == "random_forest"
    assert record["params"]["n_estimators"] == 15
    assert record["params"]["max_features"] == 0.33
    assert record["params"]["random_state"] == 0
    assert record["coverage"] == 0.9
    assert len(record["conformal_quantiles"]) == 1
    assert set(record["versions"]) >= {"scikit-learn", "lightgbm", "numpy"}
    unfitted = MolecularModel("lightgbm").describe()
    assert unfitted["params"]["n_estimators"] == 1500 and unfitted["params"]["verbose"] == -1


def test_feature_importances() -> None:
    X, y = logistic_data(150)
    Y = np.column_stack([y, 1 - y])
    model = MolecularModel("extra_trees", "classification", params={"n_estimators": 20})
    importances = model.fit(X, Y).feature_importances_
    assert importances.shape == (8,)
    assert importances.sum() == pytest.approx(1.0)
    assert np.argmax(importances) in (0, 1)
    knn = MolecularModel("knn").fit(X, y.astype(float))
    assert not hasattr(knn, "feature_importances_")


def test_no_warnings_on_a_clean_fit() -> None:
    X, y = regression_data(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MolecularModel("lightgbm", params={"n_estimators": 20}).fit(X, y).predict(X)
        MolecularModel("linear", "classification").fit(X, (y > 0.5).astype(int))


def test_a_calibration_set_that_reverses_the_ranking_is_refused() -> None:
    # Platt scaling fitted on labels that disagree with the model would flip every
    # probability (ClinTox seed 2 went from ROC-AUC 0.95 to 0.05): keep the model's own.
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] > 0).astype(float)
    X_cal = rng.normal(size=(40, 4))
    y_cal = (X_cal[:, 0] <= 0).astype(float)  # deliberately the opposite rule
    model = make_model("linear", "classification", random_state=0)
    with pytest.warns(UserWarning, match="rank the classes opposite"):
        model.fit(X, y, X_cal=X_cal, y_cal=y_cal)
    X_test = rng.normal(size=(200, 4))
    auc = roc_auc_score(X_test[:, 0] > 0, model.predict_positive(X_test))
    assert auc > 0.95
    assert model.calibration_methods_ == ["none"]
