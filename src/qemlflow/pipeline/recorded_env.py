"""Rerun ``reproduce`` in a throwaway virtual environment with a run's recorded packages.

The environment is built from the run's environment snapshot
(:func:`qemlflow.store.capture_environment`): a virtual environment that sees the folders
of this interpreter's import path after its own (a ``.pth`` file; like
``--system-site-packages``, but for the packages of this environment, which may itself be
a virtual environment), so packages already at their recorded version are reused; each
recorded package whose version differs here (or that is missing here) is installed as
exactly ``name==version`` by pip, from the package index pip is configured with
(``pip.conf``, ``PIP_INDEX_URL``, ``PIP_FIND_LINKS``, ``PIP_NO_INDEX``, ...).
``reproduce`` then runs inside it.

Python itself cannot be installed by pip: a run recorded under another Python
``major.minor`` is refused with the Python it needs.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow.errors import QeMLflowError

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = [
    "RecordedEnvironmentError",
    "RecordedEnvironmentPlan",
    "plan_recorded_environment",
    "reproduce_in_recorded_environment",
]

# The installer is no part of a result, and pip cannot replace itself mid-install.
_NOT_INSTALLED = frozenset({"pip"})
_PIP_TIMEOUT_S = 3600


class RecordedEnvironmentError(QeMLflowError):
    """The recorded environment of a run cannot be rebuilt here."""


@dataclass(frozen=True)
class RecordedEnvironmentPlan:
    """What the throwaway environment needs: the recorded Python and the packages to pin.

    ``install`` maps each package to its recorded version; ``here`` holds this
    environment's version of each (``None`` when it is not installed here).
    """

    python: str
    install: dict[str, str] = field(default_factory=dict)
    here: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the Python, and each package installed (with its version here)."""
        if not self.install:
            pinned = "no package installed, every recorded version is already here"
        else:
            listed = ", ".join(
                f"{name}=={version} (here {self.here.get(name) or 'absent'})"
                for name, version in sorted(self.install.items())
            )
            pinned = f"{len(self.install)} package(s) installed: {listed}"
        return f"python {self.python}; {pinned}"


def plan_recorded_environment(
    recorded: Mapping[str, Any], current: Mapping[str, Any]
) -> RecordedEnvironmentPlan:
    """Compare a recorded environment snapshot with this one; say what to install.

    Raises :class:`RecordedEnvironmentError` when the recorded Python's ``major.minor`` is
    not this interpreter's, or the snapshot lists no packages.

    Examples
    --------
    >>> import platform
    >>> py = {"version": platform.python_version()}
    >>> plan = plan_recorded_environment(
    ...     {"python": py, "packages": {"six": "1.16.0", "numpy": "1.0"}},
    ...     {"python": py, "packages": {"six": "1.16.0", "numpy": "2.0"}})
    >>> plan.install, plan.here
    ({'numpy': '1.0'}, {'numpy': '2.0'})
    """
    version = str((recorded.get("python") or {}).get("version", ""))
    needed = ".".join(version.split(".")[:2])
    here = ".".join(platform.python_version().split(".")[:2])
    if not needed:
        raise RecordedEnvironmentError(
            "the run's environment snapshot records no Python version",
            "reproduce it without --in-recorded-env",
        )
    if needed != here:
        raise RecordedEnvironmentError(
            f"the run was recorded under Python {version}; this is Python "
            f"{platform.python_version()}",
            f"run 'python{needed} -m qemlflow reproduce RUN --in-recorded-env' with a "
            f"Python {needed} that has qemlflow installed",
        )
    packages: Mapping[str, str] = recorded.get("packages") or {}
    if not packages:
        raise RecordedEnvironmentError(
            "the run's environment snapshot lists no packages",
            "reproduce it without --in-recorded-env",
        )
    present: Mapping[str, str] = current.get("packages") or {}
    install = {
        name: str(version)
        for name, version in sorted(packages.items())
        if name not in _NOT_INSTALLED and present.get(name) != version
    }
    here_versions: dict[str, str | None] = {name: present.get(name) for name in install}
    # qemlflow run from a source folder is no installed distribution: its own record counts.
    recorded_qemlflow, current_qemlflow = recorded.get("qemlflow"), current.get("qemlflow")
    if "qemlflow" not in install and recorded_qemlflow and recorded_qemlflow != current_qemlflow:
        install["qemlflow"] = str(recorded_qemlflow)
        here_versions["qemlflow"] = None if current_qemlflow is None else str(current_qemlflow)
    return RecordedEnvironmentPlan(python=version, install=install, here=here_versions)


def _recorded_environment(store: Store, run_ref: str) -> tuple[str, dict[str, Any]]:
    run = store.runs.get(run_ref)
    if not run.environment or store.blobs.problem(run.environment) is not None:
        raise RecordedEnvironmentError(
            f"run {run.id} has no intact environment snapshot in the store",
            "reproduce it without --in-recorded-env",
        )
    snapshot: dict[str, Any] = json.loads(store.blobs.get_bytes(run.environment))
    return run.id, snapshot


def _import_path() -> list[str]:
    """This interpreter's import path without the standard library and the folder of the
    running script (``sys.path[0]``, which the rerun gets for itself): the folders where
    its packages (and this qemlflow) are found."""
    stdlib = {
        os.path.realpath(p)
        for p in (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib"))
        if p
    }
    folders = []
    for entry in sys.path[1:]:
        if not entry or not Path(entry).is_dir():
            continue
        real = os.path.realpath(entry)
        inside = any(real == s or real.startswith(s + os.sep) for s in stdlib)
        # In a virtual environment "platstdlib" is the environment's own lib folder.
        if inside and "site-packages" not in Path(real).parts:
            continue
        folders.append(real)
    return list(dict.fromkeys(folders))


def _create_venv(folder: Path) -> Path:
    """A virtual environment in ``folder`` that sees this interpreter's packages after its
    own: return its Python."""
    done = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RecordedEnvironmentError(
            f"could not create a virtual environment in '{folder}' ({last})",
            "check that this Python has the venv module and the folder is writable",
        )
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    asked = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    site = asked.stdout.strip()
    if asked.returncode != 0 or not Path(site).is_dir():
        raise RecordedEnvironmentError(
            f"the virtual environment in '{folder}' does not start",
            "check that this Python can create working virtual environments (python -m venv)",
        )
    # This interpreter's import path, through a .pth file: it comes after the new
    # environment's own folder, so a pinned version installed there wins. (Unlike
    # --system-site-packages, which reaches the base interpreter's packages, not those of
    # the virtual environment this may be, nor those on PYTHONPATH.)
    Path(site, "_qemlflow_recorded_env.pth").write_text(
        "".join(f"{entry}\n" for entry in _import_path()), encoding="utf-8"
    )
    return python


def _child_environment() -> dict[str, str]:
    # PYTHONPATH would put this environment's packages before the pinned ones.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _install(python: Path, plan: RecordedEnvironmentPlan) -> None:
    """pip-install every pinned package into the environment of ``python``.

    ``--no-deps``: the recorded set is complete already, so pip resolves nothing;
    ``--ignore-installed``: a version seen through this interpreter's path is shadowed,
    never uninstalled.
    """
    pins = [f"{name}=={version}" for name, version in sorted(plan.install.items())]
    command = [
        sys.executable, "-m", "pip", "--python", str(python), "install",
        "--no-deps", "--ignore-installed", "--no-input", "--quiet", *pins,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=_child_environment(),
            timeout=_PIP_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RecordedEnvironmentError(
            f"pip could not install the recorded packages ({type(exc).__name__})",
            "check that pip is installed with this Python",
        ) from None
    if done.returncode != 0:
        said = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = next((line for line in said if line.startswith("ERROR")), said[-1] if said else "")
        qemlflow = plan.install.get("qemlflow")
        if qemlflow is not None:
            raise RecordedEnvironmentError(
                f"the run was recorded with qemlflow {qemlflow} and this is qemlflow "
                f"{plan.here.get('qemlflow')}; pip could not install qemlflow=={qemlflow} "
                f"or another recorded package ({reason})",
                f"install qemlflow {qemlflow} from its source and run reproduce with it, or "
                "point pip at an index that has it (PIP_INDEX_URL, PIP_FIND_LINKS)",
            )
        raise RecordedEnvironmentError(
            f"pip could not install the recorded packages ({reason})",
            "point pip at an index that has them (PIP_INDEX_URL, PIP_FIND_LINKS)",
        )


def reproduce_in_recorded_environment(
    store: Store,
    run_ref: str,
    *,
    store_location: str | None,
    as_json: bool = False,
    keep_env: bool = False,
    say: Callable[[str], None] = print,
) -> tuple[int, str]:
    """Run ``qemlflow reproduce RUN`` inside a throwaway environment with the run's
    recorded package versions; return its exit code and what it printed.

    ``store_location`` is the ``--store`` value to pass on (``None``: the default store,
    found the same way from the same folder). ``say`` is told, before the rerun starts,
    which environment it runs in; the rerun's own messages and progress go to this
    process's standard error as they come. The environment is deleted afterwards unless
    ``keep_env``.
    """
    from qemlflow.store import capture_environment

    run_id, recorded = _recorded_environment(store, run_ref)
    plan = plan_recorded_environment(recorded, capture_environment(Path.cwd()))
    folder = Path(tempfile.mkdtemp(prefix="qemlflow-recorded-env-"))
    try:
        python = _create_venv(folder / "venv")
        if plan.install:
            _install(python, plan)
        kept = f" (kept at {folder / 'venv'})" if keep_env else ""
        say(f"reproducing run {run_id} in its recorded environment: {plan.describe()}{kept}")
        command = [str(python), "-m", "qemlflow", "reproduce", run_id]
        command += ["--store", store_location] if store_location else []
        command += ["--json"] if as_json else []
        done = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, env=_child_environment(), check=False
        )
    finally:
        if not keep_env:
            shutil.rmtree(folder, ignore_errors=True)
    return done.returncode, done.stdout
