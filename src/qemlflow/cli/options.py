"""Options shared by several commands: the provenance store, and how molecules are read."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from qemlflow.audit.principal import Principal
    from qemlflow.store import Store

__all__ = [
    "HeaderOption",
    "IdColumnOption",
    "JsonOption",
    "ModelArgument",
    "MoleculesArgument",
    "SmilesColumnOption",
    "StoreOption",
    "TrustFileOption",
    "open_store",
]

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store folder, or a postgresql:// URL for the metadata "
        "(default: $QEMLFLOW_HOME or ./.qemlflow).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# The model and the molecules of predict and screen.
ModelArgument = Annotated[
    str,
    typer.Argument(
        help="A run output folder or model file this store made, or a registered NAME, "
        "NAME@ALIAS or NAME@N (NAME@X always means the registry: ./NAME@X is a path)."
    ),
]
MoleculesArgument = Annotated[
    Path, typer.Argument(help="Molecules: CSV/TSV/TXT/SMI/SDF (.gz), or Parquet.")
]
TrustFileOption = Annotated[
    bool,
    typer.Option(
        "--trust-file",
        help="Load a model file this store did not make: it is a pickle, and loading it runs "
        "its code. Without this, such a file is refused unread; with it, the path and sha256 "
        "are recorded in the audit trail (model.trusted).",
    ),
]


@contextmanager
def open_store(location: str | None, principal: Principal | None = None) -> Iterator[Store]:
    """Open the store for one command and close it afterwards.

    Its writes are signed by ``principal``, default the identity resolved at the first
    write (:func:`qemlflow.audit.session.resolve_principal`: a service key, an unlocked
    passphrase identity, else the OS account); read-only commands resolve none.
    """
    from qemlflow.store import Store

    store = Store.open(location, principal=principal)
    try:
        yield store
    finally:
        store.close()


# The reading options, spelled the same on every command that reads molecules
# (predict, screen, data add); error hints name these.
SmilesColumnOption = Annotated[
    str | None,
    typer.Option(
        "--smiles-column",
        "--smiles",
        help="SMILES column: a name, or a number with --no-header (default: detected).",
    ),
]
IdColumnOption = Annotated[
    str | None,
    typer.Option("--id-column", help="Id column: a name, or a number with --no-header."),
]
HeaderOption = Annotated[
    bool | None,
    typer.Option(
        "--header/--no-header",
        help="Whether the first line names the columns (default: yes; for .smi, detected). "
        "Without one, columns are numbered 1, 2, ...",
        show_default=False,
    ),
]
