"""Iteration plans: what to do next for a suite, ranked, with what each step costs."""

import json
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.gates.assets import VERDICTS_KEY, table_metadata
from governance_assets.defs.helm.inputs import suite_tables
from governance_assets.defs.metadata import parquet_table_metadata
from governance_assets.defs.partitions import suite_asset
from governance_assets.defs.resources import POLICY, GovernanceState, MlflowTracking
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.evaluation import read_frame
from governance_assets.lib.helm import tidy
from governance_assets.lib.iteration.plan import (
    PlanContext,
    PlanItem,
    items_from_drift,
    items_from_fairness,
    items_from_feedback,
    items_from_slices,
    items_from_trends,
    items_from_verdicts,
    needed_evaluation_plan,
    rank,
)
from governance_assets.lib.iteration.render import COLUMNS, plan_html, plan_markdown
from governance_assets.lib.iteration.sample_size import (
    Design,
    designs_to_decide,
    instances_available,
    paired_trial_drops,
    variance_components,
)

PLAN_KEY = ("iteration", "plan")
SLICES_KEY = ("compliance", "slices")
FAIRNESS_KEY = ("compliance", "bias_fairness")
PLAN_SCHEMA = pa.schema(
    [
        ("suite", pa.string()),
        ("rank", pa.int64()),
        ("kind", pa.string()),
        ("model", pa.string()),
        ("blocks_release", pa.bool_()),
        ("problem", pa.string()),
        ("evidence", pa.string()),
        ("action", pa.string()),
        ("expected_gain", pa.float64()),
        ("gain_low", pa.float64()),
        ("gain_high", pa.float64()),
        ("instances", pa.int64()),
        ("model_calls", pa.int64()),
        ("evaluation_plan", pa.string()),
        ("instances_available", pa.int64()),
    ]
)
SWEEP_TRIALS = 8
"""Trials a guided sweep is costed at when the policy names no search space."""


def _designs(state: GovernanceState, suite: str, candidate: pd.DataFrame) -> Any:
    """The designs callback of the plan: per-trial drops of a comparison against its baseline suite."""
    baselines: dict[str, pd.DataFrame] = {}

    def designs(comparison: dict[str, Any]) -> list[Design]:
        name = str(comparison["baseline_suite"])
        if name not in baselines:
            baselines[name] = read_frame(state.warehouse(), tidy.INSTANCE_STATS, name)
        drops = paired_trial_drops(
            candidate, baselines[name], comparison["run_name"], comparison["metric"], comparison.get("split")
        )
        if drops.shape[0] < 2:
            return []
        regression = POLICY.regression
        return designs_to_decide(
            float(drops.mean()),
            variance_components(drops),
            float(comparison["tolerance"]),
            regression.alpha,
            regression.power,
        )

    return designs


def _available(tables: SuiteTables) -> Callable[[Mapping[str, Any]], int | None]:
    """The available callback of the plan: what each run's scenario has, from the instances HELM drew."""
    sizes = instances_available(tables.runs, tables.instance_stats)
    return lambda comparison: sizes.get((str(comparison["run_name"]), comparison.get("split")))


def _latest(state: GovernanceState, key: tuple[str, str]) -> tuple[pd.DataFrame | None, str]:
    """The newest daily partition of a monitoring or feedback table, and its key, if any was built."""
    days = sorted((state.home_path() / "warehouse" / key[0] / key[1]).glob("*.parquet"))
    return (pd.read_parquet(days[-1]), f"{'/'.join(key)}:{days[-1].stem}") if days else (None, "")


def _monitoring_and_feedback_items(state: GovernanceState, plan_context: PlanContext) -> list[PlanItem]:
    """Items from production: the latest day's drift and experiments, and the trends' change points."""
    drift, drift_link = _latest(state, ("monitoring", "traffic_drift"))
    ab_tests, ab_link = _latest(state, ("feedback", "ab_tests"))
    trends_path = state.home_path() / "warehouse" / "monitoring" / "trends.parquet"
    trends = pd.read_parquet(trends_path) if trends_path.exists() else None
    return (
        items_from_drift(drift, plan_context, drift_link)
        + items_from_trends(trends, plan_context, "monitoring/trends")
        + items_from_feedback(ab_tests, plan_context, ab_link)
    )


@dg.asset(**suite_asset(PLAN_KEY, kinds={"parquet", "mlflow"}, deps=[VERDICTS_KEY, SLICES_KEY, FAIRNESS_KEY]))
def iteration_plan(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """What to do next for the suite, ranked: failed and inconclusive gates first, with the evidence,
    the action, the expected gain and the cost in HELM instances and model calls."""
    recorder = mlflow.recorder(state, POLICY.mlflow.governance_experiment)
    warehouse = state.warehouse()
    rows: list[dict[str, Any]] = []
    run_id, needed = "", {}
    for suite in context.partition_keys:
        verdicts = warehouse.read(VERDICTS_KEY, suite)
        tables = suite_tables(state, suite)
        if verdicts is None or tables is None:
            raise dg.Failure(description=f"suite {suite}: gates/verdicts was never built; materialise it first")
        links = f"gates/verdicts:{suite}"
        plan = POLICY.evaluation_plan
        plan_context = PlanContext(
            plan.max_eval_instances,
            plan.num_train_trials or 1,
            SWEEP_TRIALS,
            links,
            _designs(state, suite, tables.instance_stats),
            _available(tables),
        )
        slices, fairness = warehouse.read(SLICES_KEY, suite), warehouse.read(FAIRNESS_KEY, suite)
        items = items_from_verdicts(verdicts.to_pylist(), plan_context)
        items += items_from_slices(
            slices.to_pandas() if slices is not None else None, plan_context, f"compliance/slices:{suite}"
        )
        items += items_from_fairness(
            fairness.to_pandas() if fairness is not None else None, plan_context, f"compliance/bias_fairness:{suite}"
        )
        items += _monitoring_and_feedback_items(state, plan_context)
        ranked = rank(items)
        needed = needed_evaluation_plan(ranked)
        frame = pd.DataFrame(
            [{**row, "suite": suite, "evaluation_plan": json.dumps(dict(row["evaluation_plan"]))} for row in ranked],
            columns=PLAN_SCHEMA.names,
        )
        warehouse.write(
            PLAN_KEY,
            suite,
            pa.Table.from_pandas(frame, schema=PLAN_SCHEMA, preserve_index=False),
            {"evaluation_plan": needed},
        )
        markdown, page = plan_markdown(suite, ranked, needed), plan_html(suite, ranked, needed)
        reports = state.home_path() / "reports" / "iteration"
        write_text_atomic(reports / f"{suite}.md", markdown)
        write_text_atomic(reports / f"{suite}.html", page)
        run_id = log_report(
            recorder,
            f"{suite}/plan",
            {
                "governance.suite": suite,
                "dagster.run_id": context.run.run_id,
                "dagster.asset_key": "iteration/plan",
                "dagster.partition": suite,
            },
            {"plan_items": len(ranked), "blocking_items": sum(r["blocks_release"] for r in ranked)},
            {"plan.md": markdown, "plan.html": page, "plan.json": json.dumps(ranked, indent=2, default=str)},
        )
        rows += [{**row, "suite": suite} for row in ranked]
    return dg.MaterializeResult(
        metadata={
            "plan_items": len(rows),
            "blocking_items": sum(row["blocks_release"] for row in rows),
            "top_item": f"{rows[0]['kind']}: {rows[0]['problem']} -> {rows[0]['action']}" if rows else "nothing to do",
            "plan": table_metadata(rows, PLAN_SCHEMA, [c for c in COLUMNS if c != "evidence"]),
            "evaluation_plan_that_decides": json.dumps(needed) if needed else "none needed",
            "report": dg.MetadataValue.path(
                str(state.home_path() / "reports" / "iteration" / f"{context.partition_keys[-1]}.html")
            ),
            **parquet_table_metadata([warehouse.path(PLAN_KEY, suite) for suite in context.partition_keys]),
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id)),
        }
    )
