"""Versions of the libraries a result depends on, recorded with every model and run."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from functools import cache, lru_cache
from importlib import metadata

__all__ = ["library_versions", "versions_of"]

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


def versions_of(names: Iterable[str]) -> dict[str, str]:
    """Return ``{distribution: installed version}`` for ``names`` (``"not installed"`` if absent).

    This is the ``libraries`` map of a step key: exactly the distributions the step
    declares, so that upgrading any other package keeps the cache.

    Examples
    --------
    >>> versions_of(["numpy"])["numpy"].count(".") >= 1
    True
    >>> versions_of(["no-such-distribution-qemlflow"])
    {'no-such-distribution-qemlflow': 'not installed'}
    """
    return {name: _version_of(name) for name in sorted(set(names))}


@cache
def _version_of(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
