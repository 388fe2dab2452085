"""``screen``: score a file of molecules of any size with a model, resumably.

The input is cut into fixed chunks (chunk ``i`` = rows ``[i*C, (i+1)*C)``), each chunk is
scored independently (here, in local worker processes or on a Dask cluster) into a part
file, and the parts are assembled in order into one row-aligned output. The screen is
recorded in the store's audit trail as ``screen.completed``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qemlflow.errors import ConfigError, QeMLflowError

if TYPE_CHECKING:
    import pyarrow as pa

    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.screen.reading import InputChunk
    from qemlflow.store import Store

__all__ = ["ScreenInterruptedError", "ScreenProgress", "ScreenResult", "screen"]

DEFAULT_CHUNK_SIZE = 20_000


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


@dataclass(frozen=True)
class _Model:
    label: str
    digest: str
    data: bytes
    predictor: Predictor
    run_id: str | None
    version: str | None


def _load_model(spec: str | Path, store: Store | None) -> _Model:
    """A model file (or run folder) when the path exists, else a registry spec."""
    from qemlflow.pipeline.predictor import MODEL_FILENAME, load_predictor_bytes

    path = Path(spec)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if path.is_file():
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        predictor = load_predictor_bytes(data, f"'{path}'")
        run_id = _run_of_model(store, digest) if store is not None else None
        return _Model(str(path), digest, data, predictor, run_id, None)
    if store is None:
        raise ConfigError(f"no model file '{spec}'", "give a model.joblib or a registry spec")
    from qemlflow import registry

    mv = registry.resolve(store, str(spec))
    data = store.get_bytes(mv.model_digest)  # re-hashed: an altered blob is refused
    predictor = load_predictor_bytes(data, f"model {mv.spec}")
    return _Model(mv.spec, mv.model_digest, data, predictor, mv.run_id, mv.spec)


def _run_of_model(store: Store, digest: str) -> str | None:
    """The run whose ``fit`` step made this model file, when the store has one."""
    for step in store.find_steps(output_prefix=digest):
        if step.step == "fit" and step.output == digest:
            runs = store.runs_using_step(step.key)
            if runs:
                return runs[0]
    return None


def _domain_bits(store: Store | None, model: _Model) -> bytes | None:
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

    fields = [pa.field("id", pa.string()), pa.field("smiles", pa.string())]
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
    model: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    store: Store | None = None,
    smiles_column: str | None = None,
    id_column: str | None = None,
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
) -> ScreenResult:
    """Score every molecule of ``input_path`` with ``model`` into ``output``.

    Parameters
    ----------
    model
        A model file (or ``qemlflow run`` output folder), or a registry spec ``NAME``,
        ``NAME@ALIAS``, ``NAME@N`` (needs ``store``).
    input_path
        ``.smi``, ``.csv``, ``.tsv`` (each may be gzipped) or ``.parquet``.
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
        Continue an interrupted screen of the same input, model and options.
    progress
        Receives progress; None reports nothing.

    Raises
    ------
    ScreenInterruptedError
        On Ctrl-C; finished chunks are kept, and ``resume=True`` continues.
    """
    from qemlflow.screen.engines import dask_address, run_chunks
    from qemlflow.screen.parts import TopK, WorkFolder, sha256_file, write_output
    from qemlflow.screen.reading import open_input
    from qemlflow.screen.scoring import ScoringPackage

    _require("pyarrow", "parquet")
    if chunk_size < 1 or workers < 1 or (top is not None and top < 1):
        raise ConfigError("--chunk-size, --workers and --top must be at least 1", "see --help")
    if engine == "dask":
        _require("distributed", "dask")
        address = dask_address(address)
    began = time.perf_counter()
    output = Path(output)
    if output.suffix.lower() not in (".parquet", ".csv"):
        raise ConfigError(f"cannot write '{output}'", "name the output .parquet or .csv")
    source = open_input(input_path, smiles_column=smiles_column, id_column=id_column)
    loaded = _load_model(model, store)
    predictor = loaded.predictor
    ranking = _score_column(predictor, by) if top is not None else None
    params: dict[str, Any] = {
        "chunk_size": chunk_size,
        "smiles_column": source.smiles_column,
        "id_column": id_column,
        "top": top,
        "by": ranking,
        "ascending": ascending if top is not None else None,
        "domain_threshold": domain_threshold,
        "output_format": output.suffix.lower().lstrip("."),
    }
    input_digest = sha256_file(source.path)
    work = WorkFolder(output)
    finished = work.start(
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
    if progress is not None:
        progress.start(source.total, source.unit)
    counts = {"rows": 0, "chunks": 0, "position": 0}

    def record(chunk: InputChunk, table: pa.Table | None) -> None:
        if table is not None:
            work.write_part(chunk.index, table)
        # Skipped (resumed) chunks can be reported while earlier ones are still scoring.
        end = chunk.start + (table.num_rows if table is not None else chunk.rows)
        counts["rows"] = max(counts["rows"], end)
        counts["chunks"] = max(counts["chunks"], chunk.index + 1)
        counts["position"] = max(counts["position"], chunk.position)
        if progress is not None:
            progress.update(counts["position"], counts["rows"])

    def to_score() -> Any:
        for chunk in source.chunks(chunk_size):
            if chunk.index in finished:
                record(chunk, None)
            else:
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

    def parts() -> Any:
        nonlocal errors
        for table in work.parts(counts["chunks"]):
            errors += table.num_rows - table.column("error").null_count
            yield table.cast(schema)

    if top is not None:
        assert ranking is not None
        best = TopK(top, ranking, ascending)
        start = 0
        for table in parts():
            best.add(table, start)
            start += table.num_rows
        kept = [best.best] if best.best is not None else []
        written = sum(t.num_rows for t in kept)
        output_digest = write_output(output, iter(kept), schema, chunk_size)
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
        resumed_chunks=len(finished),
        seconds=time.perf_counter() - began,
        domain=domain_bits is not None,
        params=params,
    )
    if store is not None:
        seq = _record(store, result, loaded, source.path, engine, workers)
        result = dataclasses.replace(result, audit_seq=seq)
    return result


def _record(
    store: Store, result: ScreenResult, model: _Model, input_path: Path, engine: str, workers: int
) -> int:
    """Append ``screen.completed`` (the model file goes into the store, so the event's
    model digest can be verified like any other)."""
    if model.version is None:
        store.put_bytes(model.data)
    event = store.audit(
        "screen.completed",
        {
            "model": model.digest,
            "input": result.input_digest,
            "output": result.output_digest,
            **({"run": model.run_id} if model.run_id else {}),
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
            "applicability_domain": result.domain,
            "engine": engine,
            "workers": workers,
            "seconds": round(result.seconds, 3),
            **result.params,
        },
    )
    return int(event.seq)
