"""Jobs that span groups."""

import dagster as dg

from governance_assets.defs.partitions import TRAFFIC_DAYS, helm_suites

SUITE_GROUPS = ["helm", "gates", "release", "lineage"]
"""Every group whose assets are all partitioned by HELM suite."""
EVAL_DRIFT = dg.AssetKey(["monitoring", "eval_drift"])

evaluate_suite = dg.define_asset_job(
    "evaluate_suite",
    selection=dg.AssetSelection.groups(*SUITE_GROUPS) | dg.AssetSelection.assets(EVAL_DRIFT),
    partitions_def=helm_suites,
    description="The whole governance graph for one HELM suite: run or verify, ingest, record, judge, compare.",
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
