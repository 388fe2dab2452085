"""``standardize_smiles`` per molecule, against an earlier commit's, and its identity check.

Timing: the standardization modules of ``--before`` (``qemlflow/chem/molecule.py``,
``parent.py``, ``cleanup.py`` at that commit, read with ``git show``) are loaded beside
this checkout's, and both standardize the same molecules in turns, ``--rounds`` times, in
this one process, so that a shared machine slows both alike; the median over the rounds of
each round's ratio (and saving) is the figure to compare. The molecules are the first
``--molecules`` of the library (MUV, see molecules.py).

Identity (``--identity``): every molecule of the library through this checkout's
``standardize_smiles`` and through RDKit's full pipeline as the tests write it
(``reference_standardize`` in tests/test_standardize_fast.py: every fragment split,
RDKit's own ``Cleanup`` and ``Uncharger`` on every parent), counting the molecules whose
canonical SMILES, refusal reason or refusal detail differ, and those whose ECFP4 bits,
counts, chiral counts or ``physchem`` row differ. The last line is a JSON summary.

    python benchmarks/standardize.py --before ad7db8b --molecules 20000 --rounds 3
    python benchmarks/standardize.py --identity
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from molecules import library_smiles, library_source

ROOT = Path(__file__).resolve().parents[1]

MODULES = ("molecule", "parent", "cleanup")


def _before(commit: str, folder: Path) -> Callable[..., Any]:
    """``standardize_smiles`` of ``commit``, as the package ``before_chem`` in ``folder``."""
    package = folder / "before_chem"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in MODULES:
        text = subprocess.run(
            ["git", "show", f"{commit}:src/qemlflow/chem/{name}.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        for other in MODULES:
            text = text.replace(f"from qemlflow.chem.{other} ", f"from before_chem.{other} ")
        (package / f"{name}.py").write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("before_chem.molecule").standardize_smiles  # type: ignore[no-any-return]


def _timing(args: argparse.Namespace) -> dict[str, Any]:
    from qemlflow.chem import standardize_smiles

    smiles = library_smiles(args.molecules)
    with tempfile.TemporaryDirectory() as folder:
        before = _before(args.before, Path(folder))
        runs: dict[str, list[float]] = {"before": [], "now": []}
        for function in (before, standardize_smiles):  # warm: rule sets, queries
            for text in smiles[:500]:
                function(text)
        for _ in range(args.rounds):
            for label, function in (("before", before), ("now", standardize_smiles)):
                start = time.perf_counter()
                for text in smiles:
                    function(text)
                runs[label].append((time.perf_counter() - start) / len(smiles) * 1e6)
    median = {label: statistics.median(values) for label, values in runs.items()}
    # Per round (the two ran back to back, under about the same load), then the median.
    pairs = list(zip(runs["before"], runs["now"], strict=True))
    return {
        "library": library_source(),
        "molecules": len(smiles),
        "before": args.before,
        "us_per_molecule": {k: [round(v, 1) for v in vs] for k, vs in runs.items()},
        "median_us": {k: round(v, 1) for k, v in median.items()},
        "saved_us": round(statistics.median(b - n for b, n in pairs), 1),
        "ratio_now_to_before": round(statistics.median(n / b for b, n in pairs), 3),
    }


def _identity(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    from qemlflow.chem import standardize_smiles
    from qemlflow.chemistry import DEFAULT_POLICY
    from test_standardize_fast import features_of, reference_standardize

    smiles = library_smiles(args.molecules or None)
    start = time.perf_counter()
    results, features, compared, examples = 0, 0, 0, []
    for text in smiles:
        expected = reference_standardize(text, False, DEFAULT_POLICY)
        result = standardize_smiles(text)
        if (result.smiles, result.reason, result.detail) != (
            expected.smiles,
            expected.reason,
            expected.detail,
        ):
            results += 1
            examples.append(text)
        elif result.mol is not None and expected.mol is not None:
            compared += 1
            pairs = zip(features_of(result.mol), features_of(expected.mol), strict=True)
            if not all(np.array_equal(a, b, equal_nan=True) for a, b in pairs):
                features += 1
                examples.append(text)
    return {
        "library": library_source(),
        "molecules": len(smiles),
        "smiles_or_refusal_differ": results,
        "features_compared": compared,
        "features_differ": features,
        "examples": examples[:5],
        "seconds": round(time.perf_counter() - start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="ad7db8b", help="the commit to time against")
    parser.add_argument("--molecules", type=int, default=20_000, help="0: all (--identity)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--identity", action="store_true", help="compare, do not time")
    args = parser.parse_args()
    if args.identity and "--molecules" not in sys.argv:
        args.molecules = 0
    summary = _identity(args) if args.identity else _timing(args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
