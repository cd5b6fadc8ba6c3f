"""Active learning: the instances worth labelling next, and labelled files back as a HELM scenario."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa

from governance_assets.defs.gates.assets import table_metadata
from governance_assets.defs.helm.assets import RUNS_KEY
from governance_assets.defs.helm.inputs import suite_tables
from governance_assets.defs.metadata import parquet_table_metadata
from governance_assets.defs.partitions import OWNERS, suite_asset
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.code_version import source_digest
from governance_assets.lib.helm import tidy
from governance_assets.lib.iteration import labeling
from governance_assets.lib.iteration.labeled_scenario import DATASET

QUEUE_KEY = ("iteration", "labeling_queue")
SCENARIO_KEY = ("iteration", "labeled_scenario")
QUEUE_SIZE = 25
QUEUE_METRIC = "exact_match"
LABEL_SUFFIXES = (".jsonl", ".csv")


def labels_landing(state: GovernanceState) -> Path:
    """Where people drop labelled queue files."""
    return state.home_path() / "landing" / "labels"


def labelled_files(state: GovernanceState) -> list[Path]:
    """The labelled files in landing/labels, by name."""
    landing = labels_landing(state)
    return (
        sorted(p for p in landing.glob("*") if p.suffix in LABEL_SUFFIXES and p.is_file()) if landing.is_dir() else []
    )


def _latest_traffic(state: GovernanceState) -> pd.DataFrame | None:
    """The most recent day of production traffic, if the monitoring group has built one."""
    days = sorted((state.home_path() / "warehouse" / "monitoring" / "traffic").glob("*.parquet"))
    return pd.read_parquet(days[-1]) if days else None


@dg.asset(**suite_asset(QUEUE_KEY, kinds={"parquet"}, deps=[RUNS_KEY, tidy.INSTANCE_STATS.key, tidy.PREDICTIONS.key]))
def iteration_labeling_queue(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """The suite's instances (and recent production traffic) whose labels would teach the most, diverse,
    exported as JSONL and CSV for labelling; drop the labelled file into landing/labels."""
    rows: list[dict[str, object]] = []
    exports = []
    for suite in context.partition_keys:
        tables = suite_tables(state, suite)
        if tables is None:
            raise dg.Failure(description=f"suite {suite}: helm/runs was never built")
        queue = labeling.labeling_queue(
            tables.instance_stats, tables.predictions, QUEUE_METRIC, QUEUE_SIZE, _latest_traffic(state)
        )
        state.warehouse().write(QUEUE_KEY, suite, pa.Table.from_pandas(queue, preserve_index=False))
        exports.append(labeling.export_queue(queue, state.home_path() / "iteration" / "labeling" / suite))
        rows += [{**{str(k): v for k, v in row.items()}, "suite": suite} for row in queue.to_dict("records")]
    schema = pa.schema([(name, pa.float64() if name == "score" else pa.string()) for name in labeling.QUEUE_FIELDS])
    return dg.MaterializeResult(
        metadata={
            "items": len(rows),
            "from_traffic": sum(row["source"] == "traffic" for row in rows),
            "queue": table_metadata(rows, schema, ["source", "task", "instance_id", "score", "reasons"]),
            "export_jsonl": dg.MetadataValue.path(str(exports[-1][0])),
            "export_csv": dg.MetadataValue.path(str(exports[-1][1])),
            "drop_labelled_files_into": dg.MetadataValue.path(str(labels_landing(state))),
            **parquet_table_metadata([state.warehouse().path(QUEUE_KEY, suite) for suite in context.partition_keys]),
        }
    )


@dg.asset(
    key=dg.AssetKey(list(SCENARIO_KEY)),
    group_name="iteration",
    kinds={"helm", "jsonl"},
    owners=OWNERS,
    code_version=source_digest(__name__),
)
def iteration_labeled_scenario(context: dg.AssetExecutionContext, state: GovernanceState) -> dg.MaterializeResult:  # type: ignore[type-arg]
    """Labelled files from landing/labels, validated row by row and merged into the next version of
    the HELM scenario governance_labeled (a plugin of this package) that the evaluation plan can include."""
    folder = state.home_path().joinpath(*DATASET)
    consumed = labeling.consumed_sources(folder)
    files = labelled_files(state)
    rejected, new_versions = [], 0
    for path in files:
        source = labeling.source_id(path)
        if source in consumed:
            continue
        try:
            batch = labeling.read_labels(path)
        except (ValueError, UnicodeDecodeError) as error:
            rejected.append({"file": path.name, "row": 0, "reason": str(error)})
            continue
        rejected += batch.rejected
        new_versions += labeling.add_to_dataset(folder, batch, source)[1]
        context.log.info(f"{path.name}: {len(batch.accepted)} labels accepted, {len(batch.rejected)} rejected")
    version = labeling.latest_version(folder)
    entry = f"governance_labeled:version={version}" if version else "none yet"
    return dg.MaterializeResult(
        metadata={
            "latest_version": version,
            "new_versions": new_versions,
            "rows_rejected": len(rejected),
            "rejected": dg.MetadataValue.json(rejected),
            "run_entry": entry,
            "how_to_evaluate": f"add `{entry}` to evaluation_plan.run_entries (the plugin is loaded by default)",
            "dataset": dg.MetadataValue.path(str(folder)),
        }
    )


build_labeled_scenario = dg.define_asset_job(
    "build_labeled_scenario",
    selection=dg.AssetSelection.assets(list(SCENARIO_KEY)),
    description="Turn the labelled files in landing/labels into the next version of the governance_labeled scenario.",
)


@dg.sensor(
    job=build_labeled_scenario,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests build_labeled_scenario for each new labelled file in landing/labels (run key: name and digest).",
)
def labels_landing_sensor(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SensorResult:
    """Lists new labelled files and requests a run for them; parsing happens in the run."""
    files = labelled_files(state)
    consumed = labeling.consumed_sources(state.home_path().joinpath(*DATASET))
    new = [source for source in map(labeling.source_id, files) if source not in consumed]
    if not new:
        return dg.SensorResult(skip_reason="no new labelled file")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"labels:{','.join(new)}")])
