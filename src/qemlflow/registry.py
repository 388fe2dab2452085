"""The model registry: named, numbered model versions, aliases, and gated promotion.

``register`` turns a finished run's model (the exact ``model.joblib`` blob its ``fit``
step wrote) into version N of a name; versions are immutable. An alias
(``production``, ``staging``, or any name) points at one version; its whole history is
kept, so ``rollback`` can step back. ``promote`` moves an alias only after the promotion
gates pass, in order:

1. ``metrics``: the run's test metrics meet the thresholds of the policy
   (``{"metrics": {"rmse": {"max": 0.7}, "roc_auc": {"min": 0.8}}}``), read from a
   policy file (YAML or JSON) or from the run's experiment config key ``promotion``;
   without either there are no thresholds, and the gate says so;
2. ``smoke``: the model blob, re-hashed, loads and predicts the run's own test
   molecules without errors, with finite values equal (to 1e-9) to the run's recorded
   ``predict`` step output: the stored model reproduces its recorded predictions;
3. ``signature`` (when the policy has ``require_signature: approved``, ``reviewed`` or
   ``authored``): a valid electronic signature with that meaning on the run or on the
   model blob (:func:`qemlflow.audit.signatures.sign`).

Every registration, alias move and refused promotion is an audit event
(``model.registered``, ``model.promoted``, ``model.rolled_back``,
``model.alias_removed``, ``model.promotion_refused``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from qemlflow.errors import ConfigError, QeMLflowError
from qemlflow.store.registry_records import AliasEventRecord, ModelVersionRecord

if TYPE_CHECKING:
    from qemlflow.data import Dataset
    from qemlflow.pipeline.predictor import Predictor
    from qemlflow.splits import Split
    from qemlflow.store import Store

__all__ = [
    "PRODUCTION",
    "SMOKE_TOLERANCE",
    "GateResult",
    "MetricThreshold",
    "ModelVersion",
    "PromotionPolicy",
    "PromotionRefused",
    "PromotionResult",
    "RegistryError",
    "describe",
    "list_models",
    "load_policy",
    "load_version",
    "promote",
    "register",
    "resolve",
    "rollback",
    "test_molecules",
]

ModelVersion = ModelVersionRecord
"""A registered model version (:class:`~qemlflow.store.ModelVersionRecord`)."""

PRODUCTION = "production"
LATEST = "latest"
SMOKE_TOLERANCE = 1e-9
_MODELS_FIX = "list registered models with `qemlflow models list`"


class RegistryError(QeMLflowError):
    """The registry cannot do what was asked (bad name, unfinished run, no such alias, ...)."""


class PromotionRefused(RegistryError):  # noqa: N818 - the name the issue and the CLI use
    """A promotion gate failed; nothing moved. ``gate`` names it, ``gates`` has every result.

    Examples
    --------
    >>> err = PromotionRefused("sol@2 refused at the metrics gate: rmse 0.9 > max 0.7",
    ...                        "improve the model", gate="metrics")
    >>> err.gate
    'metrics'
    """

    def __init__(
        self,
        problem: str,
        fix: str | None = None,
        *,
        gate: str,
        gates: tuple[GateResult, ...] = (),
    ) -> None:
        super().__init__(problem, fix)
        self.gate = gate
        self.gates = gates


# -- policy --------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricThreshold(_Strict):
    """Bounds on one test metric: ``min`` (at least), ``max`` (at most), or both."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> MetricThreshold:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class PromotionPolicy(_Strict):
    """What a version must meet to be promoted.

    Examples
    --------
    >>> policy = PromotionPolicy.model_validate(
    ...     {"metrics": {"rmse": {"max": 0.7}}, "require_signature": "approved"})
    >>> policy.metrics["rmse"].max, policy.require_signature
    (0.7, 'approved')
    """

    metrics: dict[str, MetricThreshold] = {}
    require_signature: Literal["approved", "reviewed", "authored"] | None = None


def _parse_policy(data: Any, source: str) -> PromotionPolicy:
    if not isinstance(data, dict):
        raise ConfigError(
            f"the promotion policy in {source} is not a mapping",
            "write it as {metrics: {rmse: {max: 0.7}}, require_signature: approved}",
        )
    try:
        return PromotionPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"bad promotion policy in {source} at '{where}': {message}",
            "allowed keys: metrics (name -> {min, max}), require_signature",
        ) from None


def load_policy(path: str | Path) -> PromotionPolicy:
    """Read a promotion policy from a YAML or JSON file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"policy file '{path}' not found", "check the path") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0]
        raise ConfigError(f"cannot read policy file '{path}' ({reason})", "fix it") from None
    return _parse_policy(data, str(path))


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """One promotion gate: its name, whether it passed, and what it found."""

    gate: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-compatible dict."""
        return {"gate": self.gate, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class PromotionResult:
    """A promotion that happened: ``name@alias`` now points at ``version``."""

    name: str
    version: int
    alias: str
    previous: int | None
    policy_source: str
    gates: tuple[GateResult, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-compatible dict."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "previous": self.previous,
            "policy_source": self.policy_source,
            "gates": [g.to_dict() for g in self.gates],
        }


# -- registering and resolving ---------------------------------------------------------


def _check_name(name: str) -> str:
    from qemlflow.store.store import MODEL_NAME_PATTERN

    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise RegistryError(
            f"model name {name!r} is not allowed",
            "use lowercase letters, digits, '_', '.' and '-', starting with a letter or digit",
        )
    return name


def _check_alias(alias: str) -> str:
    from qemlflow.store.store import MODEL_NAME_PATTERN

    if not MODEL_NAME_PATTERN.fullmatch(alias) or alias.isdigit() or alias == LATEST:
        raise RegistryError(
            f"alias {alias!r} is not allowed",
            "use lowercase letters, digits, '_', '.' and '-', not a plain number nor 'latest'",
        )
    return alias


def register(store: Store, run_ref: str, name: str) -> ModelVersion:
    """Register the model of finished run ``run_ref`` (id or unique prefix) as ``name``'s
    next version.

    The version refers to the run's ``fit`` output: the blob that is the run's
    ``model.joblib``, byte for byte. Registering the same run again makes a new version.
    """
    _check_name(name)
    run = store.get_run(run_ref)
    if run.status != "finished":
        raise RegistryError(
            f"run {run.id} is {run.status}; only a finished run can be registered",
            "register a finished run (`qemlflow runs list`)",
        )
    fit = next((s for s in run.steps if s.step == "fit" and s.output), None)
    if fit is None or fit.output is None:
        raise RegistryError(
            f"run {run.id} has no fitted model (no 'fit' step)", "register a training run"
        )
    metrics = run.metrics or {}
    task, targets = metrics.get("task"), metrics.get("targets")
    if not isinstance(task, str) or not isinstance(targets, list):
        predictor = _load(store, fit.output, f"the model of run {run.id}")
        task, targets = predictor.task, list(predictor.target_names)
    test = metrics.get("test")
    return store.register_model_version(
        name,
        run.id,
        fit.output,
        fit.key,
        task,
        [str(t) for t in targets],
        dict(test) if isinstance(test, dict) else {},
    )


def _latest(store: Store, name: str) -> ModelVersion:
    versions = store.list_model_versions(name)
    if not versions:
        raise RegistryError(f"no model named {name!r}", _MODELS_FIX)
    return versions[-1]


def resolve(store: Store, spec: str) -> ModelVersion:
    """Return the version ``spec`` names: ``NAME``, ``NAME@ALIAS``, ``NAME@N``, ``NAME@latest``.

    ``NAME`` alone is ``NAME@production`` when that alias is set, else the latest version.
    """
    name, at, ref = spec.strip().partition("@")
    name, ref = name.strip(), ref.strip()
    if at and not ref:
        raise RegistryError(f"model spec {spec!r} ends in '@'", "write NAME, NAME@ALIAS or NAME@N")
    if ref.isascii() and ref.isdigit():  # "²".isdigit() too, but int() refuses it
        return store.get_model_version(name, int(ref))
    if ref == LATEST:
        return _latest(store, name)
    aliases = store.current_aliases(name)
    alias = ref or PRODUCTION
    if alias in aliases:
        return store.get_model_version(name, aliases[alias])
    if not ref:
        return _latest(store, name)
    _latest(store, name)  # no such model: say that rather than "no alias"
    known = ", ".join(sorted(aliases)) or "none"
    raise RegistryError(
        f"model {name!r} has no alias {alias!r} (aliases: {known})",
        f"promote a version first: `qemlflow models promote {name} N --to {alias}`",
    )


def _load(store: Store, digest: str, label: str) -> Predictor:
    from qemlflow.pipeline.predictor import load_predictor_bytes

    return load_predictor_bytes(store.get_bytes(digest), label)


def load_version(store: Store, mv: ModelVersion) -> Predictor:
    """Return the version's predictor, read from its blob after re-hashing it.

    Raises :class:`~qemlflow.store.CorruptBlobError` when the blob was altered on disk,
    :class:`~qemlflow.store.BlobNotFoundError` when it is gone. Only load models from a
    store you trust: a model file is a pickle.
    """
    return _load(store, mv.model_digest, f"model {mv.spec}")


@dataclass(frozen=True)
class _RunOutputs:
    dataset: Dataset
    split: Split
    scores: dict[str, np.ndarray]


def _run_outputs(store: Store, mv: ModelVersion) -> _RunOutputs:
    from qemlflow.pipeline.steps import DatasetCodec, ScoresCodec, SplitCodec

    run = store.get_run(mv.run_id)
    outputs = {s.step: s.output for s in run.steps if s.output}
    missing = [s for s in ("standardize", "split", "predict") if s not in outputs]
    if missing:
        raise RegistryError(
            f"run {run.id} of {mv.spec} has no recorded {', '.join(missing)} output",
            "register a run made by `qemlflow run`",
        )
    return _RunOutputs(
        dataset=DatasetCodec().decode(store.get_bytes(outputs["standardize"])),
        split=SplitCodec().decode(store.get_bytes(outputs["split"])),
        scores=ScoresCodec().decode(store.get_bytes(outputs["predict"])),
    )


def test_molecules(store: Store, mv: ModelVersion) -> list[str]:
    """Return the standardized SMILES of the test split of the version's run."""
    outputs = _run_outputs(store, mv)
    return [outputs.dataset.smiles[int(i)] for i in outputs.split.test]


test_molecules.__test__ = False  # type: ignore[attr-defined]  # not a test: pytest, skip it


# -- promotion -------------------------------------------------------------------------


def _policy_for(
    store: Store,
    mv: ModelVersion,
    policy: PromotionPolicy | None,
    policy_file: Path | None,
) -> tuple[PromotionPolicy, str]:
    if policy is not None and policy_file is not None:
        raise RegistryError("both a policy and a policy file were given", "give one of them")
    if policy is not None:
        return policy, "given policy"
    if policy_file is not None:
        return load_policy(policy_file), f"policy file {policy_file}"
    config = store.get_run(mv.run_id).config
    if isinstance(config, dict) and config.get("promotion") is not None:
        source = f"experiment config of run {mv.run_id}"
        return _parse_policy(config["promotion"], source), source
    return PromotionPolicy(), "none"


def _metrics_gate(mv: ModelVersion, policy: PromotionPolicy) -> GateResult:
    if not policy.metrics:
        return GateResult("metrics", True, "no thresholds (no policy file, no 'promotion' config)")
    checked: list[str] = []
    for metric, bound in sorted(policy.metrics.items()):
        value = mv.metrics.get(metric)
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            have = ", ".join(sorted(mv.metrics)) or "none"
            return GateResult(
                "metrics", False, f"test metric {metric!r} is missing (the run has: {have})"
            )
        if bound.min is not None and value < bound.min:
            return GateResult("metrics", False, f"test {metric} {value:.4g} < min {bound.min:g}")
        if bound.max is not None and value > bound.max:
            return GateResult("metrics", False, f"test {metric} {value:.4g} > max {bound.max:g}")
        checked.append(f"{metric} {value:.4g}")
    return GateResult("metrics", True, "within thresholds: " + ", ".join(checked))


def _smoke_gate(store: Store, mv: ModelVersion) -> GateResult:
    """Predict the run's test molecules with the stored model; compare with the record."""
    try:
        predictor = load_version(store, mv)
        outputs = _run_outputs(store, mv)
    except QeMLflowError as exc:
        return GateResult("smoke", False, str(exc))
    test = np.asarray(outputs.split.test, dtype=np.int64)
    smiles = [outputs.dataset.smiles[int(i)] for i in test]
    if not smiles:
        return GateResult("smoke", False, f"run {mv.run_id} has no test molecules")
    try:
        frame = predictor.predict(smiles)
    except Exception as exc:  # a model that cannot predict fails the gate, whatever it raises
        return GateResult("smoke", False, f"prediction failed: {type(exc).__name__}: {exc}")
    errors = frame["error"].astype(str)
    if (errors != "").any():
        first = int(np.flatnonzero((errors != "").to_numpy())[0])
        return GateResult(
            "smoke",
            False,
            f"{int((errors != '').sum())} of {len(smiles)} test molecules failed "
            f"(first: {smiles[first]!r}: {errors.iloc[first]})",
        )
    single = len(mv.target_names) == 1
    worst = 0.0
    for base, matrix in outputs.scores.items():
        for t, target in enumerate(mv.target_names):
            column = base if single else f"{base}_{target}"
            if column not in frame:
                return GateResult("smoke", False, f"the model gives no {column!r} column")
            got = frame[column].to_numpy(dtype=float)
            want = matrix[test, t]
            if not np.isfinite(got).all():
                return GateResult("smoke", False, f"non-finite {column} for a test molecule")
            diff = float(np.max(np.abs(got - want)))
            if not diff <= SMOKE_TOLERANCE:
                return GateResult(
                    "smoke",
                    False,
                    f"{column} differs from the run's recorded predictions by up to {diff:.3g}",
                )
            worst = max(worst, diff)
    return GateResult(
        "smoke",
        True,
        f"{len(smiles)} test molecules predicted; equal to the recorded predictions "
        f"(max |diff| {worst:.1e})",
    )


def _signature_gate(store: Store, mv: ModelVersion, meaning: str) -> GateResult:
    from qemlflow.audit.signatures import signatures_for

    found: list[dict[str, Any]] = []
    for ref in (mv.run_id, mv.model_digest):
        try:
            found += signatures_for(store, ref)
        except QeMLflowError:  # e.g. the model blob is gone: then it bears no signature
            continue
    valid = [s for s in found if s["valid"] and s["meaning"] == meaning]
    if valid:
        return GateResult("signature", True, f"{meaning} by {valid[-1]['signer']}")
    invalid = [s for s in found if s["meaning"] == meaning and not s["valid"]]
    why = f" ({len(invalid)} invalid: {invalid[-1]['problems'][0]})" if invalid else ""
    return GateResult(
        "signature",
        False,
        f"no valid {meaning!r} signature on run {mv.run_id} or its model blob{why}",
    )


_FIXES = {
    "metrics": "train a better model, or change the thresholds in the promotion policy",
    "smoke": "the stored model does not reproduce its run: check `qemlflow store verify` "
    "and register a fresh run",
}


def promote(
    store: Store,
    name: str,
    version: int,
    to: str = PRODUCTION,
    *,
    policy: PromotionPolicy | None = None,
    policy_file: Path | None = None,
    reason: str | None = None,
) -> PromotionResult:
    """Run the promotion gates on ``name`` version ``version``; if all pass, move ``to`` there.

    Raises
    ------
    PromotionRefused
        A gate failed: nothing moved, and a ``model.promotion_refused`` audit event says
        which gate and why.
    """
    _check_alias(to)
    mv = store.get_model_version(name, version)
    chosen, source = _policy_for(store, mv, policy, policy_file)
    previous = store.current_aliases(name).get(to)
    gates: list[GateResult] = []
    checks: list[Callable[[], GateResult]] = [
        lambda: _metrics_gate(mv, chosen),
        lambda: _smoke_gate(store, mv),
    ]
    if chosen.require_signature is not None:
        meaning = chosen.require_signature
        checks.append(lambda: _signature_gate(store, mv, meaning))
    objects = {
        "model_name": name,
        "model_version": mv.spec,
        "model": mv.model_digest,
        "run": mv.run_id,
    }
    details: dict[str, Any] = {
        "name": name,
        "alias": to,
        "version": mv.version,
        "policy_source": source,
        "policy": chosen.model_dump(mode="json", exclude_defaults=True),
    }
    for check in checks:
        result = check()
        gates.append(result)
        if result.passed:
            continue
        problem = f"promotion of {mv.spec} to {to} refused at the {result.gate} gate: "
        problem += result.detail
        fix = _FIXES.get(result.gate) or (
            f"sign it first: `qemlflow sign {mv.run_id} --meaning {chosen.require_signature} "
            "--reason ...`"
        )
        store.audit(
            "model.promotion_refused",
            objects,
            reason=problem,
            details={**details, "gate": result.gate, "gates": [g.to_dict() for g in gates]},
        )
        raise PromotionRefused(problem, fix, gate=result.gate, gates=tuple(gates))
    store.set_alias(
        name,
        to,
        mv.version,
        reason or f"promoted after the {', '.join(g.gate for g in gates)} gates",
        action="promoted",
        details={**details, "gates": [g.to_dict() for g in gates]},
    )
    return PromotionResult(
        name=name,
        version=mv.version,
        alias=to,
        previous=previous,
        policy_source=source,
        gates=tuple(gates),
    )


def _alias_stack(history: list[AliasEventRecord]) -> list[int | None]:
    """Replay an alias's history into the stack of versions a rollback steps back through."""
    stack: list[int | None] = []
    for event in history:
        if event.action == "rolled_back":
            while stack and stack[-1] != event.version:
                stack.pop()
            if not stack:
                stack.append(event.version)
        elif not stack or stack[-1] != event.version:
            stack.append(event.version)
    return stack


def rollback(
    store: Store, name: str, alias: str = PRODUCTION, reason: str | None = None
) -> ModelVersion:
    """Move ``name@alias`` back to the version it pointed at before the current one.

    Repeated rollbacks keep stepping back through the alias's history. The target's blob
    is re-hashed first: a rollback never lands on a corrupt model.
    """
    current = store.current_aliases(name).get(alias)
    if current is None:
        _latest(store, name)
        raise RegistryError(
            f"{name}@{alias} points at no version; there is nothing to roll back",
            f"promote a version: `qemlflow models promote {name} N --to {alias}`",
        )
    stack = _alias_stack(store.alias_history(name, alias))
    while stack and (stack[-1] is None or stack[-1] == current):
        stack.pop()
    target = stack[-1] if stack else None
    if target is None:
        raise RegistryError(
            f"{name}@{alias} has no version before {current} to roll back to",
            f"promote another version: `qemlflow models promote {name} N --to {alias}`",
        )
    mv = store.get_model_version(name, target)
    store.get_bytes(mv.model_digest)  # verified: CorruptBlobError / BlobNotFoundError
    store.set_alias(
        name,
        alias,
        target,
        reason or f"rolled back from version {current}",
        action="rolled_back",
        details={"from": current},
    )
    return mv


# -- reading -----------------------------------------------------------------------------


def describe(store: Store, name: str) -> dict[str, Any]:
    """Return a model's versions (with metrics and aliases), current aliases and history."""
    versions = store.list_model_versions(name)
    if not versions:
        raise RegistryError(f"no model named {name!r}", _MODELS_FIX)
    aliases = store.current_aliases(name)
    return {
        "name": name,
        "aliases": aliases,
        "versions": [
            {**v.to_dict(), "aliases": sorted(a for a, n in aliases.items() if n == v.version)}
            for v in versions
        ],
        "history": [e.to_dict() for e in store.alias_history(name)],
    }


def list_models(store: Store) -> list[dict[str, Any]]:
    """Return one summary per model name: latest version, count and current aliases."""
    by_name: dict[str, list[ModelVersion]] = {}
    for v in store.list_model_versions():
        by_name.setdefault(v.name, []).append(v)
    return [
        {
            "name": name,
            "versions": len(versions),
            "latest": versions[-1].version,
            "task": versions[-1].task,
            "aliases": store.current_aliases(name),
            "created_at": versions[-1].created_at,
        }
        for name, versions in sorted(by_name.items())
    ]
