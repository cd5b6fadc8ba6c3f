"""Production monitoring: daily traffic, its reference profile, traffic drift, evaluation drift
between suites, and metric trends with change detection."""

import json
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.helm.inputs import earlier_suites
from governance_assets.defs.metadata import embedded_png, md_table, parquet_table_metadata
from governance_assets.defs.partitions import HELM_SUITES, daily_asset, suite_asset
from governance_assets.defs.resources import GovernanceState, MlflowTracking
from governance_assets.lib.core.code_version import source_digest
from governance_assets.lib.core.mlflow_record import log_report, run_url
from governance_assets.lib.core.policy import DriftSettings
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.evaluation import read_frame
from governance_assets.lib.helm import tidy
from governance_assets.lib.iteration.settings import TRIAL_SUITE_PREFIX
from governance_assets.lib.monitoring.drift import SMALL_REFERENCE_MAX, DatasetDrift, FeatureDrift, dataset_drift
from governance_assets.lib.monitoring.eval_drift import SCHEMA as EVAL_DRIFT_SCHEMA
from governance_assets.lib.monitoring.eval_drift import evaluation_flips
from governance_assets.lib.monitoring.reference import profile, reference_days, sample_rows, suite_as_traffic
from governance_assets.lib.monitoring.series import headline_means, latest_values, run_detection, series_rows
from governance_assets.lib.monitoring.traffic import TRAFFIC_KEY
from governance_assets.lib.monitoring.traffic_features import (
    METADATA_FEATURES,
    EmbeddingDrift,
    daily_kpis,
    text_embedding_drift,
    traffic_features,
)
from governance_assets.lib.monitoring.traffic_intake import assemble_day, quarantined_rows
from governance_assets.lib.monitoring.trends import plot_trend

REFERENCE_KEY = ("monitoring", "reference")
REFERENCE_TEXTS_KEY = ("monitoring", "reference_texts")
FEATURES_KEY = ("monitoring", "traffic_features")
"""The day's traffic features, computed once by `monitoring/traffic` (beside it) and read by the drift test."""
"""A sample of the reference's prompts and completions for embedding drift (beside the reference)."""
TRAFFIC_DRIFT_KEY = ("monitoring", "traffic_drift")
EVAL_DRIFT_KEY = ("monitoring", "eval_drift")
TRENDS_KEY = ("monitoring", "trends")
KPIS_ANNOTATION = "kpis"
TEXT_COLUMNS = ("prompt", "completion")
REFERENCE_MAX_ROWS = 200_000
"""Larger references are sampled (seeded) to this many rows; Evidently's test choice depends
only on whether the reference has more than 1,000 rows, so the choice is unchanged."""
DRIFT_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("feature", pa.string()),
        ("kind", pa.string()),
        ("method", pa.string()),
        ("statistic", pa.float64()),
        ("threshold", pa.float64()),
        ("drifted", pa.bool_()),
        ("reference_size", pa.int64()),
        ("current_size", pa.int64()),
        ("detail", pa.string()),
    ]
)


# --- traffic ------------------------------------------------------------------------------------


@dg.asset(
    **daily_asset(
        TRAFFIC_KEY,
        kinds={"parquet"},
        description="Production traffic of one UTC day, from every staged landing file and database batch.",
    )
)
def traffic(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Rebuilds the day from its staged parts (first row of each request id wins)."""
    day = context.partition_key
    staging = state.traffic_staging_path()
    assembled = assemble_day(staging, day)
    features = traffic_features(assembled.table)
    kpis = daily_kpis(assembled.table, features=features)
    warehouse = state.warehouse()
    warehouse.write(FEATURES_KEY, day, pa.Table.from_pandas(features, preserve_index=False))
    warehouse.write(TRAFFIC_KEY, day, assembled.table, annotations={KPIS_ANNOTATION: kpis})
    quarantined = quarantined_rows(staging, assembled.sources)
    sources = [
        {"source": s.source, "rows_this_day": s.days[day], "quarantined": s.quarantined, "staged_at": s.staged_at}
        for s in assembled.sources
    ]
    context.log.info(
        f"{day}: {assembled.table.num_rows} rows from {len(sources)} sources, {assembled.duplicates} repeated "
        f"request ids dropped, {len(quarantined)} rows quarantined in those sources"
    )
    version = tidy.content_hash(sorted(s.source_id for s in assembled.sources))[:32]
    return dg.MaterializeResult(
        metadata={
            "rows": assembled.table.num_rows,
            "sources": dg.MetadataValue.md(md_table(sources, ["source", "rows_this_day", "quarantined", "staged_at"])),
            "duplicates_dropped": assembled.duplicates,
            "quarantined_rows": len(quarantined),
            "quarantine_reasons": dg.MetadataValue.json(_reason_counts(quarantined)),
            **{f"kpi/{name}": value for name, value in kpis.items()},
            **parquet_table_metadata([warehouse.path(TRAFFIC_KEY, day)]),
        },
        data_version=dg.DataVersion(version),
    )


def _reason_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        reason = str(row["reason"])
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:20])


# --- reference ----------------------------------------------------------------------------------


def daily_kpis_by_day(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    """The KPIs of every day that has traffic rows, in day order (read from the tables' footers)."""
    folder = warehouse.path(TRAFFIC_KEY, "2000-01-01").parent
    days = sorted(p.stem for p in folder.glob("*.parquet")) if folder.exists() else []
    found = {day: warehouse.read_annotation(TRAFFIC_KEY, day, KPIS_ANNOTATION) or {} for day in days}
    return {day: kpis for day, kpis in found.items() if kpis.get("rows")}


@dg.asset(
    key=dg.AssetKey(list(REFERENCE_KEY)),
    group_name="monitoring",
    deps=[dg.AssetKey(list(TRAFFIC_KEY)), RUNS_KEY],
    kinds={"parquet"},
    owners=["team:ml-governance"],
    code_version=source_digest(__name__),
)
def reference(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The profile traffic is compared with: the policy's window of traffic days, or a HELM suite."""
    settings = state.policy().monitoring.reference
    warehouse = state.warehouse()
    if settings.source == "suite":
        assert settings.suite is not None  # the policy guarantees it
        try:
            table = suite_as_traffic(
                read_frame(warehouse, tidy.PREDICTIONS, settings.suite),
                read_frame(warehouse, tidy.INSTANCE_STATS, settings.suite),
            )
        except ValueError as error:
            raise dg.Failure(description=f"suite {settings.suite}: {error}") from None
        described = f"suite {settings.suite}"
        dropped_features = list(METADATA_FEATURES)  # HELM instances have no such metadata
    else:
        days = reference_days(settings, list(daily_kpis_by_day(warehouse)))
        if not days:
            raise dg.Failure(description="no traffic has been ingested for the reference window yet")
        parts = [warehouse.read(TRAFFIC_KEY, day) for day in days]
        table = pa.concat_tables([p for p in parts if p is not None])
        described = f"traffic {days[0]} … {days[-1]} ({len(days)} days)"
        dropped_features = []
    if table.num_rows == 0:
        raise dg.Failure(description=f"the reference ({described}) has no rows")
    sampled = sample_rows(table, REFERENCE_MAX_ROWS)
    features = traffic_features(sampled).drop(columns=dropped_features)
    warehouse.write(REFERENCE_KEY, None, pa.Table.from_pandas(features, preserve_index=False), {"source": described})
    texts = sample_rows(sampled, state.policy().monitoring.drift.embedding_max_rows).select(list(TEXT_COLUMNS))
    warehouse.write(REFERENCE_TEXTS_KEY, None, texts)
    context.log.info(f"reference: {described}, {table.num_rows} rows, {sampled.num_rows} kept")
    return dg.MaterializeResult(
        metadata={
            "source": described,
            "rows": table.num_rows,
            "rows_kept": sampled.num_rows,
            "profile": dg.MetadataValue.md(md_table(profile(features), ["feature", "non_null", "summary"])),
            **parquet_table_metadata([warehouse.path(REFERENCE_KEY)]),
        },
        data_version=dg.DataVersion(tidy.content_hash([described, table.num_rows, features.shape])[:32]),
    )


# --- traffic drift ------------------------------------------------------------------------------


def day_drift(features: pd.DataFrame, reference_features: pd.DataFrame, settings: DriftSettings) -> DatasetDrift:
    """Per-feature drift of a day against the reference, with the policy's overrides."""
    columns = list(reference_features.columns)
    return dataset_drift(
        reference_features,
        features,
        columns=columns,
        methods={k: v for k, v in settings.methods.items() if k in columns},
        thresholds={k: v for k, v in settings.thresholds.items() if k in columns},
        kinds={k: v for k, v in settings.kinds.items() if k in columns},
        share_threshold=settings.share_threshold,
    )


def _text_drift(table: pa.Table, reference_texts: pa.Table, settings: DriftSettings) -> list[EmbeddingDrift]:
    """Domain-classifier drift of prompt and completion embeddings; with a reference under 1,000
    rows the AUC is compared with a bootstrap quantile, as Evidently's embeddings metric does."""
    return [
        text_embedding_drift(
            reference_texts.column(name),
            table.column(name),
            threshold=settings.embedding_threshold,
            max_rows=settings.embedding_max_rows,
            bootstrap=reference_texts.num_rows < SMALL_REFERENCE_MAX,
        )
        for name in TEXT_COLUMNS
    ]


def _drift_rows(day: str, features: list[FeatureDrift]) -> list[dict[str, Any]]:
    return [
        {
            "day": day,
            "feature": f.feature,
            "kind": f.kind,
            "method": f.method,
            "statistic": f.statistic,
            "threshold": f.threshold,
            "drifted": f.drifted,
            "reference_size": f.reference_size,
            "current_size": f.current_size,
            "detail": f.detail,
        }
        for f in features
    ]


def _day_features(warehouse: Warehouse, day: str, table: pa.Table, log: Any) -> pd.DataFrame:
    """The features `monitoring/traffic` stored for the day; computed here only for a day built
    before they were stored."""
    stored = warehouse.read(FEATURES_KEY, day)
    if stored is not None and stored.num_rows == table.num_rows:
        frame: pd.DataFrame = stored.to_pandas()
        return frame
    log.warning(f"{day}: no stored traffic features (built by an older version); computing them")
    return traffic_features(table)


def drift_share_series(warehouse: Warehouse) -> dict[str, tuple[list[str], list[float]]]:
    """`drift:drifted_share`: each tested day's share of drifted features, in day order."""
    folder = warehouse.path(TRAFFIC_DRIFT_KEY, "2000-01-01").parent
    days = sorted(p.stem for p in folder.glob("*.parquet")) if folder.exists() else []
    shares = [(day, warehouse.read_annotation(TRAFFIC_DRIFT_KEY, day, "drifted_share")) for day in days]
    tested = [(day, float(share)) for day, share in shares if share is not None]
    return {"drift:drifted_share": ([d for d, _ in tested], [v for _, v in tested])} if tested else {}


@dg.asset(
    **daily_asset(
        TRAFFIC_DRIFT_KEY,
        kinds={"parquet", "mlflow"},
        deps=[TRAFFIC_KEY, REFERENCE_KEY],
        description="Drift of each traffic feature of the day against the reference, tests chosen as Evidently does.",
    )
)
def traffic_drift(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Per-feature tests, text-embedding drift, and the day's verdict from the share of drifted features."""
    day = context.partition_key
    policy = state.policy()
    settings = policy.monitoring.drift
    warehouse = state.warehouse()
    table = warehouse.read(TRAFFIC_KEY, day)
    reference_table = warehouse.read(REFERENCE_KEY)
    if table is None:
        raise dg.Failure(description=f"{day}: monitoring/traffic was never built for this day")
    if reference_table is None:
        warehouse.write(TRAFFIC_DRIFT_KEY, day, DRIFT_SCHEMA.empty_table())
        context.log.warning(f"{day}: monitoring/reference was never built; nothing to compare with")
        return dg.MaterializeResult(
            metadata={
                "tested_features": 0,
                "reference": "none yet",
                **parquet_table_metadata([warehouse.path(TRAFFIC_DRIFT_KEY, day)]),
            }
        )
    result = day_drift(_day_features(warehouse, day, table, context.log), reference_table.to_pandas(), settings)
    rows = _drift_rows(day, result.features)
    texts = warehouse.read(REFERENCE_TEXTS_KEY)
    if settings.embeddings and texts is not None and table.num_rows:
        for name, text_result in zip(TEXT_COLUMNS, _text_drift(table, texts, settings), strict=True):
            rows.append(
                {
                    "day": day,
                    "feature": f"{name}_embedding",
                    "kind": "embedding",
                    "method": "domain_classifier_roc_auc",
                    "statistic": text_result.roc_auc,
                    "threshold": text_result.threshold,
                    "drifted": text_result.drifted,
                    "reference_size": text_result.reference_rows,
                    "current_size": text_result.current_rows,
                    "detail": text_result.detail,
                }
            )
    frame = pd.DataFrame(rows, columns=DRIFT_SCHEMA.names)
    warehouse.write(
        TRAFFIC_DRIFT_KEY,
        day,
        pa.Table.from_pandas(frame, schema=DRIFT_SCHEMA, preserve_index=False),
        annotations={"drifted_share": result.drifted_share, "dataset_drifted": result.drifted},
    )
    drifted = [r["feature"] for r in rows if r["drifted"]]
    recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
    run_id = log_report(
        recorder,
        f"traffic-drift/{day}",
        {"governance.day": day, "dagster.run_id": context.run.run_id, "dagster.asset_key": "monitoring/traffic_drift"},
        {"drifted_share": result.drifted_share, **{f"drift.{r['feature']}": r["statistic"] for r in rows}},
        {"traffic_drift.json": frame.to_json(orient="records", indent=2)},
    )
    context.log.info(
        f"{day}: {len(drifted)} drifted ({', '.join(drifted) or 'none'}); share {result.drifted_share:.2f}"
    )
    return dg.MaterializeResult(
        metadata={
            "drifted_share": result.drifted_share,
            "dataset_drifted": result.drifted,
            "drifted_features": ", ".join(drifted) or "none",
            "tested_features": sum(1 for f in result.features if f.reference_size and f.current_size),
            "features": dg.MetadataValue.md(
                md_table(rows, ["feature", "kind", "method", "statistic", "threshold", "drifted", "detail"])
            ),
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id)),
            **parquet_table_metadata([warehouse.path(TRAFFIC_DRIFT_KEY, day)]),
        }
    )


# --- evaluation drift ---------------------------------------------------------------------------


def _runs(warehouse: Warehouse, suite: str) -> pd.DataFrame:
    table = warehouse.read(tidy.RUNS_KEY, suite)
    frame: pd.DataFrame = (table if table is not None else tidy.RUNS_SCHEMA.empty_table()).to_pandas()
    return frame


@dg.asset(
    **suite_asset(
        EVAL_DRIFT_KEY,
        kinds={"parquet", "mlflow"},
        deps=[RUNS_KEY, tidy.INSTANCE_STATS.key],
        description="Per-instance outcome flips of each run against the previous suite that has it (exact McNemar).",
    )
)
def eval_drift(
    context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking
) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Which instances changed outcome since the previous suite, and whether that is more than noise."""
    policy = state.policy()
    warehouse = state.warehouse()
    shown: list[dict[str, Any]] = []
    for suite in context.partition_keys:
        if not warehouse.path(tidy.INSTANCE_STATS.key, suite).exists():
            raise dg.Failure(description=f"suite {suite}: helm/instance_stats was never built")
        earlier = [
            (name, read_frame(warehouse, tidy.INSTANCE_STATS, name), _runs(warehouse, name))
            for name in earlier_suites(context.instance, state, suite)
        ]
        rows = evaluation_flips(
            suite,
            read_frame(warehouse, tidy.INSTANCE_STATS, suite),
            _runs(warehouse, suite),
            earlier,
            policy.monitoring.eval_drift,
        )
        frame = pd.DataFrame(rows, columns=EVAL_DRIFT_SCHEMA.names)
        warehouse.write(
            EVAL_DRIFT_KEY, suite, pa.Table.from_pandas(frame, schema=EVAL_DRIFT_SCHEMA, preserve_index=False)
        )
        recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
        log_report(
            recorder,
            f"{suite}/eval-drift",
            {
                "governance.suite": suite,
                "dagster.run_id": context.run.run_id,
                "dagster.asset_key": "monitoring/eval_drift",
            },
            {
                "comparisons": len(rows),
                "changed": sum(r["changed"] for r in rows),
                "silent_changes": sum(r["silent_change"] for r in rows),
                "flipped_instances": sum(r["flipped_to_fail"] + r["flipped_to_pass"] for r in rows),
            },
            {"eval_drift.json": json.dumps(rows, indent=2, default=str)},
        )
        shown += rows
    return dg.MaterializeResult(
        metadata={
            "comparisons": len(shown),
            "changed": sum(r["changed"] for r in shown),
            "silent_changes": sum(r["silent_change"] for r in shown),
            "flips": dg.MetadataValue.md(
                md_table(
                    [r | {"p_adjusted": f"{r['p_adjusted']:.3g}"} for r in shown],
                    [
                        "suite",
                        "baseline_suite",
                        "run_name",
                        "metric",
                        "n_paired",
                        "flipped_to_fail",
                        "flipped_to_pass",
                        "p_adjusted",
                        "silent_change",
                    ],
                )
            ),
            **parquet_table_metadata([warehouse.path(EVAL_DRIFT_KEY, suite) for suite in context.partition_keys]),
        }
    )


# --- trends -------------------------------------------------------------------------------------


TRENDS_SCHEMA = pa.schema(
    [
        ("series", pa.string()),
        ("label", pa.string()),
        ("value", pa.float64()),
        ("statistic", pa.float64()),
        ("lower_statistic", pa.float64()),
        ("lower_limit", pa.float64()),
        ("upper_limit", pa.float64()),
        ("flagged", pa.bool_()),
        ("change_point", pa.bool_()),
    ]
)


def suite_metric_series(
    instance: dg.DagsterInstance, warehouse: Warehouse, metrics: list[str]
) -> dict[str, tuple[list[str], list[float]]]:
    """Per `metric:<name>:<model>`: suites in the order they were added and their headline mean
    (sweep trials, which run other settings than the plan, are left out)."""
    series: dict[str, tuple[list[str], list[float]]] = {}
    for suite in instance.get_dynamic_partitions(HELM_SUITES):
        if suite.startswith(TRIAL_SUITE_PREFIX) or not warehouse.path(tidy.RUN_STATS.key, suite).exists():
            continue
        for (metric, model), value in headline_means(read_frame(warehouse, tidy.RUN_STATS, suite), metrics).items():
            labels, values = series.setdefault(f"metric:{metric}:{model}", ([], []))
            labels.append(suite)
            values.append(value)
    return series


def kpi_series(warehouse: Warehouse) -> dict[str, tuple[list[str], list[float]]]:
    """Per `kpi:<name>`: the days with traffic and that day's value (from the traffic tables' annotations)."""
    series: dict[str, tuple[list[str], list[float]]] = {}
    for day, kpis in daily_kpis_by_day(warehouse).items():
        for name, value in kpis.items():
            labels, values = series.setdefault(f"kpi:{name}", ([], []))
            labels.append(day)
            values.append(float("nan") if value is None else float(value))
    return series


@dg.asset(
    key=dg.AssetKey(list(TRENDS_KEY)),
    group_name="monitoring",
    deps=[dg.AssetKey(list(TRAFFIC_KEY)), dg.AssetKey(list(TRAFFIC_DRIFT_KEY)), dg.AssetKey(list(tidy.RUN_STATS.key))],
    kinds={"parquet", "mlflow"},
    owners=["team:ml-governance"],
    code_version=source_digest(__name__),
)
def trends(context: dg.AssetExecutionContext, state: GovernanceState, mlflow: MlflowTracking) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Headline metrics across suites, traffic KPIs and the drifted share across days, with change points flagged."""
    policy = state.policy()
    settings = policy.monitoring.trends
    warehouse = state.warehouse()
    series = (
        suite_metric_series(context.instance, warehouse, settings.metrics)
        | kpi_series(warehouse)
        | drift_share_series(warehouse)
    )
    rows: list[dict[str, Any]] = []
    plots: dict[str, bytes] = {}
    flagged_plots: dict[str, bytes] = {}
    latest = latest_values(series)
    summary = []
    for name, (labels, values) in sorted(series.items()):
        detection = run_detection(values, settings)
        rows += series_rows(name, labels, detection)
        png = plot_trend(name, labels, detection)
        plots[f"{name.replace(':', '_').replace('/', '_')}.png"] = png
        if detection.flagged.any():
            flagged_plots[name] = png
        summary.append(
            {
                "series": name,
                "points": len(values),
                "latest": f"{values[-1]:.4g}",
                "change_points": ", ".join(labels[i] for i in detection.change_points) or "none",
                "latest_flagged": bool(detection.flagged[-1]),
            }
        )
    frame = pd.DataFrame(rows, columns=TRENDS_SCHEMA.names)
    warehouse.write(TRENDS_KEY, None, pa.Table.from_pandas(frame, schema=TRENDS_SCHEMA, preserve_index=False))
    plot_folder = state.home_path() / "monitoring" / "trends"
    plot_folder.mkdir(parents=True, exist_ok=True)
    for file_name, png in plots.items():
        (plot_folder / file_name).write_bytes(png)
    recorder = mlflow.recorder(state, policy.mlflow.governance_experiment)
    run_id = log_report(
        recorder,
        "trends",
        {"dagster.run_id": context.run.run_id, "dagster.asset_key": "monitoring/trends"},
        {f"latest.{name}": value for name, value in latest.items()},
        {"trends.json": frame.to_json(orient="records", indent=2), **plots},
    )
    return dg.MaterializeResult(
        metadata={
            "series": dg.MetadataValue.md(
                md_table(summary, ["series", "points", "latest", "change_points", "latest_flagged"])
            ),
            "plots": dg.MetadataValue.path(str(plot_folder)),
            **{f"plot/{name}": embedded_png(name, png) for name, png in flagged_plots.items()},
            **{f"latest/{name}": dg.MetadataValue.float(value) for name, value in latest.items()},
            "mlflow_run": dg.MetadataValue.url(run_url(mlflow.ui_url, recorder.experiment_id, run_id)),
            **parquet_table_metadata([warehouse.path(TRENDS_KEY)]),
        }
    )
