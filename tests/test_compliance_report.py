"""The compliance report says who did what, how they were authenticated, with what authority,
and which Part 11 / Annex 11 controls the software covers.

A real run in a real store through the CLI, signed by its author and by a second person,
registered and promoted; the report file is read back.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from qemlflow.audit.accountability import AUTHOR, INDEPENDENT, REGISTRANT, relation_to
from qemlflow.audit.controls import ANNEX_11, CONTROLS, COVERAGE, PART_11, compliance_markdown
from qemlflow.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

CONFIG: dict[str, Any] = {
    "name": "accountable",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp", "size": 256}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 20},
}

PART_11_CLAUSES = (
    "§11.10(a)",
    "§11.10(b)",
    "§11.10(c)",
    "§11.10(d)",
    "§11.10(e)",
    "§11.10(g)",
    "§11.10(k)",
    "§11.50",
    "§11.70",
    "§11.100",
    "§11.200",
    "§11.300",
)
ANNEX_11_CLAUSES = ("§4", "§7", "§9", "§12", "§14", "§16")


def _identity(folder: Path, name: str, email: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(folder))
    assert main(["identity", "init", "--name", name, "--email", email]) == 0
    return folder


def _json(args: list[str]) -> Any:
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        code = main(args)
    assert code == 0, buffer.getvalue()
    return json.loads(buffer.getvalue())


def _text(report: Path) -> str:
    """The report's visible text, one line per table row and paragraph (as a reader sees it)."""
    source = report.read_text(encoding="utf-8")
    source = re.sub(r"<(tr|p|h[1-3]|li|div)[ >]", lambda m: "\n" + m.group(0), source)
    text = html.unescape(re.sub(r"<[^>]+>", " ", source))
    return re.sub(r"[ \t]+", " ", text)


def _squeezed(text: str) -> str:
    """``text`` without white space and backquotes (the report shows `x` as code)."""
    return re.sub(r"[\s`]+", "", text)


def _row(text: str, *needles: str) -> bool:
    """Whether one line (a table row, a paragraph) of the report's text holds every needle."""
    return any(all(n in line for n in needles) for line in text.split("\n"))


@pytest.fixture
def audited(
    tmp_path: Path, small_esol_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A store owned by the OS account (admin), which enrolls Ada (approver) and Bob
    (contributor, then approver). Ada runs, registers and reviews her own run; Bob
    approves it and promotes the model; then the admin makes Bob a viewer."""
    from qemlflow.store import Store

    monkeypatch.setenv("QEMLFLOW_PASSPHRASE", "correct horse battery")
    ada = _identity(tmp_path / "ada", "Ada Lovelace", "ada@lab.org", monkeypatch)
    bob = _identity(tmp_path / "bob", "Bob Babbage", "bob@lab.org", monkeypatch)
    admin = tmp_path / "admin"  # the OS account's key: the first write makes it the owner
    admin.mkdir()
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(admin))
    store = str(tmp_path / "store")
    people = {}
    for folder in (ada, bob):
        people[folder.name] = json.loads((folder / "identity.json").read_text())
    with Store.open(store) as opened:
        for who, role in (("ada", "approver"), ("bob", "contributor")):
            person = people[who]
            opened.identities.enroll(
                name=person["name"],
                email=person["email"],
                public_key=person["public_key"],
                role=role,
                auth="passphrase",
                reason="identity checked against ID card",
            )
        opened.identities.set_role("bob@lab.org", "approver", reason="Bob leads QA")

    config = json.loads(json.dumps(CONFIG))
    config["dataset"]["source"] = str(small_esol_csv)
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(ada))
    assert main(["run", str(experiment), "--store", store, "--out", str(tmp_path / "out")]) == 0
    run_id = str(_json(["runs", "list", "--json", "--store", store])[0]["id"])
    assert main(["models", "register", run_id, "--name", "sol", "--store", store]) == 0
    sign = ["sign", run_id, "--store", store]
    assert main([*sign, "--meaning", "reviewed", "--reason", "my own check"]) == 0
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(bob))
    assert main([*sign, "--meaning", "approved", "--reason", "QC passed"]) == 0
    policy = tmp_path / "gates.yaml"
    policy.write_text(yaml.safe_dump({"require_signature": "approved"}))
    promote = ["models", "promote", "sol", "1", "--to", "production", "--policy", str(policy)]
    assert main([*promote, "--store", store]) == 0
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(admin))
    with Store.open(store) as opened:
        opened.identities.set_role("bob@lab.org", "viewer", reason="Bob left QA")
        owner = opened.identities.owner()
    assert owner is not None
    report = tmp_path / "report.html"
    assert main(["audit", "report", run_id, "-o", str(report), "--store", store]) == 0
    return {
        "store": store,
        "run": run_id,
        "report": report,
        "owner": owner,
        "ada_dir": ada,
        "bob_dir": bob,
    } | people


def test_the_report_says_who_signed_in_what_relation_to_the_run(audited: dict[str, Any]) -> None:
    text = _text(audited["report"])
    assert "Who, how, with what authority" in text
    assert "Run author (actor of run.started ): Ada Lovelace <ada@lab.org>" in text
    assert "sol@1 by Ada Lovelace <ada@lab.org>" in text
    # Ada reviewed her own run: labelled as its author and registrant, never independent.
    assert _row(text, "Ada Lovelace <ada@lab.org>", "reviewed", "my own check", AUTHOR)
    assert _row(text, "Ada Lovelace <ada@lab.org>", "reviewed", REGISTRANT)
    assert not _row(text, "Ada Lovelace <ada@lab.org>", "reviewed", INDEPENDENT)
    assert _row(text, "Bob Babbage <bob@lab.org>", "approved", "QC passed", INDEPENDENT)
    assert not _row(text, "Bob Babbage <bob@lab.org>", "approved", AUTHOR)


def test_each_event_names_identity_role_then_key_and_authentication(
    audited: dict[str, Any],
) -> None:
    text = _text(audited["report"])
    ada, bob = audited["ada"]["fingerprint"][:16], audited["bob"]["fingerprint"][:16]
    for header in ("identity", "role at that time", "key fingerprint", "authentication"):
        assert header in text
    for action in ("run.started", "run.finished", "model.registered"):
        assert _row(text, action, "Ada Lovelace <ada@lab.org>", "approver", ada, "passphrase")
    # Bob was an approver when he signed and promoted; a viewer only afterwards.
    assert _row(text, "signature", "Bob Babbage <bob@lab.org>", "approver", bob, "passphrase")
    assert _row(text, "model.promoted", "Bob Babbage <bob@lab.org>", "approver", bob)
    assert _row(text, "Bob Babbage <bob@lab.org>", "approved", "approver", bob, "passphrase")
    assert not _row(text, "Bob Babbage <bob@lab.org>", "approved", "viewer")
    assert "not recorded (event written before events were signed)" not in text


def test_the_report_shows_how_each_identity_got_its_authority(audited: dict[str, Any]) -> None:
    text = _text(audited["report"])
    owner = audited["owner"]
    assert _row(text, "Bob Babbage <bob@lab.org>", "person", "viewer", "active")
    assert _row(text, "Bob Babbage <bob@lab.org>", f"enrolled as contributor by {owner.display}")
    assert _row(text, "Bob Babbage <bob@lab.org>", "role contributor → approver", "Bob leads QA")
    assert _row(text, "Bob Babbage <bob@lab.org>", "role approver → viewer", "Bob left QA")
    assert _row(text, "Ada Lovelace <ada@lab.org>", "approver", "identity checked against ID card")
    assert _row(text, owner.display, "admin", "owner of the store as admin")  # who enrolled them


def test_a_rotated_or_revoked_key_keeps_the_role_its_holder_had_when_acting(
    audited: dict[str, Any],
) -> None:
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from tests.identities_helpers import unlock

    from qemlflow.audit.principal import public_key_b64
    from qemlflow.store import Store
    from qemlflow.store.identities import rotation_message

    store, run = audited["store"], audited["run"]
    old = unlock(audited["bob_dir"], "correct horse battery")
    new_key = Ed25519PrivateKey.generate()
    new_public = public_key_b64(new_key.public_key())
    with Store.open(store, principal=old) as opened:  # the holder rotates, with the old key
        new_fp = hashlib.sha256(base64.b64decode(new_public)).hexdigest()
        proof = new_key.sign(rotation_message(old.email, old.fingerprint, new_fp))
        opened.identities.rotate(new_public, base64.b64encode(proof).decode(), "new laptop")
    with Store.open(store) as opened:  # the admin
        opened.identities.revoke("ada@lab.org", reason="Ada left the lab")
    report = audited["report"].with_name("later.html")
    assert main(["audit", "report", run, "-o", str(report), "--store", store]) == 0
    text = _text(report)
    ada, bob = audited["ada"]["fingerprint"][:16], old.fingerprint[:16]
    # What they did is shown with the key and role they held then.
    assert _row(text, "run.started", "Ada Lovelace <ada@lab.org>", "approver", ada, "passphrase")
    assert _row(text, "signature", "Bob Babbage <bob@lab.org>", "approver", bob, "passphrase")
    assert _row(text, "Ada Lovelace <ada@lab.org>", "revoked", f"{ada}", "revoked at seq")
    assert _row(text, "Ada Lovelace <ada@lab.org>", "revoked key", "Ada left the lab")
    assert _row(text, "Bob Babbage <bob@lab.org>", f"key rotated to {new_fp[:16]}", "new laptop")
    assert _row(text, "Bob Babbage <bob@lab.org>", f"{new_fp[:16]} passphrase from seq")


def test_the_report_shows_the_promotion_and_its_gates(audited: dict[str, Any]) -> None:
    text = _text(audited["report"])
    assert _row(text, "model.promoted", "sol@1", "production", "Bob Babbage <bob@lab.org>")
    assert _row(text, "metrics", "yes")
    assert _row(text, "smoke", "yes")
    assert _row(text, "yes", "Bob Babbage")  # the approval gate names its approver


def test_an_override_is_reported_with_its_admin_reason_and_the_floor_it_replaced(
    audited: dict[str, Any],
) -> None:
    from qemlflow.store import Store

    run, owner = audited["run"], audited["owner"]
    floor = {
        "source": f"experiment config of run {run}",
        "policy": {"metrics": {"rmse": {"max": 0.1}}},
    }
    given = {"source": "policy file lax.yaml", "policy": {"metrics": {"rmse": {"max": 5.0}}}}
    bob, ada = "Bob Babbage <bob@lab.org>", "Ada Lovelace <ada@lab.org>"
    # What `models promote --override` records (qemlflow.registry.promote), by the admin.
    with Store.open(audited["store"]) as opened:
        opened.set_alias(
            "sol",
            "staging",
            1,
            "the floor's rmse bound is a typo",
            action="promoted",
            details={
                "policy_source": f"policy file lax.yaml (override of the {floor['source']})",
                "policy": given["policy"],
                "floor": floor,
                "given": given,
                "weakened": [],
                "override": True,
                "override_reason": "the floor's rmse bound is a typo",
                "gates": [{"gate": "metrics", "passed": True, "detail": "rmse 1.7"}],
                "approvals": [
                    {
                        "seq": 9,
                        "meaning": "approved",
                        "signer": ada,
                        "counted": False,
                        "why_not": "the run's author",
                    },
                    {
                        "seq": 10,
                        "meaning": "approved",
                        "signer": bob,
                        "counted": True,
                        "why_not": None,
                    },
                ],
            },
        )
    report = audited["report"].with_name("override.html")
    assert main(["audit", "report", run, "-o", str(report), "--store", audited["store"]]) == 0
    text = _text(report)
    assert _row(text, "Override of the experiment's promotion policy", owner.display, "admin")
    assert _row(text, "model.promoted", "sol@1 → staging", owner.display, "admin", "os-account")
    assert _row(text, "reason", "the floor's rmse bound is a typo")
    assert _row(text, "floor", '"max": 0.1', floor["source"])
    assert _row(text, "replaced by", '"max": 5.0', "lax.yaml")
    assert _row(text, "Approvals counted: 1 of 2")
    assert _row(text, ada, "not counted", "the run's author")
    assert _row(text, bob, "approved", "counted")


def test_the_report_lists_every_control_with_its_coverage(audited: dict[str, Any]) -> None:
    text = _text(audited["report"])
    assert "21 CFR Part 11 and EU GMP Annex 11 controls" in text
    for control in CONTROLS:
        assert _row(text, control.label, control.title, control.coverage), control.label
        for answer in (control.asks, control.qemlflow, control.lab):
            assert _squeezed(answer) in _squeezed(text), answer


def test_every_required_control_is_in_the_table_with_its_three_answers() -> None:
    labels = {c.label for c in CONTROLS}
    for clause in PART_11_CLAUSES:
        assert f"{PART_11} {clause}" in labels
    for clause in ANNEX_11_CLAUSES:
        assert f"{ANNEX_11} {clause}" in labels
    assert len(labels) == len(CONTROLS)  # no control twice
    for control in CONTROLS:
        assert control.coverage in COVERAGE
        assert control.asks and control.qemlflow and control.lab
    by_clause = {c.clause: c for c in CONTROLS if c.regulation == PART_11}
    assert "Ed25519" in by_clause["§11.10(e)"].qemlflow
    assert "owner role" in by_clause["§11.10(e)"].qemlflow
    assert "passphrase" in by_clause["§11.200"].qemlflow
    assert "identity" in by_clause["§11.100"].lab.lower()


def test_docs_compliance_md_is_the_control_table() -> None:
    written = (ROOT / "docs" / "compliance.md").read_text(encoding="utf-8")
    assert written == compliance_markdown(), (
        "docs/compliance.md differs from qemlflow/audit/controls.py: run "
        "`python -m qemlflow.audit.controls docs/compliance.md`"
    )
    for control in CONTROLS:
        assert f"### {control.clause} {control.title} ({control.coverage})" in written


@pytest.mark.parametrize(
    ("signer", "author", "registrants", "expected"),
    [
        ("Ada <ada@lab.org>", "Ada Lovelace <ADA@LAB.org>", [], (AUTHOR,)),
        ("Ada <ada@lab.org>", "Bob <bob@lab.org>", ["Ada L. <ada@lab.org>"], (REGISTRANT,)),
        ("Ada <ada@lab.org>", "Ada <ada@lab.org>", ["Ada <ada@lab.org>"], (AUTHOR, REGISTRANT)),
        ("Cy <cy@lab.org>", "Ada <ada@lab.org>", ["Bob <bob@lab.org>"], (INDEPENDENT,)),
        ("Cy <cy@lab.org>", None, [], (INDEPENDENT,)),
    ],
)
def test_a_signer_is_related_to_the_run_by_normalized_email(
    signer: str, author: str | None, registrants: list[str], expected: tuple[str, ...]
) -> None:
    assert relation_to(signer, author, registrants) == expected
