"""What a test needs but the machine may lack: skipped where it is missing, a failure under CI.

Outside CI a laptop without PostgreSQL, Chromium or an optional extra still runs the rest of
the suite. Under ``CI=true`` (set by ``.ci/run``) everything is installed, so a missing
piece is a broken setup: the test fails instead of passing by skipping.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["missing", "require_extra", "under_ci"]


def under_ci() -> bool:
    """Whether the tests run under CI (``CI=true``, any case)."""
    return os.environ.get("CI", "").lower() == "true"


def missing(message: str, *, in_ci: str = "", elsewhere: str = "") -> NoReturn:
    """Stop the calling test over something missing: fail under CI, skip elsewhere.

    ``in_ci`` and ``elsewhere`` are appended to ``message`` in the one case or the other
    (e.g. why CI must not skip, or how to install the missing piece).
    """
    if under_ci():
        pytest.fail(message + in_ci, pytrace=False)
    pytest.skip(message + elsewhere)


def require_extra(module: str) -> ModuleType:
    """Import ``module`` from an optional extra (serve, ui, dask, parquet), or stop the
    calling test or module as :func:`missing` does (the dev extra installs every extra)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing(f"{module} is not installed (pip install -e '.[dev]'): {error}")
