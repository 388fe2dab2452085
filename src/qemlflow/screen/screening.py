"""``screen``: score a file of molecules of any size with a model, resumably.

The input is cut into fixed chunks (chunk ``i`` = rows ``[i*C, (i+1)*C)``), each chunk is
scored independently (here, in local worker processes or on a Dask cluster) into a part
file, and the parts are assembled in order into one row-aligned output, each part checked
against its record (the input rows it covers and their digest, its own digest) on resuming
and again on assembly. The screen is recorded in the store's audit trail as
``screen.completed``, only after that verified output is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qemlflow.errors import ConfigError, QeMLflowError
from qemlflow.pipeline.model_source import OpenedModel, open_model

if TYPE_CHECKING:
    import pyarrow as pa

    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.screen.parts import TopK
    from qemlflow.screen.reading import InputChunk
    from qemlflow.screen.running import ProgressFile
    from qemlflow.store import Store

__all__ = ["ScreenInterruptedError", "ScreenProgress", "ScreenResult", "screen"]

DEFAULT_CHUNK_SIZE = 20_000
HITS_KEPT = 20
"""Best rows kept with a recorded screen (a JSON blob its event names), for the UI."""
_MAX_WORKERS = 1_024  # processes; more is a typo, and each one holds the model


class ScreenInterruptedError(QeMLflowError):
    """A screen stopped before the end; its finished chunks are kept for ``--resume``."""


class ScreenProgress(Protocol):
    """Receives a screen's progress; the CLI draws a bar."""

    def start(self, total: int, unit: str) -> None:
        """The screen begins; ``total`` bytes (or rows, ``unit``) of input."""

    def update(self, position: int, rows: int) -> None:
        """Input up to ``position`` is scored: ``rows`` molecules so far."""


@dataclass(frozen=True)
class ScreenResult:
    """What a finished screen wrote and recorded."""

    output: Path
    output_digest: str
    input_digest: str
    model_digest: str
    model: str
    rows: int
    errors: int
    written: int
    chunks: int
    resumed_chunks: int
    seconds: float
    domain: bool
    audit_seq: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    rescored_chunks: int = 0
    """Chunks whose kept part did not match its record on resuming, and were scored again."""


def _domain_bits(store: Store | None, model: OpenedModel) -> bytes | None:
    from qemlflow.pipeline.scoring import training_smiles
    from qemlflow.serve.domain import ecfp4_packed

    smiles = training_smiles(store, model.run_id) if store and model.run_id else None
    if smiles is None:
        warnings.warn(
            f"the training molecules of {model.label} are not in the store; "
            "the applicability-domain columns are left empty",
            UserWarning,
            stacklevel=3,
        )
        return None
    bits, valid = ecfp4_packed(smiles)
    return bytes(bits[valid].tobytes())


def _schema(predictor: Predictor) -> pa.Schema:
    import pyarrow as pa

    from qemlflow.screen.scoring import output_columns

    fields = [
        pa.field("id", pa.string()),
        pa.field("smiles", pa.string()),
        pa.field("standardized_smiles", pa.string()),
    ]
    fields += [pa.field(name, pa.float64()) for name in output_columns(predictor)]
    fields += [
        pa.field("domain_similarity", pa.float64()),
        pa.field("in_domain", pa.bool_()),
        pa.field("error", pa.string()),
    ]
    return pa.schema(fields)


def _score_column(predictor: Predictor, by: str | None) -> str:
    from qemlflow.screen.scoring import output_columns

    columns = output_columns(predictor)
    if by is not None:
        if by not in columns:
            raise ConfigError(
                f"--by {by!r} is not an output column", f"use one of {', '.join(columns)}"
            )
        return by
    wanted = "prediction" if predictor.task == "regression" else "probability"
    return next(c for c in columns if c.startswith(wanted))


def _require(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"screening needs {module!r}, which is not installed",
            f"install the {extra} extra: pip install 'qemlflow[{extra}]'",
        )


def screen(
    model: str | Path | OpenedModel,
    input_path: str | Path,
    output: str | Path,
    *,
    store: Store | None = None,
    smiles_column: str | None = None,
    id_column: str | None = None,
    header: bool | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int = 1,
    engine: str = "local",
    address: str | None = None,
    top: int | None = None,
    by: str | None = None,
    ascending: bool = False,
    domain_threshold: float = 0.3,
    resume: bool = False,
    progress: ScreenProgress | None = None,
    trust_file: bool = False,
) -> ScreenResult:
    """Score every molecule of ``input_path`` with ``model`` into ``output``.

    Parameters
    ----------
    model
        A registry spec ``NAME``, ``NAME@ALIAS``, ``NAME@N`` (needs ``store``), a model
        file or ``qemlflow run`` output folder (loaded only when ``store`` made it, or
        with ``trust_file``), or a model :func:`~qemlflow.pipeline.model_source.open_model`
        opened; see there for the rule between specs and paths.
    input_path
        ``.smi``, ``.csv``, ``.tsv``, ``.txt``, ``.sdf`` (each may be gzipped) or
        ``.parquet``, read by the rules of :mod:`qemlflow.data.reader` (``header=False``:
        a table without a header row); a row that cannot be read keeps its place with
        its reason in ``error``.
    output
        ``.parquet`` or ``.csv``: one row per input row, in input order (unless ``top``):
        id, smiles, the model's outputs, domain_similarity, in_domain, error.
    store
        Where the screen is recorded (and registry specs and training molecules are
        found); None records nothing.
    chunk_size
        Rows per chunk: the unit of work, of resuming and of memory.
    workers, engine, address
        ``engine="local"`` scores in ``workers`` processes (1: this process);
        ``engine="dask"`` on the cluster at ``address`` (else ``$DASK_SCHEDULER_ADDRESS``).
    top, by, ascending
        Keep only the ``top`` best rows by column ``by`` (default: prediction for
        regression, probability for classification), highest first (lowest first with
        ``ascending``); ties go to the earlier input row. Rows with errors never rank.
    resume
        Continue an interrupted screen of the same input, model and options. Kept parts
        are reused only when they match their records and the input rows they cover;
        the others are scored again (with a warning).
    progress
        Receives progress; None reports nothing.
    trust_file
        Load a model file the store does not know (a pickle: loading runs its code);
        audited as ``model.trusted``.

    Raises
    ------
    UntrustedModelError
        ``model`` is a file the store does not know, and ``trust_file`` is False.
    ScreenPartError
        A part changed on disk between its scoring and the assembly; nothing was written.
    ScreenInterruptedError
        On Ctrl-C; finished chunks are kept, and ``resume=True`` continues.
    """
    from qemlflow.screen.engines import dask_address, run_chunks
    from qemlflow.screen.parts import TopK, WorkFolder, rows_digest, sha256_file, write_output
    from qemlflow.screen.reading import open_input
    from qemlflow.screen.scoring import ScoringPackage

    _require("pyarrow", "parquet")
    if chunk_size < 1 or workers < 1 or (top is not None and top < 1):
        raise ConfigError("--chunk-size, --workers and --top must be at least 1", "see --help")
    if not 0.0 <= domain_threshold <= 1.0:  # also refuses NaN
        raise ConfigError(
            f"--domain-threshold {domain_threshold} is not a Tanimoto similarity",
            "give a number from 0 to 1 (default 0.3)",
        )
    if workers > _MAX_WORKERS:
        raise ConfigError(
            f"--workers {workers} is too large: at most {_MAX_WORKERS} local processes",
            f"give --workers between 1 and {_MAX_WORKERS} (this machine has "
            f"{os.cpu_count() or 1} cores)",
        )
    if engine == "dask":
        _require("distributed", "dask")
        address = dask_address(address)
    began = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"cannot write '{output}'", "name the output .parquet or .csv")
    source = open_input(input_path, smiles_column=smiles_column, id_column=id_column, header=header)
    loaded = (
        model
        if isinstance(model, OpenedModel)
        else open_model(model, store, trust_file=trust_file, purpose="screen")
    )
    predictor = loaded.predictor
    ranking = _score_column(predictor, by) if top is not None else None
    params: dict[str, Any] = {
        "chunk_size": chunk_size,
        "smiles_column": source.smiles_column,
        "id_column": id_column,
        **({"header": header} if header is not None else {}),
        "top": top,
        "by": ranking,
        "ascending": ascending if top is not None else None,
        "domain_threshold": domain_threshold,
        "output_format": output.suffix.lower().lstrip("."),
    }
    input_digest = sha256_file(source.path)
    work = WorkFolder(output)
    kept = work.start(
        {
            "input": source.path.name,
            "input_sha256": input_digest,
            "input_size": source.path.stat().st_size,
            "model_sha256": loaded.digest,
            **params,
        },
        resume=resume,
    )
    domain_bits = _domain_bits(store, loaded)
    package = ScoringPackage(loaded.digest, loaded.data, domain_bits, domain_threshold)
    with _progress_file(store, loaded.label, source.path, output) as tracker:
        watchers = [w for w in (progress, tracker) if w is not None]
        for watcher in watchers:
            watcher.start(source.total, source.unit)
        counts = {"rows": 0, "chunks": 0, "position": 0}
        input_digests: dict[int, str] = {}  # chunks in flight: the digest of their input rows
        resumed: set[int] = set()
        rescored: list[int] = []

        def record(chunk: InputChunk, table: pa.Table | None) -> None:
            if table is not None:
                work.write_part(chunk.index, chunk.start, table, input_digests.pop(chunk.index))
            # Skipped (resumed) chunks can be reported while earlier ones are still scoring.
            end = chunk.start + (table.num_rows if table is not None else chunk.rows)
            counts["rows"] = max(counts["rows"], end)
            counts["chunks"] = max(counts["chunks"], chunk.index + 1)
            counts["position"] = max(counts["position"], chunk.position)
            for watcher in watchers:
                watcher.update(counts["position"], counts["rows"])

        def to_score() -> Any:
            for chunk in source.chunks(chunk_size):
                digest = rows_digest(chunk.ids, chunk.smiles)
                if chunk.index in kept:
                    problem = work.check(chunk.index, chunk.start, digest)
                    if problem is None:
                        resumed.add(chunk.index)
                        record(chunk, None)
                        continue
                    warnings.warn(
                        f"cannot reuse {problem}; scoring that chunk again",
                        UserWarning,
                        stacklevel=2,
                    )
                    work.discard(chunk.index)
                    rescored.append(chunk.index)
                input_digests[chunk.index] = digest
                yield chunk

        try:
            run_chunks(to_score(), package, record, engine=engine, workers=workers, address=address)
        except KeyboardInterrupt:
            raise ScreenInterruptedError(
                f"screen interrupted; {len(work.done())} chunk(s) are kept in '{work.path}'",
                "run the same command with --resume to continue",
            ) from None

        schema = _schema(predictor)
        errors = 0

        hits = TopK(HITS_KEPT, ranking or _score_column(predictor, None), ascending)

        def parts() -> Any:
            nonlocal errors
            first_row = 0
            for table in work.parts(counts["chunks"]):  # each checked against its record
                errors += table.num_rows - table.column("error").null_count
                table = table.cast(schema)
                hits.add(table, first_row)
                first_row += table.num_rows
                yield table

        if top is not None:
            assert ranking is not None
            best = TopK(top, ranking, ascending)
            start = 0
            for table in parts():
                best.add(table, start)
                start += table.num_rows
            winners = [best.best] if best.best is not None else []
            written = sum(t.num_rows for t in winners)
            output_digest = write_output(output, iter(winners), schema, chunk_size)
        else:
            written = counts["rows"]
            output_digest = write_output(output, parts(), schema, chunk_size)
        work.remove()
        result = ScreenResult(
            output=output,
            output_digest=output_digest,
            input_digest=input_digest,
            model_digest=loaded.digest,
            model=loaded.label,
            rows=counts["rows"],
            errors=errors,
            written=written,
            chunks=counts["chunks"],
            resumed_chunks=len(resumed),
            seconds=time.perf_counter() - began,
            domain=domain_bits is not None,
            params=params,
            rescored_chunks=len(rescored),
        )
    if store is not None:
        top_hits = _hits(hits, ranking or _score_column(predictor, None))
        seq = _record(store, result, loaded, source.path, engine, workers, top_hits)
        result = dataclasses.replace(result, audit_seq=seq)
    return result


def _progress_file(
    store: Store | None, model: str, input_path: Path, output: Path
) -> contextlib.AbstractContextManager[ProgressFile | None]:
    """The screen's progress file in ``store`` (None without a store)."""
    if store is None:
        return contextlib.nullcontext()
    from qemlflow.screen.running import ProgressFile

    return ProgressFile(store.root, model, str(input_path), str(output))


def _hits(best: TopK, column: str) -> dict[str, Any]:
    """The best rows as JSON: input row, id, SMILES, score, domain similarity, in domain."""
    rows: list[dict[str, Any]] = []
    if best.best is not None:
        table = best.best.slice(0, HITS_KEPT).to_pylist()
        for row, record in zip(best.rows.tolist(), table, strict=False):
            rows.append(
                {
                    "row": int(row),
                    "id": record.get("id"),
                    "smiles": record.get("smiles"),
                    "standardized_smiles": record.get("standardized_smiles"),
                    "score": record.get(column),
                    "domain_similarity": record.get("domain_similarity"),
                    "in_domain": record.get("in_domain"),
                }
            )
    return {
        "format": "qemlflow.screen-hits/1",
        "by": column,
        "ascending": best.ascending,
        "hits": rows,
    }


def _record(
    store: Store,
    result: ScreenResult,
    model: OpenedModel,
    input_path: Path,
    engine: str,
    workers: int,
    hits: dict[str, Any] | None = None,
) -> int:
    """Append ``screen.completed`` (the model file goes into the store, so the event's
    model digest can be verified like any other). ``hits``, the best rows, go into a JSON
    blob the event names (``objects["hits"]``): the UI shows them without the output."""
    if model.version is None:
        store.blobs.put_bytes(model.data)
    hits_digest = store.put_json(hits) if hits is not None else None
    event = store.audit_trail.append(
        "screen.completed",
        {
            "model": model.digest,
            "input": result.input_digest,
            "output": result.output_digest,
            **({"run": model.run_id} if model.run_id else {}),
            **({"hits": hits_digest} if hits_digest else {}),
        },
        details={
            "model": model.label,
            "model_version": model.version,
            "input": str(input_path),
            "output": str(result.output),
            "rows": result.rows,
            "errors": result.errors,
            "written": result.written,
            "chunks": result.chunks,
            "resumed_chunks": result.resumed_chunks,
            "rescored_chunks": result.rescored_chunks,
            "model_origin": model.origin,
            "applicability_domain": result.domain,
            "engine": engine,
            "workers": workers,
            "seconds": round(result.seconds, 3),
            **result.params,
        },
    )
    return int(event.seq)
