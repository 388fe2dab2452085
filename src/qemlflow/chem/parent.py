"""The parent of a molecule: counter-ions and solvents stripped, unsupported chemistry refused.

The policy (the ``"reject"`` default of :class:`ChemistryPolicy`), after RDKit's
MolStandardize and the ChEMBL structure pipeline's ``get_parent``:

1. Ionic bonds drawn as covalent ones to alkali and alkaline-earth metals (``CC(=O)O[Na]``)
   are disconnected, as RDKit's MetalDisconnector does.
2. Counter-ions and solvents are stripped: monatomic alkali/alkaline-earth ions, every
   fragment without carbon and without a metal (halides, water, ammonia, sulfate, ...),
   and the organic counter-ions and solvents of :data:`COUNTER_IONS` (acetate, mesylate,
   maleate, citrate, ethanol, DMSO, ...). When every fragment is on that list, the list is
   the molecule and nothing is stripped.
3. What is left must be chemistry a fingerprint or a molecular graph can represent, or the
   molecule is refused as ``unsupported_chemistry``: any other metal (organometallics such
   as organotins, coordination complexes such as cisplatin, metal salts such as ZnCl2,
   inorganic salts such as K2Cr2O7), no carbon at all (inorganics), or two or more distinct
   organic components (mixtures, combination products). Scoring one fragment of those
   would silently score a different compound.
4. A parent with fewer than ``min_heavy_atoms`` heavy atoms is refused as
   ``parent_too_small``.

``unsupported="largest_fragment"`` keeps the earlier behaviour (the largest organic
fragment, metals disconnected) for users who want it; the size floor still applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from qemlflow.chemistry import DEFAULT_POLICY, ChemistryPolicy

__all__ = [
    "COUNTER_IONS",
    "Refusal",
    "choose_parent",
]

#: Organic counter-ions and solvents stripped from a parent (neutral forms; matched
#: without stereochemistry after neutralization). Carbon-free fragments need no entry.
COUNTER_IONS: tuple[str, ...] = (
    # acids of pharmaceutical salts
    "OC=O",
    "CC(=O)O",
    "OC(=O)C(F)(F)F",
    "CS(=O)(=O)O",
    "CCS(=O)(=O)O",
    "OS(=O)(=O)c1ccccc1",
    "Cc1ccc(S(=O)(=O)O)cc1",
    "OS(=O)(=O)CCO",
    "CC1(C)C2CCC1(CS(=O)(=O)O)C(=O)C2",
    "OC(=O)C=CC(=O)O",
    "OC(=O)CCC(=O)O",
    "OC(=O)CC(=O)O",
    "OC(=O)C(=O)O",
    "OC(=O)C(O)C(O)C(=O)O",
    "OC(=O)CC(O)C(=O)O",
    "OC(=O)CC(O)(CC(=O)O)C(=O)O",
    "CC(O)C(=O)O",
    "OCC(=O)O",
    "OC(=O)c1ccccc1",
    "OC(=O)C(O)C(O)C(O)C(O)CO",
    "OS(=O)(=O)c1ccc2ccccc2c1",
    "OC(=O)O",
    "CCC(=O)O",
    "OS(=O)(=O)C(F)(F)F",
    "O=S(=O)(NS(=O)(=O)C(F)(F)F)C(F)(F)F",
    "COS(=O)(=O)O",
    "CCOS(=O)(=O)O",
    "COP(=O)(O)OC",
    "CCOP(=O)(O)OCC",
    "N#CS",
    "N#CNC#N",
    "OS(=O)(=O)CCS(=O)(=O)O",
    "OS(=O)(=O)c1cccc2c(S(=O)(=O)O)cccc12",
    "OC(=O)c1cc(S(=O)(=O)O)ccc1O",
    "OC(=O)c1cc2ccccc2c(Cc2c(O)c(C(=O)O)cc3ccccc23)c1O",
    # bases of pharmaceutical salts
    "NC(CO)(CO)CO",
    "CNCC(O)C(O)C(O)C(O)CO",
    "C[N+](C)(C)CCO",
    "C[N+](C)(C)C",
    "CCNCC",
    "CCN(CC)CC",
    "NCCO",
    "OCCNCCO",
    "OCCN(CCO)CCO",
    "CN",
    "CNC",
    "C1CCNCC1",
    "C1CNCCN1",
    "NC1CCCCC1",
    "NCCN",
    "c1ccc(CNCCNCc2ccccc2)cc1",
    # solvents of crystallization
    "CO",
    "CCO",
    "CC(C)O",
    "CC(C)=O",
    "CS(C)=O",
    "CN(C)C=O",
    "CC#N",
    "ClCCl",
    "ClC(Cl)Cl",
    "CCOCC",
    "CCOC(C)=O",
    "C1CCOC1",
    "C1COCCO1",
    "Cc1ccccc1",
    "c1ccccc1",
    "c1ccncc1",
)

# Elements that are not metals; every other element counts as one.
_NON_METALS = frozenset(
    {0, 1, 2, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 33, 34, 35, 36, 52, 53, 54, 85, 86}
)
# Alkali and alkaline-earth metals: their ions are counter-ions, their bonds to
# heteroatoms are ionic bonds drawn as covalent ones.
_SALT_METALS = frozenset({3, 11, 19, 37, 55, 12, 20, 38, 56})


@dataclass(frozen=True)
class Refusal:
    """Why a molecule has no parent a model may score: a reason code and a detail."""

    reason: Literal["unsupported_chemistry", "parent_too_small"]
    detail: str


@lru_cache(maxsize=1)
def _queries() -> tuple[Chem.Mol, Chem.Mol, Chem.Mol]:
    """(a bond of a salt metal to a non-carbon, a metal atom, a carbon atom) as SMARTS
    queries, made from :data:`_SALT_METALS` and :data:`_NON_METALS`: one substructure test
    in RDKit answers what a Python loop over the atoms would."""
    salt = ",".join(f"#{n}" for n in sorted(_SALT_METALS))
    metal = "&".join(f"!#{n}" for n in sorted(_NON_METALS))
    return (
        Chem.MolFromSmarts(f"[{salt}]~[!#6]"),
        Chem.MolFromSmarts(f"[{metal}]"),
        Chem.MolFromSmarts("[#6]"),
    )


@lru_cache(maxsize=1)
def _tools() -> tuple[Any, Any, frozenset[str]]:
    uncharger = rdMolStandardize.Uncharger(canonicalOrder=True)
    listed = frozenset(_key(Chem.MolFromSmiles(s), uncharger) for s in COUNTER_IONS)
    return rdMolStandardize.LargestFragmentChooser(preferOrganic=True), uncharger, listed


def _key(fragment: Chem.Mol, uncharger: Any) -> str:
    """A fragment's identity for matching: neutralized, no stereochemistry."""
    return str(Chem.MolToSmiles(uncharger.uncharge(fragment), isomericSmiles=False))


def _metal_kind(fragment: Chem.Mol) -> tuple[str, str] | None:
    """(element, kind) of the first metal that is not a counter-ion, or None."""
    for atom in fragment.GetAtoms():
        number = atom.GetAtomicNum()
        if number in _NON_METALS:
            continue
        if atom.GetDegree() == 0:
            if number in _SALT_METALS:
                continue
            return atom.GetSymbol(), "metal ion"
        neighbours = {n.GetAtomicNum() for n in atom.GetNeighbors()}
        kind = "organometallic" if 6 in neighbours else "metal complex"
        return atom.GetSymbol(), kind
    return None


def _disconnect_salt_metals(mol: Chem.Mol) -> Chem.Mol:
    """Break alkali/alkaline-earth bonds to heteroatoms (``O[Na]`` -> ``[O-].[Na+]``)."""
    salt_bond, _, _ = _queries()
    if not mol.HasSubstructMatch(salt_bond):  # the usual case: no such bond to break
        return mol
    bonds = [
        bond
        for bond in mol.GetBonds()
        if {bond.GetBeginAtom().GetAtomicNum(), bond.GetEndAtom().GetAtomicNum()} & _SALT_METALS
        and 6 not in {bond.GetBeginAtom().GetAtomicNum(), bond.GetEndAtom().GetAtomicNum()}
    ]
    if not bonds:
        return mol
    editable = Chem.RWMol(mol)
    for bond in bonds:
        begin, end = bond.GetBeginAtom(), bond.GetEndAtom()
        metal, other = (begin, end) if begin.GetAtomicNum() in _SALT_METALS else (end, begin)
        editable.RemoveBond(begin.GetIdx(), end.GetIdx())
        metal_atom = editable.GetAtomWithIdx(metal.GetIdx())
        other_atom = editable.GetAtomWithIdx(other.GetIdx())
        metal_atom.SetFormalCharge(metal_atom.GetFormalCharge() + 1)
        other_atom.SetFormalCharge(other_atom.GetFormalCharge() - 1)
        metal_atom.SetNoImplicit(True)
    result = editable.GetMol()
    Chem.SanitizeMol(result)
    return result


def _sign(fragment: Chem.Mol) -> int:
    charge = sum(a.GetFormalCharge() for a in fragment.GetAtoms())
    return (charge > 0) - (charge < 0)


def _shown(fragments: list[Chem.Mol], most: int = 3) -> str:
    names = [str(Chem.MolToSmiles(f)) for f in fragments[:most]]
    return ", ".join(names) + (", ..." if len(fragments) > most else "")


def choose_parent(
    mol: Chem.Mol, policy: ChemistryPolicy = DEFAULT_POLICY, *, copy: bool = True
) -> Chem.Mol | Refusal:
    """Return the one component of ``mol`` a model should score, or why there is none.

    The result is not yet normalized or neutralized (see
    :func:`qemlflow.chem.standardize_mol`); the size floor is checked by the caller on
    the final parent. It is a molecule of its own, or with ``copy=False`` ``mol`` itself
    when ``mol`` is one organic component (a sanitized ``mol`` the caller may give away:
    the copy would only be sanitized again, which changes nothing in a sanitized molecule).

    Examples
    --------
    >>> from rdkit import Chem
    >>> Chem.MolToSmiles(choose_parent(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)[O-].[Na+]")))
    'CC(=O)Oc1ccccc1C(=O)[O-]'
    >>> choose_parent(Chem.MolFromSmiles("N[Pd](N)(Cl)Cl")).detail
    'contains Pd (metal complex); metal-containing molecules are not modelled'
    >>> choose_parent(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1.Cn1cnc2c1c(=O)n(C)c(=O)n2C")).reason
    'unsupported_chemistry'
    """
    return _choose_parent(mol, policy, copy=copy)


def _choose_parent(
    mol: Chem.Mol,
    policy: ChemistryPolicy,
    *,
    copy: bool,
    metal_free: bool = False,
    connected: bool = False,
) -> Chem.Mol | Refusal:
    """:func:`choose_parent`, told what the caller already knows, so as not to test it again.

    ``metal_free``: ``mol`` has no metal atom (as :func:`qemlflow.chem.cleanup.untouched`
    finds, from the same :data:`_NON_METALS`), so no bond of a salt metal to break and no
    metal to refuse. ``connected``: ``mol`` is one connected component (its SMILES has no
    ``.``), which GetMolFrags would otherwise count.
    """
    if policy.unsupported == "largest_fragment":
        chooser, *_ = _tools()
        parent: Chem.Mol = chooser.choose(rdMolStandardize.Cleanup(mol))
        return parent
    _, metal_atom, carbon = _queries()
    if metal_free:
        has_metal = False
    else:
        given, mol = mol, _disconnect_salt_metals(mol)
        connected = connected and mol is given  # (a broken salt bond splits it)
        has_metal = mol.HasSubstructMatch(metal_atom)
    if not has_metal and mol.GetNumAtoms() > 1 and (connected or len(Chem.GetMolFrags(mol)) == 1):
        # The usual case, one metal-free component: what GetMolFrags would return for it
        # (a sanitized copy; it copies single atoms another way) without its per-atom work.
        if not mol.HasSubstructMatch(carbon):
            return Refusal("unsupported_chemistry", "no carbon (inorganic); not modelled")
        if not copy:
            return mol
        whole = Chem.Mol(mol)
        Chem.SanitizeMol(whole)
        return whole
    floor = policy.min_heavy_atoms
    fragments = list(Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True))
    for fragment in fragments if has_metal else ():
        if (metal := _metal_kind(fragment)) is not None:
            element, kind = metal
            return Refusal(
                "unsupported_chemistry",
                f"contains {element} ({kind}); metal-containing molecules are not modelled",
            )
    organic = [f for f in fragments if f.HasSubstructMatch(carbon)]
    if not organic:
        return Refusal("unsupported_chemistry", "no carbon (inorganic); not modelled")
    if len(organic) == 1:  # the usual case: nothing to compare
        only: Chem.Mol = organic[0]
        return only
    _, uncharger, listed = _tools()
    distinct: dict[str, Chem.Mol] = {}
    for fragment in organic:
        distinct.setdefault(_key(fragment, uncharger), fragment)
    # A component under the size floor is never a parent: a counter-ion ("CI" of a
    # methiodide drawn apart) or a solvent missing from the list.
    sizeable = {k: f for k, f in distinct.items() if f.GetNumHeavyAtoms() >= floor}
    candidates = sizeable or distinct
    unlisted = {key: f for key, f in candidates.items() if key not in listed}
    components = list((unlisted or candidates).values())
    if len(components) > 1 and {-1, 1} <= {_sign(f) for f in components}:
        # Oppositely charged organic ions: a salt; the largest ion is the parent.
        return max(components, key=lambda f: f.GetNumHeavyAtoms())
    if len(components) > 1:
        return Refusal(
            "unsupported_chemistry",
            f"mixture of {len(components)} organic components ({_shown(components)}); "
            "a mixture or combination product is not modelled",
        )
    return components[0]
