"""The verdict table: every gate's outcome per model for a suite, recorded in MLflow."""

import json
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.helm.inputs import earlier_instance_stats, suite_tables
from governance_assets.defs.metadata import md_table
from governance_assets.defs.partitions import suite_asset
from governance_assets.defs.resources import GovernanceState, MlflowTracking
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.gates.evaluation import evaluate_gates, evidence_rows, verdict_rows
from governance_assets.lib.helm import tidy

VERDICTS_KEY = ("gates", "verdicts")
VERDICTS_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("model", pa.string()),
        ("gate", pa.string()),
        ("kind", pa.string()),
        ("blocking", pa.bool_()),
        ("severity", pa.string()),
        ("status", pa.string()),
        ("actual", pa.string()),
        ("threshold", pa.string()),
        ("evidence", pa.string()),
    ]
)


@dg.asset(
    **suite_asset(VERDICTS_KEY, kinds={"parquet", "mlflow"}, deps=[RUNS_KEY, *(spec.key for spec in tidy.TIDY_TABLES)])
)
def gates_verdicts(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Every gate of the policy per model × suite: status, actual, threshold and evidence."""
    policy = state.policy()
    recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
    evaluations = mlflow.recorder(state, policy.mlflow.evaluation_experiment)
    counts = {"pass": 0, "fail": 0, "no data": 0}
    shown: list[dict[str, Any]] = []
    for suite in context.partition_keys:
        tables = suite_tables(state, suite)
        if tables is None:
            raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
        results = evaluate_gates(
            policy.gates,
            tables,
            earlier_instance_stats(context.instance, state, suite),
            policy.regression,
        )
        rows = verdict_rows(suite, results, {g.name: g.severity for g in policy.gates})
        frame = pd.DataFrame(rows, columns=VERDICTS_SCHEMA.names)
        state.warehouse().write(
            VERDICTS_KEY,
            suite,
            pa.Table.from_pandas(frame, schema=VERDICTS_SCHEMA, preserve_index=False),
        )
        for row in rows:
            counts[row["status"]] += 1
        shown += [{k: row[k] for k in ("suite", "model", "gate", "status", "actual", "threshold")} for row in rows]
        judged = {name: record.info.run_id for name, record in evaluations.latest_by_run_name(suite).items()}
        run_id = log_report(
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
                "gates_passed": sum(r["status"] == "pass" for r in rows),
                "gates_failed": sum(r["status"] == "fail" for r in rows),
                "gates_without_data": sum(r["status"] == "no data" for r in rows),
            },
            {
                "verdicts.json": json.dumps(evidence_rows(rows), indent=2),
                "judged_runs.json": json.dumps(judged, indent=2),
            },
        )
        context.log.info(f"suite {suite}: verdicts logged to MLflow run {run_id}")
    return dg.MaterializeResult(
        metadata={
            "gates_passed": counts["pass"],
            "gates_failed": counts["fail"],
            "gates_without_data": counts["no data"],
            "verdicts": dg.MetadataValue.md(
                md_table(shown, ["suite", "model", "gate", "status", "actual", "threshold"])
            ),
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id)),
        }
    )
