"""The command line's compliance parts: the demo's compliance step (each suite's report, as the
`report_after_evaluation` sensor would request it, then the audit log) and `audit verify|history`."""

import argparse
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from governance_assets.lib.compliance import audit, audit_cli
from governance_assets.lib.compliance.audit_cli import LEDGER

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _print_report(home: Path, suite: str) -> None:
    path = home / "warehouse" / "compliance" / "report" / f"{suite}.parquet"
    if not path.exists():
        print("  compliance/report: not written")
        return
    rows = pq.read_table(path).to_pylist()
    for model in sorted({row["model"] for row in rows}):
        mine = [row for row in rows if row["model"] == model]
        counts = {s: sum(row["status"] == s for row in mine) for s in ("met", "not met", "not assessed")}
        print(f"  {model}: {counts['met']} met, {counts['not met']} not met, {counts['not assessed']} not assessed")
        for row in mine:
            if row["status"] == "not met":
                print(f"    not met: {row['framework']} {row['article']} {row['title']}: {row['evidence'][:160]}")
        print(f"    report: {mine[0]['report_path']}")


def run_compliance(instance: dg.DagsterInstance, definitions: dg.Definitions, home: Path, suites: list[str]) -> bool:
    """Materialise `compliance/report` for each suite, then `compliance/audit_log`; print both."""
    report_job = definitions.resolve_job_def("compliance_report")
    ok = True
    for suite in suites:
        print(f"\n=== suite {suite}: compliance report ===", flush=True)
        result = report_job.execute_in_process(
            instance=instance, partition_key=suite, raise_on_error=False, run_config=QUIET
        )
        ok &= result.success
        _print_report(home, suite)
    audit_result = definitions.resolve_job_def("record_audit").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    ok &= audit_result.success
    ledger = home / LEDGER
    verification = audit.verify(ledger)
    print(
        f"\nAudit ledger {ledger}: {'intact' if verification.intact else 'NOT INTACT'}, {verification.entries} entries"
    )
    print("  python -m governance_assets.cli audit verify            # prove it intact")
    print("  python -m governance_assets.cli audit history simple/model1   # one model's history")
    return ok


def recorded_audit_head(instance: dg.DagsterInstance) -> str | None:
    """The ledger head that `compliance/audit_log` recorded in its last materialisation (kept in
    Dagster's event log, apart from the ledger: a ledger cut short at its end is caught too)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(["compliance", "audit_log"]))
    head = event.asset_materialization.metadata.get("head") if event and event.asset_materialization else None
    return str(head.value) if head is not None else None


def run_audit(args: argparse.Namespace, home: Path) -> int:
    """`audit verify` (against the head Dagster recorded) or `audit history MODEL`."""
    with dg.DagsterInstance.get() as instance:
        head = recorded_audit_head(instance)
    return audit_cli.run(args, home, head)
