"""Drift statistics of a served model: a window of traffic against its training reference.

The service (:mod:`qemlflow.serve.monitoring`) writes one row per model version and
minute into the store (:mod:`qemlflow.store.monitoring`): counts and fixed-bin histograms,
never SMILES. :func:`evaluate` sums the rows of a window and compares them with the
version's training reference: PSI of the prediction histogram (bins cut at the training
predictions' deciles), the two-sample Kolmogorov-Smirnov statistic of the histogrammed
domain similarity, the out-of-domain rate against the training set's own rate
(leave-one-out nearest-neighbour similarity) and the error rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = [
    "ALERTS",
    "DEFAULT_THRESHOLDS",
    "LATENCY_BUCKETS",
    "SIMILARITY_EDGES",
    "Report",
    "alert_payload",
    "bin_index",
    "check",
    "evaluate",
    "ks_statistic",
    "notify",
    "parse_window",
    "policy_switches",
    "psi",
    "record_alerts",
    "send_webhook",
    "thresholds_for",
]

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the request latency histogram; one more bin above the last."""

SIMILARITY_EDGES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Interior cut points of the 20 domain-similarity bins on [0, 1]."""

ALERTS: tuple[str, ...] = ("prediction_drift", "similarity_drift", "out_of_domain", "error_rate")
"""The alerts :func:`evaluate` can raise."""

DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi": 0.25,  # prediction drift: PSI above this
    "similarity_ks": 0.3,  # similarity drift: KS statistic above this
    "ood_excess": 0.2,  # out-of-domain rate above the training rate plus this
    "error_rate": 0.1,  # share of molecules answered with an error above this
    "min_molecules": 50,  # no alert on fewer scored molecules in the window
}
"""Alert thresholds used when the run config has no ``promotion.monitoring`` section."""


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> int:
    """Seconds of a window such as ``90s``, ``60m``, ``2h`` or ``1d`` (plain number: minutes).

    Examples
    --------
    >>> parse_window("60m"), parse_window("2h"), parse_window("15")
    (3600, 7200, 900)
    """
    import re

    from qemlflow.errors import QeMLflowError

    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", text)
    if match is None or int(match[1]) == 0:
        raise QeMLflowError(
            f"cannot read the window {text!r}", "give a number with s, m, h or d, e.g. 60m"
        )
    seconds = int(match[1]) * _UNITS[match[2] or "m"]
    if seconds > 366 * 86400:
        raise QeMLflowError(f"the window {text!r} is over a year", "give at most 366d")
    return seconds


def bin_index(value: float, edges: Sequence[float]) -> int:
    """The bin of ``value`` among ``len(edges) + 1`` bins cut at the sorted ``edges``.

    Examples
    --------
    >>> bin_index(0.0, [0.5, 1.0]), bin_index(0.7, [0.5, 1.0]), bin_index(9.0, [0.5, 1.0])
    (0, 1, 2)
    """
    from bisect import bisect_right

    return bisect_right(list(edges), value)


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [c / total for c in counts] if total else [0.0] * len(counts)


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = 1e-4) -> float:
    """Population stability index of two histograms on the same bins (shares floored).

    Examples
    --------
    >>> psi([10, 10], [10, 10])
    0.0
    >>> round(psi([50, 50], [90, 10]), 3)
    0.879
    """
    e = [max(s, floor) for s in _shares(expected)]
    a = [max(s, floor) for s in _shares(actual)]
    return float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True)))


def ks_statistic(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of two histograms on the same bins.

    Examples
    --------
    >>> ks_statistic([1, 1, 0], [0, 1, 1])
    0.5
    """
    e, a = _shares(expected), _shares(actual)
    gap = ce = ca = 0.0
    for ei, ai in zip(e, a, strict=True):
        ce, ca = ce + ei, ca + ai
        gap = max(gap, abs(ce - ca))
    return round(gap, 12)


@dataclass
class Report:
    """A window's statistics for one model version, and the alerts they raise."""

    name: str
    version: int
    window_seconds: int
    window_start: str
    requests: int = 0
    molecules: int = 0
    errors: int = 0
    out_of_domain: int = 0
    error_rate: float = 0.0
    ood_rate: float = 0.0
    training_ood_rate: float = 0.0
    psi: float | None = None
    similarity_ks: float | None = None
    latency_counts: list[int] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_source: str = "defaults"
    alerts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return asdict(self)


def _add(total: list[int], counts: Sequence[int]) -> list[int]:
    if not total:
        return list(counts)
    return [a + b for a, b in zip(total, counts, strict=True)]


def evaluate(
    name: str,
    version: int,
    reference: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    *,
    window_seconds: int,
    window_start: str,
    thresholds: Mapping[str, float] | None = None,
    threshold_source: str = "defaults",
) -> Report:
    """Sum the window's minute ``rows`` and compare them with ``reference``.

    ``reference`` holds ``prediction_counts``, ``similarity_counts`` and ``ood_rate``;
    each row ``requests``, ``molecules``, ``errors``, ``out_of_domain``,
    ``latency_counts``, ``prediction_counts`` and ``similarity_counts``.
    """
    limits = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    report = Report(
        name,
        version,
        window_seconds,
        window_start,
        training_ood_rate=float(reference["ood_rate"]),
        thresholds=limits,
        threshold_source=threshold_source,
    )
    predictions: list[int] = []
    similarity: list[int] = []
    for row in rows:
        report.requests += int(row["requests"])
        report.molecules += int(row["molecules"])
        report.errors += int(row["errors"])
        report.out_of_domain += int(row["out_of_domain"])
        report.latency_counts = _add(report.latency_counts, row["latency_counts"])
        predictions = _add(predictions, row["prediction_counts"])
        similarity = _add(similarity, row["similarity_counts"])
    scored = report.molecules - report.errors
    if report.molecules:
        report.error_rate = report.errors / report.molecules
    if scored > 0:
        report.ood_rate = report.out_of_domain / scored
        report.psi = round(psi(reference["prediction_counts"], predictions), 6)
        report.similarity_ks = ks_statistic(reference["similarity_counts"], similarity)
    if scored >= limits["min_molecules"]:
        if report.psi is not None and report.psi > limits["psi"]:
            report.alerts.append("prediction_drift")
        if report.similarity_ks is not None and report.similarity_ks > limits["similarity_ks"]:
            report.alerts.append("similarity_drift")
        if report.ood_rate > report.training_ood_rate + limits["ood_excess"]:
            report.alerts.append("out_of_domain")
    if report.molecules >= limits["min_molecules"] and report.error_rate > limits["error_rate"]:
        report.alerts.append("error_rate")
    return report


_SWITCHES = ("webhook", "store_smiles")  # policy keys that are not thresholds


def _policy_section(store: Store, name: str, version: int) -> tuple[dict[str, Any] | None, str]:
    """The version's ``promotion.monitoring`` section (validated) and its run id."""
    mv = store.get_model_version(name, version)
    config = store.get_run(mv.run_id).config
    promotion = config.get("promotion") if isinstance(config, dict) else None
    section = promotion.get("monitoring") if isinstance(promotion, dict) else None
    if not isinstance(section, dict):
        return None, str(mv.run_id)
    from qemlflow.registry import MonitoringThresholds

    parsed = MonitoringThresholds.model_validate(section).model_dump(exclude_none=True)
    return parsed, str(mv.run_id)


def thresholds_for(store: Store, name: str, version: int) -> tuple[dict[str, float], str]:
    """The alert thresholds of a version: its run config's ``promotion.monitoring``
    section over :data:`DEFAULT_THRESHOLDS`, and where they came from."""
    section, run_id = _policy_section(store, name, version)
    if section is None:
        return dict(DEFAULT_THRESHOLDS), "defaults"
    given = {key: float(value) for key, value in section.items() if key not in _SWITCHES}
    return {**DEFAULT_THRESHOLDS, **given}, f"promotion.monitoring of run {run_id}"


def policy_switches(store: Store, name: str, version: int) -> dict[str, Any]:
    """The version's monitoring switches: ``webhook`` (URL or None) and ``store_smiles``
    (False unless the policy says true)."""
    section, _ = _policy_section(store, name, version)
    section = section or {}
    return {
        "webhook": section.get("webhook"),
        "store_smiles": bool(section.get("store_smiles", False)),
    }


def alert_payload(report: Report, recorded: Sequence[str]) -> dict[str, Any]:
    """The JSON a webhook receives: the model, the alerts, the window and its statistics."""
    return {
        "event": "qemlflow.monitor.alert",
        "model": report.name,
        "version": report.version,
        "alerts": list(report.alerts),
        "recorded": list(recorded),
        "window": {"start": report.window_start, "seconds": report.window_seconds},
        "statistics": {
            "requests": report.requests,
            "molecules": report.molecules,
            "errors": report.errors,
            "out_of_domain": report.out_of_domain,
            "ood_rate": report.ood_rate,
            "training_ood_rate": report.training_ood_rate,
            "psi": report.psi,
            "similarity_ks": report.similarity_ks,
            "error_rate": report.error_rate,
        },
        "thresholds": dict(report.thresholds),
    }


def send_webhook(url: str, payload: Mapping[str, Any], timeout: float = 5.0) -> str | None:
    """POST ``payload`` as JSON to ``url``; return why it failed, or None when delivered
    (any 2xx answer). Never raises: a webhook that is down must not stop monitoring."""
    import json

    body = json.dumps(payload, default=str).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "qemlflow-monitor"}
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency of the serve extra
        return _send_urllib(url, body, headers, timeout)
    try:
        answer = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if not 200 <= answer.status_code < 300:
        return f"HTTP {answer.status_code}"
    return None


def _send_urllib(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> str | None:  # pragma: no cover - used only without httpx
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return f"not an http(s) URL: {url}"
    request = urllib.request.Request(  # noqa: S310 (http(s) only, checked above)
        url, data=body, headers=dict(headers), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310  # nosec B310  # http(s) only, checked above
            status = int(answer.status)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if 200 <= status < 300 else f"HTTP {status}"


def notify(
    store: Store, report: Report, recorded: Sequence[str], url: str | None = None
) -> tuple[str | None, str | None]:
    """Send the newly ``recorded`` alerts of ``report`` to ``url`` (default: the policy's
    ``webhook``); return (the URL used or None, why delivery failed or None)."""
    if not recorded:
        return None, None
    target = url or policy_switches(store, report.name, report.version)["webhook"]
    if not target:
        return None, None
    return target, send_webhook(target, alert_payload(report, recorded))


def check(store: Store, name: str, version: int, window_seconds: int) -> Report | None:
    """The report of the last ``window_seconds`` of ``name`` version ``version``, or None
    when no service has recorded the version's training reference yet."""
    reference = store.monitoring.reference(name, version)
    if reference is None:
        return None
    now = int(datetime.now(UTC).timestamp())
    start = now // window_seconds * window_seconds  # windows are aligned: one alert each
    since = datetime.fromtimestamp(now - window_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    label = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = store.monitoring.minutes(name, version, since)
    thresholds, source = thresholds_for(store, name, version)
    return evaluate(
        name,
        version,
        reference,
        rows,
        window_seconds=window_seconds,
        window_start=label,
        thresholds=thresholds,
        threshold_source=source,
    )


def record_alerts(store: Store, report: Report) -> list[str]:
    """Append a ``monitor.alert`` audit event for each active alert not yet recorded in
    this window; return the alerts recorded now."""
    if not report.alerts:
        return []
    mv = store.get_model_version(report.name, report.version)
    seen = {
        (e.details.get("alert"), e.details.get("window_start"), e.details.get("window_seconds"))
        for e in store.audit_events(action="monitor.alert", object_ref=str(mv.model_digest))
        if e.details.get("name") == report.name and e.details.get("version") == report.version
    }
    recorded = []
    for alert in report.alerts:
        if (alert, report.window_start, report.window_seconds) in seen:
            continue
        store.audit(
            "monitor.alert",
            {"model": str(mv.model_digest)},
            reason=f"{report.name}@{report.version}: {alert} over the last "
            f"{report.window_seconds} s",
            details={
                "name": report.name,
                "version": report.version,
                "alert": alert,
                "window_start": report.window_start,
                "window_seconds": report.window_seconds,
                "molecules": report.molecules,
                "ood_rate": report.ood_rate,
                "training_ood_rate": report.training_ood_rate,
                "psi": report.psi,
                "similarity_ks": report.similarity_ks,
                "error_rate": report.error_rate,
            },
        )
        recorded.append(alert)
    return recorded
