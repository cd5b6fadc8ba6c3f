"""HELM's own OpenAI client against a deterministic OpenAI-compatible server on loopback: a suite
goes from the endpoint to tables, gates and a decision through rate limiting and server errors;
an endpoint that keeps failing or stalls fails its run with HELM's reason, in bounded time."""

import json
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pyarrow.parquet as pq
import pytest
import yaml

from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState, HelmRunner
from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.deployment.endpoints import EndpointError, ModelEndpoint, prepare_local_path
from governance_assets.lib.helm.runner import helm_error_summary
from governance_assets_tests.conftest import governance_defs, governance_resources
from governance_assets_tests.deployment.openai_server import (
    API_KEY,
    OpenAICompatibleServer,
    completion_for,
    rate_limited,
    server_error,
)
from governance_assets_tests.http_server import clear_proxies, serve

MODEL = "loopback/echo-model"
KEY_VARIABLE = "LOOPBACK_API_KEY"
GATES = """
gates:
  - name: runs_complete
    kind: completeness
    blocking: true
  - name: tables_valid
    kind: data_quality
    blocking: true
  - name: exact_match_floor
    kind: threshold
    metrics: [exact_match]
    split: test
    min: 0.0
"""


def _endpoint(base_url: str, name: str = MODEL, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "base_url": f"{base_url}/v1",
        "openai_model_name": name.split("/")[1],
        "api_key_env": KEY_VARIABLE,
        **settings,
    }


def _policy(path: Path, entries: list[str], models: list[str], endpoints: list[dict[str, Any]]) -> Path:
    plan = {"run_entries": entries, "models": models, "max_eval_instances": 3}
    document = {"evaluation_plan": plan, **yaml.safe_load(GATES), "endpoints": endpoints}
    path.write_text(yaml.safe_dump(document), "utf-8")
    return path


def test_keys_are_written_owner_only_beside_other_keys_and_a_missing_key_is_named(tmp_path: Path) -> None:
    local = tmp_path / "prod_env"
    local.mkdir()
    (local / "credentials.conf").write_text('perspectiveApiKey: "keep-me"\n', "utf-8")
    endpoint = ModelEndpoint.model_validate(_endpoint("http://127.0.0.1:9"))
    prepare_local_path(local, [endpoint], {KEY_VARIABLE: "sk-1"})
    credentials = local / "credentials.conf"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    from pyhocon import ConfigFactory  # HELM's own reader of this file

    assert dict(ConfigFactory.parse_file(str(credentials))) == {
        "perspectiveApiKey": "keep-me",
        "loopbackApiKey": "sk-1",
    }
    deployments = yaml.safe_load((local / "model_deployments.yaml").read_text("utf-8"))["model_deployments"]
    assert [d["name"] for d in deployments] == [MODEL]
    assert deployments[0]["client_spec"]["args"]["base_url"] == "http://127.0.0.1:9/v1"
    with pytest.raises(EndpointError, match=KEY_VARIABLE):
        prepare_local_path(local, [endpoint], {})


HELM_FAILED_RUN_LOG = [  # HELM 0.5.16's log after a failed run (the endpoint test's), frames shortened
    "2026-12-04 21:47:52,075 INFO       Error when running simple_short_answer_qa:model=loopback_broken-model:",
    "Traceback (most recent call last):",
    '  File ".../helm/benchmark/executor.py", line 121, in process',
    '    raise ExecutorError(f"{str(result.error)} Request: {state.request}")',
    "helm.benchmark.executor.ExecutorError: Failed to make request to loopback/broken-model after retrying 5 "
    "times. Error: OpenAI error: Error code: 500 - {'error': {'message': 'upstream model crashed', 'type': "
    "'server_error'}} Request: Request(model_deployment='loopback/broken-model', prompt='Question: Is 16 even?')",
    "",
    "2026-12-04 21:47:52,075 INFO     } [2m32.116s]",
    "Traceback (most recent call last):",
    '  File ".../helm/benchmark/runner.py", line 229, in run_all',
    '    raise RunnerError(f"Failed runs: [{failed_runs_str}]")',
    'helm.benchmark.runner.RunnerError: Failed runs: ["simple_short_answer_qa:model=loopback_broken-model"]',
]


def test_the_summary_of_a_failed_run_is_helms_reason_not_its_list_of_failed_runs() -> None:
    reason = helm_error_summary(HELM_FAILED_RUN_LOG)
    assert reason == (
        "helm.benchmark.executor.ExecutorError: Failed to make request to loopback/broken-model after retrying 5 "
        "times. Error: OpenAI error: Error code: 500 - {'error': {'message': 'upstream model crashed', 'type': "
        "'server_error'}}"
    )
    assert helm_error_summary(HELM_FAILED_RUN_LOG[-3:]).startswith("helm.benchmark.runner.RunnerError: Failed runs")
    assert helm_error_summary(["loading", "Error when reading the plan", ""]) == "Error when reading the plan"
    assert helm_error_summary(["a", "b", "c", "d"]) == "b | c | d"


@pytest.mark.integration
def test_a_suite_on_an_endpoint_survives_rate_limits_and_errors_to_a_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance: dg.DagsterInstance
) -> None:
    clear_proxies(monkeypatch)
    script = [rate_limited(2), rate_limited(2), server_error()]
    with serve(lambda url: OpenAICompatibleServer(url, script=list(script))) as server:
        policy = _policy(
            tmp_path / "policy.yaml", ["simple_short_answer_qa"], [MODEL], [_endpoint(server.base_url, max_retries=3)]
        )
        monkeypatch.setenv("GOVERNANCE_POLICY", str(policy))
        monkeypatch.setenv(KEY_VARIABLE, API_KEY)
        home = tmp_path / "home"
        instance.add_dynamic_partitions(HELM_SUITES, ["endpoint-v1"])
        result = dg.materialize(
            governance_defs(load_policy(policy)),
            partition_key="endpoint-v1",
            instance=instance,
            resources=governance_resources(home),
            raise_on_error=False,
            tags=PLANNED_SUITE_TAGS,
        )
        requests = [json.loads(r.body) for r in server.requests]

    assert result.success
    # The faults were answered, then retried by the client: after the 429s no sooner than Retry-After.
    assert server.answered[:3] == [429, 429, 500] and set(server.answered[3:]) == {200}
    assert server.arrivals[1] - server.arrivals[0] >= 2.0 and server.arrivals[2] - server.arrivals[1] >= 2.0
    assert {r["model"] for r in requests} == {"echo-model"}
    # Each completion HELM recorded is the server's deterministic answer to that prompt.
    predictions = pq.read_table(home / "warehouse" / "helm" / "predictions" / "endpoint-v1.parquet").to_pylist()
    answers = {r["messages"][-1]["content"]: completion_for(r) for r in requests}
    assert len(predictions) == 3
    assert all(p["completion"] == answers[p["prompt"]] for p in predictions)
    decision = pq.read_table(home / "warehouse" / "release" / "decision" / "endpoint-v1.parquet").to_pylist()
    assert [row["model"] for row in decision] == [MODEL]
    runs_complete = next(e for e in result.get_asset_check_evaluations() if e.check_name == "runs_complete")
    assert runs_complete.passed
    # The key reached the server from the environment through an owner-only file, and nowhere else.
    credentials = home / "helm" / "prod_env" / "credentials.conf"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    logged = "\n".join(str(record) for record in instance.all_logs(result.run_id))
    assert API_KEY not in logged
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        assert API_KEY not in json.dumps({**run.data.params, **run.data.tags})
    assert not [p for p in home.rglob("*") if p.is_file() and p != credentials and API_KEY.encode() in p.read_bytes()]


@pytest.mark.integration
def test_an_endpoint_that_errors_or_stalls_fails_its_run_with_helms_reason_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_proxies(monkeypatch)
    broken, stalled = "loopback/broken-model", "loopback/stalled-model"
    with serve(lambda url: OpenAICompatibleServer(url, stall_models={"stalled-model"})) as server:
        server.script = [server_error()] * 1000  # every request to the broken model fails
        endpoints = [
            _endpoint(server.base_url, broken, max_retries=0),
            _endpoint(server.base_url, stalled, max_retries=0, timeout_seconds=1),
        ]
        policy = _policy(tmp_path / "policy.yaml", ["simple_short_answer_qa"], [broken, stalled], endpoints)
        monkeypatch.setenv("GOVERNANCE_POLICY", str(policy))
        monkeypatch.setenv(KEY_VARIABLE, API_KEY)
        state = GovernanceState(home=str(tmp_path / "home"))
        logs: dict[str, list[str]] = {broken: [], stalled: []}
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # one suite each: two helm-run processes side by side
            runs = [
                pool.submit(
                    HelmRunner().run,
                    [f"simple_short_answer_qa:model={model}"],
                    f"faults-{index}",
                    state,
                    1,
                    logs[model].append,
                )
                for index, model in enumerate((broken, stalled))
            ]
            outcomes = [outcome for run in runs for outcome in run.result()]
        elapsed = time.monotonic() - started

    assert [o.status for o in outcomes] == ["failed", "failed"] and all(o.run_name for o in outcomes)
    errors = {model: outcome.error or "" for model, outcome in zip((broken, stalled), outcomes, strict=True)}
    # The outcome gives HELM's reason (the client's error), not HELM's closing list of failed runs.
    assert not any("Failed runs" in error for error in errors.values())
    assert "Error code: 500" in errors[broken] and "upstream model crashed" in errors[broken]
    assert "OpenAI error: Request timed out." in errors[stalled]
    assert all("Request(" not in error for error in errors.values())  # not the prompt HELM quotes after it
    # HELM's log (named in the step log) says the same: the last error of the request it gave up on.
    helm_logs = {
        model: (state.helm_output_path() / "logs" / f"helm-run-faults-{index}.log").read_text("utf-8")
        for index, model in enumerate((broken, stalled))
    }
    assert all(any("helm-run-faults" in line for line in lines) for lines in logs.values())
    reasons = {
        m: [line for line in text.splitlines() if "after retrying 5 times" in line] for m, text in helm_logs.items()
    }
    assert all(errors[model].split("ExecutorError: ", 1)[1] in reasons[model][-1] for model in reasons)
    # HELM tries a request 5 times, 10 + 20 + 40 + 80 s apart, then fails the run: about 150 s.
    assert elapsed < 150 + 120, elapsed
