"""After a suite's evaluation, its compliance report; after a report, the audit log."""

import dagster as dg

from governance_assets.defs.jobs import compliance_report, evaluate_suite, record_audit


def _report_after(status: dg.DagsterRunStatus, name: str, description: str) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=name,
        description=description,
        run_status=status,
        monitored_jobs=[evaluate_suite],
        request_job=compliance_report,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def request_report(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
        suite = context.dagster_run.tags.get("dagster/partition")
        if not suite:
            return dg.SkipReason("the evaluation ran over a range of suites; materialise their reports by backfill")
        return dg.RunRequest(run_key=f"report:{context.dagster_run.run_id}", partition_key=suite)

    return request_report


report_after_evaluation = _report_after(
    dg.DagsterRunStatus.SUCCESS,
    "report_after_evaluation",
    "Requests the compliance report of the suite an `evaluate_suite` run just evaluated.",
)
report_after_blocked_evaluation = _report_after(
    dg.DagsterRunStatus.FAILURE,
    "report_after_blocked_evaluation",
    "A failed evaluation (for example a blocking gate) still gets its compliance report.",
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
