"""``suggest``: rank a pool of candidate molecules for the next round of experiments.

Every pool molecule gets a prediction ``mu`` and an uncertainty ``sigma`` from the model,
then an acquisition *score* (higher is better; ``s`` is +1 to maximize the property, -1 to
minimize it):

- ``greedy``: ``s * mu``, the best predicted value;
- ``uncertainty``: ``sigma``, where the model knows least;
- ``ucb``: ``s * mu + beta * sigma``, the upper confidence bound (the lower one, negated,
  when minimizing);
- ``ei``: the Gaussian expected improvement over the best observed label ``y*``: with
  ``d = s * (mu - y*)``, ``EI = d * Phi(d / sigma) + sigma * phi(d / sigma)`` (``max(d, 0)``
  where ``sigma`` is 0).

``sigma`` is what the model gives: the spread of an ensemble's members (``ensemble_sd``)
when the model has one; else the conformal interval as a Gaussian standard deviation,
``(upper - lower) / 2 / z``, ``z`` the normal quantile of the model's interval coverage
(1.645 at 90 %); for a classifier, ``prediction`` is the probability ``p`` of class 1 and
``sigma = sqrt(p (1 - p))`` (``ucb``/``ei`` are refused: they need a Gaussian value).

The batch is picked greedily in score order (ties: the earlier pool row), skipping any
molecule whose ECFP4 Tanimoto similarity to one already picked is above
``max_similarity``: no two suggested molecules are more alike than that.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from qemlflow.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import pandas as pd

    from qemlflow.pipeline.model_source import OpenedModel
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.store import Store

__all__ = [
    "ACQUISITIONS",
    "DEFAULT_BETA",
    "DEFAULT_MAX_SIMILARITY",
    "PoolScores",
    "SuggestResult",
    "Suggestions",
    "acquisition_scores",
    "rank_pool",
    "rejected_path",
    "score_pool",
    "select_diverse",
    "suggest",
    "training_labels",
]

ACQUISITIONS: Final = ("greedy", "uncertainty", "ucb", "ei")
DEFAULT_BETA: Final = 1.0
DEFAULT_MAX_SIMILARITY: Final = 0.7
ACTION: Final = "suggest.completed"
MAX_BATCH: Final = 1_000_000
"""The largest batch ``-n`` asks for: a round of experiments, not a screen (``screen --top``)."""
_CHUNK = 20_000  # pool rows scored at a time: bounds the feature matrix's memory


@dataclass(frozen=True)
class PoolScores:
    """A pool scored by a model: per row, the prediction and its uncertainty ``sigma``.

    Rows that could not be read or scored keep their place with their reason in ``errors``
    (``""`` for a scored row) and NaN numbers.
    """

    ids: list[str]
    smiles: list[str]
    standardized: list[str]
    prediction: NDArray[np.float64]
    sigma: NDArray[np.float64]
    errors: list[str]
    uncertainty: str
    """Where ``sigma`` comes from: ``ensemble_sd``, ``conformal`` or ``bernoulli``."""
    task: str
    lower: NDArray[np.float64] | None = None
    upper: NDArray[np.float64] | None = None

    @property
    def scored(self) -> NDArray[np.bool_]:
        """Which rows have a prediction."""
        return np.array([not e for e in self.errors], dtype=bool)


@dataclass(frozen=True)
class Suggestions:
    """A ranked batch: pool rows (0-based), best first, with their scores, and the pool."""

    rows: NDArray[np.intp]
    score: NDArray[np.float64]
    pool: PoolScores
    skipped_similar: int
    """Candidates ranked above the last pick but left out as too similar to a pick."""

    def table(self) -> pd.DataFrame:
        """The batch as the output table: rank, row (1-based), id, smiles, score, ..."""
        import pandas as pd

        p, rows = self.pool, self.rows
        columns: dict[str, Any] = {
            "rank": np.arange(1, len(rows) + 1),
            "row": rows + 1,
            "id": [p.ids[i] for i in rows],
            "smiles": [p.smiles[i] for i in rows],
            "standardized_smiles": [p.standardized[i] for i in rows],
            "score": self.score[rows],
            "prediction": p.prediction[rows],
            "uncertainty": p.sigma[rows],
        }
        if p.lower is not None and p.upper is not None:
            columns["lower"], columns["upper"] = p.lower[rows], p.upper[rows]
        columns["uncertainty_source"] = [p.uncertainty] * len(rows)
        return pd.DataFrame(columns)

    def rejected(self) -> pd.DataFrame:
        """Pool rows that could not be read or scored: row (1-based), id, smiles, error."""
        import pandas as pd

        p = self.pool
        bad = [i for i, e in enumerate(p.errors) if e]
        return pd.DataFrame(
            {
                "row": [i + 1 for i in bad],
                "id": [p.ids[i] for i in bad],
                "smiles": [p.smiles[i] for i in bad],
                "error": [p.errors[i] for i in bad],
            }
        )


@dataclass(frozen=True)
class SuggestResult:
    """What a finished ``suggest`` wrote and recorded."""

    output: Path
    output_digest: str
    pool_digest: str
    model_digest: str
    model: str
    rows: int
    rejected: int
    written: int
    rejected_output: Path | None
    uncertainty: str
    best_observed: float | None
    best_observed_source: str | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    audit_seq: int | None = None


# -------------------------------------------------------------------------- scoring
def score_pool(
    predictor: Predictor,
    smiles: Sequence[str],
    ids: Sequence[str] | None = None,
    read_errors: Sequence[str] | None = None,
    *,
    target: str | None = None,
) -> PoolScores:
    """Score pool molecules with ``predictor``, as ``screen`` scores them.

    Parameters
    ----------
    predictor
        The model; the numbers are those of ``Predictor.predict`` for the same SMILES.
    smiles, ids
        The pool; ids default to the 1-based row numbers.
    read_errors
        Per row, why it could not be read (``""`` when it could); such rows are not scored.
    target
        The task to rank by, for a model of several tasks.
    """
    from qemlflow.screen.scoring import ChunkScorer

    names = predictor.target_names
    suffix = _target_suffix(names, target)
    scorer = ChunkScorer(predictor, None)
    all_ids = list(ids) if ids is not None else [str(i + 1) for i in range(len(smiles))]
    errors_in = list(read_errors) if read_errors is not None else [""] * len(smiles)
    parts: list[Any] = []
    for start in range(0, len(smiles), _CHUNK):
        stop = start + _CHUNK
        parts.append(
            scorer.score(all_ids[start:stop], list(smiles[start:stop]), errors_in[start:stop])
        )
    columns = {name for part in parts for name in part.column_names}

    def column(name: str) -> NDArray[np.float64]:
        if not parts:
            return np.empty(0)
        values = [part.column(name).to_numpy(zero_copy_only=False) for part in parts]
        return np.asarray(np.concatenate(values), dtype=np.float64)  # nulls -> NaN

    errors = [e or "" for part in parts for e in part.column("error").to_pylist()]
    standardized = [
        s or "" for part in parts for s in part.column("standardized_smiles").to_pylist()
    ]
    lower = upper = None
    if predictor.task == "regression":
        prediction = column(f"prediction{suffix}")
        lower, upper = column(f"lower{suffix}"), column(f"upper{suffix}")
        if f"ensemble_sd{suffix}" in columns:  # the members' spread, when the model has one
            sigma, source = column(f"ensemble_sd{suffix}"), "ensemble_sd"
        else:
            z = _normal_quantile(0.5 + float(getattr(predictor.model, "coverage", 0.9)) / 2)
            sigma, source = (upper - lower) / 2.0 / z, "conformal"
    else:
        prediction = column(f"probability{suffix}")
        sigma, source = np.sqrt(np.clip(prediction * (1 - prediction), 0.0, None)), "bernoulli"
    return PoolScores(
        ids=all_ids,
        smiles=list(smiles),
        standardized=standardized,
        prediction=prediction,
        sigma=sigma,
        errors=errors,
        uncertainty=source,
        task=predictor.task,
        lower=lower,
        upper=upper,
    )


def _target_suffix(names: Sequence[str], target: str | None) -> str:
    """The column suffix of the task ranked by (``""`` for a single-task model)."""
    if target is not None and target not in names:
        raise ConfigError(
            f"--target {target!r} is not a task of the model",
            f"use one of {', '.join(names)}",
        )
    if len(names) == 1:
        return ""
    if target is None:
        raise ConfigError(
            f"the model predicts {len(names)} tasks ({', '.join(names)}); suggest ranks by one",
            "name it with --target",
        )
    return f"_{target}"


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (``statistics.NormalDist``, no SciPy import)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


# -------------------------------------------------------------------------- acquisition
def acquisition_scores(
    prediction: NDArray[np.float64],
    sigma: NDArray[np.float64],
    acquisition: str,
    *,
    maximize: bool = True,
    beta: float = DEFAULT_BETA,
    best_observed: float | None = None,
) -> NDArray[np.float64]:
    """Return each molecule's acquisition score (higher is better); see the module docstring.

    Examples
    --------
    >>> mu, sd = np.array([1.0, 2.0, 0.0]), np.array([0.5, 0.0, 2.0])
    >>> acquisition_scores(mu, sd, "ucb", beta=1.0).tolist()
    [1.5, 2.0, 2.0]
    >>> acquisition_scores(mu, sd, "greedy", maximize=False).tolist()
    [-1.0, -2.0, -0.0]
    >>> acquisition_scores(mu, sd, "ei", best_observed=1.5).round(3).tolist()
    [0.042, 0.5, 0.262]
    """
    mu = np.asarray(prediction, dtype=np.float64)
    sd = np.asarray(sigma, dtype=np.float64)
    sign = 1.0 if maximize else -1.0
    if acquisition == "greedy":
        return sign * mu
    if acquisition == "uncertainty":
        return sd.copy()
    if acquisition == "ucb":
        return sign * mu + beta * sd
    if acquisition == "ei":
        if best_observed is None or not math.isfinite(best_observed):
            raise ConfigError(
                "expected improvement needs the best observed label",
                "give a model whose run is in the store, or --best-observed VALUE",
            )
        d = sign * (mu - best_observed)
        out = np.maximum(d, 0.0)
        positive = sd > 0
        z = d[positive] / sd[positive]
        cdf = 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        out[positive] = d[positive] * cdf + sd[positive] * pdf
        return out
    raise ConfigError(
        f"unknown acquisition {acquisition!r}", f"use one of {', '.join(ACQUISITIONS)}"
    )


def _erf(x: NDArray[np.float64]) -> NDArray[np.float64]:
    from scipy.special import erf

    return np.asarray(erf(x), dtype=np.float64)


# -------------------------------------------------------------------------- selection
def select_diverse(
    score: NDArray[np.float64],
    smiles: Sequence[str],
    k: int,
    max_similarity: float = DEFAULT_MAX_SIMILARITY,
    eligible: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.intp], int]:
    """Pick up to ``k`` rows, best score first, none more similar than ``max_similarity``.

    Candidates are taken in order of decreasing score (ties: the earlier row); one whose
    ECFP4 Tanimoto similarity to a row already picked is above ``max_similarity`` is
    skipped. Fingerprints are computed a block at a time, only as far down the ranking as
    the batch needs. Returns (the rows picked, how many were skipped as too similar).

    Examples
    --------
    >>> rows, skipped = select_diverse(np.array([3.0, 2.0, 1.0]), ["CCO", "CCO", "c1ccccc1"], 2)
    >>> rows.tolist(), skipped
    ([0, 2], 1)
    """
    from qemlflow.serve.domain import ecfp4_packed

    values = np.asarray(score, dtype=np.float64)
    usable = np.isfinite(values) if eligible is None else eligible & ~np.isnan(values)
    candidates = np.flatnonzero(usable)
    order = candidates[np.lexsort((candidates, -values[candidates]))]
    k = min(k, len(order))  # a batch larger than the pool is the whole pool
    if k <= 0:
        return np.empty(0, dtype=np.intp), 0
    if max_similarity >= 1.0:  # every similarity is at most 1: nothing is ever skipped
        return order[:k].astype(np.intp), 0
    picked: list[int] = []
    picked_bits = np.zeros((k, 2048), dtype=bool)
    picked_counts = np.zeros(k, dtype=np.int64)
    skipped = 0
    block = max(256, 4 * k)
    for start in range(0, len(order), block):
        rows = order[start : start + block]
        packed, _ = ecfp4_packed([smiles[i] for i in rows])
        bits = np.unpackbits(packed, axis=1).astype(bool)
        for j, row in enumerate(rows):
            n = len(picked)
            if n:
                shared = (picked_bits[:n] & bits[j]).sum(axis=1)
                union = picked_counts[:n] + int(bits[j].sum()) - shared
                with np.errstate(invalid="ignore", divide="ignore"):
                    similarity = np.where(union == 0, 1.0, shared / np.maximum(union, 1))
                if float(similarity.max()) > max_similarity:
                    skipped += 1
                    continue
            picked_bits[n], picked_counts[n] = bits[j], int(bits[j].sum())
            picked.append(int(row))
            if len(picked) == k:
                return np.asarray(picked, dtype=np.intp), skipped
    return np.asarray(picked, dtype=np.intp), skipped


def rank_pool(
    predictor: Predictor,
    smiles: Sequence[str],
    k: int,
    *,
    ids: Sequence[str] | None = None,
    read_errors: Sequence[str] | None = None,
    acquisition: str = "ucb",
    maximize: bool = True,
    beta: float = DEFAULT_BETA,
    best_observed: float | None = None,
    max_similarity: float = DEFAULT_MAX_SIMILARITY,
    target: str | None = None,
) -> Suggestions:
    """Score a pool with ``predictor`` and pick the next batch of ``k`` molecules.

    The one function behind ``qemlflow suggest`` and the active-learning benchmark:
    :func:`score_pool`, :func:`acquisition_scores`, :func:`select_diverse`.
    """
    check_options(acquisition, k, beta, max_similarity, predictor.task)
    pool = score_pool(predictor, smiles, ids, read_errors, target=target)
    ok = pool.scored
    if acquisition != "greedy" and ok.any():
        finite = np.isfinite(pool.sigma[ok])
        if not finite.all():
            raise ModelError(
                f"the model gives no finite uncertainty for {int((~finite).sum())} molecule(s) "
                "(an interval fitted on too few labels)",
                "use --acquisition greedy, or a model trained on more data",
            )
        sigma = pool.sigma[ok]
        # (upper - lower) of a fixed-width interval differs between molecules by rounding only
        if len(sigma) > 1 and np.allclose(sigma, sigma[0], rtol=1e-9, atol=0.0):
            consequence = (
                "ties go to pool order"
                if acquisition == "uncertainty"
                else f"{acquisition} ranks as greedy does"
            )
            warnings.warn(
                f"the model's uncertainty ({pool.uncertainty}) is the same for every "
                f"molecule: {consequence}",
                UserWarning,
                stacklevel=2,
            )
    score = np.full(len(pool.errors), np.nan)
    score[ok] = acquisition_scores(
        pool.prediction[ok],
        pool.sigma[ok],
        acquisition,
        maximize=maximize,
        beta=beta,
        best_observed=best_observed,
    )
    rows, skipped = select_diverse(score, pool.standardized, k, max_similarity, eligible=ok)
    return Suggestions(rows, score, pool, skipped)


def check_options(
    acquisition: str, k: int, beta: float, max_similarity: float, task: str | None = None
) -> None:
    """Refuse options ``suggest`` cannot act on, each with its fix."""
    if acquisition not in ACQUISITIONS:
        raise ConfigError(
            f"unknown acquisition {acquisition!r}", f"use one of {', '.join(ACQUISITIONS)}"
        )
    if not 1 <= k <= MAX_BATCH:
        raise ConfigError(
            f"-n {k}: a batch holds 1 to {MAX_BATCH:,} molecules",
            "give a smaller -n (to score a whole library, use 'qemlflow screen --top')",
        )
    if not math.isfinite(beta) or beta < 0:
        raise ConfigError(f"--beta {beta} is not a weight", "give a number of 0 or more")
    if not 0.0 <= max_similarity <= 1.0:  # also refuses NaN
        raise ConfigError(
            f"--max-similarity {max_similarity} is not a Tanimoto similarity",
            f"give a number from 0 to 1 (default {DEFAULT_MAX_SIMILARITY}; 1: no constraint)",
        )
    if task == "classification" and acquisition in ("ucb", "ei"):
        raise ConfigError(
            f"--acquisition {acquisition} needs a Gaussian prediction; the model is a classifier",
            "use greedy (probability of class 1) or uncertainty (sqrt(p(1-p)))",
        )


# -------------------------------------------------------------------------- training labels
def training_labels(
    store: Store, run_id: str, target: str | None = None
) -> NDArray[np.float64] | None:
    """The labels a run's model was fitted on (its train split, one task), or None when the
    run recorded no dataset or split."""
    from qemlflow.pipeline.steps import DatasetCodec, SplitCodec

    run = store.runs.get(run_id)
    outputs = {s.step: s.output for s in run.steps if s.output}
    if "standardize" not in outputs or "split" not in outputs:
        return None
    dataset = DatasetCodec().decode(store.blobs.get_bytes(outputs["standardize"]))
    split = SplitCodec().decode(store.blobs.get_bytes(outputs["split"]))
    y = np.asarray(dataset.y, dtype=np.float64).reshape(len(dataset.smiles), -1)
    task = dataset.target_names.index(target) if target in dataset.target_names else 0
    labels = y[np.asarray(split.train, dtype=np.intp), task]
    return np.asarray(labels[~np.isnan(labels)], dtype=np.float64)


def _best_observed(
    store: Store | None,
    model: OpenedModel,
    given: float | None,
    maximize: bool,
    target: str | None,
) -> tuple[float | None, str | None]:
    """(the best observed label, where it came from) for expected improvement."""
    if given is not None:
        return float(given), "--best-observed"
    if store is None or model.run_id is None:
        return None, None
    labels = training_labels(store, model.run_id, target)
    if labels is None or not len(labels):
        return None, None
    best = float(labels.max() if maximize else labels.min())
    return best, f"training labels of run {model.run_id}"


# -------------------------------------------------------------------------- the command
def rejected_path(output: Path) -> Path:
    """Where the pool rows that could not be scored go: ``OUT.rejected.csv`` beside ``OUT``."""
    return output.with_name(f"{output.stem}.rejected.csv")


def suggest(
    model: str | Path | OpenedModel,
    pool: str | Path,
    output: str | Path,
    k: int,
    *,
    acquisition: str = "ucb",
    maximize: bool = True,
    beta: float = DEFAULT_BETA,
    max_similarity: float = DEFAULT_MAX_SIMILARITY,
    best_observed: float | None = None,
    target: str | None = None,
    store: Store | None = None,
    smiles_column: str | None = None,
    id_column: str | None = None,
    header: bool | None = None,
    trust_file: bool = False,
) -> SuggestResult:
    """Rank the molecules of ``pool`` with ``model`` and write the best ``k`` to ``output``.

    Parameters
    ----------
    model
        ``NAME``, ``NAME@ALIAS``, ``NAME@N`` (needs ``store``), a model file or ``qemlflow
        run`` output folder, or an opened model; resolved as ``screen`` resolves it.
    pool
        Candidate molecules, read as ``screen`` reads them (same formats and options).
    output
        A ``.csv``: ``k`` rows, best first: rank, row, id, smiles, standardized_smiles,
        score, prediction, uncertainty (+ lower, upper), uncertainty_source. Pool rows
        that could not be read or scored go to ``OUT.rejected.csv`` with their reason.
    acquisition, maximize, beta, max_similarity
        How the batch is chosen; see the module docstring.
    best_observed
        ``y*`` for ``ei``; by default the best training label of the model's run (from
        ``store``).
    target
        The task ranked by, for a model of several tasks.
    store
        Where the suggestion is recorded (``suggest.completed``, the output kept as a
        blob); None records nothing.
    """
    from qemlflow._atomic import write_atomic
    from qemlflow.pipeline.model_source import OpenedModel, open_model
    from qemlflow.screen.parts import sha256_file
    from qemlflow.screen.reading import open_input

    began = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise ConfigError(f"cannot write '{output}'", "name the output .csv")
    if output.is_dir() or not output.parent.is_dir():
        where = "is a folder" if output.is_dir() else "is in a folder that does not exist"
        raise ConfigError(f"cannot write '{output}': it {where}", "give a .csv file path")
    if best_observed is not None and not math.isfinite(best_observed):
        raise ConfigError(f"--best-observed {best_observed} is not a label", "give a number")
    check_options(acquisition, k, beta, max_similarity)
    source = open_input(pool, smiles_column=smiles_column, id_column=id_column, header=header)
    loaded = (
        model
        if isinstance(model, OpenedModel)
        else open_model(model, store, trust_file=trust_file, purpose="suggest")
    )
    predictor = loaded.predictor
    check_options(acquisition, k, beta, max_similarity, predictor.task)
    best, best_source = (None, None)
    if acquisition == "ei":
        best, best_source = _best_observed(store, loaded, best_observed, maximize, target)
        if best is None:
            raise ConfigError(
                f"expected improvement needs the best observed label, and the training labels "
                f"of {loaded.label} are not in {'the store' if store else 'any store'}",
                "give --best-observed VALUE, or the model's store with --store",
            )
    ids: list[str] = []
    smiles: list[str] = []
    errors: list[str] = []
    for chunk in source.chunks(_CHUNK):
        ids += chunk.ids
        smiles += chunk.smiles
        errors += chunk.errors or [""] * len(chunk.smiles)
    ranked = rank_pool(
        predictor,
        smiles,
        k,
        ids=ids,
        read_errors=errors,
        acquisition=acquisition,
        maximize=maximize,
        beta=beta,
        best_observed=best,
        max_similarity=max_similarity,
        target=target,
    )
    table = ranked.table()
    if len(table) < k:
        warnings.warn(
            f"only {len(table)} of the {k} molecules asked for could be suggested "
            f"({int(ranked.pool.scored.sum())} scored, {ranked.skipped_similar} too similar "
            "to a better one)",
            UserWarning,
            stacklevel=2,
        )
    data = table.to_csv(index=False, lineterminator="\n").encode()
    write_atomic(output, lambda path: path.write_bytes(data))
    rejected = ranked.rejected()
    side = rejected_path(output)
    if len(rejected):
        text = rejected.to_csv(index=False, lineterminator="\n").encode()
        write_atomic(side, lambda path: path.write_bytes(text))
    elif side.exists():  # from an earlier suggestion into the same file: it is not this one's
        side.unlink()
    params: dict[str, Any] = {
        "k": k,
        "acquisition": acquisition,
        "beta": beta if acquisition == "ucb" else None,
        "maximize": maximize,
        "max_similarity": max_similarity,
        "target": target,
        "smiles_column": source.smiles_column,
        "id_column": id_column,
        **({"header": header} if header is not None else {}),
    }
    import hashlib

    result = SuggestResult(
        output=output,
        output_digest=hashlib.sha256(data).hexdigest(),
        pool_digest=sha256_file(source.path),
        model_digest=loaded.digest,
        model=loaded.label,
        rows=len(smiles),
        rejected=len(rejected),
        written=len(table),
        rejected_output=side if len(rejected) else None,
        uncertainty=ranked.pool.uncertainty,
        best_observed=best,
        best_observed_source=best_source,
        seconds=time.perf_counter() - began,
        params=params,
    )
    if store is not None:
        seq = _record(store, result, loaded, source.path, data, ranked.skipped_similar)
        result = SuggestResult(**{**result.__dict__, "audit_seq": seq})
    return result


def _record(
    store: Store,
    result: SuggestResult,
    model: OpenedModel,
    pool: Path,
    data: bytes,
    skipped: int,
) -> int:
    """Append ``suggest.completed``; the model file and the output are kept as blobs, so
    the event's digests can be re-hashed like any other."""
    if model.version is None:
        store.blobs.put_bytes(model.data)
    store.blobs.put_bytes(data)
    event = store.audit_trail.append(
        ACTION,
        {
            "model": model.digest,
            "input": result.pool_digest,
            "output": result.output_digest,
            **({"run": model.run_id} if model.run_id else {}),
        },
        details={
            "model": model.label,
            "model_version": model.version,
            "model_origin": model.origin,
            "pool": str(pool),
            "output": str(result.output),
            "rows": result.rows,
            "rejected": result.rejected,
            "written": result.written,
            "skipped_similar": skipped,
            "uncertainty": result.uncertainty,
            "best_observed": result.best_observed,
            "best_observed_source": result.best_observed_source,
            "seconds": round(result.seconds, 3),
            **result.params,
        },
    )
    return int(event.seq)
