"""Staging traffic sources in runs (never in a sensor tick): each landing file or database batch is
parsed, validated and split by day by one `stage_traffic` run, which Dagster retries and shows."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from governance_assets.defs.database_source import read_range
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.database import database_source_id
from governance_assets.lib.monitoring.traffic import read_table_rows
from governance_assets.lib.monitoring.traffic_intake import StagedSource, stage_file, stage_source

STAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL)
"""A database that is down, or a disk that hiccups, is retried after 30 s, 60 s and 120 s."""


class TrafficSourceConfig(dg.Config):
    """One source to stage: a landing file (`path`) or a range of a database table's primary keys."""

    path: str = ""
    """A file in the landing folder."""
    table: str = ""
    """The policy's database table; rows with `after_id` < id <= `up_to_id`."""
    after_id: int = 0
    up_to_id: int = 0


def _stage(state: GovernanceState, config: TrafficSourceConfig) -> StagedSource:
    policy = state.policy()
    first_day, last_day = policy.monitoring.start_date, datetime.now(UTC).date()
    staging = state.traffic_staging_path()
    if config.path:
        path = Path(config.path)
        if path.parent.resolve() != state.traffic_landing_path().resolve():
            raise dg.Failure(description=f"{path} is not in the landing folder {state.traffic_landing_path()}")
        return stage_file(staging, path, first_day, last_day)[0]
    database = policy.monitoring.traffic.database
    batch = read_range(database, "traffic", config.table, config.after_id, config.up_to_id, read_table_rows)
    source_id = database_source_id(config.table, config.after_id + 1, config.up_to_id)
    return stage_source(staging, source_id, batch, first_day, last_day)[0]


@dg.op(retry_policy=STAGE_RETRY, tags={"kind": "parquet"})
def stage_traffic_source(
    context: dg.OpExecutionContext, state: GovernanceState, config: TrafficSourceConfig
) -> dg.Output[str]:
    """Parse and validate one source, quarantine its bad rows with reasons, and stage its valid
    rows by UTC day (idempotent: a source staged before is only read back)."""
    staged = _stage(state, config)
    if staged.error:
        context.log.warning(f"traffic source rejected: {staged.error}")
    context.log.info(
        f"{staged.source_id}: {staged.rows} rows over {len(staged.days)} day(s), {staged.quarantined} quarantined"
    )
    return dg.Output(
        staged.source_id,
        metadata={
            "source": staged.source,
            "rows": staged.rows,
            "days": ", ".join(sorted(staged.days)) or "none",
            "quarantined_rows": staged.quarantined,
            "error": staged.error or "",
        },
    )


@dg.job(
    description="Stage one traffic source (a landing file or a database batch): parse, validate, split by day.",
    tags={"dagster/max_retries": "0"},
)
def stage_traffic() -> None:
    stage_traffic_source()
