"""The service's feature plan and answer cache: the same numbers as the unoptimized path.

:class:`~qemlflow.pipeline.scoring.FeaturePlan` fills a featurizer's column blocks and the
applicability-domain bits from one parse of each molecule; here its output is compared,
value for value, with the model's own featurizer (``transform``) and
:func:`~qemlflow.serve.domain.ecfp4_packed` on molecules of all seven bundled sets, raw
and standardized as the service sees them. :class:`~qemlflow.serve.service.AnswerCache`
keeps what a version has answered; its rules are checked on real results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.bundled import bundled_csv

from qemlflow.chem import standardize_smiles
from qemlflow.data import BUNDLED
from qemlflow.features import make_featurizer
from qemlflow.pipeline.scoring import FeaturePlan
from qemlflow.serve.domain import ecfp4_packed
from qemlflow.serve.schemas import DomainScore, PredictionResult
from qemlflow.serve.service import AnswerCache

DEFAULT = [{"type": "ecfp", "counts": True}, {"type": "rdkit2d"}]
PHYSCHEM = [{"type": "ecfp", "counts": True}, {"type": "physchem"}]
ODD = ["", "C1CC(not smiles", "[Xe]", "C", "[Na+].[Cl-]", "c1ccccc1" * 3, "CC(=O)[O-].[NH4+]"]


def _sample(per_set: int) -> list[str]:
    """``per_set`` evenly spaced molecules of each bundled set, as given and standardized,
    plus unusable and odd inputs."""
    smiles: list[str] = []
    for name, entry in BUNDLED.items():
        column = pd.read_csv(bundled_csv(name))[entry.smiles_column].astype(str).tolist()
        picked = column[:: max(1, len(column) // per_set)][:per_set]
        standardized = [standardize_smiles(s).smiles or "" for s in picked]
        smiles += picked + standardized
    return smiles + ODD


def _check(spec: Any, smiles: list[str]) -> None:
    X, bits, valid = FeaturePlan(spec).compute_valid(smiles)
    want = make_featurizer(spec).transform(smiles)
    want_bits, want_valid = ecfp4_packed(smiles)
    assert X.dtype == want.dtype and X.shape == want.shape
    assert np.array_equal(X, want, equal_nan=True)
    assert np.array_equal(bits, want_bits)
    assert valid.tolist() == want_valid.tolist()
    assert not valid.all() and valid.sum() > len(smiles) // 2
    # One molecule at a time (what a worker process does): the same rows again.
    for i in range(0, len(smiles), 37):
        row, row_bits = FeaturePlan(spec).compute([smiles[i]])
        assert np.array_equal(row[0], want[i], equal_nan=True)
        assert np.array_equal(row_bits[0], want_bits[i])


@pytest.mark.parametrize(
    ("spec", "per_set"),
    [
        (PHYSCHEM, 60),  # the candidate default
        (DEFAULT, 12),  # today's default (RDKit 2D is ~10 ms a molecule)
        (["maccs", {"type": "atompair", "size": 512}, "fcfp"], 20),
        (["physchem"], 20),
    ],
    ids=["ecfp-counts+physchem", "ecfp-counts+rdkit2d", "fingerprints", "physchem"],
)
def test_plan_equals_the_featurizer_on_the_bundled_sets(spec: Any, per_set: int) -> None:
    _check(spec, _sample(per_set))


def test_domain_bits_come_from_the_models_own_ecfp4_counts_when_it_has_them() -> None:
    # The default model's ECFP4 counts give the domain bits (count > 0); any other spec
    # computes them as one more block. Both equal ecfp4_packed (the test above).
    assert FeaturePlan(PHYSCHEM).counts_block == 0
    assert FeaturePlan(["physchem", {"type": "ecfp", "counts": True}]).counts_block == 1
    for other in (["physchem"], [{"type": "ecfp", "counts": True, "chirality": True}, "maccs"]):
        plan = FeaturePlan(other)
        assert plan.counts_block is None and plan.blocks is not None
        assert plan.blocks[-1].counts is False and plan.blocks[-1].size == 2048


def test_plan_keeps_the_featurizer_for_a_spec_without_column_blocks() -> None:
    plan = FeaturePlan({"type": "smiles"})
    assert plan.blocks is None and plan.featurizer is not None
    assert FeaturePlan(PHYSCHEM).blocks is not None
    assert FeaturePlan("ecfp").blocks is None  # the fingerprint function directly


def _result(smiles: str, value: float | None, error: str | None = None) -> PredictionResult:
    return PredictionResult(
        smiles=smiles,
        standardized_smiles=None if error else smiles,
        prediction=value,
        domain=DomainScore(similarity=0.5, in_domain=True, threshold=0.3),
        model="m",
        model_version=1,
        error=error,
    )


def test_answer_cache_answers_only_when_every_molecule_is_known() -> None:
    cache = AnswerCache(max_entries=3)
    cache.put([_result("CCO", 1.0), _result("CCN", 2.0), _result("bad", None, "invalid")])
    assert len(cache) == 2  # an error is not kept: a timeout depends on the load
    rows = cache.get(["CCN", "CCO", "CCN"])
    assert rows is not None and [r.prediction for r in rows] == [2.0, 1.0, 2.0]
    assert cache.get(["CCO", "CCC"]) is None
    assert cache.get(["bad"]) is None
    assert cache.get([]) == []
    # Least recently used goes first: after CCC, then a use of CCO, CCN is the oldest.
    cache.put([_result("CCC", 3.0)])
    cache.get(["CCO"])
    cache.put([_result("CCCC", 4.0)])
    assert len(cache) == 3
    assert cache.get(["CCN"]) is None
    assert cache.get(["CCO", "CCC", "CCCC"]) is not None
    cache.put([_result("CCO", 9.0)])  # the first answer stays: a version's answers never change
    again = cache.get(["CCO"])
    assert again is not None and again[0].prediction == 1.0


def test_the_by_bit_domain_search_gives_the_by_word_similarities_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A chunk of queries is scored from its set bits (a sparse product); one molecule, as the
    # service scores it, word by word. Both must give the same floats, here on queries from
    # every bundled set against ESOL (duplicates, so similarities of 1, and far molecules).
    import qemlflow.serve.domain as domain

    training = [str(s) for s in pd.read_csv(bundled_csv("esol"))["smiles"]]
    queries = _sample(150)
    packed, valid = ecfp4_packed(queries)
    packed = packed[valid]
    ad = domain.ApplicabilityDomain().fit(training)
    by_bit = ad.similarity_packed(packed)
    assert ad._bit_rows is not None  # the by-bit search ran
    monkeypatch.setattr(domain, "_BY_BIT_FROM", len(packed) + 1)
    by_word = ad.similarity_packed(packed)
    assert by_bit.tobytes() == by_word.tobytes()
    assert (by_bit == 1.0).any() and (by_bit < 0.3).any()
    one = [ad.similarity_packed(packed[i : i + 1])[0] for i in range(0, len(packed), 97)]
    assert np.array_equal(one, by_bit[::97])
