"""Split a dataset into train/valid/test parts or k folds: random, scaffold, stratified, cluster.

Every split is a pure function of its inputs and its seed: the same call gives the same
indices on every machine. Indices are ``numpy.int64`` arrays, sorted ascending within each
part, and every index ``0..n-1`` lands in exactly one part.

``sizes`` is ``(train, valid, test)`` or ``(train, test)``; fractions must be non-negative
and sum to 1. Group-based splits (scaffold, cluster) keep whole groups together, so their
part sizes are only approximately those asked for.

Exact duplicates never cross parts: whenever SMILES are given, molecules with the same
standard InChIKey (stereo-aware; mobile-H tautomers share one) are kept in one part (one
fold) by every method, so a test molecule is never also a training molecule under another
spelling. Two scaffold splits are offered: ``scaffold`` (Chemprop's *balanced* scaffold
split, seeded) and ``scaffold_deepchem`` (DeepChem's deterministic largest-first
``ScaffoldSplitter``, behind the MoleculeNet paper's scaffold numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from qemlflow.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_SIZES",
    "METHODS",
    "Split",
    "cluster_split",
    "kfold",
    "random_split",
    "repeat_seeds",
    "repeated_kfold",
    "scaffold_deepchem_split",
    "scaffold_split",
    "split",
    "stratified_split",
]

IndexArray = npt.NDArray[np.int64]
Fold = tuple[IndexArray, IndexArray]

METHODS: Final = ("random", "scaffold", "scaffold_deepchem", "stratified", "cluster")
DEFAULT_SIZES: Final = (0.8, 0.1, 0.1)

# Keyword parameters each method accepts beyond sizes/seed (used by split() and kfold()).
_PARAMS: Final[Mapping[str, frozenset[str]]] = {
    "random": frozenset(),
    "scaffold": frozenset({"balanced", "stereo"}),
    "scaffold_deepchem": frozenset({"stereo"}),
    "stratified": frozenset(),
    "cluster": frozenset({"cutoff", "radius", "n_bits"}),
}


def _as_index(values: Any) -> IndexArray:
    array = np.sort(np.asarray(values, dtype=np.int64).reshape(-1))
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test indices of one split, with how they were made.

    ``valid`` is empty when the split was asked for two parts only. Arrays are
    read-only, sorted ``int64``.

    Examples
    --------
    >>> s = Split(train=[3, 0, 2], valid=[], test=[1], method="random", seed=7)
    >>> s.train, s.sizes
    (array([0, 2, 3]), (3, 0, 1))
    >>> s.to_dict()["test"]
    [1]
    >>> Split.from_dict(s.to_dict()) == s
    True
    """

    train: IndexArray
    valid: IndexArray
    test: IndexArray
    method: str = "random"
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            object.__setattr__(self, name, _as_index(getattr(self, name)))

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Number of molecules in train, valid and test."""
        return (len(self.train), len(self.valid), len(self.test))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serializable record of the split (indices as lists of int)."""
        return {
            "method": self.method,
            "seed": self.seed,
            "params": dict(self.params),
            "train": self.train.tolist(),
            "valid": self.valid.tolist(),
            "test": self.test.tolist(),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Split:
        """Rebuild a split from :meth:`to_dict` output."""
        return cls(
            train=record["train"],
            valid=record.get("valid", []),
            test=record["test"],
            method=str(record.get("method", "random")),
            seed=int(record.get("seed", 0)),
            params=dict(record.get("params", {})),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.method == other.method
            and self.seed == other.seed
            and self.params == other.params
            and all(
                np.array_equal(getattr(self, part), getattr(other, part))
                for part in ("train", "valid", "test")
            )
        )

    __hash__ = None  # type: ignore[assignment]  # mutable params; equality is by value


# --------------------------------------------------------------------------- validation


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed {seed!r} is not a non-negative integer", "give e.g. seed=0")
    return int(seed)


def _check_sizes(sizes: Sequence[float]) -> npt.NDArray[np.float64]:
    try:
        fractions = np.asarray(sizes, dtype=np.float64)
    except (TypeError, ValueError):
        fractions = np.array([np.nan])
    if fractions.ndim != 1 or len(fractions) not in (2, 3):
        raise ConfigError(
            f"sizes {sizes!r} must have 2 (train, test) or 3 (train, valid, test) fractions",
            "give e.g. sizes=(0.8, 0.1, 0.1)",
        )
    if not np.all(np.isfinite(fractions)) or np.any(fractions < 0):
        raise ConfigError(
            f"sizes {sizes!r} contain a negative or non-finite fraction",
            "use fractions between 0 and 1",
        )
    if abs(float(fractions.sum()) - 1.0) > 1e-6:
        raise ConfigError(
            f"sizes {sizes!r} sum to {float(fractions.sum()):.6g}, not 1",
            "make the fractions sum to 1, e.g. (0.8, 0.1, 0.1)",
        )
    return fractions


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ConfigError(f"n {n!r} is not a non-negative integer", "give the number of rows")
    return int(n)


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ConfigError(
            f"unknown split method {method!r}",
            f"use one of: {', '.join(METHODS)}",
        )
    return str(method)


def _check_params(method: str, params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - _PARAMS[method])
    if unknown:
        allowed = ", ".join(sorted(_PARAMS[method])) or "none"
        raise ConfigError(
            f"split method {method!r} does not take {', '.join(unknown)}",
            f"parameters it accepts: {allowed}",
        )


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise ConfigError(f"k {k!r} is not an integer >= 2", "give e.g. k=5")
    if k > n:
        raise ConfigError(f"cannot make {k} folds from {n} rows", f"use k <= {n}")
    return int(k)


def _count_rows(method: str, n: int | None, smiles: Sequence[Any] | None, y: Any) -> int:
    """Number of rows, after checking the method has the input it needs and they agree."""
    lengths = {name: len(v) for name, v in (("smiles", smiles), ("y", y)) if v is not None}
    if n is not None:
        lengths["n"] = _check_n(n)
    if len(set(lengths.values())) > 1:
        raise DataError(
            f"inputs disagree on the number of rows: {lengths}",
            "pass n, smiles and y for the same rows",
        )
    needed = {
        "scaffold": "smiles",
        "scaffold_deepchem": "smiles",
        "cluster": "smiles",
        "stratified": "y",
    }.get(method)
    if needed is not None and needed not in lengths:
        raise ConfigError(f"split method {method!r} needs {needed}=", f"pass {needed}=...")
    if not lengths:
        raise ConfigError(f"split method {method!r} needs n=", "pass n= (or smiles= or y=)")
    return next(iter(lengths.values()))


# --------------------------------------------------------------------------- building blocks


def _counts(n: int, fractions: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """Whole counts summing to n, as close to n * fractions as possible (largest remainder)."""
    raw = np.round(n * fractions, 9)
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def _split_of(parts: Sequence[Any], method: str, seed: int, params: dict[str, Any]) -> Split:
    empty = np.empty(0, dtype=np.int64)
    if len(parts) == 2:
        return Split(parts[0], empty, parts[1], method=method, seed=seed, params=params)
    return Split(parts[0], parts[1], parts[2], method=method, seed=seed, params=params)


def _groups(keys: Sequence[Any], duplicates: Sequence[str] | None = None) -> list[IndexArray]:
    """Indices per distinct key, groups in order of first appearance (members ascending).

    With ``duplicates`` (an InChIKey per row, '' for none), groups that share a molecule are
    merged, so no molecule is split from its copies; without shared molecules the groups
    are exactly those of ``keys``.
    """
    members: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    groups = [np.asarray(m, dtype=np.int64) for m in members.values()]
    if duplicates is None:
        return groups
    # Union-find over groups: two groups join when a molecule of one is a copy of one of
    # the other. The root is the group seen first, so merged groups keep first appearance.
    parent = list(range(len(groups)))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    group_of = np.empty(len(keys), dtype=np.int64)
    for g, index in enumerate(groups):
        group_of[index] = g
    first_group: dict[str, int] = {}
    for i, key in enumerate(duplicates):
        if not key:
            continue
        g = root(int(group_of[i]))
        other = first_group.setdefault(key, g)
        h = root(other)
        if h != g:
            parent[max(g, h)] = min(g, h)
    merged: dict[int, list[IndexArray]] = {}
    for g, index in enumerate(groups):
        merged.setdefault(root(g), []).append(index)
    return [np.sort(np.concatenate(parts)) for parts in merged.values()]


def _duplicate_keys(smiles: Sequence[Any] | None) -> list[str] | None:
    """The standard InChIKey of each SMILES ('' when it has none), or None without SMILES."""
    if smiles is None:
        return None
    from qemlflow.chem.molecule import smiles_inchikey

    return [smiles_inchikey(s) if isinstance(s, str) else "" for s in smiles]


def _keep_duplicates_together(
    parts: Sequence[IndexArray], duplicates: Sequence[str] | None
) -> list[IndexArray]:
    """Move every copy of a molecule into the part of its first occurrence (lowest index).

    For the splits that do not group molecules themselves (random, stratified): sizes move
    by at most the number of copies, and nothing moves when the data has no duplicates.
    """
    if duplicates is None:
        return list(parts)
    part_of = np.full(len(duplicates), -1, dtype=np.int64)
    for p, index in enumerate(parts):
        part_of[np.asarray(index, dtype=np.int64)] = p
    first_part: dict[str, int] = {}
    for i, key in enumerate(duplicates):
        if key and part_of[i] >= 0:
            part_of[i] = first_part.setdefault(key, int(part_of[i]))
    return [np.flatnonzero(part_of == p).astype(np.int64) for p in range(len(parts))]


def _order_groups(
    groups: list[IndexArray], big_above: float, rng: np.random.Generator, balanced: bool
) -> list[IndexArray]:
    if not balanced:
        return sorted(groups, key=len, reverse=True)  # stable: ties keep first appearance
    big = [g for g in groups if len(g) > big_above]
    small = [g for g in groups if len(g) <= big_above]
    return [big[i] for i in rng.permutation(len(big))] + [
        small[i] for i in rng.permutation(len(small))
    ]


def _assign_groups(
    groups: list[IndexArray],
    n: int,
    fractions: npt.NDArray[np.float64],
    rng: np.random.Generator,
    balanced: bool,
) -> list[IndexArray]:
    """Greedy chemprop-style fill: each group goes to the first part it fits, else the last."""
    capacity = fractions * n
    holdout = capacity[1:]
    ordered = _order_groups(groups, float(holdout.min()) / 2, rng, balanced)
    parts: list[list[IndexArray]] = [[] for _ in fractions]
    filled = np.zeros(len(fractions))
    for group in ordered:
        target = len(fractions) - 1
        for p in range(len(fractions) - 1):
            if filled[p] + len(group) <= capacity[p] + 1e-9:
                target = p
                break
        parts[target].append(group)
        filled[target] += len(group)
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in parts]


def _strata(y: Any) -> npt.NDArray[np.int64]:
    """Integer stratum per row: the class of y (first column if 2-D); NaN is its own class."""
    labels = np.asarray(y)
    if labels.ndim == 2:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(
            f"stratification labels have shape {np.shape(y)}",
            "give y as (n,) class labels or (n, tasks)",
        )
    codes, _ = pd.factorize(labels)  # missing values (NaN, None) get code -1
    return np.where(codes < 0, codes.max(initial=-1) + 1, codes).astype(np.int64)


def _stratified_order(strata: npt.NDArray[np.int64], rng: np.random.Generator) -> list[IndexArray]:
    """Members of each stratum, shuffled, strata in a seeded random order."""
    groups = _groups(strata.tolist())
    return [rng.permutation(groups[i]) for i in rng.permutation(len(groups))]


def _group_kfold(
    groups: list[IndexArray], n: int, k: int, rng: np.random.Generator, balanced: bool
) -> list[IndexArray]:
    if len(groups) < k:
        raise DataError(
            f"only {len(groups)} groups for {k} folds",
            "use fewer folds, or method='random'",
        )
    ordered = _order_groups(groups, n / k / 2, rng, balanced)
    folds: list[list[IndexArray]] = [[] for _ in range(k)]
    filled = np.zeros(k, dtype=np.int64)
    for group in ordered:
        target = int(np.argmin(filled))  # the emptiest fold; ties go to the lowest index
        folds[target].append(group)
        filled[target] += len(group)
    return [np.concatenate(f) for f in folds]


def _scaffold_keys(smiles: Sequence[Any], stereo: bool = False) -> list[str]:
    from qemlflow.chem.molecule import murcko_scaffold

    return [murcko_scaffold(s, stereo=stereo) if isinstance(s, str) else "" for s in smiles]


def _cluster_keys(smiles: Sequence[Any], cutoff: float, radius: int, n_bits: int) -> list[int]:
    from qemlflow.chem.cluster import butina_clusters

    ids = butina_clusters(smiles, cutoff=cutoff, radius=radius, n_bits=n_bits)
    return [int(i) for i in ids]


# --------------------------------------------------------------------------- splits


def random_split(n: int, sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0) -> Split:
    """Return a seeded random split of ``n`` rows.

    Part sizes are exact up to rounding (largest remainder).

    Examples
    --------
    >>> s = random_split(10, sizes=(0.6, 0.2, 0.2), seed=0)
    >>> s.sizes
    (6, 2, 2)
    >>> sorted(s.train.tolist() + s.valid.tolist() + s.test.tolist()) == list(range(10))
    True
    >>> random_split(10, (0.7, 0.3)).valid
    array([], dtype=int64)
    """
    n = _check_n(n)
    fractions = _check_sizes(sizes)
    seed = _check_seed(seed)
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, np.cumsum(_counts(n, fractions))[:-1])
    return _split_of(parts, "random", seed, {"sizes": fractions.tolist()})


def scaffold_split(
    smiles: Sequence[str],
    sizes: Sequence[float] = DEFAULT_SIZES,
    seed: int = 0,
    balanced: bool = True,
    stereo: bool = False,
) -> Split:
    """Return Chemprop's balanced scaffold split: no Bemis-Murcko scaffold in two parts.

    Molecules are grouped by :func:`qemlflow.chem.murcko_scaffold`, stereo-free as in
    Chemprop and DeepChem (``stereo=True`` keeps R/S and E/Z, so stereoisomers may then
    land in different parts). Groups sharing a molecule (same InChIKey, e.g. tautomers
    with different scaffolds) are merged. Acyclic and unparsable molecules share the
    ``''`` scaffold and so land in one part together. Groups are placed greedily: each goes
    to train if it fits, else valid if it fits, else test.

    With ``balanced=True`` (Chemprop v1's ``scaffold_balanced``, its default scaffold
    split) groups larger than half the smallest held-out part go first, in seeded random
    order, then the remaining groups in seeded random order, so that test is not made only
    of singletons. With ``balanced=False`` groups go largest first (ties in order of first
    appearance) and the seed has no effect. Neither is DeepChem's split: see
    :func:`scaffold_deepchem_split`.

    Examples
    --------
    >>> smiles = ["c1ccccc1C", "c1ccccc1CC", "C1CCCCC1O", "CCO", "CCN", "c1ccncc1"]
    >>> s = scaffold_split(smiles, sizes=(0.5, 0.5), balanced=False)
    >>> s.train, s.test
    (array([0, 1, 2]), array([3, 4, 5]))
    """
    fractions = _check_sizes(sizes)
    seed = _check_seed(seed)
    groups = _groups(_scaffold_keys(smiles, stereo), _duplicate_keys(smiles))
    parts = _assign_groups(groups, len(smiles), fractions, np.random.default_rng(seed), balanced)
    params: dict[str, Any] = {"sizes": fractions.tolist(), "balanced": bool(balanced)}
    if stereo:  # recorded only when set, so stereo-free split records keep their form
        params["stereo"] = True
    return _split_of(parts, "scaffold", seed, params)


def scaffold_deepchem_split(
    smiles: Sequence[str],
    sizes: Sequence[float] = DEFAULT_SIZES,
    seed: int = 0,
    stereo: bool = False,
) -> Split:
    """Return DeepChem's deterministic scaffold split, as used by the MoleculeNet paper.

    The algorithm of ``deepchem.splits.ScaffoldSplitter``: molecules are grouped by their
    stereo-free Murcko scaffold (``stereo=True`` keeps stereo); the scaffold sets are
    sorted by ``(size, first index)`` in descending order (largest first; among sets of
    equal size the one whose first molecule comes *later* in the data goes first); each set
    then goes to train if ``len(train) + len(set) <= train_fraction * n``, else to valid if
    ``len(train) + len(valid) + len(set) <= (train_fraction + valid_fraction) * n``, else
    to test. A set that does not fit does not close a part: a later, smaller set can still
    go to train. So the test part collects the many small, rare scaffolds.

    Two differences from DeepChem, both only where the data holds exact duplicates: sets
    sharing a molecule (same InChIKey) are merged, and unparsable SMILES share the ``''``
    set of acyclic molecules (DeepChem raises). ``seed`` is recorded but changes nothing:
    the split is the same for every seed, so repeating a benchmark over seeds varies only
    the model. DeepChem's valid part becomes QeMLflow's valid part, which calibrates the
    model (DeepChem uses it for model selection); the test part is DeepChem's test part.

    Examples
    --------
    >>> smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1N", "C1CCCCC1O", "C1CCCCC1N",
    ...           "c1ccncc1C", "CCO", "c1ccoc1", "C1CC1C", "C1CCC1"]
    >>> s = scaffold_deepchem_split(smiles)
    >>> s.train.tolist(), s.valid.tolist(), s.test.tolist()
    ([0, 1, 2, 3, 4, 7, 8, 9], [6], [5])
    >>> scaffold_deepchem_split(smiles, seed=3).test.tolist()
    [5]
    """
    asked = _check_sizes(sizes)
    seed = _check_seed(seed)
    # (train, test) is DeepChem's frac_valid=0: the valid cutoff equals the train cutoff.
    fractions = asked if len(asked) == 3 else np.array([asked[0], 0.0, asked[1]])
    n = len(smiles)
    groups = _groups(_scaffold_keys(smiles, stereo), _duplicate_keys(smiles))
    # DeepChem: sorted(..., key=lambda x: (len(x[1]), x[1][0]), reverse=True).
    ordered = sorted(groups, key=lambda g: (len(g), int(g[0])), reverse=True)
    train_cutoff = fractions[0] * n
    valid_cutoff = (fractions[0] + fractions[1]) * n
    parts: list[list[IndexArray]] = [[], [], []]
    filled = [0, 0]
    for group in ordered:
        if filled[0] + len(group) > train_cutoff:
            target = 2 if filled[0] + filled[1] + len(group) > valid_cutoff else 1
        else:
            target = 0
        parts[target].append(group)
        if target < 2:
            filled[target] += len(group)
    merged = [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in parts]
    if len(asked) == 2:
        merged = [merged[0], merged[2]]
    params: dict[str, Any] = {"sizes": asked.tolist()}
    if stereo:
        params["stereo"] = True
    return _split_of(merged, "scaffold_deepchem", seed, params)


def stratified_split(y: Any, sizes: Sequence[float] = DEFAULT_SIZES, seed: int = 0) -> Split:
    """Return a seeded random split that keeps each class's share in every part.

    ``y`` holds class labels, shape ``(n,)`` or ``(n, tasks)``; for several tasks the
    first task is stratified on. Missing labels (NaN/None) form a stratum of their own.
    Each stratum is divided with the requested fractions; rounding remainders are carried
    from one stratum to the next (in seeded order) so rare classes are still spread and
    the part sizes stay within one row of the request.

    Examples
    --------
    >>> y = [0] * 8 + [1] * 2
    >>> s = stratified_split(y, sizes=(0.5, 0.5), seed=0)
    >>> s.sizes, int(sum(y[i] for i in s.test))
    ((5, 0, 5), 1)
    """
    fractions = _check_sizes(sizes)
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    parts: list[list[IndexArray]] = [[] for _ in fractions]
    carry = np.zeros(len(fractions))
    for members in _stratified_order(_strata(y), rng):
        raw = len(members) * fractions + carry
        counts = np.maximum(np.floor(raw + 1e-9), 0).astype(np.int64)
        while counts.sum() > len(members):  # negative carry can overshoot
            counts[int(np.argmax(counts - raw))] -= 1
        short = len(members) - int(counts.sum())
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
        carry = raw - counts
        for part, chunk in zip(parts, np.split(members, np.cumsum(counts)[:-1]), strict=True):
            part.append(chunk)
    merged = [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in parts]
    return _split_of(merged, "stratified", seed, {"sizes": fractions.tolist()})


def cluster_split(
    smiles: Sequence[str],
    sizes: Sequence[float] = DEFAULT_SIZES,
    seed: int = 0,
    cutoff: float = 0.35,
    radius: int = 2,
    n_bits: int = 2048,
) -> Split:
    """Return a split in which no Butina cluster appears in two parts.

    Molecules are clustered with :func:`qemlflow.chem.cluster.butina_clusters` (ECFP4
    bits, Tanimoto distance ``cutoff``) and whole clusters are placed like
    :func:`scaffold_split` with ``balanced=True``. Unparsable SMILES are singletons.

    Examples
    --------
    >>> smiles = ["CCCCCCCC", "CCCCCCCCC", "c1ccccc1O", "c1ccccc1OC", "CC(=O)O", "OCC(O)CO"]
    >>> s = cluster_split(smiles, sizes=(0.5, 0.5), seed=0, cutoff=0.6)
    >>> sorted(s.train.tolist() + s.test.tolist())
    [0, 1, 2, 3, 4, 5]
    >>> {0, 1} <= set(s.train.tolist()) or {0, 1} <= set(s.test.tolist())
    True
    """
    fractions = _check_sizes(sizes)
    seed = _check_seed(seed)
    groups = _groups(_cluster_keys(smiles, cutoff, radius, n_bits), _duplicate_keys(smiles))
    parts = _assign_groups(groups, len(smiles), fractions, np.random.default_rng(seed), True)
    params = {"sizes": fractions.tolist(), "cutoff": cutoff, "radius": radius, "n_bits": n_bits}
    return _split_of(parts, "cluster", seed, params)


def split(
    method: str,
    *,
    n: int | None = None,
    smiles: Sequence[str] | None = None,
    y: Any = None,
    sizes: Sequence[float] = DEFAULT_SIZES,
    seed: int = 0,
    **params: Any,
) -> Split:
    """Split by name: the single entry point used by configs and the CLI.

    ``random`` needs ``n`` (or any of ``smiles``/``y`` to count rows), ``scaffold``,
    ``scaffold_deepchem`` and ``cluster`` need ``smiles``, ``stratified`` needs ``y``.
    Extra keyword parameters go to the method (``balanced``, ``stereo`` for scaffold;
    ``stereo`` for scaffold_deepchem; ``cutoff``, ``radius``, ``n_bits`` for cluster).
    When ``smiles`` are given, copies of one molecule (same InChIKey) always share a part,
    for ``random`` and ``stratified`` too.

    Examples
    --------
    >>> split("random", n=5, sizes=(0.6, 0.4), seed=1).sizes
    (3, 0, 2)
    >>> split("time", n=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qemlflow.errors.ConfigError: unknown split method 'time'; use one of: random, scaffold, ...
    """
    method = _check_method(method)
    _check_params(method, params)
    rows = _count_rows(method, n, smiles, y)
    if method == "scaffold":
        return scaffold_split(list(smiles or []), sizes, seed, **params)
    if method == "scaffold_deepchem":
        return scaffold_deepchem_split(list(smiles or []), sizes, seed, **params)
    if method == "cluster":
        return cluster_split(list(smiles or []), sizes, seed, **params)
    made = (
        stratified_split(y, sizes, seed)
        if method == "stratified"
        else random_split(rows, sizes, seed)
    )
    if smiles is None:
        return made
    parts = [made.train, made.valid, made.test]
    together = _keep_duplicates_together(parts, _duplicate_keys(list(smiles)))
    train, valid, test = together
    return Split(train, valid, test, method=made.method, seed=made.seed, params=made.params)


# --------------------------------------------------------------------------- cross-validation


def kfold(
    method: str = "random",
    *,
    n: int | None = None,
    smiles: Sequence[str] | None = None,
    y: Any = None,
    k: int = 5,
    seed: int = 0,
    **params: Any,
) -> list[Fold]:
    """Return ``k`` ``(train, test)`` folds; every row is tested exactly once.

    ``random``: a seeded permutation cut into ``k`` near-equal folds. ``stratified``:
    each class dealt round-robin over the folds. ``scaffold``/``cluster``: whole groups
    go to the fold with fewest rows so far, big groups (more than half a fold) first in
    seeded order, then the rest in seeded order; ``balanced=False`` (scaffold) orders
    groups largest first instead. ``scaffold_deepchem`` has no k-fold form (DeepChem's
    split is one deterministic partition). Inputs and parameters are as for
    :func:`split`; with ``smiles``, copies of a molecule (same InChIKey) share a fold.

    Examples
    --------
    >>> folds = kfold("random", n=10, k=3, seed=0)
    >>> [len(test) for _, test in folds]
    [4, 3, 3]
    >>> sorted(i for _, test in folds for i in test.tolist()) == list(range(10))
    True
    """
    method = _check_method(method)
    if method == "scaffold_deepchem":
        raise ConfigError(
            "scaffold_deepchem is one deterministic split, it has no k folds",
            "use method 'scaffold' for scaffold k-fold cross-validation",
        )
    _check_params(method, params)
    rows = _count_rows(method, n, smiles, y)
    k = _check_k(k, rows)
    rng = np.random.default_rng(_check_seed(seed))
    duplicates = _duplicate_keys(None if smiles is None else list(smiles))
    tests: list[IndexArray]
    if method == "random":
        tests = np.array_split(rng.permutation(rows), k)
    elif method == "stratified":
        order = np.concatenate(_stratified_order(_strata(y), rng))
        tests = [order[f::k] for f in range(k)]
    elif method == "scaffold":
        scaffolds = _scaffold_keys(list(smiles or []), bool(params.get("stereo", False)))
        groups = _groups(scaffolds, duplicates)
        tests = _group_kfold(groups, rows, k, rng, bool(params.get("balanced", True)))
    else:
        keys = _cluster_keys(
            list(smiles or []),
            float(params.get("cutoff", 0.35)),
            int(params.get("radius", 2)),
            int(params.get("n_bits", 2048)),
        )
        tests = _group_kfold(_groups(keys, duplicates), rows, k, rng, True)
    if method in ("random", "stratified"):
        tests = _keep_duplicates_together(tests, duplicates)
    everything = np.arange(rows, dtype=np.int64)
    folds: list[Fold] = []
    for test in tests:
        mask = np.ones(rows, dtype=bool)
        mask[test] = False
        folds.append((_as_index(everything[mask]), _as_index(test)))
    return folds


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """Return the independent seed used by each repeat of :func:`repeated_kfold`.

    Derived with ``numpy.random.SeedSequence(seed).spawn(repeats)``, so they are stable
    across platforms and NumPy versions.

    Examples
    --------
    >>> repeat_seeds(0, 2) == repeat_seeds(0, 2)
    True
    >>> len(set(repeat_seeds(0, 3)))
    3
    """
    seed = _check_seed(seed)
    children = np.random.SeedSequence(seed).spawn(repeats)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def repeated_kfold(
    method: str = "random",
    *,
    n: int | None = None,
    smiles: Sequence[str] | None = None,
    y: Any = None,
    k: int = 5,
    repeats: int = 3,
    seed: int = 0,
    **params: Any,
) -> list[Fold]:
    """Return ``repeats * k`` folds: :func:`kfold` run once per seed of :func:`repeat_seeds`.

    Folds are ordered repeat by repeat: ``folds[r * k + f]`` is fold ``f`` of repeat ``r``.

    Examples
    --------
    >>> folds = repeated_kfold("random", n=6, k=2, repeats=2, seed=0)
    >>> len(folds)
    4
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int | np.integer) or repeats < 1:
        raise ConfigError(f"repeats {repeats!r} is not a positive integer", "give e.g. repeats=3")
    folds: list[Fold] = []
    for repeat_seed in repeat_seeds(seed, int(repeats)):
        folds.extend(kfold(method, n=n, smiles=smiles, y=y, k=k, seed=repeat_seed, **params))
    return folds
