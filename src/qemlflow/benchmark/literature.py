"""Published MoleculeNet results, read from ``literature.yaml`` with their citations."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = [
    "LiteratureValue",
    "best_published",
    "literature_sources",
    "literature_values",
    "reference_value",
]


@dataclass(frozen=True)
class LiteratureValue:
    """One published number: which paper, model, split and metric, and where it is printed.

    ``value`` is ``None`` where no exact number could be found; ``checked`` says whether it
    was compared with the paper's text when it was entered.
    """

    dataset: str
    source: str
    model: str
    metric: str
    split: str
    value: float | None
    sd: float | None
    where: str
    checked: bool
    reference_for: str | None


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("qemlflow.benchmark").joinpath("literature.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def literature_sources() -> dict[str, dict[str, str]]:
    """Each source key with its full citation and a note on what was taken from it.

    Examples
    --------
    >>> "Chem. Sci. 9" in literature_sources()["moleculenet"]["citation"]
    True
    """
    return {key: dict(value) for key, value in _load()["sources"].items()}


def literature_values(dataset: str, split: str | None = None) -> list[LiteratureValue]:
    """The published values for ``dataset`` (on ``split`` only, when given).

    An empty list when there are none.

    Examples
    --------
    >>> [(v.source, v.value) for v in literature_values("bbbp", "scaffold_deepchem")]
    [('moleculenet', 0.729), ('chemprop_readme', 0.737)]
    """
    rows = [
        row
        for row in _load()["values"].get(dataset, [])
        if split is None or str(row["split"]) == split
    ]
    return [
        LiteratureValue(
            dataset=dataset,
            source=str(row["source"]),
            model=str(row["model"]),
            metric=str(row["metric"]),
            split=str(row["split"]),
            value=None if row.get("value") is None else float(row["value"]),
            sd=None if row.get("sd") is None else float(row["sd"]),
            where=str(row["where"]),
            checked=bool(row.get("checked", False)),
            reference_for=row.get("reference_for"),
        )
        for row in rows
    ]


def reference_value(dataset: str, family: str, split: str | None = None) -> LiteratureValue | None:
    """The literature row a model of ``family`` (classical, dmpnn) is judged against.

    With ``split``, only a row measured on that split: a number from another split is no
    reference (DeepChem's scaffold split is far harder than the balanced one).
    """
    for row in literature_values(dataset, split):
        if row.reference_for == family:
            return row
    return None


def best_published(dataset: str, split: str, metric: str) -> LiteratureValue | None:
    """The best published value on ``dataset`` and ``split`` (None when there is none).

    Examples
    --------
    >>> best_published("bbbp", "scaffold_deepchem", "roc_auc").value
    0.737
    >>> best_published("bbbp", "scaffold", "roc_auc") is None
    True
    """
    rows = [r for r in literature_values(dataset, split) if r.value is not None]
    rows = [r for r in rows if r.metric == metric]
    if not rows:
        return None
    sign = 1.0 if metric == "rmse" else -1.0  # lower RMSE is better, higher ROC-AUC
    return min(rows, key=lambda r: sign * float(r.value or 0.0))
