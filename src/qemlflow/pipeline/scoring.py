"""Scoring building blocks shared by the prediction service and screening.

:class:`FeaturePlan` featurizes molecules for a saved model and gives their ECFP4
applicability-domain bits, parsing each molecule once; :func:`training_smiles` finds the
molecules a run's model was fitted on, for its applicability domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["FeaturePlan", "MoleculeRows", "as_given", "ecfp_params", "training_smiles"]


def ecfp_params(spec: Any) -> dict[str, Any] | None:
    """The Morgan parameters of an ECFP/FCFP-only featurizer spec, else None."""
    from qemlflow.features import make_featurizer
    from qemlflow.features.concat import Concat
    from qemlflow.features.fingerprints import ECFP

    featurizer = make_featurizer(spec)
    if isinstance(featurizer, Concat):
        parts = featurizer.featurizers
        if len(parts) != 1:
            return None
        featurizer = make_featurizer(parts[0])
    if not isinstance(featurizer, ECFP):
        return None
    return {
        "radius": int(featurizer.radius),
        "size": int(featurizer.size),
        "counts": bool(featurizer.counts),
        "features": featurizer.type_name == "fcfp" or bool(getattr(featurizer, "features", False)),
        "chirality": bool(featurizer.chirality),
    }


class FeaturePlan:
    """Model features and ECFP4 domain bits for SMILES, parsing each molecule once.

    An ECFP-only model is featurized here with the fingerprint function directly (the
    featurizer's per-call set-up costs more than a small batch does); ECFP4 bits double
    as the domain fingerprints. A spec made of the feature engine's column blocks (the
    default model's ECFP counts and descriptors, and every other fingerprint) has its
    blocks, with the ECFP4 domain bits as one more, filled by the engine's own chunk
    function from one parse of each molecule, set up once here instead of on every call:
    the values are those of the featurizer's ``transform``. Any other spec goes through
    the model's own featurizer.
    """

    def __init__(self, spec: Any) -> None:
        from qemlflow.chem.fingerprints import fingerprint_function
        from qemlflow.features import make_featurizer
        from qemlflow.features.base import Featurizer

        self.spec = spec
        self.ecfp = ecfp_params(spec)
        self.featurizer = make_featurizer(spec) if self.ecfp is None else None
        self.blocks: list[Any] | None = None
        # The block whose ECFP4 counts give the domain bits (count > 0 is the bit: the
        # same environments, hashed and folded alike), else None: a domain block is added.
        self.counts_block: int | None = None
        if self.featurizer is not None and type(self.featurizer).transform is Featurizer.transform:
            from qemlflow.features._engine import FingerprintBlock
            from qemlflow.serve.domain import ECFP4_BITS

            self.blocks = list(self.featurizer._blocks())
            counts = FingerprintBlock("morgan", size=ECFP4_BITS, radius=2, counts=True)
            if counts in self.blocks:
                self.counts_block = self.blocks.index(counts)
            else:
                self.blocks.append(FingerprintBlock("morgan", size=ECFP4_BITS, radius=2))
        self.takes_molecules = self.blocks is not None and all(
            _reads_no_stereo(block) for block in self.blocks
        )
        """True when :meth:`compute_valid` may be given molecules as they are: blocks that
        read no stereo perception (see :func:`_reads_no_stereo`)."""
        self.row: Callable[[Any], NDArray[Any]] | None = None
        if self.ecfp is not None:
            self.row = fingerprint_function("morgan", packed=not self.ecfp["counts"], **self.ecfp)
        self.shares_domain_bits = self.ecfp == {
            "radius": 2,
            "size": 2048,
            "counts": False,
            "features": False,
            "chirality": False,
        }

    def compute(self, smiles: Sequence[Any]) -> tuple[NDArray[Any], NDArray[np.uint8]]:
        """Return (feature matrix with NaN rows where unusable, packed ECFP4 rows); items as
        in :meth:`compute_valid`."""
        X, bits, _ = self.compute_valid(smiles)
        return X, bits

    def compute_valid(
        self, smiles: Sequence[Any]
    ) -> tuple[NDArray[Any], NDArray[np.uint8], NDArray[np.bool_]]:
        """Return (features, packed ECFP4 rows, which SMILES gave a usable molecule).

        Rows of unusable SMILES are NaN in the features and zero in the bits. Where
        :attr:`takes_molecules`, an item may be an RDKit molecule, used as it is.
        """
        from qemlflow.chem.fingerprints import fill_rows
        from qemlflow.serve.domain import ecfp4_packed

        if self.blocks is not None:
            return self._compute_blocks(smiles)
        if self.ecfp is None or self.row is None:
            assert self.featurizer is not None
            bits, valid = ecfp4_packed(smiles)
            return self.featurizer.transform(list(smiles)), bits, valid
        rows = self.molecule_rows(len(smiles))
        rows.valid[:] = fill_rows(smiles, rows.targets)
        return rows.result(np.arange(len(smiles)))

    def _compute_blocks(
        self, smiles: Sequence[Any]
    ) -> tuple[NDArray[Any], NDArray[np.uint8], NDArray[np.bool_]]:
        """The featurizer's blocks and the domain bits, as ``compute`` of the feature
        engine assembles them (the same chunk function, the same unpacking)."""
        from qemlflow.features._engine import _column_slices, _encode_chunk, output_dtype

        assert self.blocks is not None
        blocks = self.blocks if self.counts_block is not None else self.blocks[:-1]
        valid, packed = _encode_chunk(self.blocks, list(smiles))
        X = np.empty((len(smiles), sum(b.width for b in blocks)), dtype=output_dtype(blocks))
        for block, columns, part in zip(blocks, _column_slices(blocks), packed, strict=False):
            block.unpack(part, X[:, columns])
        X[~valid] = np.nan
        if self.counts_block is None:
            bits = packed[-1]
        else:
            bits = np.packbits(packed[self.counts_block] > 0, axis=1, bitorder="little")
        bits[~valid] = 0
        return X, bits, valid

    @property
    def reads_molecules(self) -> bool:
        """True when :meth:`molecule_rows` may be used: an ECFP-only spec without chirality,
        whose rows are the same for a molecule and for its SMILES read back (see
        :class:`MoleculeRows`)."""
        return self.ecfp is not None and not self.ecfp["chirality"]

    def molecule_rows(self, n: int) -> MoleculeRows:
        """Empty feature and domain rows for ``n`` molecules of an ECFP-only spec."""
        return MoleculeRows(self, n)


class MoleculeRows:
    """An ECFP-only model's feature rows and ECFP4 domain bits for ``n`` molecules, written
    one molecule at a time (and the molecule dropped), as :meth:`FeaturePlan.compute_valid`
    writes them from SMILES.

    A molecule already parsed (standardized, say) can be written without writing and parsing
    its SMILES again: its Morgan rows without chirality are those of the SMILES read back,
    which keep its elements, isotopes, charges, hydrogen counts, bonds, rings and
    aromaticity, all a Morgan fingerprint reads. Hydrogen atoms are the exception (the SMILES
    reader removes them), so :meth:`write` is for molecules without any.
    """

    def __init__(self, plan: FeaturePlan, n: int) -> None:
        from qemlflow.serve.domain import ECFP4_BITS

        assert plan.ecfp is not None and plan.row is not None
        self.size: int = plan.ecfp["size"]
        self.counts: bool = plan.ecfp["counts"]
        self.valid = np.zeros(n, dtype=bool)
        self.bits = np.zeros((n, ECFP4_BITS // 8), dtype=np.uint8)
        if self.counts:
            self.features = np.zeros((n, self.size), dtype=np.float32)
            self.targets = [(self.features, plan.row), (self.bits, _ecfp4_row())]
        elif plan.shares_domain_bits:  # the model's packed rows are the domain bits
            self.features = self.bits
            self.targets = [(self.features, plan.row)]
        else:
            self.features = np.zeros((n, (self.size + 7) // 8), dtype=np.uint8)
            self.targets = [(self.features, plan.row), (self.bits, _ecfp4_row())]

    def write(self, i: int, mol: Any) -> None:
        """Write row ``i`` from a molecule without hydrogen atoms."""
        for out, function in self.targets:
            out[i] = function(mol)
        self.valid[i] = True

    def write_smiles(self, i: int, smiles: str) -> None:
        """Write row ``i`` from a SMILES, as :func:`~qemlflow.chem.fingerprints.fill_rows`
        does (left invalid when it gives no molecule or one without atoms)."""
        from qemlflow.chem.fingerprints import fill_rows

        self.valid[i] = fill_rows([smiles], [(out[i : i + 1], f) for out, f in self.targets])[0]

    def result(
        self, index: NDArray[np.intp]
    ) -> tuple[NDArray[Any], NDArray[np.uint8], NDArray[np.bool_]]:
        """(features, packed ECFP4 rows, which rows were written) of rows ``index``; rows not
        written are NaN in the features and zero in the bits."""
        whole = len(index) == len(self.valid)  # the usual case: no copy
        valid = self.valid if whole else self.valid[index]
        bits = self.bits if whole else self.bits[index]
        features = self.features if whole else self.features[index]
        if self.counts:
            X = features
        else:
            X = np.unpackbits(features, axis=1, count=self.size, bitorder="little")
            X = X.astype(np.float32)
        X[~valid] = np.nan
        return X, bits, valid


def _reads_no_stereo(block: Any) -> bool:
    """True for an engine block whose row of a molecule is that of its SMILES read back when
    the molecule has that SMILES' atoms in that order (see :func:`as_given`): fingerprints
    without chirality and the physchem descriptors. Not the full descriptor set: a
    standardized molecule carries stereo perception as its standardization left it, and
    ``NumAtomStereoCenters`` reads it (tests/test_standardize_fast.py)."""
    from qemlflow.features._engine import DescriptorBlock, FingerprintBlock

    if isinstance(block, FingerprintBlock):
        return not block.chirality
    return isinstance(block, DescriptorBlock) and block.subset == "physchem"


def as_given(given: str, result: Any) -> bool:
    """True when ``result`` (``standardize_smiles(given)``) holds a molecule that is, atom
    for atom, the molecule its SMILES reads back as, so that its features may be computed
    from it without writing and parsing the SMILES again (the same features: every molecule
    of the bundled sets and of MUV checked, tests/test_standardize_fast.py).

    That holds when standardization left the SMILES as given (already canonical and
    standardized, as in most prepared libraries): the same text read by the same parser,
    and the molecule's atoms in the order of that text (the SMILES writer visited them in
    index order), without hydrogen atoms (which the reader removes). Otherwise the SMILES is
    read back as before: a molecule in another atom order sums its per-atom contributions
    (logP, surface areas) in another order, which may change the last bit of a descriptor.
    """
    mol = result.mol if result is not None else None
    if mol is None or result.smiles != given.strip():
        return False
    from qemlflow.chem.cleanup import has_hydrogen_atoms

    if has_hydrogen_atoms(mol) or not mol.HasProp("_smilesAtomOutputOrder"):
        return False
    return bool(mol.GetProp("_smilesAtomOutputOrder") == _in_order(mol.GetNumAtoms()))


@lru_cache(maxsize=512)
def _in_order(n: int) -> str:
    """RDKit's ``_smilesAtomOutputOrder`` of a SMILES written in atom index order."""
    return "[" + ",".join(map(str, range(n))) + "]"


def _ecfp4_row() -> Callable[[Any], NDArray[Any]]:
    from qemlflow.chem.fingerprints import fingerprint_function
    from qemlflow.serve.domain import ECFP4_BITS

    return fingerprint_function("morgan", size=ECFP4_BITS, radius=2, packed=True)


def training_smiles(store: Store, run_id: str) -> list[str] | None:
    """The standardized SMILES a run's model was fitted on (its train split), or None
    when the run recorded no dataset or split."""
    from qemlflow.pipeline.steps import DatasetCodec, SplitCodec

    run = store.runs.get(run_id)
    outputs = {s.step: s.output for s in run.steps if s.output}
    if "standardize" not in outputs or "split" not in outputs:
        return None
    dataset = DatasetCodec().decode(store.blobs.get_bytes(outputs["standardize"]))
    split = SplitCodec().decode(store.blobs.get_bytes(outputs["split"]))
    return [dataset.smiles[int(i)] for i in split.train]
