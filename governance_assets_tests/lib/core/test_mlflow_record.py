"""The MLflow record: legal reversible keys, no duplicates, superseding links (real SQLite store)."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from governance_assets.lib.core.mlflow_record import (
    EvaluationRecorder,
    EvaluationRun,
    flatten_params,
    metric_key,
)

HELM_NAMES = [
    ("exact_match", "test", None),
    ("exact_match@5", "test", None),
    ("exact_match_5", "test", None),
    (
        "bias_metric:mode=associations,demographic_category=race,target_category=adjective",
        "test",
        None,
    ),
    (
        "bias_metric:mode=associations,demographic_category=race,target_category=profession",
        "test",
        None,
    ),
    ("num_instances", "valid", "anatomy"),
]


def test_metric_keys_are_legal_and_distinct() -> None:
    keys = [metric_key(*name) for name in HELM_NAMES]
    for key in keys:
        _validate_metric_name(key)  # MLflow's own validator raises on an illegal key
    assert len(set(keys)) == len(keys)
    assert keys[0] == "test/exact_match"  # legal names are kept as they are
    assert keys[-1] == "valid/num_instances/anatomy"


def test_params_are_flat_legal_and_bounded() -> None:
    params = flatten_params(
        {
            "max_tokens": 5,
            "stop_sequences": ["\n"],
            "instructions": "x" * 7000,
            "nested": {"a@b": 1},
        }
    )
    assert params["adapter.max_tokens"] == "5"
    assert json.loads(params["adapter.stop_sequences"]) == ["\n"]
    assert len(params["adapter.instructions"]) <= 6000 and "sha256:" in params["adapter.instructions"]
    for key in params:
        _validate_param_name(key)


@pytest.fixture
def recorder(tmp_path: Path) -> EvaluationRecorder:
    return EvaluationRecorder(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "helm-evaluations")


def _run(mean: float, artifact: Path) -> EvaluationRun:
    key = metric_key("exact_match@5", "test")
    return EvaluationRun(
        suite="v1",
        run_name="simple1:model=simple_model1",
        model="simple/model1",
        adapter_spec={"method": "generation", "max_tokens": 5},
        metrics={key: mean},
        metric_names={key: {"metric": "exact_match@5", "split": "test", "sub_split": None}},
        artifacts=[artifact],
        tags={"dagster.run_id": "abc"},
    )


def test_unchanged_content_is_not_duplicated_and_a_change_supersedes(
    recorder: EvaluationRecorder, tmp_path: Path
) -> None:
    artifact = tmp_path / "stats.json"
    artifact.write_text("[]")
    first = recorder.record([_run(0.5, artifact)])["simple1:model=simple_model1"]
    again = recorder.record([_run(0.5, artifact)])["simple1:model=simple_model1"]
    assert first.created and not again.created and again.run_id == first.run_id
    changed = recorder.record([_run(0.75, artifact)])["simple1:model=simple_model1"]
    assert changed.created and changed.supersedes == first.run_id

    client = MlflowClient(recorder.tracking_uri)
    runs = client.search_runs([recorder.experiment_id])
    assert len(runs) == 2
    newest = client.get_run(changed.run_id)
    assert newest.data.tags["governance.supersedes"] == first.run_id
    assert newest.data.tags["helm.model"] == "simple/model1"
    assert newest.data.params["adapter.max_tokens"] == "5"
    key = metric_key("exact_match@5", "test")
    assert newest.data.metrics[key] == 0.75
    artifacts = {a.path for a in client.list_artifacts(changed.run_id)} | {
        a.path for a in client.list_artifacts(changed.run_id, "helm")
    }
    assert {"metric_name_map.json", "helm/stats.json"} <= artifacts
    name_map = json.loads(
        Path(client.download_artifacts(changed.run_id, "metric_name_map.json", str(tmp_path))).read_text()
    )
    assert name_map[key]["metric"] == "exact_match@5"  # the map reverses the key
    assert str(tmp_path / "artifacts") in client.get_experiment(recorder.experiment_id).artifact_location
