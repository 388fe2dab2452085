"""Featurizers: values against direct RDKit, row alignment, parallelism, specs, sklearn use."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from rdkit import Chem
from rdkit.Avalon import pyAvalonTools
from rdkit.Chem import Descriptors, rdFingerprintGenerator, rdMolDescriptors, rdReducedGraphs
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from qemlflow.errors import DataError, FeaturizerError
from qemlflow.features import (
    ECFP,
    FCFP,
    FEATURIZERS,
    MACCS,
    AtomPair,
    Avalon,
    Concat,
    ErG,
    Featurizer,
    PhysChemDescriptors,
    RDKitDescriptors,
    Torsion,
    featurize,
    make_featurizer,
)

SMILES = [
    "CCO",
    "c1ccccc1O",
    "CC(=O)Oc1ccccc1C(=O)O",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "C[C@H](N)C(=O)O",
    "O=C(O)CCCCCCCCCCCCCCC",
]
INVALID = ["", "not a smiles", None, "c1cccc1", "C1CC", float("nan"), "   "]


def rdkit_bits(generator: object, smiles: list[str], counts: bool = False) -> np.ndarray:
    method = "GetCountFingerprintAsNumPy" if counts else "GetFingerprintAsNumPy"
    return np.array([getattr(generator, method)(Chem.MolFromSmiles(s)) for s in smiles])


# --- values against RDKit -----------------------------------------------------------


def test_ecfp_bits_match_rdkit_and_are_float32_zero_one() -> None:
    x = ECFP().transform(SMILES)
    expected = rdkit_bits(rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048), SMILES)
    assert x.dtype == np.float32
    assert x.shape == (len(SMILES), 2048)
    np.testing.assert_array_equal(x, expected)
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert x[0].sum() == 6  # ethanol: a known ECFP4 bit count


def test_ecfp_counts_match_rdkit_and_dominate_bits() -> None:
    counts = ECFP(counts=True, radius=3, size=1024).transform(SMILES)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=3, fpSize=1024)
    np.testing.assert_array_equal(counts, rdkit_bits(generator, SMILES, counts=True))
    bits = ECFP(radius=3, size=1024).transform(SMILES)
    np.testing.assert_array_equal(counts > 0, bits == 1)
    assert counts.max() > 1  # the fatty acid repeats CH2 environments


def test_fcfp_differs_from_ecfp_and_matches_rdkit_feature_invariants() -> None:
    generator = rdFingerprintGenerator.GetMorganGenerator(
        radius=2,
        fpSize=2048,
        atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen(),
    )
    fcfp = FCFP().transform(SMILES)
    np.testing.assert_array_equal(fcfp, rdkit_bits(generator, SMILES))
    np.testing.assert_array_equal(ECFP(features=True).transform(SMILES), fcfp)
    assert not np.array_equal(fcfp, ECFP().transform(SMILES))


def test_chirality_changes_chiral_molecules_only() -> None:
    enantiomers = ["C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O"]
    plain = ECFP().transform(enantiomers)
    chiral = ECFP(chirality=True).transform(enantiomers)
    np.testing.assert_array_equal(plain[0], plain[1])
    assert not np.array_equal(chiral[0], chiral[1])


def test_maccs_atompair_torsion_match_rdkit() -> None:
    maccs = MACCS().transform(SMILES)
    expected = np.array(
        [list(rdMolDescriptors.GetMACCSKeysFingerprint(Chem.MolFromSmiles(s))) for s in SMILES]
    )
    assert maccs.shape == (len(SMILES), 167)
    np.testing.assert_array_equal(maccs, expected)

    pairs = rdFingerprintGenerator.GetAtomPairGenerator(fpSize=512)
    np.testing.assert_array_equal(AtomPair(size=512).transform(SMILES), rdkit_bits(pairs, SMILES))
    np.testing.assert_array_equal(
        AtomPair(size=512, counts=True).transform(SMILES), rdkit_bits(pairs, SMILES, counts=True)
    )
    torsions = rdFingerprintGenerator.GetTopologicalTorsionGenerator(fpSize=256)
    np.testing.assert_array_equal(
        Torsion(size=256, counts=True).transform(SMILES), rdkit_bits(torsions, SMILES, True)
    )


def test_avalon_and_erg_match_rdkit_with_nan_rows_for_unparsable() -> None:
    mols = [Chem.MolFromSmiles(s) for s in SMILES]
    counts = Avalon(size=512, counts=True).transform([*SMILES, "not a smiles"])
    expected = np.zeros((len(SMILES), 512))
    for row, mol in zip(expected, mols, strict=True):
        for bit, count in (
            pyAvalonTools.GetAvalonCountFP(mol, nBits=512).GetNonzeroElements().items()
        ):
            row[bit] = count
    assert counts.dtype == np.float32
    np.testing.assert_array_equal(counts[:-1], expected)
    assert counts[:-1].max() > 1 and np.isnan(counts[-1]).all()
    bits = Avalon().transform(SMILES)
    assert bits.shape == (len(SMILES), 1024)
    np.testing.assert_array_equal(
        bits, np.array([list(pyAvalonTools.GetAvalonFP(mol, nBits=1024)) for mol in mols])
    )
    erg = ErG().transform([*SMILES, None])
    assert erg.shape == (len(SMILES) + 1, 315) and erg.dtype == np.float64
    np.testing.assert_array_equal(
        erg[:-1], np.array([rdReducedGraphs.GetErGFingerprint(mol) for mol in mols])
    )
    assert erg[1:-1].max() > 0 and np.isnan(erg[-1]).all()
    # Parallel chunks give the same rows as one process.
    many = SMILES * 20
    spec = [{"type": "avalon", "counts": True}, {"type": "erg"}]
    np.testing.assert_array_equal(featurize(many, spec, n_jobs=2), featurize(many, spec))


def test_erg_is_the_fresh_molecules_whatever_ran_before_it() -> None:
    # RDKit's ErG reads a distance matrix cached on the molecule by earlier work (the
    # atom-pair fingerprint caches one), and then gives other values for these molecules.
    smiles = ["CN(C)c1nc(N(C)C)nc(N(C)C)n1", "CCCCC1(CC)C(=O)NC(=O)NC1=O"]
    fresh = np.array([rdReducedGraphs.GetErGFingerprint(Chem.MolFromSmiles(s)) for s in smiles])
    cached = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        Chem.GetDistanceMatrix(mol)
        cached.append(rdReducedGraphs.GetErGFingerprint(mol))
    assert not np.array_equal(np.array(cached), fresh)  # RDKit's behaviour, the reason
    after_pairs = featurize(smiles, [{"type": "atompair", "counts": True}, {"type": "erg"}])
    np.testing.assert_array_equal(after_pairs[:, -315:], fresh)
    np.testing.assert_array_equal(ErG().transform(smiles), fresh)


def test_avalon_and_erg_skip_molecules_over_the_cubic_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both grow with the cube of the atom count (minutes at 3,000 atoms): above the
    # descriptors' MAX_CUBIC_ATOMS the row is NaN and the toolkit is never called. The bound
    # is lowered here so that a 12-atom molecule is "too large".
    import qemlflow.chem.fingerprints as chem_fingerprints
    import qemlflow.features._engine as engine

    monkeypatch.setattr(chem_fingerprints, "MAX_CUBIC_ATOMS", 11)
    monkeypatch.setattr(engine, "MAX_CUBIC_ATOMS", 11)
    called: list[int] = []
    real_count = pyAvalonTools.GetAvalonCountFP

    def counting(mol: Chem.Mol, nBits: int) -> object:
        called.append(mol.GetNumAtoms())
        return real_count(mol, nBits=nBits)

    monkeypatch.setattr(pyAvalonTools, "GetAvalonCountFP", counting)
    small, big = "c1ccccc1O", "CCCCCCCCCCCC"
    for featurizer in (Avalon(counts=True), Avalon(), ErG()):
        x = featurizer.transform([small, big])
        assert not np.isnan(x[0]).any(), featurizer
        assert np.isnan(x[1]).all(), featurizer
    assert called == [7]


def test_descriptors_are_the_full_rdkit_set_finite_or_nan() -> None:
    featurizer = RDKitDescriptors()
    x = featurizer.transform([*SMILES, "C1CC"])
    names = list(featurizer.get_feature_names_out())
    assert names == [name for name, _ in Descriptors._descList]
    assert x.shape == (len(SMILES) + 1, len(Descriptors._descList))
    assert x.dtype == np.float64
    finite_or_nan = np.isfinite(x) | np.isnan(x)
    assert finite_or_nan.all()
    assert np.nanmax(np.abs(x)) <= 1e10
    assert np.isnan(x[-1]).all()
    mol = Chem.MolFromSmiles(SMILES[2])
    assert x[2, names.index("MolWt")] == pytest.approx(Descriptors.MolWt(mol))
    assert x[2, names.index("TPSA")] == pytest.approx(Descriptors.TPSA(mol))


def test_physchem_is_the_full_sets_columns_of_those_names_on_a_bundled_set() -> None:
    # The curated default subset: the same RDKit functions, so the same numbers (NaN where
    # the full set has NaN), for every molecule of a bundled set and the unparsable one.
    from pathlib import Path

    import qemlflow

    bace = Path(qemlflow.__file__).parent / "data" / "bundled" / "bace.csv.gz"
    smiles = [*pd.read_csv(bace)["mol"].astype(str)[:300], "C1CC"]
    full = RDKitDescriptors().transform(smiles)
    names = list(RDKitDescriptors().get_feature_names_out())
    physchem = PhysChemDescriptors()
    x = physchem.transform(smiles)
    columns = [names.index(name) for name in physchem.get_feature_names_out()]
    np.testing.assert_array_equal(x, full[:, columns])
    assert np.isnan(x[-1]).all() and np.isfinite(x[:-1]).all()
    assert make_featurizer("physchem").to_spec() == {"type": "physchem", "n_jobs": 1}


def test_descriptors_turn_absurd_values_into_nan() -> None:
    # Ipc of a long chain grows past 1e10
    long_chain = "C" * 60
    x = RDKitDescriptors().transform([long_chain])
    ipc = list(RDKitDescriptors().get_feature_names_out()).index("Ipc")
    assert Descriptors.Ipc(Chem.MolFromSmiles(long_chain)) > 1e10
    assert np.isnan(x[0, ipc])
    assert np.isfinite(x[0]).sum() > 100


# --- row alignment, inputs, parallelism -------------------------------------------


@pytest.mark.parametrize("featurizer", [ECFP(), ECFP(counts=True), MACCS(), RDKitDescriptors()])
def test_invalid_smiles_give_nan_rows_in_place(featurizer: Featurizer) -> None:
    mixed = [SMILES[0], *INVALID, SMILES[1]]
    x = featurizer.transform(mixed)
    assert x.shape[0] == len(mixed)
    assert np.isnan(x[1:-1]).all()
    assert not np.isnan(x[0]).all() and not np.isnan(x[-1]).all()
    np.testing.assert_array_equal(x[[0, -1]], featurizer.transform([SMILES[0], SMILES[1]]))


def test_accepts_list_array_series_and_one_column_frame() -> None:
    expected = ECFP().transform(SMILES)
    for data in (
        np.array(SMILES),
        np.array(SMILES, dtype=object).reshape(-1, 1),
        pd.Series(SMILES),
        pd.DataFrame({"smiles": SMILES}),
        tuple(SMILES),
    ):
        np.testing.assert_array_equal(ECFP().transform(data), expected)
    assert ECFP().transform([]).shape == (0, 2048)


def test_bad_input_shapes_raise_data_error() -> None:
    with pytest.raises(DataError, match="single string"):
        ECFP().transform("CCO")
    with pytest.raises(DataError, match="1-D"):
        ECFP().transform(np.array([SMILES[:2], SMILES[2:4]]).T)


def test_two_jobs_give_identical_output() -> None:
    data = (SMILES + INVALID) * 12  # enough rows to be split into several chunks
    for featurizer in (
        ECFP(),
        ECFP(counts=True),
        Concat([FCFP(size=256), MACCS(), AtomPair(size=128, counts=True)]),
    ):
        serial = featurizer.transform(data)
        parallel = clone(featurizer).set_params(n_jobs=2).transform(data)
        assert parallel.dtype == serial.dtype
        np.testing.assert_array_equal(parallel, serial)  # NaN rows compare equal


# --- concatenation ----------------------------------------------------------------


def test_concat_widths_names_and_values() -> None:
    parts = [ECFP(counts=True), RDKitDescriptors(), MACCS()]
    both = Concat(parts)
    x = both.transform([*SMILES[:3], "C1CC"])
    n_desc = len(Descriptors._descList)
    assert x.shape == (4, 2048 + n_desc + 167)
    assert x.dtype == np.float64
    assert both.n_features_out == x.shape[1]
    names = both.get_feature_names_out()
    assert len(names) == len(set(names)) == x.shape[1]
    assert names[0] == "ecfp4_0" and names[2048] == "MaxAbsEStateIndex"
    assert names[-1] == "maccs_166"
    np.testing.assert_array_equal(x[:3, :2048], parts[0].transform(SMILES[:3]))
    np.testing.assert_array_equal(x[:3, -167:], parts[2].transform(SMILES[:3]))
    assert np.isnan(x[3]).all()


def test_concat_of_fingerprints_stays_float32_and_dedupes_names() -> None:
    twice = Concat([ECFP(size=64), ECFP(size=64, radius=2)])
    assert twice.transform(SMILES).dtype == np.float32
    names = list(twice.get_feature_names_out())
    assert names[:1] == ["0__ecfp4_0"] and names[64] == "1__ecfp4_0"


# --- specs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "featurizer",
    [
        ECFP(radius=3, size=1024, counts=True, chirality=True, n_jobs=2),
        ECFP(features=True),
        FCFP(radius=1),
        MACCS(),
        AtomPair(size=512, counts=True),
        Torsion(size=128),
        Avalon(size=512, counts=True),
        ErG(n_jobs=2),
        RDKitDescriptors(n_jobs=-1),
        Concat([ECFP(counts=True), Concat([MACCS(), RDKitDescriptors()])], n_jobs=2),
    ],
)
def test_spec_round_trip_through_json(featurizer: Featurizer) -> None:
    spec = featurizer.to_spec()
    rebuilt = make_featurizer(json.loads(json.dumps(spec)))
    assert type(rebuilt) is type(featurizer)
    assert rebuilt.to_spec() == spec
    assert repr(rebuilt) == repr(featurizer)


def test_spec_forms() -> None:
    assert isinstance(make_featurizer("maccs"), MACCS)
    ecfp = make_featurizer({"type": "ecfp", "radius": 2, "size": 2048, "counts": True})
    assert ecfp.get_params() == ECFP(counts=True).get_params()
    concat = make_featurizer([{"type": "ecfp", "counts": True}, {"type": "rdkit2d"}])
    assert isinstance(concat, Concat)
    assert [type(p) for p in concat.featurizers] == [ECFP, RDKitDescriptors]
    nested = make_featurizer({"type": "concat", "featurizers": ["fcfp", "torsion"]})
    assert nested.n_features_out == 4096
    assert set(FEATURIZERS) == {
        "ecfp",
        "fcfp",
        "maccs",
        "atompair",
        "torsion",
        "avalon",
        "erg",
        "rdkit2d",
        "physchem",
        "smiles",
        "concat",
    }


def test_bad_specs_name_the_key_and_the_allowed_ones() -> None:
    with pytest.raises(
        FeaturizerError, match=r"unknown featurizer type 'ecpf'.*atompair, avalon, concat"
    ):
        make_featurizer("ecpf")
    with pytest.raises(FeaturizerError, match=r"unknown featurizer type 'morgan'"):
        make_featurizer([{"type": "ecfp"}, {"type": "morgan"}])
    with pytest.raises(FeaturizerError, match=r"'radious'.*allowed: chirality, counts"):
        make_featurizer({"type": "ecfp", "radious": 3})
    with pytest.raises(FeaturizerError, match=r"'features'.*'fcfp'"):
        make_featurizer({"type": "fcfp", "features": False})
    with pytest.raises(FeaturizerError, match="no 'type' key"):
        make_featurizer({"radius": 2})
    with pytest.raises(FeaturizerError, match=r"'radius' must be an integer >= 0"):
        make_featurizer({"type": "ecfp", "radius": "two"})
    with pytest.raises(FeaturizerError, match=r"'counts' must be true or false"):
        make_featurizer({"type": "atompair", "counts": "yes"})
    with pytest.raises(FeaturizerError, match="n_jobs"):
        ECFP(n_jobs=0).transform(SMILES)
    with pytest.raises(FeaturizerError, match="non-empty list"):
        Concat([]).fit(SMILES)


def test_featurize_convenience() -> None:
    np.testing.assert_array_equal(featurize(SMILES), ECFP().transform(SMILES))
    x = featurize(SMILES, [{"type": "maccs"}, {"type": "torsion", "size": 64}], n_jobs=2)
    assert x.shape == (len(SMILES), 167 + 64)
    np.testing.assert_array_equal(featurize(SMILES, MACCS()), MACCS().transform(SMILES))


# --- scikit-learn contract --------------------------------------------------------


def test_clone_keeps_params_and_init_does_no_work() -> None:
    original = Concat([ECFP(radius=3, counts=True), MACCS()], n_jobs=2)
    copy = clone(original)
    assert copy is not original
    assert copy.to_spec() == original.to_spec()
    assert copy.featurizers[0] is not original.featurizers[0]
    # params are stored unchanged, even invalid ones; errors come at fit/transform
    lazy = ECFP(radius=-1)
    assert lazy.radius == -1
    with pytest.raises(FeaturizerError):
        lazy.fit(SMILES)
    assert ECFP().fit(SMILES) is not None


def test_pipeline_fits_and_predicts() -> None:
    y = np.arange(len(SMILES), dtype=float)
    model = Pipeline([("features", ECFP(size=256, counts=True)), ("ridge", Ridge())])
    model.fit(SMILES, y)
    assert model.predict(SMILES).shape == (len(SMILES),)
    model.set_params(features__radius=1)
    assert clone(model).get_params()["features__radius"] == 1
    names = model[:-1].get_feature_names_out()
    assert len(names) == 256


def test_set_output_pandas_uses_feature_names() -> None:
    frame = MACCS().set_output(transform="pandas").fit_transform(SMILES)
    assert list(frame.columns[:2]) == ["maccs_0", "maccs_1"]
    assert math.isclose(float(frame.to_numpy().sum()), float(MACCS().transform(SMILES).sum()))


def test_large_outputs_are_ordinary_writable_arrays() -> None:
    data = SMILES * 100  # 600 x 2048 float32 = 4.9 MB: allocated on plain pages
    x = ECFP().transform(data)
    assert x.flags.writeable and x.flags.c_contiguous
    np.testing.assert_array_equal(x, np.tile(ECFP().transform(SMILES), (100, 1)))
    x[0, 0] = 7.0
    assert x[0, 0] == 7.0
