"""Which model a command scores with, and whether its bytes may be unpickled.

A model file is a pickle: loading it runs whatever code it names. :func:`open_model`
establishes where the bytes come from before anything is unpickled:

- **The registry.** ``NAME@ALIAS`` and ``NAME@N`` written without a folder always mean the
  registry, even when a file or folder of that name exists here (write ``./sol@production``
  for that one). A bare ``NAME`` is a path when such a path exists, else the registry. A
  :class:`~pathlib.Path` given from Python is always a path. A registry version's bytes are
  the store's blob, re-hashed on reading.
- **A file the store knows.** A model file, or a run output folder's ``model.joblib``, is
  unpickled when its sha256 is a model the store made: the output of a recorded ``fit``
  step (the file ``qemlflow run`` writes) or a registered version.
- **A file the user trusts.** Any other file only with ``trust_file=True``
  (``--trust-file``), recorded first in the audit trail as ``model.trusted`` (path, sha256,
  actor; the file is kept in the store, so ``audit verify`` can re-hash it).

Anything else is refused with one line before a byte of it is unpickled. The bytes that
are checked are the bytes that are loaded: the file is read once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from qemlflow.errors import ModelError

if TYPE_CHECKING:
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.store import Store

__all__ = ["OpenedModel", "UntrustedModelError", "is_registry_reference", "open_model"]

TRUST_ACTION = "model.trusted"
_TRUST_FIX = (
    "pass --trust-file to load it anyway (a model file is a pickle: loading it runs its code), "
    "or give a run output folder of this store or a registry spec NAME@ALIAS"
)


class UntrustedModelError(ModelError):
    """A model file whose integrity nothing establishes; it was not unpickled."""


@dataclass(frozen=True)
class OpenedModel:
    """A loaded model, the exact bytes it was loaded from, and where they came from."""

    label: str
    """The file's path, or the registry version (``NAME@N``) for a registry model."""
    digest: str
    data: bytes
    predictor: Predictor
    run_id: str | None
    """The run that made the model, when the store knows it."""
    version: str | None
    """``NAME@N`` for a registry model, else None."""
    origin: Literal["registry", "store", "trusted"]
    """Why the bytes were loaded: a registry blob, a model the store made, ``--trust-file``."""
    note: str = ""
    """How it was named or found: the spec as written and its version, or the run."""
    remark: str = ""
    """Anything the user should know about the choice: a local path it did not use."""

    def describe(self) -> str:
        """One line saying which model is used, from where, and why it was trusted."""
        short = self.digest[:12]
        if self.origin == "registry":
            return f"model from registry {self.note}, sha256 {short}{self.remark}"
        why = {"store": "known to the store", "trusted": "trusted with --trust-file"}[self.origin]
        return f"model from file {self.label} sha256 {short} ({why}{self.note}){self.remark}"


def is_registry_reference(spec: str | PurePath) -> bool:
    """Whether ``spec`` names a registry version rather than a file or folder.

    Examples
    --------
    >>> is_registry_reference("sol@production"), is_registry_reference("./sol@production")
    (True, False)
    >>> is_registry_reference(Path("sol@2")), is_registry_reference("no-such-path")
    (False, True)
    """
    if isinstance(spec, PurePath):
        return False
    text = spec.strip()
    separators = {"/", os.sep, os.altsep or "/"}
    if not text or any(s in text for s in separators) or text.startswith((".", "~")):
        return False
    return "@" in text or not Path(text).exists()


def open_model(
    spec: str | PurePath,
    store: Store | None,
    *,
    trust_file: bool = False,
    purpose: str = "predict",
) -> OpenedModel:
    """Resolve ``spec`` to a model and load it, once its bytes are known to be safe to load.

    Parameters
    ----------
    spec
        ``NAME``, ``NAME@ALIAS``, ``NAME@N`` (the registry), a model file, or a
        ``qemlflow run`` output folder; see the module docstring for the rule.
    store
        Where registry specs are resolved and model files are looked up by digest; None
        knows nothing, so a file then needs ``trust_file``.
    trust_file
        Load a file the store does not know; audited as ``model.trusted`` when there is a
        store.
    purpose
        The command, recorded with a ``model.trusted`` event.

    Raises
    ------
    UntrustedModelError
        A file the store does not know, without ``trust_file``; nothing was unpickled.
    ModelError
        No model there, not a QeMLflow model, or a manifest that names other bytes.
    """
    if is_registry_reference(spec):
        return _from_registry(str(spec).strip(), store)
    return _from_file(Path(spec), store, trust_file=trust_file, purpose=purpose)


def _from_registry(spec: str, store: Store | None) -> OpenedModel:
    from qemlflow import registry
    from qemlflow.pipeline.predictor import MODEL_FILENAME, load_predictor_bytes

    shadowed = Path(spec).exists()
    nowhere = ModelError(  # a bare word that is no path here either
        f"no model at '{spec}', and no registered model named {spec!r}",
        f"give a {MODEL_FILENAME} file, the output folder of 'qemlflow run', "
        "or a registry spec NAME@ALIAS",
    )
    if store is None:
        if "@" not in spec:
            raise nowhere
        raise ModelError(
            f"{spec!r} names a registered model, and there is no store to look it up in",
            "give a store, or a model file path (./PATH for a file named like a spec)",
        )
    try:
        mv = registry.resolve(store, spec)
    except registry.RegistryError as exc:
        if "@" not in spec:
            raise nowhere from None
        if not shadowed:
            raise
        raise registry.RegistryError(
            exc.problem,
            f"{exc.fix}; to use the local path '{spec}' instead, write it as './{spec}'",
        ) from None
    data = store.blobs.get_bytes(mv.model_digest)  # re-hashed: an altered blob is refused
    predictor = load_predictor_bytes(data, f"model {mv.spec}")
    note = spec if spec == mv.spec else f"{spec} (version {mv.version})"
    remark = f"; the local '{spec}' is not used (write './{spec}' for it)" if shadowed else ""
    return OpenedModel(
        mv.spec, mv.model_digest, data, predictor, mv.run_id, mv.spec, "registry", note, remark
    )


def _from_file(path: Path, store: Store | None, *, trust_file: bool, purpose: str) -> OpenedModel:
    from qemlflow.pipeline.predictor import (
        MODEL_FILENAME,
        check_manifest,
        load_predictor_bytes,
        warn_about_drift,
    )

    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ModelError(
            f"no model at '{path}'",
            f"give a {MODEL_FILENAME} file, the output folder of 'qemlflow run', "
            "or a registry spec NAME@ALIAS",
        )
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    manifest = check_manifest(path, digest)
    known = _known_model(store, digest) if store is not None else None
    if known is not None:
        run_id, how = known
        origin: Literal["store", "trusted"] = "store"
        note = f", {how}"
    elif trust_file:
        origin, run_id, note = "trusted", None, ""
        if store is not None:
            _record_trust(store, path, data, digest, purpose)
    else:
        raise UntrustedModelError(_untrusted_problem(path, digest, store, manifest), _TRUST_FIX)
    predictor = load_predictor_bytes(data, f"'{path}'")
    warn_about_drift(predictor)
    return OpenedModel(str(path), digest, data, predictor, run_id, None, origin, note)


def _known_model(store: Store, digest: str) -> tuple[str | None, str] | None:
    """(the run that made it, how the store knows it) for a model the store made, else None."""
    for step in store.steps.find(output_prefix=digest):
        if step.step == "fit" and step.output == digest:
            runs = store.runs.using_step(step.key)
            return (runs[0], f"run {runs[0]}") if runs else (None, "a recorded fit step")
    for mv in store.registry.versions():
        if mv.model_digest == digest:
            return mv.run_id, f"registered as {mv.spec}"
    return None


def _untrusted_problem(
    path: Path, digest: str, store: Store | None, manifest: dict[str, Any] | None
) -> str:
    where = f"the store at {store.root}" if store is not None else "any store (none was given)"
    problem = f"model file '{path}' (sha256 {digest[:12]}) is not known to {where}"
    run_id = manifest.get("run_id") if manifest is not None else None
    if isinstance(run_id, str) and run_id:
        problem += f"; its manifest names run {run_id}, which that store does not hold"
    return problem


def _record_trust(store: Store, path: Path, data: bytes, digest: str, purpose: str) -> None:
    """Audit the user's decision before acting on it; keep the bytes so the event's model
    digest can be re-hashed by ``audit verify``."""
    store.blobs.put_bytes(data)
    store.audit_trail.append(
        TRUST_ACTION,
        {"model": digest},
        reason="--trust-file",
        details={"path": str(path.absolute()), "sha256": digest, "command": purpose},
    )
