"""The run page of ``qemlflow ui`` (``/runs/{id}`` and ``/runs/{id}/plot.svg``) on a store
holding real runs (a regression run on small ESOL, a two-task regression run and a
classification run on BBBP), and the layout of its plots and lineage graph.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score

import qemlflow as qm
from qemlflow.data.loading import read_raw
from qemlflow.store import Store
from qemlflow.ui.app import create_app
from qemlflow.ui.graph import (
    NODE_WIDTH,
    WAYPOINT_WIDTH,
    Edge,
    Graph,
    Node,
    graph_svg,
    layered_layout,
    lineage_graph,
)
from qemlflow.ui.plots import histogram_svg, nice_ticks, parity_svg, roc_curve, roc_svg

FEATURES = [{"type": "ecfp", "radius": 2, "size": 512}]
MODEL = {"estimator": "random_forest", "params": {"n_estimators": 20}}


@dataclass
class Runs:
    store: Store
    client: TestClient
    regression: str
    multitask: str
    classification: str
    failed: str


def _run(store: Store, name: str, csv: Path, targets: list[str], **extra: Any) -> str:
    config: dict[str, Any] = {
        "name": name,
        "seed": 0,
        "dataset": {"source": str(csv), "smiles_column": "smiles", "target_columns": targets},
        "features": FEATURES,
        "model": MODEL,
        "evaluation": {"n_bootstrap": 20, "plots": False},
        **extra,
    }
    result = qm.run(config, store=store)
    assert result.run_id is not None
    return result.run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame) -> Iterator[Runs]:
    """Three runs in one store. The ESOL file has 240 rows plus an unparsable and an
    empty SMILES; its test part (30 %) is about 70 molecules: two pages of predictions."""
    folder = tmp_path_factory.mktemp("ui-run")
    frame = esol_frame.head(240).copy()
    bad = pd.DataFrame({"smiles": ["C1CC(not smiles", ""], "logp": [-1.0, -2.0]})
    frame = pd.concat([frame.iloc[:100], bad, frame.iloc[100:]], ignore_index=True)
    esol = folder / "esol.csv"
    frame.to_csv(esol, index=False)
    two = folder / "two.csv"
    frame.assign(half=frame["logp"] / 2 + 0.3).to_csv(two, index=False)
    bbbp = folder / "bbbp.csv"
    pd.read_csv(io.BytesIO(read_raw("bbbp").data)).head(300)[["smiles", "p_np"]].to_csv(
        bbbp, index=False
    )
    tiny = folder / "tiny.csv"
    pd.DataFrame({"smiles": ["CCO", "CCCO", "CCCCO"], "logp": [0.1, 0.2, 0.3]}).to_csv(tiny)
    store = Store.open(folder / "store")
    split = {"split": {"method": "random", "sizes": [0.6, 0.1, 0.3]}}
    regression = _run(store, "sol", esol, ["logp"], **split)
    multitask = _run(store, "two", two, ["logp", "half"])
    classification = _run(store, "bbbp", bbbp, ["p_np"])
    with pytest.raises(qm.QeMLflowError, match="at least"):
        _run(store, "tiny", tiny, ["logp"])  # too few molecules: a failed run
    failed = next(r.id for r in store.list_runs() if r.name == "tiny")
    made = Runs(store, TestClient(create_app(store)), regression, multitask, classification, failed)
    yield made
    store.close()


class _Elements(HTMLParser):
    """Every start tag as (tag, attributes, index); text collected per element id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        found = []
        for name, have in self.tags:
            if name != tag:
                continue
            wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
            if all(
                (v in have.get(k, "").split()) if k == "class" else have.get(k) == v
                for k, v in wanted.items()
            ):
                found.append(have)
        return found


def _parse(text: str) -> _Elements:
    parser = _Elements()
    parser.feed(text)
    return parser


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert match, f"no section#{section_id}"
    return match.group(1)


def _artifact(store: Store, run_id: str, name: str) -> str:
    """A run's artifact as text, read from the store's blobs."""
    record = store.get_run(run_id)
    (digest,) = [a.digest for a in record.artifacts if a.name == name]
    return store.get_bytes(digest).decode("utf-8")


def _page(runs: Runs, run_id: str, query: str = "") -> str:
    response = runs.client.get(f"/runs/{run_id}{query}")
    assert response.status_code == 200, response.text[-500:]
    return response.text


def test_run_page_shows_every_section(runs: Runs) -> None:
    record = runs.store.get_run(runs.regression)
    html = _page(runs, runs.regression)
    page = _parse(html)
    assert page.find("main", id="page")[0]["data-page"] == "runs"
    assert re.search(r"<h1[^>]*>.*sol.*</h1>", html, re.S)
    summary = _section_text(html, "summary", "dl")
    for words in ("finished", "random_forest", "random", "esol", "0"):
        assert words in summary
    assert "<pre>" in _section(html, "config")
    assert '"n_estimators": 20' in unescape(_section(html, "config"))
    # metrics: every test metric with its bootstrap CI, e.g. "[0.957, 2.067]"
    metrics = record.metrics or {}
    rows = page.find("tr")
    names = [r["data-metric"] for r in rows if "data-metric" in r]
    assert set(names) == set(metrics["test"])
    rmse = re.search(r'<tr data-metric="rmse">(.*?)</tr>', html, re.S)
    assert rmse is not None
    low, high = metrics["ci95"]["test"]["rmse"]
    assert f"{metrics['test']['rmse']:.3f}" in rmse.group(1)
    assert f"[{low:.3f}, {high:.3f}]" in rmse.group(1)
    # steps, with cache state and key prefix
    steps = re.findall(r'<tr data-step="(\w+)">(.*?)</tr>', _section(html, "steps"), re.S)
    assert [name for name, _ in steps] == [s.step for s in record.steps]
    for (_, cells), step in zip(steps, record.steps, strict=True):
        assert step.key[:12] in cells
        assert re.search(r'class="cache">.*(hit|computed)', cells, re.S)
    # environment: the captured snapshot's python and libraries
    environment = _section(html, "environment")
    import platform

    assert platform.python_version() in environment
    assert 'data-library="rdkit"' in environment and 'data-library="scikit-learn"' in environment


def _section_text(html: str, element_id: str, tag: str) -> str:
    match = re.search(rf'<{tag} id="{element_id}"[^>]*>(.*?)</{tag}>', html, re.S)
    assert match, f"no {tag}#{element_id}"
    return re.sub(r"<[^>]+>", " ", match.group(1))


def test_parity_plot_has_one_point_per_test_molecule(runs: Runs) -> None:
    record = runs.store.get_run(runs.regression)
    n_test = (record.metrics or {})["n"]["test"]
    plots = _parse(_section(_page(runs, runs.regression), "plots"))
    assert plots.find("svg", class_="parity") and not plots.find("svg", class_="roc")
    points = plots.find("circle", class_="point")
    assert len(points) == n_test and 50 < n_test < 100
    assert all(p["data-tooltip"] and p["data-depict"].startswith("/depict?smiles=") for p in points)
    # the depiction link names a molecule the depict endpoint draws
    depicted = runs.client.get(points[0]["data-depict"])
    assert depicted.status_code == 200 and "<svg" in depicted.text
    # axes with ticks and labels, and the y = x line
    svg = _section(_page(runs, runs.regression), "plots")
    assert "observed logp" in svg and "predicted logp" in svg
    assert 'class="identity"' in svg and svg.count('class="tick x"') >= 3


def test_plot_svg_endpoint_is_a_standalone_image(runs: Runs) -> None:
    response = runs.client.get(f"/runs/{runs.regression}/plot.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.text.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    n_test = (runs.store.get_run(runs.regression).metrics or {})["n"]["test"]
    assert response.text.count('class="point"') == n_test
    missing = runs.client.get("/runs/19990101-000000-000000/plot.svg")
    assert missing.status_code == 404


def test_roc_curve_for_classification_states_its_auc(runs: Runs) -> None:
    record = runs.store.get_run(runs.classification)
    metrics = record.metrics or {}
    html = _page(runs, runs.classification)
    plots = _parse(_section(html, "plots"))
    assert plots.find("svg", class_="roc") and not plots.find("svg", class_="parity")
    assert len(plots.find("circle", class_="point")) == metrics["n"]["test"]
    # the legend's AUC is the run's recorded test ROC AUC
    assert f"AUC {metrics['test']['roc_auc']:.3f}" in _section(html, "plots")
    image = runs.client.get(f"/runs/{runs.classification}/plot.svg")
    assert 'class="plot roc"' in image.text
    # classification rows show the probability, not an interval
    predictions = _section(html, "predictions")
    assert 'class="num probability"' in predictions and 'class="interval"' not in predictions


def test_multitask_run_has_a_plot_per_task(runs: Runs) -> None:
    html = _page(runs, runs.multitask)
    assert 'data-task="logp"' in html and 'data-task="half"' in html
    first = _section(html, "plots")
    second = _section(_page(runs, runs.multitask, "?task=half"), "plots")
    assert "observed logp" in first and "observed half" in second
    n_test = (runs.store.get_run(runs.multitask).metrics or {})["n"]["test"]
    assert second.count('class="point"') == n_test
    image = runs.client.get(f"/runs/{runs.multitask}/plot.svg?task=half")
    assert "observed half" in image.text
    assert 'id="per-task-table"' in html


def test_predictions_are_paged_with_structures(runs: Runs) -> None:
    n_test = (runs.store.get_run(runs.regression).metrics or {})["n"]["test"]
    first = _parse(_section(_page(runs, runs.regression), "predictions"))
    rows = first.find("tr", class_="prediction")
    assert len(rows) == 50
    assert len(first.find("svg", class_="depiction")) == 50
    assert first.find("a", rel="next") and not first.find("a", rel="prev")
    second = _parse(_section(_page(runs, runs.regression, "?page=2"), "predictions"))
    assert len(second.find("tr", class_="prediction")) == n_test - 50
    assert second.find("a", rel="prev") and not second.find("a", rel="next")
    shown = {r["data-row"] for r in rows} | {
        r["data-row"] for r in second.find("tr", class_="prediction")
    }
    assert len(shown) == n_test  # no molecule on both pages
    beyond = _parse(_section(_page(runs, runs.regression, "?page=99"), "predictions"))
    assert len(beyond.find("tr", class_="prediction")) == n_test - 50  # the last page
    assert runs.client.get(f"/runs/{runs.regression}?page=0").status_code == 400


def test_an_ensemble_run_shows_its_members_spread(
    runs: Runs, tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    """The ``ensemble_sd`` column of predictions.csv is a column of the page; other runs
    have none."""
    esol = tmp_path / "esol.csv"
    esol_frame.head(120).to_csv(esol, index=False)
    members = [
        {"estimator": "random_forest", "params": {"n_estimators": 10}},
        {"estimator": "knn"},
    ]
    store = Store.open(tmp_path / "store")
    try:
        run_id = _run(
            store, "ens", esol, ["logp"], model={"estimator": "ensemble", "members": members}
        )
        html = TestClient(create_app(store)).get(f"/runs/{run_id}").text
        predictions = pd.read_csv(io.StringIO(_artifact(store, run_id, "predictions.csv")))
    finally:
        store.close()
    table = _section(html, "predictions")
    assert "ensemble sd" in table
    cells = re.findall(r'<td class="num ensemble-sd">([^<]*)</td>', table)
    test_sd = predictions.loc[predictions["split"] == "test", "ensemble_sd"]
    assert len(cells) == len(test_sd) > 0
    assert sorted(round(float(c), 2) for c in cells) == sorted(round(v, 2) for v in test_sd)
    assert 'id="ensemble-spread"' in html
    assert "ensemble sd" not in _section(_page(runs, runs.regression), "predictions")


def test_rejected_rows_come_with_their_reasons(runs: Runs) -> None:
    rejected = _section(_page(runs, runs.regression), "rejected")
    reasons = re.findall(r'<td class="reason">([^<]*)</td>', rejected)
    assert {"unparsable", "empty"} <= set(reasons)
    assert rejected.count('class="rejected"') == len(reasons)
    assert "C1CC(not smiles" in rejected


def test_lineage_graph_reaches_the_raw_file_without_duplicates(runs: Runs) -> None:
    record = runs.store.get_run(runs.regression)
    dataset = next(d for d in runs.store.list_datasets() if d.name == "esol")
    lineage = _section(_page(runs, runs.regression), "lineage")
    graph = _parse(lineage)
    assert graph.find("svg", id="lineage-graph")
    nodes = graph.find("g", class_="node")
    ids = [n["data-id"] for n in nodes]
    assert len(ids) == len(set(ids)), "a repeated step was drawn twice"
    kinds = [n["data-kind"] for n in nodes]
    assert kinds.count("run") == 1 and kinds.count("raw") == 1
    assert kinds.count("step") == len({s.key for s in record.steps})
    assert kinds.count("artifact") == len(record.artifacts)
    raw = re.search(r'<g class="node" data-kind="raw".*?</g>', lineage, re.S)
    assert raw is not None and f"sha256 {dataset.raw_digest[:12]}" in raw.group(0)
    assert dataset.raw_digest is not None and dataset.raw_digest in raw.group(0)  # <title>
    edges = graph.find("path", class_="edge")
    assert edges and all(e["data-source"] in ids and e["data-target"] in ids for e in edges)
    # standardize feeds several steps: one node with several outgoing edges
    standardize = next(s for s in record.steps if s.step == "standardize")
    assert sum(e["data-source"] == f"step:{standardize.key}" for e in edges) >= 3


def test_signatures_list_the_runs_audit_events_verified(runs: Runs) -> None:
    signatures = _section(_page(runs, runs.regression), "signatures")
    rows = re.findall(r'<tr data-seq="(\d+)">(.*?)</tr>', signatures, re.S)
    events = runs.store.audit_events(object_ref=runs.regression)
    assert [int(seq) for seq, _ in rows] == [e.seq for e in events]
    assert {"run.started", "run.finished"} <= {e.action for e in events}
    for (_, cells), event in zip(rows, events, strict=True):
        assert event.action in cells and (event.signer or "")[:16] in cells
        assert 'data-state="verified"' in cells


def test_a_failed_run_says_why_and_what_is_missing(runs: Runs) -> None:
    record = runs.store.get_run(runs.failed)
    assert record.status == "failed" and record.error
    html = _page(runs, runs.failed)
    assert 'id="run-error"' in html and "at least" in html
    for section in ("metrics", "plots", "predictions"):
        assert '<p class="empty">' in _section(html, section), section
    assert 'data-kind="raw"' in _section(html, "lineage")  # it got as far as the data
    image = runs.client.get(f"/runs/{runs.failed}/plot.svg")
    assert image.status_code == 200 and "no test predictions" in image.text


def test_run_ids_by_prefix_and_unknown_ones(runs: Runs) -> None:
    prefix = runs.classification[:17]
    html = _page(runs, prefix)
    assert runs.classification in html and "bbbp" in html
    for missing in ("19990101-000000", "not-a-run"):
        response = runs.client.get(f"/runs/{missing}")
        assert response.status_code == 404
        assert 'data-page="error"' in response.text and "no run matches" in response.text
    # every run id starts with the year: an ambiguous prefix names no single run
    assert runs.client.get(f"/runs/{runs.regression[:4]}").status_code == 404


def test_finished_runs_are_built_once(runs: Runs) -> None:
    _page(runs, runs.regression)
    cache = runs.client.app.state.ui.cache["run-pages"]  # type: ignore[attr-defined]
    view = cache[runs.regression]
    _page(runs, runs.regression, "?page=2")
    assert cache[runs.regression] is view
    assert view.plots, "the plot is kept with the run"


# -- plots.py and graph.py on their own ----------------------------------------------------


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    for low, high in [(-7.87, 1.1), (0.0, 1.0), (3.2, 3.2), (-0.004, 0.013), (12, 9870)]:
        ticks = nice_ticks(low, high)
        assert ticks[0] <= min(low, high) and ticks[-1] >= max(low, high)
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0]) and 2 <= len(ticks) <= 12


def test_roc_curve_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(labels * 0.3 + rng.random(200), 2)  # with ties
    fpr, tpr, area = roc_curve(labels, scores)
    assert area == pytest.approx(roc_auc_score(labels, scores))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    svg = roc_svg(labels, scores, ["C"] * 200)
    assert svg.count('class="point"') == 200 and f"AUC {area:.3f}" in svg


def test_plots_escape_smiles_and_stay_light() -> None:
    rng = np.random.default_rng(1)
    hostile = 'C"><script>alert(1)</script>'
    smiles = [hostile] + [f"C{'C' * (i % 20)}O" for i in range(1199)]
    svg = parity_svg(rng.normal(size=1200), rng.normal(size=1200), smiles)
    assert "<script>" not in svg
    assert "/depict?smiles=C%22%3E%3Cscript%3E" in svg
    assert svg.count('class="point"') == 1200
    assert len(svg) < 300_000  # about 200 bytes a point
    # missing values are left out, never drawn at 0
    assert parity_svg([1.0, float("nan")], [1.0, 2.0], ["CC", "CCC"]).count('class="point"') == 1
    assert 'class="point"' not in parity_svg([], [], [])
    bars = histogram_svg(rng.normal(size=500), bins=12, title="logp")
    assert bars.count('class="bar"') == 12 and 'class="plot histogram"' in bars


def _lineage_tree() -> dict[str, Any]:
    """A run whose steps share inputs, as lineage() lists them (repeats marked)."""
    raw = {"kind": "raw", "digest": "ab" * 32}

    def step(name: str, key: str, *inputs: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "step", "step": name, "key": key * 32, "inputs": list(inputs)}

    def again(name: str, key: str) -> dict[str, Any]:
        return {"kind": "step", "step": name, "key": key * 32, "repeated": True}

    std = step("standardize", "02", step("dataset", "01", raw))
    fit = step("fit", "05", step("featurize", "03", std), step("split", "04", again("s", "02")))
    predict = step("predict", "06", fit, again("featurize", "03"))
    evaluate = step("evaluate", "07", predict, again("split", "04"), again("s", "02"))
    return {
        "kind": "run",
        "id": "r1",
        "name": "demo",
        "artifacts": [
            {"kind": "artifact", "name": f"a{i}.csv", "digest": f"{i}" * 64, "produced_by": "run"}
            for i in range(5)
        ],
        "inputs": [evaluate],
    }


def test_lineage_graph_merges_repeated_steps() -> None:
    graph = lineage_graph(_lineage_tree())
    ids = [n.id for n in graph.nodes]
    assert len(ids) == len(set(ids)) == 1 + 5 + 7 + 1
    assert all(e.source in ids and e.target in ids for e in graph.edges)
    assert len({(e.source, e.target) for e in graph.edges}) == len(graph.edges)
    into = [e.target for e in graph.edges if e.source == "step:" + "02" * 32]
    assert sorted(into) == sorted(f"step:{k * 32}" for k in ("03", "04", "07"))


def test_layout_keeps_boxes_apart_and_routes_edges_around_them() -> None:
    graph = lineage_graph(_lineage_tree())
    layout = layered_layout(graph)
    rows: dict[int, list[str]] = {}
    for node, row in layout.layer.items():
        rows.setdefault(row, []).append(node)
    for members in rows.values():
        spans = sorted((layout.x[n], layout.x[n] + NODE_WIDTH) for n in members)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
        assert len({layout.y[n] for n in members}) == 1
    assert layout.layer["raw:" + "ab" * 32] == max(layout.layer.values())
    assert min(layout.layer, key=lambda n: layout.layer[n]).startswith("artifact:")
    for edge in graph.edges:
        assert layout.layer[edge.source] > layout.layer[edge.target]  # inputs lie below
        points = layout.routes[(edge.source, edge.target)]
        # between its ends, an edge runs through gaps: never across another box
        for x, y in points[1:-1]:
            for node in graph.nodes:
                if layout.y[node.id] == y or layout.y[node.id] + 40 == y:
                    left = layout.x[node.id]
                    assert not (left < x < left + NODE_WIDTH), (edge, node.id)
    assert WAYPOINT_WIDTH < NODE_WIDTH
    svg = graph_svg(graph, element_id="g1")
    assert svg.count('class="node"') == len(graph.nodes)
    assert svg.count('class="edge"') == len(graph.edges)
    assert 'id="g1"' in svg and "sha256 abababababab" in svg


def test_graph_labels_are_escaped() -> None:
    graph = Graph([Node("n<1>", "step", ("<b>", "x&y"), "<script>")], [])
    svg = graph_svg(graph)
    assert "<script>" not in svg and "&lt;b&gt;" in svg and "x&amp;y" in svg
    chain = Graph([Node(c, "step", (c, ""), c) for c in "abc"], [Edge("c", "b"), Edge("b", "a")])
    assert [layered_layout(chain).layer[c] for c in "abc"] == [0, 1, 2]
