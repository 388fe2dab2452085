"""What the audit trail adds to a typical run.

Run: ``python benchmarks/audit_overhead.py [--repeats 3] [--json out.json]``.

A typical run is the demo experiment (ESOL, ECFP4 counts + RDKit 2D descriptors,
LightGBM), recorded into a fresh store each time so that nothing comes from the cache.
The audit trail's share is measured directly: the events a run appends (counted in the
store) times the cost of one append (timed over many appends into the same store, each a
hash-chained insert in its own transaction), against the run's wall time. For context the
same run is also timed with no store at all (no provenance, no audit).

Signing is measured inside the recorded runs themselves: every piece of work that
authenticated actors add to a run is timed where it happens - finding and unlocking the
acting identity (the OS account's key, made on the first run), the authority check before
each event (which makes the account the owner of a new store), the canonical form each
signature covers and the Ed25519 signature itself - and summed against the run's wall
time. The gate: signing every event costs at most 5 % of a demo run (issue #13).
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
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--appends", type=int, default=300)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    os.environ["QEMLFLOW_IDENTITY_DIR"] = tempfile.mkdtemp(prefix="qemlflow-bench-identity-")

    import qemlflow as qm
    from qemlflow.pipeline.config import load_config
    from qemlflow.store import Store

    signing = _time_signing()

    config_file = resources.files("qemlflow.configs").joinpath("esol.yaml")
    with resources.as_file(config_file) as path:
        config = load_config(path)

    bare, recorded, events_per_run, append_s, signing_s = [], [], [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(args.repeats):
            start = time.perf_counter()
            qm.run(config)
            bare.append(time.perf_counter() - start)

            with Store.open(Path(folder) / f"store{i}") as store:
                signing.clear()
                start = time.perf_counter()
                qm.run(config, store=store)
                recorded.append(time.perf_counter() - start)
                signing_s.append(sum(signing.values()))
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
        "signing_ms_per_run": round(1000 * median(signing_s), 3),
        "signing_share_of_run_percent": round(
            100 * max(s / r for s, r in zip(signing_s, recorded, strict=True)), 3
        ),
    }
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    if figures["audit_share_of_run_percent"] > 5:
        sys.exit("the audit trail adds more than 5 % to a typical run")
    if figures["signing_share_of_run_percent"] > 5:
        sys.exit("signing every audit event costs more than 5 % of a demo run")


def _time_signing() -> dict[str, float]:
    """Time, where they happen, the steps authenticated actors add to every write.

    Returns the dict the timers add their seconds to (clear it before a run): ``resolve``
    (finding and unlocking the acting identity), ``authorize`` (the role check before each
    event, and making a new store's owner), ``message`` (the canonical form a signature
    covers) and ``sign`` (Ed25519).
    """
    import dataclasses

    from qemlflow.audit import session
    from qemlflow.store import identities
    from qemlflow.store.audit import AuditEvent

    spent: dict[str, float] = {}

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    resolve = timed("resolve", session.principal_for)

    def resolve_timed_signer(conn: Any) -> Any:  # a store resolves its principal once
        principal = resolve(conn)
        return dataclasses.replace(principal, signer=timed("sign", principal.signer))

    session.principal_for = resolve_timed_signer  # type: ignore[assignment]
    identities.authorize = timed("authorize", identities.authorize)  # type: ignore[assignment]
    AuditEvent.signed_message = timed("message", AuditEvent.signed_message)  # type: ignore[method-assign]
    return spent


if __name__ == "__main__":
    main()
