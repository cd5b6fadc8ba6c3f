"""A team deployment (PostgreSQL, Redis, MLflow server, Celery workers) started in a temporary
GOVERNANCE_HOME on free loopback ports, shared by a module's tests and stopped after them; moto's
S3 emulator on loopback for the shared storage root."""

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from governance_assets.lib.deployment import services
from governance_assets.lib.deployment.shared_root import SHARED_ROOT_VARIABLE
from governance_assets_tests.http_server import clear_proxies

MISSING = services.missing_binaries()
requires_servers = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"server programs missing locally: {', '.join(MISSING)} (apt-get install postgresql redis-server)",
)
"""Skip only where the binaries are missing on a developer machine; in CI (`CI` set) the tests run
and fail loudly instead."""
BUCKET = "governance"
ROOT = f"s3://{BUCKET}/team"
"""The shared root the S3 tests use (GOVERNANCE_SHARED_ROOT)."""


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


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with one bucket; AWS_* variables point every client at it."""
    clear_proxies(monkeypatch)
    server = ThreadedMotoServer(ip_address=services.LOOPBACK, port=services.free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "emulator-key",
        "AWS_SECRET_ACCESS_KEY": "emulator-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        SHARED_ROOT_VARIABLE: ROOT,
    }.items():
        monkeypatch.setenv(name, value)
    # moto's backend lives in this process: a test's bucket starts empty, whatever the last one left
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def bucket_keys(prefix: str = "") -> dict[str, bytes]:
    """Every object in the bucket (read with boto3, not through our code)."""
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def small_plan(path: Path, run_entries: list[str]) -> Path:
    """The default policy with `run_entries` on simple/model1, a few instances each (its gates)."""
    document = yaml.safe_load((Path(__file__).parents[2] / "governance_assets/policy/default.yaml").read_text())
    document["evaluation_plan"].update(run_entries=run_entries, max_eval_instances=3)
    path.write_text(yaml.safe_dump(document), "utf-8")
    return path
