"""The demo's sensor ticks, left in the instance as the daemon leaves them.

The demo cannot wait for `dagster-daemon`, so it ticks a sensor itself and runs what it requests
until it requests nothing. It does so as the daemon would: from the cursor stored in the instance,
tagging each run with the sensor's name and run key, skipping run keys already launched, and
storing the new cursor in the sensor's `InstigatorState` (as `dagster sensor cursor --set` does).
The daemon started later by `make dev` then begins where the demo stopped: it launches nothing again.
"""

import time
from pathlib import Path

import dagster as dg

# Dagster's public API has no call that stores a sensor's cursor outside its CLI and daemon.
from dagster._core.definitions.selector import InstigatorSelector
from dagster._core.remote_origin import RemoteInstigatorOrigin, RemoteRepositoryOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.workspace.load_target import WorkspaceFileTarget

from governance_assets.defs.resources import GovernanceState, MlflowTracking

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
REPOSITORY = "__repository__"
"""The repository name Dagster gives a code location's `Definitions`."""
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _origin(sensor_name: str) -> RemoteInstigatorOrigin:
    """The sensor's origin in the code location `workspace.yaml` names, as the daemon loads it."""
    [location] = WorkspaceFileTarget(paths=[str(WORKSPACE)]).create_origins()
    return RemoteInstigatorOrigin(RemoteRepositoryOrigin(location, REPOSITORY), sensor_name)


def _state(instance: dg.DagsterInstance, origin: RemoteInstigatorOrigin) -> InstigatorState | None:
    selector = InstigatorSelector(
        location_name=origin.repository_origin.code_location_origin.location_name,
        repository_name=REPOSITORY,
        name=origin.instigator_name,
    )
    return instance.get_instigator_state(origin.get_id(), selector.get_id())


def stored_cursor(instance: dg.DagsterInstance, sensor_name: str) -> str | None:
    """The cursor the daemon would give the sensor's next tick."""
    state = _state(instance, _origin(sensor_name))
    data = state.instigator_data if state is not None else None
    return data.cursor if isinstance(data, SensorInstigatorData) else None


def store_cursor(instance: dg.DagsterInstance, sensor: dg.SensorDefinition, cursor: str | None) -> None:
    """Store `cursor` as the sensor's cursor where the daemon reads it; a sensor that runs by default
    stays so (`DECLARED_IN_CODE`, as the daemon records it on its first tick)."""
    origin = _origin(sensor.name)
    state = _state(instance, origin)
    if state is None:
        data = SensorInstigatorData(
            min_interval=sensor.minimum_interval_seconds,
            cursor=cursor,
            last_sensor_start_timestamp=time.time(),
            sensor_type=sensor.sensor_type,
        )
        status = (
            InstigatorStatus.DECLARED_IN_CODE
            if sensor.default_status == dg.DefaultSensorStatus.RUNNING
            else InstigatorStatus.STOPPED
        )
        instance.add_instigator_state(InstigatorState(origin, InstigatorType.SENSOR, status, data))
        return
    previous = state.instigator_data
    assert isinstance(previous, SensorInstigatorData)
    instance.update_instigator_state(
        state.with_data(
            SensorInstigatorData(
                last_tick_timestamp=previous.last_tick_timestamp,
                last_run_key=previous.last_run_key,
                min_interval=sensor.minimum_interval_seconds,
                cursor=cursor,
                last_tick_start_timestamp=previous.last_tick_start_timestamp,
                last_sensor_start_timestamp=previous.last_sensor_start_timestamp,
                sensor_type=sensor.sensor_type,
            )
        )
    )


def _launched(instance: dg.DagsterInstance, sensor_name: str, run_key: str) -> bool:
    tags = {"dagster/sensor_name": sensor_name, "dagster/run_key": run_key}
    return bool(instance.get_run_records(dg.RunsFilter(tags=tags), limit=1))


def add_requested_partitions(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """Add the dynamic partitions a tick asked for, as the daemon does before launching its runs."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def run_requests(
    instance: dg.DagsterInstance, definitions: dg.Definitions, sensor_name: str, requests: list[dg.RunRequest]
) -> bool:
    """Run a sensor's requests in this process, tagged as the daemon tags them (sensor name, run key),
    so that the daemon finds them and launches none again. Whether all succeeded."""
    ok = True
    for request in requests:
        assert request.run_key is not None
        job_name = request.job_name or definitions.get_sensor_def(sensor_name).job_name  # else the sensor's one job
        assert job_name is not None
        result = definitions.resolve_job_def(job_name).execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/sensor_name": sensor_name, "dagster/run_key": request.run_key},
            raise_on_error=False,
            run_config={**request.run_config, **QUIET},
        )
        ok &= result.success
    return ok


def drain_sensor(
    instance: dg.DagsterInstance, definitions: dg.Definitions, sensor_name: str
) -> tuple[bool, list[dg.RunRequest]]:
    """Tick the sensor from its stored cursor and run what it requests until it requests nothing new,
    storing its cursor after each tick. Returns whether every run succeeded, and the runs made."""
    sensor = definitions.get_sensor_def(sensor_name)
    ok, made = True, list[dg.RunRequest]()
    while True:
        resources = {"state": GovernanceState(), "mlflow": MlflowTracking()}
        context = dg.build_sensor_context(
            instance=instance, cursor=stored_cursor(instance, sensor_name), resources=resources
        )
        tick = sensor(context)
        assert isinstance(tick, dg.SensorResult)
        add_requested_partitions(instance, tick)
        cursor = tick.cursor if tick.cursor is not None else context.cursor  # None: the sensor kept it
        if cursor is not None:
            store_cursor(instance, sensor, cursor)
        requests = tick.run_requests or []
        fresh = [r for r in requests if r.run_key is None or not _launched(instance, sensor_name, r.run_key)]
        if not fresh:
            return ok, made
        ok &= run_requests(instance, definitions, sensor_name, fresh)
        made += fresh
