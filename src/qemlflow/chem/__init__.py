"""The RDKit boundary: the only package in QeMLflow that imports RDKit directly."""

from qemlflow.chem.cluster import butina_clusters
from qemlflow.chem.molecule import (
    MolResult,
    Reason,
    canonical_smiles,
    inchikey,
    murcko_scaffold,
    parse_smiles,
    smiles_inchikey,
    standardize_mol,
    standardize_smiles,
)
from qemlflow.chemistry import DEFAULT_POLICY, ChemistryPolicy
from qemlflow.limits import DEFAULT_LIMITS, MoleculeLimits

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_POLICY",
    "ChemistryPolicy",
    "MolResult",
    "MoleculeLimits",
    "Reason",
    "butina_clusters",
    "canonical_smiles",
    "inchikey",
    "murcko_scaffold",
    "parse_smiles",
    "smiles_inchikey",
    "standardize_mol",
    "standardize_smiles",
]
