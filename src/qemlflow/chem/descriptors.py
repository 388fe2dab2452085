"""The full RDKit 2D descriptor set as float64 rows, with unusable values as NaN.

RDKit's ``Ipc`` and ``AvgIpc`` each compute the characteristic polynomial of the adjacency
matrix with the Le Verrier-Faddeev-Frame method on dense matrices: n matrix products of
n x n, so the fourth power of the atom count, twice ("C" * 400 takes seconds, "C" * 3000
hours). Here the polynomial is computed once per molecule for both. Up to
:data:`EXACT_IPC_ATOMS` atoms with RDKit's own function (the values are RDKit's, bit for
bit); above, with the same recurrence on a sparse adjacency matrix, O(n^3). Above that size
the coefficients are far beyond 2**53 and the recurrence's cancellations make RDKit's own
values depend on the BLAS summation order, so nothing exact is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rdkit import Chem
from rdkit.Chem import Descriptors

__all__ = [
    "EXACT_IPC_ATOMS",
    "MAX_ABS_DESCRIPTOR",
    "PHYSCHEM_DESCRIPTORS",
    "descriptor_names",
    "descriptor_row",
    "physchem_row",
]

EXACT_IPC_ATOMS = 150
"""Molecules up to this many atoms get RDKit's own ``Ipc``/``AvgIpc`` (every bundled one)."""

MAX_ABS_DESCRIPTOR = 1e10
"""Values larger than this in magnitude (e.g. ``Ipc`` of big molecules) become NaN."""


PHYSCHEM_DESCRIPTORS: tuple[str, ...] = (
    # size and composition
    "MolWt",
    "HeavyAtomMolWt",
    "ExactMolWt",
    "HeavyAtomCount",
    "NumHeteroatoms",
    "NumValenceElectrons",
    # lipophilicity and refractivity (Wildman-Crippen), polar and total surface
    "MolLogP",
    "MolMR",
    "TPSA",
    "LabuteASA",
    # hydrogen bonding and flexibility
    "NumHDonors",
    "NumHAcceptors",
    "NHOHCount",
    "NOCount",
    "NumRotatableBonds",
    "FractionCSP3",
    "HallKierAlpha",
    # rings
    "RingCount",
    "NumAromaticRings",
    "NumAliphaticRings",
    "NumSaturatedRings",
    "NumAromaticHeterocycles",
    "NumAromaticCarbocycles",
    "NumAliphaticHeterocycles",
    "NumAliphaticCarbocycles",
    "NumSaturatedHeterocycles",
    "NumSaturatedCarbocycles",
    # surface area binned by Crippen logP contribution (shares MolLogP's atom typing)
    *(f"SlogP_VSA{i}" for i in range(1, 13)),
    # ionizable and H-bonding groups: what sets logD at pH 7.4 (acids, amines, amidines...)
    "fr_COO",
    "fr_COO2",
    "fr_Al_COO",
    "fr_Ar_COO",
    "fr_NH0",
    "fr_NH1",
    "fr_NH2",
    "fr_Ar_N",
    "fr_ArN",
    "fr_amidine",
    "fr_guanido",
    "fr_quatN",
    "fr_tetrazole",
    "fr_sulfonamd",
    "fr_phenol",
    "fr_aniline",
    "fr_pyridine",
    "fr_imidazole",
    "fr_phos_acid",
)
"""The curated physico-chemical subset of the RDKit 2D descriptors (``physchem`` featurizer).

Descriptors that are cheap (tens of microseconds per drug-like molecule together with the
Crippen atom typing they share) and carry the physical chemistry behind solubility,
permeability and binding: size, logP/MR, polar surface, H-bond counts, flexibility, rings,
and the counts of ionizable groups (acids, amines, amidines, tetrazoles...) that set logD.
Left out are the expensive ones (``qed`` with its structural alerts, the EState indices,
BCUT2D, ``BertzCT``, ``Ipc``, the chi/kappa connectivity indices, Gasteiger charges) and the
other ``fr_`` SMARTS counts, which ECFP's atom environments already carry. Why this set is the
default: docs/benchmarks.md, "A default that earns its cost".
"""


@lru_cache(maxsize=1)
def _descriptor_functions() -> tuple[tuple[str, Callable[[Chem.Mol], Any]], ...]:
    return tuple((name, function) for name, function in Descriptors._descList)


def characteristic_polynomial(mol: Chem.Mol) -> NDArray[np.float64]:
    """Coefficients of the characteristic polynomial of ``mol``'s (hydrogen-suppressed)
    adjacency matrix, as RDKit's ``Graphs.CharacteristicPolynomial`` computes them.

    Examples
    --------
    >>> characteristic_polynomial(Chem.MolFromSmiles("CCC")).tolist()  # x^3 - 2x
    [1.0, -0.0, -2.0, -0.0]
    """
    n = mol.GetNumAtoms()
    adjacency = Chem.GetAdjacencyMatrix(mol).astype(bool)
    if n <= EXACT_IPC_ATOMS:
        from rdkit.Chem import Graphs

        exact = Graphs.CharacteristicPolynomial(mol, adjacency)  # type: ignore[no-untyped-call]
        return np.asarray(exact, dtype=np.float64)
    from scipy import sparse

    a = sparse.csr_matrix(adjacency.astype(np.float64))
    coefficients = np.zeros(n + 1)
    coefficients[0] = 1.0
    power = adjacency.astype(np.float64)
    diagonal = np.arange(n)
    with np.errstate(all="ignore"):  # past float64's range the values become inf/NaN
        for k in range(1, n + 1):
            coefficients[k] = 1.0 / k * np.trace(power)
            if not np.isfinite(coefficients[k]):
                coefficients[k:] = np.nan  # every later coefficient is unusable too
                break
            power[diagonal, diagonal] -= coefficients[k]
            power = np.asarray(a @ power)
    coefficients[1:] *= -1
    return coefficients


def _information_content(mol: Chem.Mol) -> tuple[float, float]:
    """(Ipc, AvgIpc) of ``mol`` from one characteristic polynomial."""
    from rdkit.ML.InfoTheory import entropy

    magnitudes = np.abs(characteristic_polynomial(mol))
    average = float(entropy.InfoEntropy(magnitudes))  # type: ignore[attr-defined]
    return float(sum(magnitudes)) * average, average


@lru_cache(maxsize=1)
def _ipc_columns() -> tuple[int, int]:
    names = descriptor_names()
    return names.index("Ipc"), names.index("AvgIpc")


def descriptor_names() -> tuple[str, ...]:
    """Return the names of every RDKit 2D descriptor, in output column order.

    This is ``rdkit.Chem.Descriptors._descList``, so the count follows the RDKit version.

    Examples
    --------
    >>> names = descriptor_names()
    >>> "MolWt" in names and "TPSA" in names
    True
    """
    return tuple(name for name, _ in _descriptor_functions())


@lru_cache(maxsize=1)
def _physchem_functions() -> tuple[Callable[[Chem.Mol], Any], ...]:
    functions = dict(_descriptor_functions())
    return tuple(functions[name] for name in PHYSCHEM_DESCRIPTORS)


def _cleaned(values: list[float]) -> NDArray[np.float64]:
    row = np.array(values, dtype=np.float64)
    # "not <=" also catches NaN, so inf, NaN and huge values are all cleaned in one pass
    row[~(np.abs(row) <= MAX_ABS_DESCRIPTOR)] = np.nan
    return row


def physchem_row(mol: Chem.Mol) -> NDArray[np.float64]:
    """Return the :data:`PHYSCHEM_DESCRIPTORS` of ``mol`` as float64, in that order.

    Each value is RDKit's own (the same functions as :func:`descriptor_row`, so the same
    numbers as the full set's columns of those names); failures and absurd values are NaN.

    Examples
    --------
    >>> row = physchem_row(Chem.MolFromSmiles("CCO"))
    >>> round(float(row[PHYSCHEM_DESCRIPTORS.index("MolLogP")]), 4), len(row)
    (-0.0014, 58)
    """
    values: list[float] = []
    append = values.append
    for function in _physchem_functions():
        try:
            append(float(function(mol)))
        except Exception:  # RDKit descriptors raise many unrelated types on odd molecules
            append(np.nan)
    return _cleaned(values)


def descriptor_row(mol: Chem.Mol) -> NDArray[np.float64]:
    """Return every RDKit 2D descriptor of ``mol`` as float64; failures and absurd values are NaN.

    A descriptor that raises, is not finite, or exceeds :data:`MAX_ABS_DESCRIPTOR` in
    magnitude gives NaN, so downstream models see "missing" rather than a huge number.

    Examples
    --------
    >>> row = descriptor_row(Chem.MolFromSmiles("CCO"))
    >>> round(float(row[descriptor_names().index("MolWt")]), 2)
    46.07
    """
    values: list[float] = []
    append = values.append
    ipc, avg_ipc = _ipc_columns()
    for column, (_, function) in enumerate(_descriptor_functions()):
        if column in (ipc, avg_ipc):
            append(np.nan)  # filled in below, from one polynomial
            continue
        try:
            append(float(function(mol)))
        except Exception:  # RDKit descriptors raise many unrelated types on odd molecules
            append(np.nan)
    try:
        values[ipc], values[avg_ipc] = _information_content(mol)
    except Exception:  # as for any other descriptor: unusable means NaN
        values[ipc] = values[avg_ipc] = np.nan
    return _cleaned(values)
