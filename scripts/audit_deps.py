"""The dependency-vulnerability gate: pip-audit over the environment this Python runs in.

    .venv/bin/python scripts/audit_deps.py

Fails (exit 1) on any known vulnerability of an installed distribution, unless it is in
``IGNORED`` below with a reason and an expiry date. pip-audit's JSON gives ids, aliases and
fixed versions but no severity, so every known vulnerability counts as high: a finding is
fixed by upgrading (the fix versions are printed) or ignored here, with a reason, for a while.

The vulnerability data comes from PyPI (the ``pypi`` service, OSV data per release); when
that cannot be reached at all, the ``osv`` service is tried. Packages a service could not
audit (no answer, a registry proxy without PyPI's per-release JSON) are named in one line,
and the gate passes on them: it fails only on a real finding. When no service answers,
it says so in one line and passes. The editable qemlflow itself is not on PyPI: skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date

OWN_PACKAGE = "qemlflow"
SERVICES = ("pypi", "osv")
SHOWN_NAMES = 8
TIMEOUT_S = 180  # per service: a network that drops packets must not stall CI

# Known vulnerabilities accepted for now: id (or an alias: CVE-..., GHSA-...) ->
# (why it does not affect QeMLflow, the date after which the gate fails on it again).
# Example: "GHSA-xxxx-xxxx-xxxx": ("only the CLI's --foo path, unused here", "2027-03-31"),
IGNORED: dict[str, tuple[str, str]] = {}


@dataclass(frozen=True)
class Verdict:
    """What the gate decided from one pip-audit report: pass or fail, and its lines."""

    failed: bool
    lines: list[str]


def decide(
    report: dict[str, object],
    service: str,
    ignored: dict[str, tuple[str, str]] | None = None,
    today: date | None = None,
) -> Verdict:
    """The verdict on pip-audit's JSON ``report`` (``pip-audit -f json``) from ``service``.

    Any vulnerability fails unless its id or an alias is in ``ignored`` and not expired.
    Skipped packages (except qemlflow) give one line and never fail.
    """
    ignored = IGNORED if ignored is None else ignored
    today = date.today() if today is None else today
    dependencies = [d for d in _list(report.get("dependencies")) if isinstance(d, dict)]
    findings: list[str] = []
    accepted: list[str] = []
    skipped: list[str] = []
    audited = 0
    for dep in dependencies:
        name = str(dep.get("name", "?"))
        if name == OWN_PACKAGE:
            continue
        if "skip_reason" in dep:
            skipped.append(name)
            continue
        audited += 1
        for vuln in _list(dep.get("vulns")):
            if not isinstance(vuln, dict):
                continue
            ids = [str(vuln.get("id", "?")), *(str(a) for a in _list(vuln.get("aliases")))]
            label = f"{name} {dep.get('version', '?')}: {', '.join(ids)}"
            fixes = ", ".join(str(v) for v in _list(vuln.get("fix_versions"))) or "none yet"
            entry = next((ignored[i] for i in ids if i in ignored), None)
            if entry is not None and today <= date.fromisoformat(entry[1]):
                accepted.append(f"{label} (ignored until {entry[1]}: {entry[0]})")
            elif entry is not None:
                findings.append(f"{label} (its ignore expired on {entry[1]}; fixed in {fixes})")
            else:
                findings.append(f"{label} (fixed in {fixes})")
    lines = [f"ignored known vulnerability: {a}" for a in accepted]
    lines += [f"known vulnerability: {f}" for f in findings]
    if skipped:
        shown = ", ".join(skipped[:SHOWN_NAMES]) + (", ..." if len(skipped) > SHOWN_NAMES else "")
        lines.append(
            f"vulnerability service unreachable for {len(skipped)} of {audited + len(skipped)} "
            f"packages ({service}): {shown}"
        )
    if findings:
        lines.append(
            f"{len(findings)} known vulnerabilit{'y' if len(findings) == 1 else 'ies'}: "
            "upgrade to a fixed version, or add it to IGNORED in scripts/audit_deps.py "
            "with a reason and an expiry date"
        )
    elif audited:
        lines.append(f"no known vulnerabilities in {audited} audited packages ({service})")
    return Verdict(failed=bool(findings), lines=lines)


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def run_pip_audit(service: str) -> tuple[dict[str, object] | None, str]:
    """pip-audit's JSON report of this environment from ``service``, or None and why not."""
    command = [
        sys.executable, "-m", "pip_audit", "--local", "--skip-editable", "--format", "json",
        "--progress-spinner", "off", "--vulnerability-service", service, "--aliases", "on",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"pip-audit timed out after {TIMEOUT_S} s"
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, last[:300]
    return (report, "") if isinstance(report, dict) else (None, "no JSON object")


def main() -> int:
    """Run the gate; 0 when it passes."""
    if importlib.util.find_spec("pip_audit") is None:  # a missing tool is no unreachable service
        print(f"pip-audit is not installed in {sys.prefix}: pip install -e '.[dev]'")
        return 2
    reasons = []
    best: tuple[int, str, dict[str, object]] | None = None
    for service in SERVICES:  # the next service only for what this one could not audit
        report, why = run_pip_audit(service)
        if report is None:
            reasons.append(f"{service}: {why}")
            continue
        unaudited = _unaudited(report)
        if best is None or unaudited < best[0]:
            best = (unaudited, service, report)
        if unaudited == 0:
            break
    if best is None:
        print(f"vulnerability service unreachable, nothing audited ({'; '.join(reasons)})")
        return 0
    verdict = decide(best[2], best[1])
    print("\n".join(verdict.lines))
    return 1 if verdict.failed else 0


def _unaudited(report: dict[str, object]) -> int:
    return sum(
        1
        for d in _list(report.get("dependencies"))
        if isinstance(d, dict) and "skip_reason" in d and d.get("name") != OWN_PACKAGE
    )


if __name__ == "__main__":
    sys.exit(main())
