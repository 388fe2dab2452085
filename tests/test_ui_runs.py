"""The runs pages of ``qemlflow ui``: the overview, the runs table and the comparison.

The store is filled by real ``qemlflow run`` commands on a small ESOL file (two models, two
splits) plus a run that failed; pages are fetched through the real application.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient

from qemlflow.cli.main import main
from qemlflow.store import Store
from qemlflow.ui.app import create_app
from qemlflow.ui.runs_query import RunsQuery, cached_rows, query_rows

FEATURES = [{"type": "ecfp", "radius": 2, "size": 512, "counts": True}]


def _config(source: Path, name: str, estimator: str, split: str) -> dict[str, object]:
    params = {"n_estimators": 20} if estimator == "random_forest" else {}
    return {
        "name": name,
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": FEATURES,
        "split": {"method": split, "sizes": [0.8, 0.1, 0.1]},
        "model": {"estimator": estimator, "params": params},
        "evaluation": {"n_bootstrap": 30, "plots": False},
    }


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Iterator[Path]:
    """A store with three runs made by ``qemlflow run`` and one failed run."""
    folder = tmp_path_factory.mktemp("ui-runs")
    source = folder / "small_esol.csv"
    esol_frame.head(200).to_csv(source, index=False)
    store_path = folder / "store"
    for name, estimator, split in (
        ("forest-random", "random_forest", "random"),
        ("knn-scaffold", "knn", "scaffold"),
        ("forest-scaffold", "random_forest", "scaffold"),
    ):
        config = folder / f"{name}.yaml"
        config.write_text(yaml.safe_dump(_config(source, name, estimator, split)))
        code = main(["run", str(config), "--out", str(folder / name), "--store", str(store_path)])
        assert code == 0
    with Store.open(store_path) as store:
        failed = store.create_run("broken", {"model": {"estimator": "svm"}}, 1, None)
        store.fail_run(failed, "the data could not be read")
    yield store_path


@pytest.fixture
def client(filled: Path) -> Iterator[tuple[TestClient, Store]]:
    store = Store.open(filled)
    try:
        yield TestClient(create_app(store)), store
    finally:
        store.close()


class _Cells(HTMLParser):
    """Collects, per ``tr[data-run-id]`` of one table, the text of each classed ``td``."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.inside = False
        self.rows: list[dict[str, str]] = []
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("id") == self.table_id:
            self.inside = True
        elif self.inside and tag == "tr" and found.get("data-run-id"):
            self.rows.append({"id": found["data-run-id"] or ""})
        elif self.inside and tag == "td" and self.rows and found.get("class"):
            self._cell = (found["class"] or "").split()[0]
            self.rows[-1][self._cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self.rows:
            self.rows[-1][self._cell] += data.strip()


def _rows(html: str, table_id: str = "runs-table") -> list[dict[str, str]]:
    parser = _Cells(table_id)
    parser.feed(html)
    return parser.rows


def test_runs_table_shows_each_run_newest_first(client: tuple[TestClient, Store]) -> None:
    http, store = client
    page = http.get("/runs")
    assert page.status_code == 200
    assert 'data-page="runs"' in page.text
    rows = _rows(page.text)
    records = store.list_runs()
    assert [r["id"] for r in rows] == [r.id for r in records]  # newest first
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"forest-random", "knn-scaffold", "forest-scaffold", "broken"}
    knn = by_name["knn-scaffold"]
    assert (knn["dataset"], knn["model"], knn["split"], knn["status"]) == (
        "small_esol.csv",
        "knn",
        "scaffold",
        "finished",
    )
    # The test RMSE and its bootstrap CI, as the run recorded them.
    record = next(r for r in records if r.name == "knn-scaffold")
    assert record.metrics is not None
    low, high = record.metrics["ci95"]["test"]["rmse"]
    rmse = record.metrics["test"]["rmse"]
    assert knn["metric"] == f"{rmse:.3f} [{low:.3f}, {high:.3f}]"
    assert re.fullmatch(r"\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]", knn["metric"])
    # Who: the actor of the run.started event (the test session's OS account).
    started = store.audit_events(object_ref=record.id, action="run.started")[0]
    assert knn["who"] == started.actor
    assert by_name["broken"]["status"] == "failed" and by_name["broken"]["metric"] == "—"
    # Each name links to its run page; each row has a compare checkbox.
    assert f'href="/runs/{record.id}"' in page.text
    assert f'<input type="checkbox" name="run" value="{record.id}"' in page.text
    for selector in ('id="runs-filter"', 'id="runs-q"', 'id="runs-status"', 'id="compare-form"'):
        assert selector in page.text


def test_filter_by_text_and_status(client: tuple[TestClient, Store]) -> None:
    http, _ = client
    names = {r["name"] for r in _rows(http.get("/runs", params={"q": "SCAFFOLD"}).text)}
    assert names == {"knn-scaffold", "forest-scaffold"}
    # Text matches the model column too.
    assert {r["name"] for r in _rows(http.get("/runs?q=knn").text)} == {"knn-scaffold"}
    failed = _rows(http.get("/runs?status=failed").text)
    assert [r["name"] for r in failed] == ["broken"]
    page = http.get("/runs?q=nothing-like-this")
    assert _rows(page.text) == [] and 'class="empty"' in page.text
    assert http.get("/runs?status=lost").status_code == 400


def test_sort_by_metric_and_name(client: tuple[TestClient, Store]) -> None:
    http, store = client
    records = {r.name: r for r in store.list_runs()}
    rmse = {name: r.metrics["test"]["rmse"] for name, r in records.items() if r.metrics is not None}
    ascending = [r["name"] for r in _rows(http.get("/runs?sort=metric&order=asc").text)]
    assert ascending == [*sorted(rmse, key=rmse.__getitem__), "broken"]  # no metric: last
    descending = [r["name"] for r in _rows(http.get("/runs?sort=metric&order=desc").text)]
    assert descending == [*sorted(rmse, key=rmse.__getitem__, reverse=True), "broken"]
    by_name = [r["name"] for r in _rows(http.get("/runs?sort=name&order=asc").text)]
    assert by_name == sorted(records)
    page = http.get("/runs?sort=name")  # descending, the default order
    # The active column's link flips the order; the others start ascending.
    assert 'data-sort="name" href="/runs?sort=name&amp;order=asc"' in page.text
    assert 'data-sort="model" href="/runs?sort=model&amp;order=asc"' in page.text
    assert 'data-sort="started" href="/runs"' in page.text  # newest first: the default
    assert http.get("/runs?sort=colour").status_code == 400


def test_pages_of_runs(client: tuple[TestClient, Store]) -> None:
    http, store = client
    ids = [r.id for r in store.list_runs()]
    first = http.get("/runs?per_page=3")
    assert [r["id"] for r in _rows(first.text)] == ids[:3]
    assert 'rel="next" href="/runs?page=2&amp;per_page=3"' in first.text
    assert 'rel="prev"' not in first.text
    second = http.get("/runs?per_page=3&page=2")
    assert [r["id"] for r in _rows(second.text)] == ids[3:]
    assert 'rel="prev" href="/runs?per_page=3"' in second.text
    assert 'rel="next"' not in second.text
    assert 'class="pager"' not in http.get("/runs").text  # one page: no pager
    assert http.get("/runs?page=0").status_code == 400
    wrong = http.get("/runs?page=two")
    assert wrong.status_code == 400 and "is not a whole number" in wrong.text


def test_compare_shows_metrics_config_diff_and_plots(client: tuple[TestClient, Store]) -> None:
    http, store = client
    records = {r.name: r for r in store.list_runs()}
    a, b = records["forest-random"], records["knn-scaffold"]
    page = http.get("/runs/compare", params=[("run", a.id), ("run", b.id[:17])])
    assert page.status_code == 200
    html = page.text
    metrics = html[html.index('id="compare-metrics"') : html.index("</table>")]
    assert f'th data-run-id="{a.id}"' in metrics and f'th data-run-id="{b.id}"' in metrics
    assert a.metrics is not None
    low, high = a.metrics["ci95"]["test"]["rmse"]
    assert f"{a.metrics['test']['rmse']:.3f} [{low:.3f}, {high:.3f}]" in metrics
    diff = html[html.index('id="config-diff"') :]
    differing = re.findall(r'<tr class="diff" data-key="([^"]+)"', diff)
    same = re.findall(r'<tr class="same" data-key="([^"]+)"', diff)
    assert {"name", "model.estimator", "split.method"} <= set(differing)
    assert "dataset.source" in same and "seed" in same
    assert "model.estimator" not in same
    # The first run is the reference: only the values that differ from it are marked.
    row = re.search(r'<tr class="diff" data-key="model.estimator">(.*?)</tr>', diff, re.S)
    assert row is not None
    assert re.findall(r"<td( class=\"changed\")?><code>([^<]*)</code>", row.group(1)) == [
        ("", "random_forest"),
        (' class="changed"', "knn"),
    ]
    # The equal keys are folded away behind a <details>.
    assert diff.index("<details>") < diff.index('<tr class="same"')
    assert f'src="/runs/{a.id}/plot.svg"' in html and f'src="/runs/{b.id}/plot.svg"' in html
    assert 'id="compare-plots"' in html


@pytest.mark.parametrize("query", ["", "?run=abc", "?run=ID&run=ID"])
def test_compare_needs_two_runs(client: tuple[TestClient, Store], query: str) -> None:
    http, store = client
    run_id = store.list_runs()[0].id
    page = http.get("/runs/compare" + query.replace("ID", run_id))
    assert page.status_code == 400
    assert "select two or more runs" in page.text


def test_compare_of_an_unknown_run_is_not_found(client: tuple[TestClient, Store]) -> None:
    http, store = client
    page = http.get("/runs/compare", params=[("run", store.list_runs()[0].id), ("run", "zz")])
    assert page.status_code == 404


def test_home_shows_counts_latest_runs_and_production(client: tuple[TestClient, Store]) -> None:
    http, store = client
    page = http.get("/")
    assert page.status_code == 200
    stats = dict(re.findall(r'data-stat="([\w-]+)"><div class="value">([\d,]+)<', page.text))
    counts = store.table_counts()
    assert stats["runs"] == "4"
    assert stats["datasets"] == str(counts["datasets"])
    assert stats["audit-events"] == f"{counts['audit_events']:,}"
    assert stats["models"] == "0"
    latest = _rows(page.text, "latest-runs")
    assert [r["id"] for r in latest] == [r.id for r in store.list_runs()]
    assert 'id="production"' in page.text and "No model has an alias yet" in page.text


def test_home_lists_models_with_their_aliases(
    filled: Path, tmp_path: Path, client: tuple[TestClient, Store]
) -> None:
    _, source = client
    run = next(r for r in source.list_runs() if r.name == "forest-random")
    # A copy of the store, so that the registration stays this test's own.
    copy = Store.open(tmp_path / "copy")
    try:
        assert source.backup(tmp_path / "backup").ok
        assert copy.restore(tmp_path / "backup").ok
        assert main(["models", "register", run.id, "--name", "sol", "--store", str(copy.root)]) == 0
        assert (
            main(["models", "promote", "sol", "1", "--to", "staging", "--store", str(copy.root)])
            == 0
        )
        page = TestClient(create_app(copy)).get("/")
    finally:
        copy.close()
    production = page.text[page.text.index('id="production"') :]
    assert 'data-model="sol"' in production
    assert re.search(r'data-alias="staging">staging → v1<', production)


def test_run_summaries_are_lean_and_name_who_started_each_run(store: Store) -> None:
    """store.run_summaries() on each backend: newest first, test metrics, CIs and author."""
    first = store.create_run("a", {"model": {"estimator": "knn"}}, 3, None)
    store.finish_run(first, {"test": {"rmse": 0.7}, "ci95": {"test": {"rmse": [0.6, 0.8]}}})
    token = store.runs.change_token()
    second = store.create_run("b", {"split": {"method": "scaffold"}}, None, None)
    assert store.runs.change_token() != token
    token = store.runs.change_token()
    store.fail_run(second, "no data")
    assert store.runs.change_token() != token
    newest, oldest = store.run_summaries()
    assert (newest.id, newest.status, newest.test, newest.error) == (
        second,
        "failed",
        {},
        "no data",
    )
    assert (oldest.id, oldest.seed, oldest.test, oldest.ci) == (
        first,
        3,
        {"rmse": 0.7},
        {"rmse": [0.6, 0.8]},
    )
    assert oldest.config == {"model": {"estimator": "knn"}}
    assert oldest.who == newest.who == store.principal.display


def test_cached_rows_follow_new_runs(filled: Path, tmp_path: Path) -> None:
    """The runs table's cache is rebuilt once a run starts or ends, never served stale."""
    with Store.open(tmp_path / "store") as store:
        cache: dict[str, object] = {}
        assert cached_rows(store, cache) == ()
        run_id = store.create_run("fresh", {"model": {"estimator": "knn"}}, 0, None)
        assert [(r.id, r.status) for r in cached_rows(store, cache)] == [(run_id, "running")]
        store.finish_run(run_id, {"test": {"rmse": 0.5}, "ci95": {"test": {"rmse": [0.4, 0.6]}}})
        (row,) = cached_rows(store, cache)
        assert (row.status, row.value_text) == ("finished", "0.500 [0.400, 0.600]")
        assert query_rows(cached_rows(store, cache), RunsQuery(q="KNN")).total == 1


def test_the_page_benchmark_builds_a_sound_store_and_times_every_page(tmp_path: Path) -> None:
    """benchmarks/ui_pages.py at a tiny size: real runs, a verified chain, pages served."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "ui_pages.py"
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            *("--runs", "8", "--events", "400", "--rows", "120", "--repeats", "2"),
            *("--store", str(tmp_path / "bench"), "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(script.parents[1] / "src")},
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["store"]["runs"] == 8 and figures["store"]["events"] == 400
    assert figures["pages"]["runs"]["status"] == 200
    assert figures["pages"]["home"]["status"] == 200
    assert figures["baseline"]["median_ms"] > 0
    with Store.open(tmp_path / "bench" / "store") as store:
        assert store.verify_audit().ok
        statuses = {r.status for r in store.list_runs()}
        assert "finished" in statuses
        assert {v.name for v in store.list_model_versions()} == {"solubility", "bbb", "sol-small"}
        assert store.current_aliases("bbb") == {"staging": 1, "production": 2}
