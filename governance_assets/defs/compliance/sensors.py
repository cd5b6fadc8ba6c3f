"""After a suite's evaluation, its compliance report; after a report, the audit log."""

import dagster as dg

from governance_assets.defs.jobs import after_evaluation, compliance_report, record_audit

report_after_evaluation = after_evaluation(
    dg.DagsterRunStatus.SUCCESS,
    "report_after_evaluation",
    "Requests the compliance report of the suite an `evaluate_suite` run just evaluated.",
    compliance_report,
    "report",
)
report_after_blocked_evaluation = after_evaluation(
    dg.DagsterRunStatus.FAILURE,
    "report_after_blocked_evaluation",
    "A failed evaluation (for example a blocking gate) still gets its compliance report.",
    compliance_report,
    "report",
)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[compliance_report],
    request_job=record_audit,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After each successful compliance report run, records the new verdicts, decision and report in the audit ledger.",
)
def audit_after_report(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """Records the new verdicts, decision and report in the audit ledger."""
    return dg.RunRequest(run_key=f"audit:{context.dagster_run.run_id}")
