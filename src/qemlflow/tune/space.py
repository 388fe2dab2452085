"""Search spaces: the default one per estimator, and how a point of one becomes a config."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from qemlflow.errors import ConfigError
from qemlflow.pipeline.config import ExperimentConfig, TuneDimension, parse_config

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_SPACES",
    "MAXIMIZED_METRICS",
    "MINIMIZED_METRICS",
    "apply_point",
    "default_space",
    "suggest_point",
]


def _int(low: int, high: int, *, log: bool = False) -> TuneDimension:
    return TuneDimension(type="int", low=low, high=high, log=log)


def _float(low: float, high: float, *, log: bool = False) -> TuneDimension:
    return TuneDimension(type="float", low=low, high=high, log=log)


def _choice(*choices: Any) -> TuneDimension:
    return TuneDimension(type="categorical", choices=list(choices))


_FORESTS = {
    "model.params.n_estimators": _int(100, 500, log=True),
    "model.params.max_features": _float(0.05, 0.8, log=True),
    "model.params.min_samples_leaf": _int(1, 8, log=True),
}

# The default space of each estimator, keyed by task where the two differ. Kept small
# (3-6 dimensions) so that 50 TPE trials explore it; LightGBM's tree count is capped so a
# trial costs no more than a default fit.
DEFAULT_SPACES: dict[str, dict[str, dict[str, TuneDimension]]] = {
    "lightgbm": {
        "any": {
            "model.params.n_estimators": _int(200, 1500, log=True),
            "model.params.learning_rate": _float(0.01, 0.2, log=True),
            "model.params.num_leaves": _int(7, 63, log=True),
            "model.params.min_child_samples": _int(2, 40, log=True),
            "model.params.colsample_bytree": _float(0.1, 0.8),
            "model.params.reg_lambda": _float(1e-3, 10.0, log=True),
        }
    },
    "random_forest": {"any": _FORESTS},
    "extra_trees": {"any": _FORESTS},
    "svm": {
        "regression": {
            "model.params.C": _float(0.1, 100.0, log=True),
            "model.params.epsilon": _float(0.01, 0.5, log=True),
            "model.params.gamma": _float(1e-5, 1e-2, log=True),
        },
        "classification": {
            "model.params.C": _float(0.01, 100.0, log=True),
            "model.params.gamma": _float(1e-5, 1e-2, log=True),
        },
    },
    "knn": {
        "any": {
            "model.params.n_neighbors": _int(1, 30, log=True),
            "model.params.weights": _choice("uniform", "distance"),
        }
    },
    "linear": {
        # RidgeCV picks alpha from its grid by efficient leave-one-out already; the search
        # chooses the grid (one value: plain ridge at that alpha).
        "regression": {
            "model.params.alphas": _choice(
                [0.1], [1.0], [10.0], [100.0], [1000.0], [0.1, 1.0, 10.0, 100.0, 1000.0]
            )
        },
        "classification": {"model.params.C": _float(1e-3, 10.0, log=True)},
    },
    "dmpnn": {
        "any": {
            "model.params.depth": _int(2, 6),
            "model.params.hidden_size": _int(100, 600, log=True),
            "model.params.dropout": _float(0.0, 0.4),
            "model.params.epochs": _int(20, 80, log=True),
        }
    },
}

# The metrics of qemlflow.evaluation, by their better side.
MINIMIZED_METRICS = frozenset({"rmse", "mae"})
MAXIMIZED_METRICS = frozenset({"r2", "spearman", "roc_auc", "pr_auc", "mcc", "balanced_accuracy"})
DEFAULT_METRICS = {"regression": "rmse", "classification": "roc_auc"}


def default_space(estimator: str, task: str) -> dict[str, TuneDimension]:
    """The documented search space of ``estimator`` for ``task``.

    Examples
    --------
    >>> sorted(default_space("knn", "regression"))
    ['model.params.n_neighbors', 'model.params.weights']
    """
    spaces = DEFAULT_SPACES.get(estimator)
    if spaces is None:
        raise ConfigError(
            f"no default search space for estimator {estimator!r}",
            "declare one under tune.space in the experiment file",
        )
    return dict(spaces.get(task, spaces.get("any", {})))


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def suggest_point(trial: optuna.Trial, space: dict[str, TuneDimension]) -> dict[str, Any]:
    """Draw one point of ``space`` through ``trial``: path -> config value.

    Categorical choices that are not plain values (lists, feature specs) are drawn by
    their position in ``choices``, which Optuna can store.
    """
    point: dict[str, Any] = {}
    for path, dim in space.items():
        if dim.type == "int":
            assert dim.low is not None and dim.high is not None  # checked by TuneDimension
            point[path] = trial.suggest_int(path, int(dim.low), int(dim.high), log=dim.log)
        elif dim.type == "float":
            assert dim.low is not None and dim.high is not None
            point[path] = trial.suggest_float(path, dim.low, dim.high, log=dim.log)
        else:
            choices = list(dim.choices or [])
            if all(_is_plain(c) for c in choices):
                point[path] = trial.suggest_categorical(path, choices)
            else:
                index = trial.suggest_categorical(path, list(range(len(choices))))
                point[path] = copy.deepcopy(choices[int(index)])
    return point


def apply_point(
    cfg: ExperimentConfig, point: dict[str, Any], *, tune: dict[str, Any] | None
) -> ExperimentConfig:
    """``cfg`` with every dotted path of ``point`` set, and its ``tune`` section replaced.

    Raises
    ------
    ConfigError
        A path leads nowhere (``modle.params.x``) or a value is refused by the config.
    """
    data = cfg.resolved()
    data.pop("tune", None)
    for path, value in point.items():
        parts = path.split(".")
        node: Any = data
        for part in parts[:-1]:
            if not isinstance(node, dict) or not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"tune.space path {path!r} does not lead into the config",
                    "use dotted paths of the experiment such as model.params.num_leaves "
                    "or features",
                )
            node = node[part]
        node[parts[-1]] = copy.deepcopy(value)
    if tune is not None:
        data["tune"] = tune
    return parse_config(data, source=f"the tuning point {json.dumps(point, default=str)}")
