"""Fingerprint featurizers: ECFP/FCFP (Morgan), MACCS keys, atom pairs, topological torsions.

All return float32: bits as 0.0/1.0, counts as exact small integers, NaN rows for
SMILES that cannot be parsed. float32 is the narrowest type that holds both NaN and
every count below 2**24, at half the memory of float64.
"""

from __future__ import annotations

from collections.abc import Sequence

from qemlflow.chem.fingerprints import FingerprintKind
from qemlflow.features._engine import Block, FingerprintBlock
from qemlflow.features.base import Featurizer, check_bool, check_int

__all__ = ["ECFP", "FCFP", "MACCS", "AtomPair", "Torsion"]


class ECFP(Featurizer):
    """Extended-connectivity (Morgan) fingerprints, as bits or counts.

    Parameters
    ----------
    radius : int, default=2
        Morgan radius; ECFP4 is radius 2 (diameter 4).
    size : int, default=2048
        Number of hashed bits.
    counts : bool, default=False
        Count how often each bit is hit instead of setting it to 1.
    features : bool, default=False
        Use pharmacophoric feature invariants, i.e. FCFP (see also :class:`FCFP`).
    chirality : bool, default=False
        Include chirality in the atom invariants.
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> import numpy as np
    >>> x = ECFP().fit_transform(["CCO", "c1ccccc1", "not a smiles"])
    >>> x.shape, x.dtype
    ((3, 2048), dtype('float32'))
    >>> x[:2].sum(axis=1).tolist()
    [6.0, 3.0]
    >>> bool(np.isnan(x[2]).all())
    True
    >>> ECFP(radius=3).get_feature_names_out()[:2].tolist()
    ['ecfp6_0', 'ecfp6_1']
    """

    type_name = "ecfp"

    def __init__(
        self,
        radius: int = 2,
        size: int = 2048,
        counts: bool = False,
        features: bool = False,
        chirality: bool = False,
        n_jobs: int = 1,
    ) -> None:
        self.radius = radius
        self.size = size
        self.counts = counts
        self.features = features
        self.chirality = chirality
        self.n_jobs = n_jobs

    def _uses_features(self) -> bool:
        return bool(self.features)

    def _validate(self) -> None:
        super()._validate()
        check_int(self.type_name, "radius", self.radius, 0)
        check_int(self.type_name, "size", self.size, 1)
        check_bool(self.type_name, "counts", self.counts)
        check_bool(self.type_name, "chirality", self.chirality)
        if "features" in self.get_params(deep=False):  # FCFP fixes it to True
            check_bool(self.type_name, "features", self.features)

    def _blocks(self) -> Sequence[Block]:
        return [
            FingerprintBlock(
                "morgan",
                size=int(self.size),
                counts=bool(self.counts),
                radius=int(self.radius),
                features=self._uses_features(),
                chirality=bool(self.chirality),
            )
        ]

    def _feature_names(self) -> list[str]:
        prefix = f"{'fcfp' if self._uses_features() else 'ecfp'}{2 * int(self.radius)}"
        return [f"{prefix}_{i}" for i in range(int(self.size))]


class FCFP(ECFP):
    """Functional-class (feature-invariant Morgan) fingerprints: ECFP with ``features=True``.

    Parameters are those of :class:`ECFP` without ``features``.

    Examples
    --------
    >>> smiles = ["c1ccccc1O", "c1ccccc1N"]
    >>> bool((FCFP().transform(smiles) == ECFP().transform(smiles)).all())
    False
    >>> FCFP().get_feature_names_out()[0]
    'fcfp4_0'
    """

    type_name = "fcfp"

    def __init__(
        self,
        radius: int = 2,
        size: int = 2048,
        counts: bool = False,
        chirality: bool = False,
        n_jobs: int = 1,
    ) -> None:
        self.radius = radius
        self.size = size
        self.counts = counts
        self.chirality = chirality
        self.n_jobs = n_jobs

    def _uses_features(self) -> bool:
        return True


class MACCS(Featurizer):
    """The 166 MACCS structural keys (167 columns; RDKit keeps column 0 always 0).

    Parameters
    ----------
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> x = MACCS().transform(["c1ccccc1O"])
    >>> x.shape, int(x.sum())
    ((1, 167), 10)
    """

    type_name = "maccs"

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    def _blocks(self) -> Sequence[Block]:
        return [FingerprintBlock("maccs")]

    def _feature_names(self) -> list[str]:
        return [f"maccs_{i}" for i in range(FingerprintBlock("maccs").width)]


class _HashedFingerprint(Featurizer):
    """Shared parameters of the hashed atom-pair and torsion fingerprints."""

    def __init__(self, size: int = 2048, counts: bool = False, n_jobs: int = 1) -> None:
        self.size = size
        self.counts = counts
        self.n_jobs = n_jobs

    def _validate(self) -> None:
        super()._validate()
        check_int(self.type_name, "size", self.size, 1)
        check_bool(self.type_name, "counts", self.counts)

    def _blocks(self) -> Sequence[Block]:
        kind: FingerprintKind = "atompair" if self.type_name == "atompair" else "torsion"
        return [FingerprintBlock(kind, size=int(self.size), counts=bool(self.counts))]

    def _feature_names(self) -> list[str]:
        return [f"{self.type_name}_{i}" for i in range(int(self.size))]


class AtomPair(_HashedFingerprint):
    """Hashed atom-pair fingerprints, as bits or counts.

    Parameters
    ----------
    size : int, default=2048
        Number of hashed bits.
    counts : bool, default=False
        Count how often each bit is hit instead of setting it to 1.
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> AtomPair(size=512, counts=True).transform(["CCO"]).sum()
    np.float32(3.0)
    """

    type_name = "atompair"


class Torsion(_HashedFingerprint):
    """Hashed topological-torsion fingerprints, as bits or counts.

    Parameters
    ----------
    size : int, default=2048
        Number of hashed bits.
    counts : bool, default=False
        Count how often each bit is hit instead of setting it to 1.
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> Torsion(size=512).transform(["CCCCO"]).sum()
    np.float32(2.0)
    """

    type_name = "torsion"
