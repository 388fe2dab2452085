"""What the prediction service remembers of its traffic, per model version and window.

:class:`TrafficMonitor` adds up, in memory, each answered request of a model version:
request and molecule counts, errors, molecules out of domain, a latency histogram
(:data:`~qemlflow.monitoring.LATENCY_BUCKETS`), a histogram of predictions (bins cut at
the version's training predictions' deciles) and one of domain similarity. Each finished
window (60 s; ``QEMLFLOW_MONITOR_WINDOW_SECONDS`` or ``ServeSettings.monitor_seconds``
shortens it) is written to ``store.monitoring`` by a background thread, and whatever is
open when the service stops. No SMILES is kept, unless the model's policy
(``promotion.monitoring.store_smiles: true``) asks for the first
:data:`SMILES_PER_WINDOW` out-of-domain molecules of each window.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from qemlflow.monitoring import LATENCY_BUCKETS, SIMILARITY_EDGES, bin_index

if TYPE_CHECKING:
    from qemlflow.serve.metrics import ServiceMetrics
    from qemlflow.serve.schemas import PredictionResult
    from qemlflow.store import Store

__all__ = [
    "SMILES_PER_WINDOW",
    "Reference",
    "TrafficMonitor",
    "reference_of",
    "row_value",
    "window_seconds",
]

log = logging.getLogger("qemlflow.serve")

WINDOW_ENV = "QEMLFLOW_MONITOR_WINDOW_SECONDS"
_PREDICTION_BINS = 10
SMILES_PER_WINDOW = 100
"""Out-of-domain SMILES kept per window and version when the policy asks (bounded)."""


def window_seconds(given: float | None = None) -> int:
    """The aggregation window: ``given``, else ``$QEMLFLOW_MONITOR_WINDOW_SECONDS``, else 60."""
    import os

    if given is None:
        given = float(os.environ.get(WINDOW_ENV) or 60)
    return max(1, int(given))


def row_value(row: PredictionResult) -> float | None:
    """The number a result is monitored by: its prediction (first task's if several)."""
    value = row.prediction
    if value is None and row.tasks:
        value = next(iter(row.tasks.values())).prediction
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Reference:
    """A version's training reference: prediction bin edges and histograms, OOD rate."""

    molecules: int
    ood_rate: float
    prediction_edges: list[float]
    prediction_counts: list[int]
    similarity_counts: list[int]

    def to_dict(self) -> dict[str, Any]:
        """The row ``store.monitoring.set_reference`` takes."""
        return {
            "molecules": self.molecules,
            "ood_rate": self.ood_rate,
            "prediction_edges": self.prediction_edges,
            "prediction_counts": self.prediction_counts,
            "similarity_counts": self.similarity_counts,
        }


def reference_of(
    predictions: Sequence[float], similarity: Sequence[float], threshold: float
) -> Reference:
    """The reference of training-set predictions and leave-one-out similarities."""
    values = np.asarray([p for p in predictions if math.isfinite(p)], dtype=float)
    if len(values):
        cuts = np.quantile(values, np.linspace(0, 1, _PREDICTION_BINS + 1)[1:-1])
        edges = sorted({float(c) for c in cuts})
    else:
        edges = []
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bin_index(float(v), edges)] += 1
    sims = [0] * (len(SIMILARITY_EDGES) + 1)
    outside = 0
    for s in similarity:
        sims[bin_index(float(s), SIMILARITY_EDGES)] += 1
        outside += float(s) < threshold
    ood = outside / len(similarity) if len(similarity) else 0.0
    return Reference(len(values), ood, edges, counts, sims)


_FEW_VALUES = 16


def _add_bins(counts: list[int], values: Sequence[float], edges: Sequence[float]) -> None:
    """Add ``values`` to ``counts``, bins cut at ``edges`` (as :func:`bin_index` cuts)."""
    if not values:
        return
    if len(values) <= _FEW_VALUES:
        # The common request holds one molecule: bisect costs ~1 us where NumPy's array
        # set-up costs ~20 us, on the event loop; the same bins (both cut on the right).
        for value in values:
            counts[bisect_right(edges, value)] += 1
        return
    index = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values), side="right")
    for i, n in enumerate(np.bincount(index, minlength=len(counts)).tolist()):
        counts[i] += int(n)


@dataclass
class _Window:
    edges: list[float]
    requests: int = 0
    molecules: int = 0
    errors: int = 0
    out_of_domain: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    prediction_counts: list[int] = field(default_factory=list)
    similarity_counts: list[int] = field(default_factory=lambda: [0] * (len(SIMILARITY_EDGES) + 1))
    ood_smiles: list[str] | None = None

    def __post_init__(self) -> None:
        self.prediction_counts = [0] * (len(self.edges) + 1)

    def counts(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "molecules": self.molecules,
            "errors": self.errors,
            "out_of_domain": self.out_of_domain,
            "latency_counts": self.latency_counts,
            "prediction_counts": self.prediction_counts,
            "similarity_counts": self.similarity_counts,
            "ood_smiles": self.ood_smiles,
        }


class TrafficMonitor:
    """Per-version, per-window traffic aggregates, flushed to ``store.monitoring``.

    Parameters
    ----------
    store
        Where finished windows go.
    seconds
        The aggregation window (see :func:`window_seconds`).
    metrics
        Where the statistics and alert gauges go after each flush (None: nowhere).
    """

    def __init__(
        self, store: Store, seconds: int = 60, metrics: ServiceMetrics | None = None
    ) -> None:
        self.store = store
        self.seconds = seconds
        self.metrics = metrics
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int, int], _Window] = {}
        self._edges: dict[tuple[str, int], list[float]] = {}
        self._keep_smiles: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, name: str, version: int, reference: Reference) -> None:
        """Start monitoring a version: keep its reference in the store and its bins here."""
        self._edges[(name, version)] = reference.prediction_edges
        try:
            self.store.monitoring.set_reference(name, version, reference.to_dict())
        except Exception as exc:  # monitoring never stops the service from serving
            log.warning("could not record the monitoring reference: %s", exc)
        try:
            from qemlflow.monitoring import policy_switches

            if policy_switches(self.store, name, version)["store_smiles"]:
                self._keep_smiles.add((name, version))
        except Exception as exc:
            log.warning("could not read the monitoring policy: %s", exc)

    def record(
        self,
        name: str,
        version: int,
        rows: Sequence[PredictionResult],
        seconds: float,
    ) -> None:
        """Add one answered request: its results and how long it took."""
        edges = self._edges.get((name, version))
        if edges is None:
            return
        # Sorted out before the lock: the event loop holds it only to add.
        scored = [row for row in rows if not row.error]
        errors = len(rows) - len(scored)
        outside = sum(not row.domain.in_domain for row in scored)
        similarities = [s for row in scored if (s := row.domain.similarity) is not None]
        values = [v for v in map(row_value, scored) if v is not None]
        keep = (name, version) in self._keep_smiles
        far = [row.smiles for row in scored if not row.domain.in_domain] if keep else []
        start = int(time.time()) // self.seconds * self.seconds
        with self._lock:
            window = self._open.get((name, version, start))
            if window is None:
                window = self._open[(name, version, start)] = _Window(edges)
            if keep:
                kept = window.ood_smiles = window.ood_smiles or []
                kept.extend(far[: max(0, SMILES_PER_WINDOW - len(kept))])
            window.requests += 1
            window.latency_counts[bin_index(seconds, LATENCY_BUCKETS)] += 1
            window.molecules += len(rows)
            window.errors += errors
            window.out_of_domain += outside
            _add_bins(window.similarity_counts, similarities, SIMILARITY_EDGES)
            _add_bins(window.prediction_counts, values, edges)

    def record_failure(self, name: str, version: int, molecules: int, seconds: float) -> None:
        """Add one request that failed as a whole (all its molecules count as errors)."""
        edges = self._edges.get((name, version))
        if edges is None:
            return
        start = int(time.time()) // self.seconds * self.seconds
        with self._lock:
            window = self._open.setdefault((name, version, start), _Window(edges))
            window.requests += 1
            window.molecules += molecules
            window.errors += molecules
            window.latency_counts[bin_index(seconds, LATENCY_BUCKETS)] += 1

    def flush(self, everything: bool = False) -> int:
        """Write finished windows (all open ones with ``everything``); return how many."""
        now = int(time.time()) // self.seconds * self.seconds
        with self._lock:
            done = [k for k in self._open if everything or k[2] < now]
            windows = [(k, self._open.pop(k)) for k in done]
        for (name, version, start), window in windows:
            minute = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                counts = window.counts()
                self.store.monitoring.add_minute(name, version, minute, self.seconds, counts)
            except Exception as exc:
                log.warning("could not record monitoring window %s: %s", minute, exc)
        if windows:
            self.check({(k[0], k[1]) for k, _ in windows})
        return len(windows)

    def check(self, versions: set[tuple[str, int]]) -> None:
        """Evaluate the last hour of each version: gauges, and alerts into the audit trail."""
        from qemlflow.monitoring import check, notify, record_alerts

        for name, version in versions:
            try:
                report = check(self.store, name, version, 3600)
                if report is None:
                    continue
                if self.metrics is not None:
                    self.metrics.record_monitor(report)
                # A service identity without the contributor role cannot audit: the gauges
                # still show the alert, and `qemlflow monitor` records it.
                recorded = record_alerts(self.store, report)
                target, failure = notify(self.store, report, recorded)
                if failure is not None:
                    log.warning("could not deliver the alert to %s: %s", target, failure)
            except Exception as exc:
                log.warning("monitoring check of %s@%s failed: %s", name, version, exc)

    def start(self) -> None:
        """Flush finished windows in the background, every window."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qemlflow-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(min(self.seconds, 5)):
            self.flush()

    def stop(self) -> None:
        """Stop the background flush, then write every open window."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush(everything=True)
