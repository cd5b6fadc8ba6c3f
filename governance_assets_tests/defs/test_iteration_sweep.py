"""The guided sweep in Dagster: real HELM trials become helm_suites partitions, MLflow child runs of
one study run, and suites the platform then ingests and judges like any other."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow import MlflowClient

from governance_assets.defs.helm.sensors import helm_suite_discovery
from governance_assets.defs.iteration.sweep import iteration_sweep
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.policy import load_policy
from governance_assets_tests.conftest import governance_defs, governance_resources

pytestmark = pytest.mark.integration

POLICY = """
evaluation_plan: {run_entries: [simple_mcqa], models: [simple/model1], max_eval_instances: 3}
gates:
  - {name: mcqa_floor, kind: threshold, metrics: [exact_match], split: test, min: 0.0}
iteration:
  sweep:
    study: demo
    n_trials: 2
    max_eval_instances: 4
    search_space: {max_train_instances: {kind: int, low: 0, high: 2}}
"""


def test_sweep_trials_are_partitions_mlflow_children_and_judged_suites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.setenv("GOVERNANCE_POLICY", str(tmp_path / "policy.yaml"))
    home = tmp_path / "home"
    resources = governance_resources(home)
    with dg.instance_for_test() as instance:
        result = dg.materialize([iteration_sweep], instance=instance, resources=resources)
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["trials_complete"].value + metadata["trials_pruned"].value == 2
        trials = [t for t in metadata["trials"].value if t["state"] == "COMPLETE"]
        suites = instance.get_dynamic_partitions(HELM_SUITES)
        assert {t["suite"] for t in trials} == set(suites) and all(s.startswith("sweep-demo-t") for s in suites)
        assert "data:image/png;base64" in metadata["optimization_history"].value
        assert "Not applied" in metadata["proposal"].value and "max_train_instances=" in metadata["proposal"].value

        client = MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("governance")
        [study_run] = client.search_runs([experiment.experiment_id], "tags.`governance.role` = 'study'")
        children = client.search_runs(
            [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{study_run.info.run_id}'"
        )
        assert len(children) == 2 and all("max_train_instances" in child.data.params for child in children)

        # The trial suites sit in the sweep root, which discovery reads like a historical root: the
        # platform ingests and judges each trial like any suite, and never re-runs it.
        state = GovernanceState(home=str(home))
        tick = helm_suite_discovery(dg.build_sensor_context(instance=instance, resources={"state": state}))
        assert {r.partition_key for r in tick.run_requests} == set(suites)
        judged = dg.materialize(
            governance_defs(load_policy()),
            selection=dg.AssetSelection.assets(["gates", "verdicts"]).upstream()
            - dg.AssetSelection.groups("compliance"),
            partition_key=suites[0],
            instance=instance,
            resources=resources,
            raise_on_error=False,
        )
        verdicts = pd.read_parquet(home / "warehouse" / "gates" / "verdicts" / f"{suites[0]}.parquet")
        assert {"all_runs_ingested", "mcqa_floor"} <= set(verdicts["gate"])
        assert judged.success
    runs = pd.read_parquet(home / "warehouse" / "helm" / "runs" / f"{suites[0]}.parquet")
    assert set(runs["status"]) == {"complete"} and str(home / "iteration" / "sweeps") in runs["path"].iloc[0]


def test_labelled_files_become_a_scenario_version_once(tmp_path: Path) -> None:
    """The sensor only lists and requests; the run validates the file (a bad row is rejected with its
    line) and writes version 1; the same file is not consumed twice."""
    from governance_assets.defs.iteration.labeling import iteration_labeled_scenario, labels_landing_sensor

    home = tmp_path / "home"
    landing = home / "landing" / "labels"
    landing.mkdir(parents=True)
    (landing / "batch1.jsonl").write_text(
        '{"item_id": "a", "input": "2+2?", "label": "4"}\n{"item_id": "b", "input": "x"}\n'
    )
    state = GovernanceState(home=str(home))
    with dg.instance_for_test() as instance:
        tick = labels_landing_sensor(dg.build_sensor_context(instance=instance, resources={"state": state}))
        assert len(tick.run_requests) == 1
        result = dg.materialize([iteration_labeled_scenario], instance=instance, resources={"state": state})
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["latest_version"].value == 1 and metadata["rows_rejected"].value == 1
        assert metadata["run_entry"].value == "governance_labeled:version=1"
        again = labels_landing_sensor(dg.build_sensor_context(instance=instance, resources={"state": state}))
        assert not again.run_requests
        second = dg.materialize([iteration_labeled_scenario], instance=instance, resources={"state": state})
        assert second.get_asset_materialization_events()[0].materialization.metadata["new_versions"].value == 0
