"""Every step key names every library its output can depend on.

Each step - and each featurizer and estimator - runs its real code in a fresh interpreter
(tests/key_probe.py); every versioned third-party distribution whose modules the step
imported must be in the step's declared ``libraries`` map, or in the allow-list below of
packages that cannot change the bits. A library the step uses but does not declare would
let the cache hand back an output computed with another version of it: the test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from qemlflow.features import FEATURIZERS, make_featurizer
from qemlflow.models import ESTIMATORS
from qemlflow.models.dmpnn import gnn_available
from qemlflow.pipeline.steps import STEP_LIBRARIES

PROBE = Path(__file__).with_name("key_probe.py")
SRC = Path(__file__).resolve().parents[1] / "src"

# Imported while a step runs, yet unable to change its output. Keep this list short: each
# entry says why.
CANNOT_CHANGE_BITS = {
    # the .pth hook of setuptools (_distutils_hack) loads in every interpreter
    "setuptools": "import machinery only",
    # config validation: the step's parameters are what the key hashes, as validated
    "pydantic": "validates the config; the validated values are in the key",
    "pydantic-core": "pydantic's core (as above)",
    "annotated-types": "pydantic's type annotations",
    "typing-extensions": "type annotations",
    "typing-inspection": "pydantic's annotation reader",
    "pyyaml": "reads config files; the parsed values are in the key",
    "rich": "terminal output",
    # torch._inductor's runtime utilities colour their messages with it when it is
    # installed (the docs and security tools bring it into the dev environment)
    "colorama": "terminal colours",
    # joblib's process pools (featurizers, forests): they order results by input, and
    # serialize the work, never the results' values
    "joblib": "schedules work; results are collected in input order",
    "cloudpickle": "joblib ships functions to worker processes with it",
    "psutil": "joblib's worker management (CPU counts, memory)",
    "threadpoolctl": "only reads and caps BLAS/OpenMP thread pools (scikit-learn's guard)",
    # pandas and scikit-learn bring these along; no date, time zone or text-encoding
    # guessing happens in any step
    "python-dateutil": "pandas' date parsing; the data has no dates",
    "pytz": "pandas' time zones",
    "tzdata": "pandas' time zones",
    "six": "dateutil's Python 2 compatibility",
    "charset-normalizer": "text encoding detection; files are read as UTF-8",
    "narwhals": "scikit-learn's data-frame adapter; steps pass NumPy arrays",
    "pyarrow": "pandas' Arrow string storage holds the same strings exactly",
    # torch's own helpers for compiling and type checking, not arithmetic
    "filelock": "torch's cache-file locks",
    "fsspec": "file-system access for torch/lightning checkpoints (none written)",
    "jinja2": "torch's code generation templates (no kernels are compiled on CPU)",
    "markupsafe": "jinja2's escaping",
    "networkx": "torch.fx graph utilities (no graph is traced)",
    "sympy": "torch's symbolic shapes (compile path only)",
    "mpmath": "sympy's arbitrary precision arithmetic",
    "packaging": "version string comparisons",
    "pyyaml-include": "config includes",
    "lightning-utilities": "lightning's import helpers",
    "torchmetrics": "lightning's metric objects; the D-MPNN computes its loss itself",
    "aiohttp": "fsspec's HTTP file system (never opened)",
    "tqdm": "progress bars",
}

# chemprop imports these when it is imported, for parts QeMLflow's D-MPNN does not use:
# optional descriptor featurizers (mordred, descriptastorus, padelpy, mhfp, cuik-molmaker),
# data splitting (astartes), similarity (aimsim), plotting (matplotlib and its fonts,
# images and layout) and parallel pickling (dill, multiprocess). The D-MPNN builds graphs
# with chemprop's SimpleMoleculeMolGraphFeaturizer and its RDKit descriptors with RDKit.
CHEMPROP_UNUSED = {
    "aimsim-core",
    "astartes",
    "contourpy",
    "cuik-molmaker",
    "cuik-molmaker-pin",
    "cycler",
    "descriptastorus",
    "dill",
    "fonttools",
    "kiwisolver",
    "matplotlib",
    "mhfp",
    "mordredcommunity",
    "multiprocess",
    "padelpy",
    "pandas-flavor",
    "pillow",
    "pyparsing",
    "tabulate",
    "xarray",
}

FEATURIZER_KINDS = sorted(name for name in FEATURIZERS if name != "concat")
ESTIMATOR_KINDS = sorted(name for name in ESTIMATORS if name != "dmpnn" or gnn_available())
# Small enough to run in a second or two each.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "random_forest": {"n_estimators": 5},
    "extra_trees": {"n_estimators": 5},
    "lightgbm": {"n_estimators": 10},
    # An ensemble's key names its members' libraries (a stacked pair of feature models).
    "ensemble": {
        "members": [
            {"estimator": "lightgbm", "params": {"n_estimators": 10}},
            {"estimator": "linear"},
        ],
        "combine": "stacking",
    },
    "dmpnn": {
        "epochs": 1,
        "hidden_size": 8,
        "ffn_hidden_size": 8,
        "depth": 2,
        "device": "cpu",
    },
}


def declared(case: str) -> set[str]:
    """What the step's key names for this case, as the runner builds it."""
    from qemlflow.models import get_spec
    from qemlflow.pipeline.steps import step_libraries

    step, _, kind = case.partition(":")
    if step == "featurize":
        names = step_libraries(step, make_featurizer(kind).required_libraries())
    elif step in ("fit", "predict"):
        names = step_libraries(step, get_spec(kind).required_libraries_for(TINY_PARAMS.get(kind)))
    else:
        names = step_libraries(step)
    return {name.lower() for name in names if not name.startswith(("runtime:", "featurizer:"))}


@pytest.fixture(scope="module")
def probe_folder(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Path:
    """40 ESOL molecules and every step's inputs, encoded with the pipeline's codecs."""
    from qemlflow.data import read_raw
    from qemlflow.pipeline.config import DatasetConfig, parse_config
    from qemlflow.pipeline.runner import _make_split, execute_data_steps
    from qemlflow.pipeline.steps import ArrayCodec, DatasetCodec, SplitCodec, StepExecutor

    folder = tmp_path_factory.mktemp("key-probe")
    esol_frame.head(40).to_csv(folder / "raw.csv", index=False)
    raw = read_raw(folder / "raw.csv")
    _, std = execute_data_steps(DatasetConfig(source=str(folder / "raw.csv")), raw, StepExecutor())
    dataset = std.value
    (folder / "dataset.bin").write_bytes(DatasetCodec().encode(dataset))
    specs = {}
    for name in ("ecfp", "smiles"):
        featurizer = make_featurizer(name)
        specs[name] = featurizer.to_spec()
        X = featurizer.transform(dataset.smiles)
        (folder / f"{name}.bin").write_bytes(ArrayCodec().encode(X))
    cfg = parse_config(
        {"name": "probe", "seed": 0, "dataset": {"source": "probe.csv"}}
    ).with_task_defaults("regression")
    (folder / "split.bin").write_bytes(SplitCodec().encode(_make_split(cfg, dataset)))
    inputs = {"smiles": list(dataset.smiles), "params": TINY_PARAMS, "specs": specs}
    (folder / "inputs.json").write_text(json.dumps(inputs))
    return folder


def probe(case: str, folder: Path) -> dict[str, Any]:
    """Run ``case`` in a fresh interpreter; return what it imported."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(PROBE), case, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{case} failed:\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def undeclared(result: dict[str, Any]) -> dict[str, list[str]]:
    """The distributions the step imported that its key does not name (and may matter)."""
    allowed = declared(result["case"]) | set(CANNOT_CHANGE_BITS)
    if result["case"].endswith(":dmpnn"):
        allowed |= CHEMPROP_UNUSED
    return {
        dist: result["modules"][dist] for dist in result["distributions"] if dist not in allowed
    }


def _chains() -> list[list[str]]:
    """Cases in order where a later one reads an earlier one's output (fit, then predict)."""
    chains = [["dataset"], ["standardize"]]
    chains += [[f"featurize:{kind}"] for kind in FEATURIZER_KINDS]
    chains += [["split:random"], ["split:scaffold"]]
    for kind in ESTIMATOR_KINDS:
        chain = [f"fit:{kind}", f"predict:{kind}"]
        if kind == "lightgbm":
            chain.append("evaluate")
        chains.append(chain)
    return chains


def test_every_step_declares_every_library_it_imports(probe_folder: Path) -> None:
    def run_chain(chain: list[str]) -> list[dict[str, Any]]:
        return [probe(case, probe_folder) for case in chain]

    workers = max(2, min(8, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = [r for chain in pool.map(run_chain, _chains()) for r in chain]
    missing = {r["case"]: undeclared(r) for r in results if undeclared(r)}
    assert not missing, (
        "steps import versioned libraries their keys do not name (add them to the step's, "
        "featurizer's or estimator's libraries, or - only if they cannot change the output "
        "- to CANNOT_CHANGE_BITS with the reason):\n"
        + "\n".join(
            f"  {case}: {dist} (imported {', '.join(mods)})"
            for case, found in sorted(missing.items())
            for dist, mods in sorted(found.items())
        )
    )
    # The probe saw the libraries that matter: a check that measures nothing passes too.
    by_case = {r["case"]: set(r["distributions"]) for r in results}
    assert "rdkit" in by_case["featurize:ecfp"]
    assert "rdkit" in by_case["standardize"]
    assert {"lightgbm", "scikit-learn"} <= by_case["fit:lightgbm"] | declared("fit:lightgbm")
    if "fit:dmpnn" in by_case:
        assert {"torch", "chemprop"} <= by_case["fit:dmpnn"]


def test_the_declarations_cover_the_steps_and_kinds() -> None:
    assert set(STEP_LIBRARIES) == {
        "dataset",
        "standardize",
        "featurize",
        "split",
        "fit",
        "predict",
        "evaluate",
    }
    assert {"rdkit", "numpy"} <= declared("featurize:ecfp")
    assert {"torch", "chemprop", "lightning", "rdkit", "numpy"} <= declared("fit:dmpnn")
    assert {"torch", "chemprop", "rdkit"} <= declared("predict:dmpnn")
