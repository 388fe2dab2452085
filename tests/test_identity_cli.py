"""`qemlflow identity` as an admin and its people use it: init (look-alikes refused), show
--json, enroll, list, role, revoke, service identities for CI, and key rotation; real CLI
processes on a real SQLite store, whose owner is the OS account that created it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qemlflow.audit.agent import agent_principal, agent_status, start_agent, stop_agent
from qemlflow.audit.identity import init_identity, load_identity, load_signing_key
from qemlflow.audit.principal import AUTH_PASSPHRASE, verify_signature
from qemlflow.store import Store

SRC = Path(__file__).resolve().parents[1] / "src"
ADA_PASS = "ada's passphrase"
BOB_PASS = "bob's passphrase"


@dataclass
class Lab:
    """A store, its admin's identity folder (the OS account) and Ada's folder."""

    store: Path
    admin: Path
    ada: Path

    def run(self, identity: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        full = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("QEMLFLOW_PASSPHRASE", "QEMLFLOW_NEW_PASSPHRASE"))
            and k not in ("QEMLFLOW_SERVICE_KEY_FILE", "XDG_RUNTIME_DIR")
        }
        full.update(
            QEMLFLOW_HOME=str(self.store),
            QEMLFLOW_IDENTITY_DIR=str(identity),
            PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            **env,
        )
        return subprocess.run(
            [sys.executable, "-m", "qemlflow", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=full,
            cwd=self.store.parent,
        )

    def admin_ok(self, *args: str) -> str:
        done = self.run(self.admin, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def identities(self) -> dict[str, dict[str, str]]:
        return {r["email"]: r for r in json.loads(self.admin_ok("identity", "list", "--json"))}

    def events(self) -> list[tuple[str, str, str | None]]:
        store = Store.open(self.store)
        try:
            return [(e.action, e.actor, e.auth) for e in store.audit_events()]
        finally:
            store.close()


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Lab]:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    lab = Lab(store=tmp_path / "store", admin=tmp_path / "admin-id", ada=tmp_path / "ada-id")
    init_identity("Ada Lovelace", "ada@lab.org", ADA_PASS, directory=lab.ada)
    (tmp_path / "ada.json").write_text(
        lab.run(lab.ada, "identity", "show", "--json").stdout, encoding="utf-8"
    )
    yield lab
    stop_agent(lab.ada)


def _enroll_ada(lab: Lab, role: str = "contributor") -> None:
    lab.admin_ok("identity", "enroll", str(lab.store.parent / "ada.json"), "--role", role)


@pytest.mark.parametrize(
    ("name", "email", "problem"),
    [
        ("Ada Lovelace", "\u0430da@lab.org", "not plain ASCII"),  # a Cyrillic a
        ("Ada Lovelace", "ada@lab.org.", "ends its domain with a dot"),
        ("\u0410da Lovelace", "ada@lab.org", "mixes"),  # a Cyrillic A in a Latin name
    ],
)
def test_init_refuses_look_alikes(tmp_path: Path, name: str, email: str, problem: str) -> None:
    lab = Lab(store=tmp_path / "store", admin=tmp_path / "admin", ada=tmp_path / "mallory")
    done = lab.run(
        lab.ada, "identity", "init", "--name", name, "--email", email, QEMLFLOW_PASSPHRASE=BOB_PASS
    )
    assert done.returncode == 2 and problem in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (lab.ada / "identity.json").exists()


def test_init_normalizes_and_names_the_enroll_step(tmp_path: Path) -> None:
    lab = Lab(store=tmp_path / "store", admin=tmp_path / "admin", ada=tmp_path / "bob")
    done = lab.run(
        lab.ada,
        "identity",
        "init",
        "--name",
        "  Bob   Smith ",
        "--email",
        "\uff42ob@LAB.org",  # a full-width b: NFKC makes it ASCII
        QEMLFLOW_PASSPHRASE=BOB_PASS,
    )
    assert done.returncode == 0, done.stderr
    assert "identity enroll" in done.stdout
    assert load_identity(lab.ada).display == "Bob Smith <bob@lab.org>"


def test_show_json_is_what_enroll_takes(lab: Lab) -> None:
    shown = json.loads((lab.store.parent / "ada.json").read_text())
    identity = load_identity(lab.ada)
    assert shown == identity.to_dict()
    assert "private" not in json.dumps(shown).lower()

    _enroll_ada(lab)
    people = lab.identities()
    ada = people["ada@lab.org"]
    assert (ada["role"], ada["kind"], ada["auth"], ada["status"]) == (
        "contributor",
        "person",
        AUTH_PASSPHRASE,
        "active",
    )
    assert ada["fingerprint"] == identity.fingerprint
    (owner,) = [r for r in people.values() if r["role"] == "admin"]
    assert owner["auth"] == "os-account"
    # The store's first write made its creator the owner, who signed the enrollment.
    actions = [(action, auth) for action, _, auth in lab.events()]
    assert actions[:2] == [("store.owner", "os-account"), ("identity.enrolled", "os-account")]
    table = lab.admin_ok("identity", "list")
    assert "ada@lab.org" in table and "contributor" in table


def test_a_non_admin_cannot_enroll(lab: Lab, tmp_path: Path) -> None:
    _enroll_ada(lab)
    bob = tmp_path / "bob-id"
    init_identity("Bob Smith", "bob@lab.org", BOB_PASS, directory=bob)
    (tmp_path / "bob.json").write_text(lab.run(bob, "identity", "show", "--json").stdout)
    done = lab.run(
        lab.ada,
        "identity",
        "enroll",
        str(tmp_path / "bob.json"),
        "--role",
        "admin",
        QEMLFLOW_PASSPHRASE=ADA_PASS,
    )
    assert done.returncode == 2 and "contributor" in done.stderr
    assert "bob@lab.org" not in lab.identities()


def test_an_unenrolled_person_is_told_how_to_get_enrolled(lab: Lab) -> None:
    lab.admin_ok("identity", "list")  # the store exists, owned by the admin
    _enroll_ada(lab)
    lab.admin_ok("identity", "revoke", "ada@lab.org", "--reason", "left the lab")
    done = lab.run(
        lab.ada, "identity", "role", "ada@lab.org", "admin", "--reason", "x",
        QEMLFLOW_PASSPHRASE=ADA_PASS,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_enrolling_a_look_alike_is_refused(lab: Lab, tmp_path: Path) -> None:
    _enroll_ada(lab)
    fake = tmp_path / "fake-id"
    init_identity("Ada Lovelace", "ada@1ab.org", BOB_PASS, directory=fake)  # l -> 1
    (tmp_path / "fake.json").write_text(lab.run(fake, "identity", "show", "--json").stdout)
    done = lab.run(lab.admin, "identity", "enroll", str(tmp_path / "fake.json"), "--role", "viewer")
    assert done.returncode == 2 and "ada@lab.org" in done.stderr
    assert "ada@1ab.org" not in lab.identities()


def test_enroll_refuses_a_damaged_identity_file(lab: Lab, tmp_path: Path) -> None:
    data = json.loads((tmp_path / "ada.json").read_text())
    data["email"] = "eve@lab.org"  # fine, but the key is Ada's ...
    data["fingerprint"] = "0" * 64  # ... and the fingerprint no longer matches it
    (tmp_path / "eve.json").write_text(json.dumps(data))
    done = lab.run(lab.admin, "identity", "enroll", str(tmp_path / "eve.json"), "--role", "admin")
    assert done.returncode == 2 and "fingerprint does not match" in done.stderr


def test_role_change_and_revoke_are_audited(lab: Lab) -> None:
    _enroll_ada(lab)
    out = lab.admin_ok("identity", "role", "ada@lab.org", "approver", "--reason", "QA lead")
    assert "approver" in out
    assert lab.identities()["ada@lab.org"]["role"] == "approver"
    lab.admin_ok("identity", "revoke", "ada@lab.org", "--reason", "left the lab")
    assert lab.identities()["ada@lab.org"]["status"] == "revoked"
    actions = [action for action, _, _ in lab.events()]
    assert actions[-2:] == ["identity.role_changed", "identity.revoked"]
    bad = lab.run(lab.admin, "identity", "role", "ada@lab.org", "superuser", "--reason", "x")
    assert bad.returncode == 2 and "unknown role" in bad.stderr


def test_service_identity_for_ci(lab: Lab, tmp_path: Path) -> None:
    key_file = tmp_path / "ci.pem"
    out = lab.admin_ok(
        "identity", "service", "CI runner", "--role", "contributor", "--key-out", str(key_file)
    )
    assert "QEMLFLOW_SERVICE_KEY_FILE" in out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in key_file.read_bytes()  # unencrypted: CI has no one to ask
    service = lab.identities()["ci-runner@service.qemlflow"]
    assert (service["kind"], service["auth"], service["role"]) == (
        "service",
        "service-key",
        "contributor",
    )
    # CI acts as the service, from an account with no identity of its own.
    csv = tmp_path / "tiny.csv"
    csv.write_text("smiles,y\nCCO,1.0\nCCC,2.0\nCCN,3.0\n")
    done = lab.run(
        tmp_path / "ci-home", "data", "add", str(csv), "--target", "y",
        QEMLFLOW_SERVICE_KEY_FILE=str(key_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert lab.events()[-1] == (
        "dataset.added",
        "CI runner <ci-runner@service.qemlflow>",
        "service-key",
    )
    # ... but administers nothing.
    denied = lab.run(
        tmp_path / "ci-home", "identity", "role", "ada@lab.org", "admin", "--reason", "x",
        QEMLFLOW_SERVICE_KEY_FILE=str(key_file),
    )  # fmt: skip
    assert denied.returncode == 2


def test_service_key_file_is_never_overwritten_nor_left_behind(lab: Lab, tmp_path: Path) -> None:
    existing = tmp_path / "existing.pem"
    existing.write_text("keep me")
    done = lab.run(lab.admin, "identity", "service", "ci", "--key-out", str(existing))
    assert done.returncode == 2 and existing.read_text() == "keep me"
    _enroll_ada(lab)
    refused = tmp_path / "refused.pem"
    done = lab.run(
        lab.ada, "identity", "service", "ci", "--key-out", str(refused),
        QEMLFLOW_PASSPHRASE=ADA_PASS,
    )  # fmt: skip
    assert done.returncode == 2 and not refused.exists()


def test_rotate_replaces_the_key_once_the_store_accepts_it(lab: Lab) -> None:
    _enroll_ada(lab)
    before = load_identity(lab.ada)
    assert lab.run(lab.ada, "identity", "unlock", QEMLFLOW_PASSPHRASE=ADA_PASS).returncode == 0
    done = lab.run(
        lab.ada, "identity", "rotate", "--reason", "yearly",
        QEMLFLOW_PASSPHRASE=ADA_PASS, QEMLFLOW_NEW_PASSPHRASE=BOB_PASS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = load_identity(lab.ada)
    assert after.fingerprint != before.fingerprint and after.email == before.email
    load_signing_key(BOB_PASS, lab.ada)  # the new key, under the new passphrase
    assert lab.identities()["ada@lab.org"]["fingerprint"] == after.fingerprint
    action, actor, auth = lab.events()[-1]
    assert (action, actor, auth) == ("identity.key_rotated", before.display, AUTH_PASSPHRASE)
    assert not list(lab.ada.glob(".rotate-*"))
    assert agent_status(lab.ada) is None  # the agent of the retired key was stopped
    assert lab.run(lab.ada, "identity", "unlock", QEMLFLOW_PASSPHRASE=BOB_PASS).returncode == 0
    principal = agent_principal(lab.ada)
    assert principal is not None and principal.fingerprint == after.fingerprint


def test_a_refused_rotation_keeps_the_identity_files(lab: Lab) -> None:
    lab.admin_ok("identity", "list")  # a store with an owner, where Ada is not enrolled
    before = (lab.ada / "identity.json").read_bytes(), (lab.ada / "signing_key.pem").read_bytes()
    done = lab.run(
        lab.ada, "identity", "rotate",
        QEMLFLOW_PASSPHRASE=ADA_PASS, QEMLFLOW_NEW_PASSPHRASE=BOB_PASS,
    )  # fmt: skip
    assert done.returncode == 2 and "not enrolled" in done.stderr
    after = (lab.ada / "identity.json").read_bytes(), (lab.ada / "signing_key.pem").read_bytes()
    assert after == before and not list(lab.ada.glob(".rotate-*"))


def test_events_written_through_the_agent_verify(lab: Lab) -> None:
    _enroll_ada(lab)
    start_agent(load_signing_key(ADA_PASS, lab.ada), lab.ada, 60)
    principal = agent_principal(lab.ada)
    assert principal is not None
    store = Store.open(lab.store, principal=principal)
    try:
        event = store.audit("dataset.added", {"dataset": "d" * 64}, reason="through the agent")
        assert (event.actor, event.auth) == ("Ada Lovelace <ada@lab.org>", AUTH_PASSPHRASE)
        assert event.signer == principal.fingerprint and event.signature
        assert store.verify_audit().ok
    finally:
        store.close()
    message = b"qemlflow.audit-event/1\nm"
    assert verify_signature(principal.public_key, message, principal.sign(message))


def test_every_identity_command_has_help(lab: Lab) -> None:
    for command in (
        "init", "show", "unlock", "lock", "status", "enroll", "list", "role", "revoke",
        "service", "rotate",
    ):  # fmt: skip
        done = lab.run(lab.admin, "identity", command, "--help")
        assert done.returncode == 0 and "Usage" in done.stdout, command
