"""Monitoring of a served model: a real uvicorn server, a real store, ``qemlflow monitor``.

An ESOL model is trained on every other molecule; the service aggregates in 1-second
windows (``monitor_seconds``, the documented hook) and writes the open window when it
stops. Molecules far from ESOL (peptides, salts, metal complexes) must raise the
out-of-domain alert; the held-out ESOL molecules must raise none.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.extras import require_extra

# Before the imports that need the extras: without them the module is skipped (or,
# under CI=true, fails) instead of erroring at collection.
require_extra("uvicorn")
require_extra("httpx")

import httpx  # noqa: E402
from tests.test_serve import CONFIG, serving  # noqa: E402

import qemlflow as qm  # noqa: E402
from qemlflow import registry  # noqa: E402
from qemlflow.monitoring import evaluate, ks_statistic, psi  # noqa: E402
from qemlflow.store import Store  # noqa: E402

_AMINO = "ACDEFGHIKLMNPQRSTVWY"
_INORGANIC = [
    "[Na+].[Cl-]",
    "[K+].[Br-]",
    "[Ca+2].[Cl-].[Cl-]",
    "O=S(=O)([O-])[O-].[Mg+2]",
    "[Cu+2].[O-]S([O-])(=O)=O",
    "Cl[Pt](Cl)([NH3])[NH3]",
    "[Fe+3].[Cl-].[Cl-].[Cl-]",
    "O=[Ti]=O",
    "[Li+].[OH-]",
    "N#[Co]",
]


def _peptides(n: int, seed: int = 0) -> list[str]:
    from rdkit import Chem

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sequence = "".join(rng.choice(_AMINO) for _ in range(rng.randint(12, 20)))
        out.append(Chem.MolToSmiles(Chem.MolFromSequence(sequence)))
    return out


def test_statistics_on_known_histograms() -> None:
    assert psi([25, 25, 25, 25], [25, 25, 25, 25]) == 0.0
    assert psi([25, 25, 25, 25], [97, 1, 1, 1]) > 1.0
    assert ks_statistic([1, 0, 0], [0, 0, 1]) == 1.0
    reference = {"prediction_counts": [5, 5], "similarity_counts": [0, 10], "ood_rate": 0.1}
    row = {
        "requests": 2,
        "molecules": 100,
        "errors": 0,
        "out_of_domain": 90,
        "latency_counts": [2],
        "prediction_counts": [50, 50],
        "similarity_counts": [90, 10],
    }
    report = evaluate("m", 1, reference, [row], window_seconds=60, window_start="t")
    assert report.alerts == ["similarity_drift", "out_of_domain"]
    few = evaluate(
        "m",
        1,
        reference,
        [{**row, "molecules": 10, "out_of_domain": 9}],
        window_seconds=60,
        window_start="t",
    )
    assert few.alerts == []  # under 50 molecules: no alert


def test_policy_monitoring_section_is_checked() -> None:
    policy = registry.validate_policy({"monitoring": {"psi": 0.1}}, "p.yaml")
    assert policy.monitoring is not None and policy.monitoring.psi == 0.1
    with pytest.raises(qm.errors.ConfigError, match="monitoring"):
        registry.validate_policy({"monitoring": {"ood_excess": 2}}, "p.yaml")


@pytest.fixture(scope="module")
def monitored(
    tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame
) -> Iterator[tuple[Store, str, list[str]]]:
    """Two names of one run (trained on every other ESOL molecule), an API key and the
    held-out molecules."""
    folder = tmp_path_factory.mktemp("monitor")
    csv = folder / "train.csv"
    esol_frame.iloc[::2].to_csv(csv, index=False)
    held_out = [str(s) for s in esol_frame.iloc[1::2].smiles]
    store = Store.open(folder / "store")
    config = {
        **CONFIG,
        "seed": 0,
        "dataset": {**CONFIG["dataset"], "source": str(csv)},
        "promotion": {"monitoring": {"min_molecules": 40, "ood_excess": 0.2}},
    }
    run_id = qm.run(config, store=store).run_id
    assert run_id is not None
    for name in ("drifted", "clean"):
        registry.register(store, run_id, name)
    _, key = store.create_api_key("monitor-tests")
    yield store, key, held_out
    store.close()


def _send(url: str, key: str, smiles: list[str], batch: int = 200) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        for start in range(0, len(smiles), batch):
            answer = c.post("/predict", json={"smiles": smiles[start : start + batch]})
            assert answer.status_code == 200, answer.text


def _monitor(store: Store, spec: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", "monitor", spec, "--store", str(store.root), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alert_events(store: Store, name: str) -> list[Any]:
    return [e for e in store.audit_events(action="monitor.alert") if e.details["name"] == name]


def _metric_lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_far_molecules_raise_the_out_of_domain_alert(
    monitored: tuple[Store, str, list[str]],
) -> None:
    store, key, _ = monitored
    far = _peptides(1000) + _INORGANIC * 100
    random.Random(1).shuffle(far)
    with serving(store, "drifted@1", poll_seconds=0, monitor_seconds=1) as (url, _):
        _send(url, key, far)
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline:  # the 1-s window is flushed and checked
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
                text = c.get("/metrics").text
            lines = _metric_lines(text, 'qemlflow_monitor_alert{alert="out_of_domain"')
            if lines and lines[0].endswith(" 1.0"):
                break
            time.sleep(0.5)
        assert lines and lines[0].endswith(" 1.0"), lines
        assert 'qemlflow_monitor_statistic{model="drifted",statistic="ood_rate"' in text
    done = _monitor(store, "drifted@1", "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert "out_of_domain" in report["alerts"]
    assert report["threshold_source"].startswith("promotion.monitoring of run")
    assert report["thresholds"]["min_molecules"] == 40
    assert report["molecules"] == len(far) and report["requests"] == 10
    assert report["ood_rate"] > report["training_ood_rate"] + 0.2
    assert sum(report["latency_counts"]) == 10
    events = [e for e in _alert_events(store, "drifted") if e.details["alert"] == "out_of_domain"]
    assert len(events) == 1  # once per window, however often it is checked
    assert _monitor(store, "drifted@1").returncode == 3
    assert len(_alert_events(store, "drifted")) == len(report["alerts"])
    # no SMILES reaches the store: the policy does not ask for them
    rows = store.monitoring.minutes("drifted", 1, "2000-01-01T00:00:00Z")
    assert rows and set(rows[0]) == {
        "id",
        "name",
        "version",
        "minute",
        "seconds",
        "requests",
        "molecules",
        "errors",
        "out_of_domain",
        "latency_counts",
        "prediction_counts",
        "similarity_counts",
        "ood_smiles",
    }
    assert all(row["ood_smiles"] is None for row in rows)  # store_smiles is off by default


def test_held_out_esol_raises_no_alert(monitored: tuple[Store, str, list[str]]) -> None:
    store, key, held_out = monitored
    molecules = (held_out * 4)[:2000]
    with serving(store, "clean@1", poll_seconds=0, monitor_seconds=1) as (url, _):
        _send(url, key, molecules)
    done = _monitor(store, "clean@1", "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 0, report
    assert report["alerts"] == [] and report["molecules"] == 2000
    assert _alert_events(store, "clean") == []
    text = _monitor(store, "clean", "--window", "10m").stdout
    assert "no alert" in text and "PSI" in text


def test_leave_one_out_similarity_excludes_only_the_molecule_itself(
    esol_frame: pd.DataFrame,
) -> None:
    from qemlflow.serve.domain import ApplicabilityDomain, ecfp4_packed

    smiles = [str(s) for s in esol_frame.smiles[:60]]
    packed, valid = ecfp4_packed(smiles)
    packed = packed[valid]
    got = ApplicabilityDomain().fit_packed(packed).leave_one_out_similarity()
    for i in range(len(packed)):
        others = ApplicabilityDomain().fit_packed(np.delete(packed, i, axis=0))
        assert got[i] == pytest.approx(others.similarity_packed(packed[i : i + 1])[0])


def test_a_few_values_are_binned_as_many_are() -> None:
    """The event loop bins a one-molecule request with bisect, a big one with NumPy: the
    same counts, values on an edge included (both cut on the right, as bin_index)."""
    from qemlflow.monitoring import SIMILARITY_EDGES, bin_index
    from qemlflow.serve.monitoring import _add_bins

    rng = np.random.default_rng(0)
    edges = sorted(rng.normal(size=9).tolist())
    values = [*rng.normal(size=500).tolist(), *edges, -np.inf, np.inf]
    for cuts in (edges, list(SIMILARITY_EDGES)):
        at_once = [0] * (len(cuts) + 1)
        _add_bins(at_once, values, cuts)
        one_by_one = [0] * (len(cuts) + 1)
        for start in range(0, len(values), 3):
            _add_bins(one_by_one, values[start : start + 3], cuts)
        expected = [0] * (len(cuts) + 1)
        for value in values:
            expected[bin_index(value, cuts)] += 1
        assert at_once == one_by_one == expected
