"""The documentation site: it builds with ``mkdocs build --strict``, and the tutorial runs.

The tutorial (docs/tutorial.md) marks its runnable blocks with an HTML comment,
``<!-- run -->``, before a ```bash or ```python block, and the files it asks the reader to
write with ``<!-- file: NAME -->`` before the block holding their content. The runnable
blocks are run for real, in order, in one shell (a ```python block through the venv's
``python``), in an empty folder with a store and identity of their own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests import extras

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"
BIN = Path(sys.executable).parent

# A marker comment, blank lines, then a fenced block: (marker, argument, language, body).
_BLOCK = re.compile(
    r"<!--\s*(run|file):?\s*(\S*)\s*-->\s*\n(?:\s*\n)*```(\w+)[^\n]*\n(.*?)\n```",
    re.DOTALL,
)


def _require(missing: bool, message: str) -> None:
    """Skip outside CI when a tool is missing; under CI=true, fail: CI must run this."""
    if missing:
        extras.missing(message, in_ci=" (CI must check the documentation)")


def tutorial_blocks(text: str) -> list[tuple[str, str, str, str]]:
    """The marked blocks of a page, in order: (marker, argument, language, body).

    Examples
    --------
    >>> page = "<!-- file: a.txt -->\\n```text\\nhello\\n```\\n<!-- run -->\\n```bash\\nls\\n```"
    >>> tutorial_blocks(page)
    [('file', 'a.txt', 'text', 'hello'), ('run', '', 'bash', 'ls')]
    """
    return [match.groups() for match in _BLOCK.finditer(text)]  # type: ignore[misc]


def tutorial_script(text: str) -> str:
    """The runnable blocks as one bash script (python blocks through a here-document)."""
    parts = ["set -euo pipefail"]
    for marker, _, language, body in tutorial_blocks(text):
        if marker != "run":
            continue
        if language == "bash":
            parts.append(body)
        elif language == "python":
            parts.append(f"python - <<'PYTHON'\n{body}\nPYTHON")
        else:
            raise AssertionError(f"a runnable block must be bash or python, not {language}")
    return "\n".join(parts) + "\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_site_builds_strict(tmp_path: Path) -> None:
    """`mkdocs build --strict` (as CONTRIBUTING says, from the repository root): a broken
    link, a missing page, a docstring griffe cannot read fails it."""
    _require(
        importlib.util.find_spec("mkdocs") is None,
        'mkdocs is not installed: pip install -e ".[dev]"',
    )
    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "The two commands" in home  # the README is the home page
    assert 'href="compliance/"' in home  # its docs/ links resolved inside the site
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("qemlflow run", "qemlflow models promote", "qemlflow audit verify"):
        assert f"<code>{command}</code>" in cli, command
    assert "--trust-file" in cli
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("load_dataset", "MolecularModel", "Predictor", "Store"):
        assert name in api, name
    for page in ("tutorial", "design", "security", "compliance", "keys", "ui"):
        assert (site / page / "index.html").is_file(), page


def test_tutorial_marks_the_important_path() -> None:
    """run -> predict -> register -> serve with a request stays runnable in the tutorial."""
    script = tutorial_script(TUTORIAL.read_text(encoding="utf-8"))
    for command in (
        "qemlflow run ",
        "qemlflow reproduce ",
        "qemlflow predict ",
        "qemlflow models register ",
        "qemlflow models promote ",
        "qemlflow serve ",
        "/predict",
        "qemlflow screen ",
        "qemlflow audit verify",
        "import qemlflow as qm",
    ):
        assert command in script, command


@pytest.mark.slow
def test_tutorial_runs(tmp_path: Path) -> None:
    """Every runnable block of the tutorial, in order, in one shell: exit code 0."""
    for tool in ("bash", "curl"):
        _require(shutil.which(tool) is None, f"the tutorial needs {tool}: install it")
    text = TUTORIAL.read_text(encoding="utf-8")
    for marker, name, _, body in tutorial_blocks(text):
        if marker == "file":
            (tmp_path / name).write_text(body + "\n", encoding="utf-8")
    script = tmp_path / "tutorial.sh"
    script.write_text(tutorial_script(text), encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PORT": str(_free_port()),
        "QEMLFLOW_HOME": str(tmp_path / "store"),
    }
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the server it starts is in its group: killed with it
    )
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the tutorial did not finish in 240 s:\n{output[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing it started outlives it
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-6000:]
    assert "IDENTICAL" in output  # reproduce's verdict
    scored = (tmp_path / "scored.csv").read_text(encoding="utf-8").splitlines()
    assert scored[0].startswith("id,") and len(scored) == 4  # row-aligned, the typo included
    assert '"model":"sol","model_version":1' in output  # the service answered
    hits = (tmp_path / "hits.csv").read_text(encoding="utf-8").splitlines()
    assert len(hits) == 4  # --top 3
    assert "test molecules, mean interval width" in output  # the Python block


def test_readme_python_names_exist() -> None:
    """The README's Python examples compile and use only public names of ``qemlflow``.

    They are not run (they read the reader's own experiment.yaml); the tutorial's Python
    block, run above, exercises the same calls."""
    import ast

    import qemlflow

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)\n```", readme, re.DOTALL)
    assert blocks, "the README has a Python example"
    for block in blocks:
        tree = ast.parse(block)
        used = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "qm"
        }
        assert used <= set(qemlflow.__all__), used - set(qemlflow.__all__)
