"""``/predict``: score pasted SMILES with a registered model, in this process.

The model is loaded as the prediction service loads it (hash-verified blob, the
applicability domain of its run's training molecules) and kept per version in the UI's
cache. Each result shows the prediction and its interval, the domain similarity and the
three nearest training molecules. Predicting changes nothing in the store.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from qemlflow.ui.templating import render, state, store

if TYPE_CHECKING:
    from qemlflow.serve.service import ServedModel
    from qemlflow.store import Store

__all__ = ["MAX_SMILES", "router"]

router = APIRouter()

MAX_SMILES = 100
"""Molecules one request of the page may score."""
_MAX_TEXT = 100_000  # characters of the text box
_NEIGHBOURS = 3
_LOADING = threading.Lock()  # one model load at a time: loading is the expensive part


@dataclass(frozen=True)
class _Loaded:
    """A model ready to score, and its training SMILES row-aligned with its domain."""

    served: ServedModel
    training: list[str]


def _choices(opened: Store) -> list[str]:
    """NAME@ALIAS for each alias, then NAME@N for each version, per registered name."""
    versions: dict[str, list[int]] = {}
    for mv in opened.list_model_versions():
        versions.setdefault(str(mv.name), []).append(int(mv.version))
    out: list[str] = []
    for name in sorted(versions):
        out += [f"{name}@{alias}" for alias in sorted(opened.current_aliases(name))]
        out += [f"{name}@{n}" for n in sorted(versions[name], reverse=True)]
    return out


def _load(request: Request, spec: str) -> _Loaded:
    from qemlflow import registry
    from qemlflow.errors import QeMLflowError
    from qemlflow.pipeline.scoring import FeaturePlan, training_smiles
    from qemlflow.serve.domain import ApplicabilityDomain, ecfp4_packed
    from qemlflow.serve.service import ServedModel

    opened = store(request)
    mv = registry.resolve(opened, spec)
    key = f"predict:{mv.name}@{mv.version}"
    cache = state(request).cache
    with _LOADING:
        loaded = cache.get(key)
        if isinstance(loaded, _Loaded):
            return loaded
        smiles = training_smiles(opened, mv.run_id)
        if smiles is None:
            raise QeMLflowError(
                f"run {mv.run_id} of {mv.spec} has no recorded dataset or split",
                "register a model from a run recorded in this store",
            )
        predictor = registry.load_version(opened, mv)
        packed, valid = ecfp4_packed(smiles)
        domain = ApplicabilityDomain().fit_packed(packed[valid])
        served = ServedModel(mv, predictor, domain, FeaturePlan(predictor.feature_spec))
        loaded = cache[key] = _Loaded(
            served, [s for s, ok in zip(smiles, valid, strict=True) if ok]
        )
        return loaded


def _value(result: Any, task: str) -> dict[str, Any]:
    """What one row shows: value, interval and probability (a multi-task model: per task)."""
    rows = []
    items = list(result.tasks.items()) if result.tasks else [(None, result)]
    for name, p in items:
        rows.append(
            {
                "task": name,
                "value": p.probability if task == "classification" else p.prediction,
                "label": p.prediction if task == "classification" else None,
                "lower": p.lower,
                "upper": p.upper,
                "ensemble_sd": p.ensemble_sd,  # None unless the model is an ensemble
            }
        )
    return {"outputs": rows}


def _predict(loaded: _Loaded, smiles: list[str]) -> list[dict[str, Any]]:
    import numpy as np

    from qemlflow.serve.workers import prepare_molecule
    from qemlflow.ui.depict import depict

    served = loaded.served
    prepared = [prepare_molecule(served.recipe, served.plan, s) for s in smiles]
    results = served.results(smiles, prepared)
    good = [i for i, p in enumerate(prepared) if not p.error and p.bits is not None]
    neighbours: dict[int, list[dict[str, Any]]] = {}
    if good:
        bits = np.stack([np.asarray(prepared[i].bits, dtype=np.uint8) for i in good])
        index, sims = served.domain.nearest_packed(bits, _NEIGHBOURS)
        for row, i in enumerate(good):
            neighbours[i] = [
                {
                    "smiles": loaded.training[j],
                    "similarity": float(s),
                    "svg": depict(loaded.training[j]),
                }
                for j, s in zip(index[row].tolist(), sims[row].tolist(), strict=True)
            ]
    task = served.predictor.task
    out = []
    for i, result in enumerate(results):
        shown = result.standardized_smiles or result.smiles
        out.append(
            {
                "smiles": result.smiles,
                "standardized": result.standardized_smiles,
                "svg": depict(shown),
                "error": result.error,
                "domain": result.domain,
                "neighbours": neighbours.get(i, []),
                **_value(result, task),
            }
        )
    return out


def _page(
    request: Request,
    *,
    model: str | None = None,
    smiles: str = "",
    results: list[dict[str, Any]] | None = None,
    error: str | None = None,
    status_code: int = 200,
    served: ServedModel | None = None,
) -> HTMLResponse:
    return render(
        request,
        "predict.html",
        nav="predict",
        status_code=status_code,
        choices=_choices(store(request)),
        model=model,
        smiles=smiles,
        results=results,
        error=error,
        served=served,
        max_smiles=MAX_SMILES,
    )


@router.get("/predict", response_class=HTMLResponse)
def predict_page(request: Request) -> HTMLResponse:
    """The form: a model and SMILES, one per line."""
    return _page(request)


@router.post("/predict", response_class=HTMLResponse)
def predict_submit(
    request: Request,
    model: str = Form(..., max_length=400),
    smiles: str = Form("", max_length=_MAX_TEXT),
) -> HTMLResponse:
    """Score the SMILES and show value, interval, domain and nearest training molecules."""
    lines = [line.strip() for line in smiles.splitlines() if line.strip()]
    if not lines:
        return _page(
            request, model=model, smiles=smiles, error="Paste at least one SMILES.", status_code=400
        )
    if len(lines) > MAX_SMILES:
        return _page(
            request,
            model=model,
            smiles=smiles,
            error=f"{len(lines)} SMILES given; the page scores at most {MAX_SMILES} at a time "
            "(use `qemlflow predict` or `qemlflow screen` for more).",
            status_code=400,
        )
    loaded = _load(request, model)
    results = _predict(loaded, lines)
    return _page(request, model=model, smiles=smiles, results=results, served=loaded.served)
