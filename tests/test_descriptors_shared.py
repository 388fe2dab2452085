"""Descriptors computed once: every value bit for bit RDKit's own, and bounded on big molecules.

The reference is :func:`reference_descriptor_row`: RDKit's function for each descriptor in
turn on a freshly parsed molecule, as ``Descriptors.CalcMolDescriptors`` does. The whole of
every bundled set is checked by ``benchmarks/featurize.py --descriptors --check-all``; here
an evenly spaced sample of every set, and molecules chosen for the odd paths.
"""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Chem.EState import EState

import qemlflow
import qemlflow.chem.descriptors as descriptors
from qemlflow.chem.descriptors import (
    MAX_CUBIC_ATOMS,
    PHYSCHEM_DESCRIPTORS,
    descriptor_names,
    descriptor_row,
    physchem_row,
    reference_descriptor_row,
)
from qemlflow.data import BUNDLED
from qemlflow.features import Concat, PhysChemDescriptors, RDKitDescriptors, make_featurizer

SAMPLE = 2000
ODD = [
    "[H][H]",  # hydrogen atoms only: no heavy atom
    "[H]C([H])([H])[H]",  # explicit hydrogens: QED's RemoveHs path
    "[2H]C([2H])([2H])O",  # isotopes
    "C[CH2]",  # a radical
    "[Na+].[Cl-]",  # disconnected ions: unreachable atom pairs in the EState sums
    "c1ccccc1.c1ccccc1",
    "*C(=O)O",  # a dummy atom
    "[Fe]",
    "C",
    "ICCI",
    "P(=O)(O)(O)O",
    "[Si](C)(C)(C)C",
    "N=[N+]=[N-]",
    "F/C=C/F",  # stereo double bond (SPS)
    "C[C@H](N)C(=O)O",  # stereo centre (SPS)
    "B(O)(O)O",
    "CC(C)(C)[Hg]Cl",
    "[O-][N+](=O)c1ccc(I)cc1",
    # every branch of the Crippen hydrogen typing (MolLogP, MolMR from one typing)
    *("O", "[OH-]", "OO", "CC(=O)O", "OC=C", "Oc1ccccc1", "CO", "ON", "OS", "OB(O)O"),
    *("C#CO", "OC#N", "[SH]c1ccccc1", "P", "[NH4+]", "OCl", "C[Se]O", "OC(=S)C"),
    *("[OH3+]", "C[OH2+]", "c1cc[oH+]c1", "OC(=N)C", "O=C1C=CC(=O)N1O"),
    # the strict rotatable-bond exclusions (CX3, tert-butyl, amide-like ends, amidinium),
    # alone and where both ends of one bond are amide-like for different reasons
    *("CCC(F)(F)F", "CCC(Cl)(Cl)Cl", "CCCC(C)(C)C", "CCC(=O)NCC", "CCC(=S)OCC"),
    *("NC(=O)C(=O)N", "CC(=O)NNC(C)=O", "CCC(=[NH2+])NCC", "CC(=O)OC(C)=O", "CCSC(=O)CC"),
    *("[H]OC(=O)CC", "CC#CCC", "C(C(F)(F)F)C(C)(C)C"),
    # the fragment counts' shortcuts: acids, phenol, quaternary N, NH2 on an aromatic ring
    *("CC(=O)[O-]", "OP(=O)(O)CC", "Oc1ccccc1", "C[N+](C)(C)C", "Nc1ccccc1", "NNc1ccccc1"),
    *("c1nn[nH]n1", "c1cnc[nH]1", "NC(=N)N", "CS(=O)(=O)NC", "[H]N([H])c1ccccc1"),
]


def bundled_sample() -> list[str]:
    """An evenly spaced sample of every bundled set, in proportion to its size."""
    folder = Path(qemlflow.__file__).parent / "data" / "bundled"
    columns = {
        name: pd.read_csv(folder / d.filename)[d.smiles_column] for name, d in BUNDLED.items()
    }
    total = sum(len(column) for column in columns.values())
    sample: list[str] = []
    for column in columns.values():
        take = max(1, round(SAMPLE * len(column) / total))
        sample += [str(s) for s in column.iloc[np.linspace(0, len(column) - 1, take).astype(int)]]
    return sample


def bits(row: np.ndarray) -> bytes:
    return np.ascontiguousarray(row, dtype=np.float64).tobytes()


@pytest.mark.slow  # ~2,000 molecules, each computed three ways: 15-40 s
def test_every_descriptor_is_rdkits_own_bit_for_bit_on_a_sample_of_every_bundled_set() -> None:
    names = descriptor_names()
    physchem_columns = [names.index(name) for name in PHYSCHEM_DESCRIPTORS]
    differences: list[str] = []
    checked = 0
    for smiles in [*bundled_sample(), *ODD]:
        if Chem.MolFromSmiles(smiles) is None:
            continue
        expected = reference_descriptor_row(Chem.MolFromSmiles(smiles))
        for row, columns, label in (
            (descriptor_row(Chem.MolFromSmiles(smiles)), list(range(len(names))), "rdkit2d"),
            (physchem_row(Chem.MolFromSmiles(smiles)), physchem_columns, "physchem"),
        ):
            for value, column in zip(row, columns, strict=True):
                if bits(np.array([value])) != bits(expected[[column]]):
                    differences.append(f"{label} {names[column]} of {smiles}: {value!r}")
        checked += 1
    assert checked >= SAMPLE
    assert differences == []


def test_the_featurizers_give_the_reference_rows_alone_and_after_other_features() -> None:
    # In a concatenation the molecule is shared with the fingerprint, which runs first.
    smiles = [*bundled_sample()[::40], *ODD, "not a smiles"]
    expected = np.array(
        [
            reference_descriptor_row(m)
            if (m := Chem.MolFromSmiles(s)) is not None
            else np.full(len(descriptor_names()), np.nan)
            for s in smiles
        ]
    )
    alone = RDKitDescriptors().transform(smiles)
    together = make_featurizer([{"type": "ecfp", "counts": True}, {"type": "rdkit2d"}])
    assert isinstance(together, Concat)
    after_ecfp = together.transform(smiles)[:, 2048:]
    assert bits(alone) == bits(expected) == bits(after_ecfp)
    names = list(descriptor_names())
    columns = [names.index(name) for name in PHYSCHEM_DESCRIPTORS]
    assert bits(PhysChemDescriptors().transform(smiles)) == bits(expected[:, columns])


def test_estate_distances_by_breadth_first_search_are_rdkits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Big molecules take the O(n^2) path; forced here on small ones, it gives RDKit's values.
    monkeypatch.setattr(descriptors, "MAX_CUBIC_ATOMS", 0)
    for smiles in ["CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]", "C1CC2CCC1C2", "OCC(O)CO.c1ccncc1"]:
        ours = descriptors._estate_indices(Chem.MolFromSmiles(smiles), {})
        assert bits(ours) == bits(EState.EStateIndices(Chem.MolFromSmiles(smiles)))


@pytest.mark.parametrize(
    "smiles",
    ["C" * 3000, Chem.MolToSmiles(Chem.MolFromSequence("ACDEFGHIKLMNPQRSTVWY" * 15))],
    ids=["chain-3000", "peptide-300-residues"],
)
def test_a_molecule_of_thousands_of_atoms_is_featurized_not_stalled(smiles: str) -> None:
    # RDKit's own functions take hours here (Ipc/AvgIpc) and minutes (BCUT2D, BalabanJ,
    # BertzCT, EState); the bounded ones are NaN and the rest are computed.
    mol = Chem.MolFromSmiles(smiles)
    assert mol.GetNumAtoms() > 2000 > MAX_CUBIC_ATOMS
    row = RDKitDescriptors().transform([smiles])[0]
    names = descriptor_names()
    assert (np.isfinite(row) | np.isnan(row)).all()
    bounded = {"Ipc", "AvgIpc", "BalabanJ", "BertzCT"} | {
        n for n in names if n.startswith("BCUT2D")
    }
    assert {name for name, value in zip(names, row, strict=True) if np.isnan(value)} == bounded
    for name in ("MaxEStateIndex", "MinEStateIndex", "qed", "SPS", "MolLogP", "Chi4n"):
        assert np.isfinite(row[names.index(name)])
    assert np.isfinite(PhysChemDescriptors().transform([smiles])).all()


def test_another_rdkits_smarts_counts_fall_back_to_its_own_functions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The rotatable-bond and acceptor counts restate RDKit's SMARTS of one version, and the
    # fragment shortcuts hold for the patterns they were written for: under another
    # version (or another pattern) RDKit's own functions are called, with the same values.
    from rdkit.Chem import rdMolDescriptors

    monkeypatch.setattr(rdMolDescriptors, "_CalcNumHBA_version", "0.0.0", raising=False)
    descriptors._restated.cache_clear()
    monkeypatch.setitem(descriptors._FRAGMENT_NEEDS, "fr_COO", ("[#6]C(=O)O", ()))
    descriptors._fragment_plan.cache_clear()
    descriptors._plan.cache_clear()
    descriptors._segments.cache_clear()
    try:
        assert not descriptors._restated()
        assert "fr_COO" not in [name for name, *_ in descriptors._fragment_plan()]
        for smiles in ["CCC(=O)NCC(=O)O", "CC(=O)Nc1ccc(O)cc1", *ODD[-12:]]:
            row = physchem_row(Chem.MolFromSmiles(smiles))
            expected = reference_descriptor_row(Chem.MolFromSmiles(smiles), PHYSCHEM_DESCRIPTORS)
            assert bits(row) == bits(expected), smiles
        assert len(descriptors._fragment_plan()) == len(descriptors._FRAGMENT_NEEDS) - 1
    finally:
        monkeypatch.undo()
        descriptors._restated.cache_clear()
        descriptors._fragment_plan.cache_clear()
        descriptors._plan.cache_clear()
        descriptors._segments.cache_clear()


def test_values_read_together_fail_one_at_a_time() -> None:
    # Item reads of one intermediate side by side are one segment (the 12 SlogP_VSA bins,
    # the fr_ counts, logP and MR); the segments cover the plan, in its order.
    segments = descriptors._segments(PHYSCHEM_DESCRIPTORS)
    widths = [1 if getters is None else len(getters) for _, _, getters in segments]
    assert sum(widths) == len(PHYSCHEM_DESCRIPTORS) and max(widths) == 19
    assert len(segments) < len(PHYSCHEM_DESCRIPTORS) - 25

    # A segment whose one value cannot be a number: that value is NaN, the others stay;
    # an intermediate that raises makes each of its values NaN, the next segment runs.
    def parts(mol: Chem.Mol, known: dict[object, object]) -> tuple[object, ...]:
        return (1.5, "not a number", 3)

    def broken(mol: Chem.Mol, known: dict[object, object]) -> tuple[float, ...]:
        raise ValueError("no")

    getters = tuple(descriptors._item(i) for i in range(3))
    plan = (
        (parts, itemgetter(0, 1, 2), getters),
        (broken, itemgetter(0, 1), getters[:2]),
        (None, lambda mol: mol.GetNumAtoms(), None),
    )
    row = descriptors._row(Chem.MolFromSmiles("CCO"), plan)
    assert bits(row) == bits(np.array([1.5, np.nan, 3.0, np.nan, np.nan, 3.0]))
