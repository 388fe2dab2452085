"""Bootstrap confidence intervals: the vectorized ``evaluate`` against a per-resample loop.

Run: ``python benchmarks/bootstrap.py [--molecules 1000] [--resamples 1000] [--repeats 3]``.
The loop scores each resample with scikit-learn and SciPy, as a straightforward
implementation would; the figure that matters is the ratio (loop / vectorized), which
does not depend on how fast or busy the machine is. Generated data: nothing to download.
(This measurement was a test's wall-time assertion until the tests stopped timing things.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn import metrics as skm

from qemlflow.evaluation import evaluate


def best_seconds(work: Callable[[], None], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``work()``, in seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--molecules", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    y = rng.normal(size=args.molecules)
    p = y + 0.5 * rng.normal(size=args.molecules)
    evaluate(y[:10], p[:10], "regression", n_bootstrap=10)  # imports and first calls

    def vectorized() -> None:
        evaluate(y, p, "regression", n_bootstrap=args.resamples, seed=0)

    def loop() -> None:
        rows = np.random.default_rng(0).integers(
            0, args.molecules, (args.resamples, args.molecules)
        )
        for r in rows:
            skm.mean_squared_error(y[r], p[r])
            skm.mean_absolute_error(y[r], p[r])
            skm.r2_score(y[r], p[r])
            spearmanr(y[r], p[r])

    fast = best_seconds(vectorized, args.repeats)
    slow = best_seconds(loop, max(1, args.repeats // 3))
    figures = {
        "molecules": args.molecules,
        "resamples": args.resamples,
        "vectorized_s": round(fast, 3),
        "per_resample_loop_s": round(slow, 3),
        "ratio": round(slow / fast, 1),
    }
    for key, value in figures.items():
        print(f"{key:>20}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
