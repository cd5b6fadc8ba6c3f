"""The iteration plan's own job: after every evaluation, also one a blocking gate stopped."""

import dagster as dg

from governance_assets.defs.partitions import helm_suites

plan_iteration = dg.define_asset_job(
    "plan_iteration",
    selection=dg.AssetSelection.assets(["iteration", "plan"], ["iteration", "labeling_queue"]),
    partitions_def=helm_suites,
    description="The suite's ranked iteration plan and labelling queue, after evaluate_suite (also when a blocking gate failed).",
)
