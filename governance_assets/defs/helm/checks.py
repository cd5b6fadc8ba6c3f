"""Checks that the HELM tables hold every run, and agree with HELM's own summary."""

import dagster as dg
import pyarrow.compute as pc

from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.judgement import Judgement, Outcome, judge_partitions
from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.helm import tidy

NO_TABLE = Judgement("no data", None, 0, "the table was never built for this suite")


@dg.asset_check(
    asset=RUNS_KEY,
    partitions_def=helm_suites,
    description="Every run folder of the suite is complete (HELM's five files) and every planned run succeeded.",
)
def all_runs_complete(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    def judge(suite: str) -> Judgement:
        runs = state.warehouse().read(tidy.RUNS_KEY, suite)
        if runs is None:
            return NO_TABLE
        bad = runs.filter(pc.not_equal(runs["status"], "complete")).select(["run_name", "status", "error"]).to_pylist()
        return Judgement("fail" if bad else "pass", len(bad), 0, bad, metadata={"runs": runs.num_rows})

    return judge_partitions(context, judge)


def _all_runs_ingested_check(spec: tidy.TidyTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(list(spec.key)),
        name="all_complete_runs_ingested",
        partitions_def=helm_suites,
        description=f"Every complete HELM run of the suite could be read from {spec.source_file}.",
    )
    def _check(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
        def judge(suite: str) -> Judgement:
            errors = state.warehouse().read_annotation(spec.key, suite, "errors")
            if errors is None:
                return NO_TABLE
            return Judgement("fail" if errors else "pass", len(errors), 0, errors)

        return judge_partitions(context, judge)

    return _check


run_stats_ingested = _all_runs_ingested_check(tidy.RUN_STATS)
instance_stats_ingested = _all_runs_ingested_check(tidy.INSTANCE_STATS)
predictions_ingested = _all_runs_ingested_check(tidy.PREDICTIONS)


@dg.asset_check(
    asset=dg.AssetKey(list(tidy.RUN_STATS.key)),
    partitions_def=helm_suites,
    description="Per-run means equal the stats in HELM's own runs.json, where helm-summarize wrote one.",
)
def agrees_with_helm_summary(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    suites = state.discover().suites

    def judge(suite: str) -> Judgement:
        location = suites.get(suite)
        run_stats = state.warehouse().read(tidy.RUN_STATS.key, suite)
        if location is None or run_stats is None or not (location.path / "runs.json").exists():
            return Judgement("no data", None, 0, "no runs.json from helm-summarize to compare with")
        compared, mismatches = tidy.compare_with_summary(location.path, run_stats)
        outcome: Outcome = "pass" if compared and not mismatches else "fail"
        return Judgement(outcome, len(mismatches), 0, mismatches[:50], metadata={"compared": compared})

    return judge_partitions(context, judge)
