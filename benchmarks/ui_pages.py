"""How fast ``qemlflow ui`` answers with a big store: 1,000 runs and 100,000 audit events.

Run: ``python benchmarks/ui_pages.py [--runs 1000] [--events 100000] [--repeats 20]
[--store DIR] [--json out.json] [--check]``.

The store is built through the store's own API, nothing written around it:

- two real runs (``qemlflow.run``): ESOL (regression) and BBBP (classification), ECFP4 +
  a random forest, with plots; their steps, artifacts (predictions, rejected rows, model)
  and environment are what every other run points at;
- ``--runs`` runs made from them with ``create_run`` / ``record_run_step`` /
  ``add_artifact`` / ``finish_run`` (one run in twenty ``fail_run``): varied names,
  models, splits and seeds, the template's metrics jittered, steps marked as cache hits
  (a re-run with another config is mostly served by the cache);
- three registered models (``registry.register``), each promoted to ``production``
  through its gates (``registry.promote``), the previous version kept as ``staging``;
- signed ``monitor.alert`` events, shaped as ``qemlflow monitor`` writes them, until the
  chain holds ``--events`` events: appended with ``append_event`` inside write
  transactions of 2,000 events (each event hash-chained, authorized and Ed25519-signed as
  any other; only the commits are batched). The chain is verified afterwards.

Then ``qemlflow ui``'s application is served by uvicorn in a subprocess on 127.0.0.1 and
every page is fetched with httpx: once cold (caches empty), then ``--repeats`` times. The
figures per page are min / median / p95 in ms and the median's ratio to the baseline, a
static file (``/static/qemlflow.css``) from the same server: what a request costs with no
page work at all. ``--check`` exits 1 when a page's median is over 300 ms or a page does
not answer 200. ``--store DIR`` keeps the built store there and reuses it next time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TARGET_MS = 300.0
BASELINE = "/static/qemlflow.css"
MANIFEST = "ui-bench.json"
ESTIMATORS = ("random_forest", "lightgbm", "extra_trees", "knn", "svm", "linear")
SPLITS = ("random", "scaffold", "cluster")
EVENT_BATCH = 2000
UNBOUNDED = ("rmse", "mae")


def _template_config(source: str, target: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "seed": 0,
        "dataset": {"source": source, "smiles_column": "smiles", "target_columns": [target]},
        "features": [{"type": "ecfp", "radius": 2, "size": 1024, "counts": True}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 50}},
        "evaluation": {"n_bootstrap": 100, "plots": True},
    }


def _sources(folder: Path, rows: int | None) -> list[tuple[str, str, str]]:
    """(source, target column, name) of the template runs: bundled, or their first rows."""
    chosen = [("esol", "logp"), ("bbbp", "p_np")]
    if rows is None:
        return [(name, target, name) for name, target in chosen]
    import gzip
    import io

    import pandas as pd

    from qemlflow.data.registry import bundled_bytes

    out = []
    for name, target in chosen:
        frame = pd.read_csv(io.BytesIO(gzip.decompress(bundled_bytes(name))))
        path = folder / f"{name}-{rows}.csv"
        frame.head(rows).to_csv(path, index=False)
        out.append((str(path), target, name))
    return out


def _jitter(metrics: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The template's metrics, each test score and its CI scaled by one random factor
    (scores bounded by 1, such as ROC AUC or R², kept at most 1)."""
    factor = rng.uniform(0.85, 1.15)

    def scaled(name: str, value: Any) -> Any:
        if not isinstance(value, float):
            return value
        return value * factor if name in UNBOUNDED else min(1.0, value * factor)

    out = json.loads(json.dumps(metrics))
    test = out.get("test") or {}
    for name, value in test.items():
        test[name] = scaled(name, value)
    ci = (out.get("ci95") or {}).get("test") or {}
    for name, bounds in ci.items():
        if isinstance(bounds, list):
            ci[name] = [scaled(name, b) for b in bounds]
    return dict(out)


def build_store(
    folder: Path, runs: int, events: int, *, rows: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Fill a new store at ``folder`` (see the module docstring); return what it holds.

    ``rows``: the template runs use the first ``rows`` molecules of each dataset (a quick
    build), all of them when ``None``.
    """
    import qemlflow as qm
    from qemlflow import registry
    from qemlflow.store import Store
    from qemlflow.store.audit import append_event

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    with Store.open(folder / "store") as store:
        templates = []
        for source, target, name in _sources(folder, rows):
            result = qm.run(_template_config(source, target, name), store=store)
            assert result.run_id is not None
            templates.append(store.get_run(result.run_id))
        timings["template_runs_s"] = time.perf_counter() - started

        mark = time.perf_counter()
        made: list[str] = []
        for i in range(max(0, runs - len(templates))):
            template = templates[i % len(templates)]
            estimator = rng.choice(ESTIMATORS)
            split = rng.choice(SPLITS)
            config = json.loads(json.dumps(template.config))
            config["model"]["estimator"] = estimator
            config["model"]["params"] = {} if estimator != "random_forest" else {"n_estimators": 50}
            config["split"]["method"] = split
            config["seed"] = i
            config["name"] = f"{template.name}-{estimator}-{split}-{i}"
            run_id = store.create_run(config["name"], config, i, template.environment)
            fails = rng.random() < 0.05
            for step in template.steps[: 4 if fails else None]:
                store.record_run_step(
                    run_id, step.position, step.step, step.key, step.output, True, step.seconds
                )
            if fails:
                store.fail_run(run_id, f"{estimator} failed to fit: out of memory (benchmark)")
                made.append(run_id)
                continue
            for artifact in template.artifacts:
                store.add_artifact(run_id, artifact.name, artifact.digest, artifact.kind)
            store.finish_run(run_id, _jitter(template.metrics or {}, rng))
            made.append(run_id)
        timings["runs_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        models = []
        for template, name in (
            (templates[0], "solubility"),
            (templates[-1], "bbb"),
            (templates[0], "sol-small"),
        ):
            first = registry.register(store, template.id, name)
            second = registry.register(store, template.id, name)
            registry.promote(store, name, first.version, "staging")
            registry.promote(store, name, second.version, "production")
            models.append(name)
        timings["registry_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        versions = store.list_model_versions()
        head = int(store.audit_head().get("seq") or 0)
        alerts = ("out_of_domain", "prediction_drift", "error_rate")
        epoch = datetime(2025, 1, 1, tzinfo=UTC)
        n = 0
        while head < events:
            batch = min(EVENT_BATCH, events - head)
            with store.db.writing() as conn:
                for _ in range(batch):
                    version = versions[n % len(versions)]
                    n += 1
                    alert = alerts[n % len(alerts)]
                    append_event(
                        conn,
                        "monitor.alert",
                        {"model": version.model_digest},
                        reason=f"{version.name}@{version.version}: {alert} over the last 3600 s",
                        details={
                            "name": version.name,
                            "version": version.version,
                            "alert": alert,
                            "window_start": (epoch + timedelta(hours=n)).isoformat(),
                            "window_seconds": 3600,
                            "molecules": 2000,
                            "ood_rate": round(rng.uniform(0.2, 0.9), 4),
                            "training_ood_rate": 0.05,
                            "psi": round(rng.uniform(0.0, 1.0), 4),
                            "similarity_ks": round(rng.uniform(0.0, 1.0), 4),
                        },
                    )
            head += batch
        timings["events_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        report = store.verify_audit()
        if not report.ok:
            raise SystemExit(f"the benchmark's audit chain does not verify: {report.problems}")
        timings["verify_s"] = time.perf_counter() - mark
        counts = store.table_counts()
        actor = store.audit_events(action="run.started")[0].actor
        ids = [t.id for t in templates] + made
    manifest = {
        "runs": counts["runs"],
        "events": counts["audit_events"],
        "datasets": counts["datasets"],
        "run": templates[0].id,
        "compare": [templates[0].id, ids[len(templates)], templates[-1].id],
        "model": models[0],
        "dataset": store.list_datasets()[0].id,
        "actor": actor,
        "build_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(store: Path, port: int) -> subprocess.Popen[bytes]:
    code = (
        "from qemlflow.store import Store\n"
        "from qemlflow.ui.app import run_ui\n"
        f"run_ui(Store.open({str(store)!r}), port={port})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the UI server exited with code {process.returncode}")
        try:
            if httpx.get(url + BASELINE, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the UI server did not start in time")


def pages(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, path) of every page the benchmark times."""
    from urllib.parse import quote, urlencode

    compare = urlencode([("run", r) for r in manifest["compare"]])
    return [
        ("home", "/"),
        ("runs", "/runs"),
        ("runs, text filter", "/runs?q=knn"),
        ("runs, sorted by metric", "/runs?sort=metric&order=asc"),
        ("runs, last page", "/runs?page=20"),
        ("run", f"/runs/{manifest['run']}"),
        ("compare 3 runs", f"/runs/compare?{compare}"),
        ("models", "/models"),
        ("model", f"/models/{manifest['model']}"),
        ("audit", "/audit"),
        ("audit, actor filter", f"/audit?{urlencode({'actor': manifest['actor']})}"),
        ("audit, object filter", f"/audit?object={quote(manifest['run'])}"),
        ("datasets", "/datasets"),
        ("dataset", f"/datasets/{manifest['dataset']}"),
        ("monitor", "/monitor"),
        ("monitor, one model", f"/monitor/{manifest['model']}"),
        ("screens", "/screens"),
        ("predict", "/predict"),
    ]


def _time(http: Any, path: str, repeats: int) -> dict[str, Any]:
    start = time.perf_counter()
    first = http.get(path)
    cold = (time.perf_counter() - start) * 1000
    took = []
    for _ in range(repeats):
        start = time.perf_counter()
        response = http.get(path)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return {
        "path": path,
        "status": response.status_code if repeats else first.status_code,
        "bytes": len(first.content),
        "cold_ms": round(cold, 1),
        "min_ms": round(took[0], 1),
        "median_ms": round(statistics.median(took), 1),
        "p95_ms": round(took[min(len(took) - 1, int(0.95 * len(took)))], 1),
    }


def time_pages(store: Path, manifest: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Serve the UI over ``store`` and time every page; return the figures."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(store, port)
    try:
        _wait_until_up(url, server)
        with httpx.Client(base_url=url, timeout=60) as http:
            baseline = _time(http, BASELINE, repeats)
            figures = {label: _time(http, path, repeats) for label, path in pages(manifest)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    for entry in figures.values():
        entry["ratio"] = round(entry["median_ms"] / max(baseline["median_ms"], 1e-3), 1)
    return {"baseline": baseline, "pages": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in the store")
    parser.add_argument("--events", type=int, default=100_000, help="audit events in the store")
    parser.add_argument("--repeats", type=int, default=20, help="timed loads of each page")
    parser.add_argument(
        "--rows", type=int, default=None, help="molecules per template run (default: all)"
    )
    parser.add_argument("--store", type=Path, help="build the store here, or reuse it")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 if a page's median > {TARGET_MS:.0f} ms"
    )
    args = parser.parse_args(argv)
    if "QEMLFLOW_IDENTITY_DIR" not in os.environ:  # never the user's own identity
        os.environ["QEMLFLOW_IDENTITY_DIR"] = tempfile.mkdtemp(prefix="qemlflow-bench-id-")

    with tempfile.TemporaryDirectory(prefix="qemlflow-bench-ui-") as tmp:
        folder = args.store or Path(tmp)
        if (folder / MANIFEST).is_file():
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            print(f"reusing the store in {folder}", flush=True)
        else:
            print(f"building {args.runs} runs and {args.events} audit events ...", flush=True)
            manifest = build_store(folder, args.runs, args.events, rows=args.rows)
        report = {
            "cpus": os.cpu_count(),
            "store": {k: manifest[k] for k in ("runs", "events", "datasets", "build_s")},
            **time_pages(folder / "store", manifest, args.repeats),
        }
    slow = [
        label
        for label, entry in report["pages"].items()
        if entry["median_ms"] > TARGET_MS or entry["status"] != 200
    ]
    report["target_ms"] = TARGET_MS
    report["over_target"] = slow
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    store = report["store"]
    print(
        f"store: {store['runs']:,} runs, {store['events']:,} audit events, "
        f"{store['datasets']} datasets; built in {sum(store['build_s'].values()):.0f} s "
        f"{store['build_s']}"
    )
    base = report["baseline"]
    print(
        f"{'page':<26} {'status':>6} {'cold':>8} {'min':>8} {'median':>8} {'p95':>8} {'ratio':>7}"
    )
    for label, e in [("baseline (static css)", base), *report["pages"].items()]:
        ratio = f"{e.get('ratio', 1.0):>6.1f}x"
        print(
            f"{label:<26} {e['status']:>6} {e['cold_ms']:>8.1f} {e['min_ms']:>8.1f} "
            f"{e['median_ms']:>8.1f} {e['p95_ms']:>8.1f} {ratio}"
        )
    if slow:
        print(f"over {TARGET_MS:.0f} ms or not 200: {', '.join(slow)}")
    return 1 if (args.check and slow) else 0


if __name__ == "__main__":
    sys.exit(main())
