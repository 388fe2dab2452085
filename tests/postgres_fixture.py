"""A real, throw-away PostgreSQL server for tests (a pytest plugin module).

Fixtures
--------
``postgres_server`` (session scope)
    Runs ``initdb`` into a temporary directory and starts a PostgreSQL server on
    127.0.0.1 with a free port, trust authentication and ``fsync=off``. Yields a
    :class:`PostgresServer`; the server is stopped (``pg_ctl stop -m immediate``) and its
    directory deleted at the end of the session.
``postgres_url`` (function scope)
    Creates a fresh, uniquely named, empty database on that server and returns its URL
    ``postgresql://postgres@127.0.0.1:PORT/DBNAME``. The database is dropped afterwards.

When running as root the server runs as the ``postgres`` OS user (PostgreSQL refuses to
run as root). When the binaries are missing the tests are skipped, except when the
environment variable ``CI`` is ``"true"``: then they fail, since CI must install them with
``.ci/install-postgres.sh``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest
from tests.extras import missing

__all__ = ["PostgresServer", "find_postgres_bin_dir", "postgres_server", "postgres_url"]

SUPERUSER = "postgres"
HOST = "127.0.0.1"
INSTALL_HINT = "install it with `bash .ci/install-postgres.sh` (Debian: apt-get install postgresql)"
_START_ATTEMPTS = 3


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL server started for the test session."""

    host: str
    port: int
    superuser: str
    admin_url: str
    bin_dir: Path
    data_dir: Path
    version: str
    startup_seconds: float

    def url(self, dbname: str, driver: str | None = None) -> str:
        """URL of database ``dbname``; ``driver="psycopg"`` gives a SQLAlchemy URL."""
        scheme = "postgresql" if driver is None else f"postgresql+{driver}"
        return f"{scheme}://{self.superuser}@{self.host}:{self.port}/{dbname}"


def _version_key(bin_dir: str) -> tuple[int, ...]:
    major = Path(bin_dir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", major)) or (0,)


def find_postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``.

    Looks on ``PATH`` first (symlinks resolved), then under ``/usr/lib/postgresql/*/bin``
    (highest major version first).
    """
    candidates: list[Path] = []
    for tool in ("initdb", "pg_ctl"):
        found = shutil.which(tool)
        if found:
            candidates.append(Path(found).resolve().parent)
    candidates += [
        Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)[::-1]
    ]
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` OS user when we are root, else unchanged."""
    if not _is_root():
        return argv
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", SUPERUSER, "--", *argv]
    return ["su", SUPERUSER, "-s", "/bin/sh", "-c", shlex.join(argv)]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return subprocess.run(
        _as_server_user(argv),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _missing(message: str) -> NoReturn:
    missing(
        message,
        in_ci="; CI must not skip the PostgreSQL tests: run `bash .ci/install-postgres.sh` "
        "before pytest",
        elsewhere=f"; {INSTALL_HINT}",
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def _start_server(bin_dir: Path) -> Iterator[PostgresServer]:
    started = time.perf_counter()
    root_user = _is_root()
    if root_user:
        try:
            import pwd

            server_user = pwd.getpwnam(SUPERUSER)
        except KeyError:
            _missing(f"the '{SUPERUSER}' OS user does not exist (needed when running as root)")
        # /tmp rather than $TMPDIR: the postgres user must be able to reach the directory.
        base = Path(tempfile.mkdtemp(prefix="qemlflow-pg-", dir="/tmp"))
        os.chown(base, server_user.pw_uid, server_user.pw_gid)
    else:
        base = Path(tempfile.mkdtemp(prefix="qemlflow-pg-"))
    base.chmod(0o700)
    data_dir, socket_dir, log_file = base / "data", base / "sock", base / "server.log"
    pg_ctl = str(bin_dir / "pg_ctl")
    running = False
    try:
        initdb = _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=base,
        )
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}", pytrace=False)
        socket_dir.mkdir()
        if root_user:
            os.chown(socket_dir, server_user.pw_uid, server_user.pw_gid)

        failure = ""
        for _ in range(_START_ATTEMPTS):
            port = _free_port()
            settings = {
                "listen_addresses": f"'{HOST}'",
                "port": str(port),
                "unix_socket_directories": f"'{socket_dir}'",
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "100",
                "shared_buffers": "32MB",
            }
            auto_conf = data_dir / "postgresql.auto.conf"
            lines = [f"{key} = {value}" for key, value in settings.items()]
            auto_conf.write_text("\n".join(lines) + "\n")
            if root_user:  # keep the file the server user's own (ALTER SYSTEM rewrites it)
                os.chown(auto_conf, server_user.pw_uid, server_user.pw_gid)
            start = _run(
                [pg_ctl, "-D", str(data_dir), "-l", str(log_file), "-w", "-t", "60", "start"], base
            )
            if start.returncode == 0:
                running = True
                break
            failure = f"{start.stdout}\n{start.stderr}\n{_tail(log_file)}"
            # Maybe the port was taken in between: make sure nothing is left, then retry.
            _run([pg_ctl, "-D", str(data_dir), "-m", "immediate", "stop"], base)
        if not running:
            pytest.fail(f"PostgreSQL failed to start:\n{failure}", pytrace=False)

        version = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        yield PostgresServer(
            host=HOST,
            port=port,
            superuser=SUPERUSER,
            admin_url=f"postgresql://{SUPERUSER}@{HOST}:{port}/postgres",
            bin_dir=bin_dir,
            data_dir=data_dir,
            version=version,
            startup_seconds=time.perf_counter() - started,
        )
    finally:
        if running:
            _run([pg_ctl, "-D", str(data_dir), "-m", "immediate", "-w", "stop"], base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole test session (see the module docstring)."""
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found")
    with _start_server(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database on ``postgres_server``; dropped after the test."""
    import psycopg
    from psycopg import sql

    name = f"qemlflow_test_{uuid.uuid4().hex[:16]}"
    ident = sql.Identifier(name)
    with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield postgres_server.url(name)
    finally:
        with psycopg.connect(postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(ident, force))
