"""Atom attributions of a fitted model: which atoms move its prediction, and by how much.

``qemlflow explain`` writes, per molecule, the weights as JSON and an RDKit similarity
map; :mod:`qemlflow.explain.attribution` defines the methods.
"""

from __future__ import annotations

from qemlflow.explain.attribution import (
    AUTO,
    METHOD_DEFINITIONS,
    METHODS,
    AtomAttribution,
    attribute,
    choose_method,
    masked_smiles,
)
from qemlflow.explain.writing import (
    EXPLANATION_FORMAT,
    IMAGE_FORMATS,
    ExplainResult,
    available_image_formats,
    explain,
    similarity_map,
)

__all__ = [
    "AUTO",
    "EXPLANATION_FORMAT",
    "IMAGE_FORMATS",
    "METHODS",
    "METHOD_DEFINITIONS",
    "AtomAttribution",
    "ExplainResult",
    "attribute",
    "available_image_formats",
    "choose_method",
    "explain",
    "masked_smiles",
    "similarity_map",
]
