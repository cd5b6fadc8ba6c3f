"""Champion/challenger through the MLflow Model Registry (the hook a serving system uses, see
lib/feedback/registry.py). `model_registry` lists versions and aliases and requests an
`evaluate_suite` run per new version or moved alias; `registry_writeback` lists the finished
evaluations of registered versions and requests a `write_back_decision` run for each. The runs
do the work: the sensors only list and request."""

import json
from datetime import datetime

import dagster as dg
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from governance_assets.defs.gates.assets import DECISION_KEY
from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.defs.jobs import evaluate_suite
from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import GovernanceState, MlflowTracking
from governance_assets.lib.core.secrets import redact
from governance_assets.lib.feedback.registry import (
    changed_versions,
    decision_for,
    registered_versions,
    suite_for,
    write_back,
)

MODEL_TAG = "governance/registered_model"
VERSION_TAG = "governance/model_version"
HELM_MODEL_TAG = "governance/helm_model"
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


class WriteBackConfig(dg.Config):
    suite: str
    model_name: str
    version: str
    helm_model: str = ""


@dg.op(tags={"kind": "mlflow"})
def write_back_decision(
    context: dg.OpExecutionContext, state: GovernanceState, mlflow: MlflowTracking, config: WriteBackConfig
) -> dg.Output[str]:
    """Tag the registered version with the suite's release decision for its HELM model, and move
    `champion` to it when the policy allows automatic promotion and every blocking gate passed."""
    table = state.warehouse().read(DECISION_KEY, config.suite)
    decision, reasons = decision_for(
        None if table is None else table.to_pylist(), config.helm_model or None, config.suite
    )
    client = MlflowClient(tracking_uri=mlflow.resolved_uri(state))
    auto_promote = state.policy().feedback.registry.auto_promote
    result = write_back(client, config.model_name, config.version, decision, reasons, config.suite, auto_promote)
    context.log.info(
        f"{config.model_name} v{config.version}: {decision}"
        + (", champion moved to it" if result.champion_moved else "")
        + (f" ({'; '.join(reasons)})" if reasons else "")
    )
    return dg.Output(
        decision,
        metadata={
            "model": config.model_name,
            "version": config.version,
            "suite": config.suite,
            "decision": decision,
            "reasons": "; ".join(reasons) or "all blocking gates passed",
            "champion_moved": result.champion_moved,
        },
    )


@dg.job(
    description="Write a suite's release decision back to the MLflow Model Registry (tags; the champion alias when allowed)."
)
def registry_decision() -> None:
    write_back_decision()


@dg.sensor(
    jobs=[evaluate_suite],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Lists the MLflow Model Registry's versions and their champion/challenger aliases; a new version or a "
        "moved alias gets an evaluate_suite run with the policy's plan (one suite per version)."
    ),
)
def model_registry(
    context: dg.SensorEvaluationContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.SensorResult:
    """The cursor is each version's watched aliases as last seen."""
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    settings = state.policy().feedback.registry
    try:
        versions = registered_versions(MlflowClient(tracking_uri=mlflow.resolved_uri(state)), settings.helm_model_tag)
    except MlflowException as error:
        return dg.SensorResult(skip_reason=f"model registry unreadable, asked again next tick: {redact(str(error))}")
    changed = changed_versions(versions, seen)
    requests = [
        dg.RunRequest(
            job_name=evaluate_suite.name,
            partition_key=suite_for(version),
            run_key=f"registry:{version.key}:{version.state}",
            tags={
                **PLANNED_SUITE_TAGS,
                MODEL_TAG: version.name,
                VERSION_TAG: version.version,
                HELM_MODEL_TAG: version.helm_model or "",
            },
        )
        for version in changed
    ]
    new_suites = sorted(
        {suite_for(v) for v in changed} - set(helm_suites.get_partition_keys(dynamic_partitions_store=context.instance))
    )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[helm_suites.build_add_request(new_suites)] if new_suites else [],
        cursor=json.dumps({v.key: v.state for v in versions}, sort_keys=True),
        skip_reason=None if requests else f"no new version or alias among {len(versions)} registered versions",
    )


@dg.sensor(
    jobs=[registry_decision],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a registry_decision run for each finished evaluation of a registered model version.",
)
def registry_writeback(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """The cursor is the newest update time of a finished evaluation already listed, so each tick
    reads only evaluations that finished since; run keys (one per evaluation run) keep each
    write-back to one run even so."""
    finished_after = datetime.fromisoformat(context.cursor) if context.cursor else None
    records = context.instance.get_run_records(
        dg.RunsFilter(job_name=evaluate_suite.name, statuses=FINISHED, updated_after=finished_after),
        limit=200,
        ascending=True,
        order_by="update_timestamp",
    )
    requests = []
    for record in records:
        tags = record.dagster_run.tags
        if MODEL_TAG not in tags:
            continue
        config = {
            "suite": tags["dagster/partition"],
            "model_name": tags[MODEL_TAG],
            "version": tags[VERSION_TAG],
            "helm_model": tags.get(HELM_MODEL_TAG, ""),
        }
        requests.append(
            dg.RunRequest(
                job_name=registry_decision.name,
                run_key=f"writeback:{record.dagster_run.run_id}",
                run_config={"ops": {"write_back_decision": {"config": config}}},
            )
        )
    newest = max((record.update_timestamp for record in records), default=finished_after)
    return dg.SensorResult(
        run_requests=requests,
        cursor=newest.isoformat() if newest else None,
        skip_reason=None if requests else "no newly finished evaluation of a registered version",
    )
