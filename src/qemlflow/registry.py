"""The model registry: named, numbered model versions, aliases, and gated promotion.

``register`` turns a finished run's model (the exact ``model.joblib`` blob its ``fit``
step wrote) into version N of a name; versions are immutable. An alias
(``production``, ``staging``, or any name) points at one version; its whole history is
kept, so ``rollback`` can step back. ``promote`` moves an alias only after the promotion
gates pass, in order:

1. ``metrics``: the run's test metrics meet the thresholds of the policy
   (``{"metrics": {"rmse": {"max": 0.7}, "roc_auc": {"min": 0.8}}}``; finite numbers,
   ``min <= max``);
2. ``smoke``: the model blob, re-hashed, loads and predicts the run's own test
   molecules without errors, with finite values equal (to 1e-9) to the run's recorded
   ``predict`` step output: the stored model reproduces its recorded predictions;
3. ``signature`` (when the policy has ``approvals: {count: k, meaning: approved}`` or
   ``require_signature: M``, one approval with meaning ``M``): ``k`` valid electronic
   signatures with that meaning on the run or on the model blob
   (:func:`qemlflow.audit.signatures.sign`), by ``k`` distinct people (by normalized
   email) none of whom is the run's author (the actor of its ``run.started`` event) or
   the model's registrant. A person signing twice, or a replayed signature, counts once.

The policy is the experiment's own (the run config's ``promotion``), which is a floor: a
policy given with ``--policy`` is merged on top of it (the stricter bound and the larger
approval count win) and cannot remove or weaken a gate. Only an admin may ``override``
the floor, with a reason; the promotion's audit event records it.

Every registration, alias move and refused promotion is an audit event
(``model.registered``, ``model.promoted``, ``model.rolled_back``,
``model.alias_removed``, ``model.promotion_refused``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    "AppliedPolicy",
    "Approval",
    "Approvals",
    "GateResult",
    "MetricThreshold",
    "ModelVersion",
    "MonitoringThresholds",
    "PromotionPolicy",
    "PromotionRefused",
    "PromotionResult",
    "RegistryError",
    "describe",
    "list_models",
    "load_policy",
    "load_version",
    "merge_policies",
    "promote",
    "register",
    "resolve",
    "rollback",
    "test_molecules",
    "validate_policy",
]

ModelVersion = ModelVersionRecord
"""A registered model version (:class:`~qemlflow.store.ModelVersionRecord`)."""

PRODUCTION = "production"
Meaning = Literal["approved", "reviewed", "authored"]
"""The meanings of :mod:`qemlflow.audit.signatures` (not imported: it loads cryptography)."""
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


class _PolicyValueError(ValueError):
    """A bad policy value, with the fix to print next to it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


_NUMBER_FIX = "write a finite number, e.g. `max: 0.7` (not NaN, inf, null or text)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricThreshold(_Strict):
    """Bounds on one test metric: ``min`` (at least), ``max`` (at most), or both.

    Bounds are finite numbers and ``min <= max``: a NaN bound would pass every value and
    inverted bounds none.

    Examples
    --------
    >>> MetricThreshold(min=0.5, max=0.9).max
    0.9
    >>> MetricThreshold.model_validate({"max": float("nan")})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for MetricThreshold...
    """

    min: float | None = None
    max: float | None = None

    @field_validator("min", "max", mode="before")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _PolicyValueError(f"{value!r} is not a number", _NUMBER_FIX)
        if not math.isfinite(value):
            raise _PolicyValueError(f"{value!r} is not a finite number", _NUMBER_FIX)
        return float(value)

    @model_validator(mode="after")
    def _bounds(self) -> MetricThreshold:
        if self.min is None and self.max is None:
            raise _PolicyValueError("give min, max or both", "e.g. {max: 0.7}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _PolicyValueError(
                f"min {self.min:g} is above max {self.max:g}: no value can pass",
                "min is the lower bound and max the upper: swap them",
            )
        return self


class Approvals(_Strict):
    """``count`` signatures with ``meaning``, by distinct people other than the run's author
    and the model's registrant.

    Examples
    --------
    >>> Approvals(count=2).meaning
    'approved'
    """

    count: int = Field(strict=True, ge=1)
    meaning: Meaning = "approved"


class MonitoringThresholds(_Strict):
    """Alert thresholds of ``qemlflow monitor`` (``promotion.monitoring`` of a run config);
    a threshold left out keeps its default (:data:`qemlflow.monitoring.DEFAULT_THRESHOLDS`).

    Examples
    --------
    >>> MonitoringThresholds(psi=0.1).psi
    0.1
    >>> MonitoringThresholds(webhook="http://127.0.0.1:9000/hook", store_smiles=True).store_smiles
    True
    """

    psi: float | None = Field(default=None, ge=0)
    similarity_ks: float | None = Field(default=None, ge=0, le=1)
    ood_excess: float | None = Field(default=None, ge=0, le=1)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    min_molecules: int | None = Field(default=None, ge=1)
    webhook: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2000)
    """Where each newly recorded alert is POSTed as JSON (http or https URL)."""
    store_smiles: bool | None = None
    """Keep the SMILES of each window's out-of-domain molecules (at most 100 a window)."""


class PromotionPolicy(_Strict):
    """What a version must meet to be promoted.

    ``require_signature: M`` is one approval with meaning ``M``; ``approvals`` asks for
    ``count`` of them (a mapping, or a list with one mapping per meaning).

    Examples
    --------
    >>> policy = PromotionPolicy.model_validate(
    ...     {"metrics": {"rmse": {"max": 0.7}}, "require_signature": "approved"})
    >>> policy.metrics["rmse"].max, policy.require_signature
    (0.7, 'approved')
    >>> PromotionPolicy.model_validate(
    ...     {"require_signature": "reviewed", "approvals": {"count": 2}}).required_approvals()
    {'approved': 2, 'reviewed': 1}
    """

    metrics: dict[str, MetricThreshold] = {}
    require_signature: Meaning | None = None
    approvals: tuple[Approvals, ...] = ()
    monitoring: MonitoringThresholds | None = None

    @field_validator("approvals", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, Mapping) else value

    @field_validator("approvals", mode="after")
    @classmethod
    def _one_per_meaning(cls, value: tuple[Approvals, ...]) -> tuple[Approvals, ...]:
        meanings = [a.meaning for a in value]
        if len(set(meanings)) != len(meanings):
            raise _PolicyValueError(
                "a meaning is listed twice", "give each meaning once, with its count"
            )
        return value

    def required_approvals(self) -> dict[str, int]:
        """Return how many distinct approvers each meaning needs (meaning -> count)."""
        counts = {a.meaning: a.count for a in self.approvals}
        if self.require_signature is not None:
            counts[self.require_signature] = max(counts.get(self.require_signature, 0), 1)
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as JSON-compatible data, without empty keys."""
        data = self.model_dump(mode="json", exclude_none=True)
        return {k: v for k, v in data.items() if v not in ({}, [])}


_POLICY_FIX = (
    "allowed keys: metrics (name -> {min, max}), require_signature (a meaning), "
    "approvals ({count: k, meaning: approved}), monitoring ({psi, similarity_ks, "
    "ood_excess, error_rate, min_molecules})"
)

_FIELD_FIXES = {
    "count": "give count as a whole number of distinct approvers, 1 or more",
    "meaning": "the meanings are approved, reviewed and authored",
    "require_signature": "the meanings are approved, reviewed and authored",
}


def _parse_policy(data: Any, source: str) -> PromotionPolicy:
    if not isinstance(data, dict):
        raise ConfigError(
            f"the promotion policy in {source} is not a mapping",
            "write it as {metrics: {rmse: {max: 0.7}}, approvals: {count: 2, meaning: approved}}",
        )
    try:
        return PromotionPolicy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if loc[:2] == ["approvals", 0] and isinstance(data.get("approvals"), Mapping):
            del loc[1]  # the user wrote one mapping, not a list
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        cause = first.get("ctx", {}).get("error")
        fix = (
            cause.fix
            if isinstance(cause, _PolicyValueError)
            else _FIELD_FIXES.get(str(loc[-1]) if loc else "", _POLICY_FIX)
        )
        raise ConfigError(
            f"bad promotion policy in {source} at '{where}': {message}", fix
        ) from None


def validate_policy(data: Any, source: str) -> PromotionPolicy:
    """Return ``data`` as a :class:`PromotionPolicy`, or a one-line :class:`ConfigError`
    naming ``source``, the key and the fix (unknown keys, NaN or text thresholds,
    inverted bounds, an approval count below 1).

    Examples
    --------
    >>> validate_policy({"metrics": {"rmse": {"min": 0.5, "max": 0.1}}}, "p.yaml")
    Traceback (most recent call last):
    ...
    qemlflow.errors.ConfigError: bad promotion policy in p.yaml at 'metrics.rmse': min 0.5 \
is above max 0.1: no value can pass; min is the lower bound and max the upper: swap them
    """
    return _parse_policy(data, source)


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


@dataclass(frozen=True)
class AppliedPolicy:
    """The policy the gates checked, and where it came from.

    ``floor`` is the experiment's own policy (the run config's ``promotion``), which always
    applies; ``given`` the policy passed in (``--policy``), merged on top so that it can
    add gates but never remove or weaken one (``weakened`` says what it tried). With
    ``override`` (an admin, a reason) ``given`` replaces the floor instead.
    """

    policy: PromotionPolicy
    floor: PromotionPolicy
    floor_source: str
    given: PromotionPolicy | None = None
    given_source: str | None = None
    weakened: tuple[str, ...] = ()
    override: bool = False
    override_reason: str | None = None

    @property
    def source(self) -> str:
        """The sources in one phrase, e.g. ``experiment config of run R + policy file F``."""
        if self.override:
            return f"{self.given_source} (override of the {self.floor_source})"
        if self.given_source is None:
            return self.floor_source
        if self.floor_source == "none":
            return self.given_source
        return f"{self.floor_source} + {self.given_source}"

    def to_dict(self) -> dict[str, Any]:
        """Return what the promotion's audit event records about the policy."""
        data: dict[str, Any] = {
            "policy_source": self.source,
            "policy": self.policy.to_dict(),
            "floor": {"source": self.floor_source, "policy": self.floor.to_dict()},
            "given": None
            if self.given is None
            else {"source": self.given_source, "policy": self.given.to_dict()},
            "weakened": list(self.weakened),
            "override": self.override,
        }
        if self.override:
            data["override_reason"] = self.override_reason
        return data


def _bound(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def merge_policies(
    floor: PromotionPolicy, given: PromotionPolicy, given_label: str = "--policy"
) -> tuple[PromotionPolicy, tuple[str, ...]]:
    """Merge ``given`` on top of the ``floor``: the stricter bound and the larger approval
    count win; return the merged policy and what ``given`` tried to weaken.

    Examples
    --------
    >>> floor = PromotionPolicy.model_validate({"metrics": {"rmse": {"max": 0.1}}})
    >>> lax = PromotionPolicy.model_validate({"metrics": {"rmse": {"max": 0.5}}})
    >>> merged, weakened = merge_policies(floor, lax)
    >>> merged.metrics["rmse"].max, weakened
    (0.1, ("--policy's rmse max 0.5 is weaker than the experiment's 0.1: the experiment's holds",))
    """
    weakened: list[str] = []

    def note(what: str, tried: str, holds: str) -> None:
        weakened.append(
            f"{given_label}'s {what} {tried} is weaker than the experiment's {holds}: "
            "the experiment's holds"
        )

    metrics: dict[str, MetricThreshold] = {}
    for metric in sorted({*floor.metrics, *given.metrics}):
        f, g = floor.metrics.get(metric), given.metrics.get(metric)
        if f is None or g is None:
            only = f if f is not None else g
            if only is not None:
                metrics[metric] = only
            continue
        low = [b for b in (f.min, g.min) if b is not None]
        high = [b for b in (f.max, g.max) if b is not None]
        if f.min is not None and g.min is not None and g.min < f.min:
            note(f"{metric} min", f"{g.min:g}", f"{f.min:g}")
        if f.max is not None and g.max is not None and g.max > f.max:
            note(f"{metric} max", f"{g.max:g}", f"{f.max:g}")
        lo, hi = (max(low) if low else None), (min(high) if high else None)
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(
                f"{given_label} and the experiment's policy leave no passing {metric}: "
                f"min {lo:g} (from min {_bound(f.min)} / {_bound(g.min)}) is above "
                f"max {hi:g} (from max {_bound(f.max)} / {_bound(g.max)})",
                f"fix the {metric} bounds of {given_label}",
            )
        metrics[metric] = MetricThreshold(min=lo, max=hi)
    need_floor, need_given = floor.required_approvals(), given.required_approvals()
    counts: dict[str, int] = {}
    for meaning in sorted({*need_floor, *need_given}):
        f_count, g_count = need_floor.get(meaning, 0), need_given.get(meaning, 0)
        if f_count and g_count and g_count < f_count:
            note(f"{meaning!r} approvals", str(g_count), str(f_count))
        counts[meaning] = max(f_count, g_count)
    merged = PromotionPolicy(
        metrics=metrics,
        approvals=tuple(
            Approvals.model_validate({"count": c, "meaning": m}) for m, c in counts.items()
        ),
        monitoring=floor.monitoring or given.monitoring,
    )
    return merged, tuple(weakened)


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
    applied: AppliedPolicy | None = None
    approvals: tuple[Approval, ...] = ()

    @property
    def weakened(self) -> tuple[str, ...]:
        """What the given policy tried to weaken (the experiment's bounds held)."""
        return () if self.applied is None else self.applied.weakened

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-compatible dict."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "previous": self.previous,
            **({} if self.applied is None else self.applied.to_dict()),
            "policy_source": self.policy_source,
            "gates": [g.to_dict() for g in self.gates],
            "approvals": [a.to_dict() for a in self.approvals],
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


def _floor(store: Store, mv: ModelVersion) -> tuple[Any, str]:
    """The run config's ``promotion`` (raw) and its source label."""
    config = store.get_run(mv.run_id).config
    if isinstance(config, dict) and config.get("promotion") is not None:
        return config["promotion"], f"experiment config of run {mv.run_id}"
    return None, "none"


def _policy_for(
    store: Store,
    mv: ModelVersion,
    policy: PromotionPolicy | None,
    policy_file: Path | None,
    override: bool,
    reason: str | None,
) -> AppliedPolicy:
    if policy is not None and policy_file is not None:
        raise RegistryError("both a policy and a policy file were given", "give one of them")
    given, given_source, label = policy, "given policy", "the given policy"
    if policy_file is not None:
        given, given_source, label = (
            load_policy(policy_file),
            f"policy file {policy_file}",
            "--policy",
        )
    raw_floor, floor_source = _floor(store, mv)
    if override:
        if given is None:
            raise RegistryError(
                "--override needs the policy that replaces the experiment's",
                "give it with --policy FILE",
            )
        if not (reason or "").strip():
            raise RegistryError("--override needs a reason", "give it with --reason TEXT")
        try:  # a broken floor is what an override may be for: record it, do not fail on it
            floor = (
                PromotionPolicy() if raw_floor is None else _parse_policy(raw_floor, floor_source)
            )
        except ConfigError as exc:
            floor, floor_source = PromotionPolicy(), f"{floor_source} (invalid: {exc.problem})"
        return AppliedPolicy(
            given, floor, floor_source, given, given_source, override=True, override_reason=reason
        )
    try:
        floor = PromotionPolicy() if raw_floor is None else _parse_policy(raw_floor, floor_source)
    except ConfigError as exc:  # a recorded run cannot be edited: say who can get past it
        raise ConfigError(
            exc.problem, f"{exc.fix}; or an admin promotes with --override --policy FILE"
        ) from None
    if given is None:
        return AppliedPolicy(floor, floor, floor_source)
    merged, weakened = merge_policies(floor, given, label)
    return AppliedPolicy(merged, floor, floor_source, given, given_source, weakened)


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


@dataclass(frozen=True)
class _Person:
    """Who an audit actor or a signer is: ``"Name <email>"``, or a bare name (old events)."""

    display: str
    name: str
    email: str | None

    @classmethod
    def parse(cls, actor: str) -> _Person:
        from qemlflow.audit.emails import normalize_email
        from qemlflow.audit.errors import IdentityError

        text = actor.strip()
        match = _DISPLAY.fullmatch(text)
        if match is None:
            return cls(text, text, None)
        try:
            email = normalize_email(match["email"])
        except IdentityError:  # an odd address on an old event: compare it as written
            email = match["email"].strip()
        return cls(text, match["name"].strip(), email)

    @property
    def key(self) -> str:
        """One key per person: the case-folded email, else the case-folded name."""
        return (self.email or self.name).casefold()

    def same_as(self, other: _Person) -> bool:
        """Whether two actors are one person: by email when both have one, else by name."""
        from qemlflow.audit.emails import name_skeleton, same_email

        if self.email is not None and other.email is not None:
            return same_email(self.email, other.email)
        return name_skeleton(self.name) == name_skeleton(other.name)


_DISPLAY = re.compile(r"(?P<name>[^<>]*)<(?P<email>[^<>]+)>")


@dataclass(frozen=True)
class Approval:
    """One signature with a meaning the policy asks for, and whether it counted."""

    seq: int
    meaning: str
    signer: str
    counted: bool
    why_not: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the approval as a JSON-compatible dict."""
        return {
            "seq": self.seq,
            "meaning": self.meaning,
            "signer": self.signer,
            "counted": self.counted,
            "why_not": self.why_not,
        }


def _run_author(store: Store, run_id: str) -> _Person | None:
    """The actor of the run's ``run.started`` event: who trained it."""
    for event in store.audit_events(object_ref=run_id, action="run.started"):
        if event.objects.get("run") == run_id:
            return _Person.parse(event.actor)
    return None


def _registrants(store: Store, mv: ModelVersion) -> list[_Person]:
    """Who registered the version: its ``created_by`` and its ``model.registered`` actor."""
    actors = {mv.created_by}
    for event in store.audit_events(object_ref=mv.run_id, action="model.registered"):
        if event.objects.get("model_version") == mv.spec:
            actors.add(event.actor)
    return [_Person.parse(a) for a in sorted(actors)]


def _signatures(store: Store, mv: ModelVersion) -> list[dict[str, Any]]:
    """Every signature on the run or its model blob, oldest first, with its raw bytes."""
    from qemlflow.audit.signatures import SIGNATURE_ACTION, signatures_for

    found: dict[int, dict[str, Any]] = {}
    for ref in (mv.run_id, mv.model_digest):
        try:
            found.update((s["seq"], s) for s in signatures_for(store, ref))
        except QeMLflowError:  # e.g. the model blob is gone: then it bears no signature
            continue
    raw = {e.seq: e.details.get("signature") for e in store.audit_events(action=SIGNATURE_ACTION)}
    return [{**s, "bytes": raw.get(seq)} for seq, s in sorted(found.items())]


def _count_approvals(
    store: Store, mv: ModelVersion, needed: Mapping[str, int]
) -> tuple[GateResult, tuple[Approval, ...]]:
    """The separation-of-duties gate: ``needed[meaning]`` distinct approvers per meaning.

    A signature counts when it is valid, has the meaning, and its signer is neither the
    run's author nor the model's registrant nor someone already counted; an exact replay
    of a signature (the same signature bytes) counts once.
    """
    signatures = _signatures(store, mv)
    author = _run_author(store, mv.run_id)
    registrants = _registrants(store, mv)
    approvals: list[Approval] = []
    met: list[str] = []
    unmet: list[str] = []
    for meaning, count in needed.items():
        counted: dict[str, str] = {}
        seen: dict[str, int] = {}
        refused: list[str] = []
        for s in (s for s in signatures if s["meaning"] == meaning):
            signer = _Person.parse(str(s["signer"]))
            why: str | None = None
            if not s["valid"]:
                why = f"invalid ({s['problems'][0]})" if s["problems"] else "invalid"
            elif isinstance(s["bytes"], str) and s["bytes"] in seen:
                why = f"a replay of the signature at seq {seen[s['bytes']]}"
            elif author is not None and signer.same_as(author):
                why = "the run's author"
            elif any(signer.same_as(r) for r in registrants):
                why = "the model's registrant"
            elif signer.key in counted:
                why = "already counted (one approval per person)"
            if isinstance(s["bytes"], str):
                seen.setdefault(s["bytes"], int(s["seq"]))
            approvals.append(Approval(int(s["seq"]), meaning, signer.display, why is None, why))
            if why is None:
                counted[signer.key] = signer.display
            elif f"{signer.display}: {why}" not in refused:
                refused.append(f"{signer.display}: {why}")
        who = ", ".join(counted.values())
        others = f"; not counted: {'; '.join(refused)}" if refused else ""
        if len(counted) >= count:
            met.append(f"{meaning} by {who} ({len(counted)} of {count}){others}")
        elif not counted and not refused:
            unmet.append(f"no valid {meaning!r} signature on run {mv.run_id} or its model blob")
        else:
            have = f"{len(counted)} counted" + (f" ({who})" if who else "")
            unmet.append(
                f"{count} {meaning!r} approval{'s' if count > 1 else ''} needed from distinct "
                f"people other than the run's author and the model's registrant, {have}{others}"
            )
    if author is None:
        met.append("the run's author is unknown (no run.started event)")
    if unmet:
        return GateResult("signature", False, "; ".join(unmet)), tuple(approvals)
    return GateResult("signature", True, "; ".join(met)), tuple(approvals)


_FIXES = {
    "metrics": "train a better model, or change the thresholds in the promotion policy",
    "smoke": "the stored model does not reproduce its run: check `qemlflow store verify` "
    "and register a fresh run",
}


def _a(role: str) -> str:
    return f"{'an' if role[:1] in 'aeiou' else 'a'} {role}"


def _require_admin(store: Store, spec: str) -> None:
    """Refuse an override unless the acting principal is an admin of the store."""
    principal = store.principal
    role = store.identities.role_of(principal.email)
    if role != "admin":
        raise PromotionRefused(
            f"override of the promotion policy of {spec} refused: {principal.display} is "
            f"{_a(role) if role else 'not enrolled'}, and only an admin may override",
            "ask an admin to promote with --override, or meet the experiment's policy",
            gate="override",
        )


def _checkpoint(store: Store) -> None:
    """Sign a checkpoint of the audit chain's head: a promotion is a moment to pin."""
    checkpoint = getattr(store.audit_trail, "checkpoint", None)
    if callable(checkpoint):  # stores from before checkpoints have none to write
        checkpoint()


def promote(
    store: Store,
    name: str,
    version: int,
    to: str = PRODUCTION,
    *,
    policy: PromotionPolicy | None = None,
    policy_file: Path | None = None,
    reason: str | None = None,
    override: bool = False,
) -> PromotionResult:
    """Run the promotion gates on ``name`` version ``version``; if all pass, move ``to`` there.

    The experiment's policy (the run config's ``promotion``) is the floor: ``policy`` or
    ``policy_file`` is merged on top of it (stricter bounds, more approvals) and can never
    weaken it. ``override=True`` applies the given policy instead of the floor; it needs
    an admin and a ``reason``, and the promotion's audit event records both and the floor.

    Raises
    ------
    PromotionRefused
        A gate failed (or a non-admin asked to override): nothing moved, and a
        ``model.promotion_refused`` audit event says which gate and why.
    ConfigError
        A policy is invalid, or the given policy and the floor leave no passing value.
    """
    _check_alias(to)
    mv = store.get_model_version(name, version)
    applied = _policy_for(store, mv, policy, policy_file, override, reason)
    chosen = applied.policy
    previous = store.current_aliases(name).get(to)
    gates: list[GateResult] = []
    approvals: tuple[Approval, ...] = ()
    needed = chosen.required_approvals()

    def approvals_gate() -> GateResult:
        nonlocal approvals
        result, approvals = _count_approvals(store, mv, needed)
        return result

    checks: list[Callable[[], GateResult]] = [
        lambda: _metrics_gate(mv, chosen),
        lambda: _smoke_gate(store, mv),
    ]
    if needed:
        checks.append(approvals_gate)
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
        **applied.to_dict(),
    }
    if override:
        try:
            _require_admin(store, mv.spec)
        except PromotionRefused as exc:
            store.audit(
                "model.promotion_refused",
                objects,
                reason=exc.problem,
                details={**details, "gate": "override"},
            )
            raise
    for check in checks:
        result = check()
        gates.append(result)
        if result.passed:
            continue
        problem = f"promotion of {mv.spec} to {to} refused at the {result.gate} gate: "
        problem += result.detail
        meaning = next(iter(needed), "approved")
        fix = _FIXES.get(result.gate) or (
            f"an approver other than the run's author and the model's registrant signs it: "
            f"`qemlflow sign {mv.run_id} --meaning {meaning} --reason ...`"
        )
        store.audit(
            "model.promotion_refused",
            objects,
            reason=problem,
            details={
                **details,
                "gate": result.gate,
                "gates": [g.to_dict() for g in gates],
                "approvals": [a.to_dict() for a in approvals],
            },
        )
        raise PromotionRefused(problem, fix, gate=result.gate, gates=tuple(gates))
    moved = f"promoted after the {', '.join(g.gate for g in gates)} gates"
    store.set_alias(
        name,
        to,
        mv.version,
        reason or moved,
        action="promoted",
        details={
            **details,
            "gates": [g.to_dict() for g in gates],
            "approvals": [a.to_dict() for a in approvals],
        },
    )
    _checkpoint(store)
    return PromotionResult(
        name=name,
        version=mv.version,
        alias=to,
        previous=previous,
        policy_source=applied.source,
        gates=tuple(gates),
        applied=applied,
        approvals=approvals,
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
