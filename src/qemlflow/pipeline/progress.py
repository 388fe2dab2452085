"""How long-running steps report progress: silent in the API, a rich bar in the CLI."""

from __future__ import annotations

from typing import Protocol

__all__ = ["ProgressReporter", "SilentProgress"]


class ProgressReporter(Protocol):
    """Receives step progress; the CLI draws it, the Python API ignores it."""

    def start(self, step: str, total: int | None = None) -> None:
        """A step begins; ``total`` units of work when known."""

    def advance(self, step: str, amount: int = 1) -> None:
        """``amount`` more units of ``step`` are done."""

    def finish(self, step: str, detail: str = "") -> None:
        """The step is complete; ``detail`` is a short summary."""


class SilentProgress:
    """A reporter that reports nothing."""

    def start(self, step: str, total: int | None = None) -> None:
        """Ignore the start of a step."""

    def advance(self, step: str, amount: int = 1) -> None:
        """Ignore progress."""

    def finish(self, step: str, detail: str = "") -> None:
        """Ignore the end of a step."""
