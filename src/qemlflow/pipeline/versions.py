"""Versions of the libraries a result depends on, recorded with every model and run."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

__all__ = ["library_versions"]

_LIBRARIES = ("qemlflow", "rdkit", "numpy", "scipy", "scikit-learn", "lightgbm", "pandas")


def library_versions() -> dict[str, str]:
    """Return the Python version and the versions of the libraries results depend on.

    Examples
    --------
    >>> sorted(library_versions())[:3]
    ['lightgbm', 'numpy', 'pandas']
    """
    return dict(_library_versions())


@lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    # Reading package metadata costs milliseconds; installed versions do not change
    # while a process runs.
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
