"""Run one pipeline step's real code in this (fresh) interpreter; print what it imported.

Used by tests/test_key_completeness.py as ``python tests/key_probe.py CASE FOLDER``: CASE
is ``STEP`` or ``STEP:KIND`` (``featurize:ecfp``, ``fit:dmpnn``), FOLDER holds the step's
inputs as the pipeline's codecs encode them (``inputs.json``, ``dataset.bin``, ...).

The inputs are decoded first, as the pipeline has them in memory when the step runs (or
reads them from the cache). Then the step runs - the same functions ``execute`` calls,
and the codec that encodes its output - and every module imported *while it ran* is
mapped to its distribution. Printed as JSON: ``{"case", "distributions", "modules"}``.
Outputs later cases need (the fitted model, the scores) are written back to FOLDER.

A distribution already imported while decoding the inputs is seen only through the
submodules the step imports on top; the test's featurize and standardize cases decode
nothing but plain JSON, so every library they use is seen.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _distributions(modules: set[str]) -> dict[str, list[str]]:
    """Distribution -> the new modules that belong to it (QeMLflow and the stdlib left out)."""
    owners = metadata.packages_distributions()
    found: dict[str, list[str]] = {}
    for name in sorted(modules):
        for dist in owners.get(name.split(".")[0], []):
            found.setdefault(_normal(dist), []).append(name)
    found.pop("qemlflow", None)
    return found


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def _config(inputs: dict[str, Any], estimator: str | None = None) -> Any:
    from qemlflow.pipeline.config import parse_config

    data: dict[str, Any] = {
        "name": "key-probe",
        "seed": 0,
        "dataset": {"source": "probe.csv"},
        "split": {"method": inputs.get("split", "random")},
        "evaluation": {"n_bootstrap": 0, "plots": False},
    }
    if estimator == "ensemble":  # members and combine sit beside the estimator
        data["model"] = {"estimator": estimator, **inputs["params"]["ensemble"]}
    elif estimator is not None:
        data["model"] = {"estimator": estimator, "params": inputs["params"].get(estimator, {})}
    return parse_config(data).with_task_defaults("regression")


def prepare(step: str, kind: str, folder: Path) -> dict[str, Any]:
    """Decode the step's inputs (before measuring)."""
    inputs: dict[str, Any] = json.loads((folder / "inputs.json").read_text())
    state: dict[str, Any] = {"inputs": inputs, "folder": folder}
    if step == "dataset":
        # The executor's own module (and its package) is loaded before any step runs.
        import qemlflow.pipeline.steps  # noqa: F401
    if step in ("fit", "predict", "evaluate"):
        from qemlflow.pipeline.steps import (
            ArrayCodec,
            DatasetCodec,
            PredictorCodec,
            ScoresCodec,
            SplitCodec,
        )

        state["dataset"] = DatasetCodec().decode((folder / "dataset.bin").read_bytes())
        state["split"] = SplitCodec().decode((folder / "split.bin").read_bytes())
        x_name = "smiles.bin" if kind == "dmpnn" else "ecfp.bin"
        state["X"] = ArrayCodec().decode((folder / x_name).read_bytes())
        if step in ("predict", "evaluate"):
            model = kind if step == "predict" else "lightgbm"
            blob = (folder / f"model-{model}.bin").read_bytes()
            state["predictor"] = PredictorCodec().decode(blob)
        if step == "evaluate":
            state["scores"] = ScoresCodec().decode((folder / "scores-lightgbm.bin").read_bytes())
    return state


def run(step: str, kind: str, state: dict[str, Any]) -> None:
    """The step itself: what ``execute`` computes, then the output's codec."""
    inputs, folder = state["inputs"], state["folder"]
    if step == "dataset":
        from qemlflow.pipeline.steps import BytesCodec

        BytesCodec().encode((folder / "raw.csv").read_bytes())
    elif step == "standardize":
        from qemlflow.data import dataset_from_raw, read_raw
        from qemlflow.limits import DEFAULT_LIMITS
        from qemlflow.pipeline.steps import DatasetCodec

        raw = read_raw(folder / "raw.csv")
        dataset = dataset_from_raw(raw, limits=DEFAULT_LIMITS)
        DatasetCodec().encode(dataset)
    elif step == "featurize":
        from qemlflow.features import make_featurizer
        from qemlflow.pipeline.steps import ArrayCodec

        ArrayCodec().encode(make_featurizer(kind).transform(inputs["smiles"]))
    elif step == "split":
        from qemlflow.pipeline.runner import _make_split
        from qemlflow.pipeline.steps import DatasetCodec, SplitCodec

        dataset = DatasetCodec().decode((folder / "dataset.bin").read_bytes())
        cfg = _config({**inputs, "split": kind})
        SplitCodec().encode(_make_split(cfg, dataset))
    elif step == "fit":
        from qemlflow.pipeline.runner import _fit_predictor
        from qemlflow.pipeline.steps import PredictorCodec

        cfg = _config(inputs, kind)
        parts = state["split"]
        predictor = _fit_predictor(
            cfg,
            state["dataset"],
            state["X"],
            parts.train,
            parts.valid,
            inputs["specs"]["smiles" if kind == "dmpnn" else "ecfp"],
            cfg.limits.molecule_limits(),
        )
        (folder / f"model-{kind}.bin").write_bytes(PredictorCodec().encode(predictor))
    elif step == "predict":
        from qemlflow.pipeline.steps import ScoresCodec

        scores = ScoresCodec().encode(state["predictor"].outputs(state["X"]))
        (folder / f"scores-{kind}.bin").write_bytes(scores)
    elif step == "evaluate":
        from qemlflow.pipeline.runner import _evaluate_parts
        from qemlflow.pipeline.steps import JsonCodec

        cfg = _config(inputs, "lightgbm")
        metrics = _evaluate_parts(
            cfg, state["dataset"], state["split"], state["scores"], state["predictor"]
        )
        JsonCodec().encode(metrics)
    else:
        raise SystemExit(f"unknown step {step!r}")


def main() -> None:
    case, folder = sys.argv[1], Path(sys.argv[2])
    step, _, kind = case.partition(":")
    state = prepare(step, kind, folder)
    before = set(sys.modules)
    run(step, kind, state)
    found = _distributions(set(sys.modules) - before)
    print(
        json.dumps(
            {
                "case": case,
                "distributions": sorted(found),
                "modules": {dist: mods[:5] for dist, mods in found.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
