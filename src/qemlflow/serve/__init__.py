"""Serve a registered model over HTTP: ``qemlflow serve NAME[@ALIAS]``, and its client.

The server needs the ``serve`` extra (FastAPI, uvicorn, prometheus-client); the client
needs httpx. Nothing here is imported by ``import qemlflow``.
"""

from __future__ import annotations

__all__ = ["Client"]


def __getattr__(name: str) -> object:
    if name == "Client":
        from qemlflow.serve.client import Client

        return Client
    raise AttributeError(f"module 'qemlflow.serve' has no attribute {name!r}")
