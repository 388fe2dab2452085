"""The UI's governance pages (datasets, models, audit) over stores made by real commands.

One store is built per module: a real run on a small ESOL file (two rejected rows), its
model registered twice and moved with ``qemlflow models promote/rollback`` (one promotion
refused at the metrics gate). Tests that change a store work on a copy of it.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import update
from tests.identities_helpers import person

import qemlflow as qm
from qemlflow.cli.main import main
from qemlflow.store import Store, schema
from qemlflow.ui.app import create_app
from qemlflow.ui.histogram import bin_labels, histogram_svg

FEATURES = [{"type": "ecfp", "radius": 2, "size": 512, "counts": True}]


def _config(source: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "gov",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": FEATURES,
        "model": {"estimator": "random_forest", "params": {"n_estimators": 20}},
        "evaluation": {"n_bootstrap": 20, "plots": False},
        **extra,
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, esol_frame: Any) -> Iterator[dict[str, Any]]:
    """A store with a run, model ``sol`` (2 versions, 3 promotions, 1 refusal, 1 rollback)
    and model ``strict`` whose experiment sets an rmse bound no model meets."""
    import pandas as pd

    folder = tmp_path_factory.mktemp("gov")
    frame = esol_frame.head(200).copy()
    bad = pd.DataFrame({"smiles": ["C1CC(not smiles", ""], "logp": [-1.0, -2.0]})
    source = folder / "small_esol.csv"
    pd.concat([frame.iloc[:50], bad, frame.iloc[50:]], ignore_index=True).to_csv(
        source, index=False
    )
    root = folder / "store"
    at = ["--store", str(root)]
    with Store.open(root) as store:
        run_id = qm.run(_config(source), store=store).run_id
        strict_run = qm.run(
            _config(source, promotion={"metrics": {"rmse": {"max": 0.01}}}), store=store
        ).run_id
    assert run_id is not None and strict_run is not None
    assert main(["models", "register", run_id, "--name", "sol", *at]) == 0
    assert main(["models", "register", run_id, "--name", "sol", *at]) == 0
    assert main(["models", "register", strict_run, "--name", "strict", *at]) == 0
    assert main(["models", "promote", "sol", "1", "--to", "staging", *at]) == 0
    assert main(["models", "promote", "sol", "1", *at]) == 0
    policy = folder / "strict.yaml"
    policy.write_text(yaml.safe_dump({"metrics": {"rmse": {"max": 0.01}}}), encoding="utf-8")
    assert main(["models", "promote", "sol", "2", "--policy", str(policy), *at]) == 2
    assert main(["models", "promote", "sol", "2", *at]) == 0
    assert main(["models", "rollback", "sol", "--reason", "bad canary", *at]) == 0
    yield {"root": root, "run_id": run_id, "source": source}


@pytest.fixture
def store(built: dict[str, Any]) -> Iterator[Store]:
    """The module's store, opened for one test (read only by the test)."""
    with Store.open(built["root"]) as opened:
        yield opened


@pytest.fixture
def copy(built: dict[str, Any], tmp_path: Path) -> Iterator[Store]:
    """A copy of the module's store that the test may change."""
    target = tmp_path / "copy"
    shutil.copytree(built["root"], target)
    with Store.open(target) as opened:
        yield opened


def _client(store: Store, *, writable: bool = False) -> TestClient:
    return TestClient(create_app(store, writable=writable))


def _element(html: str, tag: str, ident: str) -> str:
    """The first ``<tag id="ident">...</tag>`` (tables and sections do not nest here)."""
    found = re.search(rf'<{tag}\b[^>]*\bid="{ident}"[^>]*>.*?</{tag}>', html, re.S)
    assert found is not None, f"no {tag}#{ident}"
    return found.group(0)


def _rows(html: str, attribute: str) -> list[str]:
    """Every ``<tr ... attribute...>...</tr>``."""
    return re.findall(rf"<tr\b[^>]*\b{attribute}[^>]*>.*?</tr>", html, re.S)


def _cell(row: str, cls: str) -> str:
    found = re.search(rf'<td class="{cls}"[^>]*>(.*?)</td>', row, re.S)
    assert found is not None, f"no td.{cls} in {row[:200]}"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def _seqs(html: str) -> list[int]:
    table = _element(html, "table", "audit-table")
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', table)]


# -- datasets --------------------------------------------------------------------------


def test_datasets_list_and_detail_account_for_every_row(store: Store) -> None:
    client = _client(store)
    (record,) = store.list_datasets()  # both runs read the same file the same way
    page = client.get("/datasets")
    assert page.status_code == 200
    (row,) = _rows(_element(page.text, "table", "datasets-table"), "data-dataset-id")
    assert f'data-dataset-id="{record.id}"' in row and record.raw_digest[:12] in row

    detail = client.get(f"/datasets/{record.id[:10]}")  # a prefix, as the CLI accepts
    assert detail.status_code == 200
    accounting = _element(detail.text, "section", "row-accounting")
    stats = dict(re.findall(r'data-stat="(\w+)"><div class="value">([\d,]+)</div>', accounting))
    summary = record.summary
    assert stats == {
        "rows": f"{summary['rows']:,}",
        "accepted": str(summary["ok"]),
        "rejected": str(summary["rejected"]),
        "merged": str(summary["merged"]),
        "molecules": str(summary["molecules"]),
    }
    assert summary["rejected"] >= 2  # the unparsable and the empty SMILES at least
    assert summary["ok"] + summary["merged"] + summary["rejected"] == summary["rows"] == 202

    labels = _element(detail.text, "section", "label-distribution")
    assert labels.count('<svg class="plot histogram"') == 1 and 'data-label="logp"' in labels
    counts = [int(c) for c in re.findall(r'data-count="(\d+)"', labels)]
    assert sum(counts) == summary["molecules"] and len(counts) == 20

    rejected = _rows(_element(detail.text, "table", "rejected-table"), 'class="rejected"')
    csv_text = client.get(f"/datasets/{record.id}/rejected.csv").text
    assert {"row", "input_smiles", "reason", "detail"} <= set(csv_text.splitlines()[0].split(","))
    assert len(rejected) == len(csv_text.splitlines()) - 1 >= summary["rejected"]
    assert set(summary["rejected_by_reason"]) <= {_cell(r, "reason") for r in rejected}

    cache = client.app.state.ui.cache  # type: ignore[attr-defined]
    assert f"gov.dataset:{record.id}" in cache  # read once: versions never change
    assert client.get("/datasets/nope").status_code == 404


def test_empty_store_pages_say_what_to_run(tmp_path: Path) -> None:
    with Store.open(tmp_path / "empty") as empty:
        client = _client(empty)
        for path, hint in (
            ("/datasets", "qemlflow data add"),
            ("/models", "qemlflow models register"),
            ("/audit", "qemlflow run"),
        ):
            page = client.get(path)
            assert page.status_code == 200 and '<p class="empty">' in page.text
            assert hint in page.text


def test_histogram_bins_classes_and_escapes_the_label() -> None:
    regression = bin_labels("y", [0.0, 0.1, 0.9, 1.0, None], task="regression", bins=2)
    assert [c for _, c in regression.bars] == [2, 2] and regression.missing == 1
    classes = bin_labels("active", [1.0, 0.0, 1.0], task="classification")
    assert classes.bars == (("0", 1), ("1", 2))
    svg = histogram_svg('<script>alert("x")</script>', [1.0, 2.0], task="regression")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "no labels" in histogram_svg("y", [None], task="regression")


# -- models ----------------------------------------------------------------------------


def test_models_list_and_detail_show_versions_aliases_and_history(
    store: Store, built: dict[str, Any]
) -> None:
    client = _client(store)
    listed = client.get("/models")
    assert listed.status_code == 200
    rows = _rows(_element(listed.text, "table", "models-table"), "data-model")
    assert [re.search(r'data-model="([^"]+)"', r).group(1) for r in rows] == ["sol", "strict"]  # type: ignore[union-attr]
    assert "production → v1" in rows[0] and "staging → v1" in rows[0]

    page = client.get("/models/sol")
    assert page.status_code == 200
    versions = _rows(_element(page.text, "table", "versions-table"), "data-version")
    assert [re.search(r'data-version="(\d+)"', v).group(1) for v in versions] == ["2", "1"]  # type: ignore[union-attr]
    assert f'href="/runs/{built["run_id"]}"' in versions[0]
    assert 'data-metric="rmse"' in versions[0]
    aliases = _element(page.text, "section", "aliases")
    assert re.search(r'data-alias="production"[^>]*>production → v1<', aliases)

    history = _rows(_element(page.text, "table", "history-table"), 'class="history"')
    # newest first: rollback, promote 2, promote 1 (production), promote 1 (staging)
    assert [re.search(r'data-action="(\w+)"', h).group(1) for h in history] == [  # type: ignore[union-attr]
        "rolled_back",
        "promoted",
        "promoted",
        "promoted",
    ]
    assert "bad canary" in _cell(history[0], "reason")
    for promoted in history[1:]:
        gates = _cell(promoted, "gates")
        assert "metrics passed" in gates and "smoke passed" in gates
        assert "none required" in _cell(promoted, "approvals")
    assert _cell(history[1], "version").startswith("v2")

    refused = _rows(_element(page.text, "table", "refused-table"), 'class="refused"')
    assert len(refused) == 1 and 'data-gate="metrics"' in refused[0]
    assert "refused at the metrics gate" in _cell(refused[0], "reason")
    assert "metrics failed" in _cell(refused[0], "gates")

    assert "promote-form" not in page.text  # read-only: no forms
    assert client.get("/models/nope").status_code == 404


# -- audit -----------------------------------------------------------------------------


def test_audit_filters_by_actor_action_object_and_time(store: Store, built: dict[str, Any]) -> None:
    client = _client(store)
    every = store.audit_events()
    page = client.get("/audit")
    assert page.status_code == 200
    assert _seqs(page.text) == [e.seq for e in reversed(every)]  # newest first
    assert '<div id="verification" class="card" data-load="/audit/verification">' in page.text

    promoted = client.get("/audit", params={"action": "model.promoted"}).text
    rows = _rows(_element(promoted, "table", "audit-table"), "data-seq")
    assert len(rows) == 3 and {_cell(r, "action") for r in rows} == {"model.promoted"}
    family = _seqs(client.get("/audit", params={"action": "model.*"}).text)
    assert family == [e.seq for e in reversed(every) if e.action.startswith("model.")]

    run_id = built["run_id"]
    about_run = _seqs(client.get("/audit", params={"object": run_id}).text)
    expected = [e.seq for e in reversed(every) if run_id in e.objects.values()]
    assert about_run == expected and len(expected) >= 5  # started, finished, registrations...
    assert _seqs(client.get("/audit", params={"object": run_id[:-2]}).text) == expected

    actor = every[-1].actor  # "Name <email>": any part of it, in any case
    part = actor.split("<")[1][:5].upper()
    assert _seqs(client.get("/audit", params={"actor": part}).text) == [
        e.seq for e in reversed(every) if part.lower() in e.actor.lower()
    ]
    nobody = client.get("/audit", params={"actor": "nobody-at-all"}).text
    assert "No event matches these filters" in nobody

    day = every[0].timestamp[:10]
    assert len(_seqs(client.get("/audit", params={"since": day, "until": day}).text)) == len(
        every
    )  # a date bound covers its whole day
    assert "No event matches" in client.get("/audit", params={"until": "2000-01-01"}).text
    middle = every[len(every) // 2].timestamp
    assert _seqs(client.get("/audit", params={"until": middle}).text) == [
        e.seq for e in reversed(every) if e.timestamp <= middle
    ]
    bad = client.get("/audit", params={"since": "last tuesday"})
    assert bad.status_code == 400 and "is not an ISO date" in bad.text


def test_audit_pages_hold_100_events_newest_first(copy: Store) -> None:
    for i in range(150):
        copy.audit("test.filler", {"thing": f"{i:064x}"})
    head = copy.audit_head()["seq"]
    client = _client(copy)
    first = client.get("/audit")
    assert _seqs(first.text) == list(range(head, head - 100, -1))
    assert 'rel="next" href="/audit?page=2"' in first.text and 'rel="prev"' not in first.text
    second = client.get("/audit", params={"page": 2}).text
    assert _seqs(second) == list(range(head - 100, 0, -1))
    assert 'rel="prev" href="/audit?page=1"' in second and 'rel="next"' not in second
    fillers = client.get("/audit", params={"action": "test.filler", "page": 2}).text
    assert len(_seqs(fillers)) == 50 and "test.filler" in fillers
    assert "page=2&amp;" not in fillers and "action=test.filler&amp;page=1" in fillers


def _verified(client: TestClient, timeout: float = 60.0) -> str:
    """The verification fragment once it is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        text = client.get("/audit/verification").text
        if 'data-state="pending"' not in text:
            return text
        assert time.monotonic() < deadline, "verification still pending"
        time.sleep(0.05)


def test_verification_is_cached_per_head_and_catches_a_tampered_event(copy: Store) -> None:
    client = _client(copy)
    first = client.get("/audit/verification")
    assert first.status_code == 200
    assert 'data-state="pending"' in first.text  # answered at once, verified in a thread
    sound = _verified(client)
    assert 'data-state="sound"' in sound
    assert '<section id="anchors">' in sound and copy.audit_head()["hash"] in sound
    checkpoints = copy.checkpoints.list()
    assert checkpoints and f'<tr class="checkpoint" data-seq="{checkpoints[-1].seq}"' in sound
    assert 'data-state="sound"' in client.get("/audit/verification").text  # cached

    t = schema.audit_events
    with copy._engine.begin() as conn:  # around the append-only triggers, as an attacker
        triggers = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        ).all()
        for name, _ in triggers:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")
        conn.execute(update(t).where(t.c.seq == 3).values(actor="Eve <eve@evil.org>"))
        for _, sql in triggers:
            conn.exec_driver_sql(sql)

    # the head did not move: the cached answer stands until it does, it is old, or a
    # fresh start
    assert 'data-state="sound"' in client.get("/audit/verification").text
    fresh = _verified(_client(copy))
    assert 'data-state="broken"' in fresh and 'data-first-bad="3"' in fresh
    assert "the event was edited" in fresh

    checker = client.app.state.ui.cache["gov.verification"]  # type: ignore[attr-defined]
    checker.max_age_s = 0.0  # old at once: still shown, checked again behind it
    assert 'data-state="sound"' in client.get("/audit/verification").text
    deadline = time.monotonic() + 60
    while 'data-state="broken"' not in (stale := client.get("/audit/verification").text):
        assert 'data-state="sound"' in stale and time.monotonic() < deadline
        time.sleep(0.05)
    assert 'data-first-bad="3"' in stale

    checker.max_age_s = 300.0
    copy.audit("test.after", {"thing": "x" * 64})  # the head moves: verified again
    assert 'data-state="pending"' in client.get("/audit/verification").text
    broken = _verified(client)
    assert 'data-state="broken"' in broken and 'data-first-bad="3"' in broken


# -- changing state from the UI ----------------------------------------------------------


def _form_token(html: str) -> str:
    form = _element(html, "form", "promote-form")
    assert 'method="post" action="/models/sol/promote"' in form
    found = re.search(r'<input type="hidden" name="csrf" value="([^"]+)">', form)
    assert found is not None
    return found.group(1)


def test_promote_and_rollback_through_the_forms_are_audited(copy: Store) -> None:
    client = _client(copy, writable=True)
    page = client.get("/models/sol")
    token = _form_token(page.text)
    assert token == client.app.state.ui.csrf  # type: ignore[attr-defined]
    assert '<form id="rollback-form"' in page.text

    done = client.post(
        "/models/sol/promote",
        data={"version": "2", "alias": "staging", "reason": "from the UI", "csrf": token},
    )
    assert done.status_code == 200 and 'id="action-result"' in done.text
    assert "sol@staging -&gt; version 2 (was version 1)" in done.text
    assert copy.current_aliases("sol") == {"production": 1, "staging": 2}
    event = copy.audit_events(action="model.promoted")[-1]
    assert event.reason == "from the UI" and event.details["alias"] == "staging"
    assert event.actor == copy.principal.display
    assert [g["gate"] for g in event.details["gates"]] == ["metrics", "smoke"]
    history = _rows(_element(done.text, "table", "history-table"), 'class="history"')
    assert "from the UI" in _cell(history[0], "reason")

    back = client.post(
        "/models/sol/rollback", data={"alias": "staging", "reason": "oops", "csrf": token}
    )
    assert back.status_code == 200 and "rolled back to version 1" in back.text
    assert copy.current_aliases("sol")["staging"] == 1
    assert copy.audit_events(action="model.rolled_back")[-1].reason == "oops"


def test_changes_need_the_token_and_allow_changes(copy: Store) -> None:
    before = copy.audit_head()
    writable = _client(copy, writable=True)
    for data in ({"version": "2"}, {"version": "2", "csrf": "forged"}):
        refused = writable.post("/models/sol/promote", data=data)
        assert refused.status_code == 403 and "token" in refused.text
    assert writable.post("/models/sol/rollback", data={}).status_code == 403

    read_only = _client(copy)
    token = read_only.app.state.ui.csrf  # type: ignore[attr-defined]
    for path in ("/models/sol/promote", "/models/sol/rollback"):
        refused = read_only.post(path, data={"version": "2", "csrf": token})
        assert refused.status_code == 403 and "qemlflow ui --allow-changes" in refused.text
    assert copy.audit_head() == before and copy.current_aliases("sol")["production"] == 1


def test_refusals_show_the_reason(copy: Store, tmp_path: Path) -> None:
    client = _client(copy, writable=True)
    token = _form_token(client.get("/models/sol").text)
    # the experiment of model "strict" bounds rmse at 0.01: the metrics gate refuses
    strict = client.post("/models/strict/promote", data={"version": "1", "csrf": token})
    assert strict.status_code == 400
    error = _element(strict.text, "div", "action-error")
    assert "promotion of strict@1 to production refused at the metrics gate" in error
    assert copy.current_aliases("strict") == {}
    refused = _rows(_element(strict.text, "table", "refused-table"), 'class="refused"')
    assert len(refused) == 1  # the refusal is audited, and shown

    missing = client.post("/models/sol/promote", data={"version": "9", "csrf": token})
    assert missing.status_code == 400 and "no version 9" in missing.text

    # a contributor may not move a production alias: the store's role check refuses
    contributor = person(copy, tmp_path / "carol", "Carol", "carol@lab.org", "contributor")
    with Store.open(copy.root, principal=contributor) as as_carol:
        carol = _client(as_carol, writable=True)
        token = _form_token(carol.get("/models/sol").text)
        denied = carol.post("/models/sol/promote", data={"version": "2", "csrf": token})
        assert denied.status_code == 400
        assert "needs role approver" in _element(denied.text, "div", "action-error")
    assert copy.current_aliases("sol")["production"] == 1


def test_audit_filters_run_in_sql_on_both_backends(store_factory: Any, tmp_path: Path) -> None:
    opened: Store = store_factory(tmp_path / "both")
    for i, thing in enumerate(("abcdef123456", "abcdef999999", "zzz")):
        opened.audit(f"test.e{i}", {"thing": thing, "run": f"r{i}"}, reason=f"#{i}")
    owner = opened.audit_events()[0].seq
    client = _client(opened)

    def seqs(**params: str) -> list[int]:
        page = client.get("/audit", params=params)
        assert page.status_code == 200
        return _seqs(page.text) if 'id="audit-table"' in page.text else []

    head = opened.audit_head()["seq"]
    assert seqs(object="abcdef123456") == [head - 2]
    assert seqs(object="abcdef") == [head - 1, head - 2]  # a prefix of 6 or more
    assert seqs(object="abcde") == [] and seqs(object="ABCDEF") == []  # shorter; case
    assert seqs(object="zzz") == [head] and seqs(object="r1") == [head - 1]
    assert seqs(action="test.*", object="abcdef") == [head - 1, head - 2]
    assert seqs(actor=opened.principal.email.upper()) == list(range(head, owner - 1, -1))
    events, total = opened.audit_page(object_ref="abcdef", limit=1, offset=1)
    assert [e.seq for e in events] == [head - 2] and total == 2


def test_an_approval_gate_refuses_then_counts_the_approver(
    copy: Store, built: dict[str, Any], tmp_path: Path
) -> None:
    from tests.identities_helpers import PASSPHRASE, enroll, make_identity

    from qemlflow.audit.signatures import sign

    config = _config(built["source"], promotion={"require_signature": "approved"})
    run_id = qm.run(config, store=copy).run_id
    assert run_id is not None
    assert main(["models", "register", run_id, "--name", "signed", "--store", str(copy.root)]) == 0
    client = _client(copy, writable=True)
    token = _form_token(client.get("/models/sol").text)

    refused = client.post("/models/signed/promote", data={"version": "1", "csrf": token})
    assert refused.status_code == 400
    error = _element(refused.text, "div", "action-error")
    assert "refused at the signature gate: no valid &#39;approved&#39; signature" in error
    assert "qemlflow sign" in error  # the fix: who signs, and how

    ada = make_identity(tmp_path / "ada", "Ada Lovelace", "ada@lab.org")
    enroll(copy, ada, role="approver")
    sign(copy, run_id, meaning="approved", reason="QC", passphrase=PASSPHRASE, identity_dir=ada)
    done = client.post("/models/signed/promote", data={"version": "1", "csrf": token})
    assert done.status_code == 200 and copy.current_aliases("signed") == {"production": 1}
    (moved,) = _rows(_element(done.text, "table", "history-table"), 'class="history"')
    assert "signature passed" in _cell(moved, "gates")
    approvals = _cell(moved, "approvals")
    assert "approved" in approvals and "Ada Lovelace &lt;ada@lab.org&gt;" in approvals
    assert 'data-counted="true"' in moved
    (earlier,) = _rows(_element(done.text, "table", "refused-table"), 'class="refused"')
    assert 'data-gate="signature"' in earlier and "signature failed" in _cell(earlier, "gates")
