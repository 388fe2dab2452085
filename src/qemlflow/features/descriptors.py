"""RDKit 2D descriptors as featurizers: every descriptor RDKit knows, or a curated physico-chemical
subset; float64, NaN if unusable."""

from __future__ import annotations

from collections.abc import Sequence

from qemlflow.chem.descriptors import PHYSCHEM_DESCRIPTORS, descriptor_names
from qemlflow.features._engine import Block, DescriptorBlock
from qemlflow.features.base import Featurizer

__all__ = ["PhysChemDescriptors", "RDKitDescriptors"]


class RDKitDescriptors(Featurizer):
    """The full RDKit 2D descriptor set (``rdkit.Chem.Descriptors._descList``), as float64.

    A descriptor that fails, is infinite, or exceeds 1e10 in magnitude is NaN; a SMILES
    that cannot be parsed gives a row of NaN. Column names are the RDKit names. Every value
    is RDKit's own, bit for bit, computed with what the descriptors share (EState vector,
    Crippen contributions, charges, distance matrices) computed once per molecule; on
    molecules over :data:`~qemlflow.chem.descriptors.MAX_CUBIC_ATOMS` atoms the cubic ones
    (Ipc, AvgIpc, BCUT2D, BalabanJ, BertzCT) are NaN (:mod:`qemlflow.chem.descriptors`).

    Parameters
    ----------
    n_jobs : int, default=1
        Processes to use; -1 means all cores. Descriptors are slow (milliseconds per
        molecule), so parallelism pays off from a few hundred molecules.

    Examples
    --------
    >>> import numpy as np
    >>> featurizer = RDKitDescriptors()
    >>> x = featurizer.transform(["CCO", ""])
    >>> x.dtype, x.shape[1] == len(featurizer.get_feature_names_out())
    (dtype('float64'), True)
    >>> names = list(featurizer.get_feature_names_out())
    >>> round(float(x[0, names.index("MolWt")]), 2), bool(np.isnan(x[1]).all())
    (46.07, True)
    """

    type_name = "rdkit2d"

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    def _blocks(self) -> Sequence[Block]:
        return [DescriptorBlock()]

    def _feature_names(self) -> list[str]:
        return list(descriptor_names())


class PhysChemDescriptors(Featurizer):
    """The curated physico-chemical RDKit descriptors (:data:`~qemlflow.chem.descriptors.\
PHYSCHEM_DESCRIPTORS`): size, logP/MR, TPSA, H-bond counts, flexibility, rings, SlogP_VSA
    and the counts of ionizable groups.

    Every value is RDKit's own, as in :class:`RDKitDescriptors`, at a tenth of its cost; part
    of QeMLflow's default features (``[{type: ecfp, counts: true}, {type: physchem}]``).
    Unusable values and unparsable SMILES give NaN.

    Parameters
    ----------
    n_jobs : int, default=1
        Processes to use; -1 means all cores.

    Examples
    --------
    >>> featurizer = PhysChemDescriptors()
    >>> x = featurizer.transform(["CCO"])
    >>> names = list(featurizer.get_feature_names_out())
    >>> x.shape, round(float(x[0, names.index("TPSA")]), 2)
    ((1, 58), 20.23)
    """

    type_name = "physchem"

    def __init__(self, n_jobs: int = 1) -> None:
        self.n_jobs = n_jobs

    def _blocks(self) -> Sequence[Block]:
        return [DescriptorBlock("physchem")]

    def _feature_names(self) -> list[str]:
        return list(PHYSCHEM_DESCRIPTORS)
