"""Separation of duties in promotion gates, on real stores with real recorded runs.

The attacks of issue #13 on the registry: a policy file that weakens the experiment's own
gates, a NaN or inverted threshold, the author or registrant approving their own model,
one person's approval counted twice (two signatures, or one signature event replayed).
Each is refused here; a two-approver policy passes only once two distinct people other
than the author and the registrant have signed.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.identities_helpers import PASSPHRASE, enroll, make_identity, unlock

import qemlflow as qm
from qemlflow.audit.identity import load_identity, load_signing_key
from qemlflow.audit.principal import Principal
from qemlflow.audit.report import render_report
from qemlflow.audit.signatures import SIGNATURE_ACTION, sign
from qemlflow.cli.main import main
from qemlflow.errors import ConfigError
from qemlflow.pipeline.config import parse_config
from qemlflow.registry import (
    PromotionPolicy,
    PromotionRefused,
    RegistryError,
    load_policy,
    merge_policies,
    promote,
    register,
)
from qemlflow.store import Store
from qemlflow.store.identities import rotation_message

FEATURES = [{"type": "ecfp", "radius": 2, "size": 256, "counts": True}]
EVE = ("Eve Author", "eve@lab.org")
REX = ("Rex Registrar", "rex@lab.org")
ADA = ("Ada Lovelace", "ada@lab.org")
BOB = ("Bob Builder", "bob@lab.org")


def _display(person: tuple[str, str]) -> str:
    return f"{person[0]} <{person[1]}>"


def _config(source: Path, promotion: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "policy",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": FEATURES,
        "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
        "evaluation": {"n_bootstrap": 20, "plots": False},
    }
    if promotion is not None:
        config["promotion"] = promotion
    return config


class Lab:
    """One store and the people who act on it: its owner (the test's OS account key, an
    admin) enrolls each person as an approver the first time they act or sign."""

    def __init__(self, root: Path, tmp_path: Path, database_url: str | None = None) -> None:
        self.root = root
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.owner = Store.open(root, database_url=database_url)
        self.opened: list[Store] = [self.owner]
        self.principals: dict[str, Principal] = {}

    def folder(self, person: tuple[str, str]) -> Path:
        return self.tmp_path / "identities" / person[1]

    def principal(self, person: tuple[str, str]) -> Principal:
        if person[1] not in self.principals:
            folder = make_identity(self.folder(person), *person)
            enroll(self.owner, folder, role="approver")
            self.principals[person[1]] = unlock(folder)
        return self.principals[person[1]]

    def as_(self, person: tuple[str, str] | None = None) -> Store:
        """The store, with every event it writes signed by ``person`` (default: the owner)."""
        if person is None:
            return self.owner
        store = Store.open(
            self.root, database_url=self.database_url, principal=self.principal(person)
        )
        self.opened.append(store)
        return store

    def sign(self, person: tuple[str, str], ref: str, meaning: str = "approved") -> None:
        self.principal(person)
        sign(
            self.owner,
            ref,
            meaning=meaning,  # type: ignore[arg-type]
            reason="checked the model card",
            passphrase=PASSPHRASE,
            identity_dir=self.folder(person),
        )

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path / "store", tmp_path)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """A lab on each metadata backend."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    made = Lab(tmp_path / "store", tmp_path, url)
    yield made
    made.close()


def _train(
    lab: Lab, csv: Path, promotion: dict[str, Any] | None = None, name: str = "sol"
) -> tuple[str, str]:
    """Eve runs the experiment, Rex registers it as ``name`` version 1."""
    result = qm.run(_config(csv, promotion), store=lab.as_(EVE))
    assert result.run_id is not None
    mv = register(lab.as_(REX), result.run_id, name)
    assert mv.created_by == _display(REX)
    return result.run_id, mv.model_digest


def _policy_file(tmp_path: Path, content: dict[str, Any], name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    text = json.dumps(content) if name.endswith(".json") else yaml.safe_dump(content)
    path.write_text(text, encoding="utf-8")
    return path


def _refusals(store: Store) -> list[dict[str, Any]]:
    return [e.details for e in store.audit_events(action="model.promotion_refused")]


# -- policy values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("metrics: {rmse: {max: .nan}}", "metrics.rmse.max", "nan is not a finite number"),
        ("metrics: {rmse: {max: .inf}}", "metrics.rmse.max", "inf is not a finite number"),
        ("metrics: {r2: {min: '0.5'}}", "metrics.r2.min", "'0.5' is not a number"),
        ("metrics: {r2: {min: true}}", "metrics.r2.min", "True is not a number"),
        ("metrics: {rmse: {min: 0.9, max: 0.1}}", "metrics.rmse", "min 0.9 is above max 0.1"),
        ("approvals: {count: 0}", "approvals.count", "greater than or equal to 1"),
        ("approvals: {count: 1.5}", "approvals.count", "valid integer"),
        ("approvals: {count: 2, meaning: ok}", "approvals.meaning", "'approved', 'reviewed'"),
        ("require_signature: approved\nquorum: 2", "quorum", "Extra inputs"),
    ],
)
def test_a_bad_policy_value_is_refused_in_one_line_naming_the_key(
    tmp_path: Path, text: str, where: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    message = str(err.value)
    assert f"bad promotion policy in {path} at '{where}': " in message
    assert problem in message and "\n" not in message
    assert err.value.fix  # every refusal says how to fix it


def test_a_nan_threshold_in_json_or_in_the_experiment_is_refused(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"metrics": {"rmse": {"max": NaN}}}', encoding="utf-8")
    # YAML (which reads JSON files too) takes JSON's bare NaN for text: refused as well.
    with pytest.raises(ConfigError, match=re.escape("'metrics.rmse.max': 'NaN' is not a number")):
        load_policy(path)
    # In the experiment it is refused before the run: stored, NaN would become null.
    promotion = {"metrics": {"rmse": {"min": 0.0, "max": math.nan}}}
    with pytest.raises(
        ConfigError, match=re.escape("experiment's 'promotion' at 'metrics.rmse.max'")
    ):
        parse_config(_config(small_esol_csv, promotion))
    with pytest.raises(ConfigError, match="min 2 is above max 1"):
        parse_config(_config(small_esol_csv, {"metrics": {"rmse": {"min": 2, "max": 1}}}))


def test_merging_keeps_the_stricter_bound_and_the_larger_count() -> None:
    floor = PromotionPolicy.model_validate(
        {"metrics": {"rmse": {"max": 0.1}, "r2": {"min": 0.5}}, "require_signature": "approved"}
    )
    lax = PromotionPolicy.model_validate(
        {
            "metrics": {"rmse": {"min": 0.0, "max": 0.5}, "r2": {"min": 0.7}, "mae": {"max": 1}},
            "approvals": [{"count": 2, "meaning": "approved"}, {"count": 1, "meaning": "reviewed"}],
        }
    )
    merged, weakened = merge_policies(floor, lax)
    assert merged.to_dict() == {
        "metrics": {"mae": {"max": 1.0}, "r2": {"min": 0.7}, "rmse": {"min": 0.0, "max": 0.1}},
        "approvals": [{"count": 2, "meaning": "approved"}, {"count": 1, "meaning": "reviewed"}],
    }
    assert weakened == (
        "--policy's rmse max 0.5 is weaker than the experiment's 0.1: the experiment's holds",
    )
    fewer = PromotionPolicy.model_validate({"approvals": {"count": 1}})
    merged, weakened = merge_policies(
        PromotionPolicy.model_validate({"approvals": {"count": 3}}), fewer
    )
    assert merged.required_approvals() == {"approved": 3}
    assert weakened == (
        "--policy's 'approved' approvals 1 is weaker than the experiment's 3: "
        "the experiment's holds",
    )
    contradiction = PromotionPolicy.model_validate({"metrics": {"rmse": {"min": 0.5}}})
    with pytest.raises(ConfigError, match="leave no passing rmse"):
        merge_policies(floor, contradiction)


# -- the experiment's policy is the floor ------------------------------------------------


def test_a_weakening_policy_file_cannot_promote_past_the_experiments_gates(
    lab: Lab, small_esol_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    strict = {"metrics": {"rmse": {"max": 0.1}}, "require_signature": "approved"}
    run_id, _ = _train(lab, small_esol_csv, strict)
    lax = _policy_file(tmp_path, {"metrics": {"rmse": {"max": 100}}}, "lax.yaml")
    store = lab.as_(REX)
    with pytest.raises(PromotionRefused, match="at the metrics gate: test rmse") as err:
        promote(store, "sol", 1, policy_file=lax)
    assert err.value.gate == "metrics"
    assert store.current_aliases("sol") == {}
    refused = _refusals(store)[-1]
    assert refused["policy"] == {
        "metrics": {"rmse": {"max": 0.1}},
        "approvals": [{"count": 1, "meaning": "approved"}],
    }
    assert refused["floor"] == {"source": f"experiment config of run {run_id}", "policy": strict}
    assert refused["given"] == {
        "source": f"policy file {lax}",
        "policy": {"metrics": {"rmse": {"max": 100.0}}},
    }
    assert refused["weakened"] == [
        "--policy's rmse max 100 is weaker than the experiment's 0.1: the experiment's holds"
    ]
    assert refused["override"] is False

    # The same through the CLI: one line, exit 2, nothing moved.
    at = ["--store", str(lab.root)]
    assert (
        main(["models", "promote", "sol", "1", "--to", "production", "--policy", str(lax), *at])
        == 2
    )
    err_text = capsys.readouterr().err
    assert "refused at the metrics gate" in err_text and "Traceback" not in err_text
    assert lab.as_(REX).current_aliases("sol") == {}


def test_a_policy_file_adds_gates_on_top_of_a_floor_it_cannot_lower(
    lab: Lab,
    small_esol_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id, _ = _train(lab, small_esol_csv, {"metrics": {"rmse": {"max": 50}}})
    store = lab.as_(REX)
    rmse = store.get_model_version("sol", 1).metrics["rmse"]
    tighter = _policy_file(tmp_path, {"metrics": {"rmse": {"max": rmse / 2}}}, "tight.json")
    with pytest.raises(PromotionRefused, match="metrics gate"):
        promote(store, "sol", 1, policy_file=tighter)
    looser = _policy_file(tmp_path, {"metrics": {"rmse": {"max": 500}, "r2": {"min": -100}}})
    at = ["--store", str(lab.root)]
    # A relative path: a path longer than the terminal line is cut short (pytest-xdist's
    # tmp_path is longer than plain pytest's).
    monkeypatch.chdir(tmp_path)
    assert main(["models", "promote", "sol", "1", "--policy", looser.name, *at]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"experiment config of run {run_id} + policy file {looser.name}" in out
    assert "rmse max 500 is weaker than the experiment's 50" in out
    promoted = lab.as_(REX).audit_events(action="model.promoted")[-1].details
    assert promoted["policy"] == {"metrics": {"r2": {"min": -100.0}, "rmse": {"max": 50.0}}}
    assert promoted["weakened"] == [
        "--policy's rmse max 500 is weaker than the experiment's 50: the experiment's holds"
    ]


def test_an_override_needs_an_admin_and_a_reason_and_is_recorded(
    lab: Lab, small_esol_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, _ = _train(lab, small_esol_csv, {"metrics": {"rmse": {"max": 0.1}}})
    lax = _policy_file(tmp_path, {"metrics": {"rmse": {"max": 100}}})
    store = lab.as_(REX)
    with pytest.raises(RegistryError, match="needs a reason"):
        promote(store, "sol", 1, policy_file=lax, override=True)
    with pytest.raises(RegistryError, match="needs the policy that replaces"):
        promote(store, "sol", 1, override=True, reason="hotfix")
    with pytest.raises(PromotionRefused, match="is an approver, and only an admin") as err:
        promote(store, "sol", 1, policy_file=lax, override=True, reason="hotfix")
    assert err.value.gate == "override"
    assert _refusals(store)[-1]["gate"] == "override"
    assert store.current_aliases("sol") == {}

    # The store's owner is an admin: the override applies the file instead of the floor.
    at = ["--store", str(lab.root)]
    reason = "QA deviation DEV-12: rmse bound under review"
    command = ["models", "promote", "sol", "1", "--policy", str(lax), "--override"]
    assert main([*command, "--reason", reason, *at]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"override of the experiment's policy: {reason}" in out
    event = lab.owner.audit_events(action="model.promoted")[-1]
    assert event.actor == lab.owner.principal.display and event.reason == reason
    assert event.details["override"] is True
    assert event.details["override_reason"] == reason
    assert event.details["policy"] == {"metrics": {"rmse": {"max": 100.0}}}
    assert event.details["floor"] == {
        "source": f"experiment config of run {run_id}",
        "policy": {"metrics": {"rmse": {"max": 0.1}}},
    }
    assert lab.owner.current_aliases("sol") == {"production": 1}
    assert lab.owner.verify_audit().ok


# -- separation of duties ------------------------------------------------------------------


def test_the_authors_and_the_registrants_approvals_do_not_count(
    lab: Lab, small_esol_csv: Path
) -> None:
    run_id, model = _train(lab, small_esol_csv, {"require_signature": "approved"})
    lab.sign(EVE, run_id)  # the author approves her own run
    lab.sign(REX, model)  # the registrant approves the model blob
    store = lab.as_(REX)
    with pytest.raises(PromotionRefused, match="at the signature gate") as err:
        promote(store, "sol", 1)
    detail = err.value.gates[-1].detail
    assert "0 counted" in detail
    assert f"{_display(EVE)}: the run's author" in detail
    assert f"{_display(REX)}: the model's registrant" in detail
    approvals = _refusals(store)[-1]["approvals"]
    assert [(a["signer"], a["counted"]) for a in approvals] == [
        (_display(EVE), False),
        (_display(REX), False),
    ]
    assert store.current_aliases("sol") == {}

    lab.sign(ADA, run_id)
    result = promote(lab.as_(REX), "sol", 1)
    assert result.gates[-1].detail.startswith(f"approved by {_display(ADA)} (1 of 1)")


def test_a_new_key_does_not_make_the_author_someone_else(lab: Lab, small_esol_csv: Path) -> None:
    run_id, _ = _train(lab, small_esol_csv, {"require_signature": "reviewed"})
    # Eve rotates to a new key (proved by the new key, signed by the old), then reviews.
    fresh = make_identity(lab.tmp_path / "eve-new", *EVE)
    new_key = load_signing_key(PASSPHRASE, fresh)
    public_key = load_identity(fresh).public_key
    old = lab.principal(EVE).fingerprint
    new_fp = load_identity(fresh).fingerprint
    proof = base64.b64encode(new_key.sign(rotation_message(EVE[1], old, new_fp))).decode()
    lab.as_(EVE).identities.rotate(public_key, proof, reason="new laptop")
    sign(
        lab.owner,
        run_id,
        meaning="reviewed",
        reason="looks right",
        passphrase=PASSPHRASE,
        identity_dir=fresh,
    )
    with pytest.raises(PromotionRefused, match=rf"{re.escape(_display(EVE))}: the run's author"):
        promote(lab.as_(REX), "sol", 1)


def test_one_person_counts_once_however_often_they_sign_or_replay(
    lab: Lab, small_esol_csv: Path
) -> None:
    run_id, model = _train(lab, small_esol_csv, {"approvals": {"count": 2}})
    lab.sign(ADA, run_id)
    lab.sign(ADA, model)  # a second signature, on the blob
    store = lab.as_(ADA)
    original = store.audit_events(action=SIGNATURE_ACTION)[0]
    # An exact replay of Ada's first signature event: the same fields, the same bytes.
    store.audit(
        SIGNATURE_ACTION, original.objects, reason=original.reason, details=original.details
    )
    with pytest.raises(PromotionRefused, match="at the signature gate") as err:
        promote(lab.as_(REX), "sol", 1)
    detail = err.value.gates[-1].detail
    assert f"1 counted ({_display(ADA)})" in detail
    assert f"{_display(ADA)}: already counted (one approval per person)" in detail
    assert f"{_display(ADA)}: a replay of the signature at seq" in detail
    assert lab.as_(REX).current_aliases("sol") == {}


def test_two_approvers_other_than_the_author_are_needed_for_a_two_approver_policy(
    any_lab: Lab, small_esol_csv: Path, tmp_path: Path
) -> None:
    run_id, model = _train(any_lab, small_esol_csv)
    two = _policy_file(tmp_path, {"approvals": {"count": 2, "meaning": "approved"}})
    any_lab.sign(EVE, run_id)
    any_lab.sign(ADA, run_id)
    with pytest.raises(PromotionRefused, match="2 'approved' approvals needed") as err:
        promote(any_lab.as_(REX), "sol", 1, policy_file=two)
    assert f"1 counted ({_display(ADA)}); not counted: {_display(EVE)}: the run's author" in (
        err.value.gates[-1].detail
    )
    any_lab.sign(BOB, model)
    store = any_lab.as_(REX)
    result = promote(store, "sol", 1, policy_file=two)
    gate = result.gates[-1]
    assert gate.gate == "signature" and gate.passed
    assert gate.detail == (
        f"approved by {_display(ADA)}, {_display(BOB)} (2 of 2); "
        f"not counted: {_display(EVE)}: the run's author"
    )
    assert store.current_aliases("sol") == {"production": 1}
    event = store.audit_events(action="model.promoted")[-1]
    counted = [a["signer"] for a in event.details["approvals"] if a["counted"]]
    assert counted == [_display(ADA), _display(BOB)]
    assert event.details["override"] is False
    assert store.verify_audit().ok

    # The compliance report shows both approvals, and the author's that did not count.
    parts = re.split(r"(?=<(?:tr|p|li|div|h[1-4])[ >])", render_report(store, run_id))
    rows = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", part)).split()) for part in parts]
    assert any("Approvals counted: 2 of 3" in row for row in rows)  # Eve, Ada, Bob signed
    for person in (ADA, BOB):
        assert any(row.endswith(f"{_display(person)} approved counted") for row in rows)
    assert any(f"{_display(EVE)} approved not counted the run's author" in r for r in rows)
