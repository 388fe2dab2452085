"""In-flight writers: lease files that keep garbage collection off what a process writes.

A process that writes blobs it will only reference later (a run: its step outputs, its
artifacts) holds a lease, ``<store>/leases/<token>.json``, from before its first blob
until its references are committed. Garbage collection keeps every unreferenced blob
written (or re-written) since the oldest live lease began, whatever the grace period.

A lease is live while its process is: on this host the pid and its start time are
checked (a killed run's lease is dead at once); a lease of another host (a store shared
over a network file system) is live while its heartbeat, the file's modification time
refreshed every ``HEARTBEAT_SECONDS``, is younger than ``LEASE_TTL_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qemlflow.store.processes import holder_alive, hostname, process_start_time

__all__ = ["HEARTBEAT_SECONDS", "LEASE_TTL_SECONDS", "Lease", "hold_lease", "live_leases"]

LEASES_DIRNAME = "leases"
HEARTBEAT_SECONDS = 20.0
LEASE_TTL_SECONDS = 120.0


@dataclass(frozen=True)
class Lease:
    """One process's claim that it is writing into the store (see the module docstring)."""

    path: Path
    host: str
    pid: int
    pid_started: int | None
    started_at: float
    what: str

    def is_live(self, now: float | None = None) -> bool:
        """Whether the process holding the lease still runs (or, elsewhere, still beats)."""
        return holder_alive(
            self.host, self.pid, self.pid_started, self.path, LEASE_TTL_SECONDS, now
        )


def _read(path: Path) -> Lease | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Lease(
            path=path,
            host=str(data["host"]),
            pid=int(data["pid"]),
            pid_started=None if data.get("pid_started") is None else int(data["pid_started"]),
            started_at=float(data["started_at"]),
            what=str(data.get("what", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_leases(root: Path, *, remove_dead: bool = False) -> list[Lease]:
    """Return the live leases of the store at ``root``; optionally delete the dead ones.

    A lease file that cannot be read is being written right now, or is garbage: it counts
    as live (its own mtime as its start) until it is a minute old.
    """
    folder = root / LEASES_DIRNAME
    if not folder.is_dir():
        return []
    now = time.time()
    live: list[Lease] = []
    for path in folder.glob("*.json"):
        lease = _read(path)
        if lease is None:
            with contextlib.suppress(OSError):
                mtime = path.stat().st_mtime
                if now - mtime < 60:
                    live.append(Lease(path, "?", 0, None, mtime, "unreadable lease"))
                elif remove_dead:
                    path.unlink()
            continue
        if lease.is_live(now):
            live.append(lease)
        elif remove_dead:
            path.unlink(missing_ok=True)
    return live


def _write_lease(folder: Path, what: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    record = {
        "host": hostname(),
        "pid": pid,
        "pid_started": process_start_time(pid),
        "started_at": time.time(),
        "what": what,
    }
    path = folder / f"{secrets.token_hex(8)}.json"
    temp = path.with_suffix(".tmp")
    with temp.open("w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)
    return path


@contextlib.contextmanager
def hold_lease(root: Path, what: str) -> Iterator[Path]:
    """Hold a lease on the store at ``root`` for the duration of the block (with heartbeat)."""
    path = _write_lease(root / LEASES_DIRNAME, what)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(OSError):
                os.utime(path)

    heart = threading.Thread(target=beat, name="qemlflow-lease", daemon=True)
    heart.start()
    try:
        yield path
    finally:
        stop.set()
        heart.join(timeout=5)
        path.unlink(missing_ok=True)
