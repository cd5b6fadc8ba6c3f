"""Module-level handles on the code location's jobs, for `dg.reconstructable`: a run whose steps go
to Celery workers is launched from these, and the workers rebuild the job from the same pointer."""

import dagster as dg


def _job(name: str) -> dg.JobDefinition:
    from governance_assets.definitions import defs

    return defs().resolve_job_def(name)


def helm_fan_out() -> dg.JobDefinition:
    """The suite's HELM runs, one step per run entry × model, on the Celery workers."""
    return _job("helm_fan_out")


def evaluate_suite() -> dg.JobDefinition:
    """The suite's governance graph (ingest, record, judge, decide)."""
    return _job("evaluate_suite")


def run_fan_out(instance: dg.DagsterInstance, suite: str) -> dg.JobExecutionResult:
    """Run `helm_fan_out` for `suite` from this process, its steps on the Celery workers (a UI launch
    or backfill of the partition gets the same Celery settings from the job's partitioned config)."""
    from governance_assets.defs.deployment.jobs import CELERY_RUN_CONFIG

    return dg.execute_job(
        dg.reconstructable(helm_fan_out), instance, run_config=CELERY_RUN_CONFIG, tags={"dagster/partition": suite}
    )
