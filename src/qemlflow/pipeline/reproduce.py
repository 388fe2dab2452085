"""Re-create a recorded run without the cache and say how the result compares.

Three verdicts, each with its exit code (``VERDICT_EXIT_CODES``):

- ``IDENTICAL`` (0): every step's output is byte-identical and every recorded blob intact;
- ``IDENTICAL CONTENT`` (3): every step computes the same content, but some output's bytes
  differ only in metadata (the fitted model's pickle records the Python, scikit-learn and
  library versions it was saved with); what differs is listed;
- ``DIFFERENT`` (1): a step's content differs (the first such step is named, with the
  values that differ), or a recorded blob is damaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qemlflow.pipeline.progress import ProgressReporter
from qemlflow.pipeline.steps import STEP_ORDER, StepExecutor, StepResult

if TYPE_CHECKING:
    from qemlflow.data import RawData
    from qemlflow.store import RunRecord, Store

__all__ = [
    "DIFFERENT",
    "IDENTICAL",
    "IDENTICAL_CONTENT",
    "VERDICT_EXIT_CODES",
    "BlobProblem",
    "ReproduceReport",
    "StepComparison",
    "drift_lines",
    "flatten",
    "reproduce",
]

IDENTICAL = "IDENTICAL"
IDENTICAL_CONTENT = "IDENTICAL CONTENT"
DIFFERENT = "DIFFERENT"
# 2 is every command's exit code for an error (a one-line message), so it is not a verdict.
VERDICT_EXIT_CODES = {IDENTICAL: 0, DIFFERENT: 1, IDENTICAL_CONTENT: 3}


@dataclass(frozen=True)
class StepComparison:
    """A step's recorded output digest next to the recomputed one."""

    step: str
    recorded_key: str
    key: str
    recorded_output: str
    output: str
    detail: str = ""
    # Set when the bytes differ but what they hold is the same (the fitted model's pickle).
    same_content: bool = False
    metadata: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        """True when the recomputed output has the recorded digest."""
        return self.recorded_output == self.output

    @property
    def content_identical(self) -> bool:
        """True when the output is byte-identical, or holds the same content."""
        return self.identical or self.same_content

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        return {
            "step": self.step,
            "identical": self.identical,
            "recorded_key": self.recorded_key,
            "key": self.key,
            "recorded_output": self.recorded_output,
            "output": self.output,
            "content_identical": self.content_identical,
            "metadata_differences": list(self.metadata),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class BlobProblem:
    """A recorded blob of the run that is missing or no longer has its digest."""

    what: str
    digest: str
    problem: str


@dataclass
class ReproduceReport:
    """What ``reproduce`` found: per-step comparisons, damaged blobs, environment drift."""

    run_id: str
    steps: list[StepComparison] = field(default_factory=list)
    blob_problems: list[BlobProblem] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    data_note: str = ""

    @property
    def identical(self) -> bool:
        """True only when every step matches and every recorded blob is intact."""
        return not self.blob_problems and all(s.identical for s in self.steps) and bool(self.steps)

    @property
    def first_difference(self) -> StepComparison | None:
        """The earliest step whose output differs, if any."""
        return next((s for s in self.steps if not s.identical), None)

    @property
    def first_content_difference(self) -> StepComparison | None:
        """The earliest step whose content differs (not only its metadata), if any."""
        return next((s for s in self.steps if not s.content_identical), None)

    @property
    def verdict(self) -> str:
        """``IDENTICAL``, ``IDENTICAL CONTENT`` or ``DIFFERENT``."""
        if self.identical:
            return IDENTICAL
        if self.steps and not self.blob_problems and self.first_content_difference is None:
            return IDENTICAL_CONTENT
        return DIFFERENT

    @property
    def exit_code(self) -> int:
        """0 for IDENTICAL, 3 for IDENTICAL CONTENT, 1 for DIFFERENT."""
        return VERDICT_EXIT_CODES[self.verdict]

    @property
    def headline(self) -> str:
        """The verdict in one line, starting with the verdict itself."""
        verdict = self.verdict
        if verdict == IDENTICAL:
            return f"{IDENTICAL}: run {self.run_id} reproduced bit for bit"
        if verdict == IDENTICAL_CONTENT:
            listed = "; ".join(
                f"{s.step}: {', '.join(s.metadata)}" if s.metadata else s.step
                for s in self.steps
                if not s.identical
            )
            return (
                f"{IDENTICAL_CONTENT}: run {self.run_id} reproduced the same content; "
                f"only metadata differs ({listed})"
            )
        first = self.first_content_difference
        if first is not None:
            return f"{DIFFERENT} at {first.step}: {first.detail or 'the output differs'}"
        if self.blob_problems:
            problem = self.blob_problems[0]
            # One blob can be recorded twice (the fit output is also model.joblib).
            also = [p.what for p in self.blob_problems[1:] if p.digest == problem.digest]
            others = len({p.digest for p in self.blob_problems} - {problem.digest})
            named = f"{problem.what} (also {', '.join(also)})" if also else problem.what
            more = f"; {others} more blob(s) damaged" if others else ""
            return f"{DIFFERENT}: the recorded {named} is {problem.problem}{more}"
        return f"{DIFFERENT}: no step of run {self.run_id} could be compared"

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form."""
        first = self.first_content_difference
        return {
            "run_id": self.run_id,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "headline": self.headline,
            "identical": self.identical,
            "first_difference": first.to_dict() if first else None,
            "steps": [s.to_dict() for s in self.steps],
            "blob_problems": [vars(p) for p in self.blob_problems],
            "environment_drift": self.drift,
            "environment_changes": drift_lines(self.drift),
            "data_note": self.data_note,
        }


def drift_lines(drift: dict[str, Any]) -> list[str]:
    """The environment drift as lines such as ``python 3.11.7 -> 3.11.9``.

    Where only the interpreter's path changed (another virtual environment), Python is
    not listed: the path changes nothing a run computes.

    Examples
    --------
    >>> drift_lines({"python": {"recorded": {"version": "3.11.7"}, "current": {"version":
    ...     "3.11.9"}}, "packages": {"changed": {"numpy": {"recorded": "1.26.4",
    ...     "current": "2.0.0"}}, "added": {"rich": "13"}}})
    ['python 3.11.7 -> 3.11.9', 'numpy 1.26.4 -> 2.0.0', 'rich added (13)']
    """
    lines = []
    python = drift.get("python")
    if python:
        before, after = python.get("recorded") or {}, python.get("current") or {}
        for key in ("version", "implementation"):
            if before.get(key) != after.get(key):
                name = "python" if key == "version" else "python implementation"
                lines.append(f"{name} {before.get(key)} -> {after.get(key)}")
    for key in ("qemlflow", "os", "cpu", "git"):
        change = drift.get(key)
        if change:
            before, after = change.get("recorded"), change.get("current")
            if key == "os":
                before, after = _os_name(before), _os_name(after)
            elif key == "cpu":
                before, after = _cpu_name(before), _cpu_name(after)
            elif key == "git":
                before, after = _git_name(before), _git_name(after)
            if before != after:
                lines.append(f"{key} {before} -> {after}")
    packages = drift.get("packages") or {}
    for name, change in sorted((packages.get("changed") or {}).items()):
        lines.append(f"{name} {change.get('recorded')} -> {change.get('current')}")
    for name, version in sorted((packages.get("added") or {}).items()):
        lines.append(f"{name} added ({version})")
    for name, version in sorted((packages.get("removed") or {}).items()):
        lines.append(f"{name} removed (was {version})")
    return lines


def _os_name(part: Any) -> Any:
    return part.get("platform", part) if isinstance(part, dict) else part


def _cpu_name(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    return f"{part.get('model')} ({part.get('count')} cores)"


def _git_name(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    commit = str(part.get("commit", ""))[:12]
    return f"{commit}{' (dirty)' if part.get('dirty') else ''}"


def _check_blobs(store: Store, run: RunRecord) -> list[BlobProblem]:
    """Re-hash every blob the run recorded (step outputs, artifacts, environment)."""
    wanted: list[tuple[str, str]] = [(f"{s.step} output", s.output) for s in run.steps if s.output]
    wanted += [(f"artifact {a.name}", a.digest) for a in run.artifacts]
    if run.environment:
        wanted.append(("environment snapshot", run.environment))
    said = {
        "missing": "missing from the store",
        "altered": "altered on disk (its content hash differs)",
    }
    problems = []
    for what, digest in wanted:
        problem = store.blobs.problem(digest)
        if problem is not None:
            problems.append(BlobProblem(what, digest, said[problem]))
    return problems


def _raw_data(store: Store, run: RunRecord, source: str) -> tuple[RawData, str]:
    """The raw data to recompute from: the original file if it is still there, else the
    copy the store kept."""
    from qemlflow.data import RawData, read_raw
    from qemlflow.errors import DataError

    recorded = next((s for s in run.steps if s.step == "dataset"), None)
    try:
        return read_raw(source), f"raw data re-read from {source}"
    except DataError:
        if recorded is None or not recorded.output or not store.blobs.has(recorded.output):
            raise
    record = store.steps.get(recorded.key)
    params = record.params if record else {}
    data = store.blobs.get_bytes(recorded.output)
    filename = str(params.get("filename", Path(source).name))
    raw = RawData(
        data=data,
        filename=filename,
        name=str(params.get("name", Path(filename).stem)),
        source=str(params.get("source", filename)),
        label=filename,
    )
    return raw, f"{source} is gone: recomputed from the raw copy in the store"


def _difference(store: Store, step: str, old_digest: str, new: StepResult[Any]) -> str:
    """Say briefly what differs between the recorded and the recomputed output."""
    from qemlflow.pipeline.steps import ArrayCodec, JsonCodec, ScoresCodec

    if not store.blobs.has(old_digest):
        return "the recorded output is missing from the store"
    try:
        old = store.blobs.get_bytes(old_digest, verify=False)
        if step in ("evaluate",):
            return _json_difference(JsonCodec().decode(old), new.value)
        if step == "featurize":
            return _array_difference(ArrayCodec().decode(old), new.value)
        if step == "predict":
            before = ScoresCodec().decode(old)
            return "; ".join(
                f"{name}: {_array_difference(before[name], new.value[name])}"
                for name in new.value
                if name in before
            )
        if step == "split":
            before, after = json.loads(old), new.value.to_dict()
            changed = [p for p in ("train", "valid", "test") if before.get(p) != after.get(p)]
            return f"different {', '.join(changed)} indices" if changed else "metadata differs"
    except Exception as exc:  # a description must never hide the verdict
        return f"could not describe the difference ({type(exc).__name__})"
    return f"{len(old)} bytes recorded, {len(_encoded(new))} bytes recomputed"


def _compare_models(store: Store, comparison: StepComparison, model: Any) -> StepComparison:
    """Compare the recorded fitted model with the recomputed one by content.

    The recorded model file is unpickled: the store made it, and its digest was checked.
    """
    from qemlflow.models.content import content_differences, metadata_differences, model_content

    try:
        recorded, pickled_with = _unpickle_model(store.blobs.get_bytes(comparison.recorded_output))
    except Exception as exc:  # whatever stops this environment from reading the old model
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return replace(
            comparison,
            detail=f"the recorded model cannot be unpickled in this environment ({reason})",
        )
    try:
        old, new = model_content(recorded), model_content(model)
    except Exception as exc:  # an object the walk cannot read: say so, never crash
        return replace(
            comparison,
            detail=f"the models' content could not be compared ({type(exc).__name__}: {exc})",
        )
    if old.digest != new.digest:
        listed = "; ".join(content_differences(old, new))
        return replace(comparison, detail=f"the model differs: {listed}")
    metadata = [*pickled_with, *metadata_differences(old, new)] or [
        "the pickle's encoding (protocol or layout), not any value"
    ]
    return replace(
        comparison,
        same_content=True,
        metadata=tuple(metadata),
        detail="same model content; metadata differs: " + "; ".join(metadata),
    )


def _unpickle_model(data: bytes) -> tuple[Any, list[str]]:
    """The predictor in a recorded model file, and the scikit-learn versions its estimators
    were pickled with where they are not this one's.

    scikit-learn drops the version an estimator was pickled with when it loads it, and
    says so only in a warning: the warnings are where that metadata is read from.
    """
    import gzip
    import pickle
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        payload = pickle.loads(gzip.decompress(data))  # nosec B301  # the store's own fit output, digest checked
    if not isinstance(payload, dict) or "predictor" not in payload:
        raise ValueError("the blob is no QeMLflow model file")
    counts: dict[tuple[str, str], int] = {}
    for warning in caught:
        message = warning.message
        before = getattr(message, "original_sklearn_version", None)
        after = getattr(message, "current_sklearn_version", None)
        if before is not None and after is not None:
            counts[(str(before), str(after))] = counts.get((str(before), str(after)), 0) + 1
    pickled_with = [
        f"scikit-learn {before} -> {after} (the version {n} pickled estimator(s) record)"
        for (before, after), n in sorted(counts.items())
    ]
    return payload["predictor"], pickled_with


def _encoded(result: StepResult[Any]) -> bytes:
    """The recomputed output's bytes, for the steps described by size only."""
    from qemlflow.pipeline import steps

    codecs: dict[str, steps.Codec[Any]] = {
        "dataset": steps.BytesCodec(),
        "standardize": steps.DatasetCodec(),
        "fit": steps.PredictorCodec(),
    }
    codec = codecs.get(result.step)
    return codec.encode(result.value) if codec is not None else b""


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys.

    Examples
    --------
    >>> flatten({"model": {"estimator": "rf", "params": {"n": 5}}, "seed": 0})
    {'model.estimator': 'rf', 'model.params.n': 5, 'seed': 0}
    """
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _json_difference(old: Any, new: Any) -> str:
    before, after = flatten(old), flatten(new)
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    # Single values (a metric) before lists (its confidence interval), overall metrics
    # before per-task ones.
    changed.sort(key=lambda k: (isinstance(after.get(k, before.get(k)), list), k.count(".")))
    shown = ", ".join(f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in changed[:3])
    more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
    return f"{shown}{more}" if changed else "same values, different encoding"


def _array_difference(old: np.ndarray, new: np.ndarray) -> str:
    if old.shape != new.shape:
        return f"shape {old.shape} -> {new.shape}"
    both_nan = np.isnan(old) & np.isnan(new) if old.dtype.kind == "f" else False
    differs = (old != new) & ~both_nan
    count = int(np.count_nonzero(differs))
    if count == 0:
        return "same values, different encoding"
    delta = float(np.nanmax(np.abs(old[differs].astype(float) - new[differs].astype(float))))
    return f"{count} of {old.size} values differ (largest difference {delta:.3g})"


def reproduce(
    store: Store, run_ref: str, *, progress: ProgressReporter | None = None
) -> ReproduceReport:
    """Recompute every step of a recorded run without the cache and compare the outputs.

    The run is identical when every step's recomputed output has the recorded digest
    and every blob the run recorded is intact; when only the fitted model's bytes differ,
    the recorded model is unpickled and compared by content
    (:func:`qemlflow.models.content.model_content`), so metadata alone (library versions
    pickled with it) gives ``IDENTICAL CONTENT``. Nothing is written to the store.
    """
    from qemlflow.pipeline.config import parse_config
    from qemlflow.pipeline.runner import execute
    from qemlflow.store import capture_environment, environment_drift

    run = store.runs.get(run_ref)
    report = ReproduceReport(run_id=run.id)
    report.blob_problems = _check_blobs(store, run)
    if run.environment and store.blobs.has(run.environment):
        recorded_env = json.loads(store.blobs.get_bytes(run.environment, verify=False))
        report.drift = environment_drift(recorded_env, capture_environment(Path.cwd()))

    cfg = parse_config(run.config, source=f"the config recorded with run {run.id}")
    raw, report.data_note = _raw_data(store, run, cfg.dataset.source)
    executor = StepExecutor(None, use_cache=False)
    execute(cfg, raw, executor, progress)

    recorded = {s.step: s for s in run.steps}
    damaged = {p.digest for p in report.blob_problems}
    for result in executor.results:
        old = recorded.get(result.step)
        if old is None:
            continue
        comparison = StepComparison(
            step=result.step,
            recorded_key=old.key,
            key=result.key,
            recorded_output=old.output or "",
            output=result.output,
        )
        if not comparison.identical:
            if result.step == "fit" and comparison.recorded_output not in damaged:
                comparison = _compare_models(store, comparison, result.value)
            else:
                detail = _difference(store, result.step, comparison.recorded_output, result)
                comparison = replace(comparison, detail=detail)
        report.steps.append(comparison)
    report.steps.sort(key=lambda s: STEP_ORDER.index(s.step))
    return report
