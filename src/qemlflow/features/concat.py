"""Side-by-side concatenation of featurizers, computed from one parse of each molecule."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from qemlflow.errors import FeaturizerError
from qemlflow.features._engine import Block
from qemlflow.features.base import Featurizer

__all__ = ["Concat"]


class Concat(Featurizer):
    """Columns of several featurizers side by side, in the order given.

    Each molecule is parsed once for all parts. The parts' own ``n_jobs`` are ignored:
    this featurizer's ``n_jobs`` decides. Output is float64 if any part is float64
    (descriptors), else float32. Feature names are the parts' names; where two parts
    would give the same name, every name is prefixed with its part's index (``"0__"``).

    Parameters
    ----------
    featurizers : sequence of Featurizer
        The parts; concatenations may nest.
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> from qemlflow.features import ECFP, MACCS
    >>> both = Concat([ECFP(size=1024, counts=True), MACCS()])
    >>> both.transform(["CCO", "CC"]).shape
    (2, 1191)
    >>> both.get_feature_names_out()[[0, 1024]].tolist()
    ['ecfp4_0', 'maccs_0']
    >>> Concat([ECFP(), ECFP()]).get_feature_names_out()[[0, 2048]].tolist()
    ['0__ecfp4_0', '1__ecfp4_0']
    """

    type_name = "concat"
    libraries = ("numpy",)  # plus each part's (required_libraries)

    def __init__(self, featurizers: Sequence[Featurizer], n_jobs: int = 1) -> None:
        self.featurizers = featurizers
        self.n_jobs = n_jobs

    def _validate(self) -> None:
        super()._validate()
        parts = self.featurizers
        if isinstance(parts, str | bytes) or not isinstance(parts, Sequence) or not parts:
            raise FeaturizerError(
                f"concat needs a non-empty list of featurizers, got {parts!r}",
                "pass e.g. Concat([ECFP(), RDKitDescriptors()])",
            )
        for part in parts:
            if not isinstance(part, Featurizer):
                raise FeaturizerError(
                    f"concat part {part!r} is not a featurizer",
                    "build parts with the qemlflow.features classes or make_featurizer",
                )
            part._validate()

    def required_libraries(self) -> tuple[str, ...]:
        """Return the union of the parts' libraries."""
        names = set(self.libraries)
        for part in self.featurizers:
            names.update(part.required_libraries())
        return tuple(sorted(names))

    def code_versions(self) -> dict[str, str]:
        """Return the union of the parts' code versions (those above 1)."""
        versions: dict[str, str] = {}
        for part in self.featurizers:
            versions.update(part.code_versions())
        return dict(sorted(versions.items()))

    def _blocks(self) -> Sequence[Block]:
        return [block for part in self.featurizers for block in part._blocks()]

    def _feature_names(self) -> list[str]:
        per_part = [part._feature_names() for part in self.featurizers]
        names = [name for part_names in per_part for name in part_names]
        if len(Counter(names)) == len(names):
            return names
        return [f"{k}__{name}" for k, part_names in enumerate(per_part) for name in part_names]

    def to_spec(self) -> dict[str, Any]:
        """Return ``{"type": "concat", "featurizers": [part specs...], "n_jobs": ...}``."""
        return {
            "type": self.type_name,
            "featurizers": [part.to_spec() for part in self.featurizers],
            "n_jobs": self.n_jobs,
        }
