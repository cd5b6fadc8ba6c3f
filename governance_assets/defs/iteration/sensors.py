"""Plan the next iteration of a suite as soon as its evaluation ends, whatever its outcome: a
blocking gate that stops the release (and, in Dagster, everything downstream of the verdicts in
that run) is exactly when a plan is needed."""

import dagster as dg

from governance_assets.defs.iteration.jobs import plan_iteration
from governance_assets.defs.jobs import evaluate_suite


def _plan_after(status: dg.DagsterRunStatus, name: str, description: str) -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        name=name,
        description=description,
        run_status=status,
        monitored_jobs=[evaluate_suite],
        request_job=plan_iteration,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def _sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
        suite = context.dagster_run.tags.get("dagster/partition")
        if not suite:
            return dg.SkipReason("the evaluation ran over a range of suites; plan them by backfill")
        return dg.RunRequest(run_key=f"plan:{context.dagster_run.run_id}", partition_key=suite)

    return _sensor


plan_after_evaluation = _plan_after(
    dg.DagsterRunStatus.SUCCESS, "plan_after_evaluation", "Requests the iteration plan of each evaluated suite."
)
plan_after_blocked_evaluation = _plan_after(
    dg.DagsterRunStatus.FAILURE,
    "plan_after_blocked_evaluation",
    "Requests the iteration plan of a suite whose evaluation failed (for example on a blocking gate).",
)
