"""``/runs``: every run, filtered, sorted and paged; ``/runs/compare``: runs side by side.

Declared before :mod:`qemlflow.ui.pages.run`, so ``/runs/compare`` wins over
``/runs/{run_id}``.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from qemlflow.ui.runs_query import (
    PER_PAGE,
    SORT_COLUMNS,
    STATUSES,
    RunsQuery,
    RunsQueryError,
    cached_rows,
    flatten_config,
    metric_text,
    query_rows,
)
from qemlflow.ui.templating import render, state, store

__all__ = ["MAX_COMPARED", "router"]

router = APIRouter()

MAX_COMPARED = 12
"""The most runs one comparison shows side by side."""


@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    q: Annotated[str, Query(max_length=200)] = "",
    status: str = "",
    sort: str = "started",
    order: str = "desc",
    page: str = "1",
    per_page: str = str(PER_PAGE),
) -> HTMLResponse:
    """The runs table: filter by text and status, sort by any column, 50 runs a page."""
    query = RunsQuery(
        q=q,
        status=status,
        sort=sort,
        order=order,
        page=_whole(page, "page"),
        per_page=_whole(per_page, "per_page"),
    )
    result = query_rows(cached_rows(store(request), state(request).cache), query)

    def link(**changes: Any) -> str:
        # The current query with some parameters changed, defaults left out of the URL.
        params = {**vars(result.query), **changes}
        defaults = vars(RunsQuery())
        kept = {k: v for k, v in params.items() if v != defaults[k]}
        return f"/runs?{urlencode(kept)}" if kept else "/runs"

    return render(
        request,
        "runs.html",
        nav="runs",
        result=result,
        query=result.query,
        statuses=STATUSES,
        columns=SORT_COLUMNS,
        link=link,
    )


@router.get("/runs/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, run: Annotated[list[str] | None, Query(max_length=100)] = None
) -> HTMLResponse:
    """Two or more runs side by side: test metrics with CIs, config differences, plots."""
    wanted = list(dict.fromkeys(r.strip() for r in (run or []) if r.strip()))
    if len(wanted) < 2:
        raise RunsQueryError(
            "select two or more runs to compare", "tick their boxes on the runs page"
        )
    if len(wanted) > MAX_COMPARED:
        raise RunsQueryError(
            f"{len(wanted)} runs cannot be compared at once",
            f"select at most {MAX_COMPARED}",
        )
    opened = store(request)
    records = list({r.id: r for r in (opened.get_run(i, settle=False) for i in wanted)}.values())
    if len(records) < 2:
        raise RunsQueryError("select two or more runs to compare", "these ids name the same run")
    metrics = _metric_rows([r.metrics or {} for r in records])
    configs = [flatten_config(r.config) for r in records]
    keys = sorted(set().union(*configs))
    missing = object()
    # Each cell: (text, whether it differs from the first run's value).
    differing: list[tuple[str, list[tuple[str, bool]]]] = []
    same: list[tuple[str, list[tuple[str, bool]]]] = []
    for key in keys:
        values = [c.get(key, missing) for c in configs]
        shown = [("—" if v is missing else _text(v), v != values[0]) for v in values]
        (differing if any(changed for _, changed in shown) else same).append((key, shown))
    return render(
        request,
        "compare.html",
        nav="runs",
        records=records,
        metrics=metrics,
        differing=differing,
        same=same,
    )


def _whole(text: str, name: str) -> int:
    # Parsed here, not by FastAPI: a bad number in a hand-edited URL gets the HTML error
    # page (400) rather than a JSON validation error.
    try:
        return int(text)
    except ValueError:
        raise RunsQueryError(
            f"{name} {text!r} is not a whole number", f"give {name}=1, 2, ..."
        ) from None


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _metric_rows(all_metrics: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Test metrics (value [CI]) then the split sizes, one row each, one cell per run."""
    rows: list[tuple[str, list[str]]] = []
    tests = [_mapping(m.get("test")) for m in all_metrics]
    cis = [_mapping(_mapping(m.get("ci95")).get("test")) for m in all_metrics]
    for name in sorted(set().union(*tests)):
        cells = []
        for test, ci in zip(tests, cis, strict=True):
            value = test.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                cells.append(metric_text(name, float(value), ci.get(name), with_name=False))
            else:
                cells.append("—" if value is None else str(value))
        rows.append((name, cells))
    sizes = [_mapping(m.get("n")) for m in all_metrics]
    for part in ("train", "valid", "test"):
        if any(part in s for s in sizes):
            rows.append((f"n {part}", [str(s.get(part, "—")) for s in sizes]))
    return rows
