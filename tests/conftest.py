"""Shared test fixtures: small real datasets written to disk."""

from __future__ import annotations

import os
import shutil
import tempfile
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

# The OS account of the test session: never the user's own ~/.config/qemlflow. Module- and
# session-scoped fixtures make their stores under it; every test gets a copy of its key
# in a folder of its own (see _isolated_store), so the stores those fixtures made accept
# its writes, while anything a test writes there (an identity.json) stays its own.
_SESSION_IDENTITY = Path(tempfile.mkdtemp(prefix="qemlflow-identity-"))
os.environ["QEMLFLOW_IDENTITY_DIR"] = str(_SESSION_IDENTITY)
_ACCOUNT_FILES = ("account_key.pem", "account.json")


@pytest.fixture(autouse=True)
def _isolated_store(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test runs in a folder of its own, with a store of its own: commands that
    default to ./.qemlflow or ./qemlflow-run never write into the repository.

    It also gets an identity folder of its own (CLI subprocesses inherit it), holding the
    session's OS account key: the first write to each of its stores makes that account
    the store's owner. No passphrase or service key leaks in from the environment."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    monkeypatch.setenv("QEMLFLOW_HOME", str(tmp_path_factory.mktemp("qemlflow-home")))
    identity = tmp_path_factory.mktemp("identity")
    if not (_SESSION_IDENTITY / _ACCOUNT_FILES[0]).is_file():
        from qemlflow.audit.session import account_principal

        account_principal(_SESSION_IDENTITY, create=True)
    for name in _ACCOUNT_FILES:
        shutil.copy2(_SESSION_IDENTITY / name, identity / name)  # keeps mode 0600
    monkeypatch.setenv("QEMLFLOW_IDENTITY_DIR", str(identity))
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
