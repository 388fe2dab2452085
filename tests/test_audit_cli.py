"""The audit trail as a user meets it: identity, signing, log, anchor, verify, HTML report.

The report is opened in a real headless Chromium (Debian's, installed by
.ci/install-chromium.sh), which takes a screenshot of it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.extras import missing
from tests.identities_helpers import enroll

from qemlflow.cli.main import main
from qemlflow.store import Store

CONFIG: dict[str, Any] = {
    "name": "audited",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp", "size": 512, "counts": True}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
    "evaluation": {"n_bootstrap": 50},
}


@pytest.fixture
def signer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A signing identity in a temporary folder, its passphrase in the environment."""
    folder = tmp_path / "identity"
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(folder))
    monkeypatch.setenv("QEMLFLOW_PASSPHRASE", "correct horse battery")
    monkeypatch.delenv("QEMLFLOW_ACTOR", raising=False)
    assert main(["identity", "init", "--name", "Ada Lovelace", "--email", "ada@lab.org"]) == 0
    return folder


def _recorded_run(tmp_path: Path, source: Path, store: str) -> str:
    config = json.loads(json.dumps(CONFIG))
    config["dataset"]["source"] = str(source)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--store", store, "--out", str(tmp_path / "out")]) == 0
    folder = Path(os.environ["QEMLFLOW_IDENTITY_DIR"])
    if (folder / "identity.json").is_file():  # the store's owner (the OS account) enrolls Ada
        with Store.open(store) as opened:
            enroll(opened, folder, "approver")
    with_store = ["runs", "list", "--json", "--store", store]
    return str(_json(with_store)[0]["id"])


def _json(args: list[str]) -> Any:
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        code = main(args)
    assert code == 0, buffer.getvalue()
    return json.loads(buffer.getvalue())


def test_sign_log_anchor_verify(
    tmp_path: Path, small_esol_csv: Path, signer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "store")
    run_id = _recorded_run(tmp_path, small_esol_csv, store)
    capsys.readouterr()
    assert (
        main(["sign", run_id, "--meaning", "approved", "--reason", "QC passed", "--store", store])
        == 0
    )
    assert "signed (approved) by Ada Lovelace <ada@lab.org>" in capsys.readouterr().out

    events = _json(["audit", "log", "--json", "--store", store, "--object", run_id])
    actions = [e["action"] for e in events]
    assert actions[0] == "run.started" and "run.finished" in actions and "signature" in actions
    anchor = tmp_path / "anchor.json"
    assert main(["audit", "anchor", "-o", str(anchor), "--store", store]) == 0
    assert main(["audit", "verify", "--anchor", str(anchor), "--store", store]) == 0
    assert "audit trail sound" in capsys.readouterr().out

    # An auditor's copy of the log is edited behind the triggers' back.
    db = sqlite3.connect(tmp_path / "store" / "metadata.db")
    db.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    for name in names:
        db.execute(f"DROP TRIGGER {name}")
    db.execute("UPDATE audit_events SET reason = 'QC failed' WHERE action = 'signature'")
    db.commit()
    db.close()
    assert main(["audit", "verify", "--store", store]) == 1
    out = capsys.readouterr().out
    assert "NOT sound" in out and "first bad event" in out


def test_bad_meaning_and_wrong_passphrase_are_one_line_errors(
    tmp_path: Path,
    small_esol_csv: Path,
    signer: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = str(tmp_path / "store")
    run_id = _recorded_run(tmp_path, small_esol_csv, store)
    capsys.readouterr()
    assert main(["sign", run_id, "--meaning", "liked", "--reason", "x", "--store", store]) == 2
    assert "approved" in capsys.readouterr().err
    monkeypatch.setenv("QEMLFLOW_PASSPHRASE", "not the passphrase")
    assert main(["sign", run_id, "--meaning", "reviewed", "--reason", "x", "--store", store]) == 2
    assert "wrong passphrase" in capsys.readouterr().err


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("Chromium is missing: run bash .ci/install-chromium.sh")
    return found


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_report_renders_in_headless_chromium(
    tmp_path: Path, small_esol_csv: Path, signer: Path
) -> None:
    chromium = _chromium()
    store = str(tmp_path / "store")
    run_id = _recorded_run(tmp_path, small_esol_csv, store)
    assert (
        main(["sign", run_id, "--meaning", "reviewed", "--reason", "checked", "--store", store])
        == 0
    )
    report = tmp_path / "report.html"
    assert main(["audit", "report", run_id, "-o", str(report), "--store", store]) == 0
    html = report.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained

    dom = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    for expected in (run_id, "Lineage", "raw data", "rmse", "Ada Lovelace", "reviewed", "intact"):
        assert expected in text, expected
    assert "data:image/png;base64," in text

    shot = tmp_path / "report.png"
    done = _headless(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        report.as_uri(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 50_000

    model = tmp_path / "out" / "model.joblib"
    assert (
        main(["audit", "report", str(model), "-o", str(tmp_path / "m.html"), "--store", store]) == 0
    )
    assert run_id in (tmp_path / "m.html").read_text()


def test_verify_catches_an_altered_blob_an_event_refers_to(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qemlflow.store import Store

    store = str(tmp_path / "store")
    run_id = _recorded_run(tmp_path, small_esol_csv, store)
    with Store.open(store) as opened:
        added = opened.audit_events(action="dataset.added")[0]
        path = opened.open_blob_path(added.objects["table"])
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b"smiles", b"SMILES", 1))
    capsys.readouterr()
    assert main(["audit", "verify", "--store", store]) == 1
    out = capsys.readouterr().out
    assert f"first bad event {added.seq}" in out and "altered" in out
    assert run_id
