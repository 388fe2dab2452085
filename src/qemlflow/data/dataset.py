"""The Dataset: unique standardized molecules, their labels, and the fate of every input row."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from qemlflow.errors import DataError

__all__ = ["ROW_COLUMNS", "ROW_STATUSES", "Dataset"]

#: Columns of ``Dataset.rows``.
ROW_COLUMNS = ("row", "input_smiles", "status", "mol_index", "reason", "detail")
#: Values of ``Dataset.rows["status"]``.
ROW_STATUSES = ("ok", "merged", "rejected")


@dataclass
class Dataset:
    """Unique standardized molecules with labels, and an account of every input row.

    ``smiles[i]`` has labels ``y[i]`` (one column per task, NaN = missing). ``rows`` has
    one line per input row: ``ok`` rows made a molecule, ``merged`` rows were duplicates
    folded into molecule ``mol_index``, ``rejected`` rows say why in ``reason``/``detail``.
    ``table`` is the input table (used by :meth:`write_rejected`).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rows = pd.DataFrame({"row": [0, 1], "input_smiles": ["CCO", "C1CC"],
    ...     "status": ["ok", "rejected"], "mol_index": [0, -1],
    ...     "reason": ["", "unparsable"], "detail": ["", "cannot parse SMILES 'C1CC'"]})
    >>> ds = Dataset(name="demo", smiles=["CCO"], y=np.array([[0.5]]), target_names=["logS"],
    ...     task="regression", rows=rows, source="demo.csv", smiles_column="smiles")
    >>> len(ds), ds.n_tasks, ds.summary()["rejected_by_reason"]
    (1, 1, {'unparsable': 1})
    """

    name: str
    smiles: list[str]
    y: np.ndarray[Any, np.dtype[np.float64]]
    target_names: list[str]
    task: Literal["regression", "classification"]
    rows: pd.DataFrame
    source: str
    smiles_column: str
    source_digest: str = ""
    table: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.float64)
        if self.y.ndim == 1:
            self.y = self.y.reshape(-1, 1)
        expected = (len(self.smiles), len(self.target_names))
        if self.y.shape != expected:
            raise DataError(
                f"labels have shape {self.y.shape} but the dataset has {expected[0]} "
                f"molecules and {expected[1]} targets",
                "give one row of labels per molecule and one column per target",
            )

    @property
    def n_tasks(self) -> int:
        """Number of target columns."""
        return len(self.target_names)

    @property
    def rejected(self) -> pd.DataFrame:
        """The input rows that were rejected, with their reason and detail."""
        return self.rows[self.rows["status"] == "rejected"]

    @property
    def reported(self) -> pd.DataFrame:
        """The rows ``rejected.csv`` lists: rejected rows, and merged duplicates (with a
        reason: ``merged_duplicate`` or ``label_conflict``)."""
        status = self.rows["status"]
        merged = (status == "merged") & (self.rows["reason"] != "")
        return self.rows[(status == "rejected") | merged]

    def __len__(self) -> int:
        return len(self.smiles)

    def duplicates(self) -> dict[str, int]:
        """Count duplicate merges and label conflicts (also listed in ``write_rejected``).

        ``groups``: molecules made from two or more input rows; ``rows_merged``: the
        later copies folded into them; ``label_conflicts``: groups whose copies disagree
        on a label, resolved (by mean, vote or first copy; a tie set missing) or rejected;
        ``conflicts_rejected``: those of them whose rows were all rejected as
        ``conflicting_duplicate``.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> rows = pd.DataFrame({"row": [0, 1, 2], "input_smiles": ["CCO", "OCC", "CCN"],
        ...     "status": ["ok", "merged", "ok"], "mol_index": [0, 0, 1],
        ...     "reason": ["", "label_conflict", ""], "detail": ""})
        >>> ds = Dataset(name="d", smiles=["CCO", "CCN"], y=np.array([[0.0], [1.0]]),
        ...     target_names=["t"], task="classification", rows=rows, source="d.csv",
        ...     smiles_column="smiles")
        >>> ds.duplicates()
        {'groups': 1, 'rows_merged': 1, 'label_conflicts': 1, 'conflicts_rejected': 0}
        """
        merged = self.rows[self.rows["status"] == "merged"]
        conflicting = merged[merged["reason"] == "label_conflict"]
        # Rows rejected together share one detail (their standardized SMILES and values).
        dropped = self.rejected[self.rejected["reason"] == "conflicting_duplicate"]
        rejected_groups = int(dropped["detail"].nunique())
        return {
            "groups": int(merged["mol_index"].nunique()) + rejected_groups,
            "rows_merged": len(merged),
            "label_conflicts": int(conflicting["mol_index"].nunique()) + rejected_groups,
            "conflicts_rejected": rejected_groups,
        }

    def summary(self) -> dict[str, Any]:
        """Return counts: rows, molecules, ok, merged, rejected (total and by reason).

        ``ok + merged + rejected == rows`` always holds.
        """
        status = self.rows["status"]
        by_reason = self.rejected["reason"].value_counts()
        return {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "n_tasks": self.n_tasks,
            "rows": len(self.rows),
            "molecules": len(self),
            "ok": int((status == "ok").sum()),
            "merged": int((status == "merged").sum()),
            "rejected": int((status == "rejected").sum()),
            "rejected_by_reason": {str(k): int(v) for k, v in sorted(by_reason.items())},
            "duplicates": self.duplicates(),
        }

    def write_rejected(self, path: str | os.PathLike[str]) -> Path:
        """Write the rejected rows to CSV: row, input_smiles, reason, detail, then the input.

        Merged duplicates are listed too (reason ``merged_duplicate`` or ``label_conflict``,
        the detail naming the row they were merged into), so that every row that did not
        become a molecule of its own is accounted for. The input table's columns follow; a
        name that clashes gets the suffix ``_input``. Returns the path written.
        """
        rejected = self.reported
        report = rejected[["row", "input_smiles", "reason", "detail"]].reset_index(drop=True)
        if self.table is not None:
            original = self.table.iloc[rejected["row"].to_numpy()].reset_index(drop=True)
            original.columns = [
                f"{c}_input" if c in report.columns else str(c) for c in original.columns
            ]
            report = pd.concat([report, original], axis=1)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        report.to_csv(out, index=False)
        return out

    def subset(self, indices: Sequence[int] | np.ndarray[Any, Any]) -> Dataset:
        """Return a Dataset of the molecules at ``indices`` (in that order).

        ``rows`` keeps the input rows of those molecules (``ok`` and ``merged``) in input
        order, with ``mol_index`` renumbered; rejected rows are left out.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> rows = pd.DataFrame({"row": [0, 1], "input_smiles": ["C", "CC"],
        ...     "status": ["ok", "ok"], "mol_index": [0, 1], "reason": "", "detail": ""})
        >>> ds = Dataset(name="d", smiles=["C", "CC"], y=np.array([[1.0], [2.0]]),
        ...     target_names=["t"], task="regression", rows=rows, source="d.csv",
        ...     smiles_column="smiles")
        >>> sub = ds.subset([1])
        >>> sub.smiles, sub.y.tolist(), sub.rows["mol_index"].tolist()
        (['CC'], [[2.0]], [0])
        """
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if index.size and (index.min() < -n or index.max() >= n):
            raise DataError(
                f"subset index out of range for a dataset of {n} molecules",
                f"use indices from 0 to {n - 1}",
            )
        index = np.where(index < 0, index + n, index)
        if len(np.unique(index)) != len(index):
            raise DataError("subset indices repeat a molecule", "give each index at most once")
        new_index = np.full(n, -1, dtype=np.int64)
        new_index[index] = np.arange(len(index))
        mol = self.rows["mol_index"].to_numpy(dtype=np.int64)
        keep = mol >= 0
        keep[keep] = new_index[mol[keep]] >= 0
        rows = self.rows[keep].copy()
        rows["mol_index"] = new_index[mol[keep]]
        rows = rows.reset_index(drop=True)
        return Dataset(
            name=self.name,
            smiles=[self.smiles[i] for i in index],
            y=self.y[index],
            target_names=list(self.target_names),
            task=self.task,
            rows=rows,
            source=self.source,
            smiles_column=self.smiles_column,
            source_digest=self.source_digest,
            table=self.table,
        )
