"""Staging feedback files in runs (never in a sensor tick): each landing file is parsed, validated
and split by day once by a `stage_feedback` run, which Dagster retries and shows."""

from pathlib import Path

import dagster as dg

from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.feedback.events import stage_source

STAGE_RETRY = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def feedback_landing_path(state: GovernanceState) -> Path:
    """Where a serving system drops feedback files (JSON Lines, CSV, Parquet)."""
    return state.home_path() / "landing" / "feedback"


def feedback_staging_path(state: GovernanceState) -> Path:
    """Feedback sources parsed once, split by day (see `lib/feedback/events.py`)."""
    return state.home_path() / "feedback" / "staging"


class FeedbackSourceConfig(dg.Config):
    path: str
    """A file in the feedback landing folder."""


@dg.op(retry_policy=STAGE_RETRY, tags={"kind": "parquet"})
def stage_feedback_source(
    context: dg.OpExecutionContext, state: GovernanceState, config: FeedbackSourceConfig
) -> dg.Output[str]:
    """Parse and validate one feedback file, quarantine its malformed rows with reasons, and stage
    its valid rows by UTC day (idempotent: a file staged before is only read back)."""
    path = Path(config.path)
    landing = feedback_landing_path(state)
    if path.parent.resolve() != landing.resolve():
        raise dg.Failure(description=f"{path} is not in the feedback landing folder {landing}")
    staged = stage_source(path, feedback_staging_path(state))
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


@dg.job(description="Stage one feedback file: parse, validate, quarantine malformed rows, split by day.")
def stage_feedback() -> None:
    stage_feedback_source()
