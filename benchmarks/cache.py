"""Re-featurizing from the store's cache vs computing the features.

Run: ``python benchmarks/cache.py [--n 10000] [--json out.json]``.

Both sides go through the pipeline's own ``featurize`` step (``StepExecutor``) on the
same standardized molecules, in the same process: the first call computes the features
and stores them under their content key; the second finds the key and reads the blob back
(re-hashing it, as every cache read does). Timed for the demo's featurizer (ECFP4 counts
+ the RDKit 2D descriptors) and for ECFP4 bits alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from molecules import library_smiles

FEATURIZERS = {
    "ecfp4-counts+rdkit2d (demo)": [{"type": "ecfp", "counts": True}, {"type": "rdkit2d"}],
    "ecfp4 bits": {"type": "ecfp"},
}


def featurize_step(executor: object, spec: object, smiles: list[str], n_jobs: int) -> object:
    from qemlflow.features import make_featurizer
    from qemlflow.pipeline.config import without_n_jobs
    from qemlflow.pipeline.steps import ArrayCodec

    featurizer = make_featurizer(spec)
    featurizer.set_params(n_jobs=n_jobs)
    params = {"spec": without_n_jobs(featurizer.to_spec())}
    return executor.run(  # type: ignore[attr-defined]
        "featurize", params, ["benchmark-input"], lambda: featurizer.transform(smiles), ArrayCodec()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument(
        "--smiles-file", type=Path, help="default: ../shared/data/muv.csv.gz, else the bundled sets"
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from qemlflow.pipeline.steps import StepExecutor
    from qemlflow.store import Store

    smiles = library_smiles(args.n, args.smiles_file)
    figures = {}
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "store") as store:
        executor = StepExecutor(store)
        for name, spec in FEATURIZERS.items():
            start = time.perf_counter()
            computed = featurize_step(executor, spec, smiles, args.n_jobs)
            compute_s = time.perf_counter() - start
            start = time.perf_counter()
            cached = featurize_step(executor, spec, smiles, args.n_jobs)
            cached_s = time.perf_counter() - start
            assert not computed.cache_hit and cached.cache_hit  # type: ignore[attr-defined]
            assert computed.output == cached.output  # type: ignore[attr-defined]
            shape = cached.value.shape  # type: ignore[attr-defined]
            figures[name] = {
                "molecules": args.n,
                "shape": list(shape),
                "compute_s": round(compute_s, 3),
                "from_cache_s": round(cached_s, 4),
                "speedup": round(compute_s / cached_s, 1),
            }
            print(
                f"{name:>30}: compute {compute_s:7.3f} s, from cache {cached_s:7.4f} s "
                f"-> {compute_s / cached_s:6.1f}x  ({shape[0]} x {shape[1]})",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    demo = figures["ecfp4-counts+rdkit2d (demo)"]["speedup"]
    if demo < 20:
        sys.exit(f"cache speedup {demo}x for the demo featurizer is under the 20x target")


if __name__ == "__main__":
    main()
