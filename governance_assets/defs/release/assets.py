"""The release decision: promote or block each model of a suite, with the reasons."""

import json
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.gates.assets import DECISION_KEY, VERDICTS_KEY, table_metadata
from governance_assets.defs.metadata import table_schema
from governance_assets.defs.partitions import suite_asset
from governance_assets.defs.resources import POLICY, GovernanceState, MlflowTracking
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.gates.release import release_decisions

DECISION_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("model", pa.string()),
        ("decision", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("warnings", pa.list_(pa.string())),
    ]
)


@dg.asset(**suite_asset(DECISION_KEY, kinds={"parquet", "mlflow"}, deps=[VERDICTS_KEY]))
def release_decision(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Promote or block each model of the suite; never materialises past a failed blocking gate."""
    recorder = mlflow.recorder(state, POLICY.mlflow.governance_experiment)
    shown: list[dict[str, Any]] = []
    run_id = ""
    for suite in context.partition_keys:
        verdicts = state.warehouse().read(VERDICTS_KEY, suite)
        if verdicts is None:
            raise dg.Failure(description=f"suite {suite}: gates/verdicts was never built")
        decisions = [{"suite": suite, **d} for d in release_decisions(verdicts.to_pylist())]
        state.warehouse().write(
            DECISION_KEY,
            suite,
            pa.Table.from_pandas(pd.DataFrame(decisions), schema=DECISION_SCHEMA, preserve_index=False),
        )
        run_id = log_report(
            recorder,
            f"{suite}/release",
            {
                "governance.suite": suite,
                "dagster.run_id": context.run.run_id,
                "dagster.asset_key": "release/decision",
                "dagster.partition": suite,
            },
            {
                "models_promoted": sum(d["decision"] == "promote" for d in decisions),
                "models_blocked": sum(d["decision"] == "block" for d in decisions),
            },
            {"decision.json": json.dumps(decisions, indent=2)},
        )
        shown += [
            {**d, "reasons": "; ".join(d["reasons"]) or "-", "warnings": "; ".join(d["warnings"]) or "-"}
            for d in decisions
        ]
    promoted = [row["model"] for row in shown if row["decision"] == "promote"]
    return dg.MaterializeResult(
        metadata={
            "models_promoted": len(promoted),
            "models_blocked": len(shown) - len(promoted),
            "summary": "; ".join(f"{row['model']}: {row['decision'].upper()}" for row in shown),
            "decision": table_metadata(shown, DECISION_SCHEMA, ["model", "decision", "reasons", "warnings"]),
            "dagster/row_count": len(shown),
            "dagster/column_schema": table_schema(DECISION_SCHEMA),
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id)),
        }
    )
