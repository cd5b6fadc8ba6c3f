"""Checks that the HELM tables hold every run, and agree with HELM's own summary."""

import dagster as dg
import pyarrow.compute as pc

from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib import tidy


@dg.asset_check(
    asset=RUNS_KEY,
    partitions_def=helm_suites,
    description="Every run folder of the suite is complete (HELM's five files) and every planned run succeeded.",
)
def all_runs_complete(
    context: dg.AssetCheckExecutionContext, state: GovernanceState
) -> dg.AssetCheckResult:
    runs = state.warehouse().read(tidy.RUNS_KEY, context.partition_key)
    if runs is None:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"outcome": "no data"}
        )
    bad = (
        runs.filter(pc.not_equal(runs["status"], "complete"))
        .select(["run_name", "status", "error"])
        .to_pylist()
    )
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "threshold": 0,
            "actual": len(bad),
            "runs": runs.num_rows,
            "evidence": dg.MetadataValue.json(bad),
        },
    )


def _all_runs_ingested_check(spec: tidy.TidyTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(list(spec.key)),
        name="all_complete_runs_ingested",
        partitions_def=helm_suites,
        description="Every complete HELM run of the suite could be read into the table.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, state: GovernanceState
    ) -> dg.AssetCheckResult:
        warehouse = state.warehouse()
        errors = warehouse.read_annotation(spec.key, context.partition_key, "errors")
        if errors is None:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, metadata={"outcome": "no data"}
            )
        return dg.AssetCheckResult(
            passed=not errors,
            metadata={
                "threshold": 0,
                "actual": len(errors),
                "evidence": dg.MetadataValue.json(errors),
            },
        )

    return _check


run_stats_ingested = _all_runs_ingested_check(tidy.RUN_STATS)
instance_stats_ingested = _all_runs_ingested_check(tidy.INSTANCE_STATS)
predictions_ingested = _all_runs_ingested_check(tidy.PREDICTIONS)


@dg.asset_check(
    asset=dg.AssetKey(list(tidy.RUN_STATS.key)),
    partitions_def=helm_suites,
    description="Per-run means equal the stats in HELM's own runs.json, where helm-summarize wrote one.",
)
def agrees_with_helm_summary(
    context: dg.AssetCheckExecutionContext, state: GovernanceState
) -> dg.AssetCheckResult:
    suite = context.partition_key
    location = state.discover().suites.get(suite)
    run_stats = state.warehouse().read(tidy.RUN_STATS.key, suite)
    if location is None or run_stats is None or not (location.path / "runs.json").exists():
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"outcome": "no data: no runs.json to compare"},
        )
    compared, mismatches = tidy.compare_with_summary(location.path, run_stats)
    return dg.AssetCheckResult(
        passed=compared > 0 and not mismatches,
        metadata={"compared": compared, "threshold": 0, "actual": len(mismatches),
                  "evidence": dg.MetadataValue.json(mismatches[:50])},
    )  # fmt: skip
