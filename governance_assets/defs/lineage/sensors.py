"""OpenLineage run events for every asset materialisation (the standard Marquez and data
catalogues read): to a JSON Lines file by default, to an HTTP endpoint by configuration."""

import os
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.policy import LineageSettings
from governance_assets.lib.lineage.openlineage import DatasetRef, FileTransport, HttpTransport, emit_all, run_events

NAMESPACE = "governance_assets"
BATCH = 200


def transport(settings: LineageSettings, state: GovernanceState) -> FileTransport | HttpTransport:
    """HTTP when the policy's URL variable is set, else the file under GOVERNANCE_HOME/lineage."""
    url = os.environ.get(settings.openlineage_url_env) if settings.openlineage_url_env else None
    if url:
        key_env = settings.openlineage_api_key_env
        return HttpTransport(url, api_key_env=key_env if key_env and os.environ.get(key_env) else None)
    return FileTransport(state.home_path() / "lineage" / "openlineage.jsonl")


def dataset(state: GovernanceState, key: dg.AssetKey, partition: str | None, version: str | None = None) -> DatasetRef:
    """An asset partition as an OpenLineage dataset: its Parquet file, named by absolute path
    (OpenLineage's convention for local files), with its columns when the file exists."""
    path = state.warehouse().path(key.path, partition)
    columns: tuple[tuple[str, str], ...] = ()
    if path.exists():
        columns = tuple((field.name, str(field.type)) for field in pq.read_schema(path))
    return DatasetRef(namespace="file", name=str(path), columns=columns, version=version)


def materialization_events(
    state: GovernanceState, graph: Any, instance: dg.DagsterInstance, record: Any
) -> list[dict[str, Any]]:
    """START and COMPLETE events for one materialisation, its upstream assets as inputs."""
    materialization = record.asset_materialization
    key, partition = materialization.asset_key, materialization.partition
    run_id = record.event_log_entry.run_id
    dagster_run = instance.get_run_record_by_id(run_id)
    ended = datetime.fromtimestamp(record.timestamp, tz=UTC)
    started = dagster_run.start_time if dagster_run and dagster_run.start_time else record.timestamp
    parents = sorted(graph.get(key).parent_keys, key=str) if graph.has(key) else []
    job_name = dagster_run.dagster_run.job_name if dagster_run else "dagster"
    return run_events(
        namespace=NAMESPACE,
        job_name=key.to_user_string(),
        run_id=f"{run_id}/{key.to_user_string()}/{partition or ''}",
        inputs=[dataset(state, parent, partition) for parent in parents],
        outputs=[dataset(state, key, partition, materialization.tags.get("dagster/data_version"))],
        started_at=min(datetime.fromtimestamp(started, tz=UTC), ended),
        ended_at=ended,
        parent=(NAMESPACE, job_name, run_id),
        job_description=graph.get(key).description if graph.has(key) else None,
    )


def materializations_after(instance: dg.DagsterInstance, keys: Any, after: int) -> list[Any]:
    """The first BATCH materialisations of any of `keys` stored after storage id `after`, in order
    (the first BATCH of each key hold the first BATCH of all)."""
    records = [
        record
        for key in keys
        for record in instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=BATCH, ascending=True
        ).records
    ]
    return sorted(records, key=lambda record: record.storage_id)[:BATCH]


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Sends OpenLineage START and COMPLETE events for every asset materialisation (inputs: the upstream "
        "Parquet files; outputs with schema and version) to $OPENLINEAGE_URL, else to "
        "GOVERNANCE_HOME/lineage/openlineage.jsonl; the cursor is the event log's storage id."
    ),
)
def openlineage_events(context: dg.SensorEvaluationContext, state: GovernanceState) -> dg.SkipReason:
    """Emits OpenLineage events for materialisations recorded since the last tick (the cursor
    is the event log's storage id, so a restart neither repeats nor skips one)."""
    if context.repository_def is None:
        return dg.SkipReason("no code location to read the asset graph from")
    graph = context.repository_def.asset_graph
    after = int(context.cursor) if context.cursor else 0
    records = materializations_after(context.instance, graph.get_all_asset_keys(), after)
    if not records:
        return dg.SkipReason("no new materialisations")
    sink = transport(state.policy().lineage, state)
    for record in records:
        emit_all(materialization_events(state, graph, context.instance, record), sink)
        context.update_cursor(str(record.storage_id))
    return dg.SkipReason(f"emitted events for {len(records)} materialisations ({type(sink).__name__})")
