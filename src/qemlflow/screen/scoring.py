"""Scoring one chunk of molecules into one Arrow table, wherever the chunk runs.

:class:`ScoringPackage` is everything a worker needs (the model file's bytes, the packed
training fingerprints of its applicability domain), sent once per worker;
:func:`score_chunk` is the pure function each chunk runs, in this process, a local worker
process or a Dask worker. A worker loads the model once and keeps it, keyed by digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pyarrow as pa

    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.pipeline.scoring import FeaturePlan
    from qemlflow.screen.reading import InputChunk
    from qemlflow.serve.domain import ApplicabilityDomain

__all__ = ["BATCH_ROWS", "ChunkScorer", "ScoringPackage", "output_columns", "score_chunk"]

BATCH_ROWS = 2048
"""Rows featurized and predicted at a time within a chunk (see :meth:`ChunkScorer.score`)."""


@dataclass(frozen=True)
class ScoringPackage:
    """What a worker needs to score chunks; pickled once per worker."""

    model_digest: str
    model_bytes: bytes = b""
    domain_bits: bytes | None = None
    """Packed ECFP4 rows (256 bytes each) of the training molecules; None: no domain."""
    domain_threshold: float = 0.3
    key: str = field(init=False)
    """Names the scorer this package makes: model, domain and threshold together."""

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.model_digest.encode())
        digest.update(b"-" if self.domain_bits is None else self.domain_bits)
        digest.update(repr(self.domain_threshold).encode())
        object.__setattr__(self, "key", digest.hexdigest())


def output_columns(predictor: Predictor) -> list[str]:
    """The model's output columns, named as ``Predictor.predict`` names them."""
    bases = predictor.output_bases()  # with ensemble_sd for an ensemble
    targets = predictor.target_names
    if len(targets) == 1:
        return bases
    return [f"{b}_{t}" for b in bases for t in targets]


class ChunkScorer:
    """A loaded model, its feature plan and its applicability domain, scoring chunks.

    The numbers are those of ``Predictor.predict`` for the same SMILES. Without
    standardization each molecule is parsed once, for the model's features and the domain
    bits together; with it, the standardized SMILES are featurized as ``predict`` does.
    """

    def __init__(self, predictor: Predictor, domain: ApplicabilityDomain | None) -> None:
        from qemlflow.pipeline.scoring import FeaturePlan

        self.predictor = predictor
        self.domain = domain
        self.plan: FeaturePlan = FeaturePlan(predictor.feature_spec)
        self.columns = output_columns(predictor)

    @classmethod
    def from_package(cls, package: ScoringPackage) -> ChunkScorer:
        """Load the package's model (only load models you trust: they are pickles)."""
        from qemlflow.pipeline.predictor import load_predictor_bytes
        from qemlflow.serve.domain import ApplicabilityDomain

        predictor = load_predictor_bytes(package.model_bytes, f"model {package.model_digest[:12]}")
        domain = None
        if package.domain_bits is not None:
            bits = np.frombuffer(package.domain_bits, dtype=np.uint8).reshape(-1, 256)
            domain = ApplicabilityDomain(threshold=package.domain_threshold).fit_packed(bits)
        return cls(predictor, domain)

    def score(
        self, ids: list[str], smiles: list[str], read_errors: list[str] | None = None
    ) -> pa.Table:
        """Score one chunk: one output row per input row, in order; errors in place.

        A row with a ``read_errors`` entry (it could not be read) is not scored. A chunk is
        scored :data:`BATCH_ROWS` rows at a time and the pieces joined into one table: every
        output of a row depends on that row alone, so the table is the same, while the
        feature arrays stay a few tens of MB instead of hundreds (fresh pages for each of
        those cost ~7 % of the default model's time, and memory).
        """
        import pyarrow as pa

        n = len(smiles)
        if n > BATCH_ROWS:
            pieces = [
                self.score(
                    ids[start : start + BATCH_ROWS],
                    smiles[start : start + BATCH_ROWS],
                    read_errors[start : start + BATCH_ROWS] if read_errors else None,
                )
                for start in range(0, n, BATCH_ROWS)
            ]
            return pa.concat_tables(pieces).combine_chunks()
        errors: list[str | None] = [e or None for e in read_errors] if read_errors else [None] * n
        rows, X, bits, scored = self._features(smiles, errors)
        ok = np.zeros(n, dtype=bool)
        ok[rows] = True
        arrays: dict[str, Any] = {
            "id": pa.array(ids, type=pa.string()),
            "smiles": pa.array(smiles, type=pa.string()),
            # What the model scored: the standardized structure (as given when the model
            # does not standardize); null where there is an error.
            "standardized_smiles": pa.array(scored, type=pa.string(), mask=~ok),
        }
        outputs = self.predictor.outputs(X) if len(rows) else {}
        targets = self.predictor.target_names
        names = iter(self.columns)  # output_columns' order: base by base, task by task
        for base in self.predictor.output_bases():
            for t in range(len(targets)):
                full = np.zeros(n)
                if len(rows):
                    full[rows] = outputs[base][:, t]
                arrays[next(names)] = pa.array(full, mask=~ok)
        similarity = np.zeros(n)
        known = ok if self.domain is not None else np.zeros(n, dtype=bool)
        if self.domain is not None and len(rows):
            similarity[rows] = self.domain.similarity_packed(bits)
        arrays["domain_similarity"] = pa.array(similarity, mask=~known)
        threshold = self.domain.threshold if self.domain is not None else np.inf
        arrays["in_domain"] = pa.array(similarity >= threshold, mask=~known)
        arrays["error"] = pa.array(errors, type=pa.string())
        return pa.table(arrays)

    def _features(
        self, smiles: list[str], errors: list[str | None]
    ) -> tuple[NDArray[np.intp], NDArray[Any], NDArray[np.uint8], list[str]]:
        """(rows scored, their features, their domain bits, the SMILES each row was scored
        as); fills ``errors`` for the rest."""
        from qemlflow.chem import Reason
        from qemlflow.pipeline.scoring import as_given

        p = self.predictor
        if p.standardize and self.plan.reads_molecules:
            return self._standardized_rows(smiles, errors)
        inputs: list[object]
        if p.standardize:
            texts = []
            inputs = []  # the SMILES to featurize, or the molecule when it is the same
            reuse = self.plan.takes_molecules
            for i, result in self._standardized(smiles, errors):
                texts.append(_text(result))
                inputs.append(result.mol if reuse and as_given(smiles[i], result) else texts[i])
        else:
            texts = [s.strip() for s in smiles]
            for i, text in enumerate(texts):
                if errors[i] is None and (problem := p.limits.admission_problem(text)):
                    errors[i] = f"{Reason.TOO_LARGE}: {problem}"
            inputs = list(texts)
        index = np.flatnonzero(np.array([e is None for e in errors], dtype=bool))
        X, bits, valid = self.plan.compute_valid([inputs[i] for i in index])
        return self._kept(smiles, errors, index, X, bits, valid, texts)

    def _standardized_rows(
        self, smiles: list[str], errors: list[str | None]
    ) -> tuple[NDArray[np.intp], NDArray[Any], NDArray[np.uint8], list[str]]:
        """:meth:`_features` for a standardizing ECFP-only model: each standardized molecule
        is fingerprinted as it is, not written to SMILES and parsed again (see
        :class:`~qemlflow.pipeline.scoring.MoleculeRows`); the rows are the same."""
        from qemlflow.chem.cleanup import has_hydrogen_atoms

        rows = self.plan.molecule_rows(len(smiles))
        texts = []
        for i, result in self._standardized(smiles, errors):
            texts.append(_text(result))
            if result is None or result.mol is None:  # unreadable, or refused with its reason
                continue
            if has_hydrogen_atoms(result.mol):  # the SMILES reader would remove them
                rows.write_smiles(i, texts[i])
            else:
                rows.write(i, result.mol)
        index = np.flatnonzero(np.array([e is None for e in errors], dtype=bool))
        X, bits, valid = rows.result(index)
        return self._kept(smiles, errors, index, X, bits, valid, texts)

    def _standardized(
        self, smiles: list[str], errors: list[str | None]
    ) -> Iterator[tuple[int, Any]]:
        """(row, standardization result) for each SMILES, None for a row that could not be
        read; a refusal's reason goes into ``errors``."""
        from qemlflow.chem import standardize_smiles

        p = self.predictor
        for i, given in enumerate(smiles):
            if errors[i] is not None:  # the row could not be read
                yield i, None
                continue
            result = standardize_smiles(
                given, tautomer=p.tautomer, limits=p.limits, policy=p.chemistry
            )
            if not result.ok:
                errors[i] = _error_text(result)
            yield i, result

    def _kept(
        self,
        smiles: list[str],
        errors: list[str | None],
        index: NDArray[np.intp],
        X: NDArray[Any],
        bits: NDArray[np.uint8],
        valid: NDArray[np.bool_],
        texts: list[str],
    ) -> tuple[NDArray[np.intp], NDArray[Any], NDArray[np.uint8], list[str]]:
        """The featurized rows: an error for each candidate that gave no features (its
        parse failure, else ``featurization_error``), the rest kept."""
        from qemlflow.chem import parse_smiles

        for i in index[~valid]:
            parsed = parse_smiles(smiles[i], limits=self.predictor.limits)
            errors[i] = _error_text(parsed) if not parsed.ok else "featurization_error"
        if valid.all():  # the usual case: no copy of the feature matrix
            return index, X, bits, texts
        return index[valid], X[valid], bits[valid], texts


def _text(result: Any) -> str:
    """The standardized SMILES of a result ("" for an unreadable row or a refusal)."""
    return (result.smiles or "") if result is not None else ""


def _error_text(result: Any) -> str:
    """The error ``Predictor.predict`` writes for a molecule that failed."""
    return f"{result.reason}: {result.detail}" if result.detail else str(result.reason)


_LOADED: dict[str, ChunkScorer] = {}


def load_scorer(package: ScoringPackage) -> ChunkScorer:
    """The package's scorer, loaded once per process (workers keep it between chunks)."""
    scorer = _LOADED.get(package.key)
    if scorer is None:
        _LOADED.clear()  # one model at a time: a worker may outlive many screens
        scorer = _LOADED[package.key] = ChunkScorer.from_package(package)
    return scorer


def score_chunk(package: ScoringPackage, chunk: InputChunk) -> pa.Table:
    """Score ``chunk`` with the package's model (loaded on first use in this process)."""
    return load_scorer(package).score(chunk.ids, chunk.smiles, chunk.errors)


def init_worker(package: ScoringPackage) -> None:
    """Process-pool initializer: ignore Ctrl-C (the parent handles it), load the model."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    load_scorer(package)


def score_loaded(key: str, chunk: InputChunk) -> pa.Table:
    """Score ``chunk`` with the scorer :func:`init_worker` loaded in this process."""
    return _LOADED[key].score(chunk.ids, chunk.smiles, chunk.errors)
