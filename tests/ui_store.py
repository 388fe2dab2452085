"""A store filled by the real CLI, and `qemlflow ui` / `qemlflow serve` as real processes.

Used by the browser tests (tests/test_ui_browser.py). Everything goes through
``python -m qemlflow`` subprocesses with an environment of their own (a store, a home and
an identity folder under one folder), as a user would type it:

- two runs of the 240-molecule ESOL sample that differ in model and split (so that
  comparing them shows a config diff), the first with the sample's invalid and empty
  SMILES rejected;
- the first run registered as ``esol`` and promoted to ``production``;
- a completed ``qemlflow screen`` of 120 unseen ESOL molecules with ``esol@production``;
- an API key for the prediction service.

``python -m tests.ui_store FOLDER`` builds one and prints how to browse it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml
from tests.bundled import bundled_csv

MODEL = "esol"
RUNS: dict[str, dict[str, Any]] = {
    "esol-forest": {
        "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
        "split": {"method": "random"},
    },
    "esol-knn-scaffold": {
        "model": {"estimator": "knn", "params": {"n_neighbors": 5}},
        "split": {"method": "scaffold"},
    },
}


@dataclass(frozen=True)
class UiStore:
    """What the store holds, and the environment every command on it runs with."""

    folder: Path
    store: Path
    env: dict[str, str]
    run_ids: dict[str, str]  # run name -> run id
    api_key: str
    screen_output: Path


def free_port() -> int:
    """A TCP port nobody listens on now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command_env(folder: Path) -> dict[str, str]:
    """The environment of every command: a home and an identity folder of the store's own,
    nothing (passphrase, service key, database URL) inherited from the caller's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QEMLFLOW_") and k not in {"PYTEST_CURRENT_TEST"}
    }
    for name in ("home", "identity"):
        (folder / name).mkdir(parents=True, exist_ok=True, mode=0o700)
    env["QEMLFLOW_HOME"] = str(folder / "home")
    env["QEMLFLOW_IDENTITY_DIR"] = str(folder / "identity")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def qemlflow(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run ``qemlflow ARGS`` to completion; return its stdout (fail loudly otherwise)."""
    done = subprocess.run(
        [sys.executable, "-m", "qemlflow", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"qemlflow {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def _sample(folder: Path) -> Path:
    """The ``small_esol_csv`` fixture's file: 240 ESOL molecules plus an invalid and an
    empty SMILES (which the runs reject, with their reasons)."""
    frame = pd.read_csv(bundled_csv("esol")).head(240)
    bad = pd.DataFrame({"smiles": ["C1CC(not smiles", ""], "logp": [-1.0, -2.0]})
    frame = pd.concat([frame.iloc[:100], bad, frame.iloc[100:]], ignore_index=True)
    path = folder / "small_esol.csv"
    frame.to_csv(path, index=False)
    return path


def build_store(folder: Path) -> UiStore:
    """Fill a new store under ``folder`` with real ``qemlflow`` commands (about 30 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = command_env(folder)
    store = folder / "store"
    at = ("--store", str(store))
    csv = _sample(folder)
    run_ids: dict[str, str] = {}
    for name, changes in RUNS.items():
        config = {
            "name": name,
            "seed": 0,
            "dataset": {"source": str(csv), "smiles_column": "smiles", "target_columns": ["logp"]},
            "features": [{"type": "ecfp"}],
            "evaluation": {"n_bootstrap": 20, "plots": False},
            **changes,
        }
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        qemlflow(env, folder, "run", str(path), "--out", str(folder / name), *at)
        listed = json.loads(qemlflow(env, folder, "runs", "list", "--json", *at))
        run_ids[name] = next(r["id"] for r in listed if r["name"] == name)
    qemlflow(env, folder, "models", "register", run_ids["esol-forest"], "--name", MODEL, *at)
    qemlflow(env, folder, "models", "promote", MODEL, "1", "--to", "production", *at)
    library = folder / "library.smi"
    unseen = pd.read_csv(bundled_csv("esol")).smiles.iloc[300:420]
    library.write_text("".join(f"{s}\n" for s in unseen), encoding="utf-8")
    screen_output = folder / "screened.csv"
    qemlflow(
        env, folder, "screen", f"{MODEL}@production", str(library), "-o", str(screen_output), *at
    )
    api_key = qemlflow(env, folder, "keys", "create", "ui-tests", *at).strip()
    return UiStore(folder, store, env, run_ids, api_key, screen_output)


@contextmanager
def running(
    env: dict[str, str], cwd: Path, args: Sequence[str], ready: str, headers: dict[str, str]
) -> Iterator[str]:
    """Start ``qemlflow ARGS --port P`` (a server), wait until GET ``ready`` answers 200,
    yield its URL; stop it with SIGINT (Ctrl+C) and wait for it to exit."""
    port = free_port()
    log = (cwd / f"{args[0]}-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "qemlflow", *args, "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"qemlflow {args[0]} exited {process.returncode}:\n"
                    + Path(log.name).read_text()
                )
            try:
                if httpx.get(url + ready, headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"qemlflow {args[0]} did not answer on {url}{ready}")
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@contextmanager
def ui_server(built: UiStore) -> Iterator[str]:
    """``qemlflow ui --port P --store S`` (read-only, the default) until the block ends."""
    with running(built.env, built.folder, ["ui", "--store", str(built.store)], "/", {}) as url:
        yield url


@contextmanager
def prediction_service(built: UiStore, window_seconds: int = 1) -> Iterator[str]:
    """``qemlflow serve esol@production`` aggregating its traffic in ``window_seconds``
    windows; stopping it (at the end of the block) writes the open window to the store."""
    env = {**built.env, "QEMLFLOW_MONITOR_WINDOW_SECONDS": str(window_seconds)}
    args = ["serve", f"{MODEL}@production", "--poll", "0", "--store", str(built.store)]
    with running(env, built.folder, args, "/readyz", bearer(built.api_key)) as url:
        yield url


def bearer(key: str) -> dict[str, str]:
    """The header the prediction service wants."""
    return {"Authorization": f"Bearer {key}"}


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "ui-demo").resolve()
    made = build_store(target)
    print(json.dumps(made.run_ids, indent=2))
    identity = made.env["QEMLFLOW_IDENTITY_DIR"]
    print(f"QEMLFLOW_IDENTITY_DIR={identity} qemlflow ui --store {made.store}")
