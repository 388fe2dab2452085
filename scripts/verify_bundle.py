#!/usr/bin/env python3
"""Check a QeMLflow verification bundle without QeMLflow: step keys and the audit chain.

    qemlflow runs export RUN --out bundle.json
    python scripts/verify_bundle.py bundle.json

Needs only the standard library and an RFC 8785 (JCS) implementation
(``pip install rfc8785``). It recomputes, from the bundle alone:

- every step key: sha256 hex of JCS({"step", "version", "params", "inputs",
  "libraries"}), plus "integral_floats" when params hold a float such as 1.0;
- that every step's inputs are keys of earlier steps (the dataset step's input, the raw
  file's sha256, is its own output);
- every dataset version id, with the same formula;
- the audit chain: each event's hash over its content (all fields but hash,
  hash_scheme and signature; "signer" and "auth" only for "jcs-signed" events; JCS, or
  Python's json.dumps for "legacy-json" events), and each prev_hash against the hash
  before it. (Event signatures are checked by `qemlflow audit verify`, which replays the
  enrolled keys.)

Exit status 0 when everything checks, 1 naming each mismatch, 2 for an unreadable file.
The formulas are in docs/keys.md.
"""

import argparse
import hashlib
import json
import sys

import rfc8785

GENESIS = "0" * 64
EVENT_FIELDS = ("seq", "timestamp", "actor", "action", "objects", "reason", "details")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def integral_floats(value, path=()):
    """Paths (lists of keys and indices) of floats with an integral value, keys sorted."""
    if isinstance(value, float) and value.is_integer():
        return [list(path)]
    found = []
    if isinstance(value, dict):
        for key in sorted(value):
            found += integral_floats(value[key], (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += integral_floats(item, (*path, index))
    return found


def content_key(step, version, params, inputs, libraries):
    description = {
        "step": step,
        "version": version,
        "params": params,
        "inputs": inputs,
        "libraries": libraries,
    }
    floats = integral_floats(params)
    if floats:
        description["integral_floats"] = floats
    return sha256_hex(rfc8785.dumps(description))


def legacy_json(value):
    """How QeMLflow hashed audit events before RFC 8785 ("legacy-json")."""
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def check_steps(steps):
    problems, seen = [], set()
    for entry in steps:
        label = f"step {entry.get('position')} ({entry.get('step')}, key {entry.get('key')})"
        record = entry.get("record")
        if record is None:
            problems.append(f"{label}: no step record in the bundle; its key cannot be checked")
            continue
        if record.get("libraries") is None:
            problems.append(
                f"{label}: recorded before libraries were kept; its key cannot be recomputed"
            )
            continue
        recomputed = content_key(
            record["step"],
            record["version"],
            record["params"],
            record["inputs"],
            record["libraries"],
        )
        if recomputed != entry.get("key"):
            problems.append(
                f"{label}: key mismatch - recomputed {recomputed} from its step, version, "
                "params, inputs and libraries"
            )
        if record.get("step") != entry.get("step"):
            problems.append(f"{label}: the record is of step {record.get('step')!r}")
        if entry.get("output") is not None and record.get("output") != entry.get("output"):
            problems.append(f"{label}: output {entry.get('output')} differs from the record's")
        for key in record["inputs"]:
            is_raw = record["step"] == "dataset" and key == record.get("output")
            if key not in seen and not is_raw:
                problems.append(f"{label}: input {key} is not the key of an earlier step")
        seen.add(entry.get("key"))
    return problems


def check_datasets(datasets):
    problems = []
    for d in datasets:
        recomputed = content_key(d["step"], d["version"], d["params"], d["inputs"], d["libraries"])
        if recomputed != d["id"]:
            problems.append(
                f"dataset version {d['id']} ({d.get('name')}): id mismatch - "
                f"recomputed {recomputed}"
            )
    return problems


def check_audit(events):
    problems, previous, expected_seq = [], GENESIS, 1
    for event in events:
        label = f"audit event {event.get('seq')} ({event.get('action')})"
        if event.get("seq") != expected_seq:
            problems.append(f"{label}: expected seq {expected_seq}")
        content = {name: event.get(name) for name in EVENT_FIELDS}
        content["prev_hash"] = event.get("prev_hash")
        scheme = event.get("hash_scheme", "jcs")
        if scheme == "jcs-signed":
            content["signer"] = event.get("signer")
            content["auth"] = event.get("auth")
            data = rfc8785.dumps(content)
        elif scheme == "jcs":
            data = rfc8785.dumps(content)
        elif scheme == "legacy-json":
            data = legacy_json(content)
        else:
            problems.append(f"{label}: unknown hash scheme {scheme!r}")
            continue
        if sha256_hex(data) != event.get("hash"):
            problems.append(f"{label}: hash mismatch - its content was changed")
        if event.get("prev_hash") != previous:
            problems.append(f"{label}: prev_hash does not match the hash of the event before")
        previous = event.get("hash")
        expected_seq = (event.get("seq") or expected_seq) + 1
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the JSON file of `qemlflow runs export`")
    args = parser.parse_args(argv)
    try:
        with open(args.bundle, encoding="utf-8") as handle:  # noqa: PTH123 - stdlib only
            bundle = json.load(handle)
        steps = bundle["steps"]
        events = bundle["audit"]["events"]
        datasets = bundle.get("datasets", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read {args.bundle}: {exc}", file=sys.stderr)
        return 2
    problems = check_steps(steps) + check_datasets(datasets) + check_audit(events)
    run = bundle.get("run", {}).get("id")
    if problems:
        print(f"bundle of run {run}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  MISMATCH {problem}")
        return 1
    print(
        f"bundle of run {run}: OK - {len(steps)} step keys, {len(datasets)} dataset "
        f"version(s) and {len(events)} audit events recomputed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
