"""The team deployment: a suite's HELM runs fanned out on Celery workers, one step per run entry ×
model, with a Dagster pool per provider, then the suite's governance graph."""

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_celery import celery_executor

from governance_assets.defs.jobs import evaluate_suite
from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import POLICY, GovernanceState, HelmRunner
from governance_assets.lib.deployment.fan_out import (
    pool_limits,
    pool_name,
    provider_of,
    publish_outcome,
    pull_entry_state,
    record_outcomes,
    run_entry_isolated,
    step_key,
)
from governance_assets.lib.deployment.services import CELERY_SETTINGS
from governance_assets.lib.deployment.shared_root import STEPS_SHARE_TAG, SharedRoot
from governance_assets.lib.helm.runner import PLAN_RECORD, PLANNED_MARKER, EntryOutcome, mark_planned

PROVIDERS = sorted({provider_of(entry) for entry in POLICY.evaluation_plan.run_entries_with_models()})
"""Providers of the plan loaded with the code location: one dynamic output and one pool each."""
CELERY_RUN_CONFIG = {
    "execution": {
        "config": {
            "broker": {"env": "GOVERNANCE_CELERY_BROKER"},
            "backend": {"env": "GOVERNANCE_CELERY_BACKEND"},
            "config_source": CELERY_SETTINGS,
            "retries": {"enabled": {}},
        }
    }
}
"""Broker and result backend from the environment (they hold the Redis password)."""


def _output_name(provider: str) -> str:
    return pool_name(provider)


def _scratch_root(state: GovernanceState, suite: str) -> Path:
    """Where each step's helm-run writes before its run folder moves into the suite."""
    return state.home_path() / "helm" / "scratch" / suite


@dg.op(out={_output_name(p): dg.DynamicOut(str, is_required=False) for p in PROVIDERS})
def plan_helm_runs(context: dg.OpExecutionContext, state: GovernanceState) -> Any:
    """One output per run entry × model of the evaluation plan, by provider; sets the pools' limits."""
    policy = state.policy()
    entries = policy.evaluation_plan.run_entries_with_models()
    unknown = sorted({provider_of(e) for e in entries} - set(PROVIDERS))
    if unknown:
        raise dg.Failure(
            description=f"the policy names provider(s) {unknown} that the loaded code location has no pool for; "
            "reload the code location after changing evaluation_plan.models"
        )
    suite_dir = state.own_suite_dir(context.partition_key)
    mark_planned(suite_dir)  # a suite this platform runs HELM into
    shared = SharedRoot.from_environment()
    if shared is not None:
        shared.publish(state.home_path(), suite_dir.relative_to(state.home_path()) / PLANNED_MARKER)
    for pool, limit in pool_limits(PROVIDERS, policy.scale_out).items():
        context.instance.event_log_storage.set_concurrency_slots(pool, limit)
        context.log.info(f"pool {pool}: at most {limit} HELM run(s) at once")
    for entry in entries:
        yield dg.DynamicOutput(entry, mapping_key=step_key(entry), output_name=_output_name(provider_of(entry)))


def _run_helm_op(provider: str) -> dg.OpDefinition:
    @dg.op(
        name=f"run_{_output_name(provider)}",
        pool=pool_name(provider),
        retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
        tags={"governance/provider": provider},
    )
    def run_helm_entry(
        context: dg.OpExecutionContext, state: GovernanceState, helm: HelmRunner, entry: str
    ) -> dict[str, str | None]:
        """`helm-run` for one entry of the suite, in a scratch folder, moved into the suite when done."""
        suite = context.partition_key
        plan = state.policy().evaluation_plan
        suite_dir, shared = state.own_suite_dir(suite), SharedRoot.from_environment()
        if shared is not None:
            pull_entry_state(shared, state.home_path(), suite_dir, entry)
        outcome = run_entry_isolated(
            entry,
            suite,
            helm.settings(state, plan.max_eval_instances),
            suite_dir,
            _scratch_root(state, suite),
            context.log.debug,
        )
        if shared is not None:
            publish_outcome(shared, state.home_path(), suite_dir, outcome)
        if outcome.status == "failed":
            context.log.error(outcome.error or f"helm-run {entry!r} failed")
        return {"entry": outcome.entry, "run_name": outcome.run_name, "status": outcome.status, "error": outcome.error}

    return run_helm_entry


RUN_OPS = {provider: _run_helm_op(provider) for provider in PROVIDERS}


@dg.op(ins={_output_name(p): dg.In(list[dict[str, Any]]) for p in PROVIDERS})
def record_helm_runs(context: dg.OpExecutionContext, state: GovernanceState, **by_provider: Any) -> None:
    """Record which entry made which run folder; fail, naming HELM's reasons, if any run failed."""
    outcomes = [EntryOutcome(**row) for rows in by_provider.values() for row in rows]
    suite_dir, shared = state.own_suite_dir(context.partition_key), SharedRoot.from_environment()
    record = suite_dir.relative_to(state.home_path()) / PLAN_RECORD
    if shared is not None:
        shared.pull(record, state.home_path())
    record_outcomes(suite_dir, outcomes)
    if shared is not None:
        shared.publish(state.home_path(), record)
    shutil.rmtree(_scratch_root(state, context.partition_key), ignore_errors=True)  # attempts of killed workers
    failed = [o for o in outcomes if o.status == "failed"]
    context.log.info(f"{len(outcomes) - len(failed)} of {len(outcomes)} HELM runs complete or already complete")
    if failed:
        raise dg.Failure(
            description=f"{len(failed)} HELM run(s) failed",
            metadata={"failed": dg.MetadataValue.md("\n".join(f"- {o.error}" for o in failed))},
        )


@dg.job(
    partitions_def=helm_suites,
    executor_def=celery_executor,
    config=CELERY_RUN_CONFIG,
    tags=STEPS_SHARE_TAG,
    description="Run the evaluation plan into a suite on the Celery workers: one step per run entry × model, "
    "at most the policy's scale_out limit per provider at once.",
)
def helm_fan_out() -> None:
    planned = plan_helm_runs()
    by_provider = (
        {PROVIDERS[0]: planned} if len(PROVIDERS) == 1 else {p: getattr(planned, _output_name(p)) for p in PROVIDERS}
    )
    record_helm_runs(**{_output_name(p): runs.map(RUN_OPS[p]).collect() for p, runs in by_provider.items()})


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[helm_fan_out],
    request_job=evaluate_suite,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a suite's HELM runs are done on the workers, evaluates the suite (ingest, record, judge).",
)
def evaluate_after_fan_out(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """When a suite's HELM runs are done on the workers, evaluate the suite (ingest, record, judge)."""
    return dg.RunRequest(
        run_key=context.dagster_run.run_id, partition_key=context.dagster_run.tags["dagster/partition"]
    )
