"""Fingerprint rows from RDKit molecules, with the generators cached per process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

__all__ = [
    "MACCS_SIZE",
    "FingerprintKind",
    "RowFunction",
    "atom_pair_generator",
    "fill_rows",
    "fingerprint_function",
    "maccs_keys",
    "mol_for_features",
    "morgan_generator",
    "torsion_generator",
]

FingerprintKind = Literal["morgan", "atompair", "torsion", "maccs"]
RowFunction = Callable[[Chem.Mol], NDArray[Any]]
"""A function from one molecule to one feature row."""

MACCS_SIZE = 167
"""Width of a MACCS key row (RDKit keeps bit 0 unused, so 166 public keys + 1)."""


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


def fill_rows(
    smiles: Sequence[object], targets: Sequence[tuple[NDArray[Any], RowFunction]]
) -> NDArray[np.bool_]:
    """Parse each SMILES once and write each row function's result into row ``i`` of its array.

    An item may also be an RDKit molecule, used as it is (one already parsed).

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
    for i, text in enumerate(smiles):
        if isinstance(text, str):
            mol = from_smiles(text)
        else:
            mol = text if isinstance(text, Mol) else None
        if mol is None or mol.GetNumAtoms() == 0:
            valid[i] = False
            continue
        for out, function in targets:
            out[i] = function(mol)
    return valid
