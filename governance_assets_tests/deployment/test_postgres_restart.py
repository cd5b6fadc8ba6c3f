"""PostgreSQL restarted while the sensors run: the real `dagster-daemon` ticks the code location's
sensors against the team profile's PostgreSQL storage while the server is restarted three times;
no suite partition is added twice or missed, no traffic source is requested for staging twice.
Every wait is bounded (pg_ctl -w -t, deadlines on each poll), so the test fails instead of hanging."""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pytest
import yaml

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.lib.deployment import services
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite
from governance_assets_tests.deployment.conftest import requires_servers

pytestmark = [pytest.mark.integration, requires_servers]

SENSOR_TIMEOUT_SECONDS = 300.0
"""Bound on each wait for the daemon (the discovery sensor ticks every 60 s, the traffic one every 30 s)."""
RESTART_SPACING_SECONDS = 20.0
"""Three restarts this far apart span a discovery interval, so that one falls on a tick."""
SENSORS = ("helm_suite_discovery", "traffic_landing")


def _queue_only_profile(deployment: services.Deployment) -> None:
    """The team profile, with requested runs left in the queue: this test is about the sensors."""
    profile = yaml.safe_load(services.TEAM_PROFILE.read_text("utf-8"))
    profile["concurrency"]["runs"]["max_concurrent_runs"] = 0
    deployment.dagster_home.mkdir(parents=True, exist_ok=True)
    (deployment.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(profile), "utf-8")


def _start_daemon(deployment: services.Deployment) -> services.ServiceProcess:
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "governance_assets.definitions"]
    with (deployment.logs / "daemon.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return services.ServiceProcess("daemon", process.pid)


def _wait_for(what: str, condition: Callable[[], bool], daemon_log: Path) -> None:
    deadline = time.monotonic() + SENSOR_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(2)
    tail = "\n".join(daemon_log.read_text("utf-8", errors="replace").splitlines()[-30:])
    raise AssertionError(f"not within {SENSOR_TIMEOUT_SECONDS:.0f} s: {what}\n{tail}")


def _run_keys(instance: dg.DagsterInstance, sensor: str) -> list[str]:
    """The run keys of every run the daemon launched for `sensor` (duplicates kept)."""
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": sensor}))
    return sorted(record.dagster_run.tags["dagster/run_key"] for record in records)


def _ticks(daemon_log: Path, sensor: str) -> int:
    return daemon_log.read_text("utf-8", errors="replace").count(f"Checking for new runs for sensor: {sensor}\n")


def _land(deployment: services.Deployment, suite: str, traffic_file: str) -> None:
    copy_suite(MMLU_ROOT / "runs" / "v1", deployment.home / "historical", suite, runs=1)
    landing = deployment.home / "landing" / "traffic"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / traffic_file).write_text(json.dumps({"request_id": traffic_file}) + "\n", "utf-8")


def test_sensors_neither_repeat_nor_miss_work_across_postgres_restarts(
    postgres: services.Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELM_OUTPUT_ROOTS", str(postgres.home / "historical"))
    policy = postgres.home / "policy.yaml"  # the sensors read only defaults; the file pins them for the test
    policy.write_text(yaml.safe_dump({"evaluation_plan": {"run_entries": ["simple1"], "models": ["simple/model1"]}}))
    monkeypatch.setenv("GOVERNANCE_POLICY", str(policy))
    _queue_only_profile(postgres)
    daemon_log = postgres.logs / "daemon.log"
    suites, files = [f"restart-s{n}" for n in range(1, 5)], [f"traffic-{n}.jsonl" for n in range(1, 5)]
    for suite, name in zip(suites[:2], files[:2], strict=True):
        _land(postgres, suite, name)
    daemon = _start_daemon(postgres)
    try:
        with dg.DagsterInstance.get() as instance:

            def seen(count: int) -> bool:
                staged = {key.split(":")[1] for key in _run_keys(instance, "traffic_landing")}
                return set(instance.get_dynamic_partitions(HELM_SUITES)) >= set(suites[:count]) and staged >= set(
                    files[:count]
                )

            _wait_for("the first two suites and traffic files", lambda: seen(2), daemon_log)
            servers = {services.postgres_pid(postgres)}
            for suite, name in zip(suites[2:], files[2:], strict=True):
                _land(postgres, suite, name)
                services.restart_postgres(postgres)
                servers.add(services.postgres_pid(postgres))
                time.sleep(RESTART_SPACING_SECONDS)
            services.restart_postgres(postgres)
            servers.add(services.postgres_pid(postgres))
            assert len(servers) == 4 and None not in servers  # three restarts, each a new postmaster
            _wait_for("every suite and traffic file", lambda: seen(4), daemon_log)
            ticks = {sensor: _ticks(daemon_log, sensor) for sensor in SENSORS}
            _wait_for(
                "two more ticks of each sensor after the last restart",
                lambda: all(_ticks(daemon_log, sensor) >= ticks[sensor] + 2 for sensor in SENSORS),
                daemon_log,
            )

            assert sorted(instance.get_dynamic_partitions(HELM_SUITES)) == suites
            assert _run_keys(instance, "helm_suite_discovery") == [f"ingest:{suite}" for suite in suites]
            staged = [key.split(":")[1] for key in _run_keys(instance, "traffic_landing")]
            assert sorted(staged) == files  # each landing file requested for staging once
    finally:
        services.stop_process(daemon)
