"""Fingerprint featurizers: ECFP/FCFP (Morgan), MACCS keys, atom pairs, topological
torsions, Avalon, and the ErG pharmacophore-pair fingerprint.

The hashed ones return float32: bits as 0.0/1.0, counts as exact small integers, NaN rows
for SMILES that cannot be parsed. float32 is the narrowest type that holds both NaN and
every count below 2**24, at half the memory of float64. ErG's values are real (float64).
"""

from __future__ import annotations

from collections.abc import Sequence

from qemlflow.chem.fingerprints import ERG_SIZE, FingerprintKind
from qemlflow.features._engine import AvalonBlock, Block, ErGBlock, FingerprintBlock
from qemlflow.features.base import Featurizer, check_bool, check_int

__all__ = ["ECFP", "FCFP", "MACCS", "AtomPair", "Avalon", "ErG", "Torsion"]


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
    """Shared parameters of the hashed atom-pair, torsion and Avalon fingerprints."""

    kind: FingerprintKind

    def __init__(self, size: int = 2048, counts: bool = False, n_jobs: int = 1) -> None:
        self.size = size
        self.counts = counts
        self.n_jobs = n_jobs

    def _validate(self) -> None:
        super()._validate()
        check_int(self.type_name, "size", self.size, 1)
        check_bool(self.type_name, "counts", self.counts)

    def _blocks(self) -> Sequence[Block]:
        return [FingerprintBlock(self.kind, size=int(self.size), counts=bool(self.counts))]

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
    kind = "atompair"


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
    kind = "torsion"


class Avalon(_HashedFingerprint):
    """Avalon fingerprints (RDKit's Avalon toolkit), as bits or counts.

    The Avalon toolkit hashes atoms, bonds, ring systems and short paths with their
    counts: a view of the molecule that the TDC ADMET leaders (MapLight) combine with
    ECFP counts and RDKit descriptors for gradient boosting. Its cost grows with the cube
    of the atom count, so molecules over
    :data:`~qemlflow.chem.descriptors.MAX_CUBIC_ATOMS` atoms get a NaN row (the default
    admission limit, 300 heavy atoms, keeps them out of experiments anyway).

    Parameters
    ----------
    size : int, default=1024
        Number of hashed bits.
    counts : bool, default=False
        Count how often each bit is hit instead of setting it to 1.
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> x = Avalon(size=512, counts=True).transform(["c1ccccc1O", "CCO"])
    >>> x.shape, x.dtype, bool(x[0].max() > 1)
    ((2, 512), dtype('float32'), True)
    """

    type_name = "avalon"
    kind = "avalon"

    def __init__(self, size: int = 1024, counts: bool = False, n_jobs: int = 1) -> None:
        super().__init__(size=size, counts=counts, n_jobs=n_jobs)

    def _blocks(self) -> Sequence[Block]:
        return [AvalonBlock(size=int(self.size), counts=bool(self.counts))]


class ErG(Featurizer):
    """The Extended reduced Graph (ErG) fingerprint: 315 real values (float64).

    The molecule is reduced to pharmacophoric nodes (donor, acceptor, positive,
    negative, hydrophobic ring, aromatic ring) and each pair of node types is counted at
    each topological distance from 1 to 15 bonds, with a fuzzy spill into the
    neighbouring distances (Stiefl, Watson, Baumann & Zaliani, J. Chem. Inf. Model.
    2006). A scaffold-independent view of where the polar and charged groups sit, which
    MapLight pairs with ECFP and Avalon counts. RDKit's ``GetErGFingerprint`` with its
    defaults; NaN rows for SMILES that cannot be parsed.

    Parameters
    ----------
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> x = ErG().transform(["OC(=O)c1ccccc1N", "not a smiles"])
    >>> x.shape, x.dtype, bool(x[0].max() > 0)
    ((2, 315), dtype('float64'), True)
    """

    type_name = "erg"

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    def _blocks(self) -> Sequence[Block]:
        return [ErGBlock()]

    def _feature_names(self) -> list[str]:
        return [f"erg_{i}" for i in range(ERG_SIZE)]
