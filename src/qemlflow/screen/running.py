"""Screens in progress, as other processes see them: one small progress file per screen.

A screen recorded in a store writes ``<store>/screens/<token>.json`` when it starts
(its model, input, output, process) and rewrites it, atomically and at most once a
second, with its position in the input; the file is deleted when the screen ends, however
it ends (a killed screen's file is removed by the next screen of the host).
:func:`running_screens` lists the files whose process still runs (on this host:
its pid and start time; elsewhere: the file was touched within :data:`STALE_SECONDS`,
a heartbeat thread touches it every :data:`HEARTBEAT_SECONDS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemlflow._atomic import write_atomic
from qemlflow.store.processes import holder_alive, hostname, process_start_time

__all__ = ["HEARTBEAT_SECONDS", "ProgressFile", "RunningScreen", "running_screens"]

SCREENS_DIRNAME = "screens"
HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 120.0
_MIN_INTERVAL = 1.0  # seconds between two rewrites: the screen's hot path stays cheap


@dataclass(frozen=True)
class RunningScreen:
    """What a running screen last wrote about itself."""

    path: Path
    host: str
    pid: int
    pid_started: int | None
    started_at: float
    updated_at: float
    model: str
    input: str
    output: str
    position: int
    total: int
    unit: str
    rows: int

    @property
    def fraction(self) -> float | None:
        """How far through its input the screen is (0..1), None when the size is unknown."""
        return min(1.0, self.position / self.total) if self.total > 0 else None

    def is_live(self, now: float | None = None) -> bool:
        """Whether the screen's process still runs (elsewhere: still beats)."""
        return holder_alive(self.host, self.pid, self.pid_started, self.path, STALE_SECONDS, now)


class ProgressFile:
    """The progress file of one screen (a :class:`~qemlflow.screen.screening.ScreenProgress`).

    Use as a context manager: the file exists inside the block only.
    """

    def __init__(self, root: Path, model: str, input_path: str, output: str) -> None:
        self.path = root / SCREENS_DIRNAME / f"{secrets.token_hex(8)}.json"
        pid = os.getpid()
        self._record: dict[str, Any] = {
            "host": hostname(),
            "pid": pid,
            "pid_started": process_start_time(pid),
            "started_at": time.time(),
            "updated_at": time.time(),
            "model": model,
            "input": input_path,
            "output": output,
            "position": 0,
            "total": 0,
            "unit": "bytes",
            "rows": 0,
        }
        self._written = 0.0
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def __enter__(self) -> ProgressFile:
        with contextlib.suppress(OSError):  # a store folder we cannot write: no progress
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _remove_dead(self.path.parent)
        self._write()
        self._heart = threading.Thread(target=self._beat, name="qemlflow-screen", daemon=True)
        self._heart.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._heart is not None:
            self._heart.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def start(self, total: int, unit: str) -> None:
        """The screen begins on ``total`` bytes (or rows, ``unit``) of input."""
        self._record.update(total=int(total), unit=unit)
        self._write()

    def update(self, position: int, rows: int) -> None:
        """Input up to ``position`` is scored (written at most once a second)."""
        self._record.update(position=int(position), rows=int(rows))
        if time.monotonic() - self._written >= _MIN_INTERVAL:
            self._write()

    def _write(self) -> None:
        self._record["updated_at"] = time.time()
        text = json.dumps(self._record)
        with contextlib.suppress(OSError):  # progress is a courtesy: never stop the screen
            write_atomic(self.path, lambda path: path.write_text(text))
        self._written = time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(self.path)


def _read(path: Path) -> RunningScreen | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunningScreen(
            path=path,
            host=str(data["host"]),
            pid=int(data["pid"]),
            pid_started=None if data.get("pid_started") is None else int(data["pid_started"]),
            started_at=float(data["started_at"]),
            updated_at=float(data["updated_at"]),
            model=str(data["model"]),
            input=str(data["input"]),
            output=str(data["output"]),
            position=int(data["position"]),
            total=int(data["total"]),
            unit=str(data["unit"]),
            rows=int(data["rows"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_dead(folder: Path) -> None:
    """Delete the files of killed screens of this host (a killed screen cannot)."""
    here = hostname()
    for path in folder.glob("*.json"):
        found = _read(path)
        if found is not None and found.host == here and not found.is_live():
            path.unlink(missing_ok=True)


def running_screens(root: Path) -> list[RunningScreen]:
    """The live screens of the store at ``root``, oldest first (dead files are left)."""
    folder = root / SCREENS_DIRNAME
    if not folder.is_dir():
        return []
    now = time.time()
    found = [s for p in folder.glob("*.json") if (s := _read(p)) is not None and s.is_live(now)]
    return sorted(found, key=lambda s: s.started_at)
