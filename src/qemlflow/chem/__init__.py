"""The RDKit boundary: the only package in QeMLflow that imports RDKit directly."""

from qemlflow.chem.molecule import (
    MolResult,
    Reason,
    canonical_smiles,
    inchikey,
    murcko_scaffold,
    parse_smiles,
    standardize_mol,
    standardize_smiles,
)

__all__ = [
    "MolResult",
    "Reason",
    "canonical_smiles",
    "inchikey",
    "murcko_scaffold",
    "parse_smiles",
    "standardize_mol",
    "standardize_smiles",
]
