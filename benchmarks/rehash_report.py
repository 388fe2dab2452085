"""Carry the committed benchmark results over a change of the config-digest formula.

Run: ``python benchmarks/rehash_report.py [docs/benchmarks/moleculenet.json] [--check]``.

Every seed of every (dataset, model) cell records the ``config_digest`` of the experiment
that produced its value; ``qemlflow benchmark`` reuses a value only when the digest of
the current experiment equals it, and tests/test_benchmark.py compares the CI subset's
digest with the committed one. When the digest *formula* changes (QeMLflow moved to RFC
8785 hashing), the committed digests would all look stale although no experiment
changed. This script recomputes each digest with the runner's own ``config_digest`` and
rewrites it, values untouched, but only where the recorded digest proves that the
experiment is the one that ran: it equals the new digest already (nothing to do) or the
digest the previous formula (``legacy_config_digest``) gives for the same experiment. A
seed whose experiment changed since it ran keeps its old digest, so the benchmark still
recomputes it. Idempotent; a second run changes nothing. ``--check`` only reports (exit
1 when a rewrite is due).

``moleculenet.runs.json`` (the invocations log) holds no digests and is left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPORT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "moleculenet.json"


def rehash(results: dict[str, Any]) -> tuple[int, int, list[str]]:
    """Rewrite the digests in ``results`` in place: (rewritten, current, stale labels)."""
    from qemlflow.benchmark.runner import config_digest, experiment_config, legacy_config_digest
    from qemlflow.benchmark.suite import MODELS, SUITES, resolve_datasets

    suite_of = {name: suite for suite, names in SUITES.items() for name in names}
    rewritten = current = 0
    stale: list[str] = []
    for dataset_name, models in results.items():
        for model_name, entry in models.items():
            # A cell is "name" or "name@split" (BBBP and BACE run under two splits).
            suite = suite_of.get(dataset_name.partition("@")[0])
            model = MODELS.get(model_name)
            for seed in entry.get("seeds", []):
                label = f"{dataset_name}/{model_name}/seed {seed.get('seed')}"
                if suite is None or model is None or not isinstance(seed.get("seed"), int):
                    stale.append(f"{label} (unknown dataset, model or seed)")
                    continue
                (dataset,) = [
                    cell
                    for cell in resolve_datasets(suite, [dataset_name])
                    if cell.key == dataset_name
                ]
                cfg = experiment_config(dataset, model, seed["seed"])
                new = config_digest(cfg)
                if seed.get("config_digest") == new:
                    current += 1
                elif seed.get("config_digest") == legacy_config_digest(cfg):
                    seed["config_digest"] = new
                    rewritten += 1
                else:
                    stale.append(f"{label} (its experiment changed since it ran)")
    return rewritten, current, stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, default=REPORT)
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if due")
    args = parser.parse_args()
    text = args.report.read_text(encoding="utf-8")
    results = json.loads(text)
    rewritten, current, stale = rehash(results)
    print(f"{args.report}: {rewritten} digests rewritten, {current} already current")
    for label in stale:
        print(f"  left as is (will be recomputed by the benchmark): {label}")
    if args.check:
        return 1 if rewritten else 0
    if rewritten:
        # The same layout as the benchmark writes (qemlflow.benchmark.runner._write_json).
        args.report.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
