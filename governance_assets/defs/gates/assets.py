"""The gates, judged once per suite: the verdict table, the MLflow `governance` record, and one
asset check per gate reporting from that single judgement.

Every gate of the policy loaded with the code location is evaluated here, in one step, from one
policy; the checks are this asset's check specs, so a blocking gate that fails stops
`release/decision` while the verdicts and their MLflow record are still written."""

import json
import math
from collections.abc import Sequence
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.compliance.claims import BIAS_FAIRNESS_KEY, amend_suite_verdicts
from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.helm.inputs import earlier_instance_stats, suite_tables
from governance_assets.defs.metadata import table_schema
from governance_assets.defs.partitions import helm_suites, suite_asset
from governance_assets.defs.resources import POLICY, GovernanceState, MlflowTracking
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.core.policy import Policy
from governance_assets.lib.gates.evaluation import evidence_rows, verdict_rows
from governance_assets.lib.gates.ingestion import INGESTION_GATE
from governance_assets.lib.gates.outcomes import OUTCOMES, overall
from governance_assets.lib.gates.registry import KIND_BY_NAME, GateInputs, evaluate_gates
from governance_assets.lib.gates.release import release_decisions, stops_release
from governance_assets.lib.helm import tidy

VERDICTS_KEY = ("gates", "verdicts")
DECISION_KEY = ("release", "decision")
VERDICTS_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("model", pa.string()),
        ("gate", pa.string()),
        ("kind", pa.string()),
        ("blocking", pa.bool_()),
        ("severity", pa.string()),
        ("status", pa.string()),
        ("blocks_release", pa.bool_()),
        ("reason", pa.string()),
        ("actual", pa.string()),
        ("threshold", pa.string()),
        ("failing_runs", pa.list_(pa.string())),
        ("evidence", pa.string()),
    ]
)
SEVERITY_ORDER = {"fail": 0, "inconclusive": 1, "no data": 2, "pass": 3}
"""The order in which a check's one-line reason lists the models' outcomes: failures first."""
SHOWN_COLUMNS = ["model", "gate", "status", "blocks_release", "reason", "threshold"]
"""The columns of the verdict table shown in the UI (the evidence is in the Parquet file and MLflow)."""


def _cell(value: Any) -> str | int | float | bool:
    """A value the UI's table can show: numbers as they are, a missing or non-finite number as "-"."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else "-"
    return "-" if value is None else str(value)


def table_metadata(rows: Sequence[dict[str, Any]], schema: pa.Schema, columns: Sequence[str]) -> dg.MetadataValue:
    """Rows as a Dagster table with a column schema (the UI renders it as a sortable table)."""
    types = {"bool": "bool", "int64": "int", "double": "float"}
    table_schema = dg.TableSchema(
        columns=[dg.TableColumn(name, types.get(str(schema.field(name).type), "string")) for name in columns]
    )
    shown = [dg.TableRecord({name: _cell(row[name]) for name in columns}) for row in rows]
    return dg.MetadataValue.table(shown, schema=table_schema)


def check_name(gate: str) -> str:
    """The asset check of a gate."""
    return gate


def gate_check_keys(policy: Policy) -> list[dg.AssetCheckKey]:
    """The check key of every gate of `policy`, and of the ingestion gate every suite gets."""
    key = dg.AssetKey(list(VERDICTS_KEY))
    return [dg.AssetCheckKey(key, check_name(name)) for name in [INGESTION_GATE, *(g.name for g in policy.gates)]]


def _check_specs(policy: Policy) -> list[dg.AssetCheckSpec]:
    specs = [
        dg.AssetCheckSpec(
            INGESTION_GATE,
            asset=dg.AssetKey(list(VERDICTS_KEY)),
            blocking=True,
            partitions_def=helm_suites,
            description="Every run of the suite is complete and was read into every tidy table; a model "
            "with an unreadable run is never promoted.",
            metadata={"gate_kind": "ingestion", "blocking": True},
        )
    ]
    for gate in policy.gates:
        table = "/".join(KIND_BY_NAME[gate.kind].table)
        specs.append(
            dg.AssetCheckSpec(
                check_name(gate.name),
                asset=dg.AssetKey(list(VERDICTS_KEY)),
                blocking=gate.blocking,
                partitions_def=helm_suites,
                description=(gate.description or f"{gate.kind} gate {gate.name}") + f" (judged on {table}).",
                metadata={"gate_kind": gate.kind, "blocking": gate.blocking, "judged_table": table},
            )
        )
    return specs


def _check_result(gate: str, rows: Sequence[dict[str, Any]], severity: str) -> dg.AssetCheckResult:
    """A gate's check result for one suite, from its verdict rows (one per model)."""
    status = overall([row["status"] for row in rows]) if rows else "no data"
    blocking = any(row["blocking"] for row in rows)
    blocks = [row for row in rows if row["blocks_release"]]
    shown = sorted(
        blocks or [row for row in rows if row["status"] == status] or list(rows),
        key=lambda row: SEVERITY_ORDER[row["status"]],
    )
    verdict = "BLOCK" if blocks else ("PASS" if status == "pass" else "WARN")
    reason = f"{verdict}: " + "; ".join(f"{row['model']}: {row['reason']}" for row in shown[:3])
    if len(shown) > 3:
        reason += f"; and {len(shown) - 3} more models"
    evidence = [item for row in rows for item in json.loads(row["evidence"])]
    failing = sorted({run for row in rows for run in row["failing_runs"]})
    metadata: dict[str, Any] = {
        "outcome": status,
        "reason": reason,
        "threshold": rows[0]["threshold"] if rows else "",
        "actual": "; ".join(f"{row['model']}: {row['actual']}" for row in rows),
        "failing_runs": ", ".join(failing) or "none",
        "blocking": blocking,
        "evidence": dg.MetadataValue.json(evidence),
    }
    judged = [item for item in evidence if item.get("drop") is not None]
    if judged:
        worst = max(judged, key=lambda item: item["drop"])
        metadata |= {
            "worst_run": f"{worst['run_name']} {worst['metric']}",
            "drop": worst["drop"],
            "drop_upper": worst["drop_upper"],
            "p_exceeds_adjusted": worst["p_exceeds_adjusted"],
            "baseline_suite": worst["baseline_suite"],
        }
    error = status == "fail" and severity == "error" and bool(blocks)  # a waived failure only warns
    return dg.AssetCheckResult(
        check_name=check_name(gate),
        passed=status == "pass",
        severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
        description=reason[:1000],
        metadata=metadata,
    )


def _headlines(rows: Sequence[dict[str, Any]], run_stats: pd.DataFrame, metrics: Sequence[str]) -> dict[str, float]:
    """Per model: the mean over its runs of each headline metric (test split, unperturbed), and
    the share of its gates that passed; numeric metadata the UI plots across suites."""
    headlines: dict[str, float] = {}
    plain = run_stats[run_stats["perturbation"].isna() & (run_stats["split"] == "test") & (run_stats["count"] > 0)]
    for metric in metrics:
        means = plain[plain["metric"] == metric].groupby("model", observed=True)["mean"].mean()
        headlines |= {f"{metric} | {model}": float(value) for model, value in means.items()}
    for model in sorted({row["model"] for row in rows if row["model"] != "*"}):
        own = [row for row in rows if row["model"] in (model, "*")]
        headlines[f"gates passed | {model}"] = sum(row["status"] == "pass" for row in own) / len(own)
    return headlines


def build_verdicts_asset(policy: Policy) -> dg.AssetsDefinition:
    """The verdicts asset for `policy` (the code location's policy, or a test's)."""
    severities = {gate.name: gate.severity for gate in policy.gates}

    @dg.asset(
        **suite_asset(
            VERDICTS_KEY,
            kinds={"parquet", "mlflow"},
            deps=[RUNS_KEY, *(spec.key for spec in tidy.TIDY_TABLES), BIAS_FAIRNESS_KEY],
        ),
        check_specs=_check_specs(policy),
    )
    def gates_verdicts(
        context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
    ) -> dg.MaterializeResult:  # type: ignore[type-arg]
        """Every gate of the policy per model × suite, judged once: status, reason, evidence, and
        whether it blocks the release; recorded in MLflow experiment `governance`."""
        recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
        evaluations = mlflow.recorder(state, policy.mlflow.evaluation_experiment)
        rows: list[dict[str, Any]] = []
        headlines: dict[str, float] = {}
        run_ids = []
        for suite in context.partition_keys:
            tables = suite_tables(state, suite)
            if tables is None:
                raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
            inputs = GateInputs(tables, earlier_instance_stats(context.instance, state, suite), policy.regression)
            suite_rows = verdict_rows(suite, evaluate_gates(policy.gates, inputs), severities)
            for row in suite_rows:
                row["blocks_release"] = stops_release(row, policy.regression.inconclusive)
            suite_rows = amend_suite_verdicts(state, suite, tables.runs, suite_rows)
            state.warehouse().write(
                VERDICTS_KEY,
                suite,
                pa.Table.from_pandas(
                    pd.DataFrame(suite_rows, columns=VERDICTS_SCHEMA.names),
                    schema=VERDICTS_SCHEMA,
                    preserve_index=False,
                ),
            )
            decisions = release_decisions(suite_rows)
            if any(row["blocks_release"] and row["status"] == "fail" and row["blocking"] for row in suite_rows):
                state.warehouse().delete(DECISION_KEY, suite)  # a blocked suite keeps no stale decision
            judged = {name: record.info.run_id for name, record in evaluations.latest_by_run_name(suite).items()}
            run_ids.append(
                log_report(
                    recorder,
                    f"{suite}/gates",
                    {
                        "governance.suite": suite,
                        "dagster.run_id": context.run.run_id,
                        "dagster.asset_key": "gates/verdicts",
                        "dagster.partition": suite,
                        "governance.judged_runs": str(len(judged)),
                    },
                    {
                        f"gates_{status.replace(' ', '_')}": sum(r["status"] == status for r in suite_rows)
                        for status in OUTCOMES
                    }
                    | {"models_blocked": sum(d["decision"] == "block" for d in decisions)},
                    {
                        "verdicts.json": json.dumps(evidence_rows(suite_rows), indent=2),
                        "decision.json": json.dumps(decisions, indent=2),
                        "judged_runs.json": json.dumps(judged, indent=2),
                    },
                )
            )
            context.log.info(f"suite {suite}: verdicts logged to MLflow run {run_ids[-1]}")
            rows += suite_rows
            headlines |= _headlines(suite_rows, tables.run_stats, policy.monitoring.trends.metrics)
        gates = [INGESTION_GATE, *(gate.name for gate in policy.gates)]
        by_gate = {gate: [row for row in rows if row["gate"] == gate] for gate in gates}
        levels = {INGESTION_GATE: "error"} | {g.name: "error" if g.blocking else g.severity for g in policy.gates}
        return dg.MaterializeResult(
            metadata={
                **{f"gates_{s.replace(' ', '_')}": sum(r["status"] == s for r in rows) for s in OUTCOMES},
                "models_blocked": len({r["model"] for r in rows if r["blocks_release"]}),
                "verdicts": table_metadata(rows, VERDICTS_SCHEMA, SHOWN_COLUMNS),
                **headlines,
                "dagster/row_count": len(rows),
                "dagster/column_schema": table_schema(VERDICTS_SCHEMA),
                "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_ids[-1])),
            },
            check_results=[_check_result(gate, by_gate[gate], levels[gate]) for gate in gates],
        )

    asset: dg.AssetsDefinition = gates_verdicts
    return asset


gates_verdicts = build_verdicts_asset(POLICY)
