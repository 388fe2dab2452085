"""The notation probe: labels a model could read off how a raw file writes its SMILES."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pytest

from qemlflow.benchmark.report import best_versus_dmpnn, literature_check, render_markdown
from qemlflow.benchmark.runner import config_digest, experiment_config, summarize
from qemlflow.benchmark.shortcuts import SHORTCUT_AUC, charge_written, notation_probe
from qemlflow.benchmark.suite import MODELS, resolve_datasets
from qemlflow.data.loading import read_raw


@pytest.mark.parametrize(
    ("smiles", "written"),
    [
        ("CC[NH+](C)C", True),
        ("CC(=O)[O-]", True),
        ("C[N+](=O)[O-]", True),
        ("[Fe-2]", True),
        ("[NH3+]CC", True),
        ("CCN(C)C", False),
        ("[2H]C([2H])[2H]", False),  # brackets without a charge
        ("C[C@H](N)C(=O)O", False),
        ("C=C-C", False),  # a bond, not a charge
    ],
)
def test_a_charge_is_read_from_brackets_only(smiles: str, written: bool) -> None:
    assert charge_written(smiles) is written


def _binary_auc(labels: np.ndarray, bit: np.ndarray) -> float:
    # A one-bit score's ROC-AUC by counting: P(positive scores higher) + half the ties.
    pos, neg = bit[labels == 1], bit[labels == 0]
    higher = pos.mean() * (1 - neg.mean())
    ties = pos.mean() * neg.mean() + (1 - pos.mean()) * (1 - neg.mean())
    auc = float(higher + ties / 2)
    return max(auc, 1 - auc)


def test_clintox_probe_counts_the_raw_file() -> None:
    table = pd.read_csv(io.BytesIO(read_raw("clintox").data))
    bit = np.array([charge_written(s) for s in table["smiles"]], dtype=float)
    probe = notation_probe("clintox")
    assert probe is not None and probe.is_shortcut
    assert probe.n_rows == len(table) == 1478
    assert probe.charged_fraction == pytest.approx(bit.mean())
    for task in ("FDA_APPROVED", "CT_TOX"):
        assert probe.per_task[task] == pytest.approx(_binary_auc(table[task].to_numpy(), bit))
    # The finding the report rests on: approved drugs were written charged, failed ones not.
    failed = table["FDA_APPROVED"] == 0
    assert bit[failed.to_numpy()].mean() < 0.05 < 0.5 < bit[~failed.to_numpy()].mean()


@pytest.mark.parametrize("name", ["bbbp", "bace", "tox21"])
def test_sets_without_the_shortcut_are_not_flagged(name: str) -> None:
    probe = notation_probe(name)
    assert probe is not None and not probe.is_shortcut and probe.mean < SHORTCUT_AUC


def test_regression_and_unknown_sets_have_no_probe() -> None:
    assert notation_probe("esol") is None
    assert notation_probe("no-such-set") is None


def test_reading_the_notation_is_suspicious_only_where_it_gives_the_label_away() -> None:
    raw = literature_check(
        "clintox", "random", "classical", "roc_auc", 0.93, smiles_as_written=True
    )
    assert raw["verdict"] == "suspicious" and "notation" in raw["reason"]
    # The same score from standardized input is judged by the published values as usual.
    assert literature_check("clintox", "random", "classical", "roc_auc", 0.85)["verdict"] == "pass"
    # No shortcut in Tox21's file: reading its SMILES as written is no reason to suspect.
    tox = literature_check("tox21", "random", "classical", "roc_auc", 0.85, smiles_as_written=True)
    assert tox["verdict"] == "pass"


def _entry(model: str, values: list[float]) -> dict[str, Any]:
    clintox = resolve_datasets("moleculenet", ["clintox"])[0]
    seeds = [{"seed": i, "value": v, "seconds": 1.0} for i, v in enumerate(values)]
    return summarize(clintox, MODELS[model], seeds)


def test_the_raw_control_is_marked_and_never_chosen_as_the_best() -> None:
    raw = _entry("lightgbm_raw", [0.90, 0.93, 0.95])
    assert raw["smiles_as_written"] is True and raw["literature_check"]["verdict"] == "suspicious"
    assert "smiles_as_written" not in _entry("lightgbm", [0.7, 0.8, 0.9])
    results = {"clintox": {"lightgbm": _entry("lightgbm", [0.70, 0.88, 0.82]), "lightgbm_raw": raw}}
    (row,) = best_versus_dmpnn(results)
    assert row["model"] == "lightgbm" and row["beats"] is False and row["verdict"] == "pass"
    assert row["shortcut"] == pytest.approx(notation_probe("clintox").mean)  # type: ignore[union-attr]
    # With only suspicious rows, the best of them is shown with its verdict.
    (alone,) = best_versus_dmpnn({"clintox": {"lightgbm_raw": raw}})
    assert alone["model"] == "lightgbm_raw" and alone["verdict"] == "suspicious"
    text = render_markdown(results, [])
    assert "## Shortcuts in the raw files" in text
    assert "| clintox | 1478 |" in text and "| 0.808 | **yes** |" in text
    assert "clintox / random / lightgbm_raw: " in text  # in the suspicion flags
    assert "not comparable: the published value read the SMILES as written" in text


def test_the_best_row_names_the_d_mpnn_that_read_the_notation() -> None:
    standardized = _entry("lightgbm", [0.70, 0.88, 0.82])
    raw_lightgbm = _entry("lightgbm_raw", [0.9] * 3)
    (row,) = best_versus_dmpnn(
        {"clintox": {"lightgbm": standardized, "lightgbm_raw": raw_lightgbm}}
    )
    assert row["raw_dmpnn"] is None  # a raw LightGBM is not the published model's control
    raw_dmpnn = _entry("dmpnn_raw", [0.91, 0.89, 0.92])
    assert raw_dmpnn["literature_check"]["verdict"] == "suspicious"
    results = {"clintox": {"lightgbm": standardized, "dmpnn_raw": raw_dmpnn}}
    (row,) = best_versus_dmpnn(results)
    assert row["model"] == "lightgbm"
    assert row["raw_dmpnn"] == ("dmpnn_raw", pytest.approx(0.9067, abs=1e-3))
    assert "the same D-MPNN reading it: 0.907 (dmpnn_raw)" in render_markdown(results, [])


@pytest.mark.parametrize(
    ("control", "model"), [("lightgbm_raw", "lightgbm"), ("dmpnn_raw", "dmpnn")]
)
def test_the_raw_controls_run_without_standardization(control: str, model: str) -> None:
    clintox = resolve_datasets("moleculenet", ["clintox"])[0]
    raw = experiment_config(clintox, MODELS[control], 0)
    same = experiment_config(clintox, MODELS[model], 0)
    assert raw.dataset.standardize is False and same.dataset.standardize is True
    assert raw.features == same.features and raw.model == same.model
    assert config_digest(raw) != config_digest(same)
    assert MODELS[control].family == MODELS[model].family  # judged against the same row
