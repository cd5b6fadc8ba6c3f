"""A suite's HELM runs fanned out on the deployment's Celery workers (real helm-run, real Redis,
PostgreSQL-backed Dagster instance), then evaluated."""

import json
from datetime import datetime

import dagster as dg
import pytest

from governance_assets.deploy import jobs
from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.deployment import services
from governance_assets.lib.deployment.fan_out import pool_name
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.helm.runner import PLAN_RECORD
from governance_assets_tests.deployment.conftest import requires_servers

pytestmark = [pytest.mark.integration, requires_servers]


def _step_windows(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """Step key -> (start, end) from the run's event log."""
    starts: dict[str, float] = {}
    windows = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or record.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[record.step_key] = record.timestamp
        elif event.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            windows[record.step_key] = (starts[record.step_key], record.timestamp)
    return windows


def _max_overlap(windows: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in windows] + [(end, -1) for _, end in windows])
    running = peak = 0
    for _, change in edges:
        running += change
        peak = max(peak, running)
    return peak


def _workers_used(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    used = set()
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = record.dagster_event.engine_event_data if record.dagster_event else None
        if data is not None and "Celery worker" in data.metadata:
            used.add(str(data.metadata["Celery worker"].value))
    return used


def test_a_suite_fans_out_one_step_per_entry_on_both_workers_and_is_evaluated(
    team: services.Deployment, team_environment: dict[str, str]
) -> None:
    suite = "fan-v1"
    planned = len(load_policy().evaluation_plan.run_entries_with_models())  # all on simple/model1
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("helm_suites", [suite])
        started = datetime.now().timestamp()  # noqa: DTZ005 (compared with Dagster's epoch timestamps)
        result = jobs.run_fan_out(instance, suite)
        assert result.success
        windows = _step_windows(instance, result.run_id)
        helm_steps = {key: window for key, window in windows.items() if key.startswith("run_helm_simple[")}
        assert len(helm_steps) == planned
        assert all(start >= started for start, _ in helm_steps.values())
        assert {name.split("@")[0] for name in _workers_used(instance, result.run_id)} == {"worker1", "worker2"}
        assert _max_overlap(list(helm_steps.values())) == 2
        assert instance.event_log_storage.get_concurrency_info(pool_name("simple")).slot_count == 2

        suite_dir = team.home / "helm" / "benchmark_output" / "runs" / suite
        runs = list_run_folders(suite_dir)
        assert len(runs) == planned and all(run.complete for run in runs)
        assert sorted(json.loads((suite_dir / PLAN_RECORD).read_text("utf-8")).values()) == sorted(
            run.run_name for run in runs
        )
        assert not (team.home / "helm" / "scratch" / suite).exists()

        evaluation = jobs.evaluate_suite().execute_in_process(
            instance=instance, partition_key=suite, raise_on_error=False
        )
        failures = [e.event_specific_data.error for e in evaluation.all_events if e.is_step_failure]  # type: ignore[union-attr]
        assert not failures, failures[0]
        catalogue = evaluation.asset_materializations_for_node("helm__runs")
        assert catalogue[0].metadata["runs_complete"].value == planned
        helm_logs = [
            r.user_message
            for r in instance.all_logs(evaluation.run_id)
            if f"helm-run (suite {suite})" in (r.user_message or "")
        ]
        assert helm_logs == [], (helm_logs, (suite_dir / PLAN_RECORD).read_text("utf-8"))  # nothing run again
        assert (
            evaluation.asset_materializations_for_node("helm__run_stats")[0].metadata["mlflow_runs_created"].value
            == planned
        )
