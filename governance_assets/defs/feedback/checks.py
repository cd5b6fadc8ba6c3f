"""A/B test checks, reading what `feedback/ab_tests` judged (each experiment judged once)."""

from collections.abc import Callable
from typing import Any, Literal

import dagster as dg

from governance_assets.defs.feedback.assets import AB_TESTS_KEY, ONLINE_EVAL_KEY, RESULTS_ANNOTATION
from governance_assets.defs.judgement import Judgement, judge_partitions
from governance_assets.defs.partitions import TRAFFIC_DAYS
from governance_assets.defs.resources import GovernanceState


def _judge_experiments(
    state: GovernanceState, failing: Callable[[dict[str, Any]], bool], threshold: str
) -> Callable[[str], Judgement]:
    def judge(day: str) -> Judgement:
        results = state.warehouse().read_annotation(AB_TESTS_KEY, day, RESULTS_ANNOTATION)
        if not results:
            return Judgement("no data", None, threshold, "no experiment analysed on this day")
        bad = [r for r in results if failing(r)]
        evidence = [
            {"experiment": r["experiment"], "outcome": r["outcome"], "reasons": r["reasons"]} for r in bad or results
        ]
        return Judgement("fail" if bad else "pass", len(bad), threshold, evidence)

    return judge


@dg.asset_check(
    asset=dg.AssetKey(list(AB_TESTS_KEY)),
    name="no_sample_ratio_mismatch",
    partitions_def=TRAFFIC_DAYS,
    description="Every experiment's variants got the requests its intended split predicts (sequential SRM test, always-valid p >= srm_alpha).",
)
def no_sample_ratio_mismatch(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    threshold = f"always-valid SRM p >= {state.policy().feedback.srm_alpha}"
    return judge_partitions(context, _judge_experiments(state, lambda r: bool(r["srm_mismatch"]), threshold))


@dg.asset_check(
    asset=dg.AssetKey(list(AB_TESTS_KEY)),
    name="no_guardrail_harm",
    partitions_def=TRAFFIC_DAYS,
    description="No challenger harms a guardrail metric beyond its tolerance (always-valid p-values, Holm across the experiment's guardrails).",
)
def no_guardrail_harm(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    threshold = "no guardrail harm beyond its tolerance (Holm over guardrails x challengers at the experiment's alpha)"
    return judge_partitions(context, _judge_experiments(state, lambda r: bool(r["harmed_guardrails"]), threshold))


@dg.asset_check(
    asset=dg.AssetKey(list(ONLINE_EVAL_KEY)),
    name="online_agrees_with_benchmark",
    partitions_def=TRAFFIC_DAYS,
    description="Each model's live sample stays within the policy's bounds of its HELM scores (WARN: the benchmark and production disagree).",
)
def online_agrees_with_benchmark(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    warehouse = state.warehouse()

    def judge(day: str) -> Judgement:
        table = warehouse.read(ONLINE_EVAL_KEY, day)
        rows = [] if table is None else table.to_pylist()
        threshold = "|gap| <= max_gap for every comparison"
        judged = [r for r in rows if r["diverged"] is not None]
        evidence = [
            {k: r[k] for k in ("model", "comparison", "production_value", "helm_value", "gap", "max_gap")}
            for r in rows
            if r["diverged"] is not False
        ]
        if not judged:
            return Judgement(
                "no data", None, threshold, evidence or "no sampled traffic or no HELM scores of its models"
            )
        diverged = sum(bool(r["diverged"]) for r in judged)
        outcome: Literal["pass", "fail"] = "fail" if diverged else "pass"
        return Judgement(outcome, diverged, threshold, evidence, dg.AssetCheckSeverity.WARN)

    return judge_partitions(context, judge)
