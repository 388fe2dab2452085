"""The monitoring repository on both metadata backends (SQLite and a real PostgreSQL)."""

from __future__ import annotations

from qemlflow.monitoring import evaluate
from qemlflow.store import Store


def _row(molecules: int, out_of_domain: int) -> dict[str, object]:
    return {
        "requests": 2,
        "molecules": molecules,
        "errors": 0,
        "out_of_domain": out_of_domain,
        "latency_counts": [1, 1, 0],
        "prediction_counts": [molecules // 2, molecules - molecules // 2],
        "similarity_counts": [out_of_domain, molecules - out_of_domain],
    }


def test_minutes_round_trip_and_filter_by_window_start(store: Store) -> None:
    store.monitoring.add_minute("esol", 1, "2026-11-30T10:00:00Z", 60, _row(100, 5))
    store.monitoring.add_minute("esol", 1, "2026-11-30T10:01:00Z", 60, _row(80, 60))
    store.monitoring.add_minute("esol", 2, "2026-11-30T10:01:00Z", 60, _row(10, 0))
    store.monitoring.add_minute("other", 1, "2026-11-30T10:01:00Z", 60, _row(10, 0))

    rows = store.monitoring.minutes("esol", 1, "2026-11-30T10:00:30Z")
    assert [r["molecules"] for r in rows] == [80]
    assert rows[0]["similarity_counts"] == [60, 20]  # JSON lists come back as lists
    both = store.monitoring.minutes("esol", 1, "2026-11-30T09:00:00Z")
    assert [r["minute"] for r in both] == ["2026-11-30T10:00:00Z", "2026-11-30T10:01:00Z"]


def test_the_first_reference_of_a_version_stays(store: Store) -> None:
    assert store.monitoring.reference("esol", 1) is None
    first = {
        "molecules": 500,
        "ood_rate": 0.04,
        "prediction_edges": [-8.0, -3.0, 2.0],
        "prediction_counts": [250, 250],
        "similarity_counts": [20, 480],
    }
    assert store.monitoring.set_reference("esol", 1, first) is True
    assert store.monitoring.set_reference("esol", 1, {**first, "molecules": 1}) is False
    kept = store.monitoring.reference("esol", 1)
    assert kept is not None
    assert kept["molecules"] == 500
    assert kept["prediction_edges"] == [-8.0, -3.0, 2.0]

    # What monitoring reads back from either backend is what evaluate() needs.
    rows = [_row(100, 90)]
    report = evaluate("esol", 1, kept, rows, window_seconds=60, window_start="t")
    assert "out_of_domain" in report.alerts
