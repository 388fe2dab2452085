"""Bounded uploads: a gzip or Parquet bomb sent to a real server process gets 413, and the
server's memory barely moves (psutil on the server process, sampled during the request).

The server runs in its own process (uvicorn on 127.0.0.1) so that its RSS is its own.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
from tests.extras import require_extra

# Before the imports that need the extras: without them the module is skipped (or,
# under CI=true, fails) instead of erroring at collection.
require_extra("fastapi")
require_extra("uvicorn")
require_extra("httpx")
psutil = require_extra("psutil")
pa = require_extra("pyarrow")
pq = require_extra("pyarrow.parquet")

import httpx  # noqa: E402

import qemlflow as qm  # noqa: E402
from qemlflow import registry  # noqa: E402
from qemlflow.serve.service import smiles_from_table  # noqa: E402
from qemlflow.store import Store  # noqa: E402

GB = 10**9
MIB = 1 << 20
CONFIG: dict[str, Any] = {
    "name": "uploads",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp"}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 10, "plots": False},
}
SERVER = """
import sys, uvicorn
from qemlflow.serve.app import ServeSettings, build_app
from qemlflow.store import Store
store = Store.open(sys.argv[1])
settings = ServeSettings(spec="up@1", port=int(sys.argv[2]), poll_seconds=0)
uvicorn.run(build_app(settings, store), host="127.0.0.1", port=settings.port, log_level="warning")
"""


@dataclass
class Server:
    url: str
    key: str
    process: psutil.Process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("uploads")
    esol_frame.head(120).to_csv(folder / "train.csv", index=False)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "source": str(folder / "train.csv")}}
    with Store.open(folder / "store") as store:
        run_id = qm.run(config, store=store).run_id
        assert run_id is not None
        registry.register(store, run_id, "up")
        _, key = store.create_api_key("uploads")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(folder / "store"), str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert child.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{url}/readyz", headers=_auth(key)).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    try:
        yield Server(url, key, psutil.Process(child.pid))
    finally:
        child.terminate()
        child.wait(timeout=30)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _gzip_bomb(decompressed: int) -> bytes:
    """A header, then gzip members of 16 MiB of 'C' lines: ``decompressed`` bytes at ~1000:1."""
    block = b"C\n" * (8 * MIB)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    member = packer.compress(block) + packer.flush()
    return zlib.compress(b"smiles\n", wbits=31) + member * -(-decompressed // len(block))


def _parquet_bomb(rows: int, value_bytes: int) -> bytes:
    """One value of ``value_bytes`` repeated ``rows`` times: dictionary-encoded, tiny."""
    table = pa.table({"smiles": pa.array(["C" * value_bytes] * 1).take([0] * rows)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", use_dictionary=True)
    return sink.getvalue()


def _peak_rss_while(process: Any, request: Any) -> tuple[Any, int, int]:
    """Run ``request()`` while sampling the process's RSS; (response, before, peak)."""
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        response = request()
    finally:
        done.set()
        sampler.join()
    return response, before, max(peak[0], process.memory_info().rss)


def test_upload_bombs_get_413_and_memory_stays_flat(server: Server) -> None:
    headers = _auth(server.key)
    # Warm up: the first upload loads the reading code in the server.
    warm = httpx.post(
        f"{server.url}/predict",
        content=b"smiles\nCCO\n",
        headers={**headers, "content-type": "text/csv"},
    )
    assert warm.status_code == 200 and len(warm.json()["results"]) == 1

    gz = _gzip_bomb(GB)
    assert len(gz) < MIB  # under the body limit: only the decompressed size can stop it
    response, before, peak = _peak_rss_while(
        server.process,
        lambda: httpx.post(
            f"{server.url}/predict",
            files={"file": ("bomb.csv.gz", gz, "application/gzip")},
            headers=headers,
            timeout=120,
        ),
    )
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "\n" not in detail and ("max_upload_bytes" in detail or "max_batch" in detail)
    assert peak - before < 200 * MIB, f"RSS grew by {(peak - before) / MIB:.0f} MiB"

    # Sent as a text/csv body too (gzip is recognized by its first bytes).
    response, before, peak = _peak_rss_while(
        server.process,
        lambda: httpx.post(
            f"{server.url}/predict",
            content=gz,
            headers={**headers, "content-type": "text/csv"},
            timeout=120,
        ),
    )
    assert response.status_code == 413, response.text
    assert peak - before < 200 * MIB

    parquet = _parquet_bomb(rows=10_000, value_bytes=100_000)  # 1 GB once decoded
    assert len(parquet) < MIB
    response, before, peak = _peak_rss_while(
        server.process,
        lambda: httpx.post(
            f"{server.url}/predict",
            files={"file": ("bomb.parquet", parquet, "application/octet-stream")},
            headers=headers,
            timeout=120,
        ),
    )
    assert response.status_code == 413, response.text
    assert "max_upload_bytes" in response.json()["detail"]
    assert peak - before < 200 * MIB, f"RSS grew by {(peak - before) / MIB:.0f} MiB"

    many = _parquet_bomb(rows=2_000_000, value_bytes=10)  # over max_batch by its footer
    response = httpx.post(
        f"{server.url}/predict",
        files={"file": ("many.parquet", many, "application/octet-stream")},
        headers=headers,
    )
    assert response.status_code == 413 and "max_batch" in response.json()["detail"]

    # The server is still there and answers correctly.
    ok = httpx.post(f"{server.url}/predict", json={"smiles": ["CCO", "C1CC"]}, headers=headers)
    results = ok.json()["results"]
    assert ok.status_code == 200 and results[0]["error"] is None and results[1]["error"]


def test_rows_and_fields_over_the_limits(server: Server) -> None:
    headers = {**_auth(server.key), "content-type": "text/csv"}
    rows = b"smiles\n" + b"CCO\n" * 10_001  # one more than max_batch
    response = httpx.post(f"{server.url}/predict", content=rows, headers=headers)
    assert response.status_code == 413 and "10,000" in response.json()["detail"]
    # A row over max_field_bytes (it fits the body only gzipped), or with more fields
    # than the header: an error in place, the other rows scored.
    long_row = zlib.compress(
        b"smiles,y\nCCO,1\n" + b"C" * (MIB + 10) + b",2\nCCN,3,extra\nCCC,4\n", wbits=31
    )
    extra = b"smiles,y\nCCO,1\nCCCCCCCCCCCCCCCCCCCCCC,2\nCCN,3,extra\nCCC,4\n"
    for content in (long_row, extra):
        response = httpx.post(f"{server.url}/predict", content=content, headers=headers)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["error"] is None for r in results] == [True, content is extra, False, True]
        assert results[0]["smiles"] == "CCO" and results[3]["smiles"] == "CCC"
    bad = httpx.post(f"{server.url}/predict", content=b"\x89PNG\x00\x00", headers=headers)
    assert bad.status_code == 422 and "binary" in bad.json()["detail"]


def test_smiles_from_table_streams_within_its_limits() -> None:
    from qemlflow.errors import InputTooLargeError

    with pytest.raises(InputTooLargeError) as err:
        # 8x the limit: the read stops at the limit (every row up to it is parsed, so a
        # small limit keeps this quick; the service's own limit is checked above).
        smiles_from_table(_gzip_bomb(8 * MIB), "x.csv.gz", None, max_bytes=MIB)
    assert "1,048,576" in str(err.value) and "max_upload_bytes" in str(err.value)
    with pytest.raises(InputTooLargeError):
        smiles_from_table(b"smiles\n" + b"C\n" * 11, "x.csv", None, max_rows=10)
    assert smiles_from_table(b"smiles\n" + b"C\n" * 10, "x.csv", None, max_rows=10) == ["C"] * 10
