"""Screening throughput and memory: ``screen`` vs a plain parse + ECFP + predict loop.

The library is the MUV SMILES (../shared/data/muv.csv.gz, ~93k) repeated to each size,
as a .smi file (without that file: the bundled datasets' SMILES, see molecules.py). The
model is the project's default estimator (LightGBM) on ECFP4 bits, trained on ESOL with
``dataset: {standardize: false}`` so that the screen does the same chemistry as the plain
loop (parse, ECFP4, predict) plus what a screen adds: the applicability domain (Tanimoto
to ~900 training molecules), errors in place, Parquet.

Each screen size runs in a fresh subprocess (``--child``) with one worker, which reports
its own throughput and peak RSS (``ru_maxrss``); the plain loop runs in this process on
a sample. A second figure screens with standardization on (the default for real use), with
the same ECFP4 model trained on standardized molecules, and its ratio to the plain loop
(issue #16: at least 0.6). A third screens with the model of the default experiment (a
config without ``features`` or ``model``: the default featurizers and estimator, standardized
input), in molecules/s per worker; with ``--random-smiles`` also on the same library written as
random SMILES (MUV's are canonical already, so most molecules are featurized as parsed; random
ones are all written and read back). The last line is a JSON summary of every figure.

    python benchmarks/screen.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from molecules import library_smiles


def _train(folder: Path, standardize: bool, default: bool = False) -> tuple[Path, Path]:
    import qemlflow as qm
    from qemlflow.store import Store

    config: dict[str, Any] = {
        "name": "screen-bench-default"
        if default
        else f"screen-bench-{'std' if standardize else 'raw'}",
        "seed": 0,
        "dataset": {
            "source": "esol",  # the bundled set (the same bytes as ../shared/data/esol.csv)
            "smiles_column": "smiles",
            "target_columns": ["logp"],
            "standardize": standardize,
        },
        "evaluation": {"n_bootstrap": 10, "plots": False},
    }
    if not default:  # the default experiment names neither features nor a model
        config["features"] = [{"type": "ecfp", "radius": 2, "size": 2048}]
    store_path = folder / "store"
    out = folder / config["name"]
    with Store.open(store_path) as store:
        qm.run(config, out, store=store)
    return out / "model.joblib", store_path


def _library(folder: Path, size: int, muv: list[str]) -> Path:
    path = folder / f"library-{size}.smi"
    if not path.exists():
        with path.open("w") as handle:
            for i in range(size):
                handle.write(f"{muv[i % len(muv)]}\n")
    return path


def _random_library(folder: Path, size: int, muv: list[str]) -> Path:
    """The library of :func:`_library` with each SMILES written in a random atom order
    (seeded): standardization then rewrites every one, so none is featurized from the
    molecule as parsed (the SMILES written is read back), the slower path."""
    from rdkit import Chem

    path = folder / f"library-{size}-random.smi"
    with path.open("w") as handle:
        for i in range(size):
            text = muv[i % len(muv)]
            mol = Chem.MolFromSmiles(text)
            if mol is not None:
                text = Chem.MolToRandomSmilesVect(mol, 1, randomSeed=i + 1)[0]
            handle.write(f"{text}\n")
    return path


def _plain_loop(model: Path, smiles: list[str], chunk: int = 20_000) -> float:
    """Molecules/s of RDKit parse + ECFP4 + model.predict, no extras."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    from qemlflow.pipeline.predictor import load_model

    estimator = load_model(model).model
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    began = time.perf_counter()
    for start in range(0, len(smiles), chunk):
        rows = []
        for text in smiles[start : start + chunk]:
            mol = Chem.MolFromSmiles(text)
            if mol is not None:
                rows.append(generator.GetFingerprintAsNumPy(mol))
        estimator.predict(np.asarray(rows, dtype=np.float32))
    return len(smiles) / (time.perf_counter() - began)


def _child(args: argparse.Namespace) -> None:
    from qemlflow.screen import screen
    from qemlflow.store import Store

    with Store.open(args.store) as store:
        result = screen(args.model, args.input, args.output, store=store, workers=args.workers)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": result.rows,
                "errors": result.errors,
                "seconds": result.seconds,
                "rate": result.rows / result.seconds,
                "peak_rss_mib": peak_kib / 1024,
                "domain": result.domain,
            }
        )
    )


def _screen_in_child(
    model: Path, store: Path, source: Path, folder: Path, workers: int = 1
) -> dict[str, Any]:
    output = folder / f"{source.stem}-{workers}.parquet"
    command = [sys.executable, __file__, "--child", str(model), str(store), str(source)]
    command += [str(output), "--workers", str(workers)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    output.unlink()
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--baseline", type=int, default=50_000, help="Molecules in the loop.")
    parser.add_argument("--standardized", type=int, default=20_000, help="0: skip that figure.")
    parser.add_argument(
        "--default-model", type=int, default=5_000, help="Molecules for that figure; 0: skip."
    )
    parser.add_argument(
        "--random-smiles",
        action="store_true",
        help="Also screen the default model's library written as random (non-canonical) SMILES.",
    )
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "STORE", "INPUT", "OUTPUT"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        args.model, args.store, args.input, args.output = args.child
        _child(args)
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    muv = library_smiles()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, store = _train(folder, standardize=False)
        plain = _plain_loop(model, muv[: args.baseline])
        print(f"plain loop (parse + ECFP4 + predict): {plain:,.0f} molecules/s")
        summary: dict[str, Any] = {"plain_loop_rate": plain, "screens": {}}
        runs = {}
        for size in args.sizes:
            runs[size] = _screen_in_child(model, store, _library(folder, size, muv), folder)
            figures = runs[size]
            summary["screens"][str(size)] = {
                **figures,
                "ratio_to_plain_loop": figures["rate"] / plain,
            }
            print(
                f"screen {size:>9,}: {figures['rate']:,.0f} molecules/s "
                f"({figures['rate'] / plain:.2f}x the loop), peak RSS "
                f"{figures['peak_rss_mib']:,.0f} MiB, {figures['seconds']:.0f} s, "
                f"{figures['errors']} invalid, domain {figures['domain']}"
            )
        if len(args.sizes) > 1:
            small, large = min(args.sizes), max(args.sizes)
            ratio = runs[large]["peak_rss_mib"] / runs[small]["peak_rss_mib"]
            print(f"peak RSS {large:,} / {small:,}: {ratio:.2f}x")
            summary["peak_rss_ratio"] = ratio
        if args.standardized:
            model_std, store_std = _train(folder, standardize=True)
            source = _library(folder, args.standardized, muv)
            figures = _screen_in_child(model_std, store_std, source, folder)
            summary["standardized"] = {
                "molecules": args.standardized,
                **figures,
                "ratio_to_plain_loop": figures["rate"] / plain,
            }
            print(
                f"screen {args.standardized:,} with standardization: "
                f"{figures['rate']:,.0f} molecules/s ({figures['rate'] / plain:.2f}x the loop)"
            )
        if args.default_model:
            model_default, store_default = _train(folder, standardize=True, default=True)
            source = _library(folder, args.default_model, muv)
            figures = _screen_in_child(model_default, store_default, source, folder)
            summary["default_model"] = {"molecules": args.default_model, **figures}
            print(
                f"screen {args.default_model:,} with the default experiment's model: "
                f"{figures['rate']:,.0f} molecules/s per worker"
            )
            if args.random_smiles:
                source = _random_library(folder, args.default_model, muv)
                figures = _screen_in_child(model_default, store_default, source, folder)
                summary["default_model_random_smiles"] = {
                    "molecules": args.default_model,
                    **figures,
                }
                print(
                    f"the same, written as random SMILES: {figures['rate']:,.0f} molecules/s "
                    "per worker"
                )
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
