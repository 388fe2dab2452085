"""A self-contained HTML compliance report for a run or a model.

Everything an auditor asks for on one page, with no external resources: the run's
lineage down to the raw data digest, the data checks (rejected rows and why), the
environment, the metrics with their confidence intervals, the plots, the verification of
the audit chain and of the run's blobs (with the chain head to compare against an anchor
held elsewhere), and who did what with what authority: for every event about the run and
its models the identity, its role at that time, the key fingerprint and the
authentication method; each signature's meaning and its relation to the run's author and
the model's registrant; each promotion's gates, approvals and any override
(:mod:`qemlflow.audit.accountability`). It ends with the 21 CFR Part 11 / EU GMP Annex 11
control table (:mod:`qemlflow.audit.controls`).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qemlflow.audit.accountability import Accountability, EventAccount, PromotionAccount
    from qemlflow.store import RunRecord, Store

__all__ = ["render_report", "resolve_run", "write_report"]

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;color:#1d2330;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:2px solid #dfe3ea;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #dfe3ea;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f5f9}code,.mono{font-family:Menlo,Consolas,monospace;font-size:.82rem}
.ok{color:#0a7d32;font-weight:600}.bad{color:#b3141b;font-weight:600}
.verdict{padding:.8rem 1rem;border-radius:6px;margin:1rem 0}
.verdict.ok{background:#e8f6ed}.verdict.bad{background:#fbeaea}
ul.tree{list-style:none;padding-left:1.1rem;border-left:1px dotted #aab}
ul.tree li{margin:.15rem 0}.muted{color:#667}img{max-width:520px;border:1px solid #dfe3ea}
h3{font-size:1rem;margin-top:1.2rem}table.wide{font-size:.8rem}.cov-software{color:#0a7d32;font-weight:600}
.cov-shared{color:#8a5a00;font-weight:600}.cov-procedure{color:#445;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False, wide: bool = False
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    kind = " class=wide" if wide else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _prose(text: str) -> str:
    """Escape ``text`` and show its `backquoted` commands as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"{_fmt(value[0])} – {_fmt(value[1])}"
    return "—" if value is None else str(value)


def resolve_run(store: Store, ref: str) -> tuple[RunRecord, str | None]:
    """The run a report is about, and the model digest when ``ref`` names a model.

    ``ref`` is a run id (or prefix), a ``model.joblib`` path, or a model digest (prefix).
    """
    import hashlib

    from qemlflow.errors import QeMLflowError
    from qemlflow.store import StoreError

    try:
        return store.get_run(ref), None
    except StoreError:
        pass
    path = Path(ref)
    if path.is_dir():
        path = path / "model.joblib"
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ref.lower()
    for step in store.find_steps(output_prefix=digest):
        if step.step == "fit":
            runs = store.runs_using_step(step.key)
            if runs:
                return store.get_run(runs[-1]), step.output
    raise QeMLflowError(
        f"'{ref}' is not a run or a model in this store",
        "give a run id from 'qemlflow runs list' or a model.joblib written by a recorded run",
    )


def _lineage_html(node: dict[str, Any]) -> str:
    kind = node["kind"]
    if kind == "raw":
        label = f"<b>raw data</b> <span class=mono>sha256 {_e(node['digest'])}</span>"
    elif kind == "run":
        label = f"<b>run {_e(node['id'])}</b> {_e(node['name'])} ({_e(node['status'])})"
    else:
        again = " <span class=muted>(shown above)</span>" if node.get("repeated") else ""
        label = (
            f"<b>{_e(node['step'])}</b> v{_e(node['version'])} "
            f"<span class=mono>key {_e(node['key'][:16])}… → {_e(node['output'][:16])}…</span>"
            + again
        )
    children = [_lineage_html(child) for child in node.get("inputs", [])]
    inner = f"<ul class=tree>{''.join(children)}</ul>" if children else ""
    return f"<li>{label}{inner}</li>"


def _section_metrics(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "<p class=muted>No metrics were recorded.</p>"
    parts = [p for p in ("train", "valid", "test") if p in metrics]
    names = list(metrics.get("test", {}) or (metrics.get(parts[0], {}) if parts else {}))
    ci_key = next((k for k in metrics if k.startswith("ci")), "ci95")
    ci = metrics.get(ci_key, {}).get("test", {})
    header = ["metric", *[f"{p} (n={metrics.get('n', {}).get(p, '?')})" for p in parts]]
    header.append(f"test {ci_key[2:]}% bootstrap CI")
    rows = [[n, *[_fmt(metrics[p].get(n)) for p in parts], _fmt(ci.get(n))] for n in names]
    out = _table(header, rows)
    interval = metrics.get("interval")
    if interval:
        out += (
            f"<p>Conformal prediction intervals: nominal coverage "
            f"{_fmt(interval.get('nominal_coverage'))}, observed on the test set "
            f"{_fmt(interval.get('test_coverage'))}, mean width "
            f"{_fmt(interval.get('test_mean_width'))}.</p>"
        )
    return out


def _section_data(store: Store, run: RunRecord) -> str:
    from qemlflow.pipeline.steps import DatasetCodec

    step = next((s for s in run.steps if s.step == "standardize" and s.output), None)
    if step is None or not step.output or not store.has_blob(step.output):
        return "<p class=bad>The standardized dataset of this run is not in the store.</p>"
    dataset = DatasetCodec().decode(store.get_bytes(step.output))
    summary = dataset.summary()
    counts = _table(
        ["source", "input rows", "molecules", "merged duplicates", "rejected"],
        [
            [
                dataset.source,
                summary["rows"],
                summary["molecules"],
                summary["merged"],
                summary["rejected"],
            ]
        ],
    )
    reasons = summary.get("rejected_by_reason", {})
    by_reason = (
        _table(["reason", "rows"], sorted(reasons.items()))
        if reasons
        else "<p>No row rejected.</p>"
    )
    rejected = dataset.rejected.head(50)
    detail = ""
    if len(rejected):
        detail = _table(
            ["row", "input SMILES", "reason", "detail"],
            rejected[["row", "input_smiles", "reason", "detail"]].itertuples(index=False),
        )
        if summary["rejected"] > 50:
            detail += f"<p class=muted>First 50 of {summary['rejected']} rejected rows.</p>"
    return (
        counts + f"<p>Raw data digest <span class=mono>{_e(dataset.source_digest)}</span>; "
        f"labels: {_e(', '.join(dataset.target_names))} ({_e(dataset.task)}).</p>"
        + by_reason
        + detail
    )


def _section_environment(store: Store, run: RunRecord) -> str:
    if not run.environment or not store.has_blob(run.environment):
        return "<p class=bad>No environment snapshot recorded.</p>"
    env = json.loads(store.get_bytes(run.environment))
    packages = env.get("packages", {}) or {}
    key_libs = ["qemlflow", "rdkit", "numpy", "scipy", "scikit-learn", "lightgbm", "pandas"]
    rows: list[list[Any]] = []
    for key in ("python", "os", "cpu", "qemlflow", "git"):
        if key in env:
            value = env[key]
            rows.append([key, json.dumps(value) if isinstance(value, dict | list) else value])
    rows += [[f"package {n}", packages[n]] for n in key_libs if n in packages]
    rows.append(["installed packages", f"{len(packages)} (all recorded in the snapshot)"])
    return _table(["", "value"], rows) + (
        f"<p class=muted>Snapshot blob <span class=mono>{_e(run.environment)}</span></p>"
    )


def _section_plots(store: Store, run: RunRecord) -> str:
    images = []
    for artifact in run.artifacts:
        if artifact.name.endswith(".png") and store.has_blob(artifact.digest):
            data = base64.b64encode(store.get_bytes(artifact.digest)).decode("ascii")
            images.append(
                f"<figure><img alt='{_e(artifact.name)}' src='data:image/png;base64,{data}'>"
                f"<figcaption class=muted>{_e(artifact.name)} "
                f"<span class=mono>{_e(artifact.digest[:16])}…</span></figcaption></figure>"
            )
    return "".join(images) or "<p class=muted>No plots were recorded.</p>"


_LEGACY = "<span class=muted>not recorded (event written before events were signed)</span>"


def _who(account: EventAccount) -> list[str]:
    """Identity, role, key and authentication cells of one event (HTML)."""
    key = f"<span class=mono>{_e(account.fingerprint16)}</span>" if account.fingerprint else "—"
    if not account.signed:  # the legacy prefix of the chain: nobody's authority was checked
        return [_e(account.actor), _LEGACY, key, "—"]
    return [
        _e(account.actor),
        _e(account.role) if account.role else "<span class=bad>not enrolled</span>",
        key,
        _e(account.auth) if account.auth else "<span class=bad>not recorded</span>",
    ]


def _short(ref: str | None) -> str:
    """A digest cut to 16 hex digits; other ids (runs, model versions) whole."""
    if ref is not None and len(ref) == 64 and all(c in "0123456789abcdef" for c in ref):
        return f"<span class=mono>{_e(ref[:16])}…</span>"
    return _e(ref)


def _section_events(accounts: Accountability) -> str:
    rows = [
        [
            _e(a.seq),
            _e(a.timestamp),
            _e(a.action),
            *_who(a),
            _e(a.reason or ""),
            f"<span class=mono>{_e(a.hash[:16])}…</span>",
        ]
        for a in accounts.events
    ]
    return _table(
        [
            "seq",
            "time (UTC)",
            "action",
            "identity",
            "role at that time",
            "key fingerprint",
            "authentication",
            "reason",
            "event hash",
        ],
        rows,
        raw=True,
        wide=True,
    )


def _relation_html(relation: Sequence[str]) -> str:
    from qemlflow.audit.accountability import INDEPENDENT

    text = " and ".join(relation)
    return (
        f"<span class=ok>{_e(text)}</span>"
        if INDEPENDENT in relation
        else (f"<span class=bad>{_e(text)}</span>")
    )


def _section_signatures(accounts: Accountability) -> str:
    if not accounts.signatures:
        return "<p class=muted>No electronic signature on this run or its models.</p>"
    rows = []
    for s in accounts.signatures:
        if s.valid is None:
            check = "<span class=muted>not checked</span>"
        elif s.valid:
            check = "<span class=ok>valid</span>"
        else:
            check = f"<span class=bad>INVALID</span> {_e('; '.join(s.problems))}"
        rows.append(
            [
                _e(s.signer),
                *_who(s.event)[1:],
                f"<b>{_e(s.meaning)}</b>",
                _e(s.reason),
                _e(s.signed_at),
                f"{_e(s.object_kind)} {_short(s.object_id)}",
                _relation_html(s.relation),
                check,
            ]
        )
    return _table(
        [
            "signer",
            "role at that time",
            "key fingerprint",
            "authentication",
            "meaning",
            "reason",
            "signed at (UTC)",
            "signed object",
            "relation to the run",
            "check",
        ],
        rows,
        raw=True,
        wide=True,
    )


def _plain(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return _fmt(value)


def _approvals_html(promotion: PromotionAccount) -> str:
    if not promotion.approvals:
        return ""
    rows = [
        [
            _e(a.get("seq")),
            _e(a.get("signer")),
            _e(a.get("meaning")),
            "<span class=ok>counted</span>"
            if a.get("counted")
            else f"<span class=bad>not counted</span> {_e(a.get('why_not') or '')}",
        ]
        for a in promotion.approvals
    ]
    return (
        f"<p>Approvals counted: <b>{len(promotion.counted)}</b> of "
        f"{len(promotion.approvals)} signatures with the meaning the policy asks for.</p>"
        + _table(["seq", "signer", "meaning", "counted?"], rows, raw=True)
    )


def _policy_html(promotion: PromotionAccount) -> str:
    lines = []
    if promotion.policy is not None:
        lines.append(f"Policy applied: <code>{_e(_plain(promotion.policy))}</code>")
    floor = promotion.floor
    if isinstance(floor, dict) and floor.get("source") == "none":
        lines.append("The experiment's config sets no promotion policy (no floor).")
    elif isinstance(floor, dict):
        lines.append(
            f"The experiment's own policy (the floor), from {_e(floor.get('source'))}: "
            f"<code>{_e(_plain(floor.get('policy')))}</code>"
        )
    if promotion.weakened:
        lines.append(
            "<span class=bad>The given policy tried to weaken</span> (the floor held): "
            + _e("; ".join(promotion.weakened))
        )
    if promotion.refused_at:
        lines.append(f"<span class=bad>Refused at the {_e(promotion.refused_at)} gate.</span>")
    return "".join(f"<p>{line}</p>" for line in lines)


def _section_promotions(accounts: Accountability) -> str:
    if not accounts.promotions:
        return "<p class=muted>No model of this run was promoted.</p>"
    parts = []
    for p in accounts.promotions:
        who = _who(p.event)
        head = (
            f"<p><b>seq {_e(p.event.seq)}: {_e(p.event.action)}</b> "
            f"{_e(p.model_version)} → {_e(p.alias)} at {_e(p.event.timestamp)} by {who[0]} "
            f"(role {who[1]}, key {who[2]}, {who[3]})"
            + (f"; policy from {_e(p.policy_source)}" if p.policy_source else "")
            + (f"; reason: {_e(p.event.reason)}" if p.event.reason else "")
            + "</p>"
        )
        gates = (
            _table(
                ["gate", "passed", "detail"],
                [
                    [g.get("gate"), "yes" if g.get("passed") else "NO", g.get("detail")]
                    for g in p.gates
                ],
            )
            if p.gates
            else ""
        )
        override = ""
        if p.override is not None:
            rows = [[k, _plain(v)] for k, v in sorted(p.override.items())]
            override = (
                "<div class='verdict bad'><b>Override of the experiment's promotion policy</b> "
                f"by {who[0]} (role {who[1]}){_table(['', 'value'], rows)}</div>"
            )
        parts.append(head + _policy_html(p) + gates + _approvals_html(p) + override)
    return "".join(parts)


def _section_identities(accounts: Accountability) -> str:
    if not accounts.identities:
        return (
            "<p class=muted>None of the actors of this run is enrolled in the store's "
            "chain (events written before identities were enrolled).</p>"
        )
    rows = []
    for i in accounts.identities:
        history = "<br>".join(
            f"seq {seq}: {_e(what)} by {_e(by)}" + (f" ({_e(why)})" if why else "")
            for seq, what, by, why in i.history
        )
        keys = "<br>".join(
            f"<span class=mono>{_e(k.fingerprint[:16])}</span> {_e(k.auth)} "
            f"from seq {k.valid_from_seq}"
            + (f", revoked at seq {k.revoked_seq}" if k.revoked_seq is not None else "")
            for k in i.keys
        )
        rows.append([_e(i.display), _e(i.kind), _e(i.role), _e(i.status), keys, history])
    return _table(
        ["identity", "kind", "role now", "status", "keys", "enrollment and role history"],
        rows,
        raw=True,
    )


def _section_who(accounts: Accountability) -> str:
    author = accounts.author or "not recorded"
    registered = "; ".join(f"{_e(spec)} by {_e(who)}" for spec, who in accounts.registrants.items())
    return (
        f"<p>Run author (actor of <code>run.started</code>): <b>{_e(author)}</b>. "
        f"Model versions registered from this run: {registered or 'none'}.</p>"
        f"<h3>Audit trail of this run</h3>{_section_events(accounts)}"
        f"<h3>Electronic signatures</h3>{_section_signatures(accounts)}"
        f"<h3>Promotions</h3>{_section_promotions(accounts)}"
        f"<h3>Identities and their authority</h3>{_section_identities(accounts)}"
    )


def _section_controls() -> str:
    from qemlflow.audit.controls import CONTROLS, COVERAGE

    legend = "; ".join(f"<b>{_e(k)}</b>: {_e(v)}" for k, v in COVERAGE.items())
    rows = [
        [
            f"<b>{_e(c.label)}</b><br>{_e(c.title)}",
            _prose(c.asks),
            _prose(c.qemlflow),
            _prose(c.lab),
            f"<span class=cov-{_e(c.coverage)}>{_e(c.coverage)}</span>",
        ]
        for c in CONTROLS
    ]
    return f"<p class=muted>Coverage: {legend}.</p>" + _table(
        [
            "control",
            "what it asks",
            "what QeMLflow does",
            "what remains the lab's procedure",
            "coverage",
        ],
        rows,
        raw=True,
        wide=True,
    )


def render_report(store: Store, ref: str) -> str:
    """Return the HTML report of a run or model (one self-contained page)."""
    from qemlflow._version import __version__
    from qemlflow.audit.accountability import account_for
    from qemlflow.audit.integrity import verify_trail
    from qemlflow.pipeline.lineage import lineage
    from qemlflow.pipeline.reproduce import _check_blobs
    from qemlflow.store.records import utc_now

    run, model = resolve_run(store, ref)
    accounts = account_for(store, run, model)
    chain = verify_trail(store, None)
    head = store.audit_head()
    blob_problems = _check_blobs(store, run)
    sound = chain.ok and not blob_problems
    verdict_items = [
        f"Audit chain: {chain.n_events} events, "
        + ("<span class=ok>intact</span>" if chain.ok else "<span class=bad>BROKEN</span>"),
        f"Chain head: seq {_e(head.get('seq'))}, "
        f"hash <span class=mono>{_e(head.get('hash'))}</span>",
        "Run blobs re-hashed: "
        + (
            "<span class=ok>all intact</span>"
            if not blob_problems
            else "<span class=bad>"
            + _e("; ".join(f"{p.what}: {p.problem}" for p in blob_problems))
            + "</span>"
        ),
    ]
    verdict_items += [f"<span class=bad>{_e(p)}</span>" for p in chain.problems[:5]]
    graph = lineage(store, run.id)
    title = f"QeMLflow compliance report — run {run.id}"
    model_line = (
        f"<p>Model (fit output) digest <span class=mono>{_e(model)}</span></p>" if model else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1>
<p class=muted>Generated {_e(utc_now())} by QeMLflow {_e(__version__)} from store
<span class=mono>{_e(store.root)}</span>.</p>
{
        _table(
            ["run", "experiment", "status", "started (UTC)", "finished (UTC)", "seed"],
            [[run.id, run.name, run.status, run.started_at, run.finished_at, run.seed]],
        )
    }
{model_line}
<div class="verdict {"ok" if sound else "bad"}"><b>Verification:
{"sound" if sound else "NOT sound"}</b><ul>{
        "".join(f"<li>{i}</li>" for i in verdict_items)
    }</ul></div>
<h2>Metrics</h2>{_section_metrics(run.metrics or {})}
<h2>Plots</h2>{_section_plots(store, run)}
<h2>Lineage</h2><ul class=tree>{_lineage_html(graph)}</ul>
<h2>Data checks</h2>{_section_data(store, run)}
<h2>Environment</h2>{_section_environment(store, run)}
<h2>Who, how, with what authority</h2>{_section_who(accounts)}
<h2>21 CFR Part 11 and EU GMP Annex 11 controls</h2>{_section_controls()}
<h2>Configuration</h2><pre class=mono>{_e(json.dumps(run.config, indent=2))}</pre>
</body></html>
"""


def write_report(store: Store, ref: str, path: str | Path) -> Path:
    """Write the HTML report of a run or model to ``path`` and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(store, ref), encoding="utf-8")
    return out
