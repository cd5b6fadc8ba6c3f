"""The shared storage root on object storage, against moto's S3 emulator on loopback: a suite's
tables published by one home are read by a worker with another home; the fan-out's workers, each
with its own GOVERNANCE_HOME, share HELM runs through the bucket; MLflow artifacts land in it."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import boto3
import dagster as dg
import mlflow
import pandas as pd
import pytest
import yaml
from moto.server import ThreadedMotoServer

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.deploy import jobs
from governance_assets.lib.core.storage import UnsafePathError
from governance_assets.lib.deployment import services
from governance_assets.lib.deployment.shared_root import SHARED_ROOT_VARIABLE, SharedRoot
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.helm.runner import PLAN_RECORD, helm_environment
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_resources
from governance_assets_tests.deployment.conftest import new_deployment, requires_servers
from governance_assets_tests.http_server import clear_proxies

BUCKET = "governance"
ROOT = f"s3://{BUCKET}/team"
TABLES = ("run_stats", "instance_stats")


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
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def _bucket_keys(prefix: str = "") -> dict[str, bytes]:
    """Every object in the bucket (read with boto3, not through our code)."""
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


@pytest.mark.integration
def test_a_suites_tables_published_to_s3_are_read_by_a_worker_with_another_home(
    s3: str, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    from governance_assets.definitions import defs

    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "historical", "v1", runs=2)
    home, other_home = tmp_path / "home", tmp_path / "other-machine"
    instance.add_dynamic_partitions(HELM_SUITES, ["v1"])
    assets = [defs().get_assets_def(dg.AssetKey(["helm", name])) for name in ("runs", *TABLES)]
    resources = governance_resources(home, roots=str(tmp_path / "historical"))
    assert dg.materialize(assets, partition_key="v1", instance=instance, resources=resources).success
    (home / "warehouse" / "helm" / "run_stats" / "v2.parquet").write_bytes(b"another suite's table")

    shared = SharedRoot.from_environment()
    assert shared is not None and shared.url == ROOT
    published = shared.publish_suite(home, "v1")

    tables = {PurePosixPath("warehouse", "helm", name, "v1.parquet") for name in TABLES}
    assert tables <= set(published)
    stored = _bucket_keys()
    assert set(stored) == {f"team/{name}" for name in published}  # not v2, not the local Arrow cache
    assert all(stored[f"team/{name}"] == (home / name).read_bytes() for name in published)

    # Another machine: its own GOVERNANCE_HOME, the same bucket, the command line.
    pulled = subprocess.run(
        [sys.executable, "-m", "governance_assets.cli", "services", "pull", "v1"],
        env={**os.environ, "GOVERNANCE_HOME": str(other_home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pulled.returncode == 0, pulled.stderr
    assert f"pull: {len(published)} file(s) of suite v1 ({ROOT})" in pulled.stdout
    for name in tables:
        pd.testing.assert_frame_equal(pd.read_parquet(other_home / name), pd.read_parquet(home / name))
    assert not (other_home / "warehouse" / "helm" / "run_stats" / "v2.parquet").exists()
    with pytest.raises(UnsafePathError, match="suite name"):
        SharedRoot.open(ROOT).pull_suite("../v1", other_home)


def test_a_shared_volume_root_takes_the_same_layout(tmp_path: Path) -> None:
    home = tmp_path / "home"
    table = home / "warehouse" / "helm" / "run_stats" / "v1.parquet"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"metric": ["exact_match"], "mean": [0.5]}).to_parquet(table)
    shared = SharedRoot.open(str(tmp_path / "volume"))
    assert shared.publish_suite(home, "v1") == [PurePosixPath("warehouse/helm/run_stats/v1.parquet")]
    assert (tmp_path / "volume" / "warehouse" / "helm" / "run_stats" / "v1.parquet").read_bytes() == table.read_bytes()
    assert not list((tmp_path / "volume").rglob("*.tmp"))
    assert shared.pull_suite("v1", tmp_path / "elsewhere") == [PurePosixPath("warehouse/helm/run_stats/v1.parquet")]
    assert shared.pull_suite("v9", tmp_path / "elsewhere") == []


def _small_plan(path: Path) -> Path:
    """Two offline entries on simple/model1, a few instances each (the default plan's gates)."""
    document = yaml.safe_load((Path(__file__).parents[2] / "governance_assets/policy/default.yaml").read_text())
    document["evaluation_plan"].update(run_entries=["simple1", "simple_mcqa"], max_eval_instances=3)
    path.write_text(yaml.safe_dump(document), "utf-8")
    return path


@pytest.mark.integration
@requires_servers
def test_workers_with_their_own_homes_share_a_fan_out_through_s3_and_mlflow_stores_artifacts_there(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("GOVERNANCE_POLICY", str(_small_plan(tmp_path / "policy.yaml")))
    deployment = dataclasses.replace(new_deployment(workers=0), shared_root=ROOT)
    request.addfinalizer(lambda: shutil.rmtree(deployment.home, ignore_errors=True))
    deployment = services.start(deployment, log=lambda _: None)
    worker_homes = [deployment.home / f"machine{index}" for index in (1, 2)]
    try:
        environment = services.team_environment(deployment.home)
        workers = tuple(
            services.start_worker(
                deployment, f"worker{index}", {**helm_environment(), **environment, "GOVERNANCE_HOME": str(home)}
            )
            for index, home in enumerate(worker_homes, start=1)
        )
        deployment = dataclasses.replace(deployment, processes=deployment.processes + workers)
        deployment.save()
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        coordinator = deployment.home / "coordinator"
        monkeypatch.setenv("GOVERNANCE_HOME", str(coordinator))
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions(HELM_SUITES, ["shared-v1"])
            result = jobs.run_fan_out(instance, "shared-v1")
        assert result.success

        # MLflow: an artifact logged through the server lands in the bucket.
        client = mlflow.MlflowClient(tracking_uri=deployment.mlflow_url)
        logged = client.create_run(client.create_experiment("shared-artifacts"))
        note = tmp_path / "note.txt"
        note.write_text("evidence", "utf-8")
        client.log_artifact(logged.info.run_id, str(note))
    finally:
        services.stop(deployment.home, log=lambda _: None)

    runs_prefix = "team/helm/benchmark_output/runs/shared-v1/"
    stored = _bucket_keys(runs_prefix)
    record = json.loads(stored[runs_prefix + PLAN_RECORD])
    assert sorted(record) == ["simple1:model=simple/model1", "simple_mcqa:model=simple/model1"]
    # Each run was made on one machine and reached the others only through the bucket.
    made_on = {
        run.run_name: home.name
        for home in worker_homes
        for run in list_run_folders(home / "helm" / "benchmark_output" / "runs" / "shared-v1")
    }
    assert sorted(made_on) == sorted(record.values())
    assert not (coordinator / "helm" / "benchmark_output" / "runs" / "shared-v1").exists()
    fresh = tmp_path / "fresh-home"
    SharedRoot.open(ROOT).pull_suite("shared-v1", fresh)
    runs = list_run_folders(fresh / "helm" / "benchmark_output" / "runs" / "shared-v1")
    assert sorted(run.run_name for run in runs) == sorted(record.values()) and all(run.complete for run in runs)
    artifacts = _bucket_keys("team/mlflow/artifacts/")
    assert [value for key, value in artifacts.items() if key.endswith(f"{logged.info.run_id}/artifacts/note.txt")] == [
        b"evidence"
    ]
