"""The release artifacts: ``python -m build`` makes an sdist and, from it, a wheel; the
wheel, installed into a fresh virtual environment, runs ``qemlflow demo`` with nothing
from the source tree.

They are built from a copy of the project's files (what git tracks or would track), so a
stale ``build/`` or ``*.egg-info`` folder in the checkout can neither leak into them nor
be left behind. The wheel's dependencies come from the configured package index; the
optional extras (torch, the service) are not installed: the demo needs none of them.
About a minute, most of it pip installing the dependencies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.extras import missing

from qemlflow._version import __version__

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Never part of a release, whatever the checkout holds (used when it is no git checkout).
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", "site"
)


@dataclass
class Installed:
    sdist: Path
    wheel: Path
    python: Path
    bin: Path
    site_packages: Path


def _require_build() -> None:
    if importlib.util.find_spec("build") is None:
        missing("`build` is not installed (it is in the dev extra: pip install -e '.[dev]')")


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without anything that points Python at the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return {**env, **extra}


def _copy_project(target: Path) -> None:
    """The project's files: tracked and untracked-but-not-ignored ones in a git checkout."""
    git = shutil.which("git")
    listed = (
        subprocess.run(
            [git or "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        if git
        else None
    )
    if listed is None or listed.returncode != 0:  # an unpacked sdist: all but the debris
        shutil.copytree(ROOT, target, ignore=_NOT_SOURCE, dirs_exist_ok=True)
        return
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a deleted file is still listed until the commit
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The sdist and the wheel built from it, in isolation (setuptools from the index, as
    a release is); the wheel installed with its dependencies into a new virtual
    environment."""
    _require_build()
    source = tmp_path_factory.mktemp("source")
    _copy_project(source)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", dist, source], source, _clean_env())
    (sdist,) = dist.glob("qemlflow-*.tar.gz")
    (wheel,) = dist.glob("qemlflow-*.whl")  # built from the unpacked sdist

    home = tmp_path_factory.mktemp("venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(home)
    python = home / "bin" / "python"
    # --no-compile halves the install: only the modules the demo imports get compiled
    _run([python, "-m", "pip", "install", "-q", "--no-compile", wheel], home, _clean_env())
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        home,
        _clean_env(),
    )
    return Installed(sdist, wheel, python, home / "bin", Path(purelib.strip()))


def _sdist_names(sdist: Path) -> set[str]:
    import tarfile

    with tarfile.open(sdist) as archive:
        return {member.name for member in archive.getmembers() if member.isfile()}


def test_the_wheel_carries_the_package_data_and_license(installed: Installed) -> None:
    import zipfile

    names = set(zipfile.ZipFile(installed.wheel).namelist())
    info = f"qemlflow-{__version__}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(installed.wheel).read(f"{info}/METADATA").decode()
    assert f"Version: {__version__}\n" in metadata and "License-Expression: MIT\n" in metadata
    # every file of the package's source is in the wheel: data, configs, the migrations,
    # the UI's templates and static files, the literature table
    package = f"qemlflow-{__version__}/src/"
    shipped = {
        name.removeprefix(package)
        for name in _sdist_names(installed.sdist)
        if name.startswith(f"{package}qemlflow/")
    }
    assert len(shipped) > 100 and shipped - names == set()
    for needed in (
        "qemlflow/data/bundled/esol.csv.gz",
        "qemlflow/configs/esol.yaml",
        "qemlflow/store/migrations/script.py.mako",
        "qemlflow/store/migrations/versions/0001_initial.py",
        "qemlflow/ui/templates/base.html",
        "qemlflow/ui/static/qemlflow.css",
        "qemlflow/benchmark/literature.yaml",
        "qemlflow/py.typed",
    ):
        assert needed in names, needed


def test_the_sdist_carries_what_a_contributor_needs(installed: Installed) -> None:
    top = f"qemlflow-{__version__}"
    names = _sdist_names(installed.sdist)
    for needed in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "CONTRIBUTING.md",
        "pyproject.toml",
        "conftest.py",
        "tests/conftest.py",
        "tests/bundled.py",
        "src/qemlflow/_version.py",
        "src/qemlflow/data/bundled/esol.csv.gz",
        "benchmarks/import_time.py",
        ".ci/run",
    ):
        assert f"{top}/{needed}" in names, needed
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_demo_runs_from_the_installed_wheel(installed: Installed, tmp_path: Path) -> None:
    cwd, home, store, identity = (tmp_path / n for n in ("cwd", "home", "store", "identity"))
    for folder in (cwd, home):
        folder.mkdir()
    env = _clean_env(HOME=str(home), QEMLFLOW_HOME=str(store), QEMLFLOW_IDENTITY_DIR=str(identity))

    where = _run(
        [
            installed.python,
            "-c",
            "import importlib.metadata as m, qemlflow; print(qemlflow.__file__);"
            " print(m.version('qemlflow'))",
        ],
        cwd,
        env,
    ).split()
    assert Path(where[0]).is_relative_to(installed.site_packages), where[0]
    assert not Path(where[0]).is_relative_to(ROOT)
    assert where[1] == __version__

    qemlflow = installed.bin / "qemlflow"
    assert _run([qemlflow, "--version"], cwd, env).strip() == f"qemlflow {__version__}"
    _run([qemlflow, "demo", "--out", "out"], cwd, env)

    out = cwd / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "regression" and metrics["n"]["test"] > 100
    assert 0 < metrics["test"]["rmse"] < 2  # log solubility units; the demo gets ~0.6
    model = json.loads((out / "model.json").read_text())
    assert (out / model["model_file"]).stat().st_size == model["model_bytes"]
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["qemlflow"] == __version__
    assert (out / "parity.png").read_bytes().startswith(b"\x89PNG")
    # the run is in the store the migrations made, and the model scores new molecules
    assert "esol-lightgbm" in _run([qemlflow, "runs", "show", run["run_id"]], cwd, env)
    (cwd / "new.csv").write_text("smiles\nCCO\nc1ccccc1O\n")
    _run([qemlflow, "predict", "out", "new.csv", "-o", "scored.csv"], cwd, env)
    assert len((cwd / "scored.csv").read_text().splitlines()) == 3
