"""Explanations on disk (one JSON file and similarity map per molecule) and in the audit trail."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow.explain.attribution import AUTO, METHOD_DEFINITIONS, AtomAttribution, attribute

if TYPE_CHECKING:
    from qemlflow.pipeline.model_source import OpenedModel
    from qemlflow.store import Store

__all__ = [
    "EXPLANATION_FORMAT",
    "IMAGE_FORMATS",
    "ExplainResult",
    "available_image_formats",
    "explain",
    "similarity_map",
]

EXPLANATION_FORMAT = "qemlflow.explanation/1"
IMAGE_FORMATS = ("svg", "png")
_IMAGE_SIZE = 400
ACTION = "explain.completed"


@dataclass(frozen=True)
class ExplainResult:
    """What ``explain`` wrote: the per-molecule records, the method, the audit event."""

    output: Path
    method: str
    records: list[dict[str, Any]]
    errors: int
    audit_seq: int | None = None


def available_image_formats() -> list[str]:
    """The image formats this RDKit can draw: SVG always, PNG with its Cairo drawer."""
    from rdkit.Chem.Draw import rdMolDraw2D

    return ["svg", "png"] if hasattr(rdMolDraw2D, "MolDraw2DCairo") else ["svg"]


def similarity_map(smiles: str, weights: Sequence[float], kind: str = "svg") -> bytes:
    """Draw ``weights`` over the molecule ``smiles`` as an RDKit similarity map.

    ``kind`` is ``svg`` (always available) or ``png`` (needs RDKit's Cairo drawer).
    Positive weights are green, negative ones pink (RDKit's default colour map).
    """
    from rdkit import Chem
    from rdkit.Chem.Draw import SimilarityMaps, rdMolDraw2D

    from qemlflow.errors import ConfigError

    mol = Chem.MolFromSmiles(smiles)
    if kind == "svg":
        drawer: Any = rdMolDraw2D.MolDraw2DSVG(_IMAGE_SIZE, _IMAGE_SIZE)
    elif kind == "png" and hasattr(rdMolDraw2D, "MolDraw2DCairo"):
        drawer = rdMolDraw2D.MolDraw2DCairo(_IMAGE_SIZE, _IMAGE_SIZE)
    else:
        raise ConfigError(
            f"cannot draw a {kind!r} image here",
            "use --image svg (PNG needs an RDKit built with Cairo)",
        )
    SimilarityMaps.GetSimilarityMapFromWeights(  # type: ignore[no-untyped-call]
        mol, [float(w) for w in weights], draw2d=drawer
    )
    drawer.FinishDrawing()
    text = drawer.GetDrawingText()
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def explain(
    model: OpenedModel,
    smiles: Sequence[str],
    output: Path,
    *,
    method: str = AUTO,
    target: str | None = None,
    images: Sequence[str] | None = None,
    store: Store | None = None,
) -> ExplainResult:
    """Explain each molecule with ``model`` and write ``output/<n>.json`` and its images.

    ``n`` is the molecule's 0-based position in ``smiles``. A molecule that cannot be
    read gets its JSON with an ``error`` (``atom_weights`` null) and no image; the others
    are written all the same. With a ``store``, an ``explain.completed`` event records the
    model digest, the method and a blob holding every record; without one, nothing is
    recorded (as ``predict`` without a store). ``images`` default: SVG, and PNG where
    RDKit can draw it.
    """
    drawable = available_image_formats()
    if images is None:
        images = drawable
    for kind in images:
        if kind not in drawable:
            from qemlflow.errors import ConfigError

            raise ConfigError(
                f"cannot draw {kind!r} images here (this RDKit draws: {', '.join(drawable)})",
                "use --image svg (PNG needs an RDKit built with Cairo)",
            )
    results = attribute(model.predictor, smiles, method=method, target=target)
    chosen = results[0].method if results else method
    reference = {
        "reference": model.label,
        "version": model.version,
        "digest": model.digest,
        "run_id": model.run_id,
        "origin": model.origin,
    }
    target_name = target or model.predictor.target_names[0]
    output.mkdir(parents=True, exist_ok=True)
    records = []
    for n, result in enumerate(results):
        written = []
        if result.ok and result.standardized_smiles and result.atom_weights is not None:
            for kind in images:
                picture = similarity_map(result.standardized_smiles, result.atom_weights, kind)
                _write(output / f"{n}.{kind}", picture)
                written.append(f"{n}.{kind}")
        record = _record(n, result, reference, target_name, written)
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
        _write(output / f"{n}.json", text.encode("utf-8"))
        records.append(record)
    errors = sum(1 for r in results if not r.ok)
    seq = None
    if store is not None:
        seq = _audit(store, model, chosen, target_name, output, records, errors)
    return ExplainResult(output, chosen, records, errors, seq)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing."""
    from qemlflow._atomic import write_atomic

    write_atomic(path, lambda temp: temp.write_bytes(data))


def _record(
    n: int,
    result: AtomAttribution,
    model: dict[str, Any],
    target: str,
    images: list[str],
) -> dict[str, Any]:
    """One molecule's JSON: the contract keys first (smiles, atom_weights, method)."""
    return {
        "format": EXPLANATION_FORMAT,
        "index": n,
        "smiles": result.smiles,
        "atom_weights": result.atom_weights,
        "method": result.method,
        "method_definition": METHOD_DEFINITIONS[result.method],
        "standardized_smiles": result.standardized_smiles,
        "atom_symbols": _symbols(result.standardized_smiles) if result.ok else None,
        "target": target,
        "output": result.output,
        "value": result.value,
        "model": model,
        **result.details,
        "images": images,
        "error": result.error,
    }


def _symbols(smiles: str | None) -> list[str] | None:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return None if mol is None else [atom.GetSymbol() for atom in mol.GetAtoms()]


def _audit(
    store: Store,
    model: OpenedModel,
    method: str,
    target: str,
    output: Path,
    records: list[dict[str, Any]],
    errors: int,
) -> int:
    """Append ``explain.completed``; the model file goes into the store (as a screen's
    does), so the event's model digest can be verified like any other."""
    if model.version is None:
        store.blobs.put_bytes(model.data)
    blob = store.put_json({"format": "qemlflow.explanations/1", "explanations": records})
    event = store.audit_trail.append(
        ACTION,
        {
            "model": model.digest,
            "explanations": blob,
            **({"run": model.run_id} if model.run_id else {}),
        },
        details={
            "model": model.label,
            "model_version": model.version,
            "model_origin": model.origin,
            "method": method,
            "method_definition": METHOD_DEFINITIONS.get(method, ""),
            "target": target,
            "molecules": len(records),
            "errors": errors,
            "output": str(output),
        },
    )
    return int(event.seq)
