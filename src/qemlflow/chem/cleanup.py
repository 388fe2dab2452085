"""RDKit's cleanup and neutralization, at a fraction of the cost, with the same results.

:func:`clean_neutral` returns what ``Uncharger(canonicalOrder=True).uncharge(Cleanup(mol))``
returns, the standardization step that costs the most: RDKit's ``Cleanup`` rebuilds its
normalization and acid-base rule sets on every call (about 0.5 ms a drug-like molecule).
:func:`cleanup` runs the same steps as ``Cleanup`` (``cleanupInPlace`` in
``MolStandardize.cpp``) with those rule sets built once, so it is exact for any molecule:

1. ``RemoveHs``, 2. ``MetalDisconnector()``, 3. the ``Normalizer`` of the default
``CleanupParameters``, 4. their ``Reionizer``, 5. ``AssignStereochemistry(cleanIt=True,
force=True)``.

Most screening molecules are untouched by all of it, and for a molecule parsed from SMILES
a few substructure tests (:func:`untouched`) say so in microseconds. Each step is then a
no-op:

1. ``RemoveHs`` removes hydrogen atoms: none when no atom is ``[#1]``. Its other effects
   (property caches, re-sanitizing the sanitized molecule, dropping surplus explicit H
   counts of chiral atoms that may take implicit ones) change nothing either: chirality
   needs a bracket atom in SMILES, and bracket atoms take no implicit hydrogens.
2. Every ``MetalDisconnector`` rule starts at a metal atom: none when every atom is one of
   the non-metals of :mod:`qemlflow.chem.parent`.
3. RDKit's default normalizations (``normalizations.in``) each need a charged atom, but
   five: nitro ``[N,P,As,Sb;X3](=[O,S,Se,Te])=[O,S,Se,Te]``, pyridine oxide
   ``[nH0+0]=[OH0+0]``, azide ``[N]=[N]#[N]``, diazo ``[*]=[N]#[N]`` and sulfoxide
   ``[S+0;X3](=[O])``; :data:`_MAY_NORMALIZE` is a superset of those five.
4. The ``Reionizer`` moves protons to ionized acids (every base form in
   ``acid_base_pairs.in`` has a negative atom) and applies its charge corrections, which
   match uncharged isolated Li, Na, K, Mg, Ca (metals) or Cl atoms.
5. Stereochemistry is re-perceived in both paths.

The ``Uncharger`` then acts only on charged atoms (each of its four patterns needs one).

The charged atoms of nitro groups, N-oxides and nitrones (``[N+](=O)[O-]``,
``[n+][O-]``, ``C=[N+]([O-])C``; ~3 % of MUV) are left as they are too, when every charged
atom is in such a pair: an ``[O-]`` bonded to nothing but an ``[N+]`` without hydrogen,
that ``[N+]`` bonded to no other ``[O-]`` (so as many ``[N+]`` as ``[O-]``, no net charge):

3. The charged normalizations need a positive S, P or C, or a negative pnictogen, halogen
   or aromatic atom, or a negative atom bonded to an uncharged atom or to a carbon (the 1,3
   and 1,5 recombinations), or a positive O, or a positive N bonded to no negative N, O, P,
   S (the conjugated cations), or a positive N triple-bonded to N (hydrazine-diazonium:
   its N+ has no neighbour but that N and a C): none of them is in such a pair. Of the
   five uncharged ones, a paired ``[N+]`` can be none's reactant (nitro: a third bond to
   its ``[O-]`` makes valence 5, over the 4 of an N+), so :data:`_MAY_NORMALIZE_PAIRED`
   leaves it out.
4. The molecule stays neutral through the charge corrections (none match), so the
   ``Reionizer`` only moves a proton to an ionized acid, and every base form of
   ``acid_base_pairs.in`` has its negative atom on C, S, P, B or O, or a negative N or C:
   never an ``[O-]`` on N.
5. The ``Uncharger``: its positive patterns want a hydrogen (a paired ``[N+]`` has none)
   or no negative neighbour, its negative one no positive neighbour, its acid one an
   ``[O-]`` on C or S, two ``[O-]`` on one N (nitrate) or a halogen: none is a pair; with
   nothing matched and no net charge it changes nothing.

``tests/test_standardize_fast.py`` checks, on every bundled set, MUV and hostile inputs,
that RDKit's own ``Cleanup`` and this module give the same parents.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from qemlflow.chem.parent import _NON_METALS

__all__ = ["clean_neutral", "cleanup", "has_hydrogen_atoms", "untouched"]

#: Any atom that RemoveHs, the MetalDisconnector, a charged normalization, the
#: Reionizer or the Uncharger may act on: hydrogen, a charged atom, a metal, an isolated
#: chlorine atom (a Reionizer charge correction).
_MAY_CHANGE_ATOM = "[#1,!+0,#17X0," + "&".join(f"!#{n}" for n in sorted(_NON_METALS)) + "]"
#: Supersets of the reactants of RDKit's five default normalizations without a charged
#: atom: nitro, pyridine oxide and sulfoxide (a pnictogen or a three-connected sulfur
#: double-bonded to a chalcogen; one query costs less than two), azide and diazo (a
#: nitrogen-nitrogen triple bond).
_MAY_NORMALIZE = ("[#7,#15,#33,#51,#16X3]=[#8,#16,#34,#52]", "[#7]#[#7]")


#: The charged atoms left alone: an [O-] bonded only to an [N+] without hydrogen, and that
#: [N+], bonded to no other [O-] (nitro groups, N-oxides, nitrones).
_PAIRED_OXYGEN = "[#8-1X1]-[#7+1H0]"
_PAIRED_NITROGEN = "[#7+1H0;$(*-[#8-1X1]);!$(*(-[#8-1X1])-[#8-1X1])]"
#: :data:`_MAY_CHANGE_ATOM` but for the atoms of those pairs (slower: recursive SMARTS).
_MAY_CHANGE_UNPAIRED = f"{_MAY_CHANGE_ATOM[:-1]};!$({_PAIRED_OXYGEN});!$({_PAIRED_NITROGEN})]"
#: :data:`_MAY_NORMALIZE` where such pairs are: the nitrogen of a pair is no reactant.
_MAY_NORMALIZE_PAIRED = (
    "[#7,#15,#33,#51,#16X3;!$([#7+1H0]-[#8-1X1])]=[#8,#16,#34,#52]",
    *_MAY_NORMALIZE[1:],
)


@lru_cache(maxsize=1)
def _queries() -> tuple[Chem.Mol, tuple[Chem.Mol, ...], Chem.Mol, tuple[Chem.Mol, ...]]:
    """The atom test and the normalization tests; the same where N-oxide pairs are."""
    return (
        Chem.MolFromSmarts(_MAY_CHANGE_ATOM),
        tuple(Chem.MolFromSmarts(s) for s in _MAY_NORMALIZE),
        Chem.MolFromSmarts(_MAY_CHANGE_UNPAIRED),
        tuple(Chem.MolFromSmarts(s) for s in _MAY_NORMALIZE_PAIRED),
    )


@lru_cache(maxsize=1)
def _hydrogen() -> Chem.Mol:
    return Chem.MolFromSmarts("[#1]")


def has_hydrogen_atoms(mol: Chem.Mol) -> bool:
    """True when ``mol`` has hydrogen atoms (not counts): a standardized parent may keep one.

    Examples
    --------
    >>> has_hydrogen_atoms(Chem.MolFromSmiles("[2H]C")), has_hydrogen_atoms(Chem.MolFromSmiles("C"))
    (True, False)
    >>> has_hydrogen_atoms(Chem.MolFromSmiles("*C"))  # a dummy atom is not heavy either
    False
    """
    if mol.GetNumHeavyAtoms() == mol.GetNumAtoms():  # every atom heavy: no hydrogen atom
        return False
    return bool(mol.HasSubstructMatch(_hydrogen()))


@lru_cache(maxsize=1)
def _tools() -> tuple[Any, Any, Any, Any]:
    """RDKit's standardizers with the default parameters, built once per process."""
    return (
        rdMolStandardize.MetalDisconnector(),
        rdMolStandardize.NormalizerFromParams(rdMolStandardize.CleanupParameters()),
        rdMolStandardize.Reionizer(),
        rdMolStandardize.Uncharger(canonicalOrder=True),
    )


def untouched(mol: Chem.Mol) -> bool:
    """True when cleanup and neutralization provably leave ``mol`` (sanitized, parsed from
    SMILES) as it is, but for its stereochemistry being re-perceived.

    An untouched molecule has no metal atom (the metals are the elements outside
    :mod:`qemlflow.chem.parent`'s non-metals, as there), which standardization relies on.

    Examples
    --------
    >>> untouched(Chem.MolFromSmiles("CCO")), untouched(Chem.MolFromSmiles("CC[NH3+]"))
    (True, False)
    >>> untouched(Chem.MolFromSmiles("CS(C)=O"))  # a sulfoxide, normalized to [S+][O-]
    False
    >>> untouched(Chem.MolFromSmiles("C[N+](=O)[O-]")), untouched(Chem.MolFromSmiles("C[N+](=O)O"))
    (True, False)
    """
    atom, normalizations, unpaired_atom, paired_normalizations = _queries()
    if mol.HasSubstructMatch(atom):
        # Charged atoms, or hydrogen or metal or chlorine: only N-oxide pairs may stay.
        if mol.HasSubstructMatch(unpaired_atom):
            return False
        normalizations = paired_normalizations
    return not any(mol.HasSubstructMatch(query) for query in normalizations)


def cleanup(mol: Chem.Mol) -> Chem.Mol:
    """RDKit's ``rdMolStandardize.Cleanup(mol)``, with its rule sets built once: a new molecule.

    Examples
    --------
    >>> Chem.MolToSmiles(cleanup(Chem.MolFromSmiles("CC(=O)O[Na]")))
    'CC(=O)[O-].[Na+]'
    """
    disconnector, normalizer, reionizer, _ = _tools()
    result: Chem.Mol = Chem.RemoveHs(mol)
    disconnector.DisconnectInPlace(result)
    normalizer.normalizeInPlace(result)
    reionizer.reionizeInPlace(result)
    Chem.AssignStereochemistry(result, cleanIt=True, force=True)
    return result


def clean_neutral(mol: Chem.Mol, *, from_smiles: bool = False) -> Chem.Mol:
    """``Uncharger(canonicalOrder=True).uncharge(Cleanup(mol))``, computed only where it may
    differ from ``mol`` when ``mol`` was parsed from SMILES (and sanitized).

    An untouched molecule (``from_smiles``) is changed in place and returned; any other
    gets a new one.

    Examples
    --------
    >>> Chem.MolToSmiles(clean_neutral(Chem.MolFromSmiles("CC(=O)[O-]")))
    'CC(=O)O'
    >>> Chem.MolToSmiles(clean_neutral(Chem.MolFromSmiles("CN(=O)=O"), from_smiles=True))
    'C[N+](=O)[O-]'
    """
    if from_smiles and untouched(mol):
        Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
        return mol
    *_, uncharger = _tools()
    result: Chem.Mol = uncharger.uncharge(cleanup(mol))
    return result
