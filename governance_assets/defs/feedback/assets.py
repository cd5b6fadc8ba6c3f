"""The production feedback loop: user feedback joined to traffic, and A/B tests judged every day."""

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from governance_assets.defs.feedback.staging import feedback_staging_path
from governance_assets.defs.metadata import md_table, parquet_table_metadata
from governance_assets.defs.partitions import daily_asset
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.storage import atomic_path, write_text_atomic
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.feedback.ab_tests import analyse_experiment
from governance_assets.lib.feedback.events import EVENTS_SCHEMA, assemble_day
from governance_assets.lib.feedback.online_eval import compare, helm_scores, production_scores, sample_rows
from governance_assets.lib.feedback.scenario import FOLDER as SCENARIO_FOLDER
from governance_assets.lib.feedback.scenario import build_dataset, write_dataset
from governance_assets.lib.feedback.scenario import run_entry as scenario_run_entry
from governance_assets.lib.feedback.units import EVENT_COLUMNS, TRAFFIC_COLUMNS, experiment_units, read_days

TRAFFIC_KEY = ("monitoring", "traffic")
EVENTS_KEY = ("feedback", "events")
AB_TESTS_KEY = ("feedback", "ab_tests")
JOIN_DAYS = 7
"""Feedback may arrive up to this many days after its request."""
AB_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("experiment", pa.string()),
        ("outcome", pa.string()),
        ("metric", pa.string()),
        ("role", pa.string()),
        ("variant", pa.string()),
        ("versus", pa.string()),
        ("n", pa.int64()),
        ("estimate", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("cs_low", pa.float64()),
        ("cs_high", pa.float64()),
        ("p_value", pa.float64()),
        ("always_valid_p", pa.float64()),
        ("adjusted_p", pa.float64()),
        ("call", pa.string()),
    ]
)
RESULTS_ANNOTATION = "experiments"
AB_COLUMNS_SHOWN = [
    "experiment",
    "metric",
    "variant",
    "versus",
    "n",
    "estimate",
    "ci_low",
    "ci_high",
    "cs_low",
    "cs_high",
    "always_valid_p",
    "adjusted_p",
    "call",
]
"""The A/B table as the UI and the demo show it."""


@dg.asset(
    **daily_asset(
        EVENTS_KEY,
        kinds={"parquet"},
        deps=[TRAFFIC_KEY],
        description="User feedback of one UTC day joined to the traffic it is about; orphans, duplicates and mismatches quarantined.",
    )
)
def events(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Rebuilds the day from every staged feedback source and the traffic of the day and the 7 before."""
    day = context.partition_key
    warehouse = state.warehouse()
    traffic_folder = warehouse.path(TRAFFIC_KEY, day).parent
    assembled = assemble_day(feedback_staging_path(state), traffic_folder, day, JOIN_DAYS)
    path = warehouse.write(EVENTS_KEY, day, assembled.table)
    quarantine = state.home_path() / "feedback" / "quarantine" / f"{day}.jsonl"
    write_text_atomic(quarantine, "".join(json.dumps(row, sort_keys=True) + "\n" for row in assembled.quarantined))
    counts = assembled.counts()
    context.log.info(f"{day}: {assembled.table.num_rows} feedback rows joined; set aside {counts}")
    return dg.MaterializeResult(
        metadata={
            "rows": assembled.table.num_rows,
            "sources": len(assembled.sources),
            **{f"quarantined/{reason.replace(' ', '_')}": count for reason, count in counts.items()},
            "quarantine": dg.MetadataValue.path(str(quarantine)),
            "table": dg.MetadataValue.path(str(path)),
            **parquet_table_metadata([path]),
        },
        data_version=dg.DataVersion(",".join(sorted(assembled.sources)) or "empty"),
    )


def _days_between(first: date, last: str, available: set[str]) -> list[str]:
    return sorted(day for day in available if first.isoformat() <= day <= last)


@dg.asset(
    **daily_asset(
        AB_TESTS_KEY,
        kinds={"parquet", "scipy"},
        deps=[EVENTS_KEY, TRAFFIC_KEY],
        description="Every A/B test of the policy judged on its requests up to this day: rates with intervals, sample ratio, always-valid p-values and the outcome.",
    )
)
def ab_tests(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """mSPRT decisions (valid under daily looks) per experiment: ship, keep the champion, or keep running."""
    day = context.partition_key
    settings = state.policy().feedback
    warehouse = state.warehouse()
    traffic_folder = warehouse.path(TRAFFIC_KEY, day).parent
    events_folder = warehouse.path(EVENTS_KEY, day).parent
    traffic_days = {p.stem for p in traffic_folder.glob("*.parquet")} if traffic_folder.exists() else set()
    event_days = {p.stem for p in events_folder.glob("*.parquet")} if events_folder.exists() else set()
    rows: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for experiment in settings.experiments:
        if experiment.start_date.isoformat() > day:
            continue
        traffic = read_days(traffic_folder, _days_between(experiment.start_date, day, traffic_days), TRAFFIC_COLUMNS)
        feedback = read_days(events_folder, _days_between(experiment.start_date, day, event_days), EVENT_COLUMNS)
        units = experiment_units(experiment.name, traffic, feedback)
        result = analyse_experiment(experiment, units, settings.srm_alpha, settings.srm_prior_concentration)
        rows += [{"day": day, "outcome": result.outcome} | row for row in result.rows]
        results.append(
            {
                "experiment": experiment.name,
                "outcome": result.outcome,
                "requests": len(units),
                "srm_p_value": result.srm_p_value,
                "srm_mismatch": result.srm_mismatch,
                "harmed_guardrails": result.harmed_guardrails,
                "reasons": result.reasons,
            }
        )
        context.log.info(f"{experiment.name}: {result.outcome}; " + "; ".join(result.reasons))
    table = pa.Table.from_pylist(rows, schema=AB_SCHEMA)
    path = warehouse.write(AB_TESTS_KEY, day, table, annotations={RESULTS_ANNOTATION: results})
    shown = [{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    return dg.MaterializeResult(
        metadata={
            "outcomes": dg.MetadataValue.md(
                md_table(
                    [r | {"reasons": "; ".join(r["reasons"])} for r in results],
                    ["experiment", "outcome", "requests", "srm_p_value", "reasons"],
                )
            ),
            "table": dg.MetadataValue.md(md_table(shown, AB_COLUMNS_SHOWN)),
            "experiments_shipping": sum(r["outcome"] == "ship_challenger" for r in results),
            **parquet_table_metadata([path]),
        }
    )


ONLINE_EVAL_KEY = ("feedback", "online_eval")
FEATURES_KEY = ("monitoring", "traffic_features")
RUN_STATS_KEY = ("helm", "run_stats")
ONLINE_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("model", pa.string()),
        ("sampled", pa.int64()),
        ("comparison", pa.string()),
        ("production_metric", pa.string()),
        ("production_value", pa.float64()),
        ("helm_suite", pa.string()),
        ("helm_metric", pa.string()),
        ("helm_value", pa.float64()),
        ("gap", pa.float64()),
        ("relative", pa.bool_()),
        ("max_gap", pa.float64()),
        ("diverged", pa.bool_()),
    ]
)


def _newest_suite(folder: Path) -> str | None:
    files = sorted(folder.glob("*.parquet"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
    return files[-1].stem if files else None


def _live_sample(warehouse: Warehouse, day: str, sample_size: int) -> pd.DataFrame:
    """The day's sampled requests with the monitoring group's refusal feature (row-aligned with the
    traffic table it was computed from; missing when the two do not line up)."""
    traffic_path = warehouse.path(TRAFFIC_KEY, day)
    if not traffic_path.exists():
        return pd.DataFrame(columns=["request_id", "model", "completion", "completion_tokens", "refusal"])
    traffic = pq.read_table(
        traffic_path, columns=["request_id", "model", "completion", "completion_tokens"]
    ).to_pandas()
    features_path = warehouse.path(FEATURES_KEY, day)
    refusal = pq.read_table(features_path, columns=["refusal"]).to_pandas() if features_path.exists() else None
    aligned = refusal is not None and len(refusal) == len(traffic)
    traffic["refusal"] = refusal["refusal"].astype(float).to_numpy() if aligned and refusal is not None else np.nan
    return sample_rows(traffic, sample_size, seed=int(day.replace("-", "")))


def _plot(table: pd.DataFrame, path: Path) -> None:
    """One panel per comparison: production and HELM side by side for each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comparisons = sorted(table["comparison"].unique())
    figure, axes = plt.subplots(1, max(1, len(comparisons)), figsize=(5 * max(1, len(comparisons)), 3.5), squeeze=False)
    for axis, name in zip(axes[0], comparisons, strict=False):
        rows = table[table["comparison"] == name]
        x = np.arange(len(rows))
        axis.bar(x - 0.2, rows["production_value"], 0.4, label="production (sample)")
        axis.bar(x + 0.2, rows["helm_value"], 0.4, label="HELM")
        axis.set_xticks(x, rows["model"], rotation=15, fontsize=8)
        axis.set_title(f"{name}: {rows['production_metric'].iloc[0]} vs {rows['helm_metric'].iloc[0]}", fontsize=9)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)


@dg.asset(
    **daily_asset(
        ONLINE_EVAL_KEY,
        kinds={"parquet", "matplotlib"},
        description="A sample of the day's live responses scored offline (refusal, length, PII, toxicity, agreement with user corrections) next to the same model's HELM scores.",
    )
    | {
        "deps": [
            dg.AssetKey(list(TRAFFIC_KEY)),
            dg.AssetKey(list(EVENTS_KEY)),
            dg.AssetDep(dg.AssetKey(list(RUN_STATS_KEY)), partition_mapping=dg.AllPartitionMapping()),
        ]
    }
)
def online_eval(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Where production and the benchmark disagree, per model, beside the policy's bounds."""
    day = context.partition_key
    settings = state.policy().feedback.online_eval
    warehouse = state.warehouse()
    sample = _live_sample(warehouse, day, settings.sample_size)
    events_path = warehouse.path(EVENTS_KEY, day)
    feedback = (
        pq.read_table(events_path).to_pandas() if events_path.exists() else pd.DataFrame(columns=EVENTS_SCHEMA.names)
    )
    suite = settings.suite or _newest_suite(warehouse.path(RUN_STATS_KEY, "x").parent)
    run_stats_path = warehouse.path(RUN_STATS_KEY, suite) if suite else None
    run_stats = pq.read_table(run_stats_path).to_pandas() if run_stats_path and run_stats_path.exists() else None
    production = production_scores(sample, feedback)
    helm = (
        helm_scores(run_stats, [c.helm for c in settings.comparisons])
        if run_stats is not None
        else pd.DataFrame(columns=["model", "metric", "helm_value"])
    )
    compared = (
        compare(production, helm, settings.comparisons)
        if len(production)
        else pd.DataFrame(columns=ONLINE_SCHEMA.names)
    )
    compared = compared.merge(production[["model", "sampled"]], on="model", how="left") if len(compared) else compared
    compared = compared.assign(day=day, helm_suite=suite)
    table = pa.Table.from_pandas(compared[ONLINE_SCHEMA.names], schema=ONLINE_SCHEMA, preserve_index=False)
    path = warehouse.write(ONLINE_EVAL_KEY, day, table)
    plot = state.home_path() / "feedback" / "online_eval" / f"{day}.png"
    if len(compared):
        _plot(compared, plot)
    rows = [
        {str(k): (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in compared.to_dict("records")
    ]
    columns = ["model", "comparison", "production_value", "helm_value", "gap", "max_gap", "diverged"]
    return dg.MaterializeResult(
        metadata={
            "helm_suite": suite or "none",
            "sampled": int(production["sampled"].sum()) if len(production) else 0,
            "diverged": int(compared["diverged"].eq(True).sum()) if len(compared) else 0,
            "comparisons": dg.MetadataValue.md(md_table(rows, columns)),
            "plot": dg.MetadataValue.path(str(plot)),
            **parquet_table_metadata([path]),
        }
    )


SCENARIO_KEY = ("feedback", "scenario")
SCENARIO_SCHEMA = pa.schema(
    [("version", pa.string()), ("id", pa.string()), ("input", pa.string()), ("reference", pa.string())]
)


@dg.asset(
    **daily_asset(
        SCENARIO_KEY,
        kinds={"parquet", "helm"},
        deps=[EVENTS_KEY],
        description="Production requests users rated down, flagged or corrected, PII redacted and near-duplicates removed, as a versioned HELM scenario (run entry governance_feedback:version=...).",
    )
)
def scenario(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The failures of the days up to this one, with user corrections as references, for the next suite."""
    day = context.partition_key
    settings = state.policy().feedback.scenario
    warehouse = state.warehouse()
    folder = warehouse.path(EVENTS_KEY, day).parent
    first = (date.fromisoformat(day) - timedelta(days=settings.days - 1)).isoformat()
    days = sorted(p.stem for p in folder.glob("*.parquet") if first <= p.stem <= day) if folder.exists() else []
    events = read_days(folder, days, ["request_id", "timestamp", "kind", "value", "text", "prompt"])
    dataset = build_dataset(events, settings.near_duplicate, settings.max_examples)
    path = write_dataset(dataset, state.home_path().joinpath(*SCENARIO_FOLDER))
    rows = [{"version": dataset.version, **example} for example in dataset.examples]
    table_path = warehouse.write(SCENARIO_KEY, day, pa.Table.from_pylist(rows, schema=SCENARIO_SCHEMA))
    entry = scenario_run_entry(dataset.version)
    context.log.info(
        f"{day}: {len(rows)} examples, version {dataset.version}; add {entry!r} to evaluation_plan.run_entries"
    )
    return dg.MaterializeResult(
        metadata={
            "version": dataset.version,
            "run_entry": entry,
            "examples": len(rows),
            "failures_considered": dataset.candidates,
            "near_duplicates_removed": dataset.near_duplicates,
            "examples_redacted": dataset.redacted,
            "without_correction": dataset.without_correction,
            "dataset": dg.MetadataValue.path(str(path)),
            **parquet_table_metadata([table_path]),
        },
        data_version=dg.DataVersion(dataset.version),
    )
