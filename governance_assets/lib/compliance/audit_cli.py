"""`python -m governance_assets.cli audit verify|history MODEL`: check the audit ledger, list a
model's history."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from governance_assets.lib.compliance import audit

LEDGER = Path("compliance") / "audit_log.jsonl"
"""The ledger's place under GOVERNANCE_HOME (written by the `compliance/audit_log` asset)."""


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("audit", help="verify the audit ledger or list a model's history")
    actions = parser.add_subparsers(dest="audit_command", required=True)
    verify = actions.add_parser("verify", help="prove the ledger intact or name the first altered entry")
    verify.add_argument("--ledger", type=Path, help="ledger file (default: GOVERNANCE_HOME/compliance/audit_log.jsonl)")
    verify.add_argument("--expect-head", help="the head hash recorded elsewhere (e.g. the asset's `head` metadata)")
    history = actions.add_parser("history", help="every entry about one model, oldest first")
    history.add_argument("model")
    history.add_argument("--ledger", type=Path)
    history.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace, home: Path, recorded_head: str | None) -> int:
    """Run an `audit` command; `recorded_head` is the head the last materialisation recorded
    (used by `verify` unless `--expect-head` is given). Exit code 0 when intact, 1 otherwise."""
    path = args.ledger or home / LEDGER
    if args.audit_command == "verify":
        expected = args.expect_head or recorded_head
        result = audit.verify(path, expected_head=expected)
        if result.intact:
            anchor = " and ends at the recorded head" if expected else " (no recorded head to compare the end with)"
            print(f"{path}: intact, {result.entries} entries, head {result.head}{anchor}")
            return 0
        where = f"line {result.first_bad_line}: " if result.first_bad_line else ""
        print(f"{path}: NOT INTACT after {result.entries} good entries: {where}{result.reason}")
        return 1
    entries = audit.history(path, args.model)
    for entry in entries:
        if args.json:
            print(json.dumps(entry, sort_keys=True))
            continue
        details = entry.get("details") or {}
        fact = details.get("status") or details.get("decision") or details.get("report_hash", "")[:12] or ""
        print(
            f"{entry['recorded_at']}  #{entry['sequence']:<5} {entry['kind']:<16} {entry.get('suite') or '-':<12} "
            f"{entry['subject']:<28} {fact}  (run {str(entry['dagster_run_id'])[:8]}, policy {str(entry['policy_hash'])[:8]})"
        )
    if not entries:
        print(f"{path}: no entries for {args.model}")
    return 0
