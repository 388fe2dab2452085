"""QeMLflow's estimators keep scikit-learn's contract: its estimator checks, and its tools.

``parametrize_with_checks`` runs scikit-learn's own estimator checks on every estimator
class that ``qemlflow.models`` exposes (the D-MPNN excepted, see below); the tests after
it put the models inside ``Pipeline``, ``GridSearchCV``, ``cross_val_score``,
``CalibratedClassifierCV`` and the stacking ensembles, on real molecules (a subset of the
bundled BBBP and ESOL sets, featurized by ``qemlflow.featurize``).
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import StackingClassifier, StackingRegressor
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

import qemlflow as qm
from qemlflow.errors import ConfigError, DataError, ModelInputError
from qemlflow.features import make_featurizer
from qemlflow.models import DMPNN, MolecularModel, TanimotoKNN

SRC = Path(__file__).resolve().parents[1] / "src" / "qemlflow"

# Small underlying models keep the checks quick; every code path of MolecularModel
# (per-task fit, cross-validated conformal half-widths, cross-validated calibration,
# pipelines with imputation and scaling) is still run.
CHECKED: list[BaseEstimator] = [
    MolecularModel("lightgbm", params={"n_estimators": 50, "learning_rate": 0.2}),
    MolecularModel("lightgbm", task="classification", params={"n_estimators": 20}),
    MolecularModel("random_forest", params={"n_estimators": 10}),
    MolecularModel("linear", task="classification"),
    MolecularModel("knn", task="classification"),
    TanimotoKNN(),
    TanimotoKNN(task="classification"),
]

# Why the D-MPNN is not in CHECKED: it reads SMILES (one string column, the ``smiles``
# featurizer), and scikit-learn's checks feed random numeric matrices, which are no
# molecules; each check would also train a network (torch + chemprop). Its parameters
# still round-trip through get_params/clone below, and test_dmpnn.py covers its fit.

_BINARY_ONLY = (
    "MolecularModel classifies each task as 0/1 (NaN = missing label) and refuses other "
    "labels with a ValueError ('Only binary classification is supported'); this check "
    "fits it on three classes anyway"
)


def expected_failures(estimator: BaseEstimator) -> dict[str, str]:
    """The scikit-learn checks an estimator is known to fail, each with its reason."""
    if isinstance(estimator, MolecularModel) and estimator.task == "classification":
        return {
            # These three checks build a 3-class y whatever the multi_class tag says.
            "check_estimators_dtypes": _BINARY_ONLY,
            "check_classifier_data_not_an_array": _BINARY_ONLY,
            "check_fit2d_1feature": _BINARY_ONLY,
            "check_classifiers_classes": (
                "labels are 0/1 per task, so classes_ is always [0, 1]: string class "
                "labels are refused rather than encoded (a multi-task y mixes missing "
                "labels, NaN, with the classes)"
            ),
        }
    return {}


# xfail_strict: a listed failure that starts passing fails the suite, so the list stays true.
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failures, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator: BaseEstimator, check: Any) -> None:
    with warnings.catch_warnings():
        # Tiny random data: single-class folds and unbounded intervals warn, by design.
        warnings.simplefilter("ignore", UserWarning)
        check(estimator)


def test_expected_failures_are_few() -> None:
    listed = {name for est in CHECKED for name in expected_failures(est)}
    assert len(listed) <= 4


@pytest.mark.parametrize(
    "estimator",
    [
        *CHECKED,
        MolecularModel("svm", task="classification", calibration="sigmoid", coverage=0.8),
        DMPNN(task="classification", epochs=3, hidden_size=64, descriptors="rdkit2d"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_parameters_round_trip_through_clone(estimator: BaseEstimator) -> None:
    params = estimator.get_params()
    copy = clone(estimator)
    assert copy is not estimator and copy.get_params() == params
    assert clone(copy.set_params(**params)).get_params() == params


def test_no_private_scikit_learn_imports() -> None:
    private: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "sklearn" and any(p.startswith("_") for p in parts[1:]):
                    private.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert private == []


# --------------------------------------------------------------------- real molecules
def _first_200_shuffled(name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The first 200 molecules of a bundled set in a seeded random order (in file order
    BBBP's rows 150-200 are far less often positive than its first 150): SMILES, ECFP
    bits and labels."""
    data = qm.load_dataset(name)
    order = np.random.default_rng(0).permutation(200)
    smiles = [data.smiles[i] for i in order]
    return smiles, qm.featurize(smiles, "ecfp"), data.y[order, 0]


@pytest.fixture(scope="module")
def bbbp() -> tuple[list[str], np.ndarray, np.ndarray]:
    """200 BBBP molecules with 0/1 labels."""
    smiles, X, y = _first_200_shuffled("bbbp")
    return smiles, X, y.astype(int)


@pytest.fixture(scope="module")
def esol() -> tuple[list[str], np.ndarray, np.ndarray]:
    """200 ESOL molecules with log-solubilities."""
    return _first_200_shuffled("esol")


def _classifier(**kwargs: Any) -> MolecularModel:
    return MolecularModel("random_forest", "classification", params={"n_estimators": 30}, **kwargs)


def test_predict_proba_is_scikit_learns_shape_and_keeps_the_probability(
    bbbp: tuple[list[str], np.ndarray, np.ndarray],
) -> None:
    _, X, y = bbbp
    model = _classifier().fit(X[:150], y[:150])
    proba = model.predict_proba(X[150:])
    assert proba.shape == (50, 2)
    np.testing.assert_array_equal(model.classes_, [0, 1])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # Column 1 is, bit for bit, the probability QeMLflow reports.
    np.testing.assert_array_equal(proba[:, 1], model.predict_positive(X[150:]))
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X[150:]))


def test_inside_a_pipeline_from_smiles(bbbp: tuple[list[str], np.ndarray, np.ndarray]) -> None:
    smiles, X, y = bbbp
    pipe = Pipeline([("features", make_featurizer("ecfp")), ("model", _classifier())])
    pipe.fit(smiles[:150], y[:150])
    direct = _classifier().fit(X[:150], y[:150])
    np.testing.assert_array_equal(pipe.predict_proba(smiles[150:]), direct.predict_proba(X[150:]))
    assert pipe.classes_.tolist() == [0, 1]


def test_grid_search_scores_by_roc_auc(bbbp: tuple[list[str], np.ndarray, np.ndarray]) -> None:
    _, X, y = bbbp
    search = GridSearchCV(
        MolecularModel(task="classification"),
        {"estimator": ["linear", "knn"]},
        scoring="roc_auc",
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    assert search.best_params_["estimator"] in ("linear", "knn")
    assert 0.5 < search.best_score_ <= 1.0
    assert search.best_estimator_.predict_proba(X[:5]).shape == (5, 2)


def test_cross_val_score_with_probability_scorers(
    bbbp: tuple[list[str], np.ndarray, np.ndarray],
    esol: tuple[list[str], np.ndarray, np.ndarray],
) -> None:
    _, X, y = bbbp
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    auc = cross_val_score(_classifier(), X, y, cv=folds, scoring="roc_auc", error_score="raise")
    loss = cross_val_score(_classifier(), X, y, cv=folds, scoring="neg_log_loss")
    assert np.all((auc > 0.5) & (auc <= 1.0)) and np.all(np.isfinite(loss))
    _, X_r, y_r = esol
    r2 = cross_val_score(
        MolecularModel("lightgbm", params={"n_estimators": 50}),
        X_r,
        y_r,
        cv=KFold(3, shuffle=True, random_state=0),
        scoring="r2",
        error_score="raise",
    )
    assert np.all(r2 > 0.0)


def test_calibrated_classifier_cv_wraps_the_model(
    bbbp: tuple[list[str], np.ndarray, np.ndarray],
) -> None:
    _, X, y = bbbp
    calibrated = CalibratedClassifierCV(_classifier(calibration="none"), cv=3).fit(X[:150], y[:150])
    proba = calibrated.predict_proba(X[150:])
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert roc_auc_score(y[150:], proba[:, 1]) > 0.6


def test_stacking_regressor_and_classifier(
    bbbp: tuple[list[str], np.ndarray, np.ndarray],
    esol: tuple[list[str], np.ndarray, np.ndarray],
) -> None:
    _, X, y = esol
    regressor = StackingRegressor(
        [
            ("lightgbm", MolecularModel("lightgbm", params={"n_estimators": 50})),
            ("knn", TanimotoKNN()),
        ],
        final_estimator=RidgeCV(),
        cv=3,
    ).fit(X[:150], y[:150])
    assert regressor.predict(X[150:]).shape == (50,)
    assert regressor.score(X[150:], y[150:]) > 0.0

    _, X_c, y_c = bbbp
    classifier = StackingClassifier(
        [("forest", _classifier()), ("knn", TanimotoKNN(task="classification"))],
        final_estimator=LogisticRegression(),
        cv=3,
    ).fit(X_c[:150], y_c[:150])
    assert classifier.predict_proba(X_c[150:]).shape == (50, 2)


def test_bad_input_is_a_value_error_and_a_data_error() -> None:
    model = MolecularModel("linear", task="classification")
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        model.fit(np.eye(6), [0, 1, 2, 0, 1, 2])
    with pytest.raises(DataError, match="other than 0 and 1"):
        model.fit(np.eye(6), [0, 1, 2, 0, 1, 2])
    fitted = MolecularModel("linear").fit(np.random.default_rng(0).random((20, 3)), np.arange(20.0))
    with pytest.raises(
        ModelInputError, match="X has 2 features, but MolecularModel is expecting 3"
    ):
        fitted.predict(np.zeros((1, 2)))


def test_a_parameter_scikit_learn_rejects_is_still_a_config_error() -> None:
    # Recognized without importing scikit-learn's private InvalidParameterError.
    X, y = np.random.default_rng(0).random((30, 4)), np.arange(30.0)
    with pytest.raises(ConfigError, match=r"rejected a parameter.*n_estimators"):
        MolecularModel("random_forest", params={"n_estimators": -1}).fit(X, y)
