"""Published MoleculeNet results, read from ``literature.yaml`` with their citations."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["LiteratureValue", "literature_sources", "literature_values", "reference_value"]


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


def literature_values(dataset: str) -> list[LiteratureValue]:
    """The published values for ``dataset`` (an empty list when there are none).

    Examples
    --------
    >>> [(v.source, v.value) for v in literature_values("bbbp")]
    [('moleculenet', 0.729), ('chemprop_readme', 0.737)]
    """
    rows = _load()["values"].get(dataset, [])
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


def reference_value(dataset: str, family: str) -> LiteratureValue | None:
    """The literature row a model of ``family`` (classical, dmpnn) is judged against."""
    for row in literature_values(dataset):
        if row.reference_for == family:
            return row
    return None
