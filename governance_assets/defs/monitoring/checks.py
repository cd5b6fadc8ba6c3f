"""Monitoring checks: drifted traffic, silent model changes, metrics out of control. Failures
reach the alert sinks through the `check_failure_alerts` sensor."""

import dagster as dg

from governance_assets.defs.judgement import Judgement, check_result, judge_partitions
from governance_assets.defs.monitoring.assets import EVAL_DRIFT_KEY, TRAFFIC_DRIFT_KEY, TRENDS_KEY
from governance_assets.defs.partitions import TRAFFIC_DAYS, helm_suites
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.policy import DriftSettings


def judge_drift(rows: list[dict[str, object]], share: float | None, settings: DriftSettings) -> Judgement:
    """WARN when the share of drifted features reaches the policy's share, ERROR past `error_share`."""
    threshold = f"share < {settings.share_threshold} (ERROR at >= {settings.error_share})"
    tested = [r for r in rows if r["kind"] != "embedding" and r["reference_size"] and r["current_size"]]
    if share is None or not tested:
        return Judgement("no data", None, threshold, "no reference profile, or no rows to test on this day")
    drifted = [r for r in rows if r["drifted"]]
    evidence = [{k: r[k] for k in ("feature", "method", "statistic", "threshold", "detail")} for r in drifted]
    if share < settings.share_threshold:
        return Judgement("pass", share, threshold, evidence)
    severity = dg.AssetCheckSeverity.ERROR if share >= settings.error_share else dg.AssetCheckSeverity.WARN
    return Judgement("fail", share, threshold, evidence, severity)


@dg.asset_check(
    asset=dg.AssetKey(list(TRAFFIC_DRIFT_KEY)),
    name="traffic_drift_share",
    partitions_def=TRAFFIC_DAYS,
    description="The share of drifted traffic features stays below the policy's limits.",
)
def traffic_drift_share(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    settings = state.policy().monitoring.drift
    warehouse = state.warehouse()

    def judge(day: str) -> Judgement:
        table = warehouse.read(TRAFFIC_DRIFT_KEY, day)
        share = warehouse.read_annotation(TRAFFIC_DRIFT_KEY, day, "drifted_share")
        return judge_drift([] if table is None else table.to_pylist(), share, settings)

    return judge_partitions(context, judge)


@dg.asset_check(
    asset=dg.AssetKey(list(EVAL_DRIFT_KEY)),
    name="no_silent_model_change",
    partitions_def=helm_suites,
    description="No run with an unchanged run spec flips outcomes significantly against the previous suite.",
)
def no_silent_model_change(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
    warehouse = state.warehouse()
    alpha = state.policy().monitoring.eval_drift.alpha

    def judge(suite: str) -> Judgement:
        table = warehouse.read(EVAL_DRIFT_KEY, suite)
        rows = [] if table is None else table.to_pylist()
        threshold = f"no significant flips at alpha {alpha} with an unchanged run spec"
        if not rows:
            return Judgement("no data", 0, threshold, "no earlier suite has any of this suite's runs")
        silent = [
            {
                k: r[k]
                for k in ("run_name", "metric", "baseline_suite", "flipped_to_fail", "flipped_to_pass", "p_adjusted")
            }
            for r in rows
            if r["silent_change"]
        ]
        return Judgement("fail" if silent else "pass", len(silent), threshold, silent)

    return judge_partitions(context, judge)


@dg.asset_check(
    asset=dg.AssetKey(list(TRENDS_KEY)),
    name="trends_in_control",
    description="No metric or traffic KPI is out of control at its latest point.",
)
def trends_in_control(state: GovernanceState) -> dg.AssetCheckResult:
    table = state.warehouse().read(TRENDS_KEY)
    threshold = "latest point of every series in control"
    if table is None or table.num_rows == 0:
        return check_result(Judgement("no data", None, threshold, "no series"))
    frame = table.to_pandas()
    latest = frame.groupby("series", sort=True).tail(1)
    flagged = latest[latest["flagged"]]
    evidence = flagged[["series", "label", "value", "lower_limit", "upper_limit"]].to_dict("records")
    return check_result(
        Judgement("fail" if evidence else "pass", len(evidence), threshold, evidence, dg.AssetCheckSeverity.WARN)
    )


MONITORING_CHECKS = [traffic_drift_share, no_silent_model_change, trends_in_control]
