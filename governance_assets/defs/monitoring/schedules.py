"""Unattended monitoring: each day is closed and tested once it is over, then the trends follow."""

from datetime import timedelta

import dagster as dg

from governance_assets.defs.partitions import TRAFFIC_DAYS_NAME


@dg.schedule(
    job_name="monitor_traffic",
    cron_schedule="30 0 * * *",
    execution_timezone="UTC",
    description="At 00:30 UTC: rebuilds and drift-tests the traffic of the day that just ended (monitor_traffic).",
)
def daily_traffic_monitoring(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    """At 00:30 UTC: rebuild and drift-test the day that just ended, now that all of it has landed
    (the sensor already ingested each source as it arrived); nothing on a day without traffic."""
    day = f"{context.scheduled_execution_time - timedelta(days=1):%Y-%m-%d}"
    if not context.instance.has_dynamic_partition(TRAFFIC_DAYS_NAME, day):
        return dg.SkipReason(f"no traffic landed for {day}")
    return dg.RunRequest(partition_key=day, run_key=f"daily:{day}")


@dg.schedule(
    job_name="monitoring_trends",
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    description="At 01:00 UTC, after the day is closed: the trends across suites and days, and their change points.",
)
def daily_trends(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """At 01:00 UTC, after the day is closed: the trends and their change points."""
    return dg.RunRequest(run_key=f"trends:{context.scheduled_execution_time:%Y-%m-%d}")
