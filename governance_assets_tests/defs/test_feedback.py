"""The feedback group in Dagster on a real instance: feedback files through the sensor (staged once),
each day joined to the traffic, A/B tests judged every day with their checks."""

import json
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from mlflow import MlflowClient

from governance_assets.definitions import defs
from governance_assets.defs.feedback.assets import (
    AB_TESTS_KEY,
    EVENTS_KEY,
    ONLINE_EVAL_KEY,
    RESULTS_ANNOTATION,
    SCENARIO_KEY,
)
from governance_assets.defs.feedback.registry import VERSION_TAG, model_registry, registry_writeback
from governance_assets.defs.feedback.sensors import feedback_database, feedback_landing
from governance_assets.defs.feedback.staging import FeedbackSourceConfig, stage_feedback_source
from governance_assets.defs.resources import GovernanceState, MlflowTracking
from governance_assets.lib.core.policy import default_policy_text
from governance_assets.lib.core.storage import write_parquet_atomic
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.feedback import generator
from governance_assets.lib.feedback.events import staged_sources
from governance_assets.lib.helm import tidy
from governance_assets.lib.helm.runner import HelmSettings, run_entries
from governance_assets_tests.lib.feedback.test_events import feedback_table

FIRST_DAY = date(2026, 11, 1)
DAYS = 6


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = feedback_landing(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"state": GovernanceState()})
    )
    assert isinstance(result, dg.SensorResult)
    for request in result.dynamic_partitions_requests or []:  # as the daemon does before the runs
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _run(instance: dg.DagsterInstance, requests: list[dg.RunRequest]) -> None:
    definitions = defs()
    for request in requests:
        assert request.job_name is not None
        result = definitions.resolve_job_def(request.job_name).execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config, raise_on_error=False
        )
        assert result.success, request


def _write_traffic(frame: pd.DataFrame, home: Path, drop_share_of: tuple[str, float] | None = None) -> None:
    """The traffic as `monitoring/traffic` stores it (warehouse/monitoring/traffic/<day>.parquet)."""
    if drop_share_of is not None:
        variant, share = drop_share_of
        served = frame["metadata"].str.contains(f'"variant":"{variant}"')
        frame = frame.drop(frame[served].sample(frac=share, random_state=1).index)
    for day, part in frame.groupby(frame["timestamp"].dt.strftime("%Y-%m-%d")):
        write_parquet_atomic(
            home / "warehouse" / "monitoring" / "traffic" / f"{day}.parquet",
            pa.Table.from_pandas(part, preserve_index=False),
        )


def _helm_suite(home: Path) -> None:
    """A real HELM suite of simple/model1 (the generated traffic's model) in the warehouse."""
    settings = HelmSettings(home / "helm" / "benchmark_output", home / "helm" / "prod_env", max_eval_instances=5)
    outcomes = run_entries(["simple1:model=simple/model1"], "bench", settings, lambda _: None)
    assert [o.status for o in outcomes] == ["complete"], outcomes
    tidy.ingest_suite("bench", home / "helm" / "benchmark_output" / "runs" / "bench", Warehouse(home / "warehouse"))


def _latest_checks(
    instance: dg.DagsterInstance, name: str, asset: tuple[str, ...] = AB_TESTS_KEY
) -> dict[str, dg.AssetCheckEvaluation]:
    key = dg.AssetCheckKey(dg.AssetKey(list(asset)), name)
    latest: dict[str, dg.AssetCheckEvaluation] = {}
    for record in reversed(instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)):
        if record.evaluation is not None and record.partition is not None:
            latest[record.partition] = record.evaluation
    return latest


def _quarantined(event: dg.EventLogEntry | None) -> dict[str, object]:
    """The set-aside counts of a feedback/events materialisation, by reason."""
    assert event is not None and event.asset_materialization is not None
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    return {
        k.removeprefix("quarantined/").replace("_", " "): v for k, v in metadata.items() if k.startswith("quarantined/")
    }


@pytest.mark.integration
def test_feedback_is_staged_once_joined_and_both_experiments_called(
    instance: dg.DagsterInstance, offline_environment: Path
) -> None:
    home = offline_environment
    landed = generator.write_landing(FIRST_DAY, DAYS, home)
    feedback_files = landed.feedback_files
    _write_traffic(landed.traffic, home)
    _helm_suite(home)

    staging = _tick(instance, None)
    assert sorted(r.job_name for r in staging.run_requests) == ["stage_feedback"] * len(feedback_files)
    _run(instance, list(staging.run_requests))
    daily = _tick(instance, staging.cursor)
    days = [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(DAYS)]
    assert sorted({r.partition_key for r in daily.run_requests}) == days
    assert {r.job_name for r in daily.run_requests} == {"feedback_daily"}
    _run(instance, sorted(daily.run_requests, key=lambda r: str(r.partition_key)))
    quiet = _tick(instance, daily.cursor)
    assert not quiet.run_requests and quiet.skip_reason is not None
    assert quiet.skip_reason.skip_message == "no new feedback"

    warehouse = Warehouse(home / "warehouse")
    last = days[-1]
    assert _quarantined(instance.get_latest_materialization_event(dg.AssetKey(list(EVENTS_KEY)))) == generator.BAD_ROWS
    results = {r["experiment"]: r for r in warehouse.read_annotation(AB_TESTS_KEY, last, RESULTS_ANNOTATION)}
    assert results["answer_style_v2"]["outcome"] == "ship_challenger"
    assert results["retrieval_rerank"]["outcome"] == "keep_running"
    table = warehouse.read(AB_TESTS_KEY, last)
    assert table is not None and set(table.column("experiment").to_pylist()) == set(results)
    for name in ("no_sample_ratio_mismatch", "no_guardrail_harm"):
        checks = _latest_checks(instance, name)
        assert sorted(checks) == days and all(c.passed for c in checks.values())

    online = warehouse.read(ONLINE_EVAL_KEY, last)
    assert online is not None
    lengths = online.to_pandas().set_index("comparison").loc["output_length"]
    assert lengths["model"] == "simple/model1" and lengths["helm_suite"] == "bench"
    assert lengths["sampled"] == 500 and lengths["production_value"] > 10 * lengths["helm_value"] > 0
    assert bool(lengths["diverged"])  # chat-length production answers against simple1's one-token answers
    online_check = _latest_checks(instance, "online_agrees_with_benchmark", ONLINE_EVAL_KEY)[last]
    assert not online_check.passed and online_check.severity == dg.AssetCheckSeverity.WARN
    assert (home / "feedback" / "online_eval" / f"{last}.png").stat().st_size > 0

    scenario = instance.get_latest_materialization_event(dg.AssetKey(list(SCENARIO_KEY)))
    assert scenario is not None and scenario.asset_materialization is not None
    facts = {k: v.value for k, v in scenario.asset_materialization.metadata.items()}
    examples = warehouse.read(SCENARIO_KEY, last)
    assert examples is not None and examples.num_rows == facts["examples"] > 0
    assert facts["run_entry"] == f"governance_feedback:version={facts['version']}"
    assert (home / "feedback" / "scenario" / f"{facts['version']}.jsonl").exists()
    assert not any("@example.com" in text for text in examples.column("input").to_pylist())

    # a broken assignment: a fifth of the concise requests never logged -> sample ratio mismatch
    _write_traffic(landed.traffic, home, drop_share_of=("concise", 0.2))
    job = defs().resolve_job_def("feedback_daily")
    assert job.execute_in_process(instance=instance, partition_key=last, raise_on_error=False).success
    srm = _latest_checks(instance, "no_sample_ratio_mismatch")[last]
    assert not srm.passed and srm.severity == dg.AssetCheckSeverity.ERROR
    assert "sample ratio mismatch" in str(srm.metadata["evidence"].value)
    results = {r["experiment"]: r for r in warehouse.read_annotation(AB_TESTS_KEY, last, RESULTS_ANNOTATION)}
    assert results["answer_style_v2"]["outcome"] == "keep_champion"


@pytest.mark.integration
def test_registered_versions_are_evaluated_and_the_decision_written_back(
    instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real MLflow store: a registered version triggers an evaluation suite (real helm-run and the
    whole graph); the release decision comes back as tags; a blocked version never becomes champion."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "evaluation_plan: {run_entries: [simple1], models: [simple/model1], max_eval_instances: 5}\n"
        "gates: []\nfeedback: {registry: {auto_promote: true}}\n"
    )
    monkeypatch.setenv("GOVERNANCE_POLICY", str(policy))
    resources = {"state": GovernanceState(), "mlflow": MlflowTracking()}
    client = MlflowClient(tracking_uri=MlflowTracking().resolved_uri(GovernanceState()))
    client.create_registered_model("assistant")
    client.create_model_version("assistant", source=str(tmp_path / "weights"), tags={"helm.model": "simple/model1"})
    client.create_model_version("assistant", source=str(tmp_path / "other"), tags={"helm.model": "someone/else"})

    def tick(cursor: str | None) -> dg.SensorResult:
        result = model_registry(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        assert isinstance(result, dg.SensorResult)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    first = tick(None)
    assert [(r.partition_key, r.tags[VERSION_TAG]) for r in first.run_requests] == [
        ("registry-assistant-v1", "1"),
        ("registry-assistant-v2", "2"),
    ]
    assert not tick(first.cursor).run_requests
    client.set_registered_model_alias("assistant", "challenger", "1")
    moved = tick(first.cursor)
    assert [r.run_key for r in moved.run_requests] == ["registry:assistant/1:challenger"]

    definitions = defs()
    for request in first.run_requests:  # as the daemon launches them: the evaluation, then the write-back
        definitions.resolve_job_def("evaluate_suite").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
        )
    writebacks = registry_writeback(dg.build_sensor_context(instance=instance))
    assert isinstance(writebacks, dg.SensorResult) and len(writebacks.run_requests) == 2
    again = registry_writeback(dg.build_sensor_context(instance=instance, cursor=writebacks.cursor))
    assert isinstance(again, dg.SensorResult) and not again.run_requests  # finished ones are not listed again
    for request in writebacks.run_requests:
        result = definitions.resolve_job_def("registry_decision").execute_in_process(
            instance=instance, run_config=request.run_config
        )
        assert result.success
    # the default gates have no baseline for a first suite: "no data" on a blocking gate blocks, so
    # even with auto_promote the champion alias is not set (the promote path: lib/feedback/test_registry.py)
    first_version = client.get_model_version("assistant", "1")
    assert first_version.tags["governance.decision"] == "block"
    assert first_version.tags["governance.suite"] == "registry-assistant-v1"
    assert first_version.tags["governance.reasons"] != "all blocking gates passed"
    assert "champion" not in client.get_registered_model("assistant").aliases
    other = client.get_model_version("assistant", "2")
    assert other.tags["governance.decision"] == "block"
    assert "did not evaluate someone/else" in other.tags["governance.reasons"]


def _feedback_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default policy (its experiments) with the feedback table named."""
    policy = yaml.safe_load(default_policy_text())
    policy["feedback"]["intake"]["database"] = {"url_env": "FEEDBACK_DATABASE_URL", "table": "feedback"}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("GOVERNANCE_POLICY", str(path))


def _database_tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = feedback_database(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"state": GovernanceState()})
    )
    assert isinstance(result, dg.SensorResult)
    return result


def test_table_rows_are_staged_once_across_ticks_and_restarts(
    instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feedback rows in a database table: one small query a tick, a stage_feedback run per new range
    of ids (the cursor is the highest id requested), each range staged once however often its run
    is repeated; the days they touch are judged like landing files, the bad rows set aside by reason."""
    home = offline_environment
    landed = generator.write_landing(FIRST_DAY, 2, tmp_path / "serving")  # feedback goes to the table instead
    _write_traffic(landed.traffic, home)
    database = tmp_path / "serving.db"
    monkeypatch.setenv("FEEDBACK_DATABASE_URL", f"sqlite:///{database}")
    _feedback_policy(tmp_path, monkeypatch)
    rows = feedback_table(f"sqlite:///{database}", landed.feedback_files[:1])

    first = _database_tick(instance, None)
    assert [r.run_key for r in first.run_requests] == [f"stage-feedback:db-feedback-1-{rows}"]
    assert first.cursor == str(rows) and _database_tick(instance, first.cursor).run_requests == []
    _run(instance, list(first.run_requests) * 2)  # a repeated run (a retry, a restart) stages nothing twice
    [staged] = staged_sources(home / "feedback" / "staging")
    assert staged.source_id == f"db-feedback-1-{rows}" and staged.rows == rows and staged.quarantined == 0

    more = feedback_table(f"sqlite:///{database}", landed.feedback_files[1:])  # the next day and the bad rows
    later = _database_tick(instance, first.cursor)  # as after a restart: the cursor is kept by the instance
    assert [r.run_key for r in later.run_requests] == [f"stage-feedback:db-feedback-{rows + 1}-{rows + more}"]
    assert later.cursor == str(rows + more)
    _run(instance, list(later.run_requests))
    daily = _tick(instance, None)
    assert sorted((r.job_name, r.partition_key) for r in daily.run_requests) == [
        ("feedback_daily", FIRST_DAY.isoformat()),  # the first range: the first day
        ("feedback_daily", (FIRST_DAY + timedelta(days=1)).isoformat()),  # the second: the next, and the bad rows
    ]
    _run(instance, sorted(daily.run_requests, key=lambda r: str(r.partition_key)))
    assert _quarantined(instance.get_latest_materialization_event(dg.AssetKey(list(EVENTS_KEY)))) == generator.BAD_ROWS
    quarantine = home / "feedback" / "staging" / f"db-feedback-{rows + 1}-{rows + more}" / "quarantine.jsonl"
    assert [json.loads(line)["row"] for line in quarantine.read_text().splitlines()] == list(
        range(rows + more - 9, rows + more - 5)
    )  # row = the table's id
    warehouse = Warehouse(home / "warehouse")
    last = (FIRST_DAY + timedelta(days=1)).isoformat()
    for key in (EVENTS_KEY, AB_TESTS_KEY, ONLINE_EVAL_KEY, SCENARIO_KEY):  # the UI's column list and row count
        materialized = instance.get_latest_materialization_event(dg.AssetKey(list(key)))
        assert materialized is not None and materialized.asset_materialization is not None
        facts = materialized.asset_materialization.metadata
        written = pd.read_parquet(warehouse.path(key, last))
        assert facts["dagster/row_count"].value == len(written) > 0
        schema = facts["dagster/column_schema"].value
        assert isinstance(schema, dg.TableSchema)
        assert [c.name for c in schema.columns] == list(written.columns)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://feedback:s3cret-pw@127.0.0.1:1/serving",  # a driver that is not installed
        "postgresql://feedback:s3cret-pw@127.0.0.1:1/serving",  # a server that is not there
        "not a url s3cret-pw",
    ],
)
def test_a_broken_feedback_database_is_reported_without_the_password_and_files_keep_flowing(
    url: str, instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_DATABASE_URL", url)
    _feedback_policy(tmp_path, monkeypatch)
    landed = generator.write_landing(FIRST_DAY, 1, offline_environment)

    failed = _database_tick(instance, "7")
    assert failed.run_requests == [] and failed.cursor is None  # the cursor is kept as it was
    reason = str(failed.skip_reason.skip_message if failed.skip_reason else "")
    assert reason.startswith("feedback database unreadable, asked again next tick") and "s3cret-pw" not in reason
    assert [r.job_name for r in _tick(instance, None).run_requests] == ["stage_feedback"] * len(landed.feedback_files)

    context = dg.build_op_context(resources={"state": GovernanceState()}, instance=instance)
    with pytest.raises(dg.Failure) as failure:
        stage_feedback_source(context, config=FeedbackSourceConfig(table="feedback", after_id=7, up_to_id=9))
    description = str(failure.value.description)
    assert "feedback database unreadable" in description and "s3cret-pw" not in description
    assert stage_feedback_source.retry_policy is not None and stage_feedback_source.retry_policy.max_retries >= 1
