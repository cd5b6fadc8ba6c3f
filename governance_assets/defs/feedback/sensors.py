"""Watching for user feedback. The sensors only decide: they list new sources and request runs;
parsing happens in `stage_feedback` runs. `feedback_landing` keeps the same cursor as the traffic
sensor (files sent to staging, staged sources whose days were requested) and requests the days of
every staged source, files and database batches alike. `feedback_database` asks the policy's
feedback table for its newest primary key and requests a `stage_feedback` run per new range of keys,
as `traffic_database` does (a failing database is its skip reason, password hidden)."""

import dagster as dg

from governance_assets.defs.database_source import database_sensor
from governance_assets.defs.feedback.assets import AB_TESTS_KEY, EVENTS_KEY, ONLINE_EVAL_KEY, SCENARIO_KEY
from governance_assets.defs.feedback.staging import feedback_landing_path, feedback_staging_path, stage_feedback
from governance_assets.defs.monitoring.sensors import TrafficCursor as LandingCursor
from governance_assets.defs.monitoring.sensors import landing_files
from governance_assets.defs.partitions import TRAFFIC_DAYS
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.feedback.events import staged_sources

feedback_daily = dg.define_asset_job(
    "feedback_daily",
    selection=dg.AssetSelection.assets(list(EVENTS_KEY), list(AB_TESTS_KEY), list(ONLINE_EVAL_KEY), list(SCENARIO_KEY)),
    partitions_def=TRAFFIC_DAYS,
    description=(
        "One day of user feedback joined to its traffic, every A/B test judged up to that day, and the day's "
        "live sample scored next to the HELM scores, and the failures so far as a HELM scenario."
    ),
)


@dg.sensor(
    jobs=[stage_feedback, feedback_daily],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests a stage_feedback run for each new feedback file, then a feedback_daily run for each day a "
        "staged source touched; run keys and a cursor, so a restart neither repeats nor skips."
    ),
)
def feedback_landing(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SensorResult:
    """Lists new feedback files and newly staged sources; parses nothing."""
    cursor = LandingCursor.parse(context.cursor)
    budget = state.policy().feedback.intake.max_sources_per_tick
    requests: list[dg.RunRequest] = []
    for path in landing_files(feedback_landing_path(state)):
        stat = path.stat()
        fingerprint = f"{stat.st_size}:{stat.st_mtime_ns}"
        if cursor.files.get(path.name) == fingerprint:
            continue
        if len(requests) >= budget:
            break
        requests.append(
            dg.RunRequest(
                job_name=stage_feedback.name,
                run_key=f"stage-feedback:{path.name}:{fingerprint}",
                run_config={"ops": {"stage_feedback_source": {"config": {"path": str(path)}}}},
            )
        )
        cursor.files[path.name] = fingerprint
    requested = set(cursor.staged)
    fresh = [s for s in staged_sources(feedback_staging_path(state)) if s.source_id not in requested]
    requests += [
        dg.RunRequest(
            job_name=feedback_daily.name,
            partition_key=day,
            run_key=f"feedback:{staged.source_id}:{day}",
            tags={"governance/feedback_source": staged.source_id},
        )
        for staged in fresh
        for day in sorted(staged.days)
    ]
    cursor.staged += [s.source_id for s in fresh]
    partitions: list[dg.AddDynamicPartitionsRequest] = []
    if isinstance(TRAFFIC_DAYS, dg.DynamicPartitionsDefinition):  # days are added as traffic or feedback lands
        known = set(TRAFFIC_DAYS.get_partition_keys(dynamic_partitions_store=context.instance))
        new_days = sorted({day for staged in fresh for day in staged.days} - known)
        partitions = [TRAFFIC_DAYS.build_add_request(new_days)] if new_days else []
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=partitions,
        cursor=cursor.dumps(),
        skip_reason=None if requests else "no new feedback",
    )


feedback_database = database_sensor(
    "feedback_database",
    stage_feedback,
    "stage_feedback_source",
    "stage-feedback",
    "feedback",
    "feedback.intake.database",
    lambda policy: policy.feedback.intake,
)
