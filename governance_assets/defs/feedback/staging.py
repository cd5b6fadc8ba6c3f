"""Staging feedback in runs (never in a sensor tick): each landing file or database batch is parsed,
validated and split by day once by a `stage_feedback` run, which Dagster retries and shows."""

from pathlib import Path

import dagster as dg

from governance_assets.defs.database_source import read_range
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.database import TableRows, read_id_range
from governance_assets.lib.feedback.events import StagedFeedback, stage_source, stage_table_rows

STAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def feedback_landing_path(state: GovernanceState) -> Path:
    """Where a serving system drops feedback files (JSON Lines, CSV, Parquet)."""
    return state.home_path() / "landing" / "feedback"


def feedback_staging_path(state: GovernanceState) -> Path:
    """Feedback sources parsed once, split by day (see `lib/feedback/events.py`)."""
    return state.home_path() / "feedback" / "staging"


class FeedbackSourceConfig(dg.Config):
    """One source to stage: a landing file (`path`) or a range of the database table's primary keys."""

    path: str = ""
    """A file in the feedback landing folder."""
    table: str = ""
    """The policy's feedback table (feedback.intake.database); rows with `after_id` < id <= `up_to_id`."""
    after_id: int = 0
    up_to_id: int = 0


def _stage(state: GovernanceState, config: FeedbackSourceConfig) -> StagedFeedback:
    staging = feedback_staging_path(state)
    if config.path:
        path = Path(config.path)
        landing = feedback_landing_path(state)
        if path.parent.resolve() != landing.resolve():
            raise dg.Failure(description=f"{path} is not in the feedback landing folder {landing}")
        return stage_source(path, staging)
    database = state.policy().feedback.intake.database

    def fetch() -> TableRows:
        return read_range(database, "feedback", config.table, config.after_id, config.up_to_id, read_id_range)

    return stage_table_rows(staging, config.table, config.after_id, config.up_to_id, fetch)


@dg.op(retry_policy=STAGE_RETRY, tags={"kind": "parquet"})
def stage_feedback_source(
    context: dg.OpExecutionContext, state: GovernanceState, config: FeedbackSourceConfig
) -> dg.Output[str]:
    """Parse and validate one feedback file or database batch, quarantine its malformed rows with
    reasons, and stage its valid rows by UTC day (idempotent: a source staged before is only read back)."""
    staged = _stage(state, config)
    if staged.error:
        context.log.warning(f"feedback source rejected: {staged.error}")
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
    description="Stage one feedback source (a landing file or a database batch): parse, validate, quarantine "
    "malformed rows, split by day.",
    tags={"dagster/max_retries": "0"},
)
def stage_feedback() -> None:
    stage_feedback_source()
