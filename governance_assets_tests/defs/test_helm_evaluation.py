"""A planned suite end to end: real helm-run (simple/model1), real Dagster, real MLflow store."""

import json
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.helm import runner as helm_runner
from governance_assets.lib.helm import tidy
from governance_assets.lib.lineage import reproducibility
from governance_assets_tests.conftest import governance_defs, governance_resources

pytestmark = pytest.mark.integration

POLICY = """
evaluation_plan:
  run_entries: [simple1, "synthetic_reasoning:mode=pattern_match", no_such_scenario]
  models: [simple/model1]
  max_eval_instances: 4
"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Evaluate suite `t1` twice on one Dagster instance; return both results and paths."""
    root = tmp_path_factory.mktemp("evaluation")
    policy = root / "policy.yaml"
    policy.write_text(POLICY)
    resources = governance_resources(root / "home")
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as env:
        env.setenv("GOVERNANCE_POLICY", str(policy))
        instance.add_dynamic_partitions(HELM_SUITES, ["t1"])
        first = dg.materialize(
            governance_defs(load_policy(policy)),
            partition_key="t1",
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags=PLANNED_SUITE_TAGS,  # created as the schedule and the demo do; the second run is not
        )
        second = dg.materialize(
            governance_defs(load_policy(policy)),
            partition_key="t1",
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        yield {"first": first, "second": second, "home": root / "home", "instance": instance}


def _check(result: dg.ExecuteInProcessResult, asset: str, name: str) -> dg.AssetCheckEvaluation:
    return next(
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == asset and e.check_name == name
    )


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    event = next(m for m in result.get_asset_materialization_events() if m.asset_key.to_user_string() == asset)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_failed_helm_run_is_named_and_the_others_ingest(evaluated: Any) -> None:
    result = evaluated["first"]
    # The HELM and lineage steps succeed; the blocking ingestion gate then stops the release.
    assert not any(
        e.is_step_failure for e in result.all_events if (e.step_key or "").startswith(("helm__", "lineage__"))
    )
    runs = pd.read_parquet(Warehouse(evaluated["home"] / "warehouse").path(tidy.RUNS_KEY, "t1")).set_index("run_name")
    assert runs.loc["simple1:model=simple_model1", "status"] == "complete"
    assert runs.loc["synthetic_reasoning:mode=pattern_match,model=simple_model1", "status"] == "complete"
    failed = runs[runs["status"] == "failed"]
    assert len(failed) == 1
    assert "no_such_scenario" in failed["error"].iloc[0] and "Unknown run spec name" in failed["error"].iloc[0]
    check = _check(result, "helm/runs", "all_runs_complete")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert "Unknown run spec name" in json.dumps(check.metadata["evidence"].value)
    assert _metadata(result, "helm/runs")["runs_complete"] == 2


def test_tidy_tables_hold_the_helm_runs(evaluated: Any) -> None:
    warehouse = Warehouse(evaluated["home"] / "warehouse")
    run_stats = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "t1"))
    instance_stats = pd.read_parquet(warehouse.path(tidy.INSTANCE_STATS.key, "t1"))
    predictions = pd.read_parquet(warehouse.path(tidy.PREDICTIONS.key, "t1"))
    assert set(run_stats["run_name"]) == set(instance_stats["run_name"]) == set(predictions["run_name"])
    assert len(set(run_stats["run_name"])) == 2 and set(run_stats["model"]) == {"simple/model1"}
    assert predictions.groupby("run_name").size()["synthetic_reasoning:mode=pattern_match,model=simple_model1"] == 4
    requests = (
        instance_stats.drop_duplicates(["run_name", "instance_id", "train_trial_index"]).groupby("run_name").size()
    )
    assert predictions.groupby("run_name").size().equals(requests)  # simple1: 3 train trials × 10
    assert predictions["completion"].notna().all()
    # HELM's run-level exact_match is the mean of its per-instance values (independent reference).
    plain = run_stats[(run_stats["metric"] == "exact_match") & run_stats["perturbation"].isna()]
    for run_name, split, mean in plain[["run_name", "split", "mean"]].itertuples(index=False):
        values = instance_stats[
            (instance_stats["run_name"] == run_name)
            & (instance_stats["metric"] == "exact_match")
            & (instance_stats["split"] == split)
            & instance_stats["perturbation"].isna()
        ]["value"]
        assert mean == pytest.approx(values.mean())
    for asset in ("helm/run_stats", "helm/instance_stats", "helm/predictions"):
        assert _check(evaluated["first"], asset, "all_complete_runs_ingested").passed


def test_each_helm_run_is_one_mlflow_run_linked_to_dagster(evaluated: Any) -> None:
    client = MlflowClient(f"sqlite:///{evaluated['home'] / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("helm-evaluations")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    first_run_id = evaluated["first"].run_id
    for run in runs:
        tags = run.data.tags
        assert tags["dagster.run_id"] == first_run_id and tags["dagster.partition"] == "t1"
        assert tags["dagster.asset_key"] == "helm/run_stats" and tags["governance.suite"] == "t1"
        assert tags["helm.model"] == "simple/model1"
        assert run.data.params["adapter.model_deployment"] == "simple/model1"
        assert any(key.startswith("test/") for key in run.data.metrics)
        if tags["governance.run_name"].startswith("synthetic_reasoning"):
            assert "test/exact_match" in run.data.metrics
    metadata = _metadata(evaluated["first"], "helm/run_stats")
    assert metadata["mlflow_runs_created"] == 2
    assert all(run.info.run_id in metadata["mlflow_runs"] for run in runs)


def test_rematerialising_unchanged_content_duplicates_nothing(evaluated: Any) -> None:
    second = evaluated["second"]
    assert not any(
        e.is_step_failure for e in second.all_events if (e.step_key or "").startswith(("helm__", "lineage__"))
    )
    assert _metadata(second, "helm/run_stats")["mlflow_runs_created"] == 0
    assert _metadata(second, "helm/run_stats")["runs_reused"] == 2
    client = MlflowClient(f"sqlite:///{evaluated['home'] / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("helm-evaluations")
    assert len(client.search_runs([experiment.experiment_id])) == 2
    logs = [e.message for e in evaluated["instance"].all_logs(second.run_id) if e.message]
    # The complete runs are skipped; only the failing entry is attempted again.
    assert "helm-run (suite t1): no_such_scenario:model=simple/model1" in logs


def test_platform_runs_carry_full_lineage_and_reproduce(evaluated: Any) -> None:
    home = evaluated["home"]
    document = json.loads((home / "lineage" / "t1.json").read_text())
    assert len(document["runs"]) == 2
    for record in document["runs"]:
        assert record["unknown_fields"] == [] and record["source"] == "run by this platform"
        assert record["helm_version"] == "0.5.16" and len(record["git_commit"]) == 40
        assert record["dagster_run_id"] == evaluated["second"].run_id  # the latest materialisation wrote it
        assert set(record["data_versions"]) == {
            "helm/runs",
            "helm/run_stats",
            "helm/instance_stats",
            "helm/predictions",
        }
    check = _check(evaluated["first"], "lineage/reproducibility", "deterministic_runs_reproduce")
    assert check.passed and check.metadata["checked"].value == 1  # synthetic_reasoning: temperature 0
    report = (home / "reports" / "reproducibility-t1.md").read_text()
    assert "2 reproduced, 0 differs, 0 cannot be checked" in report


def test_rematerialising_unchanged_inputs_keeps_data_versions(evaluated: Any) -> None:
    def versions(result: dg.ExecuteInProcessResult) -> dict[str, str]:
        return {
            e.asset_key.to_user_string(): e.materialization.tags["dagster/data_version"]
            for e in result.get_asset_materialization_events()
            if e.asset_key.path[0] == "helm"
        }

    first, second = versions(evaluated["first"]), versions(evaluated["second"])
    assert len(first) == 4 and first == second


def test_changed_adapter_setting_and_scenario_are_detected_and_named(evaluated: Any, tmp_path: Path) -> None:
    source = (
        evaluated["home"]
        / "helm"
        / "benchmark_output"
        / "runs"
        / "t1"
        / "synthetic_reasoning:mode=pattern_match,model=simple_model1"
    )
    run = tmp_path / "recorded" / source.name
    shutil.copytree(source, run)
    spec = json.loads((run / "run_spec.json").read_text())
    spec["adapter_spec"]["max_tokens"] += 3
    (run / "run_spec.json").write_text(json.dumps(spec))
    state = json.loads((run / "scenario_state.json").read_text())
    state["request_states"][0]["request"]["prompt"] += " (edited)"
    (run / "scenario_state.json").write_text(json.dumps(state))

    def scratch(label: str, dry_run: bool, max_eval_instances: int) -> helm_runner.HelmSettings:
        return helm_runner.HelmSettings(
            tmp_path / label, tmp_path / "prod_env", max_eval_instances, dry_run=dry_run, disable_cache=not dry_run
        )

    [result] = reproducibility.reproduce_suite({run.name: run}, [run.name], scratch, [], 0.0, lambda line: None)
    assert result.status == "differs" and result.rerun
    changed = spec["adapter_spec"]["max_tokens"]
    assert f"adapter setting max_tokens: recorded {changed}, re-created {changed - 3}" in result.details
    edited = state["request_states"][0]["instance"]["id"]
    assert result.requests_differing == 1 and any(f"e.g. {edited}|0|None" in d for d in result.details)
    assert result.stats_differing == 0  # the model answers as before: the stats still match
