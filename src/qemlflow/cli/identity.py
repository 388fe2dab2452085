"""``qemlflow identity`` and ``qemlflow sign``: who you are, and what you approve."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from qemlflow.cli.options import StoreOption, open_store
from qemlflow.cli.render import console

__all__ = ["register"]

_PASSPHRASE_ENV = "QEMLFLOW_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret


def _passphrase(confirm: bool) -> str:
    """The passphrase from $QEMLFLOW_PASSPHRASE (for automation) or a hidden prompt."""
    from_env = os.environ.get(_PASSPHRASE_ENV)
    if from_env:
        return from_env
    if not sys.stdin.isatty():  # a prompt would read the passphrase from a pipe, or fail
        from qemlflow.errors import QeMLflowError

        raise QeMLflowError(
            f"a passphrase is needed, and ${_PASSPHRASE_ENV} is not set nor is there a "
            "terminal to ask on",
            f"set {_PASSPHRASE_ENV}, or run the command in a terminal",
        )
    return str(typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm))


def register(app: typer.Typer) -> None:
    """Add ``identity`` and ``sign`` to the CLI."""
    group = typer.Typer(help="Your signing identity (an Ed25519 key).")
    app.add_typer(group, name="identity")

    @group.command("init")
    def init_command(
        name: Annotated[str, typer.Option("--name", help="Your full name.")],
        email: Annotated[str, typer.Option("--email", help="Your e-mail address.")],
        force: Annotated[
            bool, typer.Option("--force", help="Replace an existing identity.")
        ] = False,
    ) -> None:
        """Create your signing key, protected by a passphrase ($QEMLFLOW_PASSPHRASE or a prompt)."""
        from qemlflow.audit.identity import init_identity

        identity = init_identity(name, email, _passphrase(confirm=True), overwrite=force)
        console.print(
            f"identity [bold]{identity.display}[/] created; key fingerprint {identity.fingerprint}"
        )

    @group.command("show")
    def show_command() -> None:
        """Show the configured identity (its public part)."""
        from qemlflow.audit.identity import load_identity

        identity = load_identity()
        console.print(f"{identity.display}\nfingerprint {identity.fingerprint}")

    @app.command("sign")
    def sign_command(
        obj: Annotated[str, typer.Argument(help="A run id, dataset version, or model/artifact.")],
        meaning: Annotated[str, typer.Option("--meaning", help="approved, reviewed or authored.")],
        reason: Annotated[str, typer.Option("--reason", help="Why you sign.")],
        store: StoreOption = None,
    ) -> None:
        """Electronically sign an object: signer, time, meaning and its digest are recorded."""
        from qemlflow.audit.signatures import sign

        with open_store(store) as opened:
            event = sign(
                opened,
                obj,
                meaning=meaning,  # type: ignore[arg-type]
                reason=reason,
                passphrase=_passphrase(confirm=False),
            )
        console.print(
            f"signed ({meaning}) by {event.actor}: audit event {event.seq}, "
            f"object digest {event.objects.get('digest', '')[:16]}"
        )
