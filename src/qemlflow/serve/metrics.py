"""Prometheus metrics of the prediction service, and the ASGI middleware that counts requests."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from qemlflow.monitoring import Report
    from qemlflow.serve.schemas import PredictionResult

__all__ = ["CONTENT_TYPE", "MetricsMiddleware", "ServiceMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The service's counters, in a registry of their own (one per app).

    ``qemlflow_requests_total`` / ``qemlflow_request_seconds`` per endpoint and status,
    ``qemlflow_request_errors_total`` (responses with status >= 400),
    ``qemlflow_molecules_total`` by outcome (``scored`` / ``invalid``),
    ``qemlflow_out_of_domain_total`` and the running ``qemlflow_out_of_domain_ratio``,
    ``qemlflow_model_swaps_total``, ``qemlflow_model_auto_rollbacks_total``,
    ``qemlflow_model_serving`` (1 for the version being served), and for the worker
    processes: ``qemlflow_worker_restarts_total`` by reason (``timeout``, ``died``),
    ``qemlflow_molecule_timeouts_total``, ``qemlflow_workers_live`` and
    ``qemlflow_feature_cache_total`` by result (``hit``: prepared before, no worker needed;
    ``miss``); and from monitoring (over the last hour, after each flushed window):
    ``qemlflow_monitor_alert`` (1 active, 0 not) by ``model``, ``version``, ``alert`` and
    ``qemlflow_monitor_statistic`` by ``model``, ``version``, ``statistic`` (``psi``,
    ``similarity_ks``, ``ood_rate``, ``training_ood_rate``, ``error_rate``).
    """

    def __init__(self, endpoints: Iterable[str] = ()) -> None:
        self.endpoints = frozenset(endpoints)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "qemlflow_requests", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "qemlflow_request_seconds",
            "Time to answer a request",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "qemlflow_request_errors",
            "HTTP responses with status >= 400",
            ["endpoint", "status"],
            registry=r,
        )
        self.molecules = Counter(
            "qemlflow_molecules", "Molecules received, by outcome", ["outcome"], registry=r
        )
        self.out_of_domain = Counter(
            "qemlflow_out_of_domain",
            "Scored molecules outside the applicability domain",
            registry=r,
        )
        self.out_of_domain_ratio = Gauge(
            "qemlflow_out_of_domain_ratio",
            "Share of scored molecules outside the applicability domain since start",
            registry=r,
        )
        self.swaps = Counter(
            "qemlflow_model_swaps", "Model versions swapped in after start", registry=r
        )
        self.auto_rollbacks = Counter(
            "qemlflow_model_auto_rollbacks",
            "Model versions refused after a failed smoke test",
            registry=r,
        )
        self.serving = Gauge(
            "qemlflow_model_serving",
            "1 for the model version being served",
            ["model", "version"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "qemlflow_worker_restarts",
            "Worker processes killed and replaced, by reason",
            ["reason"],
            registry=r,
        )
        self.molecule_timeouts = Counter(
            "qemlflow_molecule_timeouts",
            "Molecules cut off at their time budget",
            registry=r,
        )
        self.workers_live = Gauge(
            "qemlflow_workers_live", "Worker processes running now", registry=r
        )
        self.feature_cache = Counter(
            "qemlflow_feature_cache",
            "Molecules looked up in the feature cache, by result",
            ["result"],
            registry=r,
        )
        self.monitor_alert = Gauge(
            "qemlflow_monitor_alert",
            "1 while a monitoring alert is active",
            ["model", "version", "alert"],
            registry=r,
        )
        self.monitor_statistic = Gauge(
            "qemlflow_monitor_statistic",
            "Monitoring statistics of the last hour against the training reference",
            ["model", "version", "statistic"],
            registry=r,
        )
        for reason in ("timeout", "died"):
            self.worker_restarts.labels(reason)
        # Labelled children looked up once: labels() validates and locks on every call,
        # and record_request runs for every request on the event loop.
        self._request_children: dict[tuple[str, str], tuple[Any, Any, Any | None]] = {}
        self._scored_molecules = self.molecules.labels("scored")
        self._invalid_molecules = self.molecules.labels("invalid")
        self._scored = 0
        self._outside = 0
        self._serving: tuple[str, str] | None = None

    def endpoint(self, path: str) -> str:
        """The label of a request path: itself when it is a known endpoint, else ``other``."""
        return path if path in self.endpoints else "other"

    def record_request(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        children = self._request_children.get((endpoint, str(status)))
        if children is None:
            code = str(status)
            children = self._request_children[(endpoint, code)] = (
                self.requests.labels(endpoint, code),
                self.latency.labels(endpoint),
                self.errors.labels(endpoint, code) if status >= 400 else None,
            )
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def record_molecules(self, rows: Iterable[PredictionResult]) -> None:
        """Count scored and invalid molecules and those out of domain."""
        scored = invalid = outside = 0
        for row in rows:
            if row.error:
                invalid += 1
            else:
                scored += 1
                outside += not row.domain.in_domain
        self._scored_molecules.inc(scored)
        self._invalid_molecules.inc(invalid)
        self.out_of_domain.inc(outside)
        self._scored += scored
        self._outside += outside
        if self._scored:
            self.out_of_domain_ratio.set(self._outside / self._scored)

    def record_cache(self, hits: int, misses: int) -> None:
        """Count feature-cache lookups of one request (distinct molecules)."""
        if hits:
            self.feature_cache.labels("hit").inc(hits)
        if misses:
            self.feature_cache.labels("miss").inc(misses)

    def record_serving(self, name: str, version: int) -> None:
        """Mark ``name`` version ``version`` as the one being served."""
        if self._serving is not None:
            self.serving.remove(*self._serving)
        self._serving = (name, str(version))
        self.serving.labels(*self._serving).set(1)

    def record_monitor(self, report: Report) -> None:
        """Set the monitoring gauges of one version from its latest report."""
        from qemlflow.monitoring import ALERTS

        model, version = report.name, str(report.version)
        for alert in ALERTS:
            self.monitor_alert.labels(model, version, alert).set(int(alert in report.alerts))
        for statistic in ("psi", "similarity_ks", "ood_rate", "training_ood_rate", "error_rate"):
            value = getattr(report, statistic)
            if value is not None:
                self.monitor_statistic.labels(model, version, statistic).set(float(value))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request and counts it by endpoint and status (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            endpoint = self.metrics.endpoint(str(scope.get("path", "")))
            self.metrics.record_request(endpoint, status, time.perf_counter() - start)
