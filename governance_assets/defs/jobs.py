"""Jobs that span groups."""

import dagster as dg

from governance_assets.defs.partitions import helm_suites

SUITE_GROUPS = ["helm", "gates", "release", "lineage"]
"""Every group whose assets are partitioned by HELM suite."""

evaluate_suite = dg.define_asset_job(
    "evaluate_suite",
    selection=dg.AssetSelection.groups(*SUITE_GROUPS),
    partitions_def=helm_suites,
    description="The whole governance graph for one HELM suite: run or verify, ingest, record, judge.",
)
