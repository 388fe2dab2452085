"""Terminal output for the CLI: progress bars, summary tables, one-line errors."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

__all__ = ["LazyProgress", "RichProgress", "console", "error_console", "metrics_table"]

console = Console()
error_console = Console(stderr=True)


class LazyProgress(Progress):
    """A rich Progress that draws nothing until its first task.

    A command that fails before any work starts then prints its one error line alone,
    without the blank line an empty live display leaves behind.
    """

    def __init__(self, *columns: Any, **options: Any) -> None:
        console = options.get("console") or error_console
        if options.get("transient") and not console.is_terminal:
            # A transient display leaves nothing on a terminal; elsewhere (a log, a pipe)
            # it would leave its last frame, or a blank line: draw none at all.
            options["disable"] = True
        super().__init__(*columns, **options)

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        """Add a task, starting the display with the first one."""
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)


class RichProgress:
    """Draws one progress line per pipeline step (a bar when the size is known)."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    @classmethod
    def create(cls) -> Progress:
        """Return the rich Progress display used by ``qemlflow run``."""
        return LazyProgress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=error_console,
            transient=False,
        )

    def start(self, step: str, total: int | None = None) -> None:
        """Add a line for ``step``."""
        self._tasks[step] = self._progress.add_task(step, total=total, detail="")

    def advance(self, step: str, amount: int = 1) -> None:
        """Move the bar of ``step`` forward."""
        self._progress.advance(self._tasks[step], amount)

    def finish(self, step: str, detail: str = "") -> None:
        """Mark ``step`` complete with a short summary."""
        task = self._tasks[step]
        total = self._progress.tasks[task].total or 1
        self._progress.update(task, total=total, completed=total, detail=detail)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "—" if value is None else str(value)


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """Return a table of metrics per split, with the test confidence interval."""
    parts = [p for p in ("train", "valid", "test") if p in metrics]
    names = list(metrics.get("test", metrics.get(parts[0], {})) if parts else [])
    ci_key = next((k for k in metrics if k.startswith("ci")), None)
    ci = metrics.get(ci_key, {}).get("test", {}) if ci_key else {}
    table = Table(title=title)
    table.add_column("metric", no_wrap=True)
    for part in parts:
        table.add_column(f"{part} (n={metrics['n'].get(part, '?')})", justify="right")
    if ci and ci_key:
        table.add_column(f"test {ci_key[2:]}% CI", justify="right")
    for name in names:
        cells = [_fmt(metrics[part].get(name)) for part in parts]
        if ci:
            bounds = ci.get(name)
            cells.append(f"{_fmt(bounds[0])} – {_fmt(bounds[1])}" if bounds else "—")
        table.add_row(name, *cells)
    return table
