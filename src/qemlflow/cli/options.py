"""Options shared by the commands that use the provenance store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from qemlflow.store import Store

__all__ = ["JsonOption", "StoreOption", "TrustFileOption", "open_store"]

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
def open_store(location: str | None) -> Iterator[Store]:
    """Open the store for one command and close it afterwards."""
    from qemlflow.store import Store

    store = Store.open(location)
    try:
        yield store
    finally:
        store.close()
