"""The 21 CFR Part 11 and EU GMP Annex 11 controls: what QeMLflow covers, what the lab does.

One tuple of :class:`Control` records is the single source of the control-by-control
table: the compliance report (``qemlflow audit report``) renders it into its HTML, and
``docs/compliance.md`` is written from it by :func:`compliance_markdown` (a test checks
that the file matches), so the two cannot drift apart. Regenerate the document with
``python -m qemlflow.audit.controls docs/compliance.md``.

Each control says what the regulation asks, what QeMLflow does about it (the mechanism,
by name) and what remains the lab's own procedure. ``coverage`` is ``"software"`` when
QeMLflow alone meets the control, ``"shared"`` when it provides the mechanism and the lab
a procedure around it, and ``"procedure"`` when the control is the lab's alone.

Examples
--------
>>> [c.clause for c in CONTROLS if c.regulation == PART_11][:3]
['§11.10(a)', '§11.10(b)', '§11.10(c)']
>>> sorted({c.coverage for c in CONTROLS})
['procedure', 'shared', 'software']
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "ANNEX_11",
    "CONTROLS",
    "COVERAGE",
    "PART_11",
    "Control",
    "Coverage",
    "compliance_markdown",
]

PART_11: Final = "21 CFR Part 11"
ANNEX_11: Final = "EU GMP Annex 11"

Coverage = Literal["software", "shared", "procedure"]

#: What each coverage level means, as the report and the document say it.
COVERAGE: Final[dict[str, str]] = {
    "software": "covered by QeMLflow",
    "shared": "QeMLflow provides the mechanism; the lab's procedure completes it",
    "procedure": "the lab's procedure (QeMLflow supports it)",
}


@dataclass(frozen=True)
class Control:
    """One control of a regulation, and who meets it.

    Parameters
    ----------
    regulation
        :data:`PART_11` or :data:`ANNEX_11`.
    clause
        The clause as cited (``"§11.10(e)"``, ``"§9"``).
    title
        A short name for it (``"Audit trails"``).
    asks
        What the control asks, in a sentence or two.
    qemlflow
        What QeMLflow does about it: the mechanisms, by name.
    lab
        What remains the lab's procedure.
    coverage
        ``"software"``, ``"shared"`` or ``"procedure"`` (see :data:`COVERAGE`).
    """

    regulation: str
    clause: str
    title: str
    asks: str
    qemlflow: str
    lab: str
    coverage: Coverage

    @property
    def label(self) -> str:
        """``"21 CFR Part 11 §11.10(e)"``: how the control is cited."""
        return f"{self.regulation} {self.clause}"


# Mechanisms named in more than one control, written once.
_SIGNED_EVENTS = (
    "Every state change appends an audit event in the same database transaction as the "
    "change: UTC time, the action, the objects (by id or SHA-256 digest), the reason and "
    "details. The event's actor is the authenticated identity that signed it, never a "
    "claimed name ($QEMLFLOW_ACTOR decides nothing): each event carries its author's key "
    "fingerprint, authentication method and an Ed25519 signature over its canonical form "
    "and its chain position (seq and the previous event's hash)."
)
_APPEND_ONLY = (
    "The database refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) on audit rows "
    "through append-only triggers; on PostgreSQL a separate NOLOGIN owner role owns the "
    "tables and triggers, so the application role cannot alter or drop them."
)
_VERIFY = (
    "`qemlflow audit verify` checks the hash chain, every event's signature against the "
    "key enrolled for its signer at that point of the chain, that the signer's role "
    "allowed the action then, the signed checkpoints of the chain head (written every "
    "100 events and at every promotion, so a truncated tail is detected back to the last "
    "checkpoint), and the triggers; `qemlflow audit anchor` exports the head for a third "
    "party to hold."
)
_ENROLLMENT = (
    "Identities are enrolled, not claimed: a store's owner (admin) is created with the "
    "store; every other identity is enrolled by an admin, whose signed "
    "`identity.enrolled` event binds the person's name, normalized email and Ed25519 "
    "public key. There is no trust on first use: an event by a key that is not enrolled "
    "(or is revoked) fails verification."
)
_ROLES = (
    "Roles viewer < contributor < approver < admin, one per identity, assigned and "
    "changed by an admin (`identity.role_changed` events). The minimum role of each "
    "action is checked inside the one function that appends audit events, so no command "
    "can skip it, and re-checked by `audit verify` from the replayed chain (the role at "
    "that event): identity, API-key and store maintenance actions need admin; promotions, "
    "rollbacks and approved/reviewed signatures need approver; other writes need "
    "contributor; viewers write nothing."
)
_MEANINGFUL_SIGNATURE = (
    "A signature (`qemlflow sign OBJECT --meaning M --reason R`) is an audit event that "
    "records the signer's printed name, email and key fingerprint, the meaning "
    "(approved, reviewed or authored), the reason and the UTC time, with an Ed25519 "
    "signature over all of them and the signed object's digest."
)

CONTROLS: Final[tuple[Control, ...]] = (
    Control(
        PART_11,
        "§11.10(a)",
        "Validation",
        "Validate the system for accuracy, reliability, consistent intended performance, "
        "and the ability to discern invalid or altered records.",
        "Records are content-addressed (SHA-256 of RFC 8785 canonical JSON or of the "
        "bytes): `qemlflow store verify` re-hashes every blob and resolves every "
        "reference, `audit verify` names the first altered event, and `qemlflow "
        "reproduce RUN` reruns a run and reports IDENTICAL or where it differs. Each run "
        "records its environment (Python, packages, QeMLflow version and commit). The "
        "project's test suite exercises these checks against real stores.",
        "Validate the installed system for its intended use (user requirements, risk "
        "assessment, installation and operational qualification on the lab's platform, "
        "running the test suite there) and keep the validation records.",
        "shared",
    ),
    Control(
        PART_11,
        "§11.10(b)",
        "Accurate and complete copies",
        "Generate accurate and complete copies of records in human-readable and "
        "electronic form for inspection.",
        "`qemlflow audit report RUN -o F.html` writes one self-contained page (lineage to "
        "the raw data digest, data checks, environment, metrics, signatures, who did what "
        "in which role, the audit events and their verification); `audit log --json`, "
        "`runs show` and `store backup` give the electronic form, a backup being a "
        "complete copy that is verified as it is written.",
        "Hand copies to inspectors on request and keep the means to read them (a "
        "browser for the report, QeMLflow or any JSON reader for the rest).",
        "software",
    ),
    Control(
        PART_11,
        "§11.10(c)",
        "Protection of records",
        "Protect records so that they can be retrieved accurately and readily throughout "
        "the retention period.",
        "Blobs are immutable and named by their digest; model versions and alias history "
        "are append-only like the audit trail. " + _APPEND_ONLY + " `store gc` removes only "
        "blobs nothing refers to; `store backup` writes a verified copy and `store "
        "restore` refuses a copy that does not match its manifest.",
        "Set the retention period, back up on a schedule to separate media, test "
        "restores, and protect the store's folder and database server.",
        "shared",
    ),
    Control(
        PART_11,
        "§11.10(d)",
        "Limiting access",
        "Limit system access to authorized individuals.",
        _ENROLLMENT + " Viewers can read but write nothing. The HTTP service accepts only "
        "API keys created by an admin (stored hashed, revocable within a second); "
        "unattended CI acts through a service identity an admin enrolled.",
        "Control operating-system, file-system and database access to the store; keep "
        "identity folders and service key files private; revoke identities and API keys "
        "of people who leave.",
        "shared",
    ),
    Control(
        PART_11,
        "§11.10(e)",
        "Audit trails",
        "Use secure, computer-generated, time-stamped audit trails that record the date "
        "and time of operator entries and actions that create, modify or delete records; "
        "changes must not obscure earlier information; keep the trail as long as the "
        "records.",
        _SIGNED_EVENTS + " Events are hash-chained. " + _APPEND_ONLY + " " + _VERIFY,
        "Keep the trail as long as the records it covers, keep the system clock "
        "synchronized (NTP), hand anchors to a third party, and review the trail.",
        "shared",
    ),
    Control(
        PART_11,
        "§11.10(f)",
        "Operational checks",
        "Use operational system checks to enforce permitted sequencing of steps and events.",
        "A model reaches production only through `models promote`, whose gates run in "
        "order (metric thresholds, a smoke prediction that must reproduce the run, the "
        "required approvals) and refuse with an audit event when one fails. The "
        "experiment's own promotion policy is the floor: `--policy` can add gates, never "
        "remove or weaken them. Only finished runs can be signed or registered.",
        "Write each experiment's promotion policy (thresholds, number of approvals) "
        "into its configuration, under change control.",
        "software",
    ),
    Control(
        PART_11,
        "§11.10(g)",
        "Authority checks",
        "Use authority checks to ensure that only authorized individuals can use the "
        "system, sign records, alter records or perform the operation at hand.",
        _ROLES,
        "Decide and document who holds which role, and review the assignments "
        "periodically (`qemlflow identity list`).",
        "shared",
    ),
    Control(
        PART_11,
        "§11.10(i)",
        "Training",
        "Persons who develop, maintain or use the system have the education, training "
        "and experience to do their tasks.",
        "The README and `--help` document every command; errors name the problem and the fix.",
        "Train users, approvers and admins, and keep training records.",
        "procedure",
    ),
    Control(
        PART_11,
        "§11.10(j)",
        "Accountability for signatures",
        "Written policies hold individuals accountable for actions initiated under their "
        "electronic signatures.",
        "Each signature records its meaning and reason, and the report states whether "
        "the signer is the run's author, the model's registrant or independent.",
        "Write and enforce the policy; have each signer acknowledge it.",
        "procedure",
    ),
    Control(
        PART_11,
        "§11.10(k)",
        "Systems documentation",
        "Control the distribution of, access to and changes of system documentation.",
        "The documentation is versioned with the code (README, docs/design.md, and "
        "docs/compliance.md generated from the same data as this table), and each run "
        "records the QeMLflow version and commit it ran with.",
        "Control which documentation version applies to the installed release and manage "
        "changes to the installation (change control).",
        "shared",
    ),
    Control(
        PART_11,
        "§11.50",
        "Signature manifestations",
        "Signed records show the signer's printed name, the date and time of signing and "
        "the meaning of the signature, in every human-readable form of the record.",
        _MEANINGFUL_SIGNATURE + " `audit log` and the compliance report display them.",
        "Define what each meaning (approved, reviewed, authored) commits the signer to.",
        "software",
    ),
    Control(
        PART_11,
        "§11.70",
        "Signature/record linking",
        "Electronic signatures are linked to their records so that they cannot be "
        "excised, copied or otherwise transferred to falsify a record.",
        "The signed message includes the object's digest (a run's RFC 8785 digest, a "
        "dataset's table digest or a blob's SHA-256): a signature copied to another "
        "object, or an object changed after signing, fails `audit verify`; an exact "
        "replay of a signature event fails too, and promotion gates count a signer once.",
        "None beyond keeping the store intact.",
        "software",
    ),
    Control(
        PART_11,
        "§11.100",
        "Unique signatures, verified identity",
        "Each electronic signature is unique to one individual and never reused or "
        "reassigned; the identity of the individual is verified before a signature is "
        "established; the organization certifies to the FDA that its electronic "
        "signatures are binding.",
        "An identity is its email, NFKC-normalized and plain ASCII; enrollment refuses an "
        "email or display name that looks like an enrolled one (look-alike letters from "
        "another script, a trailing dot, 0/o, 1/l, rn/m). A key belongs to one email; it "
        "is replaced only by `identity rotate` (signed by the old key) and a revoked key "
        "signs nothing afterwards.",
        "Verify each person's identity (for example an ID document) before an admin "
        "enrolls them; send the FDA the certification letter of §11.100(c).",
        "shared",
    ),
    Control(
        PART_11,
        "§11.200",
        "Signature components",
        "Signatures not based on biometrics use at least two distinct identification "
        "components (an identification code and a password); in a continuous session "
        "the first signing uses all components and later ones at least one; a signature "
        "is used only by its genuine owner.",
        "A meaningful signature needs the identity's private key file (held by the person) "
        "unlocked with its passphrase; the OS-account and service keys can never sign "
        "approvals. `identity unlock --ttl` caches the unlocked key for a bounded session "
        "(like ssh-agent) and `identity lock` ends it; the report shows each event's "
        "authentication method.",
        "Forbid sharing keys and passphrases, choose the session length, and have users "
        "lock their session when they leave the workstation.",
        "shared",
    ),
    Control(
        PART_11,
        "§11.300",
        "Identification codes and passwords",
        "Keep each code/password combination unique; check, recall or revise them "
        "periodically; deauthorize lost or compromised credentials; safeguard against "
        "unauthorized use.",
        "Uniqueness by normalized email and look-alike refusal; `identity rotate` "
        "replaces a key, `identity revoke` (admin, or the holder) withdraws it, both as "
        "signed events; a wrong passphrase unlocks nothing; private keys are encrypted "
        "with the passphrase (PKCS8) or kept with file mode 0600.",
        "Set the passphrase policy and rotation schedule, handle lost keys (revoke, then "
        "enroll a new key), and monitor failed log-ins at the operating-system level.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§1",
        "Risk management",
        "Apply risk management throughout the life cycle, with decisions on validation "
        "and data-integrity controls based on a justified risk assessment.",
        "This table states which controls QeMLflow enforces and which it leaves open.",
        "Carry out and document the risk assessment for the lab's use of QeMLflow.",
        "procedure",
    ),
    Control(
        ANNEX_11,
        "§4",
        "Validation",
        "Validation documentation covers the life cycle; the system is validated for its "
        "intended use, including the integrity checks of data migrated or transferred.",
        "As for Part 11 §11.10(a); schema upgrades are versioned migrations, and a "
        "restore or an old store's upgrade keeps the audit chain verifiable (legacy "
        "events stay in the chain as they were written).",
        "Write the user requirements and the validation plan and report; assess the "
        "supplier; revalidate after upgrades.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§5",
        "Data",
        "Systems exchanging data electronically include built-in checks for the correct "
        "and secure entry and processing of data.",
        "Every input table is recorded with its digest; molecules are standardized and "
        "every rejected row is kept with its reason (shown in the report's data checks); "
        "splits, features and models are content-addressed steps.",
        "Check the source data before it enters the system.",
        "software",
    ),
    Control(
        ANNEX_11,
        "§7",
        "Data storage",
        "Data are secured physically and electronically against damage and checked for "
        "accessibility, readability and accuracy; regular back-ups are made and their "
        "integrity and restore are checked.",
        "`store verify` re-hashes every blob and checks every reference and the audit "
        "chain; `store backup` copies the whole store and verifies the copy; `store "
        "restore` checks the copy against its manifest and records the restore in the "
        "audit trail.",
        "Schedule backups, keep them on separate media or sites, and test restores periodically.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§8",
        "Printouts",
        "Clear printed copies of electronically stored data can be obtained; for batch "
        "release records, printouts indicate whether data changed since entry.",
        "The compliance report is a single printable page that states whether the audit "
        "chain and the run's blobs verify, i.e. whether anything changed since it was "
        "recorded.",
        "Keep printouts under document control when they are used as records.",
        "software",
    ),
    Control(
        ANNEX_11,
        "§9",
        "Audit trails",
        "Record all GMP-relevant changes and deletions (a system-generated audit trail), "
        "with the reason for a change or deletion documented; the trail is available in "
        "an intelligible form and regularly reviewed.",
        _SIGNED_EVENTS + " Reasons are required for signatures, role changes, revocations "
        "and promotion overrides. " + _VERIFY,
        "Review the audit trail regularly (the report and `audit log` are the views), "
        "and investigate what `audit verify` reports.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§11",
        "Periodic evaluation",
        "Evaluate computerised systems periodically to confirm they remain validated and "
        "compliant.",
        "`store verify` and `audit verify` exit non-zero on any problem, so they can run "
        "on a schedule; `identity list` shows who holds which role.",
        "Carry out and record the periodic review (access, audit trail, incidents, changes).",
        "procedure",
    ),
    Control(
        ANNEX_11,
        "§12",
        "Security",
        "Physical and logical controls restrict access to authorised persons; creating, "
        "changing and cancelling access authorisations is recorded; the system records "
        "the identity of operators entering, changing, confirming or deleting data, with "
        "date and time.",
        _ENROLLMENT + " " + _ROLES + " Enrollments, role changes, key rotations and "
        "revocations are themselves signed audit events.",
        "Physical security of servers and workstations, network and operating-system "
        "access control, and the approval of access requests before an admin acts.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§13",
        "Incident management",
        "Report and assess incidents, identify the root cause and take corrective and "
        "preventive action.",
        "`audit verify` and `store verify` name the first bad event or blob and what is "
        "wrong with it.",
        "Run the incident process: report, investigate, correct, prevent.",
        "procedure",
    ),
    Control(
        ANNEX_11,
        "§14",
        "Electronic signature",
        "Electronic signatures have the same impact as hand-written ones within the "
        "company, are permanently linked to their record, and include the time and date "
        "of signing.",
        _MEANINGFUL_SIGNATURE + " The signature covers the object's digest, so it stays "
        "linked to that exact record (see Part 11 §11.70).",
        "State in a policy that electronic signatures are binding like hand-written ones.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§15",
        "Release",
        "When a system is used to certify or release, only authorised persons do it, and "
        "the system identifies and records the person releasing.",
        "Promotion to production needs the approver role and the policy's approvals: k "
        "signatures with the required meaning by distinct approvers, none of them the "
        "run's author or the model's registrant. An override needs an admin and a reason "
        "and is signed, recorded with the floor it replaced, and shown in the report.",
        "Decide who may release and how many independent approvals each experiment "
        "needs; review every override.",
        "shared",
    ),
    Control(
        ANNEX_11,
        "§16",
        "Business continuity",
        "Provisions ensure continuity of support for critical processes if the system "
        "breaks down (manual or alternative systems), with the time to bring it back "
        "based on risk.",
        "Verified backups and restores, a PostgreSQL backend for a managed, replicated "
        "database, and anchors that let a restored trail be checked against the head "
        "held elsewhere.",
        "Write and test the continuity and disaster-recovery plan.",
        "procedure",
    ),
    Control(
        ANNEX_11,
        "§17",
        "Archiving",
        "Archived data are checked for accessibility, readability and integrity, also "
        "after changes to the system.",
        "A backup folder is a complete store that `store restore` and `audit verify` "
        "check; the compliance report is self-contained HTML with no external resources.",
        "Decide what is archived, where and for how long, and check archives periodically.",
        "shared",
    ),
)


def _escape_cell(text: str) -> str:
    return text.replace("|", "\\|")


def compliance_markdown() -> str:
    """Return docs/compliance.md: the control table and each control in prose.

    Examples
    --------
    >>> compliance_markdown().splitlines()[0]
    '# Compliance: 21 CFR Part 11 and EU GMP Annex 11'
    """
    lines = [
        "# Compliance: 21 CFR Part 11 and EU GMP Annex 11",
        "",
        "<!-- Written by `python -m qemlflow.audit.controls docs/compliance.md` from",
        "     qemlflow/audit/controls.py (the data the compliance report renders);",
        "     edit that file, not this one: a test checks that they match. -->",
        "",
        "QeMLflow records who did what to which record, with what authority, in a signed,",
        "append-only audit trail. This page says, control by control, what the software",
        "does and what remains the lab's procedure. The same table is part of every",
        "compliance report (`qemlflow audit report RUN -o report.html`), next to the",
        "identity, role, key fingerprint and authentication method of each event about",
        "the run, and the relation of each signer to the run's author and the model's",
        "registrant.",
        "",
        "What the report shows about people and authority, for every event about the run,",
        "its model versions, their promotions and the signatures on any of them:",
        "",
        "- the identity that signed the event (`Name <email>`), its role *at that point of",
        "  the chain* (replayed from the identity events, as `audit verify` does), the first",
        "  16 hex digits of its key fingerprint and how the key was unlocked",
        "  (`passphrase`, `os-account` or `service-key`);",
        "- for each signature its meaning, reason and time, and whether the signer is the",
        "  run's author (actor of `run.started`), the model's registrant (actor of",
        "  `model.registered`) or independent, compared by normalized email;",
        "- for each promotion the policy applied and the experiment's own (the floor), the",
        "  gates, every approval and whether it counted, and any override: the admin, the",
        "  reason, the floor it replaced;",
        "- for each identity involved, who enrolled it with which role, and every later role",
        "  change, key rotation and revocation.",
        "",
        "Coverage, in the table below:",
        "",
        *[f"- **{k}**: {v}." for k, v in COVERAGE.items()],
        "",
        "| Control | Title | Coverage |",
        "|---|---|---|",
    ]
    lines += [f"| {c.label} | {_escape_cell(c.title)} | {c.coverage} |" for c in CONTROLS]
    for regulation in (PART_11, ANNEX_11):
        lines += ["", f"## {regulation}"]
        for c in CONTROLS:
            if c.regulation != regulation:
                continue
            lines += [
                "",
                f"### {c.clause} {c.title} ({c.coverage})",
                "",
                f"**What it asks.** {c.asks}",
                "",
                f"**What QeMLflow does.** {c.qemlflow}",
                "",
                f"**What remains the lab's procedure.** {c.lab}",
            ]
    return "\n".join(lines) + "\n"


def _main(argv: list[str]) -> int:
    text = compliance_markdown()
    if argv:
        Path(argv[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
