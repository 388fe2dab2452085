"""The RDKit 2D descriptors as float64 rows, with unusable values as NaN.

Computed once, bit for bit. ``Descriptors.CalcMolDescriptors`` calls ~217 functions one at a
time, and many of them recompute the same thing: the EState vector (four indices and two
binned families), the Crippen atom typing (MolLogP and MolMR on a copy with hydrogens added,
SlogP_VSA and SMR_VSA on the molecule, QED's logP: one typing here), the Gasteiger
charges, the bond-order distance matrix (BalabanJ, BertzCT), the characteristic polynomial
(Ipc, AvgIpc). Here each shared intermediate is computed once per molecule and every value
is taken from it with RDKit's own code or the same floating-point operations in the same
order, so each value equals RDKit's function's, bit for bit (tested against
:func:`reference_descriptor_row` on every bundled molecule). Per-atom loops read atoms
without RDKit's slow Python atom sequence, and QED's 116 structural-alert searches run
through one RDKit FilterCatalog call.

Bounded on big molecules. RDKit's ``Ipc`` and ``AvgIpc`` each compute the characteristic
polynomial of the adjacency matrix with the Le Verrier-Faddeev-Frame method on dense
matrices: n matrix products of n x n, so the fourth power of the atom count, twice ("C" *
400 takes seconds, "C" * 3000 hours). Here the polynomial is computed once for both. Up to
:data:`EXACT_IPC_ATOMS` atoms with RDKit's own function (the values are RDKit's, bit for
bit); above, with the same recurrence on a sparse adjacency matrix, O(n^3). Above that size
the coefficients are far beyond 2**53 and the recurrence's cancellations make RDKit's own
values depend on the BLAS summation order, so nothing exact is lost. Above
:data:`MAX_CUBIC_ATOMS` atoms the cubic descriptors are NaN: ``Ipc``/``AvgIpc``, the eight
``BCUT2D`` (eigenvalues of dense n x n matrices), ``BalabanJ`` and ``BertzCT`` (a
Floyd-Warshall distance matrix and pairwise Python loops); the EState distances come from a
breadth-first search instead of Floyd-Warshall (the same integers). A 3,000-atom molecule
then takes seconds, not hours. No bundled molecule comes near that size, and the default
admission limit (300 heavy atoms) keeps such molecules out of experiments anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cache, lru_cache
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from rdkit import Chem
from rdkit.Chem import Descriptors, rdMolDescriptors

__all__ = [
    "EXACT_IPC_ATOMS",
    "MAX_ABS_DESCRIPTOR",
    "MAX_CUBIC_ATOMS",
    "PHYSCHEM_DESCRIPTORS",
    "descriptor_names",
    "descriptor_row",
    "physchem_row",
    "reference_descriptor_row",
]

EXACT_IPC_ATOMS = 150
"""Molecules up to this many atoms get RDKit's own ``Ipc``/``AvgIpc`` (every bundled one)."""

MAX_CUBIC_ATOMS = 500
"""Above this many atoms, ``BCUT2D_*``, ``BalabanJ`` and ``BertzCT`` are NaN (see the module
docstring); no bundled molecule comes near it (the largest has 136 atoms)."""

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


# --- shared intermediates ---------------------------------------------------------------
# An intermediate is a function (mol, known) -> value, computed at most once per molecule
# (``known`` holds those already computed, so one can build on another). A plan step pairs
# an intermediate with the function that takes one descriptor's value from it; a step with
# no intermediate calls RDKit's own descriptor function on the molecule.
_Intermediate = Callable[[Chem.Mol, dict[Any, Any]], Any]
_Step = tuple[_Intermediate | None, Callable[[Any], Any]]


def _needed(known: dict[Any, Any], intermediate: _Intermediate, mol: Chem.Mol) -> Any:
    """``intermediate`` of ``mol``, from ``known`` or computed now (errors propagate)."""
    if intermediate not in known:
        try:
            known[intermediate] = intermediate(mol, known)
        except Exception as error:  # remembered: whatever needs it fails the same way
            known[intermediate] = error
    value = known[intermediate]
    if isinstance(value, Exception):
        raise value
    return value


@lru_cache(maxsize=1)
def _outer_electrons() -> tuple[int, ...]:
    table = Chem.GetPeriodicTable()
    return tuple(table.GetNOuterElecs(z) for z in range(119))


def _each_atom(mol: Chem.Mol) -> Iterator[Chem.Atom]:
    """The atoms of ``mol`` in index order.

    ``mol.GetAtoms()`` is a pure-Python sequence in RDKit (RDKit issue #6208) that makes six
    Python calls per atom; this makes one. It is ~1/5 of the time of the whole descriptor
    set when every per-atom loop uses it.
    """
    atom = mol.GetAtomWithIdx
    return (atom(i) for i in range(mol.GetNumAtoms()))


class _Scan(NamedTuple):
    """What one pass over the atoms gives (:func:`_atom_scan`)."""

    valence_electrons: int
    """RDKit's ``NumValenceElectrons`` (the same sum of integers)."""
    hydrogens: list[tuple[Any, int]]
    """Per atom with hydrogens, their Crippen (logP, MR) type and count, in atom order."""
    kinds: list[int]
    """Atom counts by element and aromaticity: ``kinds[2 * z + aromatic]``."""
    nitrogen_hydrogens: list[int]
    """Nitrogen atoms (aromatic or not) with 0, 1, 2 and 3 or more hydrogens."""
    methyls: list[int]
    """Indices of the aliphatic carbons with three hydrogens (``[CH3]``)."""
    acidic_oxygens: int
    """Aliphatic oxygens with one hydrogen or a charge of -1 (``[O;H1,-]``)."""
    quaternary_nitrogens: int
    """Aliphatic nitrogens with four connections, hydrogens included (``[NX4]``)."""

    def atoms(self, z: int, aromatic: bool | None = None) -> int:
        """Atoms of element ``z``: aliphatic, aromatic, or (None) both."""
        if aromatic is None:
            return self.kinds[2 * z] + self.kinds[2 * z + 1]
        return self.kinds[2 * z + aromatic]


def _atom_scan(mol: Chem.Mol, known: dict[Any, Any]) -> _Scan:
    """One pass over the atoms (see :class:`_Scan`). Hydrogen counts are the atoms' own
    (not hydrogen atoms bonded to them): the fields that read them hold for a molecule
    without hydrogen atoms."""
    outer = _outer_electrons()
    total = 0
    hydrogens: list[tuple[Any, int]] = []
    kinds = [0] * 240
    nitrogen_hydrogens = [0, 0, 0, 0]
    methyls: list[int] = []
    acidic = quaternary = 0
    atom_at = mol.GetAtomWithIdx
    for i in range(mol.GetNumAtoms()):
        atom = atom_at(i)
        z = atom.GetAtomicNum()
        count = atom.GetTotalNumHs()
        charge = atom.GetFormalCharge()
        total += outer[z] - charge + count
        aromatic = atom.GetIsAromatic()
        kinds[2 * z + aromatic] += 1
        if z == 6:
            if count:
                hydrogens.append((_H1, count))
                if count == 3 and not aromatic:
                    methyls.append(i)
            continue
        if z == 7:
            nitrogen_hydrogens[min(count, 3)] += 1
            if not aromatic and atom.GetTotalDegree() == 4:
                quaternary += 1
        elif z == 8 and not aromatic and (count == 1 or charge == -1):
            acidic += 1
        if count:
            hydrogens.append((_hydrogen_type(atom, z, count), count))
    return _Scan(total, hydrogens, kinds, nitrogen_hydrogens, methyls, acidic, quaternary)


def _radical_electrons(mol: Chem.Mol) -> int:
    """RDKit's ``NumRadicalElectrons``, read atom by atom directly."""
    return sum(atom.GetNumRadicalElectrons() for atom in _each_atom(mol))


def _topological_distances(mol: Chem.Mol) -> NDArray[np.float64]:
    """Bond-count distances between all atoms, as ``Chem.GetDistanceMatrix(mol, 0, 0)``.

    RDKit's is Floyd-Warshall, O(n^3); above :data:`MAX_CUBIC_ATOMS` atoms a breadth-first
    search from every atom gives the same integers in O(n^2) (unreachable pairs: 1e8, as
    RDKit writes them).
    """
    n = mol.GetNumAtoms()
    if n <= MAX_CUBIC_ATOMS:
        return np.asarray(
            Chem.GetDistanceMatrix(mol, useBO=False, useAtomWts=False), dtype=np.float64
        )
    from scipy import sparse
    from scipy.sparse.csgraph import shortest_path

    adjacency = sparse.csr_matrix(Chem.GetAdjacencyMatrix(mol).astype(np.float64))
    distances = shortest_path(adjacency, directed=False, unweighted=True)
    distances[np.isinf(distances)] = 1e8
    return np.asarray(distances, dtype=np.float64)


def _estate_indices(mol: Chem.Mol, known: dict[Any, Any]) -> NDArray[np.float64]:
    """The EState index of each atom, as ``rdkit.Chem.EState.EState.EStateIndices``, bit for bit.

    RDKit's pairwise loop adds, for atom k, the term (I_k - I_m) / d_km^2 of every other atom
    m in increasing m, starting from 0.0. Here those same terms (the same float operations) are
    summed left to right by a cumulative sum, which adds in exactly that order; a pair RDKit
    skips (unreachable) contributes +0.0, which leaves a sum unchanged. The four EState
    indices and the EState_VSA/VSA_EState bins all read this one vector.
    """
    from rdkit.Chem.EState.EState import GetPrincipleQuantumNumber

    outer = _outer_electrons()
    n_atoms = mol.GetNumAtoms()
    intrinsic = np.zeros(n_atoms, dtype=np.float64)
    for i, atom in enumerate(_each_atom(mol)):
        degree = atom.GetDegree()
        if degree > 0:
            z = atom.GetAtomicNum()
            principal = GetPrincipleQuantumNumber(z)  # type: ignore[no-untyped-call]
            valence = outer[z] - atom.GetTotalNumHs()
            intrinsic[i] = (4.0 / (principal * principal) * valence + 1) / degree
    distances = _topological_distances(mol) + 1
    accumulated = np.empty_like(intrinsic)
    for start in range(0, n_atoms, 256):  # row blocks: memory stays small for big molecules
        block = distances[start : start + 256]
        with np.errstate(all="ignore"):
            terms = (intrinsic[start : start + 256, None] - intrinsic[None, :]) / (block * block)
        terms[~(block < 1e6)] = 0.0
        accumulated[start : start + 256] = np.cumsum(terms, axis=1)[:, -1]
    indices = accumulated + intrinsic
    mol._eStateIndices = indices  # RDKit's own cache: EState_VSA/VSA_EState read it
    return indices


def _estate_vsa(mol: Chem.Mol, known: dict[Any, Any]) -> Any:
    from rdkit.Chem.EState import EState_VSA

    _needed(known, _estate_indices, mol)  # left on the molecule, where RDKit looks first
    return EState_VSA.EState_VSA_(mol, force=False)  # type: ignore[no-untyped-call]


def _vsa_estate(mol: Chem.Mol, known: dict[Any, Any]) -> Any:
    from rdkit.Chem.EState import EState_VSA

    _needed(known, _estate_indices, mol)
    return EState_VSA.VSA_EState_(mol, force=False)  # type: ignore[no-untyped-call]


def _partial_charges(mol: Chem.Mol, known: dict[Any, Any]) -> tuple[float, float]:
    """(lowest, highest) Gasteiger charge, as ``Descriptors._ChargeDescriptors`` (RDKit's
    helper behind all four charge descriptors) finds them: the same code, but reading the
    atoms without RDKit's slow atom sequence."""
    from rdkit.Chem import rdPartialCharges

    rdPartialCharges.ComputeGasteigerCharges(mol)
    lowest = 500.0
    highest = -500.0
    for atom in _each_atom(mol):
        charge = float(atom.GetProp("_GasteigerCharge"))  # RDKit reads the text form too
        lowest = min(charge, lowest)
        highest = max(charge, highest)
    mol._chargeDescriptors = (lowest, highest)
    return lowest, highest


def _bcut(mol: Chem.Mol, known: dict[Any, Any]) -> tuple[float, ...]:
    """The eight BCUT2D values from one call (eigenvalues of dense n x n matrices: O(n^3))."""
    if mol.GetNumAtoms() > MAX_CUBIC_ATOMS:
        return (np.nan,) * 8
    try:
        return tuple(rdMolDescriptors.BCUT2D(mol))
    except Exception:  # RDKit's wrapper gives NaN for all eight
        return (np.nan,) * 8


# Wildman-Crippen contributions of hydrogen atoms (RDKit's Crippen.txt, types H1-H4, HS).
_H1, _H2, _H3, _H4, _HS = (
    (0.123, 1.057),
    (-0.2677, 1.395),
    (0.2142, 0.9627),
    (0.298, 1.805),
    (0.1125, 1.112),
)


def _hydrogen_type(atom: Chem.Atom, z: int, hydrogens: int) -> tuple[float, float]:
    """(logP, MR) of each hydrogen on ``atom`` (element ``z``, ``hydrogens`` of them) in
    RDKit's Crippen typing of the molecule with hydrogens added: the first of RDKit's H
    patterns, in their file order, that matches an H on this atom.

    ``[#1][#6,#1]`` H1; ``[#1]O[CX4,c]``, ``[#1]O[!#6;!#7;!#8;!#16]``, ``[#1][!#6;!#7;!#8]``
    H2; ``[#1][#7]``, ``[#1]O[#7]`` H3; ``[#1]OC=[#6,#7,O,S]``, ``[#1]O[O,S]`` H4; else HS.
    ``O`` and ``C`` are aliphatic atoms, ``=`` a double bond (not aromatic). The other
    neighbours of an oxygen include its other hydrogens, which match ``[!#6;!#7;!#8;!#16]``.
    """
    if z == 6:
        return _H1
    if z == 7:
        return _H3
    if z != 8:
        return _H2
    if atom.GetIsAromatic():  # an aromatic o: no "O" pattern, not [!#6;!#7;!#8]
        return _HS
    neighbours = atom.GetNeighbors()
    for other in neighbours:  # [#1]O[CX4,c]
        if other.GetAtomicNum() == 6 and (other.GetIsAromatic() or other.GetTotalDegree() == 4):
            return _H2
    if hydrogens > 1:  # another H on this O matches [#1]O[!#6;!#7;!#8;!#16]
        return _H2
    numbers = [other.GetAtomicNum() for other in neighbours]
    if any(n not in (6, 7, 8, 16) for n in numbers):
        return _H2
    if 7 in numbers:  # [#1]O[#7]
        return _H3
    for other in neighbours:  # [#1]OC=[#6,#7,O,S]
        if other.GetAtomicNum() == 6 and not other.GetIsAromatic():
            for bond in other.GetBonds():
                if bond.GetBondType() != Chem.BondType.DOUBLE:
                    continue
                partner = bond.GetOtherAtom(other)
                n = partner.GetAtomicNum()
                if n in (6, 7) or (n in (8, 16) and not partner.GetIsAromatic()):
                    return _H4
    for other in neighbours:  # [#1]O[O,S]
        if other.GetAtomicNum() in (8, 16) and not other.GetIsAromatic():
            return _H4
    return _HS


def _crippen(mol: Chem.Mol, known: dict[Any, Any]) -> tuple[float, float]:
    """(MolLogP, MolMR) as ``rdMolDescriptors.CalcCrippenDescriptors(mol)``, bit for bit,
    with one Crippen typing of the heavy atoms instead of two.

    RDKit types a copy with hydrogens added (every heavy atom, then each atom's hydrogens,
    in atom order) and sums the contributions in that order; ``SlogP_VSA`` and ``SMR_VSA``
    then type ``mol`` itself again. Here ``mol`` is typed once (left on it, where the VSA
    bins read it: the same call they make), a hydrogen's type follows from its heavy
    neighbour (:func:`_hydrogen_type`), and the two sums add the same numbers in the same
    order. A heavy atom's type is the same in both molecules: no heavy-atom pattern reads
    a hydrogen atom (``H``, ``X`` and ``A;!#1`` count the same either way; tested on every
    bundled molecule). A molecule with hydrogen or dummy atoms of its own goes through
    RDKit's function.
    """
    if mol.GetNumHeavyAtoms() != mol.GetNumAtoms():
        logp, mr = rdMolDescriptors.CalcCrippenDescriptors(mol)
        return logp, mr
    contributions = rdMolDescriptors._CalcCrippenContribs(mol)
    logp = 0.0
    mr = 0.0
    for atom_logp, atom_mr in contributions:
        logp += atom_logp
        mr += atom_mr
    for (h_logp, h_mr), count in _needed(known, _atom_scan, mol).hydrogens:
        for _ in range(count):
            logp += h_logp
            mr += h_mr
    return logp, mr


def _slogp_vsa(mol: Chem.Mol, known: dict[Any, Any]) -> Any:
    _needed(known, _crippen, mol)  # its atom typing, left on mol, is the one RDKit reads
    return rdMolDescriptors.SlogP_VSA_(mol, force=False)


def _smr_vsa(mol: Chem.Mol, known: dict[Any, Any]) -> Any:
    _needed(known, _crippen, mol)
    return rdMolDescriptors.SMR_VSA_(mol, force=False)


def _peoe_vsa(mol: Chem.Mol, known: dict[Any, Any]) -> Any:
    return rdMolDescriptors.PEOE_VSA_(mol, force=False)


def _information_content_of(mol: Chem.Mol, known: dict[Any, Any]) -> tuple[float, float]:
    """(Ipc, AvgIpc) from one polynomial; NaN above :data:`MAX_CUBIC_ATOMS` atoms, where even
    the sparse recurrence is O(n^3) (seconds at 3,000 atoms) and the coefficients soon
    overflow float64 anyway."""
    if mol.GetNumAtoms() > MAX_CUBIC_ATOMS:
        return np.nan, np.nan
    return _information_content(mol)


def _qed(mol: Chem.Mol, known: dict[Any, Any]) -> float:
    """RDKit's ``QED.qed``, with the properties it shares with other descriptors computed once.

    ``QED.properties`` computes everything on a copy, ``Chem.RemoveHs(mol)``. For a molecule
    with no hydrogen (or dummy) atoms that copy is the same molecule re-sanitized, which
    changes nothing for a molecule that was sanitized when parsed (checked on every bundled
    molecule); so the properties are computed on ``mol`` itself, where MolLogP is the
    Crippen value already computed for its own column and TPSA is RDKit's cached one. The
    rest (acceptor patterns, strict rotatable bonds, aromatic rings) is QED's own code, and
    the structural alerts are counted by one FilterCatalog call. Other molecules go through
    ``QED.qed`` unchanged.
    """
    from rdkit.Chem import QED, MolSurf

    if mol.GetNumHeavyAtoms() != mol.GetNumAtoms():  # hydrogen (or dummy) atoms: QED's own way
        return float(QED.qed(mol))  # type: ignore[no-untyped-call]
    strict = rdMolDescriptors.NumRotatableBondsOptions.Strict
    properties = QED.QEDproperties(  # type: ignore[no-untyped-call]
        MW=rdMolDescriptors._CalcMolWt(mol),
        ALOGP=_needed(known, _crippen, mol)[0],
        HBA=sum(
            len(mol.GetSubstructMatches(pattern))
            for pattern in QED.Acceptors
            if mol.HasSubstructMatch(pattern)
        ),
        HBD=rdMolDescriptors.CalcNumHBD(mol),
        PSA=MolSurf.TPSA(mol),  # type: ignore[attr-defined]
        ROTB=rdMolDescriptors.CalcNumRotatableBonds(mol, strict),
        AROM=len(Chem.GetSSSR(Chem.DeleteSubstructs(Chem.Mol(mol), QED.AliphaticRings))),
        ALERTS=len(_alert_catalog().GetMatches(mol)),
    )
    return float(QED.qed(mol, qedProperties=properties))  # type: ignore[no-untyped-call]


# QED's 116 structural alerts are one HasSubstructMatch call each from Python, and most find
# nothing. A FilterCatalog of the same patterns runs the same searches (RDKit's
# SubstructMatch with default parameters; an entry matches on at least one match) in one
# call: about a third less time. (For the fr_ counts, which need every match, it saves
# nothing, so they stay RDKit's own functions.)
@lru_cache(maxsize=1)
def _alert_catalog() -> Any:
    from rdkit.Chem import QED
    from rdkit.Chem.rdfiltercatalog import FilterCatalog, FilterCatalogEntry, SmartsMatcher

    catalog = FilterCatalog()
    for index, pattern in enumerate(QED.StructuralAlerts):
        matcher = SmartsMatcher(str(index), pattern, 1)  # matched: at least once
        catalog.AddEntry(FilterCatalogEntry(str(index), matcher))
    return catalog


def _spacial_score(mol: Chem.Mol, known: dict[Any, Any]) -> float:
    """RDKit's ``SPS`` (``SpacialScore._SpacialScore(mol).score``) without its per-atom method
    calls: the same integer score, summed over the same atoms, over the same heavy-atom count.
    """
    from rdkit.Chem import rdmolops

    copy = Chem.Mol(mol)
    rdmolops.FindPotentialStereoBonds(copy)
    stereo = {
        index
        for index, _ in Chem.FindMolChiralCenters(  # type: ignore[no-untyped-call]
            copy, includeUnassigned=True, includeCIP=False, useLegacyImplementation=False
        )
    }
    double, none = Chem.BondType.DOUBLE, Chem.BondStereo.STEREONONE
    for i in range(copy.GetNumBonds()):
        bond = copy.GetBondWithIdx(i)
        if bond.GetBondType() == double and bond.GetStereo() != none:
            stereo.update((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
    hybridisation = _SPS_HYBRIDISATION
    score = 0
    for index, atom in enumerate(_each_atom(copy)):
        ring = 1 if atom.GetIsAromatic() or not atom.IsInRing() else 2
        score += (
            hybridisation.get(atom.GetHybridization(), 4)
            * (2 if index in stereo else 1)
            * ring
            * atom.GetDegree() ** 2
        )
    return score / copy.GetNumHeavyAtoms()


_SPS_HYBRIDISATION = {
    Chem.HybridizationType.SP: 1,
    Chem.HybridizationType.SP2: 2,
    Chem.HybridizationType.SP3: 3,
}


def _connectivity(mol: Chem.Mol, known: dict[Any, Any]) -> tuple[Any, Any]:
    """(Chi0, Chi1) as ``GraphDescriptors.Chi0``/``Chi1`` compute them (the same non-zero
    degrees and degree products in atom and bond order, the same NumPy operations and the
    same left-to-right ``sum``), reading atoms and bonds directly."""
    degrees = [atom.GetDegree() for atom in _each_atom(mol)]
    products = []
    for i in range(mol.GetNumBonds()):
        bond = mol.GetBondWithIdx(i)
        products.append(degrees[bond.GetBeginAtomIdx()] * degrees[bond.GetEndAtomIdx()])
    chi0 = sum(np.sqrt(1.0 / np.array([d for d in degrees if d != 0], float)))
    chi1 = sum(np.sqrt(1.0 / np.array([p for p in products if p != 0], float)))
    return chi0, chi1


def _balaban_matrix(mol: Chem.Mol, known: dict[Any, Any]) -> Any:
    """The bond-order distance matrix that BertzCT and BalabanJ both read.

    BertzCT recomputes it (``force=1``); BalabanJ reuses ``mol._balabanMat`` when set. Left
    there, one Floyd-Warshall serves both, with the same numbers.
    """
    matrix = Chem.GetDistanceMatrix(mol, useBO=True, useAtomWts=False, force=True, prefix="Balaban")
    mol._balabanMat = matrix
    return matrix


def _bertz_ct(mol: Chem.Mol, known: dict[Any, Any]) -> float:
    """RDKit's ``GraphDescriptors.BertzCT`` (its code, its helpers, the same order of every
    sum), reading bonds without RDKit's slow bond sequence and taking the shared
    bond-order distance matrix; NaN above :data:`MAX_CUBIC_ATOMS` atoms."""
    from rdkit.Chem import GraphDescriptors

    n_atoms = mol.GetNumAtoms()
    if n_atoms > MAX_CUBIC_ATOMS:
        return np.nan
    if n_atoms < 2:
        return 0.0
    # _CreateBondDictEtc, with direct bond access
    bonds: dict[tuple[int, int], Any] = {}
    neighbours: list[list[int] | None] = [None] * n_atoms
    for i in range(mol.GetNumBonds()):
        bond = mol.GetBondWithIdx(i)
        first, second = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if first > second:
            first, second = second, first
        bonds[first, second] = (
            Chem.BondType.AROMATIC if bond.GetIsAromatic() else bond.GetBondType()
        )
        for atom, other in ((first, second), (second, first)):
            listed = neighbours[atom]
            if listed is None:
                neighbours[atom] = [other]
            elif other not in listed:
                listed.append(other)
    degrees = [0] * n_atoms
    for i, listed in enumerate(neighbours):
        if listed is not None:
            listed.sort()
            degrees[i] = len(listed)
    classes = GraphDescriptors._AssignSymmetryClasses(  # type: ignore[no-untyped-call]
        mol, degrees, _needed(known, _balaban_matrix, mol), 0, n_atoms, 100
    )
    # BertzCT's own loop, unchanged (dictionary insertion order fixes the entropy sums)
    atom_types: dict[int, int] = {}
    connections: dict[Any, float] = {}
    order: Callable[..., float] = GraphDescriptors._LookUpBondOrder
    for atom in range(n_atoms):
        number = mol.GetAtomWithIdx(atom).GetAtomicNum()
        atom_types[number] = atom_types.get(number, 0) + 1
        hinge = classes[atom]
        listed = neighbours[atom] or []
        for i in range(degrees[atom]):
            neighbour_i = listed[i]
            class_i = classes[neighbour_i]
            order_i = order(atom, neighbour_i, bonds)
            if order_i > 1 and neighbour_i > atom:
                key: Any = (min(hinge, class_i), max(hinge, class_i))
                connections[key] = connections.get(key, 0) + order_i * (order_i - 1) / 2
            for j in range(i + 1, degrees[atom]):
                neighbour_j = listed[j]
                class_j = classes[neighbour_j]
                order_j = order(atom, neighbour_j, bonds)
                key = (min(class_i, class_j), hinge, max(class_i, class_j))
                connections[key] = connections.get(key, 0) + order_i * order_j
    if not connections:
        connections = {"a": 1}
    entropy = GraphDescriptors._CalculateEntropies
    return float(entropy(connections, atom_types, n_atoms))  # type: ignore[no-untyped-call]


def _balaban_j(mol: Chem.Mol, known: dict[Any, Any]) -> float:
    """RDKit's ``BalabanJ`` on the shared bond-order distance matrix; NaN above
    :data:`MAX_CUBIC_ATOMS` atoms (its pairwise loop is Python, over all atom pairs)."""
    from rdkit.Chem import GraphDescriptors

    if mol.GetNumAtoms() > MAX_CUBIC_ATOMS:
        return np.nan
    _needed(known, _balaban_matrix, mol)  # left on the molecule, where BalabanJ looks first
    return float(GraphDescriptors.BalabanJ(mol))  # type: ignore[no-untyped-call]


# --- rotatable bonds, H-bond acceptors, fragment counts: RDKit's SMARTS counts, cheaper ---
# RDKit's (strict) NumRotatableBonds matches one SMARTS whose two atoms each carry eight
# recursive exclusions, evaluated atom by atom. The same count: the bonds of the plain
# (non-strict) pattern, less those with an end in CX3 (F, Cl, Br), tert-butyl or methyl,
# and less those with both ends amide-like (an atom of an amide/ester/thioamide/amidinium
# linkage: the first and last atoms of the two patterns below, which are the strict
# pattern's [CD3](=[N,O,S])-!@[#7,O,S!D1] and its mirror, and the two with [N+]). The bond
# is counted by RDKit when either orientation passes, i.e. unless both ends are amide-like.
# RDKit's NumHAcceptors is one recursive SMARTS that it copies on every call (recursive
# queries are not thread-safe); here it is parsed once. Both restate the SMARTS of RDKit's
# Lipinski.cpp at the versions below; another RDKit version gets RDKit's own functions.
_NON_STRICT_ROTOR = "[!$(*#*)&!D1]-,:;!@[!$(*#*)&!D1]"
_AMIDE_LIKE = ("[CD3](=[N,O,S])-!@[#7,O,S!D1]", "[CD3](=[N+])-!@[#7!D1]")
_ROTOR_BLOCKERS = ((9, "C(F)(F)F"), (17, "C(Cl)(Cl)Cl"), (35, "C(Br)(Br)Br"))
_TERT_BUTYL = "C([CH3])([CH3])[CH3]"
_ACCEPTOR = (
    "[$([O,S;H1;v2]-[!$(*=[O,N,P,S])]),$([O,S;H0;v2]),$([O,S;-]),"
    "$([N;v3;!$(N-*=!@[O,N,P,S])]),$([nH0X2,o,s;+0])]"
)
_RESTATED_VERSIONS = {"_CalcNumRotatableBonds_version": "3.2.0", "_CalcNumHBA_version": "2.0.2"}
_MAX_MATCHES = 1000
"""RDKit's default ``maxMatches``: a count that reaches it is RDKit's own (capped) count."""


@lru_cache(maxsize=1)
def _restated() -> bool:
    """True when this RDKit's rotatable-bond and acceptor SMARTS are the ones restated."""
    return all(
        getattr(rdMolDescriptors, name, None) == version
        for name, version in _RESTATED_VERSIONS.items()
    )


@lru_cache(maxsize=1)
def _count_patterns() -> dict[str, Chem.Mol]:
    smarts = [_NON_STRICT_ROTOR, *_AMIDE_LIKE, _TERT_BUTYL, _ACCEPTOR]
    smarts += [s for _, s in _ROTOR_BLOCKERS]
    return {s: Chem.MolFromSmarts(s) for s in smarts}


def _matches(mol: Chem.Mol, pattern: Chem.Mol) -> Any:
    """Every (unique) match of ``pattern``, not RDKit's first 1,000."""
    return mol.GetSubstructMatches(pattern, maxMatches=1 << 30)


def _rotatable_bonds(mol: Chem.Mol, known: dict[Any, Any]) -> int:
    """RDKit's ``NumRotatableBonds`` (strict), the same integer (tested on every bundled
    molecule and the 93,000 of MUV) in a third of the time: see the comment above."""
    if not _restated():
        return int(rdMolDescriptors.CalcNumRotatableBonds(mol))
    patterns = _count_patterns()
    pairs = mol.GetSubstructMatches(patterns[_NON_STRICT_ROTOR], maxMatches=_MAX_MATCHES)
    if not pairs:
        return 0
    scan: _Scan = _needed(known, _atom_scan, mol)
    if len(pairs) >= _MAX_MATCHES or scan.atoms(1):  # RDKit's cap; hydrogen atoms (D, H)
        return int(rdMolDescriptors.CalcNumRotatableBonds(mol))
    blocked: set[int] = set(scan.methyls)  # [CH3]
    for z, smarts in _ROTOR_BLOCKERS:
        if scan.atoms(z, False) >= 3:
            blocked.update(m[0] for m in _matches(mol, patterns[smarts]))
    if len(scan.methyls) >= 3:
        blocked.update(m[0] for m in _matches(mol, patterns[_TERT_BUTYL]))
    amide: set[int] = set()
    for smarts in _AMIDE_LIKE:
        for match in _matches(mol, patterns[smarts]):
            amide.add(match[0])
            amide.add(match[2])
    count = 0
    for a, b in pairs:
        if a not in blocked and b not in blocked and not (a in amide and b in amide):
            count += 1
    return count


def _acceptors(mol: Chem.Mol) -> int:
    """RDKit's ``NumHAcceptors``: the same SMARTS count, the pattern parsed once."""
    if not _restated():
        return int(rdMolDescriptors.CalcNumHBA(mol))
    return len(mol.GetSubstructMatches(_count_patterns()[_ACCEPTOR]))


# The fragment counts (``fr_*``) of the physchem set whose SMARTS cannot match without some
# atoms: (element, aromatic or None for either, how many). With fewer, RDKit's count is 0.
# Each entry holds for the SMARTS beside it, which RDKit's pattern is checked against.
_FRAGMENT_NEEDS: dict[str, tuple[str, tuple[tuple[int, bool | None, int], ...]]] = {
    "fr_COO": ("[#6]C(=O)[O;H,-1]", ((8, False, 2),)),
    "fr_COO2": ("[CX3](=O)[OX1H0-,OX2H1]", ((8, False, 2),)),
    "fr_Al_COO": ("C-C(=O)[O;H1,-]", ((8, False, 2),)),
    "fr_Ar_COO": ("c-C(=O)[O;H1,-]", ((8, False, 2), (6, True, 1))),
    "fr_phenol": ("[OX2H]-c1ccccc1", ((8, False, 1), (6, True, 6))),
    "fr_quatN": ("[$([NX4+]),$([NX4]=*)]", ((7, False, 1),)),
    "fr_aniline": ("c-[NX3;!$(N=*)]", ((7, False, 1), (6, True, 1))),
    "fr_amidine": ("C(=N)(-N)-[!#7]", ((7, False, 2),)),
    "fr_guanido": ("C(=N)(N)N", ((7, False, 3),)),
    "fr_sulfonamd": (
        "N-S(=,-[OX1;+0,-1])(=,-[OX1;+0,-1])-[#6]",
        ((7, False, 1), (16, False, 1), (8, False, 2)),
    ),
    "fr_imidazole": ("n1cncc1", ((7, True, 2),)),
    "fr_pyridine": ("n1ccccc1", ((7, True, 1), (6, True, 5))),
    "fr_tetrazole": ("c1nnnn1", ((7, True, 4),)),
    "fr_phos_acid": (
        "[$(P(=[OX1])([$([OX2H]),$([OX1-]),$([OX2]P)])([$([OX2H]),$([OX1-]),$([OX2]P)])"
        "[$([OX2H]),$([OX1-]),$([OX2]P)]),$([P+]([OX1-])([$([OX2H]),$([OX1-]),$([OX2]P)])"
        "([$([OX2H]),$([OX1-]),$([OX2]P)])[$([OX2H]),$([OX1-]),$([OX2]P)])]",
        ((15, None, 1), (8, False, 3)),
    ),
    "fr_ArN": (
        "[$(a-[NX3H2]),$(a-[NH1][NH2]),$(a-C(=[OX1])[NH1][NH2]),$(a-C(=[NH])[NH2])]",
        ((7, False, 1),),
    ),
    # one-atom patterns, counted from the scan (see _fragment_step)
    "fr_NH0": ("[NH0,nH0]", ()),
    "fr_NH1": ("[NH1,nH1]", ()),
    "fr_NH2": ("[NH2,nH2]", ()),
    "fr_Ar_N": ("n", ()),
}
# And what they need that the scan counts from hydrogen counts (valid without hydrogen
# atoms): the acids' and phenol's [O;H1,-] / [OX2H], [NX4] of fr_quatN, and fr_ArN's NH2.
_FRAGMENT_NEEDS_HYDROGENS: dict[str, Callable[[_Scan], int]] = {
    **dict.fromkeys(
        ("fr_COO", "fr_COO2", "fr_Al_COO", "fr_Ar_COO", "fr_phenol"),
        attrgetter("acidic_oxygens"),
    ),
    "fr_quatN": attrgetter("quaternary_nitrogens"),
    "fr_ArN": lambda scan: scan.nitrogen_hydrogens[2],
}
_ONE_ATOM: dict[str, Callable[[_Scan], int]] = {
    "fr_NH0": lambda scan: scan.nitrogen_hydrogens[0],
    "fr_NH1": lambda scan: scan.nitrogen_hydrogens[1],
    "fr_NH2": lambda scan: scan.nitrogen_hydrogens[2],
    "fr_Ar_N": lambda scan: scan.atoms(7, True),
}


@lru_cache(maxsize=1)
def _fragment_plan() -> tuple[tuple[str, Any, Any, Any, Any], ...]:
    """(name, RDKit's function, atoms needed, group needed, one-atom count) of each
    fragment count whose RDKit pattern is the SMARTS restated in :data:`_FRAGMENT_NEEDS`."""
    functions = dict(_descriptor_functions())
    plan = []
    for name, (smarts, needs) in _FRAGMENT_NEEDS.items():
        function = functions[name]
        pattern = (getattr(function, "__defaults__", None) or (None,))[-1]
        expected = Chem.MolToSmarts(Chem.MolFromSmarts(smarts))
        if isinstance(pattern, Chem.Mol) and Chem.MolToSmarts(pattern) == expected:
            group, one_atom = _FRAGMENT_NEEDS_HYDROGENS.get(name), _ONE_ATOM.get(name)
            plan.append((name, function, needs, group, one_atom))
    return tuple(plan)


def _fragments(mol: Chem.Mol, known: dict[Any, Any]) -> dict[str, int]:
    """The counts of :func:`_fragment_plan`: 0 when the atoms a pattern needs are missing,
    for a one-atom pattern the scan's count of those atoms, else RDKit's own count."""
    scan: _Scan = _needed(known, _atom_scan, mol)
    kinds = scan.kinds
    plain = not (kinds[2] or kinds[3])  # no hydrogen atom: hydrogen counts are the atoms'
    counts: dict[str, int] = {}
    for name, function, needs, group, one_atom in _fragment_plan():
        for z, aromatic, least in needs:
            have = kinds[2 * z] + kinds[2 * z + 1] if aromatic is None else kinds[2 * z + aromatic]
            if have < least:
                counts[name] = 0
                break
        else:
            if plain and group is not None and not group(scan):
                counts[name] = 0
            elif plain and one_atom is not None:
                counts[name] = min(one_atom(scan), _MAX_MATCHES)
            else:
                counts[name] = int(function(mol))
    return counts


# How a value is read from its intermediate: RDKit's own expressions (``max(EStateIndices)``,
# ``max(abs(lowest), abs(highest))``...), which give the same floats.
def _valence_electrons(scan: _Scan) -> int:
    return scan.valence_electrons


def _itself(value: Any) -> Any:
    return value


def _max(values: NDArray[np.float64]) -> Any:
    return values.max()


def _min(values: NDArray[np.float64]) -> Any:
    return values.min()


def _max_abs(values: NDArray[np.float64]) -> Any:
    return np.abs(values).max()


def _min_abs(values: NDArray[np.float64]) -> Any:
    return np.abs(values).min()


def _max_abs_pair(pair: tuple[float, float]) -> float:
    return max(abs(pair[0]), abs(pair[1]))


def _min_abs_pair(pair: tuple[float, float]) -> float:
    return min(abs(pair[0]), abs(pair[1]))


_ITEM_KEYS: dict[Callable[[Any], Any], Any] = {}
"""The key of each getter made by :func:`_item`."""


@cache
def _item(key: Any) -> Callable[[Any], Any]:
    """``itemgetter(key)``, one per key, its key remembered: steps that read items of one
    intermediate side by side are read together (:func:`_segments`)."""
    getter = itemgetter(key)
    _ITEM_KEYS[getter] = key
    return getter


def _shared_steps() -> dict[str, _Step]:
    """The descriptors taken from a shared intermediate, by name."""
    steps: dict[str, _Step] = {
        "MaxAbsEStateIndex": (_estate_indices, _max_abs),
        "MaxEStateIndex": (_estate_indices, _max),
        "MinAbsEStateIndex": (_estate_indices, _min_abs),
        "MinEStateIndex": (_estate_indices, _min),
        "qed": (_qed, _itself),
        "SPS": (_spacial_score, _itself),
        "BertzCT": (_bertz_ct, _itself),
        "BalabanJ": (_balaban_j, _itself),
        "Chi0": (_connectivity, _item(0)),
        "Chi1": (_connectivity, _item(1)),
        "MaxPartialCharge": (_partial_charges, _item(1)),
        "MinPartialCharge": (_partial_charges, _item(0)),
        "MaxAbsPartialCharge": (_partial_charges, _max_abs_pair),
        "MinAbsPartialCharge": (_partial_charges, _min_abs_pair),
        "Ipc": (_information_content_of, _item(0)),
        "AvgIpc": (_information_content_of, _item(1)),
        "MolLogP": (_crippen, _item(0)),
        "MolMR": (_crippen, _item(1)),
    }
    steps["NumRotatableBonds"] = (_rotatable_bonds, _itself)
    steps["NumHAcceptors"] = (None, _acceptors)
    for name, *_ in _fragment_plan():  # the others: RDKit's own functions
        steps[name] = (_fragments, _item(name))
    bcut = ("MWHI", "MWLOW", "CHGHI", "CHGLO", "LOGPHI", "LOGPLOW", "MRHI", "MRLOW")
    for i, suffix in enumerate(bcut):
        steps[f"BCUT2D_{suffix}"] = (_bcut, _item(i))
    for prefix, intermediate, bins in (
        ("SlogP_VSA", _slogp_vsa, 12),
        ("SMR_VSA", _smr_vsa, 10),
        ("PEOE_VSA", _peoe_vsa, 14),
        ("EState_VSA", _estate_vsa, 11),
        ("VSA_EState", _vsa_estate, 10),
    ):
        for i in range(bins):
            steps[f"{prefix}{i + 1}"] = (intermediate, _item(i))
    return steps


@lru_cache(maxsize=4)
def _plan(names: tuple[str, ...]) -> tuple[_Step, ...]:
    """How to compute each of ``names``: from a shared intermediate, or RDKit's function."""
    shared = _shared_steps()
    functions = dict(_descriptor_functions())
    plan: list[_Step] = []
    for name in names:
        if name == "NumValenceElectrons":
            plan.append((_atom_scan, _valence_electrons))
        elif name == "NumRadicalElectrons":
            plan.append((None, _radical_electrons))
        elif name in shared:
            plan.append(shared[name])
        else:
            plan.append((None, functions[name]))
    return tuple(plan)


@lru_cache(maxsize=1)
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


# A segment is a plan step, or a run of steps that read items of the same intermediate:
# (intermediate, read, getters), ``getters`` None for one step, else the steps' own getters,
# and ``read`` then returns all their items at once.
_Getters = tuple[Callable[[Any], Any], ...]
_Segment = tuple[_Intermediate | None, Callable[[Any], Any], _Getters | None]


@lru_cache(maxsize=4)
def _segments(names: tuple[str, ...]) -> tuple[_Segment, ...]:
    """:func:`_plan` of ``names`` with each run of item reads of one intermediate (the 12
    ``SlogP_VSA`` bins, the ``fr_`` counts, logP and MR...) merged into one segment."""
    segments: list[_Segment] = []
    run: list[Callable[[Any], Any]] = []

    def close() -> None:
        if len(run) > 1:
            keys = [_ITEM_KEYS[getter] for getter in run]
            segments[-1] = (segments[-1][0], itemgetter(*keys), tuple(run))
        run.clear()

    for intermediate, value in _plan(names):
        keyed = intermediate is not None and value in _ITEM_KEYS
        if keyed and run and segments[-1][0] is intermediate:
            run.append(value)
            continue
        close()
        segments.append((intermediate, value, None))
        if keyed:
            run.append(value)
    close()
    return tuple(segments)


def _cleaned(values: list[float]) -> NDArray[np.float64]:
    row = np.array(values, dtype=np.float64)
    # "not <=" also catches NaN, so inf, NaN and huge values are all cleaned in one pass
    row[~(np.abs(row) <= MAX_ABS_DESCRIPTOR)] = np.nan
    return row


def _row(mol: Chem.Mol, segments: tuple[_Segment, ...]) -> NDArray[np.float64]:
    """Run the plan's ``segments`` on ``mol``: each shared intermediate once, each value
    from it (or RDKit). A value that fails is NaN, and only that value: a segment of
    several values that fails is read again one value at a time."""
    known: dict[Any, Any] = {}
    values: list[float] = []
    append = values.append
    extend = values.extend
    get = known.get
    for intermediate, read, getters in segments:
        try:
            if intermediate is None:
                append(float(read(mol)))
                continue
            got = get(intermediate, known)  # ``known`` itself: not computed yet
            if got is known or isinstance(got, Exception):
                got = _needed(known, intermediate, mol)  # computes, or raises the error
            if getters is None:
                append(float(read(got)))
            else:
                extend(tuple(map(float, read(got))))  # all or nothing appended
        except Exception:  # RDKit descriptors raise many unrelated types on odd molecules
            if getters is None:
                append(np.nan)
            else:  # only item reads of an intermediate are merged (_segments)
                assert intermediate is not None
                extend(_one_by_one(mol, known, intermediate, getters))
    return _cleaned(values)


def _one_by_one(
    mol: Chem.Mol, known: dict[Any, Any], intermediate: _Intermediate, getters: _Getters
) -> list[float]:
    """The values of a segment that failed, each read on its own (NaN where it fails)."""
    values: list[float] = []
    for getter in getters:
        try:
            values.append(float(getter(_needed(known, intermediate, mol))))
        except Exception:
            values.append(np.nan)
    return values


def physchem_row(mol: Chem.Mol) -> NDArray[np.float64]:
    """Return the :data:`PHYSCHEM_DESCRIPTORS` of ``mol`` as float64, in that order.

    Each value is RDKit's own (the same numbers as the full set's columns of those names,
    bit for bit); failures and absurd values are NaN.

    Examples
    --------
    >>> row = physchem_row(Chem.MolFromSmiles("CCO"))
    >>> round(float(row[PHYSCHEM_DESCRIPTORS.index("MolLogP")]), 4), len(row)
    (-0.0014, 58)
    """
    return _row(mol, _segments(PHYSCHEM_DESCRIPTORS))


def descriptor_row(mol: Chem.Mol) -> NDArray[np.float64]:
    """Return every RDKit 2D descriptor of ``mol`` as float64; failures and absurd values are NaN.

    A descriptor that raises, is not finite, or exceeds :data:`MAX_ABS_DESCRIPTOR` in
    magnitude gives NaN, so downstream models see "missing" rather than a huge number.
    Shared intermediates are computed once (see the module docstring); every value equals
    RDKit's own function's, bit for bit, except those bounded on molecules over
    :data:`MAX_CUBIC_ATOMS` atoms.

    Examples
    --------
    >>> row = descriptor_row(Chem.MolFromSmiles("CCO"))
    >>> round(float(row[descriptor_names().index("MolWt")]), 2)
    46.07
    """
    return _row(mol, _segments(descriptor_names()))


def reference_descriptor_row(
    mol: Chem.Mol, names: Sequence[str] | None = None
) -> NDArray[np.float64]:
    """The same row computed the plain way: RDKit's function for each descriptor in turn.

    This is what ``Descriptors.CalcMolDescriptors`` does (with ``Ipc``/``AvgIpc`` from
    :func:`characteristic_polynomial`, and the values cleaned as :func:`descriptor_row`
    cleans them): the reference that the shared computation is tested and benchmarked
    against. Slow; not used for features.

    Examples
    --------
    >>> mol = Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1")
    >>> bool(np.array_equal(reference_descriptor_row(mol), descriptor_row(mol), equal_nan=True))
    True
    """
    functions = dict(_descriptor_functions())
    values: list[float] = []
    wanted = descriptor_names() if names is None else tuple(names)
    for name in wanted:
        if name in ("Ipc", "AvgIpc"):
            values.append(np.nan)  # filled in below, from one polynomial, as before
            continue
        try:
            values.append(float(functions[name](mol)))
        except Exception:  # as descriptor_row: unusable means NaN
            values.append(np.nan)
    for column, name in enumerate(wanted):
        if name in ("Ipc", "AvgIpc"):
            try:
                values[column] = _information_content(mol)[name == "AvgIpc"]
            except Exception:
                values[column] = np.nan
    return _cleaned(values)
