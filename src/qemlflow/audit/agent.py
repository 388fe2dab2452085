"""The unlock agent: a passphrase-unlocked signing key held in memory for a bounded time.

Like ``ssh-agent``: ``qemlflow identity unlock`` decrypts the identity's key once, and a
small background process (``python -m qemlflow.audit.agent``) keeps it in memory only, signs
on request over a Unix socket, and exits when its time to live (``--ttl``, default 8 h, at
most 24 h) runs out or ``qemlflow identity lock`` stops it. Commands run meanwhile act as
the identity (auth ``"passphrase"``) without asking for the passphrase again.

Why it can be trusted as much as the passphrase:

- the key reaches the agent through a pipe, never a file, an argument or the environment;
  the agent makes itself non-dumpable (no core file, no ``ptrace`` by other processes);
- the socket is created with mode 0600 inside a folder of mode 0700, and a client refuses a
  socket or folder that another user owns or that others may open (a planted socket would
  otherwise collect what this user signs); on Linux the agent also refuses a peer whose
  user id is not its own (``SO_PEERCRED``);
- every signature the agent returns is checked against the identity's public key, and an
  agent holding another key (after ``identity rotate`` or ``init --force``) is ignored;
- unlike ssh-agent, it signs only what routine work needs: audit events and checkpoints
  (messages that begin with their domain tags, :data:`AGENT_DOMAINS`). An approval, a key
  rotation's proof or any other message is refused, so a process of this user cannot use
  the agent to approve in the holder's name: ``qemlflow sign`` asks for the passphrase.

A missing, stale or expired agent gives ``None`` quickly (short socket timeouts), never a
hang. The socket lives in ``$XDG_RUNTIME_DIR/qemlflow/agent-<hash>/`` when that is set, else
in ``<identity folder>/agent/``, or under the temporary folder when that path is too long
for a Unix socket.

Examples
--------
>>> parse_ttl("8h"), parse_ttl("1h30m"), parse_ttl("90")
(28800.0, 5400.0, 90.0)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from qemlflow.audit.errors import IdentityError

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal

__all__ = [
    "AGENT_DOMAINS",
    "DEFAULT_TTL",
    "MAX_TTL",
    "AgentError",
    "AgentStatus",
    "agent_principal",
    "agent_socket_path",
    "agent_status",
    "parse_ttl",
    "start_agent",
    "stop_agent",
]

AGENT_DOMAINS: Final = (b"qemlflow.audit-event/", b"qemlflow.audit-checkpoint/")
"""The domain tags of the only messages the agent signs (an audit event's, a checkpoint's:
:data:`qemlflow.store.audit.EVENT_SIGNATURE_DOMAIN`, :data:`qemlflow.store.checkpoints.
CHECKPOINT_DOMAIN`); written out so that the agent need not import the store."""
DEFAULT_TTL: Final = "8h"
MAX_TTL: Final = 24 * 3600.0  # a bounded session: a day's work at most
SOCKET_NAME: Final = "agent.sock"
_CLIENT_TIMEOUT: Final = 2.0  # seconds: a wedged agent costs a command this much, not a hang
_LOCK_TIMEOUT: Final = 10.0  # `lock` may wait longer: a busy machine must not leave the key
_SERVE_TIMEOUT: Final = 5.0  # seconds a connection may take to send its request
_START_TIMEOUT: Final = 15.0  # seconds the agent may take to import and bind its socket
_MAX_REQUEST: Final = 16 * 1024 * 1024  # an audit event's canonical form, with room to spare
_SUN_PATH_MAX: Final = 100  # sockaddr_un holds 108 bytes (104 on macOS), NUL included
_TTL_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms]?)")
_TTL_UNITS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
_UNLOCK_FIX: Final = "run `qemlflow identity unlock` again"


class AgentError(IdentityError):
    """The unlock agent cannot be started, reached safely, or used as asked.

    Examples
    --------
    >>> str(AgentError("the agent socket /x is open to others", "lock and unlock again"))
    'the agent socket /x is open to others; lock and unlock again'
    """


@dataclass(frozen=True)
class AgentStatus:
    """What a running agent holds: whose key, until when, and where it listens."""

    fingerprint: str
    public_key: str
    expires_at: str
    remaining_seconds: float
    pid: int
    socket: Path


def parse_ttl(text: str) -> float:
    """Return a time to live in seconds from ``"8h"``, ``"30m"``, ``"1h30m"``, ``"1d"`` or ``"90"``.

    Raises
    ------
    AgentError
        The text is not a duration, is zero, or exceeds :data:`MAX_TTL` (24 h).

    Examples
    --------
    >>> parse_ttl("2d")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qemlflow.audit.agent.AgentError: a time to live of '2d' is over the maximum of 24 h; ...
    """
    compact = "".join(text.split()).lower()
    parts = list(_TTL_PART.finditer(compact))
    if not compact or "".join(p.group(0) for p in parts) != compact:
        raise AgentError(
            f"{text!r} is not a duration", "give one like 8h, 30m, 1h30m or 600 (seconds)"
        )
    seconds = sum(float(p.group(1)) * _TTL_UNITS[p.group(2)] for p in parts)
    if seconds <= 0:
        raise AgentError(f"a time to live of {text!r} is not positive", "give one like 8h")
    if seconds > MAX_TTL:
        raise AgentError(
            f"a time to live of {text!r} is over the maximum of 24 h",
            "unlock for at most 24h; unattended jobs use a service identity",
        )
    return seconds


def agent_socket_path(identity_dir: str | os.PathLike[str]) -> Path:
    """Return where the agent of the identity in ``identity_dir`` listens.

    Examples
    --------
    >>> agent_socket_path("/home/ada/.config/qemlflow").name
    'agent.sock'
    """
    folder = Path(identity_dir).expanduser().absolute()
    tag = hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = []
    if runtime and Path(runtime).is_dir():
        candidates.append(Path(runtime) / "qemlflow" / f"agent-{tag}")
    candidates.append(folder / "agent")
    for candidate in candidates:
        path = candidate / SOCKET_NAME
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            return path
    # A deep identity folder: a path a Unix socket can bind, still one per identity folder.
    return Path(tempfile.gettempdir()) / f"qemlflow-{os.getuid()}" / f"agent-{tag}" / SOCKET_NAME


def _check_private(path: Path, kind: str, expect_socket: bool) -> None:
    """Refuse a file that another user owns or that others may open (a planted agent)."""
    info = path.lstat()
    is_right_kind = stat.S_ISSOCK(info.st_mode) if expect_socket else stat.S_ISDIR(info.st_mode)
    fix = f"check who made it, remove it, then {_UNLOCK_FIX}"
    if not is_right_kind:
        raise AgentError(
            f"the unlock agent's {kind} {path} is not a {'socket' if expect_socket else 'folder'}",
            fix,
        )
    if info.st_uid != os.getuid():
        raise AgentError(
            f"the unlock agent's {kind} {path} belongs to another user (uid {info.st_uid})", fix
        )
    if info.st_mode & 0o077:
        raise AgentError(
            f"the unlock agent's {kind} {path} may be opened by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o})",
            fix,
        )


def _check_parent(folder: Path) -> None:
    """Refuse a parent folder that another user may rename things in (``/tmp/qemlflow-UID``
    made by someone else): they could swap the agent's folder for their own."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.getuid(), 0):
        raise AgentError(
            f"{folder}, which holds the unlock agent's folder, belongs to another user",
            f"check who made it, remove it, then {_UNLOCK_FIX}",
        )
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise AgentError(
            f"{folder}, which holds the unlock agent's folder, may be written by others "
            f"(mode {stat.S_IMODE(info.st_mode):04o})",
            f"chmod go-w {folder}, then {_UNLOCK_FIX}",
        )


def _request(
    path: Path, payload: dict[str, Any], timeout: float = _CLIENT_TIMEOUT
) -> dict[str, Any] | None:
    """Send one request to the agent at ``path``; ``None`` when no agent answers."""
    try:
        _check_parent(path.parent.parent)
        _check_private(path.parent, "folder", expect_socket=False)
        _check_private(path, "socket", expect_socket=True)
    except FileNotFoundError:
        return None
    data = json.dumps(payload).encode("utf-8") + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(os.fspath(path))
            conn.sendall(data)
            reply = _read_line(conn, _MAX_REQUEST)
    except OSError:  # refused (stale socket), reset, timed out: no agent to ask
        return None
    try:
        answer = json.loads(reply)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return answer if isinstance(answer, dict) else None


def _read_line(conn: socket.socket, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > limit:
            break
    return b"".join(chunks)


def agent_status(identity_dir: str | os.PathLike[str]) -> AgentStatus | None:
    """Return what the agent of ``identity_dir`` holds, or ``None`` when none runs.

    Raises
    ------
    AgentError
        The agent's socket or folder belongs to another user or is open to others.
    """
    path = agent_socket_path(identity_dir)
    answer = _request(path, {"op": "status"})
    if not answer or not answer.get("ok"):
        return None
    try:
        return AgentStatus(
            fingerprint=str(answer["fingerprint"]),
            public_key=str(answer["public_key"]),
            expires_at=str(answer["expires_at"]),
            remaining_seconds=float(answer["remaining_seconds"]),
            pid=int(answer["pid"]),
            socket=path,
        )
    except (KeyError, TypeError, ValueError):
        return None


def stop_agent(identity_dir: str | os.PathLike[str]) -> bool:
    """Stop the agent of ``identity_dir`` (its key is gone); whether one was running.

    A stale socket (nothing listens on it) is removed; a socket whose agent is merely slow
    to answer is not, so that ``lock`` can still reach that agent.
    """
    path = agent_socket_path(identity_dir)
    answer = _request(path, {"op": "lock"}, timeout=_LOCK_TIMEOUT)
    if answer is None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(_CLIENT_TIMEOUT)
            try:
                probe.connect(os.fspath(path))
            except ConnectionRefusedError:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
        return False
    return bool(answer.get("ok"))


def start_agent(
    key: Ed25519PrivateKey, identity_dir: str | os.PathLike[str], ttl_seconds: float
) -> AgentStatus:
    """Start an agent that holds ``key`` for ``ttl_seconds``, replacing a running one.

    Raises
    ------
    AgentError
        The time to live is out of range, or the agent did not start.
    """
    if not 0 < ttl_seconds <= MAX_TTL:
        raise AgentError(f"a time to live of {ttl_seconds} s is out of range", "give 1s to 24h")
    stop_agent(identity_dir)
    path = agent_socket_path(identity_dir)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    hand_over = {"key": base64.b64encode(raw).decode("ascii"), "ttl": ttl_seconds}
    process = subprocess.Popen(
        [sys.executable, "-m", "qemlflow.audit.agent", os.fspath(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # outlives the command and the terminal's hang-up
        close_fds=True,
        env=_agent_environment(),
    )
    try:
        ready, errors = _hand_over(process, json.dumps(hand_over).encode("utf-8") + b"\n")
    finally:
        del hand_over, raw
    if not ready.startswith(b"ready"):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        why = " ".join(errors.decode("utf-8", "replace").split())[-300:] or "no reason given"
        raise AgentError(f"the unlock agent did not start ({why})", f"check {path.parent}")
    status = agent_status(identity_dir)
    if status is None:
        raise AgentError(f"the unlock agent does not answer on {path}", f"check {path.parent}")
    return status


def _agent_environment() -> dict[str, str]:
    """This environment without the passphrases: the agent lives for hours, and needs none."""
    secret = ("QEMLFLOW_PASSPHRASE", "QEMLFLOW_NEW_PASSPHRASE")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(secret)}
    # The agent runs this very package, wherever this process found it.
    package_root = os.fspath(Path(__file__).resolve().parents[2])
    environment["PYTHONPATH"] = os.pathsep.join(
        [package_root, *filter(None, [environment.get("PYTHONPATH")])]
    )
    return environment


def _hand_over(process: subprocess.Popen[bytes], secret: bytes) -> tuple[bytes, bytes]:
    """Pipe the key to a starting agent and wait for its ``ready`` line (or its failure)."""
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    try:
        process.stdin.write(secret)
        process.stdin.close()
    except BrokenPipeError:
        pass
    box: dict[str, bytes] = {}

    def read() -> None:
        assert process.stdout is not None
        box["line"] = process.stdout.readline()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(_START_TIMEOUT)
    line = box.get("line", b"")
    errors = b""
    if not line.startswith(b"ready"):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        errors = process.stderr.read()
    process.stdout.close()
    process.stderr.close()
    return line, errors


class _AgentSigner:
    """Signs by asking the agent; checks every signature against the identity's key."""

    def __init__(self, path: Path, public_key: str) -> None:
        self.path = path
        self.public_key = public_key

    def __call__(self, message: bytes) -> bytes:
        from qemlflow.audit.principal import verify_signature

        answer = _request(
            self.path, {"op": "sign", "message": base64.b64encode(message).decode("ascii")}
        )
        if answer is None or not answer.get("ok"):
            why = (answer or {}).get("error", "it is not running")
            raise AgentError(f"the unlock agent cannot sign ({why})", _UNLOCK_FIX)
        try:
            signature = base64.b64decode(str(answer.get("signature")), validate=True)
        except (binascii.Error, ValueError):
            signature = b""
        if not verify_signature(self.public_key, message, signature):
            raise AgentError(
                f"the unlock agent at {self.path} returned a signature that is not by this "
                "identity's key",
                f"run `qemlflow identity lock`, then {_UNLOCK_FIX}",
            )
        return signature


def agent_principal(identity_dir: str | os.PathLike[str]) -> Principal | None:
    """Return the identity in ``identity_dir`` as unlocked by its agent, or ``None``.

    ``None`` when there is no identity, no agent, a stale socket, an expired agent, or an
    agent that holds another key than ``identity.json`` names. The principal's auth is
    ``"passphrase"``; each signature is asked of the agent (one short socket round trip)
    and checked against the identity's public key.

    Raises
    ------
    AgentError
        The agent's socket or folder belongs to another user or is open to others.
    """
    from qemlflow.audit.identity import load_identity
    from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal

    try:
        identity = load_identity(identity_dir)
    except IdentityError:
        return None
    status = agent_status(identity_dir)
    if status is None or status.remaining_seconds <= 0:
        return None
    if status.fingerprint != identity.fingerprint or status.public_key != identity.public_key:
        return None  # an agent for a key this identity no longer has
    return Principal(
        name=identity.name,
        email=identity.email,
        public_key=identity.public_key,
        fingerprint=identity.fingerprint,
        auth=AUTH_PASSPHRASE,
        signer=_AgentSigner(status.socket, identity.public_key),
    )


# --- the agent process ---------------------------------------------------------------------


def _harden() -> None:
    """No core file and no ``ptrace`` by other processes of this user: the key stays here."""
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            pr_set_dumpable = 4
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)


def _private_folder(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    _check_parent(folder.parent)
    _check_private(folder, "folder", expect_socket=False)


def _peer_is_this_user(conn: socket.socket) -> bool:
    if not hasattr(socket, "SO_PEERCRED"):  # not Linux: the 0700 folder alone keeps others out
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


class _Agent:
    """The serving side: one key, one socket, one deadline."""

    def __init__(self, key: Ed25519PrivateKey, path: Path, ttl: float) -> None:
        self.key = key
        self.path = path
        public: Ed25519PublicKey = key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode("ascii")
        self.fingerprint = hashlib.sha256(raw).hexdigest()
        # Both clocks: the monotonic one ignores clock changes, the wall clock keeps counting
        # while the machine sleeps (the monotonic clock does not, on Linux).
        self.deadline = time.monotonic() + ttl
        self.expires_wall = time.time() + ttl
        self.stopping = threading.Event()
        self.inode = -1
        self.server: socket.socket | None = None

    def remaining(self) -> float:
        return min(self.deadline - time.monotonic(), self.expires_wall - time.time())

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.remaining() <= 0:
            self.stop()
            return {"ok": False, "error": "the unlock has expired"}
        op = request.get("op")
        if op == "status":
            expires = datetime.fromtimestamp(self.expires_wall, UTC)
            return {
                "ok": True,
                "fingerprint": self.fingerprint,
                "public_key": self.public_key,
                "expires_at": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "remaining_seconds": self.remaining(),
                "pid": os.getpid(),
            }
        if op == "sign":
            try:
                message = base64.b64decode(str(request.get("message")), validate=True)
            except (binascii.Error, ValueError):
                return {"ok": False, "error": "the message is not base64"}
            if not message.startswith(AGENT_DOMAINS):
                return {
                    "ok": False,
                    "error": "it signs only audit events and checkpoints (approvals need "
                    "the passphrase)",
                }
            signature = self.key.sign(message)
            return {"ok": True, "signature": base64.b64encode(signature).decode("ascii")}
        if op == "lock":
            self.stop()
            return {"ok": True}
        return {"ok": False, "error": f"unknown request {op!r}"}

    def stop(self) -> None:
        """Stop now: no client can connect once the socket is gone."""
        self.stopping.set()
        self.cleanup()
        if self.server is not None:  # wakes the accept() of the serving loop at once
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_RDWR)

    def serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(_SERVE_TIMEOUT)
                if not _peer_is_this_user(conn):
                    return
                line = _read_line(conn, _MAX_REQUEST)
                try:
                    request = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError):
                    request = None
                reply = (
                    self.answer(request)
                    if isinstance(request, dict)
                    else {"ok": False, "error": "the request is not a JSON object"}
                )
                conn.sendall(json.dumps(reply).encode("utf-8") + b"\n")
            except OSError:
                return

    def bind(self) -> socket.socket:
        _private_folder(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()  # stale: start_agent stopped the agent that made it
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: there is no moment it is open to others
        try:
            server.bind(os.fspath(self.path))
        finally:
            os.umask(old_umask)
        self.path.chmod(0o600)
        self.inode = self.path.lstat().st_ino
        server.listen(16)
        self.server = server
        return server

    def serve(self, server: socket.socket) -> None:
        try:
            while not self.stopping.is_set() and self.remaining() > 0:
                server.settimeout(max(0.05, min(1.0, self.remaining())))
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self.stopping.is_set():
                        break
                    raise
                threading.Thread(target=self.serve_one, args=(conn,), daemon=True).start()
        finally:
            server.close()
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the socket, unless another agent has replaced it meanwhile."""
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self.inode:
                self.path.unlink()


def _serve_main(argv: list[str]) -> int:
    """Entry point of ``python -m qemlflow.audit.agent SOCKET``: key and TTL come on stdin."""
    _harden()
    if len(argv) != 1:
        sys.stderr.write("usage: python -m qemlflow.audit.agent SOCKET (key on stdin)\n")
        return 2
    try:
        hand_over = json.loads(sys.stdin.buffer.readline())
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(hand_over["key"]))
        ttl = float(hand_over["ttl"])
        del hand_over
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        sys.stderr.write(f"no key handed over: {type(exc).__name__}\n")
        return 2
    agent = _Agent(key, Path(argv[0]), ttl)
    try:
        server = agent.bind()
    except (OSError, AgentError) as exc:
        sys.stderr.write(f"cannot listen on {argv[0]}: {exc}\n")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    # Nothing more to say: detach from the pipes of the command that started us.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    os.chdir("/")
    agent.serve(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve_main(sys.argv[1:]))
