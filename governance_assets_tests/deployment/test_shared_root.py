"""The shared storage root on object storage, against moto's S3 emulator on loopback: a suite's
tables published by one home are read by a worker with another home; the fan-out's workers, each
with its own GOVERNANCE_HOME, share HELM runs through the bucket, and a third home evaluates them
from it; MLflow artifacts land in it. On a shared volume: what a suite's steps exchange."""

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import dagster as dg
import mlflow
import pandas as pd
import pytest

from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import run_suites
from governance_assets.deploy import jobs
from governance_assets.lib.core.storage import UnsafePathError
from governance_assets.lib.deployment import services
from governance_assets.lib.deployment.shared_root import SharedRoot, SuiteExchange
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.helm.runner import PLAN_RECORD, helm_environment
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_resources
from governance_assets_tests.deployment.conftest import ROOT, bucket_keys, new_deployment, requires_servers, small_plan
from governance_assets_tests.deployment.machine import on_machine

TABLES = ("run_stats", "instance_stats")


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
    stored = bucket_keys()
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


@pytest.mark.integration
@requires_servers
def test_workers_with_their_own_homes_share_a_fan_out_through_s3_and_mlflow_stores_artifacts_there(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("GOVERNANCE_POLICY", str(small_plan(tmp_path / "policy.yaml", ["simple1", "simple_mcqa"])))
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
        assert not (coordinator / "helm" / "benchmark_output" / "runs" / "shared-v1").exists()

        # Then the evaluation, as the evaluate_after_fan_out sensor launches it, in a run worker on
        # a third machine that sees the workers' runs only through the bucket.
        evaluated = on_machine(deployment.home / "machine3", "shared-v1", "helm/runs", "helm/run_stats")
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        with dg.DagsterInstance.get() as instance:
            (evaluation,) = instance.get_run_records(dg.RunsFilter(job_name="evaluate_suite"))
            messages = [record.user_message or "" for record in instance.all_logs(evaluation.dagster_run.run_id)]
        assert not [message for message in messages if "helm-run (suite shared-v1)" in message]  # not run again

        # MLflow: an artifact logged through the server lands in the bucket.
        client = mlflow.MlflowClient(tracking_uri=deployment.mlflow_url)
        logged = client.create_run(client.create_experiment("shared-artifacts"))
        note = tmp_path / "note.txt"
        note.write_text("evidence", "utf-8")
        client.log_artifact(logged.info.run_id, str(note))
    finally:
        services.stop(deployment.home, log=lambda _: None)

    runs_prefix = "team/helm/benchmark_output/runs/shared-v1/"
    stored = bucket_keys(runs_prefix)
    record = json.loads(stored[runs_prefix + PLAN_RECORD])
    assert sorted(record) == ["simple1:model=simple/model1", "simple_mcqa:model=simple/model1"]
    # Each run was made on one machine and reached the others only through the bucket.
    made_on = {
        run.run_name: home.name
        for home in worker_homes
        for run in list_run_folders(home / "helm" / "benchmark_output" / "runs" / "shared-v1")
    }
    assert sorted(made_on) == sorted(record.values())
    catalogue = pd.read_parquet(io.BytesIO(bucket_keys()["team/warehouse/helm/runs/shared-v1.parquet"]))
    assert sorted(catalogue["run_name"]) == sorted(record.values()) and set(catalogue["status"]) == {"complete"}
    assert all(Path(path).is_relative_to(deployment.home / "machine3") for path in catalogue["path"])
    assert "team/warehouse/helm/run_stats/shared-v1.parquet" in bucket_keys("team/warehouse/")
    fresh = tmp_path / "fresh-home"
    SharedRoot.open(ROOT).pull_suite("shared-v1", fresh)
    runs = list_run_folders(fresh / "helm" / "benchmark_output" / "runs" / "shared-v1")
    assert sorted(run.run_name for run in runs) == sorted(record.values()) and all(run.complete for run in runs)
    artifacts = bucket_keys("team/mlflow/artifacts/")
    assert [value for key, value in artifacts.items() if key.endswith(f"{logged.info.run_id}/artifacts/note.txt")] == [
        b"evidence"
    ]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def test_an_exchange_publishes_what_succeeded_steps_wrote_and_pulls_only_what_changed(tmp_path: Path) -> None:
    shared = SharedRoot.open(str(tmp_path / "volume"))
    table, baseline = PurePosixPath("warehouse/helm/run_stats/v1.parquet"), "warehouse/helm/instance_stats/v0.parquet"
    _write(tmp_path / "volume" / baseline, "v0 instance stats")
    _write(tmp_path / "volume" / "warehouse/helm/run_stats/v0.parquet", "not a baseline")
    writer = SuiteExchange(shared, tmp_path / "a", ("v1",))
    assert writer.pull() == [PurePosixPath(baseline)]

    _write(tmp_path / "a" / table, "run stats")  # a step succeeded
    _write(tmp_path / "a" / "warehouse/helm/run_stats/.v1.parquet.1-2.x.tmp", "half")
    assert writer.publish_changes() == [table]
    assert writer.publish_changes() == []
    _write(tmp_path / "a" / "warehouse/gates/verdicts/v1.parquet", "verdicts")  # a step failed
    writer.pass_over_changes()
    assert writer.publish_changes() == []
    assert sorted(p.relative_to(tmp_path / "volume").as_posix() for p in (tmp_path / "volume").rglob("*.*")) == [
        baseline,
        "warehouse/helm/run_stats/v0.parquet",
        str(table),
    ]

    blocker = _write(tmp_path / "volume" / "warehouse" / "gates", "the root cannot take a folder here")
    _write(tmp_path / "a" / "warehouse/gates/verdicts/v1.parquet", "verdicts again")  # a step succeeded
    with pytest.raises(OSError):
        writer.publish_changes()
    _write(tmp_path / "a" / "reports/compliance/v1/model.html", "a failed step's report")
    writer.pass_over_changes()
    blocker.unlink()  # the root is back: the next successful step's publication catches up
    assert writer.publish_changes() == [PurePosixPath("warehouse/gates/verdicts/v1.parquet")]
    assert writer.publish_changes() == []
    (tmp_path / "volume" / "warehouse" / "gates" / "verdicts" / "v1.parquet").unlink()

    reader = SuiteExchange(shared, tmp_path / "b", ("v1",))
    assert reader.pull() == [PurePosixPath(baseline), table]
    assert SuiteExchange(shared, tmp_path / "b", ("v1",)).pull() == []  # unchanged on both sides
    _write(tmp_path / "volume" / table, "run stats, run again")
    assert SuiteExchange(shared, tmp_path / "b", ("v1",)).pull() == [table]
    assert (tmp_path / "b" / table).read_text("utf-8") == "run stats, run again"

    every_suite = SuiteExchange(shared, tmp_path / "c", ())  # trends, the audit ledger
    assert len(every_suite.pull()) == 3
    _write(tmp_path / "c" / "warehouse/monitoring/trends.parquet", "trends")
    assert every_suite.publish_changes() == []


def test_a_runs_suites_come_from_its_partition_tags() -> None:
    known = ["v1", "v2", "v3"]
    assert run_suites({"dagster/partition": "v2"}, known) == ("v2",)
    range_tags = {"dagster/asset_partition_range_start": "v1", "dagster/asset_partition_range_end": "v2"}
    assert run_suites(range_tags, known) == ("v1", "v2")
    assert run_suites({}, known) == ()
    assert run_suites({"dagster/partition": "2026-12-01"}, known) is None  # a traffic day
