"""``qemlflow serve``: a real uvicorn server on loopback, a real store, real runs.

The runs are small (ECFP4 bits, a 30-tree random forest on 240 ESOL molecules) and made
once for the module; each test that moves an alias works on an alias of its own.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.extras import require_extra

# Before the imports that need the serve extra: without it, the module is skipped (or,
# under CI=true, fails) instead of erroring at collection.
require_extra("fastapi")
require_extra("httpx")
uvicorn = require_extra("uvicorn")

import httpx  # noqa: E402

import qemlflow as qm  # noqa: E402
from qemlflow import registry  # noqa: E402
from qemlflow.serve.app import ServeSettings, build_app  # noqa: E402
from qemlflow.serve.client import Client, ServiceError  # noqa: E402
from qemlflow.serve.protocol import OneSendHttpToolsProtocol  # noqa: E402
from qemlflow.store import Store  # noqa: E402

NAME = "esol"
CONFIG: dict[str, Any] = {
    "name": "served",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp"}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
    "evaluation": {"n_bootstrap": 20, "plots": False},
}


@dataclass
class Trained:
    store: Store
    key: str
    csv: Path
    smiles: list[str]
    versions: dict[int, registry.ModelVersion]


def _small_esol(folder: Path, esol_frame: pd.DataFrame) -> Path:
    """The ``small_esol_csv`` fixture's file (240 molecules + an invalid and an empty one)."""
    frame = esol_frame.head(240).copy()
    bad = pd.DataFrame({"smiles": ["C1CC(not smiles", ""], "logp": [-1.0, -2.0]})
    frame = pd.concat([frame.iloc[:100], bad, frame.iloc[100:]], ignore_index=True)
    path = folder / "small_esol.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame
) -> Iterator[Trained]:
    """Versions 1-3 of ``esol`` (seeds 0, 1, 2), v1 promoted to production; an API key."""
    folder = tmp_path_factory.mktemp("serve")
    csv = _small_esol(folder, esol_frame)
    store = Store.open(folder / "store")
    versions = {}
    for seed in (0, 1, 2):
        config = {**CONFIG, "seed": seed, "dataset": {**CONFIG["dataset"], "source": str(csv)}}
        run_id = qm.run(config, store=store).run_id
        assert run_id is not None
        mv = registry.register(store, run_id, NAME)
        versions[mv.version] = mv
    registry.promote(store, NAME, 1, to="production")
    _, key = store.create_api_key("tests")
    smiles = [str(s) if s == s else "" for s in pd.read_csv(csv, keep_default_na=False).smiles]
    yield Trained(store, key, csv, smiles, versions)
    store.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(store: Store, spec: str = NAME, **options: Any) -> Iterator[tuple[str, Any]]:
    """Run the service in a uvicorn server on a background thread; yield (url, app)."""
    settings = ServeSettings(spec=spec, port=_free_port(), **options)
    app = build_app(settings, store)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        http=OneSendHttpToolsProtocol,  # the protocol run_server serves with
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(trained: Trained) -> Iterator[tuple[str, Any]]:
    with serving(trained.store, f"{NAME}@production", poll_seconds=0) as running:
        yield running


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _same(expected: float, got: float | None) -> bool:
    return got is None if math.isnan(expected) else got == expected


def test_predictions_equal_the_predictor(trained: Trained, server: tuple[str, Any]) -> None:
    url, _ = server
    expected = registry.load_version(trained.store, trained.versions[1]).predict(trained.smiles)
    with Client(url, trained.key) as client:
        results = client.predict(trained.smiles)
        uploaded = client.predict_csv(trained.csv)
    assert uploaded == results
    assert len(results) == len(expected) == 242
    for row, want in zip(results, expected.itertuples(index=False), strict=True):
        assert row["smiles"] == want.smiles
        assert (row["standardized_smiles"] or "") == want.standardized_smiles
        for column in ("prediction", "lower", "upper"):
            assert _same(getattr(want, column), row[column]), (column, row)
        assert (row["error"] or "") == want.error
        assert (row["model"], row["model_version"]) == (NAME, 1)
        assert row["domain"]["threshold"] == 0.3
    invalid = [r for r in results if r["error"]]
    # methanol and iodomethane: under the chemistry policy's size floor (3 heavy atoms)
    assert [r["smiles"] for r in invalid] == ["C1CC(not smiles", "", "CO", "CI"]
    assert all(r["error"].startswith("parent_too_small") for r in invalid[2:])
    assert all(r["prediction"] is None and not r["domain"]["in_domain"] for r in invalid)
    # training molecules are their own nearest neighbours; a disilane is far from all
    assert max(r["domain"]["similarity"] or 0 for r in results) == 1.0
    far = Client(url, trained.key).predict(["C[Si](C)(C)[Si](C)(C)C"])[0]["domain"]
    assert far["similarity"] < 0.3 and far["in_domain"] is False


def test_api_key_required_everywhere_but_healthz(trained: Trained, server: tuple[str, Any]) -> None:
    url, _ = server
    record, revoked = trained.store.create_api_key("revoked")
    trained.store.revoke_api_key(record.id)
    assert httpx.get(f"{url}/healthz").status_code == 200
    body = {"smiles": ["CCO"]}
    for headers in (
        {},
        _auth("qmf_qk_00000000_" + "0" * 64),
        _auth(revoked),
        {"Authorization": "x"},
    ):
        response = httpx.post(f"{url}/predict", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/readyz", "/metrics", "/models", "/openapi.json", "/docs"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers=_auth(trained.key)).status_code == 200, path
    with pytest.raises(ServiceError) as raised:
        Client(url, "wrong").predict(["CCO"])
    assert raised.value.status == 401


def test_body_and_batch_limits(trained: Trained, server: tuple[str, Any]) -> None:
    url, _ = server
    headers = _auth(trained.key)
    big = {"smiles": ["C" * 200] * 6000}  # ~1.2 MB
    assert httpx.post(f"{url}/predict", json=big, headers=headers).status_code == 413
    many = {"smiles": ["C"] * 10_001}  # small body, too many molecules
    response = httpx.post(f"{url}/predict", json=many, headers=headers)
    assert response.status_code == 413 and "10000" in response.json()["detail"]
    bad = httpx.post(f"{url}/predict", content=b"{not json", headers=headers)
    assert bad.status_code == 422
    assert (
        "access-control-allow-origin"
        not in httpx.get(f"{url}/healthz", headers={"Origin": "https://evil.example"}).headers
    )


def test_an_unreadable_upload_row_keeps_its_place_and_its_reason(
    trained: Trained, server: tuple[str, Any]
) -> None:
    url, _ = server
    table = b"smiles,name\nCCO,ethanol\nc1ccccc1,benzene,EXTRA\nCCN,ethylamine\n"
    response = httpx.post(
        f"{url}/predict",
        content=table,
        headers={**_auth(trained.key), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["smiles"] for r in results] == ["CCO", "", "CCN"]
    assert results[0]["error"] is None and results[2]["error"] is None
    assert results[1]["error"].startswith("too_many_fields: line 3 has 3 fields")
    assert results[1]["prediction"] is None


def test_metrics_and_models(trained: Trained, server: tuple[str, Any]) -> None:
    url, _ = server
    with Client(url, trained.key) as client:
        client.predict(["CCO", "not a smiles", "[Xe]"])
        served = client.models()["serving"]
        assert client.ready()
    assert (served["name"], served["version"], served["aliases"]) == (NAME, 1, {"production": 1})
    assert served["limits"] == {
        "max_smiles_length": 5000,
        "max_heavy_atoms": 300,
        "time_budget_seconds": 5.0,
    }
    text = httpx.get(f"{url}/metrics", headers=_auth(trained.key)).text
    for needle in (
        'qemlflow_requests_total{endpoint="/predict",status="200"}',
        'qemlflow_request_seconds_bucket{endpoint="/predict",le="0.01"}',
        'qemlflow_request_errors_total{endpoint="/readyz",status="401"}',
        'qemlflow_molecules_total{outcome="invalid"}',
        "qemlflow_out_of_domain_total",
        "qemlflow_out_of_domain_ratio",
        'qemlflow_model_serving{model="esol",version="1"} 1.0',
    ):
        assert needle in text, needle


def _counter(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + " "))
    return float(line.split()[-1])


def test_a_repeated_request_is_answered_as_the_first_was(
    trained: Trained, server: tuple[str, Any]
) -> None:
    """Molecules a version has answered are answered again from its answers (no worker,
    no model call), with the same results and counted in the metrics as before."""
    url, app = server
    smiles = [*trained.smiles[150:190], "not a smiles", trained.smiles[150]]
    metrics = f"{url}/metrics"
    with Client(url, trained.key) as client:
        first = client.predict(smiles)
        good = [s for s, row in zip(smiles[:40], first, strict=False) if not row["error"]]
        assert 30 < len(good) < 40  # some are refused by the chemistry policy
        known = app.state.service.current.answers.get([*good, smiles[-1]])
        assert known is not None and len(known) == len(good) + 1
        assert app.state.service.current.answers.get(["not a smiles"]) is None
        before = httpx.get(metrics, headers=_auth(trained.key)).text
        again = client.predict(good)
        after = httpx.get(metrics, headers=_auth(trained.key)).text
        mixed = client.predict([*smiles, "CCCCCCCCCCCCCCO"])
    assert again == [row for row in first[:40] if not row["error"]]
    assert mixed[:-1] == first and not mixed[-1]["error"]
    for name, grew in (
        ('qemlflow_molecules_total{outcome="scored"}', len(good)),
        ('qemlflow_feature_cache_total{result="hit"}', len(good)),
        ('qemlflow_feature_cache_total{result="miss"}', 0),
        ('qemlflow_requests_total{endpoint="/predict",status="200"}', 1),
    ):
        assert _counter(after, name) - _counter(before, name) == grew, name


def test_swap_to_a_promoted_version_loses_no_request(trained: Trained) -> None:
    store = trained.store
    registry.promote(store, NAME, 1, to="staging")
    versions: list[int] = []
    failures: list[str] = []
    stop = threading.Event()
    with serving(store, f"{NAME}@staging", poll_seconds=0.1) as (url, _):

        def hammer() -> None:
            with httpx.Client(base_url=url, headers=_auth(trained.key), timeout=30) as http:
                while not stop.is_set():
                    response = http.post("/predict", json={"smiles": ["CCO", "c1ccccc1O"]})
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                        continue
                    versions.extend({r["model_version"] for r in response.json()["results"]})

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            time.sleep(0.3)
            registry.promote(store, NAME, 2, to="staging")
            deadline = time.monotonic() + 20
            while (not versions or versions[-1] != 2) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
    assert failures == []
    assert versions[0] == 1 and versions[-1] == 2
    assert versions == sorted(versions)  # never back to the old version


def test_broken_version_is_refused_and_audited(trained: Trained) -> None:
    store = trained.store
    registry.promote(store, NAME, 1, to="canary")
    with serving(store, f"{NAME}@canary", poll_seconds=0.1) as (url, app):
        registry.promote(store, NAME, 3, to="canary")  # passes its gates, then rots on disk
        blob = store.open_blob_path(trained.versions[3].model_digest)
        blob.chmod(0o644)
        blob.write_bytes(blob.read_bytes()[:-10] + b"corrupted!")
        deadline = time.monotonic() + 20
        service = app.state.service
        while (NAME, 3) not in service.refused and time.monotonic() < deadline:
            time.sleep(0.05)
        with Client(url, trained.key) as client:
            assert client.predict(["CCO"])[0]["model_version"] == 1
            assert client.models()["serving"]["refused_versions"] == [3]
            assert client.ready()
        metrics = httpx.get(f"{url}/metrics", headers=_auth(trained.key)).text
    assert "qemlflow_model_auto_rollbacks_total 1.0" in metrics
    events = store.audit_events(action="model.auto_rollback")
    assert len(events) == 1  # refused once, not at every poll
    event = events[0]
    assert event.details["refused_version"] == 3 and event.details["serving_version"] == 1
    assert "CorruptBlobError" in (event.reason or "")


def test_openapi_fuzzing_finds_no_server_error(trained: Trained, server: tuple[str, Any]) -> None:
    schemathesis = require_extra("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    url, app = server
    schema = schemathesis.openapi.from_dict(app.openapi())
    headers = _auth(trained.key)
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=url, headers=headers, checks=[not_a_server_error])

        check()


def test_service_scores_like_the_predictor_in_process(trained: Trained) -> None:
    """The scorer without HTTP: same numbers however the molecules are batched together,
    and domain scores equal to ``tanimoto_similarity`` on ECFP4 bits."""
    from qemlflow.models.tanimoto import tanimoto_similarity
    from qemlflow.serve.service import ServedModel, _training_smiles

    model = ServedModel.load(trained.store, trained.versions[2])
    expected = model.predictor.predict(trained.smiles)
    whole = model.score(trained.smiles)
    parts = model.score(trained.smiles[:7]) + model.score(trained.smiles[7:])
    for a, b, want in zip(whole, parts, expected.prediction, strict=True):
        assert a.prediction == b.prediction and _same(want, a.prediction)
    # Prepared in worker processes (a big batch, spread over them): the same rows, in order.
    from qemlflow.serve.workers import MoleculeWorkers, WorkerJob

    finished: list[WorkerJob] = []
    done = threading.Event()
    workers = MoleculeWorkers(2, lambda jobs: (finished.extend(jobs), done.set()))
    workers.start()
    try:
        big = trained.smiles * 3
        workers.submit(WorkerJob(model.recipe, model.cache, big, owner=None))
        assert done.wait(120)
    finally:
        workers.stop()
    (job,) = finished
    pooled = model.results(big, [row for row in job.rows if row is not None])
    assert len(pooled) == len(big)
    assert [r.model_dump() for r in pooled] == [r.model_dump() for r in model.score(big)]
    # 726 rows: scored in two halves on two threads (trees), the numbers of one call.
    whole_call = model.predictor.predict(big)
    for row, want in zip(pooled, whole_call.itertuples(index=False), strict=True):
        for column in ("prediction", "lower", "upper"):
            assert _same(getattr(want, column), getattr(row, column)), (column, row)
    queries = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C[Si](C)(C)[Si](C)(C)C"]
    train = qm.featurize(_training_smiles(trained.store, trained.versions[2]), "ecfp")
    want_sim = tanimoto_similarity(qm.featurize(queries, "ecfp"), train).max(axis=1)
    got = [r.domain.similarity for r in model.score(queries)]
    assert np.allclose(np.asarray(got, dtype=float), want_sim, rtol=0, atol=1e-12)


def test_an_api_key_is_checked_once_for_all_the_requests_presenting_it(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests arriving together share one store check of their key; past half of the
    trust, one check starts ahead while requests go on; a revoked key is refused once
    its trust has lapsed."""
    import asyncio

    from qemlflow.serve.service import ModelService

    asked: list[str] = []
    check = trained.store.check_api_key

    def counted(presented: str) -> Any:
        asked.append(presented)
        time.sleep(0.05)  # a slow store: the other requests arrive while it is asked
        return check(presented)

    monkeypatch.setattr(trained.store, "check_api_key", counted)
    record, key = trained.store.create_api_key("shared check")
    service = ModelService(trained.store, NAME, key_cache_seconds=0.6)

    async def scenario() -> None:
        together = await asyncio.gather(*(service.key_allowed(key) for _ in range(32)))
        assert together == [True] * 32 and len(asked) == 1
        wrong = await asyncio.gather(*(service.key_allowed(key + "x") for _ in range(8)))
        assert wrong == [False] * 8 and len(asked) == 2
        await asyncio.sleep(0.35)  # past half of the trust: answered at once, one check ahead
        assert await service.key_allowed(key) and await service.key_allowed(key)
        await asyncio.sleep(0.1)
        assert len(asked) == 3
        trained.store.revoke_api_key(record.id)
        await asyncio.sleep(0.6)
        refused = await asyncio.gather(*(service.key_allowed(key) for _ in range(8)))
        assert refused == [False] * 8 and len(asked) == 4

    asyncio.run(scenario())


def test_a_known_answer_is_written_as_fastapi_writes_it(
    trained: Trained, server: tuple[str, Any]
) -> None:
    """A request whose molecules have all been answered gets its body from the answers'
    kept JSON: byte for byte the body FastAPI wrote when they were first scored."""
    url, app = server
    new = ["CCCCCCCCCCCCCCCCO", "OCCOCCOCCO", "CCc1ccc2ccccc2c1", "CC(C)(C)c1ccc(O)cc1"]
    with httpx.Client(base_url=url, headers=_auth(trained.key)) as http:
        assert app.state.service.current.answers.get(new) is None
        first = http.post("/predict", json={"smiles": new})  # scored by the workers
        assert app.state.service.current.answers.get(new) is not None
        again = http.post("/predict", json={"smiles": new})
        shuffled = http.post("/predict", json={"smiles": [new[2], new[0], new[2]]})
    assert first.status_code == again.status_code == shuffled.status_code == 200
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    rows = first.json()["results"]
    assert shuffled.json() == {**first.json(), "results": [rows[2], rows[0], rows[2]]}


def _framework_spy(app: Any) -> tuple[Any, Any, list[str]]:
    """The known-answers middleware of ``app``'s built stack, its inner app (to restore)
    and the list of the requests that reach the framework from now on."""
    from qemlflow.serve.app import KnownAnswersMiddleware

    layer = app.middleware_stack
    while not isinstance(layer, KnownAnswersMiddleware):
        layer = layer.app
    inner, reached = layer.app, []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            reached.append(f"{scope['method']} {scope['path']}")
        await inner(scope, receive, send)

    layer.app = recording
    return layer, inner, reached


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    """A response's headers but the date and the server's name, in order."""
    return [(k, v) for k, v in response.headers.multi_items() if k not in ("date", "server")]


def test_known_answers_skip_the_framework_only_where_the_route_answers_alike(
    trained: Trained, server: tuple[str, Any]
) -> None:
    """A JSON request of known molecules with a trusted key is answered before the
    framework, with the route's status, headers and bytes; every other request (a bad
    key, a CSV body, bad JSON, a new molecule) reaches the route with its body intact."""
    url, app = server
    new = ["OCCCCCCCCCCCCCCCCCO", "c1ccc2c(c1)ccc1ccccc12", "CC(C)(C)CC(C)(C)c1ccc(O)cc1"]
    with httpx.Client(base_url=url, headers=_auth(trained.key)) as http:
        http.get("/healthz")  # the middleware stack is built by the first request
        lane, inner, reached = _framework_spy(app)
        try:
            assert app.state.service.current.answers.get(new) is None
            first = http.post("/predict", json={"smiles": new})  # scored by the workers
            assert reached == ["POST /predict"]
            again = http.post("/predict", json={"smiles": new})
            untyped = http.post("/predict", content=json.dumps({"smiles": new[::-1]}).encode())
            assert reached == ["POST /predict"], "known answers went to the framework"
            refused = http.post("/predict", json={"smiles": new}, headers=_auth("wrong"))
            csv = http.post(
                "/predict",
                content=("smiles\n" + "\n".join(new) + "\n").encode(),
                headers={"Content-Type": "text/csv"},
            )
            typed = {"Content-Type": "application/json"}
            broken = http.post("/predict", content=b'{"smiles": ["CCO"', headers=typed)
            extra = http.post("/predict", json={"smiles": new, "other": 1})
            mixed = http.post("/predict", json={"smiles": [*new, "CCCCCCCCCCCCCCCCCCCO"]})
            assert reached == ["POST /predict"] * 6
        finally:
            lane.app = inner
    assert first.status_code == again.status_code == untyped.status_code == 200
    assert again.content == first.content
    assert _headers(again) == _headers(first)
    assert untyped.json()["results"] == first.json()["results"][::-1]
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert csv.status_code == 200 and csv.json() == first.json()
    assert broken.status_code == 422 and extra.status_code == 422
    assert mixed.status_code == 200 and mixed.json()["results"][:3] == first.json()["results"]


def test_a_known_answer_keeps_the_cors_headers(trained: Trained) -> None:
    """With a CORS origin set, a known answer (answered before the framework) carries the
    CORS headers the scored one carried: the CORS middleware wraps the known answers."""
    origin = "https://lab.example"
    headers = {**_auth(trained.key), "Origin": origin}
    smiles = {"smiles": trained.smiles[200:203]}
    with serving(trained.store, f"{NAME}@production", poll_seconds=0, cors_origin=origin) as run:
        url, app = run
        first = httpx.post(f"{url}/predict", json=smiles, headers=headers)
        lane, inner, reached = _framework_spy(app)
        try:
            again = httpx.post(f"{url}/predict", json=smiles, headers=headers)
        finally:
            lane.app = inner
    assert reached == [] and first.status_code == again.status_code == 200
    assert again.headers["access-control-allow-origin"] == origin
    assert _headers(again) == _headers(first) and again.content == first.content


def _exchange(sock: socket.socket, request: bytes, until: bytes) -> bytes:
    """Send ``request`` and read until ``until`` has arrived (5 s at most)."""
    sock.sendall(request)
    received = b""
    sock.settimeout(5)
    while until not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received


def test_each_response_leaves_whole_and_nothing_waits_behind_a_held_head(
    trained: Trained, server: tuple[str, Any]
) -> None:
    """The protocol holds a response's head for its body: a HEAD response (no body
    written), a 100 Continue (not a final head) and keep-alive requests all get their
    bytes at once, in order, on one connection."""
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {trained.key}\r\n".encode()
    body = json.dumps({"smiles": ["CCO"]}).encode()
    with socket.create_connection((host, int(port))) as sock:
        head = _exchange(sock, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 405 ") and head.endswith(b"\r\n\r\n")
        got = _exchange(sock, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b'"ok"}')
        assert got.startswith(b"HTTP/1.1 200 ")
        expect = (
            b"POST /predict HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
        )
        assert _exchange(sock, expect, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        answer = _exchange(sock, body, b"]}")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["results"][0]["smiles"] == "CCO"
