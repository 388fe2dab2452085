"""The runs table as the UI shows it: one row per run, filtered, sorted and paged.

Rows come from :meth:`~qemlflow.store.runs.Runs.summaries` (no steps or artifacts) and are
cached per store, keyed by :meth:`~qemlflow.store.runs.Runs.change_token`: with 1,000 runs a
page costs one small SQL query plus a filter, sort and slice in Python over the cached rows.

Examples
--------
>>> row = RunRow(id="r1", name="esol", dataset="esol", model="lightgbm", split="random",
...              metric="rmse", value=0.71, ci=(0.65, 0.77), status="finished",
...              started_at="2026-01-01T00:00:00+00:00", who="Ada <ada@lab.org>", seed=0)
>>> row.metric_text
'rmse 0.710 [0.650, 0.770]'
>>> page = query_rows([row], RunsQuery(q="LIGHT"))
>>> page.total, page.rows[0].id
(1, 'r1')
>>> flatten_config({"model": {"estimator": "rf"}, "features": [{"type": "ecfp"}]})
{'model.estimator': 'rf', 'features.0.type': 'ecfp'}
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Final

from qemlflow.errors import QeMLflowError

if TYPE_CHECKING:
    from qemlflow.store import Store
    from qemlflow.store.runs import RunSummary

__all__ = [
    "HEADLINE_METRICS",
    "PER_PAGE",
    "SORT_COLUMNS",
    "STATUSES",
    "RunRow",
    "RunsPage",
    "RunsQuery",
    "RunsQueryError",
    "cached_rows",
    "flatten_config",
    "headline_metric",
    "metric_text",
    "query_rows",
    "run_row",
]

SORT_COLUMNS: Final = ("name", "dataset", "model", "split", "metric", "status", "started", "who")
"""The columns ``/runs`` sorts by (``sort=``)."""
STATUSES: Final = ("running", "finished", "failed", "aborted")
PER_PAGE: Final = 50
MAX_PER_PAGE: Final = 500
HEADLINE_METRICS: Final = ("rmse", "roc_auc", "mae", "r2", "pr_auc", "accuracy")
"""The metric a run is summed up by: the first of these its test metrics hold."""


class RunsQueryError(QeMLflowError):
    """A runs table query the UI cannot answer (an unknown sort column, a bad page)."""


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    id: str
    name: str
    dataset: str
    model: str
    split: str
    metric: str | None
    value: float | None
    ci: tuple[float, float] | None
    status: str
    started_at: str
    who: str | None
    seed: int | None = None

    @property
    def metric_text(self) -> str:
        """The headline metric as shown: ``rmse 0.712 [0.650, 0.770]`` (``—`` if none)."""
        return metric_text(self.metric, self.value, self.ci)

    @property
    def value_text(self) -> str:
        """The headline metric's value and CI without its name: ``0.712 [0.650, 0.770]``."""
        return metric_text(self.metric, self.value, self.ci, with_name=False)


@dataclass(frozen=True)
class RunsQuery:
    """What ``/runs`` was asked for: text, status, sort column and order, page."""

    q: str = ""
    status: str = ""
    sort: str = "started"
    order: str = "desc"
    page: int = 1
    per_page: int = PER_PAGE

    def checked(self) -> RunsQuery:
        """Return the query with its text trimmed, or raise :class:`RunsQueryError`."""
        if self.sort not in SORT_COLUMNS:
            raise RunsQueryError(
                f"cannot sort runs by {self.sort!r}", f"sort by one of {', '.join(SORT_COLUMNS)}"
            )
        if self.order not in ("asc", "desc"):
            raise RunsQueryError(f"order {self.order!r} is not asc or desc", "use asc or desc")
        if self.status and self.status not in STATUSES:
            raise RunsQueryError(
                f"no run status {self.status!r}", f"use one of {', '.join(STATUSES)}"
            )
        if self.page < 1 or not 1 <= self.per_page <= MAX_PER_PAGE:
            raise RunsQueryError(
                f"page {self.page} of {self.per_page} runs cannot be shown",
                f"give page >= 1 and per_page between 1 and {MAX_PER_PAGE}",
            )
        return dataclasses.replace(self, q=self.q.strip())


@dataclass(frozen=True)
class RunsPage:
    """One page of the runs table: its rows, how many matched, and where it is."""

    rows: tuple[RunRow, ...]
    total: int
    query: RunsQuery

    @property
    def pages(self) -> int:
        """How many pages the matching runs fill (at least 1)."""
        return max(1, math.ceil(self.total / self.query.per_page))

    @property
    def has_next(self) -> bool:
        return self.query.page < self.pages

    @property
    def has_prev(self) -> bool:
        return self.query.page > 1


def metric_text(
    name: str | None, value: float | None, ci: Any = None, with_name: bool = True
) -> str:
    """A metric with its confidence interval: ``rmse 0.712 [0.650, 0.770]``."""
    if value is None:
        return "—"
    text = f"{value:.3f}"
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(_number(v) is not None for v in ci):
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{name} {text}" if with_name and name else text


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def headline_metric(
    test: Mapping[str, Any], ci: Mapping[str, Any]
) -> tuple[str | None, float | None, tuple[float, float] | None]:
    """Return the metric a run is summed up by: (name, value, CI), Nones when it has none."""
    names = [m for m in HEADLINE_METRICS if m in test] or sorted(test)
    for name in names:
        value = _number(test.get(name))
        if value is None:
            continue
        bounds = ci.get(name)
        interval = None
        if isinstance(bounds, list | tuple) and len(bounds) == 2:
            low, high = _number(bounds[0]), _number(bounds[1])
            interval = None if low is None or high is None else (low, high)
        return name, value, interval
    return None, None, None


def _dataset(config: Mapping[str, Any]) -> str:
    dataset = config.get("dataset")
    source = dataset.get("source") if isinstance(dataset, Mapping) else dataset
    if not isinstance(source, str) or not source:
        return ""
    # A file path: its name is what people recognize; a bundled dataset is a bare name.
    return PurePath(source).name if ("/" in source or "\\" in source) else source


def _field(config: Mapping[str, Any], section: str, key: str) -> str:
    part = config.get(section)
    value = part.get(key) if isinstance(part, Mapping) else part
    return value if isinstance(value, str) else ""


def run_row(summary: RunSummary) -> RunRow:
    """Return the runs-table row of one run summary (see ``store.run_summaries()``)."""
    metric, value, ci = headline_metric(summary.test, summary.ci)
    return RunRow(
        id=summary.id,
        name=summary.name,
        dataset=_dataset(summary.config),
        model=_field(summary.config, "model", "estimator"),
        split=_field(summary.config, "split", "method"),
        metric=metric,
        value=value,
        ci=ci,
        status=summary.status,
        started_at=summary.started_at,
        who=summary.who,
        seed=summary.seed,
    )


_CACHE_KEY = "runs.rows"
_cache_lock = threading.Lock()


def cached_rows(store: Store, cache: dict[str, Any]) -> tuple[RunRow, ...]:
    """Return every run's row, newest first, from ``cache`` while no run has changed.

    ``cache`` is the UI's shared dict; the rows are rebuilt when the store's run change
    token moves (a run started or ended).
    """
    token = store.runs.change_token()
    held = cache.get(_CACHE_KEY)
    if held is not None and held[0] == token:
        rows: tuple[RunRow, ...] = held[1]
        return rows
    with _cache_lock:  # one rebuild at a time; the others then find it done
        held = cache.get(_CACHE_KEY)
        if held is not None and held[0] == token:
            return tuple(held[1])
        rows = tuple(run_row(s) for s in store.run_summaries())
        cache[_CACHE_KEY] = (token, rows)
    return rows


def _sort_value(row: RunRow, column: str) -> Any:
    """The value ``column`` sorts ``row`` by; ``None`` when the row has none."""
    if column == "metric":
        # By value only: a store mixing regression and classification runs is rare, and a
        # reader expects the numbers in order.
        return row.value
    if column == "started":
        return row.started_at
    text: str | None = getattr(row, column)
    return text.lower() if text else None


def query_rows(rows: Sequence[RunRow], query: RunsQuery) -> RunsPage:
    """Filter, sort and page ``rows`` (newest-first rows from :func:`cached_rows`).

    ``q`` matches, case-insensitively, the run's name, id, dataset or model; ``status``
    an exact status. Rows with no value in the sorted column go last.
    """
    query = query.checked()
    text = query.q.lower()
    chosen = [
        r
        for r in rows
        if (not query.status or r.status == query.status)
        and (
            not text
            or text in r.name.lower()
            or text in r.id.lower()
            or text in r.dataset.lower()
            or text in r.model.lower()
        )
    ]
    if not (query.sort == "started" and query.order == "desc"):  # rows come in that order
        keyed = [(_sort_value(r, query.sort), r) for r in chosen]
        present = [(v, r) for v, r in keyed if v is not None]
        # Ties keep the newest-first order of the rows (the sort is stable).
        present.sort(key=lambda pair: pair[0], reverse=query.order == "desc")
        chosen = [r for _, r in present] + [r for v, r in keyed if v is None]
    start = (query.page - 1) * query.per_page
    return RunsPage(tuple(chosen[start : start + query.per_page]), len(chosen), query)


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as one level of dotted keys (``model.estimator``)."""
    if isinstance(value, Mapping):
        items: Any = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten_config(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat
