"""The nightly evaluation: a dated suite that runs the policy's evaluation plan."""

import dagster as dg

from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.defs.partitions import HELM_SUITES


@dg.schedule(
    job_name="evaluate_suite",
    cron_schedule="0 2 * * *",
    execution_timezone="UTC",
    description="At 02:00 UTC: creates the suite YYYY-MM-DD and runs the policy's evaluation plan into it, "
    "then ingests, records and judges it (evaluate_suite).",
)
def nightly_evaluation(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Creates the suite named after the scheduled date and evaluates the plan into it."""
    suite = context.scheduled_execution_time.strftime("%Y-%m-%d")
    if not context.instance.has_dynamic_partition(HELM_SUITES, suite):
        context.instance.add_dynamic_partitions(HELM_SUITES, [suite])
    return dg.RunRequest(partition_key=suite, run_key=f"nightly:{suite}", tags=PLANNED_SUITE_TAGS)
