"""The public-API gate: ``qemlflow.__all__`` and the CLI's commands against a snapshot.

    python scripts/api_check.py            # fails when the live API differs from the snapshot
    python scripts/api_check.py --update   # rewrites the snapshot (then add a CHANGELOG entry)

The snapshot (``api/public-api.json``, sorted JSON) holds one entry per public thing:
every name in ``qemlflow.__all__`` with its signature (a class: its constructor and the
public methods and properties it defines in qemlflow, not those it inherits from
scikit-learn or pydantic), and every ``qemlflow`` command with each of its options and
arguments (flags, type, default, required). Any difference fails, so that nothing
changes by accident. A second rule reads git: when the last commit changed the snapshot
by removing or changing an entry, CHANGELOG.md must change in that commit too.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = Path("api") / "public-api.json"
CHANGELOG = "CHANGELOG.md"
FIX = (
    "if the change is intended, run `python scripts/api_check.py --update` and add a "
    "CHANGELOG.md entry in the same commit"
)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

Snapshot = dict[str, dict[str, Any]]


# -- the live API ----------------------------------------------------------------------------


def live_snapshot() -> Snapshot:
    """The public API of the qemlflow this Python imports: ``{"python": ..., "cli": ...}``."""
    return {"python": python_api(), "cli": cli_api()}


def python_api() -> dict[str, Any]:
    """``qemlflow.<name>`` (and ``qemlflow.<Class>.<member>``) -> its signature."""
    import qemlflow

    entries: dict[str, Any] = {}
    for name in sorted(qemlflow.__all__):
        value = getattr(qemlflow, name)
        key = f"qemlflow.{name}"
        if inspect.isclass(value):
            fields = getattr(value, "model_fields", None)  # a pydantic model
            signature = _fields_signature(value, fields) if fields else _signature(value)
            entries[key] = f"class{signature}"
            for member, text in _members(value).items():
                entries[f"{key}.{member}"] = text
        elif callable(value):
            entries[key] = f"def{_signature(value)}"
        else:
            entries[key] = f"value: {type(value).__name__}"
    return entries


def _members(cls: type) -> dict[str, str]:
    """The public methods and properties ``cls`` defines in qemlflow (its own or a base's)."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("qemlflow"):
            continue
        for name, raw in vars(klass).items():
            if name.startswith("_"):
                continue
            if isinstance(raw, property):
                found[name] = "property"
            elif isinstance(raw, classmethod | staticmethod):
                kind = "classmethod" if isinstance(raw, classmethod) else "staticmethod"
                found[name] = f"{kind}{_signature(raw.__func__)}"
            elif inspect.isfunction(raw):
                found[name] = f"def{_signature(raw)}"
    return found


def _fields_signature(cls: type, fields: dict[str, Any]) -> str:
    """A pydantic model's keyword-only fields as written in the source.

    pydantic's own signature renders the resolved types and constraint objects, whose repr
    changes with pydantic's version; the source text does not.
    """
    written: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        written.update(vars(klass).get("__annotations__", {}))
    parts = []
    for name, field in fields.items():
        text = f"{name}: {_annotation(written.get(name, 'Any'))}"
        if field.default_factory is not None:
            text += " = <factory>"
        elif not field.is_required():
            text += f" = {_ADDRESS.sub('', repr(field.default))}"
        parts.append(text)
    return f"(*, {', '.join(parts)})"


def _signature(obj: Callable[..., Any]) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):  # a builtin without a signature
        return "(...)"
    return _ADDRESS.sub("", text)


def cli_api() -> dict[str, Any]:
    """``qemlflow <command> [<subcommand>]`` -> the command; ``... <option>`` -> the option."""
    import typer

    from qemlflow.cli.main import app

    entries: dict[str, Any] = {}
    _walk(typer.main.get_command(app), "qemlflow", entries)
    return entries


def _walk(command: Any, path: str, entries: dict[str, Any]) -> None:
    subcommands = getattr(command, "commands", None)
    entries[path] = {
        "kind": "group" if subcommands is not None else "command",
        "hidden": bool(getattr(command, "hidden", False)),
        "deprecated": bool(getattr(command, "deprecated", False)),
    }
    for param in command.params:
        if param.name is None:
            continue
        entries[f"{path} {_param_name(param)}"] = {
            "kind": getattr(param, "param_type_name", type(param).__name__),
            "flags": sorted([*param.opts, *param.secondary_opts]),
            "type": _param_type(param),
            "default": _plain(param.default),
            "required": bool(param.required),
            "multiple": bool(getattr(param, "multiple", False)),
            "is_flag": bool(getattr(param, "is_flag", False)),
        }
    for name, sub in sorted((subcommands or {}).items()):
        _walk(sub, f"{path} {name}", entries)


def _param_name(param: Any) -> str:
    long = [o for o in param.opts if o.startswith("--")]
    return long[0] if long else (param.opts[0] if param.opts else str(param.name))


def _param_type(param: Any) -> str:
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:  # a plain click parameter
        kind = getattr(param, "type", None)
        return str(getattr(kind, "name", kind))
    text = _annotation(descriptor.annotation)
    choices = getattr(descriptor, "choices", None)
    return f"{text} {sorted(str(_plain(c)) for c in choices)}" if choices else text


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    return re.sub(r"\b(typing|pathlib|builtins)\.", "", str(annotation))


def _plain(value: Any) -> Any:
    """``value`` as JSON (stable: no memory addresses)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return _ADDRESS.sub("", repr(value))


# -- comparing -----------------------------------------------------------------------------


def differences(old: Snapshot, new: Snapshot) -> tuple[list[str], list[str], list[str]]:
    """(removed, changed, added) entries from ``old`` to ``new``, one line each."""
    removed: list[str] = []
    changed: list[str] = []
    added: list[str] = []
    for part in sorted(set(old) | set(new)):
        before, after = old.get(part, {}), new.get(part, {})
        for key in sorted(set(before) | set(after)):
            if key not in after:
                removed.append(f"{key}: {_show(before[key])}")
            elif key not in before:
                added.append(f"{key}: {_show(after[key])}")
            elif before[key] != after[key]:
                changed.append(f"{key}: {_show(before[key])} -> {_show(after[key])}")
    return removed, changed, added


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def check_live(snapshot_path: Path) -> list[str]:
    """The problems of the live API against the snapshot file (empty: none)."""
    if not snapshot_path.is_file():
        return [f"no API snapshot at {snapshot_path}; {FIX}"]
    old = json.loads(snapshot_path.read_text(encoding="utf-8"))
    removed, changed, added = differences(old, live_snapshot())
    if not (removed or changed or added):
        return []
    lines = [f"the public API differs from {snapshot_path}:"]
    lines += [f"  removed  {r}" for r in removed]
    lines += [f"  changed  {c}" for c in changed]
    lines += [f"  added    {a}" for a in added]
    lines.append(FIX)
    return lines


def check_history(repo: Path, snapshot: PurePath = SNAPSHOT) -> tuple[list[str], str | None]:
    """The second rule, on git: (problems, a notice when the rule could not be checked).

    When HEAD changed the snapshot by removing or changing entries, HEAD must change
    CHANGELOG.md too.
    """
    if _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^") is None:
        return [], "api history: HEAD has no parent here (shallow clone?); changelog rule skipped"
    touched = (_git(repo, "diff", "--name-only", "HEAD^", "HEAD") or "").splitlines()
    if snapshot.as_posix() not in touched:
        return [], None
    old = _git(repo, "show", f"HEAD^:{snapshot.as_posix()}")
    new = _git(repo, "show", f"HEAD:{snapshot.as_posix()}")
    if old is None or new is None:  # added in this commit, or deleted (check_live says so)
        return [], None
    removed, changed, _ = differences(json.loads(old), json.loads(new))
    if (removed or changed) and CHANGELOG not in touched:
        lines = [f"the last commit removes or changes public API in {snapshot} without a"]
        lines[0] += f" {CHANGELOG} entry:"
        lines += [f"  removed  {r}" for r in removed] + [f"  changed  {c}" for c in changed]
        lines.append(f"add a {CHANGELOG} entry for it to the same commit")
        return lines, None
    return [], None


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout if done.returncode == 0 else None


def write_snapshot(path: Path) -> None:
    """Write the live API to ``path``: sorted JSON, one entry a line (a diff shows what changed)."""
    parts = []
    for part, entries in sorted(live_snapshot().items()):
        lines = [
            f"  {json.dumps(key)}: {json.dumps(value, sort_keys=True, ensure_ascii=False)}"
            for key, value in sorted(entries.items())
        ]
        parts.append(f" {json.dumps(part)}: {{\n" + ",\n".join(lines) + "\n }")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{\n" + ",\n".join(parts) + "\n}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the gate; 0 when it passes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the snapshot")
    parser.add_argument("--snapshot", type=Path, default=ROOT / SNAPSHOT)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the git checkout to check")
    args = parser.parse_args(argv)
    if args.update:
        write_snapshot(args.snapshot)
        print(f"wrote {args.snapshot}; add a {CHANGELOG} entry in the same commit")
        return 0
    problems = check_live(args.snapshot)
    history, notice = check_history(args.repo)
    if notice:
        print(notice)
    problems += history
    if problems:
        print("\n".join(problems))
        return 1
    print(f"public API matches {args.snapshot.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
