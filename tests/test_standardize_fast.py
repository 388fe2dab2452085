"""Fast standardization gives exactly what the full RDKit path gives.

The reference here is standardization as it was written before the fast path: every
fragment split off by ``GetMolFrags``, Python loops over atoms and bonds, RDKit's own
``rdMolStandardize.Cleanup`` then ``Uncharger.uncharge`` on every parent. It runs over every
bundled set and a list of hostile inputs, and the fast path must give the same canonical
SMILES, or the same refusal with the same reason and detail. A screen of a standardizing
ECFP model fingerprints the standardized molecules without writing and parsing them again;
that must give the rows their SMILES give.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

from qemlflow.chem import ChemistryPolicy, MolResult, Reason, parse_smiles, standardize_smiles
from qemlflow.chem.cleanup import cleanup, has_hydrogen_atoms, untouched
from qemlflow.chem.descriptors import physchem_row
from qemlflow.chem.fingerprints import morgan_generator
from qemlflow.chem.molecule import _failure, _first_line
from qemlflow.chem.molecule import _shown as _shown_smiles
from qemlflow.chem.parent import (
    _SALT_METALS,
    Refusal,
    _key,
    _metal_kind,
    _queries,
    _shown,
    _sign,
    _tools,
)
from qemlflow.chemistry import DEFAULT_POLICY
from qemlflow.data.loading import read_raw
from qemlflow.limits import DEFAULT_LIMITS
from qemlflow.pipeline.config import TASK_DEFAULTS
from qemlflow.pipeline.scoring import FeaturePlan, as_given

BUNDLED = ["bace", "bbbp", "clintox", "esol", "freesolv", "lipophilicity", "tox21"]
LEGACY = ChemistryPolicy(unsupported="largest_fragment")
HOSTILE = [
    # salts, counter-ions, solvents, mixtures
    "CC(=O)Oc1ccccc1C(=O)[O-].[Na+]",
    "CCCCCCCC(=O)O[Na]",
    "CCN(CC)CCNC(=O)c1ccc(N)cc1.Cl",
    "C[N+](C)(C)Cc1ccccc1.[Br-]",
    "CN1CCC[C@H]1c1cccnc1.OC(=O)C(O)C(O)C(=O)O",
    "CC(=O)Nc1ccc(O)cc1.Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "CC[NH3+].CC(=O)[O-]",
    "C[NH3+].[Cl-]",
    "[Na+].[Cl-]",
    "O.O.CCO",
    "c1ccccc1.c1ccccc1",
    "C1CCC.C1",
    "C1CC.CC1.O",
    "CCO.",
    # metals: complexes, organometallics, ions, Grignards, lithium organyls
    "N[Pd](N)(Cl)Cl",
    "CCCC[Sn](Cl)(CCCC)CCCC",
    "[Zn+2].[Cl-].[Cl-]",
    "[K+].[K+].[O-][Cr](=O)(=O)O[Cr](=O)(=O)[O-]",
    "C[Mg]Br",
    "CC[Li]",
    "[Fe].c1ccccc1",
    # charges, zwitterions, charge-separated and hypervalent forms
    "NCC(=O)O",
    "[NH3+]CC(=O)[O-]",
    "C[N+](C)(C)CC(=O)[O-]",
    "CC(=O)[O-]",
    "c1cc[n+]([O-])cc1",
    "c1ccn(=O)cc1",
    "CN(=O)=O",
    "c1ccccc1[N+](=O)[O-]",
    "CS(C)=O",
    "C[S+](C)[O-]",
    "CS(=O)(=O)c1ccccc1",
    "CN=[N+]=[N-]",
    "CN=N#N",
    "C=[N+]=[N-]",
    "[O-][Cl+3]([O-])([O-])[O-].CCCC[N+](CCCC)(CCCC)CCCC",
    "CC(C)=[N+]([O-])C",
    "C[N+]#[C-]",
    "[O-]c1ccccc1.[Na+]",
    "Cl[O-].CCCC",
    "OP(=O)([O-])OCC",
    "CC(=O)NC1=NC(=O)C=C[N-]1",
    "C1=CC=C[CH-]1",
    "CCCC[P+](CCCC)(CCCC)N",
    # N-oxide pairs left as they are, and their near misses that are not
    "CCO[N+](=O)[O-]",
    "C[N+](C)([O-])C",
    "C#[N+][O-]",
    "C=[N+]([O-])O",
    "[O-][N+]1=CC=CC=C1",
    "[O-][N+](=O)C[N+](=O)[O-]",
    "[O-][N+](=O)c1ccc(cc1)C(=O)O",
    "[O-][N+](=O)c1ccc(cc1)C(=O)[O-]",
    "[O-][N+](=O)c1ccc(cc1)[O-]",
    "[O-][N+](=O)c1ccccc1.[Na+].[Cl-]",
    "[O-][N+](=O)c1ccccc1S(C)=O",
    "[O-][N+](=O)[O-].CCCC[N+](CCCC)(CCCC)CCCC",
    "C[NH+]([O-])C",
    "C[N+](=O)O",
    "CC(C)=[N+]([O-])[O-]",
    "[O-][n+]1ccccc1.[O-][n+]1ccccc1",
    "C[N+]([O-])=C[N+]([O-])=CC",
    # explicit hydrogen, isotopes, stereochemistry, radicals, aromatic oddities
    "[H]C([H])([H])O",
    "[2H]C([2H])([2H])c1ccccc1",
    "[H][C@@](C)(N)C(=O)O",
    "[13CH3]c1ccccc1",
    "C[C@H](N)C(=O)O",
    "C/C=C/C(=O)O",
    "C/N=C(/N)c1ccccc1",
    "[H]/N=C(\\N)c1ccccc1",
    "[CH3]",
    "C[CH2]",
    "c1ccc2[nH]ccc2c1",
    "O=c1cccc[nH]1",
    "Oc1ccccn1",
    "CC(=O)C=C(C)O",
    "c1ccc2c(c1)-c1ccccc1-2",
    "C1=CC2=CC=CC2=C1",
    "*C(=O)O",
    "[Cl]",
    "ClCl.CCCC",
    "C1CC2CCC1C2",
    # aromatic systems written in Kekule form (perceived once at parsing, not again)
    "C1=CC=C2C=CC=CC2=C1",
    "C1=CC2=CC=CC=CC2=C1",
    "C1=CC=C2C(=C1)C=CC1=CC=CC=C12",
    "O=C1C=CC(=O)C=C1",
    "O=C1C=CC=CC=C1O",
    "O=C1C=CC2=CC=CC=C2O1",
    "CN1C=NC2=C1C(=O)N(C)C(=O)N2C",
    "C1=CC=CC=CC=C1",
    "N1C=CC=C1",
    "O=C1C=COC=C1",
    "C1=CC2=CC3=CC=C(N3)C=C3C=CC(=N3)C=C3C=CC(=N3)C=C1N2",
    "C[C@H]1CC[C@@H](C)CC1",
    "C/C=C/C=C/C1=CC=CC=C1",
    # not molecules: refusals with their reasons
    "",
    "   ",
    "C1CC",
    "c1cccc1",
    "not a smiles",
    "C" * 400,
    "[Xe]",
    "C",
    "CO",
]


def _reference_disconnect(mol: Chem.Mol) -> Chem.Mol:
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


def _reference_choose(mol: Chem.Mol, policy: ChemistryPolicy) -> Chem.Mol | Refusal:
    chooser, uncharger, listed = _tools()
    if policy.unsupported == "largest_fragment":
        parent: Chem.Mol = chooser.choose(rdMolStandardize.Cleanup(mol))
        return parent
    mol = _reference_disconnect(mol)
    floor = policy.min_heavy_atoms
    fragments = list(Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True))
    for fragment in fragments:
        if (metal := _metal_kind(fragment)) is not None:
            element, kind = metal
            return Refusal(
                "unsupported_chemistry",
                f"contains {element} ({kind}); metal-containing molecules are not modelled",
            )
    organic = [f for f in fragments if any(a.GetAtomicNum() == 6 for a in f.GetAtoms())]
    if not organic:
        return Refusal("unsupported_chemistry", "no carbon (inorganic); not modelled")
    if len(organic) == 1:
        only: Chem.Mol = organic[0]
        return only
    distinct: dict[str, Chem.Mol] = {}
    for fragment in organic:
        distinct.setdefault(_key(fragment, uncharger), fragment)
    sizeable = {k: f for k, f in distinct.items() if f.GetNumHeavyAtoms() >= floor}
    candidates = sizeable or distinct
    unlisted = {key: f for key, f in candidates.items() if key not in listed}
    components = list((unlisted or candidates).values())
    if len(components) > 1 and {-1, 1} <= {_sign(f) for f in components}:
        return max(components, key=lambda f: f.GetNumHeavyAtoms())
    if len(components) > 1:
        return Refusal(
            "unsupported_chemistry",
            f"mixture of {len(components)} organic components ({_shown(components)}); "
            "a mixture or combination product is not modelled",
        )
    return components[0]


def _reference_parent(mol: Chem.Mol, tautomer: bool, policy: ChemistryPolicy) -> Chem.Mol | Refusal:
    chosen = _reference_choose(mol, policy)
    if isinstance(chosen, Refusal):
        return chosen
    uncharger = rdMolStandardize.Uncharger(canonicalOrder=True)
    neutral = uncharger.uncharge(rdMolStandardize.Cleanup(chosen))
    if tautomer:
        neutral = rdMolStandardize.TautomerEnumerator().Canonicalize(neutral)
    Chem.SanitizeMol(neutral)
    if (heavy := neutral.GetNumHeavyAtoms()) < policy.min_heavy_atoms:
        return Refusal(
            "parent_too_small",
            f"parent {Chem.MolToSmiles(neutral)!r} has {heavy} heavy atom(s), fewer than "
            f"{policy.min_heavy_atoms} (chemistry.min_heavy_atoms)",
        )
    result: Chem.Mol = neutral
    return result


def reference_standardize(smiles: Any, tautomer: bool, policy: ChemistryPolicy) -> MolResult:
    """``standardize_smiles`` as it was, the full way."""
    parsed = parse_smiles(smiles, limits=DEFAULT_LIMITS)
    if parsed.mol is None:
        return parsed
    try:
        mol = _reference_parent(parsed.mol, tautomer, policy)
    except Exception as exc:  # RDKit raises several unrelated exception types here
        return _failure(Reason.STANDARDIZATION, f"{_shown_smiles(smiles)}: {_first_line(exc)}")
    if isinstance(mol, Refusal):
        return _failure(Reason(mol.reason), f"{_shown_smiles(smiles)}: {mol.detail}")
    if mol.GetNumAtoms() == 0:
        return _failure(
            Reason.NO_ATOMS, f"{_shown_smiles(smiles)} has no atoms after standardization"
        )
    return MolResult(mol=mol, smiles=Chem.MolToSmiles(mol))


def _assert_same(smiles: list[str], tautomer: bool, policy: ChemistryPolicy) -> None:
    differ = []
    for text in smiles:
        expected = reference_standardize(text, tautomer, policy)
        result = standardize_smiles(text, tautomer=tautomer, policy=policy)
        got, wanted = ((r.smiles, r.reason, r.detail) for r in (result, expected))
        if got != wanted:
            differ.append((text, wanted, got))
    assert not differ, f"{len(differ)} of {len(smiles)} differ, e.g. {differ[:3]}"


def _bundled_smiles(name: str) -> list[str]:
    import pandas as pd

    frame = pd.read_csv(__import__("io").BytesIO(read_raw(name).data))
    return [str(s) for s in frame.iloc[:, 0]]


@cache
def _standardized(name: str) -> list[MolResult]:
    """A set's standardized molecules, and a sample's standardized tautomers."""
    smiles = _bundled_smiles(name)
    results = [standardize_smiles(s) for s in smiles]
    results += [standardize_smiles(s, tautomer=True) for s in smiles[::25]]
    return [r for r in results if r.mol is not None]


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_molecule_standardizes_as_the_full_path_does(name: str) -> None:
    _assert_same(_bundled_smiles(name), tautomer=False, policy=DEFAULT_POLICY)


@pytest.mark.parametrize("name", BUNDLED)
def test_tautomers_and_the_legacy_policy_agree_on_a_sample_of_each_set(name: str) -> None:
    sample = _bundled_smiles(name)[::25]
    _assert_same(sample, tautomer=True, policy=DEFAULT_POLICY)
    _assert_same(sample, tautomer=False, policy=LEGACY)


@pytest.mark.parametrize("tautomer", [False, True])
@pytest.mark.parametrize("policy", [DEFAULT_POLICY, LEGACY], ids=["reject", "largest_fragment"])
def test_hostile_inputs_standardize_and_refuse_as_the_full_path_does(
    tautomer: bool, policy: ChemistryPolicy
) -> None:
    _assert_same(HOSTILE, tautomer=tautomer, policy=policy)


def features_of(mol: Chem.Mol) -> list[Any]:
    """What a model reads of a molecule: ECFP4 bits, counts, chiral counts, physchem row."""
    plain, chiral = morgan_generator(2, 2048), morgan_generator(2, 2048, chirality=True)
    return [
        plain.GetFingerprintAsNumPy(mol),
        plain.GetCountFingerprintAsNumPy(mol),
        chiral.GetCountFingerprintAsNumPy(mol),
        physchem_row(mol),
    ]


def test_standardized_molecules_have_the_features_of_the_full_paths_molecules() -> None:
    """The fast path hands its molecule on without a last sanitization where cleanup left
    it untouched: what a model computes from it must be what it computes from the full
    path's molecule, on a sample of every bundled set."""
    sample = [s for name in BUNDLED for s in _bundled_smiles(name)[::7]]
    compared, differ = 0, []
    for text in sample:
        expected = reference_standardize(text, False, DEFAULT_POLICY)
        result = standardize_smiles(text)
        if expected.mol is None or result.mol is None:
            assert (expected.reason, expected.detail) == (result.reason, result.detail)
            continue
        compared += 1
        pairs = zip(features_of(result.mol), features_of(expected.mol), strict=True)
        if not all(np.array_equal(got, wanted, equal_nan=True) for got, wanted in pairs):
            differ.append(text)
    assert compared >= 2_000
    assert not differ, f"{len(differ)} of {compared} differ, e.g. {differ[:3]}"


def test_an_untouched_molecule_has_no_metal_for_choose_parent_to_find() -> None:
    """Standardization skips choose_parent's metal tests for an untouched molecule."""
    salt_bond, metal, _ = _queries()
    sample = HOSTILE + [s for name in BUNDLED for s in _bundled_smiles(name)]
    mols = [m for m in (parse_smiles(s, limits=None).mol for s in sample) if m is not None]
    with_metal = [m for m in mols if m.HasSubstructMatch(metal)]
    assert len(with_metal) >= 10  # the hostile metals, and bundled salts
    assert not any(untouched(m) for m in with_metal)
    assert not any(untouched(m) for m in mols if m.HasSubstructMatch(salt_bond))


def test_an_untouched_molecule_has_no_charge_but_n_oxide_pairs() -> None:
    """Every charge of an untouched molecule is an [O-] whose one neighbour is an [N+]
    without hydrogen, bonded to no other [O-]; charges made by sanitization count too."""
    sample = [*HOSTILE, "OCl(=O)(=O)=O", "CN=N#N"]
    sample += [s for name in BUNDLED for s in _bundled_smiles(name)]
    for mol in (parse_smiles(s, limits=None).mol for s in sample):
        if mol is None or not untouched(mol):
            continue
        for atom in mol.GetAtoms():
            charge = atom.GetFormalCharge()
            if charge == 0:
                continue
            oxygen = atom if charge < 0 else None
            if oxygen is None:
                oxygens = [n for n in atom.GetNeighbors() if n.GetFormalCharge() == -1]
                assert atom.GetSymbol() == "N" and atom.GetTotalNumHs() == 0, Chem.MolToSmiles(mol)
                assert len(oxygens) == 1 and oxygens[0].GetSymbol() == "O", Chem.MolToSmiles(mol)
            else:
                (nitrogen,) = oxygen.GetNeighbors()
                assert oxygen.GetSymbol() == "O" and oxygen.GetTotalNumHs() == 0
                assert nitrogen.GetSymbol() == "N" and nitrogen.GetFormalCharge() == 1


def test_some_standardized_parents_keep_hydrogen_atoms() -> None:
    """Those are fingerprinted from their SMILES (the reader removes the atoms)."""
    assert any(r.mol is not None and has_hydrogen_atoms(r.mol) for r in _standardized("clintox"))


def test_the_refusals_are_really_exercised() -> None:
    """The hostile list reaches every kind of outcome (else the comparison proves little)."""
    reasons = {standardize_smiles(s).reason for s in HOSTILE}
    assert {
        None,
        Reason.EMPTY,
        Reason.UNPARSABLE,
        Reason.SANITIZATION,
        Reason.TOO_LARGE,
        Reason.UNSUPPORTED_CHEMISTRY,
        Reason.PARENT_TOO_SMALL,
    } <= reasons


@pytest.mark.parametrize("smiles", [s for s in HOSTILE if parse_smiles(s, limits=None).ok])
def test_cleanup_with_rule_sets_built_once_is_rdkits_cleanup(smiles: str) -> None:
    mol = parse_smiles(smiles, limits=None).mol
    expected = Chem.MolToSmiles(rdMolStandardize.Cleanup(mol))
    assert Chem.MolToSmiles(cleanup(mol)) == expected


@pytest.mark.parametrize(
    "spec",
    [
        [{"type": "ecfp"}],
        [{"type": "ecfp", "counts": True}],
        [{"type": "ecfp", "radius": 3, "size": 1024}],
        [{"type": "fcfp"}],
    ],
    ids=["ecfp4", "ecfp4-counts", "ecfp6-1024", "fcfp4"],
)
@pytest.mark.parametrize("name", BUNDLED)
def test_standardized_molecules_fingerprint_as_their_smiles_do(
    spec: list[dict[str, Any]], name: str
) -> None:
    plan = FeaturePlan(spec)
    assert plan.reads_molecules
    done = _standardized(name)
    rows = plan.molecule_rows(len(done))
    for i, result in enumerate(done):
        assert result.mol is not None and result.smiles is not None
        if has_hydrogen_atoms(result.mol):
            rows.write_smiles(i, result.smiles)
        else:
            rows.write(i, result.mol)
    X, bits, valid = rows.result(np.arange(len(done)))
    X_expected, bits_expected, valid_expected = plan.compute_valid([r.smiles for r in done])
    assert np.array_equal(valid, valid_expected)
    assert np.array_equal(X, X_expected, equal_nan=True)
    assert np.array_equal(bits, bits_expected)


@pytest.mark.parametrize(
    ("spec", "step"),
    [
        (TASK_DEFAULTS["regression"]["features"], 1),  # ECFP4 counts + physchem
        ([{"type": "maccs"}, {"type": "atompair"}, {"type": "fcfp", "counts": True}], 3),
    ],
    ids=["default", "maccs-atompair-fcfp"],
)
@pytest.mark.parametrize("name", BUNDLED)
def test_a_molecule_standardized_as_given_has_the_features_of_its_smiles(
    spec: list[dict[str, Any]], step: int, name: str
) -> None:
    """A screen featurizes the standardized molecule itself where its SMILES is the one given
    (canonical input, most prepared libraries): its rows must be those of that SMILES read
    back, bit for bit, for a spec of the feature engine's blocks."""
    plan = FeaturePlan(spec)
    assert plan.takes_molecules
    given = [r.smiles for r in _standardized(name)[::step] if r.smiles]
    inputs: list[object] = []
    for text in given:
        result = standardize_smiles(text)
        inputs.append(result.mol if as_given(text, result) else text)
    reused = sum(isinstance(item, Chem.Mol) for item in inputs)
    assert reused >= 0.9 * len(given)  # canonical input: nearly every molecule is reused
    X, bits, valid = plan.compute_valid(inputs)
    X_expected, bits_expected, valid_expected = plan.compute_valid(given)
    assert np.array_equal(valid, valid_expected)
    assert X.tobytes() == X_expected.tobytes()  # NaN where NaN, every other bit the same
    assert np.array_equal(bits, bits_expected)


def test_molecules_are_not_taken_where_stereo_perception_could_differ() -> None:
    # The full descriptor set counts stereo centres from the molecule's perception state,
    # which a standardized molecule does not share with its SMILES read back.
    assert not FeaturePlan([{"type": "ecfp", "counts": True}, {"type": "rdkit2d"}]).takes_molecules
    assert not FeaturePlan([{"type": "maccs"}, {"type": "ecfp", "chirality": True}]).takes_molecules


def test_a_molecule_is_reused_only_when_its_smiles_is_the_given_one() -> None:
    canonical = "CC(=O)Nc1ccc(O)cc1"
    assert as_given(canonical, standardize_smiles(canonical))
    assert as_given(f"  {canonical}\n", standardize_smiles(f"  {canonical}\n"))
    for text in ("c1cc(O)ccc1NC(C)=O", "CC(=O)Nc1ccc(O)cc1.Cl", "[2H]OC", "not a smiles"):
        assert not as_given(text, standardize_smiles(text)), text


def test_the_service_prepares_a_canonical_molecule_as_its_smiles_read_back() -> None:
    # qemlflow serve's workers reuse the standardized molecule the same way: a canonical
    # input's features are those of its standardized SMILES read back, bit for bit.
    from qemlflow.serve.workers import FeatureRecipe, prepare_molecule

    spec = TASK_DEFAULTS["regression"]["features"]
    recipe = FeatureRecipe(spec, standardize=True, tautomer=False)
    plan = FeaturePlan(spec)
    given = [r.smiles for r in _standardized("esol")[::7] if r.smiles]
    for text in given:
        prepared = prepare_molecule(recipe, plan, text)
        X, bits = plan.compute([prepared.smiles])  # its SMILES, read back
        assert prepared.smiles == text and not prepared.error
        assert prepared.features.tobytes() == X[0].tobytes(), text
        assert np.array_equal(prepared.bits, bits[0])
    assert prepare_molecule(recipe, plan, "C1CC").error.startswith("unparsable")
