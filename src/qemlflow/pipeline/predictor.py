"""A fitted model bundled with everything needed to score new SMILES."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qemlflow.chemistry import DEFAULT_POLICY, ChemistryPolicy
from qemlflow.errors import ModelError
from qemlflow.limits import DEFAULT_LIMITS, MoleculeLimits
from qemlflow.pipeline.versions import library_versions

__all__ = [
    "MANIFEST_FILENAME",
    "MANIFEST_FORMAT",
    "MODEL_FILENAME",
    "Predictor",
    "check_manifest",
    "dump_predictor",
    "load_model",
    "load_predictor_bytes",
    "manifest_path",
    "read_manifest",
    "write_model",
]

MODEL_FILENAME = "model.joblib"
MANIFEST_FILENAME = "model.json"
_FORMAT = "qemlflow.predictor/1"
MANIFEST_FORMAT = "qemlflow.model-manifest/1"


@dataclass
class Predictor:
    """Standardization settings + featurizer spec + fitted model, saved as one file.

    ``predict`` takes raw SMILES and returns a table row-aligned with them; invalid
    molecules, and molecules over the model's admission ``limits``, get an ``error``
    instead of a prediction.
    """

    model: Any
    feature_spec: Any
    task: str
    target_names: list[str]
    standardize: bool = True
    tautomer: bool = False
    # A class-level default, so that model files written before limits existed load with it.
    limits: MoleculeLimits = DEFAULT_LIMITS
    # Model files written before the chemistry policy load with the default (safe) policy.
    chemistry: ChemistryPolicy = DEFAULT_POLICY
    metadata: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)

    def predict(self, smiles: Sequence[Any], *, n_jobs: int = 1) -> pd.DataFrame:
        """Score molecules; one output row per input, in input order.

        Columns: ``smiles`` (as given), ``standardized_smiles``, then for one task
        ``prediction`` (+ ``lower``/``upper`` for regression, ``probability`` for
        classification), for several tasks the same names suffixed with ``_TASK``;
        finally ``error`` (empty when the molecule was scored).
        """
        from qemlflow.chem import parse_smiles, standardize_smiles

        inputs = ["" if s is None or (isinstance(s, float) and s != s) else str(s) for s in smiles]
        limits = self.limits
        parsed = [
            standardize_smiles(s, tautomer=self.tautomer, limits=limits, policy=self.chemistry)
            if self.standardize
            else parse_smiles(s, limits=limits)
            for s in inputs
        ]
        ok = np.array([p.ok for p in parsed], dtype=bool)
        std = [p.smiles or "" for p in parsed]
        frame = pd.DataFrame({"smiles": inputs, "standardized_smiles": std})
        columns = self._score([s for s, good in zip(std, ok, strict=True) if good], n_jobs)
        for name, values in columns.items():
            full = np.full(len(inputs), np.nan)
            full[ok] = values
            frame[name] = full
        frame["error"] = [
            "" if p.ok else f"{p.reason}: {p.detail}" if p.detail else str(p.reason) for p in parsed
        ]
        return frame

    def _score(self, smiles: list[str], n_jobs: int) -> dict[str, np.ndarray]:
        from qemlflow.features import make_featurizer

        n_tasks = len(self.target_names)
        if not smiles:
            names = self._column_names(n_tasks)
            return {name: np.empty(0) for name in names}
        featurizer = make_featurizer(self.feature_spec)
        featurizer.set_params(n_jobs=n_jobs)
        out: dict[str, np.ndarray] = {}
        for base, matrix in self.outputs(featurizer.transform(smiles)).items():
            for t, target in enumerate(self.target_names):
                name = base if n_tasks == 1 else f"{base}_{target}"
                out[name] = matrix[:, t]
        return out

    def outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Score featurized molecules: output name -> (n_molecules, n_tasks) matrix.

        Regression gives ``prediction``, ``lower`` and ``upper``; classification gives
        ``prediction`` (0/1 at 0.5) and ``probability``; an ensemble (``estimator:
        ensemble``) adds ``ensemble_sd``, its members' standard deviation. The one place
        the model is called, for ``predict``, for a run's own predictions and for the
        prediction service.
        """
        if _is_ensemble(self.model):
            return self._ensemble_outputs(X)
        if self.task == "regression":
            raw, lower, upper = self.model.predict_with_interval(X)
            return {"prediction": _as_2d(raw), "lower": _as_2d(lower), "upper": _as_2d(upper)}
        proba = _as_2d(self.model.predict_positive(X))
        return {"prediction": (proba >= 0.5).astype(float), "probability": proba}

    def _ensemble_outputs(self, X: np.ndarray) -> dict[str, np.ndarray]:
        # One pass over the members gives the values and their spread; an ensemble's
        # intervals are never CV+ (it is one joint model), so they follow from the values.
        values, spread = self.model.predict_with_spread(X)
        if self.task == "regression":
            lower, upper = self.model.interval_around(values)
            outputs = {"prediction": _as_2d(values), "lower": _as_2d(lower), "upper": _as_2d(upper)}
        else:
            proba = _as_2d(values)
            outputs = {"prediction": (proba >= 0.5).astype(float), "probability": proba}
        outputs["ensemble_sd"] = _as_2d(spread)
        return outputs

    def output_bases(self) -> list[str]:
        """The names of :meth:`outputs`, in order (before any ``_TASK`` suffix)."""
        bases = ["prediction", "lower", "upper"] if self.task == "regression" else []
        bases = bases or ["prediction", "probability"]
        return [*bases, "ensemble_sd"] if _is_ensemble(self.model) else bases

    def _column_names(self, n_tasks: int) -> list[str]:
        bases = self.output_bases()
        if n_tasks == 1:
            return bases
        return [f"{b}_{t}" for b in bases for t in self.target_names]

    def save(self, path: str | Path) -> Path:
        """Write the predictor to ``path`` (a joblib file), its manifest beside it
        (:func:`manifest_path`), and return the path."""
        return write_model(Path(path), self, dump_predictor(self))

    def manifest(self, data: bytes, **extra: Any) -> dict[str, Any]:
        """Describe the model file ``data`` (this predictor's bytes) in plain JSON.

        What a reader needs before deciding to unpickle it: the file's sha256 and size,
        the estimator's class, and every other field of the predictor (task, targets,
        featurizer spec, standardization, library versions, ...); ``extra`` adds fields
        (a run writes its ``run_id``).
        """
        model = type(self.model)
        settings = {
            f.name: _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name != "model"
        }
        return {
            "format": MANIFEST_FORMAT,
            "model_format": _FORMAT,
            "model_sha256": hashlib.sha256(data).hexdigest(),
            "model_bytes": len(data),
            "estimator": f"{model.__module__}.{model.__qualname__}",
            **settings,
            **extra,
        }


def _plain(value: Any) -> Any:
    """A predictor field as JSON can hold it (settings dataclasses become mappings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


class _CanonicalPickler(pickle._Pickler):
    """A pickler whose output depends only on the values pickled, not on object identity.

    Two models fitted identically can still pickle differently, which would make
    ``reproduce`` report a difference that is not there:

    - the standard pickler writes an object once and refers back to it when it meets the
      same object again, so whether two equal strings are one object (an interned
      literal) or two (read from JSON) changes the bytes. Strings, bytes and tuples are
      therefore always written out in full;
    - scikit-learn's trees keep their nodes in a structured array whose padding bytes
      are never initialized: such arrays are pickled from a zero-filled copy;
    - set order follows string hashes, which change between processes: sets are pickled
      sorted.

    It is the pure-Python pickler, so that these rules apply to every object.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _forget(self, obj: Any) -> None:
        # Keep the entry under a key nothing will look up: memo indices are counted by
        # the memo's size, on both sides of the pickle.
        memo: dict[Any, Any] = self.memo  # type: ignore[attr-defined]
        entry = memo.pop(id(obj), None)
        if entry is not None:
            memo[("forgotten", entry[0])] = entry

    def save_str(self, obj: str) -> None:
        pickle._Pickler.save_str(self, obj)  # type: ignore[attr-defined]
        self._forget(obj)

    def save_bytes(self, obj: bytes) -> None:
        pickle._Pickler.save_bytes(self, obj)  # type: ignore[attr-defined]
        self._forget(obj)

    def save_tuple(self, obj: tuple[Any, ...]) -> None:
        pickle._Pickler.save_tuple(self, obj)  # type: ignore[attr-defined]
        self._forget(obj)

    def save_bytearray(self, obj: bytes | bytearray) -> None:
        # Out-of-band buffers (protocol 5, NumPy arrays) reach here with a fresh
        # ``m.tobytes()``, never looked up in the memo first; for an empty buffer that is
        # the one shared ``b""``, and the second empty array (SVMs have several) would
        # trip the pickler's "already memoized" assertion. Forget it before and after.
        self._forget(obj)
        pickle._Pickler.save_bytearray(self, obj)  # type: ignore[attr-defined]
        self._forget(obj)

    dispatch[str] = save_str  # type: ignore[assignment]
    dispatch[bytes] = save_bytes  # type: ignore[assignment]
    dispatch[tuple] = save_tuple  # type: ignore[assignment]
    dispatch[bytearray] = save_bytearray  # type: ignore[assignment]

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, set | frozenset) and obj:
            return type(obj), (sorted(obj, key=repr),)
        if isinstance(obj, np.ndarray) and _has_padding(obj.dtype):
            clean = np.zeros(obj.shape, dtype=obj.dtype)
            for name in obj.dtype.names or ():
                clean[name] = obj[name]
            return clean.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
        return NotImplemented


def _has_padding(dtype: np.dtype[Any]) -> bool:
    if dtype.fields is None:
        return False
    used = sum(field[0].itemsize for field in dtype.fields.values())
    return used < dtype.itemsize or any(_has_padding(f[0]) for f in dtype.fields.values())


def dump_predictor(predictor: Predictor) -> bytes:
    """Return the bytes of a model file: the same model always gives the same bytes.

    The file is a gzip-compressed pickle, which ``joblib.load`` also reads.
    """
    buffer = io.BytesIO()
    _CanonicalPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(
        {"format": _FORMAT, "predictor": predictor}
    )
    return gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0)


def manifest_path(model_path: Path) -> Path:
    """Where the manifest of the model file ``model_path`` is: ``model.json`` beside
    ``model.joblib`` (the same name with ``.json``)."""
    return model_path.with_suffix(".json")


def write_model(
    path: Path, predictor: Predictor, data: bytes, *, run_id: str | None = None
) -> Path:
    """Write model-file bytes ``data`` (``predictor``, dumped) to ``path`` and its manifest
    beside it; ``run_id`` is recorded in the manifest when given. Returns ``path``.

    ``data`` is written exactly as given: a run writes its ``fit`` blob, so the file's
    digest is the step's output digest.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    extra = {"model_file": path.name, **({"run_id": run_id} if run_id else {})}
    text = json.dumps(predictor.manifest(data, **extra), indent=2, default=str) + "\n"
    manifest_path(path).write_text(text, encoding="utf-8")
    return path


def read_manifest(model_path: Path) -> dict[str, Any] | None:
    """The manifest beside ``model_path``, read as JSON (never unpickled); None when there
    is none, or the JSON file there is not this model file's manifest."""
    try:
        data = json.loads(manifest_path(model_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("format") != MANIFEST_FORMAT
        or data.get("model_file", model_path.name) != model_path.name
    ):
        return None
    return data


def check_manifest(model_path: Path, digest: str) -> dict[str, Any] | None:
    """Refuse a model file whose manifest names other bytes; return the manifest (or None).

    A mismatch means the folder was altered or its files mixed up: nothing in it is
    unpickled.
    """
    manifest = read_manifest(model_path)
    if manifest is not None and manifest.get("model_sha256") != digest:
        recorded = str(manifest.get("model_sha256"))[:12]
        raise ModelError(
            f"'{model_path}' does not match its manifest '{manifest_path(model_path).name}' "
            f"(sha256 {digest[:12]} in the file, {recorded} in the manifest)",
            "the folder was altered or mixed up: run 'qemlflow run' again or restore it",
        )
    return manifest


def load_predictor_bytes(data: bytes, label: str) -> Predictor:
    """Load a predictor from model-file bytes; ``label`` names them in errors.

    Only load bytes you trust: a model file is a pickle, and unpickling runs the code it
    names. Commands establish that first (:func:`qemlflow.pipeline.model_source.open_model`).
    """
    try:
        payload = pickle.loads(gzip.decompress(data))  # nosec B301  # bytes open_model or the store vouched for
    except Exception as exc:  # a corrupt or foreign file can raise almost anything
        raise ModelError(
            f"{label} is not a QeMLflow model ({type(exc).__name__})",
            f"give a {MODEL_FILENAME} written by 'qemlflow run'",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ModelError(
            f"{label} is not a QeMLflow model",
            f"give a {MODEL_FILENAME} written by 'qemlflow run'",
        )
    predictor: Predictor = payload["predictor"]
    return predictor


def _is_ensemble(model: Any) -> bool:
    """Whether ``model`` is a MolecularModel over ``estimator: ensemble``."""
    return getattr(model, "estimator", None) == "ensemble"


def _as_2d(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def load_model(path: str | Path) -> Predictor:
    """Load a predictor from a model file or from a run output folder.

    Only load files you trust: a model file is a pickle, and this loads it without asking
    anyone (a manifest beside it that names other bytes is still refused). ``predict``,
    ``screen`` and :func:`~qemlflow.pipeline.model_source.open_model` load only what the
    store knows, or what the user explicitly trusts.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ModelError(
            f"no model at '{path}'",
            f"give a {MODEL_FILENAME} file or the output folder of 'qemlflow run'",
        )
    data = path.read_bytes()
    check_manifest(path, hashlib.sha256(data).hexdigest())
    predictor = load_predictor_bytes(data, f"'{path}'")
    warn_about_drift(predictor)
    return predictor


def featurizer_versions(predictor: Predictor) -> dict[str, str]:
    """The code versions (above 1) of the featurizers ``predictor`` computes with now: its
    feature spec's and, for an ensemble, its members' own."""
    from qemlflow.features.spec import code_versions

    model = predictor.model
    members = []
    if getattr(model, "estimator", None) == "ensemble":
        members = [
            m.get("features") for m in (getattr(model, "params", None) or {}).get("members", [])
        ]
    return code_versions(predictor.feature_spec, *members)


def warn_about_drift(predictor: Predictor) -> None:
    """Warn when the predictor was saved with other library versions than these, or
    before a fix of one of its featurizers (``featurizer:<type>``, 1 when not recorded)."""
    drift = {
        name: (saved, now)
        for name, now in library_versions().items()
        if (saved := predictor.versions.get(name)) not in (None, now) and name != "python"
    }
    now_fixed = featurizer_versions(predictor)
    saved_fixed = {k: v for k, v in predictor.versions.items() if k.startswith("featurizer:")}
    for name in sorted(set(now_fixed) | set(saved_fixed)):
        saved, now = saved_fixed.get(name, "1"), now_fixed.get(name, "1")
        if saved != now:
            drift[name] = (saved, now)
    if drift:
        listed = ", ".join(f"{n} {a} -> {b}" for n, (a, b) in sorted(drift.items()))
        warnings.warn(
            f"model was saved with other library or featurizer versions ({listed}); its "
            "predictions may differ from the run that fitted it: refit it with this version",
            RuntimeWarning,
            stacklevel=3,
        )
