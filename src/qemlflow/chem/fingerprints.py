"""Fingerprint rows from RDKit molecules, with the generators cached per process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from rdkit import Chem, DataStructs
from rdkit.Avalon import pyAvalonTools
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors, rdReducedGraphs

from qemlflow.chem.descriptors import MAX_CUBIC_ATOMS

__all__ = [
    "ERG_SIZE",
    "MACCS_SIZE",
    "AvalonGenerator",
    "CountRows",
    "FingerprintKind",
    "RowFunction",
    "atom_pair_generator",
    "avalon_generator",
    "count_rows",
    "erg_row",
    "fill_rows",
    "fingerprint_function",
    "maccs_keys",
    "mol_for_features",
    "morgan_generator",
    "torsion_generator",
]

FingerprintKind = Literal["morgan", "atompair", "torsion", "avalon", "maccs"]
RowFunction = Callable[[Chem.Mol], NDArray[Any]]
"""A function from one molecule to one feature row."""

MACCS_SIZE = 167
"""Width of a MACCS key row (RDKit keeps bit 0 unused, so 166 public keys + 1)."""

ERG_SIZE = 315
"""Width of an ErG row: 21 pairs of the six pharmacophore node types x 15 path lengths."""


def mol_for_features(smiles: object) -> Chem.Mol | None:
    """Parse one SMILES for featurization, or return None when it is not usable.

    This is the fast path: a plain sanitizing ``Chem.MolFromSmiles`` with no
    standardization and no reason codes (use :func:`qemlflow.chem.parse_smiles` for
    those). Anything that is not a string, does not parse, or has no atoms gives None.

    Examples
    --------
    >>> [mol_for_features(s) is None for s in ["CCO", "", None, "C1CC"]]
    [False, True, True, True]
    """
    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
    # MolFromSmiles("") gives a molecule with no atoms, not None
    return None if mol is None or mol.GetNumAtoms() == 0 else mol


@lru_cache(maxsize=32)
def morgan_generator(
    radius: int = 2, size: int = 2048, *, features: bool = False, chirality: bool = False
) -> Any:
    """Return a cached Morgan (ECFP, or FCFP when ``features``) fingerprint generator.

    Examples
    --------
    >>> morgan_generator(2, 2048) is morgan_generator(2, 2048)
    True
    """
    invariants = rdFingerprintGenerator.GetMorganFeatureAtomInvGen() if features else None
    return rdFingerprintGenerator.GetMorganGenerator(
        radius=radius,
        fpSize=size,
        includeChirality=chirality,
        atomInvariantsGenerator=invariants,
    )


@lru_cache(maxsize=32)
def atom_pair_generator(size: int = 2048) -> Any:
    """Return a cached atom-pair fingerprint generator.

    Examples
    --------
    >>> atom_pair_generator(1024).GetFingerprint(Chem.MolFromSmiles("CCO")).GetNumBits()
    1024
    """
    return rdFingerprintGenerator.GetAtomPairGenerator(fpSize=size)


@lru_cache(maxsize=32)
def torsion_generator(size: int = 2048) -> Any:
    """Return a cached topological-torsion fingerprint generator.

    Examples
    --------
    >>> torsion_generator(1024).GetFingerprint(Chem.MolFromSmiles("CCCCO")).GetNumOnBits()
    2
    """
    return rdFingerprintGenerator.GetTopologicalTorsionGenerator(fpSize=size)


class AvalonGenerator:
    """The Avalon toolkit's fingerprint (``rdkit.Avalon.pyAvalonTools``) behind the four
    methods of an RDKit fingerprint generator that the featurizers call, so it goes through
    the same bit, packed-bit and count paths as the Morgan, atom-pair and torsion ones.

    Avalon hashes a molecule's atoms, bonds, rings and short paths, with their counts in
    the count form; the TDC ADMET leaders (MapLight) pair its counts with ECFP counts. Its
    cost grows with the cube of the atom count (0.07 s at 300 atoms, 2 s at 1,000, two and a
    half minutes at 3,000): the feature engine's Avalon block gives NaN rows above
    :data:`~qemlflow.chem.descriptors.MAX_CUBIC_ATOMS` atoms without calling it.

    Examples
    --------
    >>> mol = Chem.MolFromSmiles("c1ccccc1O")
    >>> avalon = AvalonGenerator(512)
    >>> bits, counts = avalon.GetFingerprintAsNumPy(mol), avalon.GetCountFingerprintAsNumPy(mol)
    >>> bits.shape, counts.dtype, int(counts.max()) > 1
    ((512,), dtype('uint32'), True)

    The toolkit's bit form is not the count form thresholded: it hashes some features
    into more bits (phenol sets 20 bits of 1,024 and 17 counts).
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def GetFingerprint(self, mol: Chem.Mol) -> Any:  # noqa: N802 (RDKit generator method names)
        return pyAvalonTools.GetAvalonFP(mol, nBits=self.size)

    def GetCountFingerprint(self, mol: Chem.Mol) -> Any:  # noqa: N802 (RDKit generator method names)
        return pyAvalonTools.GetAvalonCountFP(mol, nBits=self.size)

    def GetFingerprintAsNumPy(self, mol: Chem.Mol) -> NDArray[np.uint8]:  # noqa: N802 (RDKit generator method names)
        row = np.zeros(self.size, dtype=np.uint8)
        DataStructs.ConvertToNumpyArray(self.GetFingerprint(mol), row)
        return row

    def GetCountFingerprintAsNumPy(self, mol: Chem.Mol) -> NDArray[np.uint32]:  # noqa: N802 (RDKit generator method names)
        row = np.zeros(self.size, dtype=np.uint32)
        counts = self.GetCountFingerprint(mol).GetNonzeroElements()
        row[list(counts)] = list(counts.values())
        return row


@lru_cache(maxsize=32)
def avalon_generator(size: int = 1024) -> AvalonGenerator:
    """Return a cached Avalon fingerprint generator (see :class:`AvalonGenerator`).

    Examples
    --------
    >>> avalon_generator(1024) is avalon_generator(1024)
    True
    """
    return AvalonGenerator(size)


def maccs_keys(mol: Chem.Mol) -> NDArray[np.uint8]:
    """Return the 167 MACCS keys of ``mol`` as a 0/1 uint8 row.

    Examples
    --------
    >>> int(maccs_keys(Chem.MolFromSmiles("c1ccccc1O")).sum())
    10
    """
    row = np.zeros(MACCS_SIZE, dtype=np.uint8)
    DataStructs.ConvertToNumpyArray(rdMolDescriptors.GetMACCSKeysFingerprint(mol), row)
    return row


def erg_row(mol: Chem.Mol) -> NDArray[np.float64]:
    """Return the Extended reduced Graph (ErG) fingerprint of ``mol`` (Stiefl et al., J.
    Chem. Inf. Model. 2006), RDKit's ``rdReducedGraphs.GetErGFingerprint`` with its
    defaults: the molecule reduced to pharmacophoric nodes (donor, acceptor, positive,
    negative, hydrophobic ring, aromatic ring), each pair of node types counted at each
    topological distance 1-15 with a fuzzy spill of 0.3 into the neighbouring distances.
    315 real values, float64. Its cost grows with the cube of the atom count (0.07 s at 300
    atoms, 2.5 s at 1,000, two minutes at 3,000), so above :data:`MAX_CUBIC_ATOMS` atoms the
    row is NaN, as the cubic RDKit descriptors are.

    Examples
    --------
    >>> row = erg_row(Chem.MolFromSmiles("OC(=O)c1ccccc1N"))
    >>> row.shape, row.dtype, bool(row.max() > 0)
    ((315,), dtype('float64'), True)
    """
    if mol.GetNumAtoms() > MAX_CUBIC_ATOMS:
        return np.full(ERG_SIZE, np.nan)
    # RDKit builds the reduced graph from a copy of the molecule, and a copy keeps the
    # distance matrix cached on the molecule: after anything that computed one (the
    # atom-pair fingerprint does), ErG measures the reduced graph's paths with the full
    # molecule's distances and gives other values (5 of 4,200 Lipophilicity molecules).
    # A copy without the cached properties, its rings found again as sanitization finds
    # them, gives the value of a freshly parsed molecule whatever ran before.
    fresh = Chem.Mol(mol)
    fresh.ClearComputedProps()
    Chem.GetSymmSSSR(fresh)
    return np.asarray(rdReducedGraphs.GetErGFingerprint(fresh), dtype=np.float64)


def _bit_vector_function(
    kind: FingerprintKind, *, size: int, radius: int, features: bool, chirality: bool
) -> Callable[[Chem.Mol], Any]:
    if kind == "maccs":
        return rdMolDescriptors.GetMACCSKeysFingerprint
    generator = _generator(kind, size=size, radius=radius, features=features, chirality=chirality)
    return generator.GetFingerprint  # type: ignore[no-any-return]


def _generator(
    kind: FingerprintKind, *, size: int, radius: int, features: bool, chirality: bool
) -> Any:
    if kind == "morgan":
        return morgan_generator(radius, size, features=features, chirality=chirality)
    if kind == "atompair":
        return atom_pair_generator(size)
    if kind == "torsion":
        return torsion_generator(size)
    if kind == "avalon":
        return avalon_generator(size)
    raise ValueError(f"unknown fingerprint kind {kind!r}")


@lru_cache(maxsize=64)
def fingerprint_function(
    kind: FingerprintKind,
    *,
    size: int = 2048,
    counts: bool = False,
    radius: int = 2,
    features: bool = False,
    chirality: bool = False,
    packed: bool = False,
) -> RowFunction:
    """Return a function that maps a molecule to one fingerprint row (a NumPy array).

    Bit rows are uint8 (0/1), count rows uint32. With ``packed=True`` bit rows come
    packed 8 to a byte, least significant bit first (``np.unpackbits(row,
    bitorder="little")`` undoes it); that skips building a 0/1 array per molecule
    and is what the featurizers use. ``size`` is ignored for MACCS (always 167 keys,
    bits only); ``radius``, ``features`` and ``chirality`` only apply to Morgan. The
    result, and the generator behind it, is cached per process.

    Examples
    --------
    >>> ecfp4 = fingerprint_function("morgan", size=2048, radius=2)
    >>> row = ecfp4(Chem.MolFromSmiles("CCO"))
    >>> row.shape, row.dtype, int(row.sum())
    ((2048,), dtype('uint8'), 6)
    >>> fingerprint_function("morgan", counts=True)(Chem.MolFromSmiles("CCO")).dtype
    dtype('uint32')
    >>> packed = fingerprint_function("morgan", packed=True)(Chem.MolFromSmiles("CCO"))
    >>> packed.shape, bool((np.unpackbits(packed, bitorder="little") == row).all())
    ((256,), True)
    """
    if kind == "maccs" and counts:
        raise ValueError("MACCS keys have no count form")
    options: dict[str, Any] = {
        "size": size,
        "radius": radius,
        "features": features,
        "chirality": chirality,
    }
    if packed and not counts:
        bit_vector = _bit_vector_function(kind, **options)
        to_bytes = DataStructs.BitVectToBinaryText
        frombuffer = np.frombuffer

        def packed_row(mol: Chem.Mol) -> NDArray[np.uint8]:
            return frombuffer(to_bytes(bit_vector(mol)), dtype=np.uint8)

        return packed_row
    if kind == "maccs":
        return maccs_keys
    generator = _generator(kind, **options)
    method: RowFunction = (
        generator.GetCountFingerprintAsNumPy if counts else generator.GetFingerprintAsNumPy
    )
    return method


class CountRows:
    """A count fingerprint's row function (``generator.GetCountFingerprintAsNumPy``) that
    can also write a molecule's counts into a row of zeros, setting only its non-zero
    elements (~50 of 2,048 for a drug-like ECFP4): :func:`fill_rows` does that for a
    target that is all zeros, as the feature engine's buffers are. The same numbers."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, mol: Chem.Mol) -> NDArray[np.uint32]:
        return np.asarray(self.generator.GetCountFingerprintAsNumPy(mol))

    def fill_zero_row(self, mol: Chem.Mol, row: NDArray[Any]) -> None:
        counts = self.generator.GetCountFingerprint(mol).GetNonzeroElements()
        row[list(counts)] = list(counts.values())  # one assignment of the ~50 elements


@lru_cache(maxsize=16)
def count_rows(
    kind: FingerprintKind,
    *,
    size: int = 2048,
    radius: int = 2,
    features: bool = False,
    chirality: bool = False,
) -> CountRows:
    """The :class:`CountRows` of a Morgan, atom-pair or torsion count fingerprint (cached).

    Examples
    --------
    >>> rows = count_rows("morgan")
    >>> out = np.zeros((1, 2048), dtype=np.uint32)
    >>> rows.fill_zero_row(Chem.MolFromSmiles("CCO"), out[0])
    >>> bool((out[0] == rows(Chem.MolFromSmiles("CCO"))).all()), int(out.sum())
    (True, 6)
    """
    return CountRows(
        _generator(kind, size=size, radius=radius, features=features, chirality=chirality)
    )


def fill_rows(
    smiles: Sequence[object],
    targets: Sequence[tuple[NDArray[Any], RowFunction]],
    *,
    zeros: bool = False,
) -> NDArray[np.bool_]:
    """Parse each SMILES once and write each row function's result into row ``i`` of its array.

    An item may also be an RDKit molecule, used as it is (one already parsed). With
    ``zeros=True`` (every output array is all zeros) a :class:`CountRows` function writes
    only a row's non-zero counts.

    ``targets`` pairs an output array (``len(smiles)`` rows; a column view is fine) with a
    function from a molecule to one row, e.g. from :func:`fingerprint_function`. Rows of
    unusable SMILES (see :func:`mol_for_features`) are left untouched; the returned mask
    says which rows were written. Molecules are dropped as soon as their row is written,
    which keeps memory flat and is measurably faster than holding a list of them.

    Examples
    --------
    >>> out = np.full((2, MACCS_SIZE), -1.0)
    >>> fill_rows(["CCO", "C1CC"], [(out, maccs_keys)]).tolist()
    [True, False]
    >>> int(out[0].sum()), float(out[1, 0])
    (9, -1.0)
    """
    valid = np.ones(len(smiles), dtype=bool)
    from_smiles = Chem.MolFromSmiles
    Mol = Chem.Mol
    if len(targets) == 1:  # the common case, kept free of an inner loop
        ((out, function),) = targets
        for i, text in enumerate(smiles):
            mol: Chem.Mol | None
            if isinstance(text, str):
                mol = from_smiles(text)
            else:
                mol = text if isinstance(text, Mol) else None
            if mol is None or mol.GetNumAtoms() == 0:
                valid[i] = False
            else:
                out[i] = function(mol)
        return valid
    # A CountRows target given with zeros=True fills its zero rows element by element.
    plan = [
        (out, function, getattr(function, "fill_zero_row", None) if zeros else None)
        for out, function in targets
    ]
    for i, text in enumerate(smiles):
        if isinstance(text, str):
            mol = from_smiles(text)
        else:
            mol = text if isinstance(text, Mol) else None
        if mol is None or mol.GetNumAtoms() == 0:
            valid[i] = False
            continue
        for out, function, fill in plan:
            if fill is None:
                out[i] = function(mol)
            else:
                fill(mol, out[i])
    return valid
