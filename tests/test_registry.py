"""The model registry and API keys, on SQLite and on a real PostgreSQL server.

Versions come from real (small) recorded runs; promotion gates run for real: metric
thresholds, a smoke prediction compared with the run's recorded predictions, and an
electronic signature made with a throw-away identity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from tests.identities_helpers import enroll, make_identity

import qemlflow as qm
from qemlflow import registry
from qemlflow.audit.signatures import sign
from qemlflow.cli.main import main
from qemlflow.errors import ConfigError
from qemlflow.registry import (
    PromotionPolicy,
    PromotionRefused,
    RegistryError,
    describe,
    load_version,
    promote,
    register,
    resolve,
    rollback,
)
from qemlflow.store import CorruptBlobError, Store, StoreError, schema

FEATURES = [{"type": "ecfp", "radius": 2, "size": 512, "counts": True}]
PASSPHRASE = "correct horse battery"


def _config(source: Path) -> dict[str, Any]:
    return {
        "name": "registry",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": FEATURES,
        "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
        "evaluation": {"n_bootstrap": 50, "plots": False},
    }


@pytest.fixture
def run_id(store: Store, small_esol_csv: Path) -> str:
    """A finished run recorded in ``store``."""
    result = qm.run(_config(small_esol_csv), store=store)
    assert result.run_id is not None
    return result.run_id


def _actions(store: Store, prefix: str = "model.") -> list[str]:
    return [e.action for e in store.audit_events() if e.action.startswith(prefix)]


def _corrupt(store: Store, digest: str) -> None:
    path = store.open_blob_path(digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _policy(tmp_path: Path, content: dict[str, Any], name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content)
    path.write_text(text, encoding="utf-8")
    return path


def _sound(store: Store) -> None:
    assert store.verify_audit().ok
    report = store.verify()
    assert report.ok, report.to_dict()


# -- registering -----------------------------------------------------------------------


def test_register_twice_gives_versions_1_and_2_that_are_immutable(
    store: Store, run_id: str
) -> None:
    run = store.get_run(run_id)
    fit = next(s for s in run.steps if s.step == "fit")
    first = register(store, run_id[:17], "sol")
    second = register(store, run_id, "sol")
    assert (first.version, second.version) == (1, 2)
    assert first.model_digest == second.model_digest == fit.output
    assert first.fit_key == fit.key and first.run_id == run_id
    assert first.task == "regression" and first.target_names == ("logp",)
    assert run.metrics is not None and first.metrics == run.metrics["test"]
    assert store.get_model_version("sol", 1) == first
    assert [v.spec for v in store.list_model_versions()] == ["sol@1", "sol@2"]
    assert register(store, run_id, "other").version == 1

    t = schema.model_versions
    for statement in (
        update(t).where(t.c.name == "sol").values(model_digest="0" * 64),
        delete(t).where(t.c.name == "sol"),
    ):
        with pytest.raises(DBAPIError, match="append-only"), store._engine.begin() as conn:
            conn.execute(statement)
    assert store.get_model_version("sol", 1) == first

    with pytest.raises(RegistryError, match="not allowed"):
        register(store, run_id, "Sol Model")
    running = store.create_run("unfinished", {}, 0, None)
    with pytest.raises(RegistryError, match="only a finished run"):
        register(store, running, "sol")
    with pytest.raises(StoreError, match="no version 9"):
        store.get_model_version("sol", 9)
    assert _actions(store) == ["model.registered"] * 3
    event = store.audit_events(object_ref="sol@2")[0]
    assert event.objects["model"] == fit.output and event.details["version"] == 2
    assert [e.action for e in store.audit_events(object_ref="other")] == ["model.registered"]
    store.fail_run(running, "test")
    _sound(store)


# -- promotion gates -------------------------------------------------------------------


def test_promote_to_staging_then_production_and_resolve(store: Store, run_id: str) -> None:
    v1 = register(store, run_id, "sol")
    assert resolve(store, "sol") == v1  # no production yet: the latest version
    staged = promote(store, "sol", 1, "staging")
    assert [g.gate for g in staged.gates] == ["metrics", "smoke"]
    assert all(g.passed for g in staged.gates)
    assert "no thresholds" in staged.gates[0].detail
    assert "equal to the recorded predictions" in staged.gates[1].detail
    assert staged.previous is None and staged.policy_source == "none"
    released = promote(store, "sol", 1, "production", reason="first release")
    assert released.previous is None
    v2 = register(store, run_id, "sol")
    assert store.current_aliases("sol") == {"production": 1, "staging": 1}

    assert resolve(store, "sol") == v1
    assert resolve(store, "sol@production") == v1
    assert resolve(store, "sol@staging") == v1
    assert resolve(store, "sol@2") == v2
    assert resolve(store, "sol@latest") == v2
    with pytest.raises(RegistryError, match="no alias 'canary'"):
        resolve(store, "sol@canary")
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        resolve(store, "nope")
    with pytest.raises(RegistryError, match="not allowed"):
        promote(store, "sol", 1, "7")

    smiles = registry.test_molecules(store, v1)  # not `from ... import`: pytest would collect it
    run = store.get_run(run_id)
    assert run.metrics is not None and len(smiles) == run.metrics["n"]["test"]
    frame = load_version(store, v1).predict(smiles)
    assert (frame["error"] == "").all()

    info = describe(store, "sol")
    assert info["aliases"] == {"production": 1, "staging": 1}
    assert [v["aliases"] for v in info["versions"]] == [["production", "staging"], []]
    assert [(e["alias"], e["version"], e["action"]) for e in info["history"]] == [
        ("staging", 1, "promoted"),
        ("production", 1, "promoted"),
    ]
    promoted = [e for e in store.audit_events() if e.action == "model.promoted"]
    assert [e.details["alias"] for e in promoted] == ["staging", "production"]
    assert promoted[1].reason == "first release"
    assert [g["gate"] for g in promoted[1].details["gates"]] == ["metrics", "smoke"]
    _sound(store)


def test_a_failing_threshold_refuses_and_nothing_moves(
    store: Store, run_id: str, tmp_path: Path
) -> None:
    register(store, run_id, "sol")
    register(store, run_id, "sol")
    promote(store, "sol", 1)
    strict = _policy(tmp_path, {"metrics": {"rmse": {"max": 0.01}, "r2": {"min": 0.1}}})
    with pytest.raises(PromotionRefused, match="at the metrics gate: test rmse") as err:
        promote(store, "sol", 2, policy_file=strict)
    assert err.value.gate == "metrics"
    assert "thresholds" in str(err.value)  # the fix
    assert "\n" not in str(err.value)
    assert store.current_aliases("sol") == {"production": 1}

    refused = store.audit_events(action="model.promotion_refused")
    assert len(refused) == 1
    assert refused[0].details["gate"] == "metrics"
    assert refused[0].details["policy"]["metrics"]["rmse"] == {"max": 0.01}
    assert refused[0].objects["model_version"] == "sol@2"
    assert "rmse" in (refused[0].reason or "")

    missing = _policy(tmp_path, {"metrics": {"roc_auc": {"min": 0.8}}}, "policy.json")
    with pytest.raises(PromotionRefused, match="'roc_auc' is missing"):
        promote(store, "sol", 2, policy_file=missing)
    loose = _policy(tmp_path, {"metrics": {"rmse": {"max": 100}, "r2": {"min": -5}}}, "ok.json")
    result = promote(store, "sol", 2, policy_file=loose)
    assert result.previous == 1 and "within thresholds" in result.gates[0].detail
    assert store.current_aliases("sol") == {"production": 2}

    with pytest.raises(ConfigError, match="bad promotion policy"):
        promote(store, "sol", 1, policy_file=_policy(tmp_path, {"metrics": {"rmse": {}}}, "x.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        promote(store, "sol", 1, policy_file=tmp_path / "absent.yaml")
    _sound(store)


def test_a_required_signature_refuses_until_the_run_is_signed(
    store: Store, run_id: str, tmp_path: Path
) -> None:
    register(store, run_id, "sol")
    policy = PromotionPolicy.model_validate({"require_signature": "approved"})
    with pytest.raises(PromotionRefused, match="signature gate: no valid 'approved'") as err:
        promote(store, "sol", 1, policy=policy)
    assert err.value.gate == "signature" and "qemlflow sign" in str(err.value)
    assert [g.gate for g in err.value.gates] == ["metrics", "smoke", "signature"]

    identity = make_identity(tmp_path / "identity", "Ada Lovelace", "ada@lab.org", PASSPHRASE)
    enroll(store, identity, role="approver")  # an admin (the store's owner) enrolls her
    sign(
        store,
        run_id,
        meaning="reviewed",
        reason="read it",
        passphrase=PASSPHRASE,
        identity_dir=identity,
    )
    with pytest.raises(PromotionRefused, match="signature gate"):
        promote(store, "sol", 1, policy=policy)
    assert store.current_aliases("sol") == {}

    sign(
        store,
        run_id,
        meaning="approved",
        reason="QC passed",
        passphrase=PASSPHRASE,
        identity_dir=identity,
    )
    result = promote(store, "sol", 1, policy=policy)
    assert result.gates[-1].gate == "signature" and result.gates[-1].passed
    assert "Ada Lovelace <ada@lab.org>" in result.gates[-1].detail
    assert store.current_aliases("sol") == {"production": 1}
    assert _actions(store) == [
        "model.registered",
        "model.promotion_refused",
        "model.promotion_refused",
        "model.promoted",
    ]
    _sound(store)


def test_an_altered_model_blob_fails_the_smoke_gate(store: Store, run_id: str) -> None:
    v1 = register(store, run_id, "sol")
    promote(store, "sol", 1, "staging")
    _corrupt(store, v1.model_digest)
    with pytest.raises(PromotionRefused, match="at the smoke gate") as err:
        promote(store, "sol", 1)
    assert err.value.gate == "smoke"
    assert v1.model_digest in str(err.value)
    assert store.current_aliases("sol") == {"staging": 1}
    with pytest.raises(CorruptBlobError):
        load_version(store, v1)
    refused = store.audit_events(action="model.promotion_refused")
    assert refused[0].details["gate"] == "smoke"
    assert store.verify_audit().ok
    assert not store.verify().ok  # the blob is named by the store check too


# -- rollback --------------------------------------------------------------------------


def test_rollback_steps_back_through_the_history(store: Store, run_id: str) -> None:
    for _ in range(3):
        register(store, run_id, "sol")
    with pytest.raises(RegistryError, match="points at no version"):
        rollback(store, "sol")
    for version in (1, 2, 3):
        promote(store, "sol", version)
    assert rollback(store, "sol").version == 2
    assert resolve(store, "sol").version == 2
    assert rollback(store, "sol", reason="bad batch").version == 1
    with pytest.raises(RegistryError, match="no version before 1 to roll back to"):
        rollback(store, "sol")
    assert store.current_aliases("sol") == {"production": 1}
    history = store.alias_history("sol", "production")
    assert [(e.version, e.action) for e in history] == [
        (1, "promoted"),
        (2, "promoted"),
        (3, "promoted"),
        (2, "rolled_back"),
        (1, "rolled_back"),
    ]
    assert history[-1].reason == "bad batch"
    events = store.audit_events(action="model.rolled_back")
    assert [(e.details["previous"], e.details["version"]) for e in events] == [(3, 2), (2, 1)]

    store.set_alias("sol", "production", None, "withdrawn")  # removed, then promoted again
    assert store.current_aliases("sol") == {}
    promote(store, "sol", 3)
    assert rollback(store, "sol").version == 1
    assert _actions(store)[-3:] == ["model.alias_removed", "model.promoted", "model.rolled_back"]

    t = schema.alias_events
    with pytest.raises(DBAPIError, match="append-only"), store._engine.begin() as conn:
        conn.execute(update(t).values(version=3))
    with pytest.raises(StoreError, match="no version 7"):
        store.set_alias("sol", "production", 7)
    _sound(store)


# -- API keys --------------------------------------------------------------------------


def test_api_keys_are_checked_revoked_and_never_stored_in_clear(store: Store) -> None:
    record, key = store.create_api_key("prediction service")
    assert key.startswith(f"qmf_{record.id}_") and record.id.startswith("qk_")
    secret = key.rsplit("_", 1)[1]
    assert store.check_api_key(key) == record
    assert store.check_api_key(f"  {key}\n") == record
    wrong = key[:-1] + ("0" if key[-1] != "0" else "1")
    assert store.check_api_key(wrong) is None
    assert store.check_api_key(key.replace(record.id, "qk_00000000")) is None
    for malformed in ("", "qmf_", key[:-2], key + "00", "Bearer " + key, secret):
        assert store.check_api_key(malformed) is None
    other, other_key = store.create_api_key("notebook")
    assert [k.id for k in store.list_api_keys()] == [record.id, other.id]

    revoked = store.revoke_api_key(record.id, "rotated")
    assert revoked.revoked_at is not None and not revoked.active
    assert store.check_api_key(key) is None
    assert store.check_api_key(other_key) == other
    assert store.revoke_api_key(record.id).revoked_at == revoked.revoked_at  # no-op
    with pytest.raises(StoreError, match="no API key"):
        store.revoke_api_key("qk_deadbeef")
    assert _actions(store, "apikey.") == ["apikey.created", "apikey.created", "apikey.revoked"]

    dumped = json.dumps([e.to_dict() for e in store.audit_events()])
    with store._engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(schema.api_keys))]
    assert secret not in dumped and secret not in json.dumps(rows)
    assert other_key.rsplit("_", 1)[1] not in dumped + json.dumps(rows)
    if store.backend == "sqlite":
        store.close()  # checkpoint the WAL into the file
        files = list(store.root.glob("metadata.db*"))
        assert files and all(secret.encode() not in f.read_bytes() for f in files)
    _sound(store)


# -- CLI, backup -----------------------------------------------------------------------


def test_cli_round_trip(
    store: Store, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    at = ["--store", str(store.root)]
    assert main(["models", "register", run_id, "--name", "sol", *at]) == 0
    assert "registered sol@1" in capsys.readouterr().out
    assert main(["models", "register", run_id, "--name", "sol", "--json", *at]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert main(["models", "promote", "sol", "1", "--to", "staging", *at]) == 0
    assert main(["models", "promote", "sol", "1", *at]) == 0
    out = capsys.readouterr().out
    assert "passed smoke" in out and "sol@production -> version 1" in out

    strict = _policy(tmp_path, {"metrics": {"rmse": {"max": 0.01}}})
    assert main(["models", "promote", "sol", "2", "--policy", str(strict), *at]) == 2
    err = capsys.readouterr().err
    assert "metrics gate" in err and "Traceback" not in err
    assert main(["models", "promote", "sol", "2", *at]) == 0
    assert main(["models", "rollback", "sol", *at]) == 0
    assert "rolled back to version 1" in capsys.readouterr().out
    assert main(["models", "rollback", "sol", *at]) == 2
    assert "no version before 1" in capsys.readouterr().err

    assert main(["models", "list", "--json", *at]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {
            "name": "sol",
            "versions": 2,
            "latest": 2,
            "task": "regression",
            "aliases": {"production": 1, "staging": 1},
            "created_at": listed[0]["created_at"],
        }
    ]
    assert main(["models", "show", "sol", "--json", *at]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [e["action"] for e in shown["history"]] == ["promoted"] * 3 + ["rolled_back"]
    assert main(["models", "show", "sol", *at]) == 0
    assert "alias history" in capsys.readouterr().out
    assert main(["models", "list", *at]) == 0
    assert main(["models", "show", "nope", *at]) == 2
    assert "no model named 'nope'" in capsys.readouterr().err

    assert main(["keys", "create", "service", *at]) == 0
    captured = capsys.readouterr()
    key = captured.out.strip()
    assert key.startswith("qmf_qk_") and "shown this once" in captured.err
    assert store.check_api_key(key) is not None
    key_id = key[4:15]
    assert main(["keys", "list", "--json", *at]) == 0
    assert [k["active"] for k in json.loads(capsys.readouterr().out)] == [True]
    assert main(["keys", "revoke", key_id, *at]) == 0
    assert main(["keys", "list", *at]) == 0
    assert key.rsplit("_", 1)[1] not in capsys.readouterr().out
    assert store.check_api_key(key) is None
    _sound(store)


def test_backup_and_restore_keep_the_registry(store: Store, run_id: str, tmp_path: Path) -> None:
    v1 = register(store, run_id, "sol")
    register(store, run_id, "sol")
    promote(store, "sol", 1)
    promote(store, "sol", 2)
    _, key = store.create_api_key("svc")
    assert store.gc(grace_seconds=0) == []
    assert store.backup(tmp_path / "backup").ok

    with Store.open(tmp_path / "restored") as target:
        assert target.restore(tmp_path / "backup").ok
        assert target.list_model_versions() == store.list_model_versions()
        assert target.alias_history("sol") == store.alias_history("sol")
        assert target.check_api_key(key) is not None
        assert rollback(target, "sol") == v1  # new alias rows after the copied ones
        assert promote(target, "sol", 2).gates[1].passed
        _sound(target)


def test_thresholds_can_come_from_the_experiment(store: Store, small_esol_csv: Path) -> None:
    config = {**_config(small_esol_csv), "promotion": {"metrics": {"rmse": {"max": 0.01}}}}
    result = qm.run(config, store=store)
    register(store, result.run_id or "", "strict")
    with pytest.raises(PromotionRefused, match="at the metrics gate: test rmse"):
        promote(store, "strict", 1)
    assert store.current_aliases("strict") == {}
    assert store.audit_events(action="model.promotion_refused")[0].details["gate"] == "metrics"
