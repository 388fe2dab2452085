"""A small Python client for ``qemlflow serve``.

Usage (against a running server; ``tests/test_serve.py`` exercises it for real)::

    client = Client("http://127.0.0.1:8000", "qmf_...")
    client.predict(["CCO", "c1ccccc1O"])[0]["prediction"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from qemlflow.errors import QeMLflowError

__all__ = ["Client", "ServiceError"]

_FIXES = {
    401: "pass a valid API key (create one with `qemlflow keys create NAME`)",
    413: "send fewer molecules per request",
    503: "wait until the service is ready (GET /readyz)",
}


class ServiceError(QeMLflowError):
    """The prediction service answered with an error (``status`` holds the HTTP code)."""

    def __init__(self, problem: str, fix: str | None = None, *, status: int = 0) -> None:
        super().__init__(problem, fix)
        self.status = status


class Client:
    """Talks to a running prediction service with an API key.

    Parameters
    ----------
    url
        The service's base URL, e.g. ``http://127.0.0.1:8000``.
    key
        An API key; sent as ``Authorization: Bearer KEY``.
    timeout
        Seconds to wait for an answer.
    """

    def __init__(self, url: str, key: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def predict(self, smiles: Sequence[str]) -> list[dict[str, Any]]:
        """Score molecules: one result dict per SMILES, in order (see ``POST /predict``)."""
        body = self._check(self._http.post("/predict", json={"smiles": list(smiles)}))
        return list(body["results"])

    def predict_csv(
        self, path: str | Path, smiles_column: str | None = None
    ) -> list[dict[str, Any]]:
        """Upload a CSV file and score its SMILES column; one result per row, in order."""
        path = Path(path)
        params = {"smiles_column": smiles_column} if smiles_column else {}
        with path.open("rb") as handle:
            response = self._http.post(
                "/predict", params=params, files={"file": (path.name, handle, "text/csv")}
            )
        return list(self._check(response)["results"])

    def models(self) -> dict[str, Any]:
        """What the service is serving (``GET /models``)."""
        return dict(self._check(self._http.get("/models")))

    def ready(self) -> bool:
        """Whether the service has a smoke-tested model loaded."""
        return self._http.get("/readyz").status_code == 200

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def _check(self, response: httpx.Response) -> Any:
        if response.is_success:
            return response.json()
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ServiceError(
            f"{self.url} answered {response.status_code}: {detail}",
            _FIXES.get(response.status_code),
            status=response.status_code,
        )
