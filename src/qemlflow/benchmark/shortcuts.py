"""Shortcuts in a benchmark set's raw file: labels that can be read off how SMILES are written.

A published score on a set is measured on its SMILES as written. When the writing itself
carries the label, a model can score well without learning chemistry, and a pipeline that
standardizes its input (neutralizes charges, keeps the parent) loses that signal on
purpose: its score is then not comparable with the published one. ClinTox is the known
case: its approved drugs were mostly written as charged salts' parents (``[NH+]``,
``[O-]``), its failed ones almost never, so one bit, "a formal charge is written", predicts
both tasks at a ROC-AUC of about 0.8, near the best published models.

The probe is that one bit, scored per task over every labelled row of the raw file.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import cache

__all__ = ["SHORTCUT_AUC", "NotationProbe", "charge_written", "notation_probe"]

# An atom in brackets with a formal charge: [NH+], [O-], [N+], [Fe-2], [NH3+].
_CHARGE_WRITTEN = re.compile(r"\[[^\]]*[+-]\d*\]")
# One bit of notation that ranks a task's molecules this well is a shortcut. On the bundled
# sets without one the probe scores 0.51-0.56 (BBBP, BACE, Tox21); ClinTox's is 0.81.
SHORTCUT_AUC = 0.70


def charge_written(smiles: str) -> bool:
    """Whether the SMILES writes a formal charge on an atom.

    Examples
    --------
    >>> charge_written("CC[NH+](C)C"), charge_written("CCN(C)C"), charge_written("[Na+].[Cl-]")
    (True, False, True)
    """
    return _CHARGE_WRITTEN.search(smiles) is not None


@dataclass(frozen=True)
class NotationProbe:
    """The one-bit probe on one raw set: per task its ROC-AUC (in the better direction)."""

    dataset: str
    n_rows: int
    charged_fraction: float
    per_task: dict[str, float]

    @property
    def mean(self) -> float:
        """The probe's ROC-AUC averaged over the tasks, as the benchmark's metric is."""
        return sum(self.per_task.values()) / len(self.per_task)

    @property
    def is_shortcut(self) -> bool:
        """True when the bit alone ranks the labels at ``SHORTCUT_AUC`` or better."""
        return self.mean >= SHORTCUT_AUC


@cache
def notation_probe(dataset: str) -> NotationProbe | None:
    """Score "a formal charge is written" as a classifier of each task of a bundled set.

    ``None`` for a regression set or a name that is not a bundled dataset. A task whose
    labelled rows are of one class is left out (it has no ROC-AUC).

    Examples
    --------
    >>> probe = notation_probe("clintox")
    >>> probe.is_shortcut, round(probe.mean, 2)
    (True, 0.81)
    >>> notation_probe("tox21").is_shortcut, notation_probe("esol")
    (False, None)
    """
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from qemlflow.data.loading import read_raw
    from qemlflow.data.registry import BUNDLED

    spec = BUNDLED.get(dataset)
    if spec is None or spec.task != "classification":
        return None
    table = pd.read_csv(io.BytesIO(read_raw(dataset).data))
    bit = np.array([charge_written(str(s)) for s in table[spec.smiles_column]], dtype=float)
    per_task: dict[str, float] = {}
    for target in spec.target_columns:
        labelled = table[target].notna().to_numpy()
        labels = table.loc[labelled, target].to_numpy()
        if len(set(labels.tolist())) < 2:
            continue
        auc = float(roc_auc_score(labels, bit[labelled]))
        # A shortcut is a shortcut whichever way it points (charged -> approved, here).
        per_task[target] = max(auc, 1.0 - auc)
    if not per_task:
        return None
    return NotationProbe(
        dataset=dataset,
        n_rows=len(table),
        charged_fraction=float(bit.mean()),
        per_task=per_task,
    )
