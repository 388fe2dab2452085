"""Shared test fixtures: small real datasets written to disk."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from tests.bundled import bundled_csv

from qemlflow.store import Store

pytest_plugins = ["tests.postgres_fixture"]

# As the CLI does: keep two OpenMP runtimes (LightGBM, scikit-learn) from spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _isolated_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test runs in a folder of its own, with a store of its own: commands that
    default to ./.qemlflow or ./qemlflow-run never write into the repository.

    It also gets an identity folder of its own (CLI subprocesses inherit it), so the OS
    account key that owns its stores is new, and no passphrase or service key leaks in."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("QEMLFLOW_HOME", str(tmp_path_factory.mktemp("qemlflow-home")))
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(tmp_path_factory.mktemp("identity")))
    for name in (
        "QEMLFLOW_DATABASE_URL",
        "QEMLFLOW_PASSPHRASE",
        "QEMLFLOW_PASSPHRASE_FD",
        "QEMLFLOW_SERVICE_KEY_FILE",
        "QEMLFLOW_ACTOR",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def esol_frame() -> pd.DataFrame:
    """The ESOL table (the bundled dataset's CSV)."""
    return pd.read_csv(bundled_csv("esol"))


@pytest.fixture
def small_esol_csv(tmp_path: Path, esol_frame: pd.DataFrame) -> Path:
    """240 ESOL molecules plus one invalid and one empty SMILES, as a CSV file."""
    frame = esol_frame.head(240).copy()
    bad = pd.DataFrame({"smiles": ["C1CC(not smiles", ""], "logp": [-1.0, -2.0]})
    frame = pd.concat([frame.iloc[:100], bad, frame.iloc[100:]], ignore_index=True)
    path = tmp_path / "small_esol.csv"
    frame.to_csv(path, index=False)
    return path


MakeStore = Callable[[Path], Store]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_factory(request: pytest.FixtureRequest) -> Iterator[MakeStore]:
    """A callable ``make_store(path) -> Store``, on each metadata backend.

    For PostgreSQL the first store of a test uses ``postgres_url``; further stores (a
    restore target) get their own new database on the same server.
    """
    opened: list[Store] = []
    extra_dbs: list[str] = []
    admin_url: str | None = None
    base_url: str | None = None
    if request.param == "postgresql":
        base_url = request.getfixturevalue("postgres_url")
        admin_url = base_url.rsplit("/", 1)[0] + "/postgres"

    def make_store(path: Path) -> Store:
        url: str | None = None
        if base_url is not None:
            if not opened:
                url = base_url
            else:
                import psycopg

                name = f"qemlflow_extra_{uuid.uuid4().hex[:12]}"
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                extra_dbs.append(name)
                url = base_url.rsplit("/", 1)[0] + f"/{name}"
        store = Store.open(path, database_url=url)
        opened.append(store)
        return store

    yield make_store
    for store in opened:
        store.close()
    if extra_dbs:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            for name in extra_dbs:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(store_factory: MakeStore, tmp_path: Path) -> Store:
    """A fresh store at ``tmp_path / "store"``, on each metadata backend."""
    return store_factory(tmp_path / "store")
