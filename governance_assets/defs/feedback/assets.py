"""The production feedback loop: user feedback joined to traffic, and A/B tests judged every day."""

import json
from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa

from governance_assets.defs.feedback.staging import feedback_staging_path
from governance_assets.defs.metadata import md_table
from governance_assets.defs.partitions import daily_asset
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.feedback.ab_tests import analyse_experiment
from governance_assets.lib.feedback.events import assemble_day
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
        ("call", pa.string()),
    ]
)
RESULTS_ANNOTATION = "experiments"


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
        result = analyse_experiment(experiment, units, settings.srm_alpha)
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
    warehouse.write(AB_TESTS_KEY, day, table, annotations={RESULTS_ANNOTATION: results})
    shown = [{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows]
    return dg.MaterializeResult(
        metadata={
            "outcomes": dg.MetadataValue.md(
                md_table(
                    [r | {"reasons": "; ".join(r["reasons"])} for r in results],
                    ["experiment", "outcome", "requests", "srm_p_value", "reasons"],
                )
            ),
            "table": dg.MetadataValue.md(
                md_table(
                    shown,
                    [
                        "experiment",
                        "metric",
                        "role",
                        "variant",
                        "versus",
                        "n",
                        "estimate",
                        "ci_low",
                        "ci_high",
                        "cs_low",
                        "cs_high",
                        "always_valid_p",
                        "call",
                    ],
                )
            ),
            "experiments_shipping": sum(r["outcome"] == "ship_challenger" for r in results),
        }
    )
