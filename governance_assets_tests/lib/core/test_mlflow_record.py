"""The MLflow record: legal reversible keys, no duplicates, superseding links (real SQLite store)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import ViewType
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
    return EvaluationRecorder(
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "helm-evaluations", tmp_path / "locks"
    )


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


CHILD = """
import json, os, signal, sys
from pathlib import Path
from governance_assets.lib.core.mlflow_record import EvaluationRecorder, EvaluationRun

home, runs, kill_file, kill_name, kill_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
calls = 0

def kill_at_call(frame, event, arg):
    global calls
    if event == "call" and frame.f_code.co_name == kill_name and frame.f_code.co_filename.endswith(kill_file):
        calls += 1
        if calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

recorder = EvaluationRecorder(f"sqlite:///{home}/mlflow.db", Path(home) / "artifacts", "helm-evaluations",
                              Path(home) / "locks")
artifact = Path(home) / "stats.json"
batch = [
    EvaluationRun("v1", f"run{i}", "simple/model1", {"max_tokens": i}, {"test/exact_match": i / runs},
                  {"test/exact_match": {"metric": "exact_match", "split": "test", "sub_split": None}}, [artifact])
    for i in range(runs)
]
if kill_name:
    sys.setprofile(kill_at_call)
recorded = recorder.record(batch)
sys.setprofile(None)
print(json.dumps(sum(r.created for r in recorded.values())))
"""
RUNS = 12


def _record_in_child(home: Path, kill: tuple[str, str, int] = ("", "", 0)) -> subprocess.Popen[str]:
    """A real recorder process over `RUNS` runs, killed (SIGKILL) at the `nth` call of a function."""
    (home / "stats.json").write_text("[]")
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), str(RUNS), kill[0], kill[1], str(kill[2])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )


def _active_runs(recorder: EvaluationRecorder) -> list[Any]:
    return list(recorder.client.search_runs([recorder.experiment_id], max_results=1000))


def _assert_one_complete_record_per_run(recorder: EvaluationRecorder) -> None:
    runs = _active_runs(recorder)
    assert sorted(run.data.tags["governance.run_name"] for run in runs) == sorted(f"run{i}" for i in range(RUNS))
    for run in runs:
        index = int(run.data.tags["governance.run_name"][3:])
        assert run.info.status == "FINISHED" and "governance.content_hash" in run.data.tags
        assert run.data.metrics == {"test/exact_match": index / RUNS}
        assert run.data.params == {"adapter.max_tokens": str(index)}
        paths = {a.path for a in recorder.client.list_artifacts(run.info.run_id)}
        assert {"metric_name_map.json", "helm"} <= paths


KILL_POINTS = {  # point: (file, function, nth call), records left RUNNING
    "while building the rows": (("sqlalchemy_store.py", "sanitize_metric_value", 5), 0),
    "inside the first transaction": (("_dml_constructors.py", "insert", 2), 0),
    "between the transactions, artifacts half stored": (("mlflow_record.py", "_store_artifacts", RUNS // 2), RUNS),
    "inside the last transaction": (("_dml_constructors.py", "update", 1), RUNS),
}


@pytest.mark.integration
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_recorder_killed_at_any_point_leaves_what_the_next_run_repairs(tmp_path: Path, point: str) -> None:
    kill, left_running = KILL_POINTS[point]
    killed = _record_in_child(tmp_path, kill)
    _, stderr = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, stderr
    recorder = EvaluationRecorder(
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "helm-evaluations", tmp_path / "locks"
    )
    leftovers = _active_runs(recorder)
    assert [run.info.status for run in leftovers] == ["RUNNING"] * left_running  # none looks complete
    assert recorder.latest_by_run_name("v1") == {}

    # The repair itself killed half-way: the next run still ends with one complete record per run.
    if leftovers:
        killed_again = _record_in_child(tmp_path, ("client.py", "delete_run", 2))
        assert killed_again.wait(timeout=120) == -signal.SIGKILL
    repaired = _record_in_child(tmp_path)
    stdout, stderr = repaired.communicate(timeout=120)
    assert repaired.returncode == 0, stderr
    assert json.loads(stdout) == RUNS
    _assert_one_complete_record_per_run(recorder)
    deleted = recorder.client.search_runs([recorder.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert len(deleted) == len(leftovers)


@pytest.mark.integration
def test_two_recorders_of_one_suite_at_once_record_each_content_once(tmp_path: Path) -> None:
    EvaluationRecorder(  # the store and experiment exist before the two race
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "helm-evaluations", tmp_path / "locks"
    )
    first, second = _record_in_child(tmp_path), _record_in_child(tmp_path)
    created = []
    for child in (first, second):
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        created.append(json.loads(stdout))
    assert sorted(created) == [0, RUNS]
    recorder = EvaluationRecorder(
        f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts", "helm-evaluations", tmp_path / "locks"
    )
    _assert_one_complete_record_per_run(recorder)
    assert not any("governance.supersedes" in run.data.tags for run in _active_runs(recorder))


CLIENT_ONLY_TAGS = {"mlflow.user", "mlflow.source.name", "mlflow.source.type"}
"""Tags MLflow's client adds from the process that records (not part of the record)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.integration
def test_bulk_records_equal_what_mlflow_client_calls_record_through_a_tracking_server(tmp_path: Path) -> None:
    artifact = tmp_path / "stats.json"
    artifact.write_text("[]")
    batch = [_run(mean, artifact) for mean in (0.25,)] + [
        EvaluationRun("v1", "other", "simple/model1", {"max_tokens": 3, "nested": {"k": [1]}},
                      {"test/em": float("nan"), "valid/em": 1.0}, {}, [artifact])
    ]  # fmt: skip
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        through_server = EvaluationRecorder(
            f"http://127.0.0.1:{port}", tmp_path / "server-artifacts", "helm-evaluations", tmp_path / "locks"
        )
        assert through_server._sql_store() is None  # each run through the client's calls
        bulk = EvaluationRecorder(
            f"sqlite:///{tmp_path / 'bulk.db'}", tmp_path / "bulk-artifacts", "helm-evaluations", tmp_path / "locks"
        )
        assert bulk._sql_store() is not None
        for recorder in (through_server, bulk):
            assert all(r.created for r in recorder.record(batch).values())

        def shown(recorder: EvaluationRecorder) -> dict[str, Any]:
            runs = {}
            for run in _active_runs(recorder):
                tags = {k: v for k, v in run.data.tags.items() if k not in CLIENT_ONLY_TAGS}
                artifacts = sorted(a.path for a in recorder.client.list_artifacts(run.info.run_id)) + sorted(
                    a.path for a in recorder.client.list_artifacts(run.info.run_id, "helm")
                )
                metrics = {k: "nan" if v != v else v for k, v in run.data.metrics.items()}
                runs[run.info.run_name] = (run.info.status, tags, run.data.params, metrics, artifacts)
            return runs

        assert shown(bulk) == shown(through_server)
        assert len(shown(bulk)) == 2

        def latest(recorder: EvaluationRecorder) -> dict[str, Any]:  # read by SQL on the bulk side
            return {
                name: (
                    run.info.status,
                    run.info.run_name,
                    run.info.lifecycle_stage,
                    {k: v for k, v in run.data.tags.items() if k not in CLIENT_ONLY_TAGS},
                )
                for name, run in recorder.latest_by_run_name("v1").items()
            }

        assert latest(bulk) == latest(through_server)
        assert {tags["governance.run_name"] for *_, tags in latest(bulk).values()} == {
            "other",
            _run(0, artifact).run_name,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
