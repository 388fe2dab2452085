"""Featurizers: scikit-learn transformers from SMILES to feature matrices.

Every featurizer takes a sequence of SMILES (list, NumPy array, pandas Series) and
returns a 2-D array with one row per input; a SMILES that cannot be parsed gives a
row of NaN. Fingerprints are float32 (0/1 bits or exact counts), anything that
includes RDKit descriptors float64.

Examples
--------
>>> from qemlflow.features import featurize, make_featurizer
>>> featurize(["CCO", "c1ccccc1"], {"type": "ecfp", "size": 1024}).shape
(2, 1024)
>>> make_featurizer([{"type": "ecfp", "counts": True}, "rdkit2d"]).to_spec()["type"]
'concat'
"""

from qemlflow.features.base import Featurizer
from qemlflow.features.concat import Concat
from qemlflow.features.descriptors import PhysChemDescriptors, RDKitDescriptors
from qemlflow.features.fingerprints import ECFP, FCFP, MACCS, AtomPair, Avalon, ErG, Torsion
from qemlflow.features.spec import FEATURIZERS, FeaturizerSpec, featurize, make_featurizer
from qemlflow.features.structure import SmilesColumn

__all__ = [
    "ECFP",
    "FCFP",
    "FEATURIZERS",
    "MACCS",
    "AtomPair",
    "Avalon",
    "Concat",
    "ErG",
    "Featurizer",
    "FeaturizerSpec",
    "PhysChemDescriptors",
    "RDKitDescriptors",
    "SmilesColumn",
    "Torsion",
    "featurize",
    "make_featurizer",
]
