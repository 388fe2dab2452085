"""MkDocs hooks: pages made from their sources at build time, so they cannot drift.

- ``index.md`` is README.md, its ``docs/...`` links made relative to this folder (on
  GitHub the README stays as it is);
- ``api.md`` documents every name of ``qemlflow.__all__`` (and the key classes in
  ``KEY_CLASSES``) from its docstring, through mkdocstrings;
- ``contributing.md``, ``changelog.md`` and ``license.md`` are the repository's
  CONTRIBUTING.md, CHANGELOG.md and LICENSE, links adjusted the same way;
- ``cli.md`` is the ``qemlflow`` command tree as typer builds it: every command and
  subcommand with its help, usage line, arguments and options.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parent.parent
# The pages describe these sources, whatever else is installed (as mkdocstrings' `paths`).
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

# A Sphinx cross-reference role left in a docstring (`:func:`~a.b.c``), as mkdocstrings
# renders it: the role prefix and a leading `~` go, the name stays in code.
_SPHINX_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):<code>~?([^<]*)</code>")

# Markdown characters that would turn help text into emphasis, links or table cells.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]|])")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the placeholder pages by their generated text."""
    source = page.file.src_uri
    if source == "index.md":
        return readme_markdown()
    if source in ROOT_PAGES:
        return root_page_markdown(ROOT_PAGES[source])
    if source == "api.md":
        return markdown + "\n" + api_reference()
    if source == "cli.md":
        return markdown + "\n" + cli_reference()
    return markdown


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    """Sphinx roles in the API reference's docstrings read as plain code names."""
    if page.file.src_uri != "api.md":
        return html_text
    return _SPHINX_ROLE.sub(r"<code>\1</code>", html_text)


# Site pages that are files at the repository's root: page -> file.
ROOT_PAGES: dict[str, str] = {
    "contributing.md": "CONTRIBUTING.md",
    "changelog.md": "CHANGELOG.md",
    "license.md": "LICENSE",
}
_ROOT_LINK = re.compile(r"\]\((" + "|".join(re.escape(f) for f in ROOT_PAGES.values()) + r")([#)])")
_PAGE_OF = {file: page for page, file in ROOT_PAGES.items()}


def _site_links(text: str) -> str:
    """Links into docs/ made relative to docs/; links to root files point at their pages."""
    text = re.sub(r"\]\(docs/", "](", text)
    return _ROOT_LINK.sub(lambda m: f"]({_PAGE_OF[m.group(1)]}{m.group(2)}", text)


def readme_markdown() -> str:
    """README.md with its links made to work inside the site."""
    return _site_links((ROOT / "README.md").read_text(encoding="utf-8"))


def root_page_markdown(name: str) -> str:
    """A root file as a page: Markdown as it is (links adjusted), plain text in a block."""
    text = (ROOT / name).read_text(encoding="utf-8")
    if not name.endswith(".md"):
        return f"# {name}\n\n```text\n{text}\n```\n"
    return _site_links(text)


# Classes a user meets beyond ``qemlflow.__all__``: module -> names.
KEY_CLASSES: dict[str, list[str]] = {
    "qemlflow.features": [
        "Featurizer",
        "ECFP",
        "FCFP",
        "MACCS",
        "AtomPair",
        "Torsion",
        "RDKitDescriptors",
        "Concat",
    ],
    "qemlflow.models": ["TanimotoKNN", "Ensemble"],
    "qemlflow.store": ["Store"],
}


def api_reference() -> str:
    """mkdocstrings directives for the public API, grouped by the module that holds each name."""
    import qemlflow

    lines = ["## `import qemlflow as qm`", ""]
    lines += [f"::: qemlflow.{name}\n" for name in qemlflow.__all__ if name != "__version__"]
    for module, names in KEY_CLASSES.items():
        lines += [f"## `{module}`", ""]
        lines += [f"::: {module}.{name}\n" for name in names]
    return "\n".join(lines)


def cli_reference() -> str:
    """Markdown for every command of ``qemlflow``, depth first in the CLI's own order."""
    from qemlflow.cli.main import app

    root = typer.main.get_command(app)
    context = root.context_class(root, info_name="qemlflow")
    return "\n".join(_command_sections(root, context, level=2))


def _command_sections(command: Any, context: Any, level: int) -> list[str]:
    # typer vendors click (typer._click): duck-typed, not click's classes.
    path = context.command_path
    lines = [f"{'#' * min(level, 6)} `{path}`", ""]
    if command.help:
        lines += [_escape(paragraph) + "\n" for paragraph in _paragraphs(command.help)]
    lines += ["```text", command.get_usage(context).strip(), "```", ""]
    rows = [
        record
        for param in command.get_params(context)
        if (record := param.get_help_record(context)) is not None
    ]
    if rows:
        lines += ["| Argument or option | Description |", "|---|---|"]
        lines += [f"| `{name}` | {_escape(' '.join(text.split()))} |" for name, text in rows]
        lines.append("")
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is None or sub.hidden:
                continue
            sub_context = sub.context_class(sub, info_name=name, parent=context)
            lines += _command_sections(sub, sub_context, level + 1)
    return lines


def _paragraphs(text: str) -> list[str]:
    """Help text as paragraphs (click's ``\\b`` no-rewrap markers dropped)."""
    blocks = re.split(r"\n\s*\n", text.replace("\b", "").strip())
    return [" ".join(block.split()) for block in blocks if block.strip()]


def _escape(text: str) -> str:
    return _MARKDOWN_SPECIALS.sub(r"\\\1", html.escape(text, quote=False))
