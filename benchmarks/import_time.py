"""Cold ``import qemlflow`` time, as a ratio to an empty interpreter start.

Run: ``python benchmarks/import_time.py [--repeats 20] [--json out.json]``.
Each sample is a fresh interpreter; the best of the repeats is reported for each
command, so the figure is the import cost itself rather than scheduler noise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def best_wall_time(code: str, repeats: int) -> float:
    """Return the fastest wall time (seconds) of ``python -c code`` over ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    baseline = best_wall_time("pass", args.repeats)
    package = best_wall_time("import qemlflow", args.repeats)
    figures = {
        "python_pass_ms": round(baseline * 1000, 1),
        "import_qemlflow_ms": round(package * 1000, 1),
        "import_cost_ms": round((package - baseline) * 1000, 1),
        "ratio": round(package / baseline, 2),
        "budget_ms": 100,
    }
    for key, value in figures.items():
        print(f"{key:>20}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if package * 1000 > figures["budget_ms"]:
        sys.exit(f"import qemlflow took {package * 1000:.0f} ms, over the 100 ms budget")


if __name__ == "__main__":
    main()
