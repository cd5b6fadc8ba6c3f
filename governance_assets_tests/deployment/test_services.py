"""`services up` / `services down` against the real servers: PostgreSQL holds Dagster's storage and
MLflow's backend store, MLflow's server and Redis answer on loopback, nothing is left behind."""

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import mlflow
import pytest
import redis

from governance_assets.lib.deployment import services
from governance_assets_tests.deployment.conftest import new_deployment, requires_servers

pytestmark = [pytest.mark.integration, requires_servers]


def _listening(port: int, host: str = services.LOOPBACK) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def _other_addresses() -> list[str]:
    """This machine's addresses other than loopback (a server bound to 127.0.0.1 is not there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        address = str(probe.getsockname()[0])
    return [address] if not address.startswith("127.") else []


def _query(deployment: services.Deployment, database: str, sql: str, password: str) -> list[tuple[object, ...]]:
    connection = services.connect_postgres(deployment, password, database)
    try:
        with connection.cursor() as cursor:  # type: ignore[attr-defined]
            cursor.execute(sql)
            return list(cursor.fetchall())
    finally:
        connection.close()  # type: ignore[attr-defined]


def test_up_serves_dagster_mlflow_and_redis_on_loopback_and_down_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOVERNANCE_PG_PASSWORD", raising=False)
    monkeypatch.delenv("GOVERNANCE_REDIS_PASSWORD", raising=False)
    deployment = services.start(new_deployment(workers=1), log=lambda _: None)
    try:
        ports = deployment.ports
        assert all(_listening(port) for port in (ports.postgres, ports.redis, ports.mlflow))
        assert not any(_listening(port, host) for host in _other_addresses() for port in (ports.postgres, ports.redis))
        secrets_file = deployment.root / "secrets.json"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        environment = services.team_environment(deployment.home)
        pg_password = environment["GOVERNANCE_PG_PASSWORD"]
        for key, value in environment.items():
            monkeypatch.setenv(key, value)

        with pytest.raises(services.ServiceError, match="already running"):
            services.start(deployment, log=lambda _: None)
        with pytest.raises(Exception, match="password"):
            services.connect_postgres(deployment, "wrong-password")
        assert redis.Redis.from_url(environment["GOVERNANCE_CELERY_BROKER"]).ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host=services.LOOPBACK, port=ports.redis).ping()

        # Dagster: the team profile stores runs and partitions in PostgreSQL.
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            instance.add_dynamic_partitions("helm_suites", ["team-suite"])
        rows = _query(deployment, "dagster", "SELECT partition FROM dynamic_partitions", pg_password)
        assert rows == [("team-suite",)]

        # MLflow: runs go through the server into PostgreSQL, artifacts into the served folder.
        client = mlflow.MlflowClient(tracking_uri=environment["MLFLOW_TRACKING_URI"])
        experiment = client.create_experiment("team-check")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "exact_match", 0.25)
        note = deployment.home / "note.txt"
        note.write_text("evidence", "utf-8")
        client.log_artifact(run.info.run_id, str(note))
        stored = _query(
            deployment,
            "mlflow",
            f"SELECT value FROM metrics WHERE run_uuid = '{run.info.run_id}' AND key = 'exact_match'",
            pg_password,
        )
        assert stored == [(0.25,)]
        assert [p.read_text("utf-8") for p in deployment.mlflow_artifacts.rglob("note.txt")] == ["evidence"]

        logs = [p.read_bytes() for p in deployment.logs.glob("*.log")]
        assert not any(pg_password.encode() in log for log in logs)
        assert not any(services.passwords(deployment.root)["GOVERNANCE_REDIS_PASSWORD"].encode() in log for log in logs)
    finally:
        stopped = services.stop(deployment.home, log=lambda _: None)
    assert stopped == ["worker1", "mlflow", "redis", "postgres"]
    assert not any(services.group_alive(process.pid) for process in deployment.processes)
    assert services.postgres_pid(deployment) is None
    assert not any(_listening(port) for port in (ports.postgres, ports.redis, ports.mlflow))
    assert services.stop(deployment.home, log=lambda _: None) == []
    shutil.rmtree(deployment.home)


def test_a_home_postgres_cannot_reach_is_named(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    deployment = services.Deployment(private / "home", services.ServicePorts(1, 2, 3))
    if not services._running_as_root():
        pytest.skip("the cluster runs as the current user: any folder it can write will do")
    with pytest.raises(services.ServiceError, match=r"not searchable by other users .* chmod o\+x"):
        services.start_postgres(deployment, "unused")


def test_the_commands_bring_the_services_up_report_them_and_stop_them() -> None:
    home = new_deployment(workers=0).home
    ports = {name: str(services.free_port()) for name in services.PORT_VARIABLES.values()}
    env = {**os.environ, **ports, "GOVERNANCE_HOME": str(home)}

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "governance_assets.cli", "services", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    try:
        up = command("up", "--workers", "1")
        assert up.returncode == 0, up.stderr
        assert f"MLflow UI:   http://127.0.0.1:{ports['GOVERNANCE_MLFLOW_PORT']}" in up.stdout
        status = command("status")
        assert status.returncode == 0
        assert [line.split()[0] for line in status.stdout.splitlines()] == ["redis", "mlflow", "worker1", "postgres"]
        assert "STOPPED" not in status.stdout
    finally:
        down = command("down")
    assert down.returncode == 0
    assert down.stdout.splitlines()[-1] == "stopped: worker1, mlflow, redis, postgres"
    deployment = services.Deployment.load(home)
    assert deployment is not None and deployment.processes == ()
    assert command("status").returncode == 1
    shutil.rmtree(home)
