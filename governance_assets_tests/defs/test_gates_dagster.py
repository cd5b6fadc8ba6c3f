"""Gates on real suites, judged once in gates/verdicts: per-suite check results reported from
that judgement, a blocking gate stopping the release while the verdicts and their MLflow record
are still written, and alerts sent once to a JSONL ledger and a webhook."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from governance_assets.defs.alerts.sensors import check_failure_alerts
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.policy import load_policy
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_defs, governance_resources

pytestmark = pytest.mark.integration

POLICY = """
evaluation_plan: {run_entries: [simple1], models: [simple/model1]}
gates:
  - {name: em_floor, kind: threshold, metrics: [exact_match], split: test, min: 0.3, severity: error}
  - {name: no_regression, kind: regression, metrics: [exact_match], split: test, tolerance: 0.02, blocking: true}
  - {name: dq, kind: data_quality, blocking: true}
regression: {alpha: 0.05, correction: holm}
alerts: {webhook_url_env: TEST_ALERT_WEBHOOK, retries: 1, backoff_seconds: 0}
"""
DEGRADED = "groq_llama3-8b-8192"


def _degrade(suite_dir: Path) -> None:
    """The candidate suite: every correct test answer of the Llama-3-8B (Groq) runs turned wrong."""
    for run in suite_dir.iterdir():
        if DEGRADED not in run.name:
            continue
        entries = json.loads((run / "per_instance_stats.json").read_text())
        for entry in entries:
            for stat in entry["stats"]:
                if stat["name"] == {"name": "exact_match", "split": "test"}:
                    stat.update(sum=0.0, mean=0.0, min=0.0, max=0.0, sum_squared=0.0)
        (run / "per_instance_stats.json").write_text(json.dumps(entries))


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        _Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("gates")
    copy_suite(MMLU_ROOT / "runs" / "v1", root / "history", "v1")
    _degrade(copy_suite(MMLU_ROOT / "runs" / "v1", root / "history", "v2"))
    (root / "policy.yaml").write_text(POLICY)
    resources = governance_resources(root / "home", roots=str(root / "history"))
    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as env:
        env.setenv("GOVERNANCE_POLICY", str(root / "policy.yaml"))
        instance.add_dynamic_partitions(HELM_SUITES, ["v1", "v2"])
        definitions = governance_defs(load_policy())
        results = {
            suite: dg.materialize(
                definitions, partition_key=suite, instance=instance, resources=resources, raise_on_error=False
            )
            for suite in ("v1", "v2")
        }
        yield {"results": results, "instance": instance, "home": root / "home", "root": root}


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == name)


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events() if e.asset_key}


def test_first_suite_has_no_baseline_and_its_release_is_decided(evaluated: dict[str, Any]) -> None:
    result = evaluated["results"]["v1"]
    regression = _check(result, "no_regression")
    assert not regression.passed and regression.severity == dg.AssetCheckSeverity.WARN
    assert regression.metadata["outcome"].value == "no data" and regression.partition == "v1"
    assert _check(result, "dq").passed
    floor = _check(result, "em_floor")
    assert floor.metadata["threshold"].value == ">= 0.3"
    assert {"release/decision", "gates/verdicts"} <= _materialized(result)
    verdicts = pd.read_parquet(evaluated["home"] / "warehouse" / "gates" / "verdicts" / "v1.parquet")
    assert set(verdicts["gate"]) == {"all_runs_ingested", "em_floor", "no_regression", "dq"}
    assert set(verdicts["model"]) - {"*"} == {
        "groq/llama3-70b-8192",
        "groq/llama3-8b-8192",
        "huggingface/Meta-Llama-3-8B",
        "together/Llama-3-70b-chat-hf",
        "together/Llama-3-8b-chat-hf",
    }
    decisions = pd.read_parquet(evaluated["home"] / "warehouse" / "release" / "decision" / "v1.parquet")
    # A blocking gate without data (no baseline yet) blocks: nothing is promoted unverified.
    assert set(decisions["decision"]) == {"block"}
    assert all(any(r.startswith("no_regression: no data") for r in reasons) for reasons in decisions["reasons"])


def test_a_significant_regression_blocks_the_release_and_is_recorded(evaluated: dict[str, Any]) -> None:
    result = evaluated["results"]["v2"]
    regression = _check(result, "no_regression")
    assert not regression.passed and regression.severity == dg.AssetCheckSeverity.ERROR and regression.blocking
    assert regression.partition == "v2" and regression.asset_key == dg.AssetKey(["gates", "verdicts"])
    metadata = {k: v.value for k, v in regression.metadata.items()}
    assert metadata["baseline_suite"] == "v1" and metadata["p_exceeds_adjusted"] < 0.05 and metadata["drop"] > 0.02
    assert DEGRADED in metadata["worst_run"] and DEGRADED in metadata["failing_runs"]
    assert str(metadata["reason"]).startswith("BLOCK: groq/llama3-8b-8192: fail: drop")
    assert str(regression.description).startswith("BLOCK:")
    failed = {row["run_name"] for row in metadata["evidence"] if row["status"] == "fail"}
    assert failed and all(DEGRADED in name for name in failed)
    assert not result.success
    # Judged once and recorded always: the verdicts hold the failure that blocked the release.
    assert "release/decision" not in _materialized(result) and "gates/verdicts" in _materialized(result)
    verdicts = pd.read_parquet(evaluated["home"] / "warehouse" / "gates" / "verdicts" / "v2.parquet")
    regression_rows = verdicts[verdicts["gate"] == "no_regression"].set_index("model")
    assert regression_rows.loc["groq/llama3-8b-8192", "status"] == "fail"
    # The other models did not change, but 17 instances per subject cannot show a drop below 0.02:
    # inconclusive, which the default policy counts against a release, with the reason in words.
    others = regression_rows.drop(index="groq/llama3-8b-8192")
    assert set(others["status"]) == {"inconclusive"} and others["blocks_release"].all()
    assert all("instances would decide it" in reason for reason in others["reason"])
    assert not (evaluated["home"] / "warehouse" / "release" / "decision" / "v2.parquet").exists()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{evaluated['home'] / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("governance")
    [record] = client.search_runs(
        [experiment.experiment_id], "tags.`governance.suite` = 'v2' and tags.`dagster.asset_key` = 'gates/verdicts'"
    )
    assert record.data.metrics["gates_fail"] >= 1 and record.data.metrics["models_blocked"] >= 1
    assert {"helm/run_stats", "helm/instance_stats"} <= _materialized(result)


def test_alerts_are_sent_once_to_the_ledger_and_the_webhook(
    evaluated: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GOVERNANCE_POLICY", str(evaluated["root"] / "policy.yaml"))
    monkeypatch.setenv("TEST_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hooks/T0/SECRET")
    state = GovernanceState(home=str(evaluated["home"]))
    try:
        context = dg.build_sensor_context(instance=evaluated["instance"], resources={"state": state})
        check_failure_alerts(context)
        ledger = evaluated["home"] / "alerts" / "alerts.jsonl"
        alerts = [json.loads(line) for line in ledger.read_text().splitlines()]
        titles = {a["title"] for a in alerts}
        assert "Check no_regression failed for v2" in titles and "Check em_floor failed for v1" in titles
        assert any(a["text"].startswith("gates/verdicts:no_regression: BLOCK:") for a in alerts)
        assert "Check no_regression failed for v1" in titles  # the WARN "no data" result is a failure too
        assert len(_Webhook.received) == len(alerts) and all("text" in body for body in _Webhook.received)
        # The next tick, and a restart that lost its cursor, send nothing again.
        again = dg.build_sensor_context(
            instance=evaluated["instance"], resources={"state": state}, cursor=context.cursor
        )
        check_failure_alerts(again)
        check_failure_alerts(dg.build_sensor_context(instance=evaluated["instance"], resources={"state": state}))
        assert len(ledger.read_text().splitlines()) == len(alerts) and len(_Webhook.received) == len(alerts)
        assert "SECRET" not in ledger.read_text()
    finally:
        server.shutdown()


def test_the_iteration_plan_ranks_the_blocking_failure_first(evaluated: dict[str, Any]) -> None:
    """In the evaluation run, a failed blocking gate stops everything downstream of the verdicts,
    the plan too (the sensor plan_after_blocked_evaluation then requests it): materialised on its
    own it ranks the degraded model's failed regression first, then the inconclusive comparisons
    with the design that decides them; a table in the UI, a report on disk and an MLflow record."""
    assert "iteration/plan" not in _materialized(evaluated["results"]["v2"])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GOVERNANCE_POLICY", str(evaluated["root"] / "policy.yaml"))
        result = dg.materialize(
            governance_defs(load_policy()),
            selection=[dg.AssetKey(["iteration", "plan"]), dg.AssetKey(["iteration", "labeling_queue"])],
            partition_key="v2",
            instance=evaluated["instance"],
            resources=governance_resources(evaluated["home"], roots=str(evaluated["root"] / "history")),
        )
    plan = pd.read_parquet(evaluated["home"] / "warehouse" / "iteration" / "plan" / "v2.parquet")
    first = plan.iloc[0]
    assert first["rank"] == 1 and first["kind"] == "failed gate" and first["model"] == "groq/llama3-8b-8192"
    inconclusive = plan[plan["kind"] == "inconclusive comparison"]
    assert len(inconclusive)
    for row in inconclusive.to_dict("records"):  # a design that fits the subject, or why none does
        needed = json.loads(row["evaluation_plan"]).get("max_eval_instances")
        assert (17 < needed <= row["instances_available"]) if needed else "even all" in row["action"]
    assert (evaluated["home"] / "reports" / "iteration" / "v2.html").exists()
    [event] = [
        e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["iteration", "plan"])
    ]
    metadata = event.materialization.metadata
    queue = pd.read_json(evaluated["home"] / "iteration" / "labeling" / "v2" / "queue.jsonl", lines=True)
    assert len(queue) and (queue["label"] == "").all()  # exported for labelling
    assert metadata["plan_items"].value == len(plan) and "failed gate" in str(metadata["top_item"].value)
    # the UI's table facts, as pandas reads the Parquet files written
    assert metadata["dagster/row_count"].value == len(plan)
    assert [c.name for c in metadata["dagster/column_schema"].value.columns] == list(plan.columns)
    [queue_event] = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["iteration", "labeling_queue"])
    ]
    queue_table = pd.read_parquet(evaluated["home"] / "warehouse" / "iteration" / "labeling_queue" / "v2.parquet")
    queue_metadata = queue_event.materialization.metadata
    assert queue_metadata["dagster/row_count"].value == len(queue_table) == len(queue)
    assert [c.name for c in queue_metadata["dagster/column_schema"].value.columns] == list(queue_table.columns)
