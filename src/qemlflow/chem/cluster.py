"""Group molecules by structural similarity (Butina clustering of Morgan fingerprints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from rdkit import DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.ML.Cluster import Butina

from qemlflow.chem.molecule import parse_smiles
from qemlflow.errors import ConfigError

__all__ = ["butina_clusters"]


def butina_clusters(
    smiles: Sequence[Any],
    cutoff: float = 0.35,
    radius: int = 2,
    n_bits: int = 2048,
) -> npt.NDArray[np.int64]:
    """Return one Butina cluster id per molecule.

    Molecules are encoded as Morgan bit fingerprints (``radius=2`` is ECFP4) and
    clustered with the Taylor-Butina algorithm on Tanimoto *distance*: two molecules
    are neighbours when ``1 - tanimoto <= cutoff``. Cluster ids are numbered in the
    order RDKit returns the clusters (largest first). Unparsable SMILES each get a
    singleton cluster, numbered after the others in input order, so no molecule is lost.

    The full lower-triangle distance matrix is held in memory: O(n^2) time and memory,
    comfortable up to a few tens of thousands of molecules.

    Parameters
    ----------
    smiles : sequence of str
        SMILES strings (invalid entries are allowed).
    cutoff : float, default 0.35
        Tanimoto distance threshold, in ``[0, 1]``.
    radius : int, default 2
        Morgan radius.
    n_bits : int, default 2048
        Fingerprint length.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)

    Examples
    --------
    >>> butina_clusters(["CCCCCCCC", "CCCCCCCCC", "c1ccccc1O", "not a smiles"])
    array([0, 0, 1, 2])
    """
    if not 0.0 <= cutoff <= 1.0:
        raise ConfigError(
            f"cluster cutoff {cutoff!r} is not a Tanimoto distance",
            "give a cutoff between 0 and 1 (0.35 is usual for ECFP4)",
        )
    if radius < 0 or n_bits < 1:
        raise ConfigError(
            f"invalid Morgan parameters radius={radius!r}, n_bits={n_bits!r}",
            "use radius >= 0 and n_bits >= 1 (e.g. radius=2, n_bits=2048)",
        )
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    valid: list[int] = []
    fingerprints: list[Any] = []
    for i, text in enumerate(smiles):
        mol = parse_smiles(text).mol
        if mol is not None:
            valid.append(i)
            fingerprints.append(generator.GetFingerprint(mol))

    ids = np.full(len(smiles), -1, dtype=np.int64)
    # Condensed lower triangle, row by row, as Butina.ClusterData expects.
    n_valid = len(fingerprints)
    distances = np.empty(n_valid * (n_valid - 1) // 2, dtype=np.float64)
    for i in range(1, n_valid):
        start = i * (i - 1) // 2
        similarities = DataStructs.BulkTanimotoSimilarity(fingerprints[i], fingerprints[:i])
        distances[start : start + i] = 1.0 - np.asarray(similarities, dtype=np.float64)
    clusters = Butina.ClusterData(  # type: ignore[no-untyped-call]  # RDKit is untyped
        distances, n_valid, cutoff, isDistData=True
    )
    for cluster_id, members in enumerate(clusters):
        for member in members:
            ids[valid[member]] = cluster_id
    unassigned = np.flatnonzero(ids < 0)
    ids[unassigned] = len(clusters) + np.arange(len(unassigned), dtype=np.int64)
    return ids
