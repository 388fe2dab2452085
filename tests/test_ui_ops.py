"""The operations pages of ``qemlflow ui`` (screens, monitor, predict), alert webhooks and
the ``store_smiles`` policy switch, on a real store.

One ESOL model (trained on 200 molecules, policy ``store_smiles: true``) is registered
under three names: ``ops`` is served by a real uvicorn service that receives a drifted
stream; ``hook`` gets drifted monitoring rows written straight into the store (cheap) for
the webhook tests; ``idle`` is never served.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar
from xml.etree import ElementTree

import pandas as pd
import pytest
from tests.extras import require_extra

# Before the imports that need the extras: without them the module is skipped (or,
# under CI=true, fails) instead of erroring at collection.
require_extra("uvicorn")
require_extra("jinja2")
require_extra("httpx")
require_extra("fastapi")

import httpx  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from tests.test_monitoring import _INORGANIC, _peptides  # noqa: E402
from tests.test_serve import CONFIG, serving  # noqa: E402

import qemlflow as qm  # noqa: E402
from qemlflow import registry  # noqa: E402
from qemlflow.store import Store  # noqa: E402


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _hook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with _hook_server() as hook:
        yield hook


@dataclass
class Env:
    store: Store
    key: str
    folder: Path
    training: list[str]
    library: list[str]
    far: list[str]
    policy_hook: list[dict[str, Any]]
    """What the webhook named in the model's policy received."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Iterator[Env]:
    hook = contextlib.ExitStack()
    policy_url, policy_received = hook.enter_context(_hook_server())
    folder = tmp_path_factory.mktemp("ui-ops")
    csv = folder / "train.csv"
    esol_frame.head(200).to_csv(csv, index=False)
    store = Store.open(folder / "store")
    config = {
        **CONFIG,
        "seed": 0,
        "dataset": {**CONFIG["dataset"], "source": str(csv)},
        "promotion": {
            "monitoring": {"min_molecules": 40, "store_smiles": True, "webhook": policy_url}
        },
    }
    run_id = qm.run(config, store=store).run_id
    assert run_id is not None
    for name in ("ops", "hook", "idle"):
        registry.register(store, run_id, name)
    _, key = store.create_api_key("ui-ops-tests")
    far = _peptides(100) + _INORGANIC * 10
    random.Random(2).shuffle(far)
    library = [str(s) for s in esol_frame.smiles.iloc[200:260]]
    training = [str(s) for s in esol_frame.smiles[:200]]
    with hook:
        yield Env(store, key, folder, training, library, far, policy_received)
    store.close()


def _client(store: Store) -> TestClient:
    from qemlflow.ui.app import create_app

    return TestClient(create_app(store))


def _rows(html: str, pattern: str) -> list[str]:
    return re.findall(pattern, html, flags=re.S)


# -- monitor --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drifted(env: Env) -> Env:
    """``ops@1`` served for real, sent the far molecules in 1-second windows."""
    with (
        serving(env.store, "ops@1", poll_seconds=0, monitor_seconds=1) as (url, _),
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {env.key}"}, timeout=120
        ) as client,
    ):
        for start in range(0, len(env.far), 50):
            answer = client.post("/predict", json={"smiles": env.far[start : start + 50]})
            assert answer.status_code == 200, answer.text
    return env


def test_monitor_pages_show_the_state_alerts_and_charts(drifted: Env) -> None:
    store = drifted.store
    client = _client(store)
    overview = client.get("/monitor")
    assert overview.status_code == 200
    assert 'id="monitor-table"' in overview.text
    states = dict(_rows(overview.text, r'<tr data-model="(\w+)".*?data-state="(\w+)"'))
    assert states == {"ops": "alert", "hook": "quiet", "idle": "quiet"}

    page = client.get("/monitor/ops@1", params={"window": "60m"})
    assert page.status_code == 200
    html = page.text
    assert 'data-page="monitor"' in html and 'id="monitor-stats"' in html
    assert re.search(r'<div class="alert" data-alert="out_of_domain">', html)
    # the page says what `qemlflow monitor` says, statistic for statistic
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qemlflow",
            "monitor",
            "ops@1",
            "--store",
            str(store.root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    for alert in report["alerts"]:
        assert f'data-alert="{alert}"' in html
    molecules = re.search(r'data-stat="molecules"><span class="value">([\d,]+)<', html)
    assert molecules and int(molecules[1].replace(",", "")) == report["molecules"] == len(
        drifted.far
    )
    ood = re.search(r'data-stat="ood_rate"><span class="value">([\d.]+)<', html)
    assert ood and float(ood[1]) == pytest.approx(report["ood_rate"], abs=1e-3)
    # charts: three series over time, and two histograms against the training reference
    assert len(_rows(html, r'<svg[^>]*class="plot series"')) == 3
    assert len(_rows(html, r'<svg[^>]*class="plot histogram predictions"')) == 1
    assert len(_rows(html, r'<svg[^>]*class="plot histogram similarity"')) == 1
    for svg in _rows(html, r'(<svg[^>]*class="plot .*?</svg>)'):
        ElementTree.fromstring(svg)  # well-formed: labels escaped
    # store_smiles is on in this model's policy: the out-of-domain molecules are shown
    shown = _rows(html, r'<figure class="molecule" data-smiles="([^"]*)">')
    assert shown and set(shown) <= set(drifted.far)
    assert html.count('class="depiction"') >= len(shown)
    # a page view records nothing (the service and `qemlflow monitor` do)
    after_cli = len(store.audit_events(action="monitor.alert"))
    for path in ("/monitor/ops@1", "/monitor", "/monitor/ops?window=5m"):
        assert client.get(path).status_code == 200
    assert len(store.audit_events(action="monitor.alert")) == after_cli


def test_the_service_posts_its_alerts_to_the_policy_webhook(drifted: Env) -> None:
    payloads = [p for p in drifted.policy_hook if p["model"] == "ops"]
    assert payloads, "the service recorded an alert but did not post it"
    recorded = [
        e for e in drifted.store.audit_events(action="monitor.alert") if e.details["name"] == "ops"
    ]
    # one POST per newly recorded alert set, each naming what the audit trail recorded
    posted = sorted(a for p in payloads for a in p["recorded"])
    assert posted == sorted(e.details["alert"] for e in recorded)
    assert all(p["version"] == 1 and p["alerts"] for p in payloads)
    assert "out_of_domain" in posted


def test_store_smiles_keeps_at_most_the_far_molecules_of_each_window(drifted: Env) -> None:
    rows = drifted.store.monitoring.minutes("ops", 1, "2000-01-01T00:00:00Z")
    kept = [s for row in rows for s in row["ood_smiles"]]
    outside = sum(int(row["out_of_domain"]) for row in rows)
    assert all(len(row["ood_smiles"]) <= min(100, row["out_of_domain"]) for row in rows)
    assert kept and set(kept) <= set(drifted.far)
    assert len(kept) == min(outside, sum(min(100, int(r["out_of_domain"])) for r in rows))


def test_monitor_page_of_an_unserved_model_says_so(env: Env) -> None:
    client = _client(env.store)
    page = client.get("/monitor/idle")
    assert page.status_code == 200
    assert '<p class="empty">No service has loaded idle@1' in page.text
    assert client.get("/monitor/nosuch").status_code in (400, 404)
    assert client.get("/monitor/ops", params={"window": "soon"}).status_code == 400


def test_empty_store_pages_say_what_to_run(tmp_path: Path) -> None:
    with Store.open(tmp_path / "empty") as store:
        client = _client(store)
        for path, page in (
            ("/screens", "screens"),
            ("/monitor", "monitor"),
            ("/predict", "predict"),
        ):
            answer = client.get(path)
            assert answer.status_code == 200
            assert f'data-page="{page}"' in answer.text
            assert re.search(r'<p class="empty">[^<]*<code>qemlflow ', answer.text), path


# -- webhook --------------------------------------------------------------------------


def _drift_rows(store: Store, name: str) -> None:
    """A reference and one window of far molecules, written as a service writes them."""
    reference = store.monitoring.reference("ops", 1)
    if reference is None:
        from qemlflow.serve.service import ServedModel

        served = ServedModel.load(store, store.get_model_version("ops", 1))
        assert served.reference is not None
        reference = served.reference.to_dict()
    store.monitoring.set_reference(name, 1, reference)
    minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:00Z")
    bins = len(reference["prediction_counts"])
    store.monitoring.add_minute(
        name,
        1,
        minute,
        60,
        {
            "requests": 5,
            "molecules": 500,
            "errors": 0,
            "out_of_domain": 480,
            "latency_counts": [5] + [0] * 10,
            "prediction_counts": [500] + [0] * (bins - 1),
            "similarity_counts": [480] + [0] * 18 + [20],
        },
    )


def _monitor(store: Store, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", "monitor", *args, "--store", str(store.root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_monitor_posts_new_alerts_to_the_webhook(
    env: Env, hook_server: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = hook_server
    _drift_rows(env.store, "hook")
    done = _monitor(env.store, "hook@1", "--webhook", url, "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert len(received) == 1
    payload = received[0]
    assert payload["model"] == "hook" and payload["version"] == 1
    assert payload["alerts"] == report["alerts"] and "out_of_domain" in payload["alerts"]
    assert payload["recorded"] == report["recorded"]
    assert payload["window"] == {"start": report["window_start"], "seconds": 3600}
    assert payload["statistics"]["molecules"] == 500
    assert payload["statistics"]["ood_rate"] == pytest.approx(0.96)
    # the same window again: nothing new is recorded, so nothing is sent
    assert _monitor(env.store, "hook@1", "--webhook", url).returncode == 3
    assert len(received) == 1
    # a webhook that is down: a warning on stderr, and the exit code still says "alert"
    dead = f"http://127.0.0.1:{_free_port()}/alerts"
    failed = _monitor(env.store, "hook@1", "--window", "30m", "--webhook", dead)
    assert failed.returncode == 3
    assert "could not deliver the alert" in failed.stderr and dead in failed.stderr
    refused = _monitor(env.store, "hook@1", "--webhook", "ftp://example.org/x")
    assert refused.returncode == 2 and "not an http(s) URL" in refused.stderr


def test_policy_checks_the_webhook_and_store_smiles() -> None:
    policy = registry.validate_policy(
        {"monitoring": {"webhook": "https://hooks.example.org/q", "store_smiles": True}}, "p.yaml"
    )
    assert policy.monitoring is not None and policy.monitoring.store_smiles is True
    with pytest.raises(qm.errors.ConfigError, match="monitoring"):
        registry.validate_policy({"monitoring": {"webhook": "file:///etc/passwd"}}, "p.yaml")


# -- predict --------------------------------------------------------------------------


def test_predict_page_scores_with_intervals_domain_and_neighbours(env: Env) -> None:
    client = _client(env.store)
    form = client.get("/predict")
    assert form.status_code == 200
    options = _rows(form.text, r'<option value="([^"]+)"')
    assert {"ops@1", "hook@1", "idle@1"} <= set(options)
    valid, far, invalid = env.library[0], _peptides(1, seed=5)[0], "C1CC(nosmiles"
    trained = env.training[5]
    answer = client.post(
        "/predict", data={"model": "ops@1", "smiles": f"{valid}\n{invalid}\n\n{far}\n{trained}\n"}
    )
    assert answer.status_code == 200, answer.text
    html = answer.text
    rows = _rows(html, r'<tr class="(prediction|invalid)" data-smiles="([^"]*)"(.*?)</tr>')
    assert [(kind, smiles) for kind, smiles, _ in rows] == [
        ("prediction", valid),
        ("invalid", invalid),
        ("prediction", far),
        ("prediction", trained),
    ]
    expected = registry.load_version(env.store, env.store.get_model_version("ops", 1)).predict(
        [valid, far, trained]
    )
    for (_, _, body), (_, want) in zip(
        [r for r in rows if r[0] == "prediction"], expected.iterrows(), strict=True
    ):
        value = re.search(r'<td class="value num"><div>([-\d.e]+)<', body)
        assert value and float(value[1]) == pytest.approx(want["prediction"], abs=1e-3)
        interval = re.search(r'<td class="interval"><div>\[([-\d.e]+), ([-\d.e]+)\]', body)
        assert interval and float(interval[1]) == pytest.approx(want["lower"], abs=1e-3)
        assert float(interval[2]) == pytest.approx(want["upper"], abs=1e-3)
        assert body.count('class="depiction"') == 4  # the molecule and 3 neighbours
        neighbours = [
            float(s) for s in _rows(body, r'class="neighbour" data-similarity="([\d.]+)"')
        ]
        assert len(neighbours) == 3 and neighbours == sorted(neighbours, reverse=True)
        similarity = re.search(r"similarity ([\d.]+)<", body)
        assert similarity and float(similarity[1]) == pytest.approx(neighbours[0], abs=1e-3)
    invalid_body = rows[1][2]
    assert 'class="reason"' in invalid_body and "pars" in invalid_body.lower()
    far_body, trained_body = rows[2][2], rows[3][2]
    assert 'data-in-domain="false"' in rows[2][2] or "out of domain" in far_body
    assert "out of domain" in far_body
    assert "in domain" in trained_body and 'data-similarity="1.000"' in trained_body
    # predicting changes nothing in the store
    head = env.store.audit_head()["seq"]
    client.post("/predict", data={"model": "ops@1", "smiles": valid})
    assert env.store.audit_head()["seq"] == head


def test_predict_page_refuses_too_many_or_no_smiles(env: Env) -> None:
    client = _client(env.store)
    many = client.post("/predict", data={"model": "ops@1", "smiles": "C\n" * 101})
    assert many.status_code == 400 and "at most 100" in many.text
    assert 'id="predict-results"' not in many.text
    empty = client.post("/predict", data={"model": "ops@1", "smiles": "  \n"})
    assert empty.status_code == 400 and 'id="predict-error"' in empty.text
    unknown = client.post("/predict", data={"model": "nosuch@1", "smiles": "CCO"})
    assert unknown.status_code in (400, 404)


# -- screens --------------------------------------------------------------------------


def test_screens_show_completed_screens_with_top_hits(env: Env, tmp_path: Path) -> None:
    from qemlflow.screen import screen
    from qemlflow.screen.running import running_screens

    library = tmp_path / "library.smi"
    library.write_text("".join(f"{s}\n" for s in [*env.library, "C1CC(nosmiles"]))
    seen: list[tuple[int, int]] = []

    class Watch:
        def start(self, total: int, unit: str) -> None:
            pass

        def update(self, position: int, rows: int) -> None:
            # while the screen runs, another process would see it in the store
            seen.extend((s.pid, s.rows) for s in running_screens(env.store.root))

    out = tmp_path / "scores.parquet"
    result = screen("ops@1", library, out, store=env.store, chunk_size=16, progress=Watch())
    assert seen and all(pid == os.getpid() for pid, _ in seen)
    assert running_screens(env.store.root) == []  # gone when the screen ends
    assert result.audit_seq is not None

    client = _client(env.store)
    listing = client.get("/screens")
    assert listing.status_code == 200
    row = re.search(
        rf'<tr class="screen" data-state="completed" data-seq="{result.audit_seq}">(.*?)</tr>',
        listing.text,
        re.S,
    )
    assert row and "ops" in row[1] and str(library) in row[1]
    assert f"{len(env.library) + 1}" in row[1]

    page = client.get(f"/screens/{result.audit_seq}")
    assert page.status_code == 200
    hits = _rows(page.text, r'<tr class="hit" data-row="(\d+)">(.*?)</tr>')
    assert len(hits) == 20
    table = pq.read_table(out).to_pandas()
    best = table.dropna(subset=["prediction"]).sort_values(
        "prediction", ascending=False, kind="stable"
    )
    assert [int(r) for r, _ in hits] == best.index[:20].tolist()
    for _, body in hits:
        assert 'class="depiction"' in body
    score = re.search(r'<td class="num score">([-\d.e]+)<', hits[0][1])
    assert score and float(score[1]) == pytest.approx(best["prediction"].iloc[0], abs=1e-3)
    assert client.get("/screens/999999").status_code == 404


def test_running_screens_show_their_progress(env: Env) -> None:
    from qemlflow.screen.running import ProgressFile
    from qemlflow.store.processes import hostname

    # a killed screen's file: its process is gone, so it is not shown, and the next
    # screen of this host removes it
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = env.store.root / "screens" / "0123456789abcdef.json"
    dead.parent.mkdir(exist_ok=True)
    record = {"host": hostname(), "pid": gone.pid, "pid_started": None, "started_at": 0}
    record |= {"updated_at": 0, "model": "killed@1", "input": "/data/killed.smi"}
    record |= {"output": "o", "position": 1, "total": 2, "unit": "bytes", "rows": 1}
    dead.write_text(json.dumps(record))
    client = _client(env.store)
    assert "killed@1" not in client.get("/screens").text
    with ProgressFile(env.store.root, "ops@1", "/data/big.smi", "/data/out.parquet") as progress:
        assert not dead.exists()
        progress.start(1000, "bytes")
        time.sleep(1.05)  # the file is rewritten at most once a second
        progress.update(250, 40)
        page = client.get("/screens").text
        row = re.search(r'<tr class="screen" data-state="running">(.*?)</tr>', page, re.S)
        assert row and "/data/big.smi" in row[1]
        assert re.search(r'<progress max="1000" value="250"', row[1])
    page = client.get("/screens").text
    assert 'data-state="running"' not in page
