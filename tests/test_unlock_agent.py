"""The unlock agent, as real processes: `identity unlock`, signing through it, expiry, lock,
wrong passphrases, and the socket checks that keep another user's (or a planted) agent out."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qemlflow.audit.agent import (
    AgentError,
    agent_principal,
    agent_socket_path,
    agent_status,
    parse_ttl,
    start_agent,
    stop_agent,
)
from qemlflow.audit.identity import init_identity, load_identity, load_signing_key
from qemlflow.audit.principal import AUTH_PASSPHRASE, verify_signature

SRC = Path(__file__).resolve().parents[1] / "src"
PASSPHRASE = "correct horse battery"


def _env(identity: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QEMLFLOW_PASSPHRASE") and k != "XDG_RUNTIME_DIR"
    }
    env["QEMLFLOW_IDENTITY_DIR"] = str(identity)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _cli(
    identity: Path, *args: str, pass_fds: tuple[int, ...] = (), **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", "identity", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(identity, **extra),
        pass_fds=pass_fds,
    )


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def ada(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Ada's identity folder; any agent a test leaves running is stopped afterwards."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    folder = tmp_path / "ada"
    init_identity("Ada Lovelace", "ada@lab.org", PASSPHRASE, directory=folder)
    yield folder
    path = agent_socket_path(folder)
    folder.chmod(0o700)
    with contextlib.suppress(OSError):  # undo what a test did to the socket, to stop its agent
        os.chown(path.parent, os.getuid(), os.getgid(), follow_symlinks=False)
        path.parent.chmod(0o700)
        os.chown(path, os.getuid(), os.getgid(), follow_symlinks=False)
        path.chmod(0o600)
    with contextlib.suppress(AgentError, OSError):
        status = agent_status(folder)
        stop_agent(folder)
        if status is not None and not _gone(status.pid, 3):
            os.kill(status.pid, signal.SIGKILL)


def test_unlock_then_sign_through_the_agent(ada: Path) -> None:
    done = _cli(ada, "unlock", "--ttl", "5m", QEMLFLOW_PASSPHRASE=PASSPHRASE)
    assert done.returncode == 0, done.stderr
    assert "unlocked Ada Lovelace <ada@lab.org> until" in done.stdout

    principal = agent_principal(ada)
    identity = load_identity(ada)
    assert principal is not None
    assert (principal.display, principal.auth) == (identity.display, AUTH_PASSPHRASE)
    assert principal.fingerprint == identity.fingerprint
    message = b"qemlflow.audit-event/1\n{}"
    signature = principal.sign(message)
    assert verify_signature(identity.public_key, message, signature)
    assert not verify_signature(identity.public_key, b"another message", signature)

    status = _cli(ada, "status")
    assert status.returncode == 0 and "unlocked until" in status.stdout
    shown = json.loads(_cli(ada, "status", "--json").stdout)
    assert shown["unlocked"] is True and shown["fingerprint"] == identity.fingerprint
    assert shown["expires_at"].endswith("Z")
    remaining = agent_status(ada)
    assert remaining is not None and 250 < remaining.remaining_seconds <= 300


def test_the_agent_signs_only_audit_events_and_checkpoints(ada: Path) -> None:
    from qemlflow.audit.agent import AGENT_DOMAINS
    from qemlflow.store.audit import EVENT_SIGNATURE_DOMAIN
    from qemlflow.store.checkpoints import CHECKPOINT_DOMAIN

    assert EVENT_SIGNATURE_DOMAIN.startswith(AGENT_DOMAINS)
    assert CHECKPOINT_DOMAIN.startswith(AGENT_DOMAINS)
    assert _cli(ada, "unlock", "--ttl", "5m", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    principal = agent_principal(ada)
    assert principal is not None
    # an approval's message (canonical JSON), or anything else, is not the agent's to sign
    for message in (b'{"meaning":"approved","object":"run"}', b"qemlflow.other/1\n{}"):
        with pytest.raises(AgentError, match="only audit events and checkpoints"):
            principal.sign(message)
    event = b"qemlflow.audit-event/1\n{}"
    assert principal.verify(event, principal.sign(event))


def test_socket_is_private(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    path = agent_socket_path(ada)
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.lstat().st_mode) == 0o700
    assert path.lstat().st_uid == os.getuid()


def test_passphrase_from_a_file_descriptor(ada: Path) -> None:
    read, write = os.pipe()
    os.write(write, PASSPHRASE.encode() + b"\n")
    os.close(write)
    try:
        done = _cli(ada, "unlock", "--passphrase-fd", str(read), pass_fds=(read,))
    finally:
        os.close(read)
    assert done.returncode == 0, done.stderr
    assert agent_principal(ada) is not None
    assert _cli(ada, "lock").returncode == 0

    read, write = os.pipe()
    os.write(write, PASSPHRASE.encode())  # no newline: up to the end of the stream
    os.close(write)
    try:
        done = _cli(ada, "unlock", pass_fds=(read,), QEMLFLOW_PASSPHRASE_FD=str(read))
    finally:
        os.close(read)
    assert done.returncode == 0, done.stderr
    assert agent_principal(ada) is not None


def test_passphrase_fd_wins_over_the_environment(ada: Path) -> None:
    read, write = os.pipe()
    os.write(write, PASSPHRASE.encode() + b"\n")
    os.close(write)
    try:
        done = _cli(
            ada, "unlock", "--passphrase-fd", str(read), pass_fds=(read,),
            QEMLFLOW_PASSPHRASE="not the passphrase",
        )  # fmt: skip
    finally:
        os.close(read)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_agent_keeps_no_passphrase_in_its_environment(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    status = agent_status(ada)
    assert status is not None
    try:
        environment = Path(f"/proc/{status.pid}/environ").read_bytes()
    except PermissionError:  # non-dumpable: hidden even from its own user (but not root)
        assert os.getuid() != 0
    else:
        assert PASSPHRASE.encode() not in environment
        assert b"QEMLFLOW_IDENTITY_DIR" in environment  # the rest is kept


def test_wrong_passphrase_starts_no_agent(ada: Path) -> None:
    done = _cli(ada, "unlock", QEMLFLOW_PASSPHRASE="not the passphrase")
    assert done.returncode == 2
    assert "wrong passphrase" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not agent_socket_path(ada).exists()
    assert agent_principal(ada) is None


def test_no_passphrase_source_and_no_terminal_is_one_line(ada: Path) -> None:
    done = _cli(ada, "unlock")
    assert done.returncode == 2
    assert "QEMLFLOW_PASSPHRASE" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_agent_expires_after_its_ttl(ada: Path) -> None:
    assert _cli(ada, "unlock", "--ttl", "6s", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    principal = agent_principal(ada)
    status = agent_status(ada)
    assert principal is not None and status is not None
    principal.sign(b"qemlflow.audit-event/1\nwithin the ttl")
    assert _gone(status.pid, within=30), "the agent outlived its time to live"
    assert agent_principal(ada) is None
    assert not agent_socket_path(ada).exists()
    with pytest.raises(AgentError, match="cannot sign"):
        principal.sign(b"qemlflow.audit-event/1\nafter the ttl")
    assert "locked" in _cli(ada, "status").stdout


def test_lock_stops_the_agent(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    status = agent_status(ada)
    assert status is not None
    locked = _cli(ada, "lock")
    assert locked.returncode == 0 and locked.stdout.strip() == "locked"
    assert agent_principal(ada) is None
    assert _gone(status.pid, within=10)
    assert "not unlocked" in _cli(ada, "lock").stdout


def test_unlock_again_replaces_the_agent(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    first = agent_status(ada)
    assert _cli(ada, "unlock", "--ttl", "1h", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    second = agent_status(ada)
    assert first is not None and second is not None and first.pid != second.pid
    assert _gone(first.pid, within=10)
    assert agent_principal(ada) is not None


def test_a_killed_agent_leaves_a_stale_socket_that_gives_none(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    status = agent_status(ada)
    assert status is not None
    os.kill(status.pid, signal.SIGKILL)
    assert _gone(status.pid, within=10)
    assert agent_socket_path(ada).exists()  # nobody removed it
    # Nobody listens on a stale socket: a connection is refused at once (no timeout to wait
    # for), and the client reads that as "no agent".
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(str(agent_socket_path(ada)))
    probe.close()
    assert agent_principal(ada) is None
    assert "locked" in _cli(ada, "status").stdout
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    assert agent_principal(ada) is not None


def test_an_agent_that_never_answers_costs_seconds_not_a_hang(ada: Path) -> None:
    path = agent_socket_path(ada)
    path.parent.mkdir(mode=0o700)
    old = os.umask(0o177)
    try:
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(str(path))
    finally:
        os.umask(old)
    silent.listen(4)  # connections queue up; nobody ever reads or answers them
    try:
        # The client gives up after its own socket timeout: the call returns None. Run in a
        # thread so that a hang fails the test (a guard far above the timeout) instead of
        # blocking the suite.
        outcome: list[object] = []
        caller = threading.Thread(target=lambda: outcome.append(agent_principal(ada)))
        caller.start()
        caller.join(timeout=60)
        assert not caller.is_alive(), "agent_principal hung on an agent that never answers"
        assert outcome == [None]
        # lock waits longer, and leaves the socket of an agent that is only slow in place
        assert stop_agent(ada) is False and path.exists()
    finally:
        silent.close()
    assert stop_agent(ada) is False and not path.exists()  # now stale: removed


def test_an_agent_with_another_key_is_ignored(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    # The identity is replaced behind the agent's back (not through the CLI, which locks).
    init_identity("Ada Lovelace", "ada@lab.org", PASSPHRASE, directory=ada, overwrite=True)
    assert agent_status(ada) is not None
    assert agent_principal(ada) is None
    assert "locked" in _cli(ada, "status").stdout


def test_init_force_locks_the_agent_of_the_old_key(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    status = agent_status(ada)
    assert status is not None
    done = _cli(
        ada,
        "init",
        "--name",
        "Ada Lovelace",
        "--email",
        "ada@lab.org",
        "--force",
        QEMLFLOW_PASSPHRASE=PASSPHRASE,
    )
    assert done.returncode == 0, done.stderr
    assert _gone(status.pid, within=10)


@pytest.mark.parametrize("target", ["socket", "folder"])
def test_a_socket_others_may_open_is_refused(ada: Path, target: str) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    path = agent_socket_path(ada)
    (path if target == "socket" else path.parent).chmod(0o777 if target == "socket" else 0o755)
    with pytest.raises(AgentError, match="may be opened by others"):
        agent_principal(ada)
    status = _cli(ada, "status")
    assert status.returncode == 2 and "may be opened by others" in status.stderr


def test_a_folder_others_may_write_to_is_refused(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    ada.chmod(0o777)  # another user could swap the agent's folder for their own
    with pytest.raises(AgentError, match="may be written by others"):
        agent_principal(ada)
    ada.chmod(0o1777)  # sticky, as /tmp: only the owner may rename what is in it
    assert agent_principal(ada) is not None


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a file to another user")
def test_another_users_socket_is_refused(ada: Path) -> None:
    assert _cli(ada, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
    path = agent_socket_path(ada)
    os.chown(path, 65534, 65534, follow_symlinks=False)
    with pytest.raises(AgentError, match="belongs to another user"):
        agent_principal(ada)


def test_a_file_in_place_of_the_socket_is_refused(ada: Path) -> None:
    path = agent_socket_path(ada)
    path.parent.mkdir(mode=0o700)
    path.write_text("not a socket")
    path.chmod(0o600)
    with pytest.raises(AgentError, match="is not a socket"):
        agent_principal(ada)


def test_socket_path_for_a_deep_identity_folder_still_binds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    deep = tmp_path.joinpath(*(["a-rather-long-folder-name"] * 5))
    init_identity("Ada Lovelace", "ada@lab.org", PASSPHRASE, directory=deep)
    path = agent_socket_path(deep)
    assert len(os.fsencode(path)) <= 100 and not path.is_relative_to(deep)
    try:
        assert _cli(deep, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE).returncode == 0
        assert agent_principal(deep) is not None
    finally:
        stop_agent(deep)


def test_xdg_runtime_dir_holds_the_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="run-"))  # short, as /run/user/UID is
    folder = tmp_path / "id"
    init_identity("Ada Lovelace", "ada@lab.org", PASSPHRASE, directory=folder)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    path = agent_socket_path(folder)
    assert path.is_relative_to(runtime)
    try:
        done = _cli(folder, "unlock", QEMLFLOW_PASSPHRASE=PASSPHRASE, XDG_RUNTIME_DIR=str(runtime))
        assert done.returncode == 0, done.stderr
        assert path.exists() and agent_principal(folder) is not None
    finally:
        stop_agent(folder)
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.parametrize("ttl", ["0", "25h", "2d", "soon", "8h-"])
def test_bad_ttl_is_refused(ada: Path, ttl: str) -> None:
    done = _cli(ada, "unlock", "--ttl", ttl, QEMLFLOW_PASSPHRASE=PASSPHRASE)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not agent_socket_path(ada).exists()


def test_parse_ttl() -> None:
    assert parse_ttl("8h") == 8 * 3600
    assert parse_ttl("1h 30m") == 5400
    assert parse_ttl("45s") == 45
    assert parse_ttl("24h") == 24 * 3600


def test_no_identity_gives_no_principal(tmp_path: Path) -> None:
    assert agent_principal(tmp_path / "nobody") is None


def test_the_agent_runs_this_package_whatever_the_path(
    ada: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)  # as from an installed command
    status = start_agent(load_signing_key(PASSPHRASE, ada), ada, 30)
    assert status.fingerprint == load_identity(ada).fingerprint
    principal = agent_principal(ada)
    message = b"qemlflow.audit-checkpoint/1\n{}"
    assert principal is not None and principal.verify(message, principal.sign(message))
