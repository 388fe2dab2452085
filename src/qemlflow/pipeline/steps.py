"""Content-addressed pipeline steps: a key for every step, outputs cached by key.

``key = sha256(JCS({step, version, params, inputs, libraries}))`` (docs/keys.md), where
``libraries`` maps every distribution the step's output can depend on to its installed
version (plus ``runtime:`` settings such as the D-MPNN's device): the step's own
:data:`STEP_LIBRARIES`, joined for featurize, fit and predict by what the configured
featurizer and estimator declare. The map is stored with the step record, so a key can
be recomputed from the record alone.
A step whose key is already in the store is not recomputed: its output is read back.
Every output goes through its codec (encode, then decode) whether it was computed or
read from the cache, so a cached run and a fresh run hand identical values onwards.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from qemlflow.pipeline.versions import versions_of

if TYPE_CHECKING:
    from qemlflow.data import Dataset
    from qemlflow.splits import Split
    from qemlflow.store import Store

__all__ = [
    "STEP_LIBRARIES",
    "STEP_ORDER",
    "STEP_VERSIONS",
    "ArrayCodec",
    "BytesCodec",
    "Codec",
    "DatasetCodec",
    "JsonCodec",
    "PredictorCodec",
    "ScoresCodec",
    "SplitCodec",
    "StepExecutor",
    "StepResult",
    "step_libraries",
]

T = TypeVar("T")

STEP_ORDER = ("dataset", "standardize", "featurize", "split", "fit", "predict", "evaluate")
# Bump a step's version when its code changes what it outputs: old cache entries then miss.
# RFC 8785 (issue 12) changed the bytes of the JSON outputs (standardize, split, evaluate:
# 1.0 is now written 1) without a bump: their keys name rfc8785 now, so no entry written
# before is served. The D-MPNN's keys gained torch, chemprop, lightning and its device the
# same way. Dataset version ids did change meaning: see pipeline/datasets.DATASET_VERSION.
STEP_VERSIONS: dict[str, str] = {
    **dict.fromkeys(STEP_ORDER, "1"),
    # 2: admission limits (molecules over them rejected as too_large); 3: chemistry policy
    # (salts stripped; metals, inorganics, mixtures and tiny parents refused; duplicate counts)
    "standardize": "3",
    "featurize": "3",  # 2: narrowest exact dtype (ArrayCodec); 3: bounded Ipc over 150 atoms
    # 2: the model file carries its admission limits; 3: small calibration sets give
    # cross-conformal intervals / pooled calibration (a cached v2 model could be infinite);
    # 4: CV+ intervals for small sets, tie-free isotonic calibration, tasks too sparse to
    # model predict a smoothed prior (a cached v3 model crashes on them or ties scores)
    "fit": "4",
    # 2: interval method, calibration, cross-validation; 3: leakage; 4: shared scaffolds
    # counted stereo-free (as the split groups them), tasks not modelled / not calibrated,
    # and the scores ranking metrics are computed on
    "evaluate": "4",
    # 2: stereo-free scaffolds, scaffold_deepchem, copies of a molecule (same InChIKey)
    # kept in one part by every method (a cached v1 split may leak duplicates)
    "split": "2",
}
# The libraries whose versions can change a step's output, whatever its configuration.
# featurize adds the configured featurizer's (Featurizer.required_libraries), fit and
# predict the estimator's (EstimatorSpec.required_libraries, with its runtime settings):
# see step_libraries. tests/test_key_completeness.py runs every step in a fresh
# interpreter and fails when it imports a versioned package that is not declared.
STEP_LIBRARIES: dict[str, tuple[str, ...]] = {
    "dataset": (),  # the raw bytes, as read
    # rfc8785 writes the JSON outputs (the standardized dataset, the split, the metrics):
    # a change in its number formatting would change their bytes.
    "standardize": ("numpy", "pandas", "rdkit", "rfc8785"),
    # Featurizers are scikit-learn transformers (get_params/clone decide the parameters a
    # featurizer runs with); scikit-learn brings SciPy and pandas. The featurizer adds
    # its own (RDKit for every one).
    "featurize": ("numpy", "pandas", "scikit-learn", "scipy"),
    # Scaffolds and clusters are RDKit's; the split methods use scikit-learn's folds.
    "split": ("numpy", "pandas", "rdkit", "rfc8785", "scikit-learn", "scipy"),
    "fit": (),  # all from the estimator: MODEL_LIBRARIES and its own
    "predict": (),
    "evaluate": ("numpy", "rdkit", "rfc8785", "scikit-learn", "scipy"),
}


class Codec(Generic[T]):
    """Turns a step's output into bytes (deterministically) and back.

    ``keep_bytes``: the step result keeps the encoded bytes too (small outputs that are
    also written out as files, so the file is exactly the recorded blob).
    """

    media_type = "application/octet-stream"
    keep_bytes = False

    def encode(self, value: T) -> bytes:
        """Return the canonical bytes of ``value``."""
        raise NotImplementedError

    def decode(self, data: bytes) -> T:
        """Rebuild the value from its bytes."""
        raise NotImplementedError


class BytesCodec(Codec[bytes]):
    """Raw bytes, stored as they are."""

    def encode(self, value: bytes) -> bytes:
        """Return ``value`` unchanged."""
        return value

    def decode(self, data: bytes) -> bytes:
        """Return ``data`` unchanged."""
        return data


class JsonCodec(Codec[Any]):
    """JSON-compatible data as canonical JSON (sorted keys, no spaces)."""

    media_type = "application/json"

    def encode(self, value: Any) -> bytes:
        """Canonical JSON bytes."""
        from qemlflow.store.keys import canonical_json

        return canonical_json(value)

    def decode(self, data: bytes) -> Any:
        """Parse JSON bytes."""
        return json.loads(data)


class ArrayCodec(Codec[np.ndarray]):
    """A NumPy array as a one-line JSON header and its raw C-order bytes (no pickles).

    Fingerprints are small non-negative integers held in float32: such an array is
    stored in the narrowest unsigned integer type that holds it exactly, and turned
    back into its own dtype when read. That makes feature blobs 4x smaller, and reading
    them from the cache correspondingly faster.
    """

    media_type = "application/x-qemlflow-array"
    _MAGIC = b"QMFARRAY1"

    def encode(self, value: np.ndarray) -> bytes:
        """Header ``{"dtype", "shape", "stored"}`` + newline + the values."""
        array = np.ascontiguousarray(value)
        stored = _narrow_dtype(array)
        header = {"dtype": array.dtype.str, "shape": list(array.shape), "stored": stored.str}
        body = array.astype(stored, copy=False).tobytes()
        return self._MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + body

    def decode(self, data: bytes) -> np.ndarray:
        """Rebuild the array in its original dtype."""
        if not data.startswith(self._MAGIC):
            raise ValueError("not an array blob written by ArrayCodec")
        header_line, _, body = data[len(self._MAGIC) :].partition(b"\n")
        header = json.loads(header_line)
        stored = np.frombuffer(body, dtype=np.dtype(header["stored"]))
        array: np.ndarray = stored.astype(np.dtype(header["dtype"])).reshape(header["shape"])
        return array


def _narrow_dtype(array: np.ndarray) -> np.dtype[Any]:
    """The smallest unsigned integer dtype that holds every value of a float array exactly."""
    if array.dtype.kind != "f" or array.size == 0:
        return array.dtype
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0:
        return array.dtype
    for candidate in (np.uint8, np.uint16):
        if high <= np.iinfo(candidate).max:
            narrow = array.astype(candidate)
            if np.array_equal(narrow, array):
                return np.dtype(candidate)
            return array.dtype
    return array.dtype


class ScoresCodec(Codec[dict[str, np.ndarray]]):
    """Named float64 matrices of one shape: a JSON header line, then the raw values."""

    def encode(self, value: dict[str, np.ndarray]) -> bytes:
        """Header ``{"names", "shape"}`` + newline + little-endian float64 values."""
        names = list(value)
        shape = list(value[names[0]].shape) if names else [0, 0]
        header = json.dumps({"names": names, "shape": shape}, sort_keys=True).encode()
        body = b"".join(np.asarray(value[n], dtype="<f8").tobytes() for n in names)
        return header + b"\n" + body

    def decode(self, data: bytes) -> dict[str, np.ndarray]:
        """Split the header from the values and reshape each matrix."""
        header, _, body = data.partition(b"\n")
        meta = json.loads(header)
        shape = tuple(meta["shape"])
        size = int(np.prod(shape)) * 8
        return {
            name: np.frombuffer(body[i * size : (i + 1) * size], dtype="<f8").reshape(shape)
            for i, name in enumerate(meta["names"])
        }


class SplitCodec(Codec["Split"]):
    """A split as canonical JSON of its index arrays."""

    media_type = "application/json"

    def encode(self, value: Split) -> bytes:
        """Canonical JSON of ``Split.to_dict()``."""
        return JsonCodec().encode(value.to_dict())

    def decode(self, data: bytes) -> Split:
        """Rebuild the Split."""
        from qemlflow.splits import Split

        return Split.from_dict(json.loads(data))


class DatasetCodec(Codec["Dataset"]):
    """A standardized dataset as canonical JSON: molecules, labels, every input row.

    The input table is kept as text (every cell a string), which is what the rejected-rows
    report needs; labels are exact (JSON floats round-trip), missing labels are null.
    """

    media_type = "application/json"

    def encode(self, value: Dataset) -> bytes:
        """Canonical JSON of the dataset."""
        table = value.table
        table_text: dict[str, Any] | None = None
        if table is not None:
            table_text = {
                "columns": [str(c) for c in table.columns],
                "rows": [
                    ["" if _missing(v) else str(v) for v in row]
                    for row in table.itertuples(index=False)
                ],
            }
        rows = value.rows
        payload = {
            "name": value.name,
            "source": value.source,
            "smiles_column": value.smiles_column,
            "source_digest": value.source_digest,
            "task": value.task,
            "target_names": list(value.target_names),
            "smiles": list(value.smiles),
            "y": [[None if np.isnan(v) else float(v) for v in row] for row in value.y],
            "rows": {
                "row": [int(v) for v in rows["row"]],
                "input_smiles": [str(v) for v in rows["input_smiles"]],
                "status": [str(v) for v in rows["status"]],
                "mol_index": [int(v) for v in rows["mol_index"]],
                "reason": [str(v) for v in rows["reason"]],
                "detail": [str(v) for v in rows["detail"]],
            },
            "table": table_text,
        }
        return JsonCodec().encode(payload)

    def decode(self, data: bytes) -> Dataset:
        """Rebuild the Dataset."""
        import pandas as pd

        from qemlflow.data import Dataset

        payload = json.loads(data)
        n_tasks = len(payload["target_names"])
        y = np.array(
            [[np.nan if v is None else v for v in row] for row in payload["y"]], dtype=np.float64
        ).reshape(-1, n_tasks)
        rows = pd.DataFrame(payload["rows"])
        rows["row"] = rows["row"].astype(np.int64)
        rows["mol_index"] = rows["mol_index"].astype(np.int64)
        table = None
        if payload["table"] is not None:
            table = pd.DataFrame(
                payload["table"]["rows"], columns=payload["table"]["columns"], dtype=object
            )
        return Dataset(
            name=payload["name"],
            smiles=payload["smiles"],
            y=y,
            target_names=payload["target_names"],
            task=payload["task"],
            rows=rows,
            source=payload["source"],
            smiles_column=payload["smiles_column"],
            source_digest=payload["source_digest"],
            table=table,
        )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


class PredictorCodec(Codec[Any]):
    """A fitted Predictor as the same file that ``model.joblib`` is."""

    keep_bytes = True

    def encode(self, value: Any) -> bytes:
        """The model file's bytes."""
        from qemlflow.pipeline.predictor import dump_predictor

        return dump_predictor(value)

    def decode(self, data: bytes) -> Any:
        """Load the predictor back from its bytes."""
        from qemlflow.pipeline.predictor import load_predictor_bytes

        return load_predictor_bytes(data, "the cached model")


@dataclass(frozen=True)
class StepResult(Generic[T]):
    """One executed step: its key, its output digest, and whether the cache served it."""

    step: str
    key: str
    output: str
    cache_hit: bool
    seconds: float
    value: T = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    inputs: tuple[str, ...] = ()
    media_type: str = "application/octet-stream"
    encoded: bytes | None = field(default=None, repr=False)
    libraries: dict[str, str] = field(default_factory=dict, repr=False)


def step_libraries(
    step: str, extra: Sequence[str] = (), runtime: dict[str, str] | None = None
) -> dict[str, str]:
    """Return a step's ``libraries`` map: its own and ``extra`` distributions, versioned.

    ``runtime`` adds settings that change the bits without being a library (``runtime:``
    names, e.g. the D-MPNN's device).

    Examples
    --------
    >>> sorted(step_libraries("split"))
    ['numpy', 'pandas', 'rdkit', 'rfc8785', 'scikit-learn', 'scipy']
    >>> step_libraries("dataset")
    {}
    """
    libraries = versions_of([*STEP_LIBRARIES[step], *extra])
    libraries.update(runtime or {})
    return libraries


def _step_key(
    step: str, params: dict[str, Any], inputs: Sequence[str], libraries: dict[str, str]
) -> str:
    from qemlflow.store.keys import content_key

    return content_key(step, STEP_VERSIONS[step], params, list(inputs), libraries)


class StepExecutor:
    """Runs steps through the cache of a store (or none) and remembers what it ran.

    Parameters
    ----------
    store
        Where outputs are kept and looked up; ``None`` computes everything in memory.
    use_cache
        ``False`` recomputes every step (``reproduce`` does this) and stores nothing.
    on_step
        Called with each :class:`StepResult` as soon as the step is done.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        use_cache: bool = True,
        on_step: Callable[[StepResult[Any]], None] | None = None,
    ) -> None:
        self.store = store
        self.use_cache = use_cache
        self.on_step = on_step
        self.results: list[StepResult[Any]] = []

    def run(
        self,
        step: str,
        params: dict[str, Any],
        inputs: Sequence[str],
        compute: Callable[[], T],
        codec: Codec[T],
        libraries: dict[str, str] | None = None,
    ) -> StepResult[T]:
        """Return the step's output: from the cache when its key is there, else computed.

        ``libraries`` is the step's libraries map (:func:`step_libraries`); by default the
        step's own :data:`STEP_LIBRARIES`.
        """
        start = time.perf_counter()
        if libraries is None:
            libraries = step_libraries(step)
        key = _step_key(step, params, inputs, libraries)
        data: bytes | None = None
        output = ""
        cache_hit = False
        if self.store is not None and self.use_cache:
            record = self.store.steps.get(key)
            if record is not None and self.store.blobs.has(record.output):
                data = self.store.blobs.get_bytes(record.output)
                output = record.output
                cache_hit = True
        if data is None:
            data = codec.encode(compute())
            output = hashlib.sha256(data).hexdigest()
            if self.store is not None and self.use_cache:
                self._save(step, key, params, inputs, libraries, data, time.perf_counter() - start)
        value = codec.decode(data)
        result = StepResult(
            step=step,
            key=key,
            output=output,
            cache_hit=cache_hit,
            seconds=round(time.perf_counter() - start, 4),
            value=value,
            params=params,
            inputs=tuple(inputs),
            media_type=codec.media_type,
            encoded=data if codec.keep_bytes else None,
            libraries=libraries,
        )
        self.results.append(result)
        if self.on_step is not None:
            self.on_step(result)
        return result

    def _save(
        self,
        step: str,
        key: str,
        params: dict[str, Any],
        inputs: Sequence[str],
        libraries: dict[str, str],
        data: bytes,
        seconds: float,
    ) -> None:
        from qemlflow.store import StepRecord

        assert self.store is not None
        digest = self.store.blobs.put_bytes(data)
        self.store.steps.put(
            StepRecord(
                key=key,
                step=step,
                version=STEP_VERSIONS[step],
                params=params,
                inputs=tuple(inputs),
                output=digest,
                seconds=seconds,
                libraries=libraries,
            )
        )
