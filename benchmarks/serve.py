"""Load-test ``qemlflow serve`` on loopback: single-molecule latency under concurrency,
then the time of one 1,000-molecule request.

Trains the model ``qemlflow run`` produces when the config names no features and no model
(``--model default``: today ECFP4 counts + RDKit 2D descriptors, LightGBM; ``--features``
swaps in a candidate feature spec) or the ECFP4-only LightGBM of 300 trees the first
figures were measured with (``--model ecfp``) on ESOL into a temporary store, registers
and promotes it, starts the server in a subprocess, then runs ``--clients`` concurrent
clients (asyncio + httpx, or ``--tool wrk``: Debian's wrk, in C, one thread), each
sending one-molecule requests back to back for ``--seconds``, cycling through 500 ESOL
molecules. Then one request of 1,000 Lipophilicity molecules the server has never seen,
and the same request again. The CPU seconds the server process and its worker processes
spent on the batch, and (wrk) the server's CPU per single-molecule request, are reported
too (Linux), to read the figures on a shared machine.
Targets: p99 <= 20 ms at 32 clients with no errors; the 1,000 unseen molecules in <= 1 s.

    python benchmarks/serve.py --seconds 60 --tool wrk [--json]
    python benchmarks/serve.py --features '[{"type": "ecfp", "counts": true}, {"type": "physchem"}]'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from molecules import bundled_frame

TARGET_P99_MS = 20.0
TARGET_BATCH_S = 1.0


# The model served: what `qemlflow run` trains when the config names no features and no
# model (the headline), or the ECFP4-only LightGBM the first figures were measured with.
MODELS: dict[str, dict[str, Any]] = {
    "default": {},
    "ecfp": {
        "features": [{"type": "ecfp"}],
        "model": {"estimator": "lightgbm", "params": {"n_estimators": 300}},
    },
}


def _prepare(folder: Path, model: str, features: Any = None) -> tuple[str, list[str], list[str]]:
    """Train, register and promote the model; return (API key, ESOL SMILES, unseen SMILES)."""
    import qemlflow as qm
    from qemlflow import registry
    from qemlflow.store import Store

    config = {
        "name": "bench-serve",
        "dataset": {"source": "esol", "smiles_column": "smiles", "target_columns": ["logp"]},
        **MODELS[model],
        **({"features": features} if features is not None else {}),
        "evaluation": {"n_bootstrap": 20, "plots": False},
    }
    with Store.open(folder) as store:
        result = qm.run(config, store=store)
        assert result.run_id is not None
        version = registry.register(store, result.run_id, "esol")
        registry.promote(store, "esol", version.version)
        _, key = store.create_api_key("benchmark")
        esol = list(result.dataset.smiles)
    unseen = bundled_frame("lipophilicity")["smiles"].astype(str).tolist()
    return key, esol, [s for s in unseen if s not in set(esol)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    code = (
        "from qemlflow.serve.app import ServeSettings, run_server\n"
        "from qemlflow.store import Store\n"
        f"run_server(ServeSettings(spec='esol', port={port}, poll_seconds=0), "
        f"Store.open({str(folder)!r}), log_level='warning')\n"
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not start in time")


async def _load(
    url: str, key: str, smiles: list[str], clients: int, seconds: float, warmup: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    counting_from = start + warmup
    stop_at = counting_from + seconds

    async def client(offset: int) -> None:
        # One connection per client: a pool shared by 32 tasks costs more than the server.
        nonlocal errors
        i = offset
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            while (now := time.perf_counter()) < stop_at:
                molecule = smiles[i % len(smiles)]
                i += clients
                try:
                    response = await http.post("/predict", json={"smiles": [molecule]})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if now >= counting_from:
                    latencies.append(time.perf_counter() - now)
                    errors += not ok

    await asyncio.gather(*(client(n) for n in range(clients)))
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": len(ms),
        "errors": errors,
        "throughput_rps": len(ms) / seconds,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local bodies = {%(bodies)s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK {\\"requests\\":%%d,\\"errors\\":%%d,\\"seconds\\":%%f,"
    .. "\\"p50\\":%%f,\\"p95\\":%%f,\\"p99\\":%%f,\\"max\\":%%f}\\n",
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(95) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


def _load_wrk(
    url: str, key: str, smiles: list[str], clients: int, seconds: float, folder: Path
) -> dict[str, Any]:
    """The same load from wrk (C, one thread), which leaves the cores to the server."""
    bodies = ",".join(json.dumps(json.dumps({"smiles": [s]})) for s in smiles[:500])
    script = folder / "load.lua"
    script.write_text(_WRK_SCRIPT % {"key": key, "bodies": bodies}, encoding="utf-8")
    done = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds:.0f}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK "))
    figures = json.loads(line[4:])
    return {
        "clients": clients,
        "seconds": figures["seconds"],
        "requests": figures["requests"],
        "errors": figures["errors"],
        "throughput_rps": figures["requests"] / figures["seconds"],
        "p50_ms": figures["p50"],
        "p95_ms": figures["p95"],
        "p99_ms": figures["p99"],
        "max_ms": figures["max"],
    }


def _cpu_seconds(pid: int) -> tuple[float, float] | None:
    """CPU seconds (user + system) so far of process ``pid`` and of all its descendants
    (the forkserver and the worker processes), from /proc; None elsewhere."""
    proc = Path("/proc")
    if not (proc / str(pid) / "stat").is_file():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    family, grown = {pid}, True
    while grown:
        grown = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                grown = True
    return used.get(pid, 0.0), sum(used.get(p, 0.0) for p in family - {pid})


def _batch(url: str, key: str, smiles: list[str], pid: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        before = _cpu_seconds(pid)
        start = time.perf_counter()
        cold = http.post("/predict", json={"smiles": smiles})
        cold_s = time.perf_counter() - start
        after = _cpu_seconds(pid)
        start = time.perf_counter()
        warm = http.post("/predict", json={"smiles": smiles})
        warm_s = time.perf_counter() - start
    ok = cold.status_code == warm.status_code == 200
    errors = sum(bool(r["error"]) for r in cold.json()["results"]) if ok else None
    cpu = None
    if before is not None and after is not None:
        cpu = {"server_s": after[0] - before[0], "workers_s": after[1] - before[1]}
    return {
        "molecules": len(smiles),
        "cold_s": cold_s,
        "repeat_s": warm_s,
        "ok": ok,
        "row_errors": errors,
        "cold_cpu": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load duration")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--batch", type=int, default=1000, help="molecules in the batch request")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--tool",
        choices=("httpx", "wrk"),
        default="httpx",
        help="load generator: asyncio+httpx clients, or wrk (Debian's, in C)",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="default",
        help="the model served: what `qemlflow run` trains with no features and no model "
        "in the config (default), or an ECFP4-only LightGBM of 300 trees (ecfp)",
    )
    parser.add_argument(
        "--features",
        type=json.loads,
        default=None,
        help='a features spec in JSON instead of the model\'s (e.g. \'[{"type": "ecfp", '
        '"counts": true}, {"type": "physchem"}]\'), to measure a candidate default',
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="qemlflow-bench-serve-") as tmp:
        folder = Path(tmp) / "store"
        key, esol, unseen = _prepare(folder, args.model, args.features)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = _start_server(folder, port)
        try:
            _wait_until_up(url, server)
            if args.tool == "wrk":
                _load_wrk(url, key, esol, args.clients, args.warmup, Path(tmp))  # warm-up
                before = _cpu_seconds(server.pid)
                load = _load_wrk(url, key, esol, args.clients, args.seconds, Path(tmp))
            else:
                before = None  # the warm-up is not apart from the load: not measured
                load = asyncio.run(_load(url, key, esol, args.clients, args.seconds, args.warmup))
            after = _cpu_seconds(server.pid)
            # The server process's CPU per answered request (wrk): what a shared machine
            # distorts least (the latencies are the load average's as much as the server's).
            load["server_cpu_ms_per_request"] = (
                None
                if before is None or after is None or not load["requests"]
                else (after[0] - before[0]) * 1000 / load["requests"]
            )
            batch = _batch(url, key, unseen[: args.batch], server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    report = {
        "cpus": os.cpu_count(),
        "tool": args.tool,
        "model": args.model,
        "features": args.features,
        "load": load,
        "batch": batch,
        "targets": {
            "p99_ms": TARGET_P99_MS,
            "batch_s": TARGET_BATCH_S,
            "p99_met": load["p99_ms"] <= TARGET_P99_MS and load["errors"] == 0,
            "batch_met": batch["ok"] and batch["cold_s"] <= TARGET_BATCH_S,
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = [
        (f"single molecule, {load['clients']} clients", ""),
        ("  requests / errors", f"{load['requests']} / {load['errors']}"),
        ("  throughput", f"{load['throughput_rps']:.0f} req/s"),
        ("  server CPU per request", f"{load['server_cpu_ms_per_request'] or float('nan'):.3f} ms"),
        (
            "  p50 / p95 / p99",
            f"{load['p50_ms']:.1f} / {load['p95_ms']:.1f} / "
            f"{load['p99_ms']:.1f} ms (target p99 <= {TARGET_P99_MS:.0f})",
        ),
        (
            f"batch of {batch['molecules']} unseen molecules",
            f"{batch['cold_s']:.3f} s "
            f"(target <= {TARGET_BATCH_S:.0f}); repeated: {batch['repeat_s']:.3f} s",
        ),
    ]
    if batch["cold_cpu"] is not None:
        cpu = batch["cold_cpu"]
        rows.append(
            ("  CPU: server / workers", f"{cpu['server_s']:.2f} / {cpu['workers_s']:.2f} s")
        )
    width = max(len(name) for name, _ in rows)
    model = args.model + (f", features {json.dumps(args.features)}" if args.features else "")
    print(
        f"qemlflow serve ({model} model) on loopback, {report['cpus']} CPUs, "
        f"{args.seconds:.0f} s of load"
    )
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
