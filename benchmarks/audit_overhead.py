"""What the audit trail adds to a typical run.

Run: ``python benchmarks/audit_overhead.py [--repeats 3] [--json out.json]``.

A typical run is the demo experiment (ESOL, ECFP4 counts + RDKit 2D descriptors,
LightGBM), recorded into a fresh store each time so that nothing comes from the cache.
The audit trail's share is measured directly: the events a run appends (counted in the
store) times the cost of one append (timed over many appends into the same store, each a
hash-chained insert in its own transaction), against the run's wall time. For context the
same run is also timed with no store at all (no provenance, no audit).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from statistics import median

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    import qemlflow as qm
    from qemlflow.pipeline.config import load_config
    from qemlflow.store import Store

    config_file = resources.files("qemlflow.configs").joinpath("esol.yaml")
    with resources.as_file(config_file) as path:
        config = load_config(path)

    bare, recorded, events_per_run, append_s = [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.repeats):
            start = time.perf_counter()
            qm.run(config)
            bare.append(time.perf_counter() - start)

            with Store.open(Path(folder) / f"store{i}") as store:
                start = time.perf_counter()
                qm.run(config, store=store)
                recorded.append(time.perf_counter() - start)
                events_per_run.append(len(store.audit_events()))

                start = time.perf_counter()
                for n in range(args.appends):
                    store.audit("benchmark.event", {"run": f"bench-{n}"}, details={"n": n})
                append_s.append((time.perf_counter() - start) / args.appends)
                assert store.verify_audit().ok

    run_s = median(recorded)
    events = median(events_per_run)
    append = median(append_s)
    figures = {
        "run_without_store_s": round(median(bare), 3),
        "run_with_store_and_audit_s": round(run_s, 3),
        "audit_events_per_run": events,
        "audit_append_ms": round(append * 1000, 3),
        "audit_share_of_run_percent": round(100 * events * append / run_s, 3),
        "store_and_audit_overhead_percent": round(100 * (run_s / median(bare) - 1), 2),
    }
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if figures["audit_share_of_run_percent"] > 5:
        sys.exit("the audit trail adds more than 5 % to a typical run")


if __name__ == "__main__":
    main()
