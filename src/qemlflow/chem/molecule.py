"""Parse, validate and standardize molecules; every failure carries a reason code."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

from rdkit import Chem, rdBase
from rdkit.Chem.MolStandardize import rdMolStandardize
from rdkit.Chem.Scaffolds import MurckoScaffold

from qemlflow.chem.cleanup import clean_neutral, untouched
from qemlflow.chem.parent import Refusal, _choose_parent
from qemlflow.chemistry import DEFAULT_POLICY, ChemistryPolicy
from qemlflow.limits import DEFAULT_LIMITS, MoleculeLimits

__all__ = [
    "MolResult",
    "Reason",
    "canonical_smiles",
    "inchikey",
    "murcko_scaffold",
    "parse_smiles",
    "smiles_inchikey",
    "standardize_mol",
    "standardize_smiles",
]

# RDKit writes parse errors to stderr; we turn them into reason codes instead.
rdBase.DisableLog("rdApp.*")


class Reason(StrEnum):
    """Why a molecule was rejected."""

    EMPTY = "empty"
    NOT_TEXT = "not_text"
    UNPARSABLE = "unparsable"
    SANITIZATION = "sanitization_error"
    NO_ATOMS = "no_atoms"
    STANDARDIZATION = "standardization_error"
    TOO_LARGE = "too_large"
    TIMEOUT = "timeout"
    UNSUPPORTED_CHEMISTRY = "unsupported_chemistry"
    PARENT_TOO_SMALL = "parent_too_small"


@dataclass(frozen=True, slots=True)
class MolResult:
    """A parsed molecule, or the reason it could not be parsed.

    ``mol`` and ``smiles`` are set on success; ``reason`` and ``detail`` on failure.
    """

    mol: Chem.Mol | None
    smiles: str | None
    reason: Reason | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """True when the molecule was parsed (and standardized, when asked)."""
        return self.reason is None


def _failure(reason: Reason, detail: str) -> MolResult:
    return MolResult(mol=None, smiles=None, reason=reason, detail=detail)


def parse_smiles(smiles: Any, *, limits: MoleculeLimits | None = DEFAULT_LIMITS) -> MolResult:
    """Parse and sanitize one SMILES string, telling why when it fails.

    A SMILES longer than ``limits.max_smiles_length`` is refused before parsing, a molecule
    with more than ``limits.max_heavy_atoms`` heavy atoms before sanitization (reason
    ``too_large``); ``limits=None`` admits anything.

    Examples
    --------
    >>> parse_smiles("c1ccccc1O").smiles
    'Oc1ccccc1'
    >>> parse_smiles("C1CC").reason
    <Reason.UNPARSABLE: 'unparsable'>
    >>> parse_smiles("c1cccc1").reason
    <Reason.SANITIZATION: 'sanitization_error'>
    >>> parse_smiles("  ").reason
    <Reason.EMPTY: 'empty'>
    >>> parse_smiles("C" * 400).detail
    '400 heavy atoms, over the limit of 300 (raise limits.max_heavy_atoms to admit it)'
    """
    parsed = _parse(smiles, limits)
    if not isinstance(parsed, Chem.Mol):
        return parsed
    return MolResult(mol=parsed, smiles=Chem.MolToSmiles(parsed))


def _parse(smiles: Any, limits: MoleculeLimits | None) -> Chem.Mol | MolResult:
    """:func:`parse_smiles`'s molecule, or its failure, without writing the SMILES."""
    if smiles is None or (isinstance(smiles, float) and smiles != smiles):
        return _failure(Reason.EMPTY, "no SMILES given")
    if not isinstance(smiles, str):
        return _failure(Reason.NOT_TEXT, f"expected a SMILES string, got {type(smiles).__name__}")
    text = smiles.strip()
    if not text:
        return _failure(Reason.EMPTY, "SMILES is empty")
    if limits is not None and (problem := limits.length_problem(text)):
        return _failure(Reason.TOO_LARGE, problem)
    mol = Chem.MolFromSmiles(text, sanitize=False)
    if mol is None:
        return _failure(Reason.UNPARSABLE, f"cannot parse SMILES {_shown(text)}")
    if mol.GetNumAtoms() == 0:
        return _failure(Reason.NO_ATOMS, f"SMILES {_shown(text)} has no atoms")
    if limits is not None and (problem := limits.atom_problem(mol.GetNumHeavyAtoms())):
        return _failure(Reason.TOO_LARGE, problem)
    try:
        Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several unrelated exception types here
        return _failure(Reason.SANITIZATION, f"{_shown(text)}: {_first_line(exc)}")
    return mol


def _shown(text: Any, most: int = 200) -> str:
    """``repr`` of a SMILES for a message, cut to ``most`` characters (errors stay one line)."""
    shown = repr(text)
    return shown if len(shown) <= most else f"{shown[: most - 3]}..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@lru_cache(maxsize=1)
def _tautomers() -> Any:
    return rdMolStandardize.TautomerEnumerator()


def _parent(
    mol: Chem.Mol,
    tautomer: bool,
    policy: ChemistryPolicy,
    *,
    from_smiles: bool = False,
    connected: bool = False,
) -> Chem.Mol | Refusal:
    """The standardized parent of ``mol``, or why the policy refuses it.

    ``from_smiles``: ``mol`` was parsed from SMILES here, so cleanup may be skipped where
    it provably changes nothing (see :mod:`qemlflow.chem.cleanup`); the result is the same.
    ``connected``: that SMILES has no ``.``, so ``mol`` is one connected component (every
    atom of a SMILES is bonded to one written before it, but after a ``.``).
    """
    fast = from_smiles and policy.unsupported == "reject"
    # The usual molecule: untouched by cleanup, and so without a metal atom (untouched's
    # atom test matches every metal), which spares choose_parent its two metal tests.
    # Each of its fragments is untouched too: the same atoms, charges and bonds.
    plain = fast and untouched(mol)
    chosen = _choose_parent(
        mol, policy, copy=not from_smiles, metal_free=plain, connected=connected
    )
    if isinstance(chosen, Refusal):
        return chosen
    if plain:
        Chem.AssignStereochemistry(chosen, cleanIt=True, force=True)
        neutral = chosen
    else:
        # Under "largest_fragment" the parent has been through Cleanup: no longer as parsed.
        # (``mol`` itself, when it is the parent, is already known not to be untouched.)
        neutral = clean_neutral(chosen, from_smiles=fast and chosen is not mol)
    if tautomer:
        neutral = _tautomers().Canonicalize(neutral)
    if neutral is not chosen:
        Chem.SanitizeMol(neutral)
    # Else ``neutral`` took cleanup's untouched path: sanitized when it was parsed (or split
    # off by GetMolFrags, which sanitizes), then only its stereo re-perceived, which removes
    # chiral tags and bond stereo that are not stereo and sets CIP labels. Sanitizing again
    # would redo each step on the same graph, bonds, charges and hydrogen counts: cleanUp
    # (nitro-like groups are already in their sanitized form), cleanUpOrganometallics (no
    # metal), valences, symmetrizeSSSR (the same rings), Kekulize then setAromaticity (the
    # same aromatic systems, from a Kekule form of themselves), radicals, conjugation,
    # hybridization, cleanupChirality (drops tags of atoms that are not sp3: parsing did,
    # and re-perception only drops tags), adjustHs. It would only clear the computed
    # properties stereo perception left (``_StereochemDone``, ``_CIPRank``), and their sole
    # effect is that a later reader (MolToSmiles) does not re-perceive the already clean
    # stereo. tests/test_standardize_fast.py compares SMILES, ECFP bits and counts and the
    # physchem descriptors with RDKit's full path on the bundled sets.
    if (heavy := neutral.GetNumHeavyAtoms()) < policy.min_heavy_atoms:
        return Refusal(
            "parent_too_small",
            f"parent {Chem.MolToSmiles(neutral)!r} has {heavy} heavy atom(s), fewer than "
            f"{policy.min_heavy_atoms} (chemistry.min_heavy_atoms)",
        )
    result: Chem.Mol = neutral
    return result


def standardize_mol(
    mol: Chem.Mol, *, tautomer: bool = False, policy: ChemistryPolicy = DEFAULT_POLICY
) -> Chem.Mol:
    """Return the standardized parent of ``mol``.

    Steps, following RDKit MolStandardize and the ChEMBL structure pipeline: strip
    counter-ions and solvents, refuse chemistry the ``policy`` does not model (see
    :mod:`qemlflow.chem.parent`), cleanup (normalize functional groups, reionize),
    neutralize, and optionally canonicalize the tautomer. Raises ``ValueError`` when the
    policy refuses the molecule (:func:`standardize_smiles` returns the reason instead).

    Examples
    --------
    >>> from rdkit import Chem
    >>> Chem.MolToSmiles(standardize_mol(Chem.MolFromSmiles("CC(=O)[O-].CC[NH3+]")))
    'CCN'
    """
    parent = _parent(mol, tautomer, policy)
    if isinstance(parent, Refusal):
        raise ValueError(f"{parent.reason}: {parent.detail}")
    return parent


def standardize_smiles(
    smiles: Any,
    *,
    tautomer: bool = False,
    limits: MoleculeLimits | None = DEFAULT_LIMITS,
    policy: ChemistryPolicy = DEFAULT_POLICY,
) -> MolResult:
    """Parse, standardize and canonicalize one SMILES string.

    ``limits`` are checked while parsing (see :func:`parse_smiles`), before any
    standardization work is done. A molecule the chemistry ``policy`` refuses fails with
    reason ``unsupported_chemistry`` (metals, inorganics, mixtures) or
    ``parent_too_small``.

    Examples
    --------
    >>> standardize_smiles("[Cl-].CC[NH3+]").smiles
    'CCN'
    >>> standardize_smiles("not a smiles").reason
    <Reason.UNPARSABLE: 'unparsable'>
    >>> standardize_smiles("N[Pd](N)(Cl)Cl").reason
    <Reason.UNSUPPORTED_CHEMISTRY: 'unsupported_chemistry'>
    >>> standardize_smiles("C[NH3+].[Cl-]").reason
    <Reason.PARENT_TOO_SMALL: 'parent_too_small'>
    """
    parsed = _parse(smiles, limits)
    if not isinstance(parsed, Chem.Mol):
        return parsed
    try:
        mol = _parent(parsed, tautomer, policy, from_smiles=True, connected="." not in smiles)
    except Exception as exc:  # RDKit raises several unrelated exception types here
        return _failure(Reason.STANDARDIZATION, f"{_shown(smiles)}: {_first_line(exc)}")
    if isinstance(mol, Refusal):
        return _failure(Reason(mol.reason), f"{_shown(smiles)}: {mol.detail}")
    if mol.GetNumAtoms() == 0:
        return _failure(Reason.NO_ATOMS, f"{_shown(smiles)} has no atoms after standardization")
    return MolResult(mol=mol, smiles=Chem.MolToSmiles(mol))


def canonical_smiles(mol: Chem.Mol) -> str:
    """Return RDKit's canonical isomeric SMILES.

    Examples
    --------
    >>> from rdkit import Chem
    >>> canonical_smiles(Chem.MolFromSmiles("OC1=CC=CC=C1"))
    'Oc1ccccc1'
    """
    return str(Chem.MolToSmiles(mol))


def inchikey(mol: Chem.Mol) -> str:
    """Return the standard InChIKey, or an empty string when InChI cannot be made.

    Examples
    --------
    >>> from rdkit import Chem
    >>> inchikey(Chem.MolFromSmiles("CCO"))
    'LFQSCWFLJHTTHZ-UHFFFAOYSA-N'
    """
    return str(Chem.MolToInchiKey(mol) or "")  # type: ignore[no-untyped-call]


def smiles_inchikey(smiles: str) -> str:
    r"""Return the standard InChIKey of a SMILES ('' when it cannot be parsed or has none).

    Parsed with RDKit's stereo perception, so E/Z and R/S isomers keep distinct keys.

    Examples
    --------
    >>> smiles_inchikey("Cl/C=C/Cl") == smiles_inchikey("Cl/C=C\\Cl")
    False
    >>> smiles_inchikey("Oc1ccccn1") == smiles_inchikey("O=c1cccc[nH]1")  # tautomers
    True
    """
    mol = Chem.MolFromSmiles(smiles)
    return inchikey(mol) if mol is not None else ""


def murcko_scaffold(smiles: str, *, generic: bool = False, stereo: bool = False) -> str:
    """Return the Bemis-Murcko scaffold SMILES ('' for acyclic or unparsable molecules).

    Stereo-free by default, as Chemprop and DeepChem compute it (RDKit's
    ``MurckoScaffoldSmiles(includeChirality=False)``: the scaffold written as non-isomeric
    SMILES), so stereoisomers share one scaffold and a scaffold split cannot put them on
    both sides. ``stereo=True`` keeps R/S and E/Z in the scaffold.

    Examples
    --------
    >>> murcko_scaffold("CCc1ccccc1CC(=O)O")
    'c1ccccc1'
    >>> murcko_scaffold("CCO")
    ''
    >>> trans, cis = "CC1CC[C@H]2CCCC[C@@H]2C1", "CC1CC[C@H]2CCCC[C@H]2C1"  # decalins
    >>> murcko_scaffold(trans) == murcko_scaffold(cis)
    True
    >>> murcko_scaffold(trans, stereo=True), murcko_scaffold(trans)
    ('C1CC[C@H]2CCCC[C@@H]2C1', 'C1CCC2CCCCC2C1')
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return ""
    core = MurckoScaffold.GetScaffoldForMol(mol)  # type: ignore[no-untyped-call]
    if generic:
        core = MurckoScaffold.MakeScaffoldGeneric(core)  # type: ignore[no-untyped-call]
    return str(Chem.MolToSmiles(core, isomericSmiles=stereo))
