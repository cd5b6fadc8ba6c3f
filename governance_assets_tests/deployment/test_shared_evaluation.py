"""A suite evaluated on two machines that share nothing but the Dagster instance and the shared
root (moto's S3 emulator on loopback): the steps of one machine pull the suite's state the other
published, and publish what they wrote, with no `services pull`; without GOVERNANCE_SHARED_ROOT
nothing is pulled or published and no hook runs."""

import json
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest

from governance_assets.defs.deployment.shared_state import keep_failed_writes_local, publish_suite_state
from governance_assets.defs.helm.assets import helm_instance_stats, helm_runs
from governance_assets.defs.partitions import HELM_SUITES, daily_asset, suite_asset
from governance_assets.lib.deployment.shared_root import SHARED_ROOT_VARIABLE
from governance_assets.lib.helm.output import list_run_folders
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_resources
from governance_assets_tests.deployment.conftest import BUCKET, bucket_keys, small_plan
from governance_assets_tests.deployment.machine import on_machine

SUITE = "shared-s1"
DOWNSTREAM = ["helm/run_stats", "helm/instance_stats", "helm/predictions", "gates/verdicts"]


def _state_files(home: Path, suite: str) -> dict[str, bytes]:
    """The suite's state in a home, found by walking it: its HELM run folder files and every
    warehouse table partition named after it (not the Arrow cache, nothing temporary)."""
    runs = home / "helm" / "benchmark_output" / "runs" / suite
    files = [path for path in runs.rglob("*") if path.is_file() and not path.name.endswith(".tmp")]
    files += [path for path in (home / "warehouse").rglob(f"{suite}.parquet") if ".arrow_cache" not in path.parts]
    return {path.relative_to(home).as_posix(): path.read_bytes() for path in files}


@pytest.mark.integration
def test_a_suite_evaluated_on_two_machines_shares_its_state_through_s3(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = small_plan(tmp_path / "policy.yaml", ["simple1"])
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))  # the deployment's instance, shared
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(HELM_SUITES, [SUITE])
    home = tmp_path / "home"  # GOVERNANCE_HOME: the same path on every machine, each its own disk
    suite_dir = home / "helm" / "benchmark_output" / "runs" / SUITE
    suite_dir.mkdir(parents=True)
    leftover = suite_dir / ".runs.json.4242-1.killed.tmp"  # a temporary file a killed writer left
    leftover.write_text("[", "utf-8")

    # Machine A: the schedule's run creates the suite: HELM runs the plan into it (helm/runs).
    first = on_machine(home, "--planned", SUITE, "helm/runs", GOVERNANCE_POLICY=str(policy))
    assert first.returncode == 0, first.stderr[-3000:]
    machine_a = _state_files(home, SUITE)
    runs = list_run_folders(suite_dir)
    assert len(runs) == 1 and runs[0].complete
    assert {f"team/{name}": data for name, data in machine_a.items()} == bucket_keys()
    assert leftover.exists()  # left where it was, never published
    home.rename(tmp_path / "machine-a")  # machine A is gone: B reaches its files only through S3

    # Machine B: the tables and the gates, from A's HELM run and catalogue pulled from the bucket.
    second = on_machine(home, SUITE, *DOWNSTREAM, GOVERNANCE_POLICY=str(policy))
    assert second.returncode == 0, second.stderr[-3000:]
    machine_b = _state_files(home, SUITE)
    assert {name: data for name, data in machine_b.items() if name in machine_a} == machine_a
    run = home / "helm" / "benchmark_output" / "runs" / SUITE / runs[0].run_name
    stats = json.loads((run / "stats.json").read_text("utf-8"))
    run_stats = pd.read_parquet(home / "warehouse" / "helm" / "run_stats" / f"{SUITE}.parquet")
    assert len(run_stats) == len(stats)  # one row per stat of HELM's own stats.json
    assert set(machine_b) - set(machine_a) == {f"warehouse/{key}/{SUITE}.parquet" for key in DOWNSTREAM}
    # The bucket ends with the suite's whole state, as B has it, and nothing temporary.
    stored = bucket_keys()
    assert stored == {f"team/{name}": data for name, data in machine_b.items()}
    assert not [key for key in stored if key.endswith(".tmp")]
    with dg.DagsterInstance.get() as instance:
        materialized = instance.get_materialized_partitions(dg.AssetKey(["gates", "verdicts"]))
    assert materialized == {SUITE}


@pytest.mark.integration
def test_without_a_shared_root_nothing_is_pulled_or_published_and_no_hook_runs(
    s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    monkeypatch.delenv(SHARED_ROOT_VARIABLE)
    planted = "team/warehouse/helm/runs/v1.parquet"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=planted, Body=b"another machine's catalogue")
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "historical", "v1", runs=2)
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v1"])
    assets = [helm_runs, helm_instance_stats]  # imported while the variable was unset, as the process loaded them
    assert all(not asset.hook_defs for asset in assets)

    resources = governance_resources(home, roots=str(tmp_path / "historical"))
    result = dg.materialize(assets, partition_key="v1", instance=instance, resources=resources)

    assert result.success
    assert not [event for event in result.all_events if event.event_type_value.startswith("HOOK_")]
    assert (home / "warehouse" / "helm" / "runs" / "v1.parquet").read_bytes() != b"another machine's catalogue"
    assert list(bucket_keys()) == [planted]


def test_with_a_shared_root_suite_assets_get_the_publishing_hooks_and_daily_assets_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SHARED_ROOT_VARIABLE, "s3://bucket/prefix")
    assert suite_asset(("helm", "runs"), kinds={"helm"})["hooks"] == {publish_suite_state, keep_failed_writes_local}
    assert "hooks" not in daily_asset(("monitoring", "traffic"), kinds={"parquet"})
    monkeypatch.delenv(SHARED_ROOT_VARIABLE)
    assert "hooks" not in suite_asset(("helm", "runs"), kinds={"helm"})
