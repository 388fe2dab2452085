"""What the code ran on: interpreter, OS, CPU, installed packages, git commit.

The snapshot holds no timestamp or host name, so identical environments give identical
canonical JSON and therefore one shared blob.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qemlflow._version import __version__

__all__ = ["capture_environment", "environment_drift", "normalize_package_name"]

_GIT_TIMEOUT_S = 10


def normalize_package_name(name: str) -> str:
    """A distribution name as the snapshot's ``packages`` keys spell it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _packages() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if not name:
            continue
        found.setdefault(normalize_package_name(str(name)), str(dist.version))
    return dict(sorted(found.items()))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(project_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(project_dir), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git_state(project_dir: Path) -> dict[str, Any] | None:
    commit = _git(project_dir, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(project_dir, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def capture_environment(project_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Return a JSON-ready snapshot of the software and hardware this process runs on.

    Parameters
    ----------
    project_dir
        The project folder whose git commit is recorded (default: the current
        directory). ``git`` is ``None`` when it is no git repository or git is missing.

    Examples
    --------
    >>> env = capture_environment()
    >>> sorted(env)
    ['cpu', 'git', 'os', 'packages', 'python', 'qemlflow']
    >>> "sqlalchemy" in env["packages"]
    True
    """
    folder = Path(project_dir) if project_dir is not None else Path.cwd()
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "platform": platform.platform(),
            "machine": platform.machine(),
        },
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "packages": _packages(),
        "qemlflow": __version__,
        "git": _git_state(folder),
    }


def _changed(recorded: Any, current: Any) -> dict[str, Any] | None:
    return None if recorded == current else {"recorded": recorded, "current": current}


def environment_drift(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Return how ``current`` differs from the ``recorded`` environment.

    ``python``, ``os``, ``qemlflow``, ``git`` and ``cpu`` are ``None`` when unchanged, else
    ``{"recorded": ..., "current": ...}``; ``packages`` lists ``added``, ``removed`` and
    ``changed`` distributions; ``drifted`` is whether anything differs.

    Examples
    --------
    >>> old = {"python": {"version": "3.11.9"}, "packages": {"numpy": "1.26.4", "six": "1.16"}}
    >>> new = {"python": {"version": "3.11.9"}, "packages": {"numpy": "2.0.0", "rich": "13"}}
    >>> drift = environment_drift(old, new)
    >>> drift["packages"]
    {'added': {'rich': '13'}, 'removed': {'six': '1.16'}, 'changed': {'numpy': {'recorded': '1.26.4', 'current': '2.0.0'}}}
    >>> drift["python"] is None, drift["drifted"]
    (True, True)
    """  # noqa: E501
    old_pkgs: Mapping[str, str] = recorded.get("packages") or {}
    new_pkgs: Mapping[str, str] = current.get("packages") or {}
    packages = {
        "added": {k: new_pkgs[k] for k in sorted(set(new_pkgs) - set(old_pkgs))},
        "removed": {k: old_pkgs[k] for k in sorted(set(old_pkgs) - set(new_pkgs))},
        "changed": {
            k: {"recorded": old_pkgs[k], "current": new_pkgs[k]}
            for k in sorted(set(old_pkgs) & set(new_pkgs))
            if old_pkgs[k] != new_pkgs[k]
        },
    }
    drift: dict[str, Any] = {
        part: _changed(recorded.get(part), current.get(part))
        for part in ("python", "os", "qemlflow", "git")
    }
    # The processor: the D-MPNN's float sums (torch's CPU kernels) may round differently on
    # another one, so a reproduction elsewhere can differ with every package the same.
    # A snapshot that did not record it is not taken for a change.
    drift["cpu"] = _changed(recorded.get("cpu"), current.get("cpu")) if "cpu" in recorded else None
    drift["packages"] = packages
    drift["drifted"] = any(v is not None for k, v in drift.items() if k != "packages") or any(
        packages.values()
    )
    return drift
