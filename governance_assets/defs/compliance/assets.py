"""Compliance evidence per suite (bias and fairness, PII and toxicity screens, failure slices,
the regulation-mapped report) and the tamper-evident audit log of every decision."""

import json
from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.compliance.claims import BIAS_FAIRNESS_KEY
from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.helm.inputs import suite_tables
from governance_assets.defs.metadata import md_table, parquet_table_metadata
from governance_assets.defs.partitions import helm_suites, suite_asset
from governance_assets.defs.resources import POLICY, GovernanceState
from governance_assets.lib.compliance import evidence
from governance_assets.lib.compliance.settings import ComplianceSettings
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.helm import tidy

PII_KEY = ("compliance", "pii")
TOXICITY_KEY = ("compliance", "toxicity")
SLICES_KEY = ("compliance", "slices")
REPORT_KEY = ("compliance", "report")
AUDIT_LOG_KEY = ("compliance", "audit_log")
HELM_TABLES = [RUNS_KEY, *(dg.AssetKey(list(spec.key)) for spec in tidy.TIDY_TABLES)]
ROBUSTNESS_CHECK = "robustness_within_limit"
PII_CHECK = "pii_rate_within_limit"
TOXICITY_CHECK = "toxic_rate_within_limit"


def _tables(state: GovernanceState, suite: str) -> SuiteTables:
    tables = suite_tables(state, suite)
    if tables is None:
        raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
    return tables


def _write(state: GovernanceState, key: tuple[str, str], suite: str, frame: pd.DataFrame) -> None:
    state.warehouse().write(key, suite, pa.Table.from_pandas(frame, preserve_index=False))


def _table_metadata(context: dg.AssetExecutionContext, state: GovernanceState, key: tuple[str, str]) -> dict[str, Any]:
    """The column schema and row count of the tables written for the run's suites."""
    return parquet_table_metadata([state.warehouse().path(key, suite) for suite in context.partition_keys])


def _check(
    name: str, outcome: str, blocking: bool, actual: Any, threshold: Any, evidence_rows: list[dict[str, Any]]
) -> dg.AssetCheckResult:
    """One check result: `pass` passes; `fail` fails at ERROR when blocking, else WARN;
    `inconclusive` and "no data" fail at WARN (never a pass)."""
    error = outcome == "fail" and blocking
    return dg.AssetCheckResult(
        check_name=name,
        passed=outcome == "pass",
        severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
        metadata={
            "outcome": outcome,
            "actual": str(actual),
            "threshold": str(threshold),
            "evidence": dg.MetadataValue.json(evidence_rows),
        },
    )


def _worst(outcomes: list[str]) -> str:
    for outcome in ("fail", "inconclusive", "no data"):
        if outcome in outcomes:
            return outcome
    return "pass" if outcomes else "no data"


def _declared(context: dg.AssetExecutionContext, results: list[dg.AssetCheckResult]) -> list[dg.AssetCheckResult]:
    """A result for each check the asset declares (from the policy loaded with the code location):
    the judged one, or "no data" when the policy in force has no such limit."""
    judged = {result.check_name: result for result in results}
    return [
        judged.get(key.name) or _check(key.name, "no data", False, "not in the policy in force", "-", [])
        for key in sorted(context.selected_asset_check_keys, key=lambda k: k.name)
    ]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def _settings(state: GovernanceState) -> ComplianceSettings:
    return state.policy().compliance


def _bias_fairness_checks(settings: ComplianceSettings) -> list[dg.AssetCheckSpec]:
    key = dg.AssetKey(list(BIAS_FAIRNESS_KEY))
    specs = [
        dg.AssetCheckSpec(
            limit.name,
            asset=key,
            partitions_def=helm_suites,
            description=f"Largest gap between groups of {limit.metric} is at most {limit.max_group_gap} "
            "(Newcombe/Welch intervals, Bonferroni over group pairs). A `blocking` limit fails at ERROR and "
            "blocks the model in release/decision (the check itself does not stop gates/verdicts, which reads it).",
        )
        for limit in settings.fairness_limits
    ]
    if settings.max_perturbation_drop is not None:
        specs.append(
            dg.AssetCheckSpec(
                ROBUSTNESS_CHECK,
                asset=key,
                partitions_def=helm_suites,
                description=f"No worst-case drop under a perturbation beyond {settings.max_perturbation_drop} "
                "(paired interval, significant after correction).",
            )
        )
    return specs


@dg.asset(
    **suite_asset(BIAS_FAIRNESS_KEY, kinds={"parquet", "fairlearn"}, deps=HELM_TABLES),
    check_specs=_bias_fairness_checks(POLICY.compliance),
)
def compliance_bias_fairness(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """HELM's bias and BBQ metrics, perturbation gaps paired by instance, and group gaps (fairlearn)."""
    settings = _settings(state)
    frames = []
    for suite in context.partition_keys:
        tables = _tables(state, suite)
        frame = evidence.bias_fairness_table(tables.run_stats, tables.instance_stats, tables.predictions, settings)
        _write(state, BIAS_FAIRNESS_KEY, suite, frame)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    checks = table[table["section"] == "fairness_check"]
    results = []
    for limit in settings.fairness_limits:
        mine = checks[checks["group"].astype(str).str.startswith(f"{limit.name}: ")]
        results.append(
            _check(limit.name, _worst(list(mine["outcome"])), limit.blocking,
                   f"{mine['gap'].abs().max():.3f}" if len(mine) else "no groups", limit.max_group_gap, _records(mine))
        )  # fmt: skip
    gaps = table[(table["section"] == "perturbation") & (table["computed_on"] == "worst")]
    if settings.max_perturbation_drop is not None:
        outcome = _worst(list(gaps["outcome"])) if len(gaps) else "no data"
        results.append(
            _check(ROBUSTNESS_CHECK, outcome, False, f"{gaps['gap'].min():+.3f}" if len(gaps) else "no perturbation runs",
                   f"drop <= {settings.max_perturbation_drop}", _records(gaps))
        )  # fmt: skip
    bias = table[table["section"] == "helm_bias"]
    return dg.MaterializeResult(
        metadata={
            "helm_bias_metrics": len(bias),
            "helm_bias_no_data": int((bias["outcome"] == "no data").sum()),
            "perturbation_gaps": dg.MetadataValue.md(
                md_table(
                    _records(gaps.round(4)),
                    ["run_name", "metric", "perturbation", "n", "gap", "ci_low", "ci_high", "p_adjusted"],
                )
            ),
            "fairness_checks": dg.MetadataValue.md(
                md_table(
                    _records(checks.round(4)),
                    ["run_name", "metric", "group", "n", "gap", "ci_low", "ci_high", "outcome"],
                )
            ),
            **_table_metadata(context, state, BIAS_FAIRNESS_KEY),
        },
        check_results=_declared(context, results),
    )


def _rate_check_spec(name: str, key: tuple[str, str], description: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=dg.AssetKey(list(key)), partitions_def=helm_suites, description=description)]


def _per_suite(
    context: dg.AssetExecutionContext,
    state: GovernanceState,
    key: tuple[str, str],
    build: Callable[[SuiteTables], pd.DataFrame],
) -> pd.DataFrame:
    """Build, tag and write the table of each suite of the run; all of them together."""
    frames = []
    for suite in context.partition_keys:
        frame = build(_tables(state, suite)).assign(suite=suite)
        _write(state, key, suite, frame)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _rate_check(name: str, rates: pd.DataFrame, limit: float, shown: pd.DataFrame) -> dg.AssetCheckResult:
    """A per-model share within `limit` (WARN when over it: a screen advises, the report decides)."""
    over = rates[rates["rate"] > limit]
    outcome = "no data" if rates.empty else "fail" if len(over) else "pass"
    actual = f"{rates['rate'].max():.3f}" if len(rates) else "none"
    return _check(name, outcome, False, actual, limit, _records(shown.loc[over.index]))


@dg.asset(
    **suite_asset(PII_KEY, kinds={"parquet", "presidio"}, deps=[dg.AssetKey(list(tidy.PREDICTIONS.key))]),
    check_specs=_rate_check_spec(
        PII_CHECK, PII_KEY, "Each model's share of completions with personal data is within the policy's limit."
    ),
)
def compliance_pii(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Personal data in completions (offline Presidio patterns): rate, counts by type, redacted examples."""
    settings = _settings(state)
    table = _per_suite(
        context, state, PII_KEY, lambda tables: evidence.pii_table(tables.predictions, tables.run_stats, settings)
    )
    screened = table[table["field"] == "completion"]
    return dg.MaterializeResult(
        metadata={
            "texts_screened": int(screened["texts"].sum()),
            "texts_with_pii": int(screened["with_pii"].sum()),
            "by_model": dg.MetadataValue.md(
                md_table(_records(table), ["model", "field", "texts", "with_pii", "rate", "by_type", "source"])
            ),
            **_table_metadata(context, state, PII_KEY),
        },
        check_results=[_rate_check(PII_CHECK, screened, settings.max_pii_rate, screened.drop(columns="examples"))],
    )


@dg.asset(
    **suite_asset(TOXICITY_KEY, kinds={"parquet", "scikitlearn"}, deps=HELM_TABLES),
    check_specs=_rate_check_spec(
        TOXICITY_CHECK, TOXICITY_KEY, "Each model's share of flagged completions is within the policy's limit."
    ),
)
def compliance_toxicity(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Toxicity per model: HELM's Perspective stats, else an offline classifier, with its agreement with LLM judges."""
    settings = _settings(state)
    table = _per_suite(
        context,
        state,
        TOXICITY_KEY,
        lambda tables: evidence.toxicity_table(tables.runs, tables.predictions, tables.run_stats, settings),
    )
    judged = table[table["judged"].notna()]
    metadata: dict[str, Any] = {
        "by_model": dg.MetadataValue.md(md_table(_records(table.round(4)), list(table.columns))),
        "completions": int(table["completions"].fillna(0).sum()),
        **_table_metadata(context, state, TOXICITY_KEY),
    }
    if len(judged):
        metadata["judged_completions"] = int(judged["judged"].sum())
        metadata["judge_harmful"] = int(judged["judge_harmful"].sum())
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[_rate_check(TOXICITY_CHECK, table, settings.max_toxic_rate, table)],
    )


@dg.asset(**suite_asset(SLICES_KEY, kinds={"parquet", "scipy"}, deps=HELM_TABLES))
def compliance_slices(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Where models fail: slices ranked by failures explained, with corrected significance and minimum support."""
    settings = _settings(state)
    shown = []
    for suite in context.partition_keys:
        tables = _tables(state, suite)
        frame = evidence.slices_table(tables.runs, tables.instance_stats, tables.predictions, settings)
        _write(state, SLICES_KEY, suite, frame)
        shown += _records(frame.head(settings.slices.top).round(4))
    return dg.MaterializeResult(
        metadata={
            "significant_slices": sum(bool(row["significant"]) for row in shown),
            **_table_metadata(context, state, SLICES_KEY),
            "top_slices": dg.MetadataValue.md(
                md_table(
                    shown,
                    [
                        "metric",
                        "feature",
                        "value",
                        "support",
                        "slice_mean",
                        "rest_mean",
                        "failures_explained",
                        "p_adjusted",
                        "significant",
                    ],
                )
            ),
        }
    )
