"""Optional extras in tests: skipped where an extra is not installed, a failure under CI."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

__all__ = ["require_extra"]


def require_extra(module: str) -> ModuleType:
    """Import ``module`` from an optional extra (serve, ui, dask, parquet).

    Outside CI a missing extra skips the calling test or module, as
    ``pytest.importorskip`` does. Under ``CI=true`` the dev extra installs every extra, so
    a missing one is a broken setup: the test fails instead of passing by skipping.
    """
    if os.environ.get("CI") == "true":
        try:
            return importlib.import_module(module)
        except ImportError as error:
            pytest.fail(f"{module} is not installed (CI=true; pip install -e '.[dev]'): {error}")
    return pytest.importorskip(module)
