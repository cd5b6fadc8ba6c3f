"""Jobs that span groups."""

from __future__ import annotations

import dagster as dg

from governance_assets.defs.partitions import TRAFFIC_DAYS, helm_suites

SUITE_GROUPS = ["helm", "gates", "release", "lineage"]
"""Every group whose assets are all partitioned by HELM suite."""
EVAL_DRIFT = dg.AssetKey(["monitoring", "eval_drift"])
COMPLIANCE_EVIDENCE = dg.AssetSelection.assets(
    ["compliance", "bias_fairness"], ["compliance", "pii"], ["compliance", "toxicity"], ["compliance", "slices"]
)
"""The suite's compliance evidence, judged before the gates (which read the fairness checks)."""

evaluate_suite = dg.define_asset_job(
    "evaluate_suite",
    selection=dg.AssetSelection.groups(*SUITE_GROUPS) | dg.AssetSelection.assets(EVAL_DRIFT) | COMPLIANCE_EVIDENCE,
    partitions_def=helm_suites,
    description="The whole governance graph for one HELM suite: run or verify, ingest, record, judge, compare.",
    # One process for all steps: each step in its own process paid for its interpreter and imports
    # (about 4 s each, 21 steps on 2 cores); the steps that take long start helm-run themselves.
    executor_def=dg.in_process_executor,
)

monitor_traffic = dg.define_asset_job(
    "monitor_traffic",
    selection=dg.AssetSelection.assets(["monitoring", "traffic"], ["monitoring", "traffic_drift"]),
    partitions_def=TRAFFIC_DAYS,
    description="One day of production traffic: rebuild it from the staged sources, then test it for drift.",
)

monitoring_trends = dg.define_asset_job(
    "monitoring_trends",
    selection=dg.AssetSelection.assets(["monitoring", "trends"]),
    description="Metric and KPI time series with change detection.",
)

compliance_report = dg.define_asset_job(
    "compliance_report",
    selection=dg.AssetSelection.assets(["compliance", "report"]),
    partitions_def=helm_suites,
    description="The suite's compliance report per model, after evaluate_suite (also when a blocking gate failed).",
)

record_audit = dg.define_asset_job(
    "record_audit",
    selection=dg.AssetSelection.assets(["compliance", "audit_log"]),
    description="Append every new verdict, decision, report, waiver and policy change to the audit ledger.",
)


def after_evaluation(
    status: dg.DagsterRunStatus, name: str, description: str, request_job: dg.UnresolvedAssetJobDefinition, key: str
) -> dg.RunStatusSensorDefinition:
    """A sensor that requests `request_job` for the suite an `evaluate_suite` run just evaluated,
    when that run ends with `status` (run key `<key>:<run id>`)."""

    @dg.run_status_sensor(
        name=name,
        description=description,
        run_status=status,
        monitored_jobs=[evaluate_suite],
        request_job=request_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def request_for_suite(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
        suite = context.dagster_run.tags.get("dagster/partition")
        if not suite:
            return dg.SkipReason("the evaluation ran over a range of suites; materialise them by backfill")
        return dg.RunRequest(run_key=f"{key}:{context.dagster_run.run_id}", partition_key=suite)

    return request_for_suite
