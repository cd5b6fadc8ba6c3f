"""A team deployment (PostgreSQL, Redis, MLflow server, Celery workers) started in a temporary
GOVERNANCE_HOME on free loopback ports, shared by a module's tests and stopped after them."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from governance_assets.lib.deployment import services

MISSING = services.missing_binaries()
requires_servers = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"server programs missing locally: {', '.join(MISSING)} (apt-get install postgresql redis-server)",
)
"""Skip only where the binaries are missing on a developer machine; in CI (`CI` set) the tests run
and fail loudly instead."""


def service_home() -> Path:
    """A fresh GOVERNANCE_HOME that PostgreSQL's service user can reach (pytest's tmp is 0700)."""
    home = Path(tempfile.mkdtemp(prefix="governance-team-"))
    home.chmod(0o755)
    return home


def new_deployment(workers: int) -> services.Deployment:
    ports = services.ServicePorts(services.free_port(), services.free_port(), services.free_port())
    return services.Deployment(service_home(), ports, workers)


@pytest.fixture(scope="module")
def team() -> Iterator[services.Deployment]:
    """A running deployment with two workers; everything it started is stopped afterwards."""
    running = services.start(new_deployment(workers=2), log=lambda _: None)
    try:
        yield running
    finally:
        services.stop(running.home, log=lambda _: None)
        shutil.rmtree(running.home, ignore_errors=True)


@pytest.fixture
def team_environment(team: services.Deployment, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test process pointed at the deployment, as `GOVERNANCE_DEPLOYMENT=team` does."""
    environment = services.team_environment(team.home)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    return environment


@pytest.fixture
def postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[services.Deployment]:
    """PostgreSQL alone (for tests that need no other service), this process pointed at it as
    `GOVERNANCE_DEPLOYMENT=team` points it (GOVERNANCE_PG_*, DAGSTER_HOME, OPTUNA_STORAGE_URL)."""
    deployment = new_deployment(workers=0)
    secret = services.passwords(deployment.root)
    services.start_postgres(deployment, secret["GOVERNANCE_PG_PASSWORD"])
    try:
        for key, value in deployment.environment(secret).items():
            monkeypatch.setenv(key, value)
        yield deployment
    finally:
        services.stop_postgres(deployment)
        shutil.rmtree(deployment.home, ignore_errors=True)
