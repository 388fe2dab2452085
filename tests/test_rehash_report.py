"""benchmarks/rehash_report.py carries committed benchmark digests over a formula change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qemlflow.benchmark.runner import config_digest, experiment_config, legacy_config_digest
from qemlflow.benchmark.suite import MODELS, resolve_datasets

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "rehash_report.py"
REPORT = ROOT / "docs" / "benchmarks" / "moleculenet.json"


def _rehash(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), *flags],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_the_committed_report_carries_current_digests() -> None:
    done = _rehash(REPORT, "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " 0 digests rewritten" in done.stdout


def test_rehash_rewrites_legacy_digests_only_and_is_idempotent(tmp_path: Path) -> None:
    results = json.loads(REPORT.read_text(encoding="utf-8"))
    esol = resolve_datasets("moleculenet", ["esol"])[0]
    cfg = experiment_config(esol, MODELS["default"], 0)
    seeds = results["esol"]["default"]["seeds"]
    seeds[0]["config_digest"] = legacy_config_digest(cfg)  # as written before RFC 8785
    seeds[1]["config_digest"] = "f" * 64  # an experiment that changed since it ran
    path = tmp_path / "moleculenet.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    first = _rehash(path)
    assert first.returncode == 0, first.stderr
    assert " 1 digests rewritten" in first.stdout
    assert "esol/default/seed 1 (its experiment changed since it ran)" in first.stdout
    after = json.loads(path.read_text(encoding="utf-8"))["esol"]["default"]["seeds"]
    assert after[0]["config_digest"] == config_digest(cfg)
    assert after[1]["config_digest"] == "f" * 64  # never blessed: it will be recomputed
    assert [s["value"] for s in after] == [s["value"] for s in seeds]

    text = path.read_text(encoding="utf-8")
    second = _rehash(path)
    assert " 0 digests rewritten" in second.stdout and path.read_text(encoding="utf-8") == text
