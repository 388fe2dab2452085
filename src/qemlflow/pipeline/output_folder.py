"""Run output folders that appear whole: written aside, renamed into place when complete.

A run writes its results into a hidden sibling of the folder asked for
(``.NAME.partial-PID-TOKEN``) and renames it to ``NAME`` only once every file is written
and flushed, so a run killed at any point leaves no ``NAME`` with a ``model.joblib`` in it.
The folder asked for may be missing, empty, or hold only files a run writes (earlier
results, which are replaced as a whole, in one atomic swap on Linux); a folder holding
anything else is refused, so no file of the user's is ever deleted. Leftovers of killed
runs are removed by the next run into the same folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Collection
from pathlib import Path

from qemlflow.errors import ConfigError
from qemlflow.store.processes import process_alive

__all__ = ["OutputFolder"]

_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?:partial|replaced)-(?P<pid>\d+)-[0-9a-f]{8}")
_RUN_RECORD = "run.json"


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _listed_files(folder: Path) -> set[str]:
    """The files a run's ``run.json`` says it wrote (none when unreadable)."""
    try:
        record = json.loads((folder / _RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = record.get("files") if isinstance(record, dict) else None
    return {f for f in files if isinstance(f, str)} if isinstance(files, list) else set()


def _foreign_entries(folder: Path, run_files: Collection[str]) -> list[str]:
    """The entries of ``folder`` that no run writes (what replacing it would delete)."""
    allowed = set(run_files) | _listed_files(folder) | {_RUN_RECORD}
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name not in allowed or entry.is_symlink() or not entry.is_file()
    )


def _check_target(target: Path, run_files: Collection[str]) -> None:
    shown = str(target)
    if target.is_symlink():
        raise ConfigError(
            f"--out {shown!r} is a symbolic link",
            "give the path of a real folder (or a new one) for the results",
        )
    if not target.exists():
        return
    if not target.is_dir():
        raise ConfigError(
            f"--out {shown!r} is a file, not a folder", "give a new folder for the results"
        )
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise ConfigError(
            f"--out {shown!r} is the current folder (or holds it); a run replaces its "
            "output folder as a whole",
            "give a new folder for the results, e.g. --out results",
        )
    foreign = _foreign_entries(target, run_files)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise ConfigError(
            f"--out {shown!r} holds files a run did not write ({', '.join(foreign[:3])}{more}); "
            "a run replaces its output folder as a whole",
            "give a new or empty folder, or the folder of earlier results",
        )


def _remove_leftovers(parent: Path, name: str) -> None:
    """Remove the partial and replaced folders of ``name`` left by runs that were killed."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            match = _LEFTOVER.fullmatch(entry.name)
            if match is None or match["name"] != name or process_alive(int(match["pid"]), None):
                continue
            shutil.rmtree(entry, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); ``False`` when
    this system or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(done == 0)


class OutputFolder:
    """A run's output folder under construction: write into ``path``, then :meth:`publish`.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "results"
    >>> folder = OutputFolder.begin(target, run_files={"metrics.json"})
    >>> _ = (folder.path / "metrics.json").write_text("{}")
    >>> target.exists()
    False
    >>> folder.publish() == target, sorted(p.name for p in target.iterdir())
    (True, ['metrics.json'])
    """

    def __init__(self, target: Path, path: Path, run_files: Collection[str]) -> None:
        self.target = target
        self.path = path
        self._run_files = frozenset(run_files)

    @classmethod
    def begin(cls, target: str | os.PathLike[str], run_files: Collection[str]) -> OutputFolder:
        """Check that ``target`` may receive a run's results; create the hidden folder.

        Raises :class:`~qemlflow.errors.ConfigError` when ``target`` is a file, a link, the
        current folder, or a folder holding anything but ``run_files`` (and ``run.json``).
        """
        absolute = Path(target).expanduser().absolute()
        if absolute.name in ("", ".."):
            absolute = absolute.resolve()
        absolute = absolute.parent.resolve() / absolute.name  # the folder itself may be a link
        _check_target(absolute, run_files)
        absolute.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(absolute.parent, absolute.name)
        path = absolute.parent / (f".{absolute.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        path.mkdir()
        return cls(absolute, path, run_files)

    def publish(self) -> Path:
        """Rename the finished folder into place (replacing earlier results); return it."""
        for entry in self.path.iterdir():
            _fsync(entry)
        _fsync(self.path)
        _check_target(self.target, self._run_files)  # nothing foreign appeared meanwhile
        parent = self.target.parent
        if self.target.exists() and any(self.target.iterdir()):
            if _exchange(self.path, self.target):  # one atomic step: old or new, always
                shutil.rmtree(self.path, ignore_errors=True)  # now holds the old results
            else:
                old = parent / f".{self.target.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
                # Between these renames the folder is briefly absent: never half old, half new.
                self.target.replace(old)
                self.path.replace(self.target)
                shutil.rmtree(old, ignore_errors=True)
        else:  # missing, or an empty folder (which rename replaces)
            self.path.replace(self.target)
        _fsync(parent)
        return self.target

    def discard(self) -> None:
        """Remove the unfinished folder (the run failed)."""
        shutil.rmtree(self.path, ignore_errors=True)
