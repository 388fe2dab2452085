"""``qemlflow identity`` and ``qemlflow sign``: who you are, who may do what, what you approve."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from qemlflow.cli.options import JsonOption, StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]

# The names of variables, not secrets.
PASSPHRASE_ENV = "QEMLFLOW_PASSPHRASE"  # noqa: S105
PASSPHRASE_FD_ENV = "QEMLFLOW_PASSPHRASE_FD"  # noqa: S105
NEW_PASSPHRASE_ENV = "QEMLFLOW_NEW_PASSPHRASE"  # noqa: S105
NEW_PASSPHRASE_FD_ENV = "QEMLFLOW_NEW_PASSPHRASE_FD"  # noqa: S105
_ROLES_HELP = "viewer, contributor, approver or admin"

PassphraseFdOption = Annotated[
    int | None,
    typer.Option(
        "--passphrase-fd",
        help=f"Read the passphrase from this file descriptor (to its end, without the final "
        f"newline), e.g. `--passphrase-fd 3 3<secret`; else ${PASSPHRASE_ENV}, "
        f"${PASSPHRASE_FD_ENV}, or a prompt.",
        show_default=False,
    ),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (recorded in the audit trail).")]


def _env_fd(name: str) -> int | None:
    from qemlflow.errors import QeMLflowError

    text = os.environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise QeMLflowError(f"${name} is {text!r}, not a file descriptor number", f"unset {name}")
    return int(text)


def _no_terminal(env: str, fd_env: str) -> Exception:
    from qemlflow.errors import QeMLflowError

    return QeMLflowError(
        f"a passphrase is needed, and neither --passphrase-fd, ${fd_env} nor ${env} is set, "
        "nor is there a terminal to ask on",
        f"set {env}, pass a descriptor with --passphrase-fd, or run in a terminal",
    )


def _passphrase(confirm: bool, fd: int | None = None) -> str:
    """Your passphrase: ``--passphrase-fd``, ``$QEMLFLOW_PASSPHRASE``, ``$..._FD`` or a prompt.

    ``--passphrase-fd N`` is ``$QEMLFLOW_PASSPHRASE_FD=N`` for this command (it wins over
    ``$QEMLFLOW_PASSPHRASE``), so the store, which unlocks the acting identity from the same
    variables, reads the descriptor's one passphrase from the same cache.
    """
    from qemlflow.audit.unlock import environment_passphrase

    if fd is not None:
        os.environ.pop(PASSPHRASE_ENV, None)
        os.environ[PASSPHRASE_FD_ENV] = str(fd)
    passphrase = environment_passphrase()
    if passphrase:
        return passphrase
    if not sys.stdin.isatty():  # a prompt would read the passphrase from a pipe, or fail
        raise _no_terminal(PASSPHRASE_ENV, PASSPHRASE_FD_ENV)
    return str(typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm))


def _new_passphrase(fd: int | None) -> str:
    """The new key's passphrase (``rotate``): ``--new-passphrase-fd``, ``$..._NEW_...``, prompt."""
    from qemlflow.audit.identity import read_passphrase_fd

    fd = fd if fd is not None else _env_fd(NEW_PASSPHRASE_FD_ENV)
    if fd is not None:
        return read_passphrase_fd(fd)
    from_env = os.environ.get(NEW_PASSPHRASE_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        raise _no_terminal(NEW_PASSPHRASE_ENV, NEW_PASSPHRASE_FD_ENV)
    return str(typer.prompt("New passphrase", hide_input=True, confirmation_prompt=True))


def _remaining(seconds: float) -> str:
    """``8h00m``, ``12m``, ``40s``: how long an unlock has left."""
    total = max(0, int(seconds))
    hours, minutes = divmod(total // 60, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else f"{total}s"


def _record_dict(record: Any) -> dict[str, Any]:
    return record.to_dict() if hasattr(record, "to_dict") else asdict(record)


def _service_email(name: str) -> str:
    local = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "service"
    return f"{local}@service.qemlflow"


def register(app: typer.Typer) -> None:
    """Add ``identity`` and ``sign`` to the CLI."""
    group = typer.Typer(
        help="Identities: your passphrase-protected key, its unlock agent, and (admins) "
        "who is enrolled in a store with which role."
    )
    app.add_typer(group, name="identity")
    _register_local(group)
    _register_agent(group)
    _register_admin(group)
    _register_sign(app)


def _register_local(group: typer.Typer) -> None:
    @group.command("init")
    def init_command(
        name: Annotated[str, typer.Option("--name", help="Your full name.")],
        email: Annotated[str, typer.Option("--email", help="Your e-mail address.")],
        force: Annotated[
            bool, typer.Option("--force", help="Replace an existing identity (its key is lost).")
        ] = False,
        passphrase_fd: PassphraseFdOption = None,
    ) -> None:
        """Create your Ed25519 key, protected by a passphrase; an admin then enrolls it.

        Names and e-mails are NFKC-normalized; look-alikes (a Cyrillic letter, a trailing
        dot) are refused.
        """
        from qemlflow.audit.agent import stop_agent
        from qemlflow.audit.identity import identity_dir, init_identity

        identity = init_identity(
            name, email, _passphrase(confirm=True, fd=passphrase_fd), overwrite=force
        )
        stop_agent(identity_dir())  # an agent of a replaced key must not act for the new one
        path = identity_dir() / "identity.json"
        console.print(
            f"identity [bold]{escape(identity.display)}[/] created; key fingerprint "
            f"{identity.fingerprint}\nsend {path} to a store admin, who runs "
            f"`qemlflow identity enroll identity.json --role contributor`",
            highlight=False,
        )

    @group.command("show")
    def show_command(as_json: JsonOption = False) -> None:
        """Show your identity's public part (--json: the file an admin enrolls)."""
        from qemlflow.audit.identity import load_identity

        identity = load_identity()
        if as_json:
            typer.echo(json.dumps(identity.to_dict(), indent=2, sort_keys=True))
            return
        console.print(f"{identity.display}\nfingerprint {identity.fingerprint}", highlight=False)


def _register_agent(group: typer.Typer) -> None:
    @group.command("unlock")
    def unlock_command(
        ttl: Annotated[
            str, typer.Option("--ttl", help="How long it stays unlocked (e.g. 8h, 30m; max 24h).")
        ] = "8h",
        passphrase_fd: PassphraseFdOption = None,
    ) -> None:
        """Unlock your key for a while (like ssh-agent): commands then sign without asking.

        The key is held in memory by a background agent listening on a private Unix socket;
        it refuses to sign after --ttl and exits. `qemlflow identity lock` stops it early.
        """
        from qemlflow.audit.agent import parse_ttl, start_agent
        from qemlflow.audit.identity import identity_dir, load_identity, load_signing_key

        seconds = parse_ttl(ttl)
        identity = load_identity()
        key = load_signing_key(_passphrase(confirm=False, fd=passphrase_fd))
        status = start_agent(key, identity_dir(), seconds)
        console.print(
            f"unlocked [bold]{escape(identity.display)}[/] until {status.expires_at} "
            f"({_remaining(status.remaining_seconds)}); `qemlflow identity lock` ends it",
            highlight=False,
        )

    @group.command("lock")
    def lock_command() -> None:
        """Lock your key now: stop its unlock agent, which forgets the key."""
        from qemlflow.audit.agent import stop_agent
        from qemlflow.audit.identity import identity_dir

        stopped = stop_agent(identity_dir())
        console.print("locked" if stopped else "not unlocked (nothing to lock)")

    @group.command("status")
    def status_command(as_json: JsonOption = False) -> None:
        """Say whether your key is unlocked, and until when."""
        from qemlflow.audit.agent import agent_status
        from qemlflow.audit.identity import identity_dir, load_identity

        identity = load_identity()
        status = agent_status(identity_dir())
        current = status is not None and status.fingerprint == identity.fingerprint
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "identity": identity.display,
                        "fingerprint": identity.fingerprint,
                        "unlocked": current,
                        "expires_at": status.expires_at if status and current else None,
                        "socket": str(status.socket) if status and current else None,
                    },
                    indent=2,
                )
            )
        elif status is not None and current:
            console.print(
                f"{escape(identity.display)}: unlocked until {status.expires_at} "
                f"({_remaining(status.remaining_seconds)} left)",
                highlight=False,
            )
        else:
            console.print(f"{escape(identity.display)}: locked", highlight=False)


def _register_admin(group: typer.Typer) -> None:
    @group.command("enroll")
    def enroll_command(
        file: Annotated[
            Path, typer.Argument(help="The person's identity.json (`identity show --json`).")
        ],
        role: Annotated[str, typer.Option("--role", help=f"Their role: {_ROLES_HELP}.")],
        reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
        store: StoreOption = None,
    ) -> None:
        """(admin) Enroll a person's passphrase-protected key in the store, with a role."""
        from qemlflow.audit.identity import read_identity_file
        from qemlflow.audit.principal import AUTH_PASSPHRASE

        identity = read_identity_file(file)
        with open_store(store) as opened:
            record = opened.identities.enroll(
                name=identity.name,
                email=identity.email,
                public_key=identity.public_key,
                role=role,
                auth=AUTH_PASSPHRASE,
                kind="person",
                reason=reason,
            )
        console.print(
            f"enrolled {escape(record.name)} <{escape(record.email)}> as {record.role}; "
            f"key {record.fingerprint[:16]}",
            highlight=False,
        )

    @group.command("list")
    def list_command(store: StoreOption = None, as_json: JsonOption = False) -> None:
        """List the store's identities: role, kind, status, key."""
        with open_store(store) as opened:
            records = list(opened.identities.list())
        if as_json:
            typer.echo(json.dumps([_record_dict(r) for r in records], indent=2, default=str))
            return
        # Plain aligned lines, the name last: nothing an admin types is cut to fit a terminal.
        rows = [("email", "role", "auth", "status", "key", "name")]
        rows += [(r.email, r.role, r.auth, r.status, r.fingerprint[:16], r.name) for r in records]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            typer.echo("  ".join([*cells, row[5]]))

    @group.command("role")
    def role_command(
        email: Annotated[str, typer.Argument(help="The identity's e-mail.")],
        role: Annotated[str, typer.Argument(help=f"The new role: {_ROLES_HELP}.")],
        reason: ReasonOption,
        store: StoreOption = None,
    ) -> None:
        """(admin) Change an identity's role."""
        with open_store(store) as opened:
            record = opened.identities.set_role(email, role, reason)
        console.print(f"{escape(record.email)} is now {record.role}", highlight=False)

    @group.command("revoke")
    def revoke_command(
        email: Annotated[str, typer.Argument(help="The identity's e-mail (or key fingerprint).")],
        reason: ReasonOption,
        store: StoreOption = None,
    ) -> None:
        """(admin, or the holder) Revoke an identity: its key signs nothing from now on."""
        with open_store(store) as opened:
            record = opened.identities.revoke(email, reason)
        console.print(
            f"revoked {escape(record.email)} (key {record.fingerprint[:16]})", highlight=False
        )

    @group.command("service")
    def service_command(
        name: Annotated[str, typer.Argument(help="The service's name, e.g. ci-runner.")],
        key_out: Annotated[
            Path,
            typer.Option("--key-out", help="Write its private key here (new file, mode 0600)."),
        ],
        role: Annotated[
            str, typer.Option("--role", help=f"Its role: {_ROLES_HELP}.")
        ] = "contributor",
        email: Annotated[
            str | None,
            typer.Option("--email", help="Its e-mail (default NAME@service.qemlflow)."),
        ] = None,
        reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
        store: StoreOption = None,
    ) -> None:
        """(admin) Create an unattended service identity (CI) and write its key file.

        The key is NOT passphrase-protected: hand the file to the service as a secret and
        point $QEMLFLOW_SERVICE_KEY_FILE at it. It can do routine work, never approve.
        """
        from qemlflow.audit.emails import normalize_email, normalize_name
        from qemlflow.audit.principal import AUTH_SERVICE
        from qemlflow.audit.session import write_service_key

        name = normalize_name(name)
        email = normalize_email(email or _service_email(name))
        public_key = write_service_key(key_out)
        try:
            with open_store(store) as opened:
                record = opened.identities.enroll(
                    name=name,
                    email=email,
                    public_key=public_key,
                    role=role,
                    auth=AUTH_SERVICE,
                    kind="service",
                    reason=reason,
                )
        except BaseException:
            key_out.unlink(missing_ok=True)  # a key no store trusts is of no use to anyone
            raise
        console.print(
            f"service identity {escape(record.name)} <{escape(record.email)}> enrolled as "
            f"{record.role}; key {record.fingerprint[:16]} written to {key_out} (mode 0600)\n"
            f"give it to the service as a secret and set QEMLFLOW_SERVICE_KEY_FILE={key_out}",
            highlight=False,
        )

    @group.command("rotate")
    def rotate_command(
        reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
        passphrase_fd: PassphraseFdOption = None,
        new_passphrase_fd: Annotated[
            int | None,
            typer.Option(
                "--new-passphrase-fd",
                help=f"Read the new key's passphrase from this descriptor; else "
                f"${NEW_PASSPHRASE_FD_ENV}, ${NEW_PASSPHRASE_ENV}, or a prompt.",
                show_default=False,
            ),
        ] = None,
        store: StoreOption = None,
    ) -> None:
        """Replace your key with a new one, enrolled in the store by your old key.

        Your identity files change only once the store has accepted the new key; the old
        key stays valid for what it signed before.
        """
        _rotate(store, reason, passphrase_fd, new_passphrase_fd)


def _rotate(location: str | None, reason: str | None, fd: int | None, new_fd: int | None) -> None:
    import contextlib
    import shutil

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qemlflow.audit.agent import stop_agent
    from qemlflow.audit.identity import (
        IDENTITY_FILE,
        SIGNING_KEY_FILE,
        identity_dir,
        load_identity,
        load_signing_key,
        write_identity,
    )
    from qemlflow.audit.principal import AUTH_PASSPHRASE, Principal, public_key_b64
    from qemlflow.store.identities import rotation_message

    folder = identity_dir()
    identity = load_identity()
    old_key = load_signing_key(_passphrase(confirm=False, fd=fd))
    new_passphrase = _new_passphrase(new_fd)
    new_key = Ed25519PrivateKey.generate()
    # The new pair is on disk before the store hears of it: a key the store enrolls is
    # never one that was lost with a crash.
    staged = folder / f".rotate-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    new = write_identity(staged, identity.name, identity.email, new_key, new_passphrase)
    claim = rotation_message(identity.email, identity.fingerprint, new.fingerprint)
    proof = base64.b64encode(new_key.sign(claim)).decode("ascii")
    old = Principal.from_private_key(old_key, identity.name, identity.email, AUTH_PASSPHRASE)
    accepted = False
    try:
        with open_store(location, principal=old) as opened:
            try:
                opened.identities.rotate(public_key_b64(new_key.public_key()), proof, reason=reason)
                accepted = True
            finally:
                if not accepted:  # an error after the commit (a lost reply) still enrolled it
                    with contextlib.suppress(Exception):
                        accepted = opened.identities.by_fingerprint(new.fingerprint) is not None
    finally:
        # The files follow the store: the new pair once it is enrolled (the old key is then
        # revoked there), else the old pair stays and the staged one goes.
        if accepted:
            (staged / SIGNING_KEY_FILE).replace(folder / SIGNING_KEY_FILE)
            (staged / IDENTITY_FILE).replace(folder / IDENTITY_FILE)
        shutil.rmtree(staged, ignore_errors=True)
    stop_agent(folder)  # it holds the retired key
    console.print(
        f"key of {escape(identity.display)} rotated: {identity.fingerprint[:16]} -> "
        f"{new.fingerprint[:16]}; unlock again with `qemlflow identity unlock`",
        highlight=False,
    )


def _register_sign(app: typer.Typer) -> None:
    @app.command("sign")
    def sign_command(
        obj: Annotated[str, typer.Argument(help="A run id, dataset version, or model/artifact.")],
        meaning: Annotated[str, typer.Option("--meaning", help="approved, reviewed or authored.")],
        reason: Annotated[str, typer.Option("--reason", help="Why you sign.")],
        store: StoreOption = None,
        passphrase_fd: PassphraseFdOption = None,
    ) -> None:
        """Electronically sign an object: signer, time, meaning and its digest are recorded."""
        from qemlflow.audit.signatures import sign

        with open_store(store) as opened:
            event = sign(
                opened,
                obj,
                meaning=meaning,  # type: ignore[arg-type]
                reason=reason,
                passphrase=_passphrase(confirm=False, fd=passphrase_fd),
            )
        console.print(
            f"signed ({meaning}) by {event.actor}: audit event {event.seq}, "
            f"object digest {event.objects.get('digest', '')[:16]}"
        )
