"""The code-quality gates of .ci/run, each shown failing on purpose: bandit on a
``subprocess.run(..., shell=True)``, import-linter on a planted reversed import, the API
check on a removed public name, the dependency audit on a known vulnerability.

The tools are the real ones from this Python's environment; under CI=true a missing tool
fails the test instead of skipping it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

from tests.extras import missing

ROOT = Path(__file__).resolve().parents[1]
CI_RUN = ROOT / ".ci" / "run"
SNAPSHOT = ROOT / "api" / "public-api.json"


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if path.is_file():
        return str(path)
    missing(
        f"{name} is not installed beside {sys.executable} (the dev extra installs it)",
        in_ci="; CI must not skip the gate tests",
    )


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gate_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _gate_command(tool: str) -> list[str]:
    """The gate's command line in .ci/run, so the test runs exactly what CI runs."""
    for line in CI_RUN.read_text(encoding="utf-8").splitlines():
        if line.startswith(f".venv/bin/{tool} "):
            return shlex.split(line)
    raise AssertionError(f"no .venv/bin/{tool} line in {CI_RUN}")


# -- bandit ------------------------------------------------------------------------------


def _bandit(target: Path) -> subprocess.CompletedProcess[str]:
    command = _gate_command("bandit")
    command[0] = _tool("bandit")
    command[command.index("src")] = str(target)
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_bandit_gate_fails_on_shell_true_and_accepts_a_justified_line(tmp_path: Path) -> None:
    code = (
        "import subprocess\n\n\n"
        "def sh(command: str) -> None:\n    subprocess.run(command, shell=True){}\n"
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "shell.py").write_text(code.format(""))
    failed = _bandit(bad)
    assert failed.returncode != 0, failed.stdout
    assert "B602" in failed.stdout and "shell=True" in failed.stdout

    justified = tmp_path / "justified"
    justified.mkdir()
    (justified / "shell.py").write_text(code.format("  # nosec B602  # a fixed command"))
    passed = _bandit(justified)
    assert passed.returncode == 0, passed.stdout + passed.stderr


# -- import-linter -----------------------------------------------------------------------


def _lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    command = _gate_command("lint-imports")
    command[0] = _tool("lint-imports")
    command += ["--config", str(ROOT / "pyproject.toml")]
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=src.parent, env=env
    )


def test_architecture_contract_holds_for_the_package() -> None:
    done = _lint_imports(ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_architecture_contract_fails_on_a_reversed_import(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "qemlflow",
        src / "qemlflow",
        ignore=shutil.ignore_patterns("__pycache__", "*.gz", "*.html", "static"),
    )
    (src / "qemlflow" / "chem" / "planted.py").write_text(
        "def entry() -> object:\n    from qemlflow.cli.main import main\n\n    return main\n"
    )
    done = _lint_imports(src)
    assert done.returncode != 0, done.stdout
    assert "qemlflow.chem is not allowed to import qemlflow.cli" in done.stdout
    assert "qemlflow.chem.planted -> qemlflow.cli.main" in done.stdout  # the copy was read
    assert "No cycles are allowed in qemlflow" in done.stdout  # cli -> chem -> cli


# -- public API --------------------------------------------------------------------------


def test_api_check_passes_on_the_committed_snapshot() -> None:
    assert _script("api_check").check_live(SNAPSHOT) == []


def test_api_check_fails_on_a_removed_or_changed_public_name(tmp_path: Path) -> None:
    snapshot = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    # The snapshot knows a name the package no longer has: the name was removed.
    snapshot["python"]["qemlflow.retired_function"] = "def(x: 'int') -> 'int'"
    snapshot["python"]["qemlflow.load_model"] = "def(path: 'str') -> 'Predictor'"
    snapshot["cli"]["qemlflow run --retired-option"] = snapshot["cli"]["qemlflow --debug"]
    old = tmp_path / "public-api.json"
    old.write_text(json.dumps(snapshot))
    command = [sys.executable, str(ROOT / "scripts" / "api_check.py"), "--snapshot", str(old)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "removed  qemlflow.retired_function: def(x: 'int') -> 'int'" in done.stdout
    assert "removed  qemlflow run --retired-option" in done.stdout
    assert "changed  qemlflow.load_model: def(path: 'str') -> 'Predictor' -> def(path:" in (
        done.stdout
    )
    assert "run `python scripts/api_check.py --update` and add a CHANGELOG.md entry" in (
        done.stdout
    )


def _git(repo: Path, *args: str) -> None:
    identity = ["-c", "user.name=Gate Test", "-c", "user.email=gate@example.org"]
    subprocess.run(["git", "-C", str(repo), *identity, *args], check=True, capture_output=True)


def test_api_history_rule_needs_a_changelog_entry_with_a_removal(tmp_path: Path) -> None:
    api_check = _script("api_check")
    repo = tmp_path / "repo"
    (repo / "api").mkdir(parents=True)
    _git(repo, "init", "-q")
    snapshot = {"cli": {"qemlflow": {"kind": "group"}}, "python": {"qemlflow.a": "def()"}}
    path = repo / "api" / "public-api.json"
    path.write_text(json.dumps(snapshot))
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "first")
    problems, notice = api_check.check_history(repo)
    assert problems == [] and notice is not None and "no parent" in notice

    snapshot["python"]["qemlflow.b"] = "def()"  # an addition needs no changelog entry
    path.write_text(json.dumps(snapshot))
    _git(repo, "commit", "-qam", "add b")
    assert api_check.check_history(repo) == ([], None)

    del snapshot["python"]["qemlflow.a"]
    path.write_text(json.dumps(snapshot))
    _git(repo, "commit", "-qam", "remove a, no changelog")
    problems, _ = api_check.check_history(repo)
    assert "  removed  qemlflow.a: def()" in problems and "CHANGELOG.md" in problems[-1]

    snapshot["python"]["qemlflow.b"] = "def(x)"
    path.write_text(json.dumps(snapshot))
    (repo / "CHANGELOG.md").write_text("## Changed\n- `qemlflow.b` takes `x`\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "change b, with a changelog entry")
    assert api_check.check_history(repo) == ([], None)


# -- dependency audit --------------------------------------------------------------------

# pip-audit's JSON (`pip-audit -f json --aliases on`), as its JsonFormat writes it.
_VULNERABLE = {
    "dependencies": [
        {"name": "qemlflow", "skip_reason": "Dependency not found on PyPI: qemlflow (0.1.0)"},
        {"name": "numpy", "version": "2.3.1", "vulns": []},
        {
            "name": "jinja2",
            "version": "3.1.2",
            "vulns": [
                {
                    "id": "GHSA-h5c8-rqwp-cp95",
                    "fix_versions": ["3.1.3"],
                    "aliases": ["CVE-2024-22195"],
                }
            ],
        },
    ],
    "fixes": [],
}
_SKIPS_ONLY = {
    "dependencies": [
        {"name": "qemlflow", "skip_reason": "Dependency not found on PyPI: qemlflow (0.1.0)"},
        {"name": "alembic", "skip_reason": "Dependency not found on PyPI: alembic (1.20.1)"},
        {"name": "anyio", "skip_reason": "Dependency not found on PyPI: anyio (4.16.0)"},
        {"name": "numpy", "version": "2.3.1", "vulns": []},
    ],
    "fixes": [],
}


def test_audit_fails_on_a_known_vulnerability() -> None:
    verdict = _script("audit_deps").decide(_VULNERABLE, "pypi", ignored={})
    assert verdict.failed
    found = (
        "known vulnerability: jinja2 3.1.2: GHSA-h5c8-rqwp-cp95, CVE-2024-22195 (fixed in 3.1.3)"
    )
    assert found in verdict.lines
    assert "IGNORED in scripts/audit_deps.py" in verdict.lines[-1]


def test_audit_passes_on_unaudited_packages_with_one_line() -> None:
    verdict = _script("audit_deps").decide(_SKIPS_ONLY, "pypi", ignored={})
    assert not verdict.failed
    unreachable = [line for line in verdict.lines if "unreachable" in line]
    assert unreachable == [
        "vulnerability service unreachable for 2 of 3 packages (pypi): alembic, anyio"
    ]


def test_audit_ignore_list_has_an_expiry() -> None:
    audit = _script("audit_deps")
    ignored = {"CVE-2024-22195": ("sandboxed templates unused", "2026-12-31")}
    before = audit.decide(_VULNERABLE, "pypi", ignored=ignored, today=date(2026, 12, 31))
    assert not before.failed
    assert any("ignored until 2026-12-31: sandboxed templates unused" in x for x in before.lines)
    after = audit.decide(_VULNERABLE, "pypi", ignored=ignored, today=date(2027, 1, 1))
    assert after.failed
    assert any("its ignore expired on 2026-12-31" in line for line in after.lines)


def test_audit_ignore_list_entries_are_well_formed() -> None:
    for vuln, (reason, expiry) in _script("audit_deps").IGNORED.items():
        assert reason.strip(), vuln
        date.fromisoformat(expiry)
