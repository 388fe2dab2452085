"""Is the process that started a run still alive? (pid plus start time, so reuse is seen)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

__all__ = ["holder_alive", "hostname", "process_alive", "process_start_time"]


def hostname() -> str:
    """Return this machine's host name, as recorded in runs."""
    return socket.gethostname()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or not Linux
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Return the start time of ``pid`` in clock ticks since boot (Linux), else ``None``.

    Examples
    --------
    >>> import os, sys
    >>> t = process_start_time(os.getpid())
    >>> (t is not None and t >= 0) or not sys.platform.startswith("linux")
    True
    """
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])  # field 22 of /proc/<pid>/stat; fields[0] is field 3


def process_alive(pid: int, started: int | None) -> bool:
    """Return whether ``pid`` runs and, when ``started`` is known, is the same process.

    A zombie (exited, not yet reaped) counts as gone.
    """
    if pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        fields = _stat_fields(pid)
        if fields is None or len(fields) < 20 or fields[0] in ("Z", "X", "x"):
            return False
        return started is None or int(fields[19]) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(
    host: str,
    pid: int,
    started: int | None,
    beat: Path,
    ttl_seconds: float,
    now: float | None = None,
) -> bool:
    """Whether the process that wrote a lease or progress file still runs: on this host,
    by its pid and start time; elsewhere, by the file having been touched (``beat``'s
    modification time) within ``ttl_seconds``."""
    if host == hostname():
        return process_alive(pid, started)
    try:
        touched = beat.stat().st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now is None else now) - touched < ttl_seconds
