"""Faults of the team deployment's services, survived with nothing lost and nothing duplicated:
the MLflow server down during a materialisation, a Celery worker killed mid-step."""

import dataclasses
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import mlflow
import psutil
import pytest

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.deploy import jobs
from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.deployment import services
from governance_assets.lib.helm.output import list_run_folders
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_resources
from governance_assets_tests.deployment.conftest import requires_servers

pytestmark = [pytest.mark.integration, requires_servers]

MLFLOW_FAILURE_BOUND_SECONDS = 30.0
"""A materialisation against a stopped MLflow server fails within this (with the deployment's
MLFLOW_HTTP_REQUEST_* settings: 3 attempts, 1 s + 2 s back-off; MLflow's defaults took 247 s)."""


def _replace_process(deployment: services.Deployment, name: str, process: services.ServiceProcess) -> None:
    """Record a restarted server so that `services down` stops the new process."""
    current = services.Deployment.load(deployment.home)
    assert current is not None
    processes = tuple(process if p.name == name else p for p in current.processes)
    dataclasses.replace(current, processes=processes).save()


def _ingest(home: Path, instance: dg.DagsterInstance, suite: str, mlflow_url: str) -> dg.ExecuteInProcessResult:
    from governance_assets.definitions import defs
    from governance_assets.defs.resources import MlflowTracking

    definitions = defs()
    assets = [definitions.get_assets_def(dg.AssetKey(["helm", name])) for name in ("runs", "run_stats")]
    resources = governance_resources(home, roots=str(home.parent / "historical"))
    resources["mlflow"] = MlflowTracking(tracking_uri=mlflow_url, ui_url=mlflow_url)
    return dg.materialize(assets, partition_key=suite, instance=instance, resources=resources, raise_on_error=False)


def test_mlflow_down_fails_fast_and_the_next_run_writes_what_was_not_written(
    team: services.Deployment, team_environment: dict[str, str], tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "historical", "v1", runs=3)
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v1"])
    current = services.Deployment.load(team.home)
    assert current is not None
    server = next(p for p in current.processes if p.name == "mlflow")
    services.stop_process(server)
    try:
        started = time.monotonic()
        down = _ingest(home, instance, "v1", team.mlflow_url)
        elapsed = time.monotonic() - started
    finally:
        _replace_process(team, "mlflow", services.start_mlflow(team, team_environment["GOVERNANCE_PG_PASSWORD"]))

    assert not down.success
    failure = next(e for e in down.all_events if e.is_step_failure and e.step_key == "helm__run_stats")
    message = failure.step_failure_data.error.to_string()  # type: ignore[union-attr]
    assert "Connection refused" in message and f"127.0.0.1:{team.ports.mlflow}" in message
    assert elapsed < MLFLOW_FAILURE_BOUND_SECONDS, elapsed

    again = _ingest(home, instance, "v1", team.mlflow_url)
    assert again.success
    created = again.asset_materializations_for_node("helm__run_stats")[0].metadata["mlflow_runs_created"].value
    assert created == 3
    once_more = _ingest(home, instance, "v1", team.mlflow_url)
    assert once_more.asset_materializations_for_node("helm__run_stats")[0].metadata["mlflow_runs_created"].value == 0
    client = mlflow.MlflowClient(tracking_uri=team.mlflow_url)
    experiment = client.get_experiment_by_name("helm-evaluations")
    assert experiment is not None
    recorded = client.search_runs([experiment.experiment_id], filter_string="tags.`governance.suite` = 'v1'")
    assert len(recorded) == 3 and len({r.data.tags["governance.run_name"] for r in recorded}) == 3


def _worker_running_a_helm_step(instance: dg.DagsterInstance, suite: str, timeout: float) -> tuple[str, str]:
    """(step key, worker name) of the first HELM step a worker has started for `suite`'s run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in instance.get_runs(dg.RunsFilter(tags={"dagster/partition": suite})):
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
                data = record.dagster_event.engine_event_data if record.dagster_event else None
                if data and "Celery worker" in data.metadata and (record.step_key or "").startswith("run_helm_"):
                    return str(record.step_key), str(data.metadata["Celery worker"].value).split("@")[0]
        time.sleep(0.5)
    raise AssertionError(f"no worker started a HELM step of {suite} within {timeout} s")


def test_a_worker_killed_mid_step_has_the_step_run_again_and_the_suite_completes(
    team: services.Deployment, team_environment: dict[str, str]
) -> None:
    suite = "killed-v1"
    planned = len(load_policy().evaluation_plan.run_entries_with_models())
    with dg.DagsterInstance.get() as instance, ThreadPoolExecutor(1) as pool:
        instance.add_dynamic_partitions(HELM_SUITES, [suite])
        running = pool.submit(jobs.run_fan_out, instance, suite)
        step, worker = _worker_running_a_helm_step(instance, suite, timeout=300)
        time.sleep(3)  # helm-run is under way
        deployment = services.Deployment.load(team.home)
        assert deployment is not None
        parent = psutil.Process(next(p.pid for p in deployment.processes if p.name == worker))
        (executing,) = parent.children()  # the worker's one pool process, running the step
        executing.send_signal(signal.SIGKILL)
        result = running.result(timeout=900)
        starts = [r.step_key for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)]
        successes = [r.step_key for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)]

    assert result.success
    assert starts.count(step) == 2 and successes.count(step) == 1  # started again, finished once
    suite_dir = team.home / "helm" / "benchmark_output" / "runs" / suite
    runs = list_run_folders(suite_dir)
    assert len(runs) == planned and all(run.complete for run in runs)
    assert not (team.home / "helm" / "scratch" / suite).exists()  # the killed attempt's folder is gone too
