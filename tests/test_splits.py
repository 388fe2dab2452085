"""Tests for qemlflow.splits and qemlflow.chem.cluster."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from tests.bundled import bundled_csv

from qemlflow.chem.cluster import butina_clusters
from qemlflow.chem.molecule import murcko_scaffold
from qemlflow.errors import ConfigError, DataError
from qemlflow.splits import (
    METHODS,
    Split,
    cluster_split,
    kfold,
    random_split,
    repeat_seeds,
    repeated_kfold,
    scaffold_split,
    split,
    stratified_split,
)

ESOL = bundled_csv("esol")


@pytest.fixture(scope="module")
def smiles() -> list[str]:
    with ESOL.open(newline="") as stream:
        return [row["smiles"] for row in csv.DictReader(stream)][:300]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random(300) < 0.2).astype(int)


def _inputs(method: str, smiles: list[str], labels: np.ndarray) -> dict[str, object]:
    if method in ("scaffold", "scaffold_deepchem", "cluster"):
        return {"smiles": smiles}
    if method == "stratified":
        return {"y": labels}
    return {"n": len(smiles)}


def _assert_partition(s: Split, n: int) -> None:
    parts = [s.train, s.valid, s.test]
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted ascending, no repeats
    together = np.concatenate(parts)
    assert len(together) == n
    assert np.array_equal(np.sort(together), np.arange(n))


# --------------------------------------------------------------------------- one-shot splits


@pytest.mark.parametrize("method", METHODS)
def test_partition_and_determinism(method: str, smiles: list[str], labels: np.ndarray) -> None:
    inputs = _inputs(method, smiles, labels)
    first = split(method, seed=3, **inputs)  # type: ignore[arg-type]
    again = split(method, seed=3, **inputs)  # type: ignore[arg-type]
    _assert_partition(first, len(smiles))
    assert first == again
    assert first.method == method and first.seed == 3


@pytest.mark.parametrize("method", ["random", "scaffold", "stratified", "cluster"])
def test_different_seeds_differ(method: str, smiles: list[str], labels: np.ndarray) -> None:
    inputs = _inputs(method, smiles, labels)
    a = split(method, seed=0, **inputs)  # type: ignore[arg-type]
    b = split(method, seed=1, **inputs)  # type: ignore[arg-type]
    assert not np.array_equal(a.test, b.test)


@pytest.mark.parametrize("method", METHODS)
def test_sizes_approximately_respected(method: str, smiles: list[str], labels: np.ndarray) -> None:
    s = split(method, sizes=(0.7, 0.15, 0.15), **_inputs(method, smiles, labels))  # type: ignore[arg-type]
    fractions = np.array(s.sizes) / len(smiles)
    tolerance = 0.005 if method in ("random", "stratified") else 0.05
    assert np.allclose(fractions, [0.7, 0.15, 0.15], atol=tolerance)


def test_random_split_exact_counts() -> None:
    assert random_split(100, (0.8, 0.1, 0.1)).sizes == (80, 10, 10)
    assert random_split(7, (0.5, 0.5)).sizes in ((4, 0, 3), (3, 0, 4))
    assert random_split(0).sizes == (0, 0, 0)


def test_two_part_sizes_give_empty_valid(smiles: list[str]) -> None:
    s = scaffold_split(smiles, sizes=(0.8, 0.2))
    assert s.valid.size == 0
    _assert_partition(s, len(smiles))


def test_scaffold_never_shared_between_parts(smiles: list[str]) -> None:
    scaffolds = np.array([murcko_scaffold(x) for x in smiles], dtype=object)
    for balanced in (True, False):
        s = scaffold_split(smiles, seed=5, balanced=balanced)
        sets = [set(scaffolds[part]) for part in (s.train, s.valid, s.test)]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_unbalanced_scaffold_ignores_seed_and_puts_big_groups_in_train(
    smiles: list[str],
) -> None:
    a = scaffold_split(smiles, seed=0, balanced=False)
    b = scaffold_split(smiles, seed=9, balanced=False)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    scaffolds = [murcko_scaffold(x) for x in smiles]
    biggest = max(set(scaffolds), key=scaffolds.count)
    assert scaffolds.index(biggest) in a.train


def test_acyclic_molecules_share_one_scaffold() -> None:
    s = scaffold_split(["CCO", "CCN", "CCC", "c1ccccc1", "C1CC1"], sizes=(0.6, 0.4))
    acyclic = {0, 1, 2}
    assert acyclic <= set(s.train.tolist()) or acyclic <= set(s.test.tolist())


def test_cluster_never_shared_between_parts(smiles: list[str]) -> None:
    ids = butina_clusters(smiles, cutoff=0.35)
    s = cluster_split(smiles, seed=2, cutoff=0.35)
    sets = [set(ids[part].tolist()) for part in (s.train, s.valid, s.test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_butina_clusters_handles_invalid_and_empty() -> None:
    ids = butina_clusters(["CCCCCCCC", "bad", "CCCCCCCCC", None, "c1ccccc1O"], cutoff=0.6)
    assert ids.dtype == np.int64
    assert ids[0] == ids[2]
    assert len(set(ids.tolist())) == 4  # two invalid singletons, one pair, one singleton
    assert butina_clusters([]).shape == (0,)
    with pytest.raises(ConfigError):
        butina_clusters(["CCO"], cutoff=1.5)


def test_stratified_keeps_class_ratio(labels: np.ndarray) -> None:
    s = stratified_split(labels, sizes=(0.6, 0.2, 0.2), seed=4)
    overall = labels.mean()
    for part in (s.train, s.valid, s.test):
        assert abs(labels[part].mean() - overall) < 0.02


def test_stratified_multitask_uses_first_task_and_nan_stratum() -> None:
    y = np.full((100, 2), np.nan)
    y[:60, 0] = 0
    y[60:80, 0] = 1  # rows 80..99 are missing for task 0
    s = stratified_split(y, sizes=(0.5, 0.5), seed=0)
    for stratum in (np.arange(60), np.arange(60, 80), np.arange(80, 100)):
        in_test = np.isin(stratum, s.test).sum()
        assert in_test == len(stratum) // 2


def test_stratified_spreads_rare_classes() -> None:
    y = np.repeat(np.arange(50), 2)  # 50 classes of two members
    s = stratified_split(y, sizes=(0.8, 0.1, 0.1), seed=0)
    assert s.sizes == (80, 10, 10)


# --------------------------------------------------------------------------- folds


FOLD_METHODS = [m for m in METHODS if m != "scaffold_deepchem"]


@pytest.mark.parametrize("method", FOLD_METHODS)
def test_kfold_tests_every_index_once(method: str, smiles: list[str], labels: np.ndarray) -> None:
    folds = kfold(method, k=4, seed=1, **_inputs(method, smiles, labels))  # type: ignore[arg-type]
    assert len(folds) == 4
    tested = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tested), np.arange(len(smiles)))
    for train, test in folds:
        assert not np.intersect1d(train, test).size
        assert len(train) + len(test) == len(smiles)
        assert np.all(np.diff(test) > 0) and np.all(np.diff(train) > 0)
        assert len(test) > 0


def test_group_kfold_keeps_groups_whole(smiles: list[str]) -> None:
    scaffolds = np.array([murcko_scaffold(x) for x in smiles], dtype=object)
    folds = kfold("scaffold", smiles=smiles, k=5, seed=0)
    seen: set[str] = set()
    for _, test in folds:
        here = set(scaffolds[test])
        assert not here & seen
        seen |= here


def test_stratified_kfold_balances_classes(labels: np.ndarray) -> None:
    folds = kfold("stratified", y=labels, k=5, seed=0)
    positives = [int(labels[test].sum()) for _, test in folds]
    assert max(positives) - min(positives) <= 1


def test_repeated_kfold_uses_a_new_seed_per_repeat() -> None:
    folds = repeated_kfold("random", n=30, k=3, repeats=2, seed=0)
    assert len(folds) == 6
    assert not np.array_equal(folds[0][1], folds[3][1])
    assert all(
        np.array_equal(a[1], b[1])
        for a, b in zip(folds, repeated_kfold(n=30, k=3, repeats=2), strict=True)
    )
    first = kfold("random", n=30, k=3, seed=repeat_seeds(0, 2)[1])
    assert np.array_equal(folds[3][1], first[0][1])


# --------------------------------------------------------------------------- records and errors


def test_to_dict_is_json_and_round_trips(smiles: list[str]) -> None:
    s = split("scaffold", smiles=smiles, seed=2, balanced=False)
    record = json.loads(json.dumps(s.to_dict()))
    assert record["method"] == "scaffold" and record["params"]["balanced"] is False
    assert Split.from_dict(record) == s
    with pytest.raises(ValueError):
        s.train[0] = 5  # indices are read-only


@pytest.mark.parametrize(
    "sizes", [(0.8, 0.3), (0.5, 0.6, -0.1), (1.0,), (0.5, 0.2, 0.2, 0.1), (np.nan, 1.0), "ab"]
)
def test_bad_sizes(sizes: object) -> None:
    with pytest.raises(ConfigError):
        random_split(10, sizes)  # type: ignore[arg-type]


def test_bad_method_lists_allowed() -> None:
    with pytest.raises(
        ConfigError, match="random, scaffold, scaffold_deepchem, stratified, cluster"
    ):
        split("butterfly", n=10)
    with pytest.raises(ConfigError):
        kfold("butterfly", n=10)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match="needs smiles"):
        split("scaffold", n=10)
    with pytest.raises(ConfigError, match="does not take"):
        split("random", n=10, cutoff=0.3)
    with pytest.raises(DataError):
        split("random", n=10, y=[0, 1])
    with pytest.raises(ConfigError):
        random_split(10, seed=-1)
    with pytest.raises(ConfigError):
        kfold(n=3, k=5)
    with pytest.raises(ConfigError):
        kfold(n=10, k=1)
    with pytest.raises(DataError, match="groups"):
        kfold("scaffold", smiles=["CCO", "CCN", "CCC"], k=2)
    with pytest.raises(ConfigError):
        repeated_kfold(n=10, repeats=0)


# ------------------------------------------------ stereo-free scaffolds, DeepChem, duplicates


def test_stereoisomers_share_a_part_under_scaffold_unless_stereo_is_kept() -> None:
    """cis/trans decalins and R/S spiro compounds: one stereo-free scaffold per family."""
    from rdkit import Chem

    families = []
    for ring in ("C", "CC", "CCC", "CCCC", "N", "O", "CN", "CO", "NC", "OC"):
        # a substituted decalin-like bicycle whose ring-fusion stereo survives in the scaffold
        trans = Chem.MolToSmiles(Chem.MolFromSmiles(f"FC1C[C@H]2CC{ring}CC[C@@H]2CC1"))
        cis = Chem.MolToSmiles(Chem.MolFromSmiles(f"FC1C[C@H]2CC{ring}CC[C@H]2CC1"))
        families.append((trans, cis))
    for trans, cis in families:
        assert murcko_scaffold(trans) == murcko_scaffold(cis)
        assert murcko_scaffold(trans, stereo=True) != murcko_scaffold(cis, stereo=True)
    smiles = [s for pair in families for s in pair]
    pair_of = np.repeat(np.arange(len(families)), 2)
    apart_with_stereo = 0
    for seed in range(8):
        for method in ("scaffold", "scaffold_deepchem"):
            s = split(method, smiles=smiles, seed=seed)
            for part in (s.train, s.valid, s.test):
                inside = set(pair_of[part].tolist())
                others = set(pair_of[np.setdiff1d(np.arange(len(smiles)), part)].tolist())
                assert not inside & others, (method, seed)
        kept = split("scaffold", smiles=smiles, seed=seed, stereo=True)
        assert kept.params["stereo"] is True
        part_of = np.empty(len(smiles), dtype=int)
        for p, part in enumerate((kept.train, kept.valid, kept.test)):
            part_of[part] = p
        apart_with_stereo += int(np.sum(part_of[0::2] != part_of[1::2]))
    assert apart_with_stereo > 0  # stereo: true makes each stereoisomer its own group


# A hand-made set for DeepChem's ScaffoldSplitter (deepchem/splits/splitters.py), 20
# molecules in 8 scaffold sets:
#   A benzene     6: rows 1 2 4 9 14 17      E thiophene    2: rows 5 12
#   B cyclohexane 4: rows 6 11 15 18         F cyclopropane 1: row 19
#   C pyridine    3: rows 7 13 16            G cyclobutane  1: row 0
#   D furan       2: rows 3 10               H cyclopentane 1: row 8
# DeepChem sorts the sets by (size, first row) descending: A B C E D F H G (E before D
# because its first row 5 > 3; F before H before G likewise). Cutoffs at 80/10/10 of 20:
# train 16, train+valid 18. A, B, C, E fill train to 15. D (2): 15 + 2 > 16, and
# 15 + 0 + 2 <= 18, so valid. F (1): 15 + 1 <= 16, train (a set that did not fit does not
# close train). H (1): 16 + 1 > 16 and 16 + 2 + 1 > 18: test. G: test.
DEEPCHEM_SET = {
    0: "CC1CCC1", 1: "Cc1ccccc1", 2: "CCc1ccccc1", 3: "Cc1ccoc1", 4: "CCCc1ccccc1",
    5: "Cc1ccsc1", 6: "CC1CCCCC1", 7: "Cc1ccncc1", 8: "CC1CCCC1", 9: "Oc1ccccc1",
    10: "CCc1ccoc1", 11: "CCC1CCCCC1", 12: "CCc1ccsc1", 13: "CCc1ccncc1", 14: "Nc1ccccc1",
    15: "OC1CCCCC1", 16: "Nc1ccncc1", 17: "Clc1ccccc1", 18: "NC1CCCCC1", 19: "CC1CC1",
}  # fmt: skip


def test_scaffold_deepchem_reproduces_deepchems_assignment() -> None:
    smiles = [DEEPCHEM_SET[i] for i in range(20)]
    expected_train = sorted({1, 2, 4, 9, 14, 17, 6, 11, 15, 18, 7, 13, 16, 5, 12, 19})
    for seed in (0, 1, 7):  # deterministic: the seed is recorded and changes nothing
        s = split("scaffold_deepchem", smiles=smiles, seed=seed)
        assert s.train.tolist() == expected_train
        assert s.valid.tolist() == [3, 10]
        assert s.test.tolist() == [0, 8]
        assert s.method == "scaffold_deepchem" and s.seed == seed
    two = split("scaffold_deepchem", smiles=smiles, sizes=(0.8, 0.2))
    # No valid part: D (2) no longer fits anywhere but test; F still fits train.
    assert two.valid.size == 0 and two.test.tolist() == [0, 3, 8, 10]


def test_scaffold_deepchem_merges_sets_that_share_a_molecule() -> None:
    """2-pyridone (row 0) and 2-hydroxypyridine (row 21): one InChIKey, two scaffolds.

    Alone, the pyridone is a singleton sorted last (first row 0) and lands in test while
    its tautomer sits in train with the pyridines; merged, the pyridine set (rows 0, 8, 14,
    17, 21) goes to train whole.
    """
    smiles = ["O=c1cccc[nH]1", *(DEEPCHEM_SET[i] for i in range(20)), "Oc1ccccn1"]
    s = split("scaffold_deepchem", smiles=smiles)
    assert {0, 21} <= set(s.train.tolist())
    assert s.test.tolist() == [1, 9, 20]


def test_scaffold_deepchem_has_no_folds() -> None:
    with pytest.raises(ConfigError, match="no k folds"):
        kfold("scaffold_deepchem", smiles=list(DEEPCHEM_SET.values()), k=2)


def _with_copies(smiles: list[str]) -> list[str]:
    """``smiles`` plus other spellings of 40 of them and tautomer pairs (same InChIKey)."""
    from rdkit import Chem

    rng = np.random.default_rng(0)
    copies = []
    for i in rng.choice(len(smiles), 40, replace=False):
        mol = Chem.MolFromSmiles(smiles[int(i)])
        copies.append(Chem.MolToSmiles(mol, doRandom=True, canonical=False))
    # 2-hydroxypyridine / 2-pyridone: one InChIKey, two different Murcko scaffolds.
    tautomers = ["Oc1ccccn1", "O=c1cccc[nH]1", "Cc1ccc(O)nc1", "Cc1ccc(=O)[nH]c1"]
    mixed = smiles + copies + tautomers * 2
    order = rng.permutation(len(mixed))
    return [mixed[i] for i in order]


@pytest.mark.parametrize("method", METHODS)
def test_exact_duplicates_never_cross_parts(method: str, smiles: list[str]) -> None:
    from qemlflow.chem.molecule import smiles_inchikey

    data = _with_copies(smiles)
    keys = np.array([smiles_inchikey(s) for s in data], dtype=object)
    assert len(set(keys.tolist())) < len(data) - 40  # the copies are real duplicates
    labels = (np.arange(len(data)) % 3 == 0).astype(int)
    for seed in range(3):
        s = split(method, smiles=data, y=labels, seed=seed)
        _assert_partition(s, len(data))
        sets = [set(keys[part].tolist()) for part in (s.train, s.valid, s.test)]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), seed
        if method in FOLD_METHODS:
            folds = kfold(method, smiles=data, y=labels, k=4, seed=seed)
            tested = [set(keys[test].tolist()) for _, test in folds]
            for a in range(4):
                for b in range(a + 1, 4):
                    assert not tested[a] & tested[b], (seed, a, b)
