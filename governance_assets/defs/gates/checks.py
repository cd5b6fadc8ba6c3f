"""The policy's gates as asset checks: one check per gate, judged per suite."""

from typing import Any

import dagster as dg

from governance_assets.defs.helm.inputs import earlier_instance_stats, suite_tables
from governance_assets.defs.judgement import Judgement, judge_partitions
from governance_assets.defs.partitions import helm_suites
from governance_assets.defs.resources import POLICY, GovernanceState
from governance_assets.lib.core.policy import Gate, Policy, RegressionGate
from governance_assets.lib.gates.evaluation import evaluate_gates, evidence_rows
from governance_assets.lib.gates.outcomes import GateResult
from governance_assets.lib.helm import tidy

GATED_ASSET = {
    "threshold": tidy.RUN_STATS.key,
    "regression": tidy.INSTANCE_STATS.key,
    "completeness": tidy.PREDICTIONS.key,
    "data_quality": tidy.RUN_STATS.key,
}
"""The table each kind of gate judges. Never `helm/runs`: a blocking check there would stop the
ingestion itself, not just the release."""
OTHER_INPUTS = {"data_quality": [tidy.INSTANCE_STATS.key, tidy.PREDICTIONS.key]}
"""Tables a gate also reads, so that its check waits for them."""


def judge_gate(
    gate: Gate,
    policy: Policy,
    context: dg.AssetCheckExecutionContext,
    state: GovernanceState,
    suite: str,
) -> GateResult | None:
    """One gate on one suite; regression gates are judged together so that the correction
    for multiple comparisons covers every regression comparison of the suite."""
    tables = suite_tables(state, suite)
    if tables is None:
        return None
    related = [
        g
        for g in policy.gates
        if g.name == gate.name or (isinstance(gate, RegressionGate) and isinstance(g, RegressionGate))
    ]
    baselines = earlier_instance_stats(context.instance, state, suite) if isinstance(gate, RegressionGate) else []
    results = evaluate_gates(related, tables, baselines, policy.regression)
    return next(result for result in results if result.gate == gate.name)


def gate_metadata(result: GateResult) -> dict[str, Any]:
    """The metadata a reviewer needs: kind, evidence table and, for regressions, the worst drop."""
    metadata: dict[str, Any] = {"gate_kind": result.kind, "blocking": result.blocking}
    judged = [row for row in result.rows if "p_adjusted" in row]
    if judged:
        worst = max(judged, key=lambda row: row["drop"])
        metadata |= {
            "p_value": worst["p_value"],
            "p_adjusted": worst["p_adjusted"],
            "effect": worst["effect"],
            "effect_ci": f"[{worst['ci_low']:.4f}, {worst['ci_high']:.4f}]",
            "baseline_suite": worst["baseline_suite"],
            "worst_run": f"{worst['run_name']} {worst['metric']}",
        }
    return metadata


def build_gate_check(gate: Gate, policy: Policy) -> dg.AssetChecksDefinition:
    """The asset check for one gate of `policy`."""
    severity = dg.AssetCheckSeverity.ERROR if gate.blocking or gate.severity == "error" else dg.AssetCheckSeverity.WARN

    @dg.asset_check(
        asset=dg.AssetKey(list(GATED_ASSET[gate.kind])),
        name=gate.name,
        partitions_def=helm_suites,
        blocking=gate.blocking,
        description=gate.description or f"{gate.kind} gate {gate.name} from the governance policy.",
        metadata={"gate_kind": gate.kind, "blocking": gate.blocking},
        additional_deps=[dg.AssetKey(list(key)) for key in OTHER_INPUTS.get(gate.kind, [])],
    )
    def _check(context: dg.AssetCheckExecutionContext, state: GovernanceState) -> dg.AssetCheckResult:
        def judge(suite: str) -> Judgement:
            result = judge_gate(gate, policy, context, state, suite)
            if result is None:
                return Judgement("no data", None, None, "helm/runs was never built for this suite")
            return Judgement(
                result.outcome,
                result.actual,
                result.threshold,
                evidence_rows(result.rows),
                severity,
                gate_metadata(result),
            )

        return judge_partitions(context, judge)

    return _check


def build_gate_checks(policy: Policy) -> list[dg.AssetChecksDefinition]:
    """One check per gate in the policy."""
    return [build_gate_check(gate, policy) for gate in policy.gates]


@dg.definitions
def gate_checks() -> dg.Definitions:
    return dg.Definitions(asset_checks=build_gate_checks(POLICY))
