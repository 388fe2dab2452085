"""Admission limits: what a molecule may cost before any expensive work is done on it.

Parsing a SMILES is cheap and roughly linear in its length; standardization and some
descriptors are not (RDKit's ``Ipc`` grows with the fourth power of the atom count, tautomer
enumeration can explode). Every molecule is therefore checked twice before the expensive
steps: its SMILES length before parsing, its heavy-atom count right after. The defaults admit
real drugs, macrocycles and peptides of about 35 residues (semaglutide has 291 heavy atoms;
cyclosporin 85); a model or an experiment can set its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DEFAULT_LIMITS", "MoleculeLimits"]


@dataclass(frozen=True)
class MoleculeLimits:
    """The most one molecule may cost; a molecule over a limit is refused as ``too_large``.

    Parameters
    ----------
    max_smiles_length
        Characters of SMILES, checked before parsing.
    max_heavy_atoms
        Heavy (non-hydrogen) atoms, checked right after parsing, before standardization.
    time_budget_seconds
        Wall time for one molecule's parsing, standardization and featurization, enforced
        where that work runs in a process that can be stopped (the prediction service);
        a molecule over budget is refused as ``timeout``.

    Examples
    --------
    >>> MoleculeLimits().max_heavy_atoms
    300
    """

    max_smiles_length: int = 5_000
    max_heavy_atoms: int = 300
    time_budget_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_smiles_length < 1 or self.max_heavy_atoms < 1:
            raise ValueError("max_smiles_length and max_heavy_atoms must be at least 1")
        if not self.time_budget_seconds > 0:
            raise ValueError("time_budget_seconds must be above 0")

    def to_dict(self) -> dict[str, Any]:
        """The limits as a plain dict (recorded in step keys, run records, model cards)."""
        return asdict(self)

    def length_problem(self, smiles: str) -> str | None:
        """Why ``smiles`` is too long to parse, or None."""
        if len(smiles) <= self.max_smiles_length:
            return None
        return (
            f"SMILES of {len(smiles):,} characters, over the limit of "
            f"{self.max_smiles_length:,} (raise limits.max_smiles_length to admit it)"
        )

    def atom_problem(self, heavy_atoms: int) -> str | None:
        """Why a molecule with ``heavy_atoms`` heavy atoms is too large, or None."""
        if heavy_atoms <= self.max_heavy_atoms:
            return None
        return (
            f"{heavy_atoms:,} heavy atoms, over the limit of {self.max_heavy_atoms:,} "
            "(raise limits.max_heavy_atoms to admit it)"
        )

    def admission_problem(self, smiles: str) -> str | None:
        """Why ``smiles`` is refused, or None; parses only a SMILES that could be too large.

        Every heavy atom takes at least one character, so a SMILES no longer than
        ``max_heavy_atoms`` is admitted without parsing: the check costs nothing for the
        molecules that pass it.

        Examples
        --------
        >>> MoleculeLimits(max_heavy_atoms=3).admission_problem("CCCC")
        '4 heavy atoms, over the limit of 3 (raise limits.max_heavy_atoms to admit it)'
        >>> MoleculeLimits(max_heavy_atoms=3).admission_problem("[H]C([H])([H])[H]") is None
        True
        """
        text = smiles.strip()
        if problem := self.length_problem(text):
            return problem
        if len(text) <= self.max_heavy_atoms:
            return None
        from rdkit import Chem

        mol = Chem.MolFromSmiles(text, sanitize=False)
        return None if mol is None else self.atom_problem(mol.GetNumHeavyAtoms())


DEFAULT_LIMITS = MoleculeLimits()
"""The limits of every model and dataset that does not set its own."""
