"""Historical suites under HELM_OUTPUT_ROOTS: discovered by the sensor, verified (never written),
ingested many at once in a backfill, bad runs named while the rest ingests."""

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
import pandas as pd
import pytest

from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.defs.helm.schedules import nightly_evaluation
from governance_assets.defs.helm.sensors import helm_suite_discovery
from governance_assets.defs.lineage.sensors import openlineage_events
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.helm import tidy
from governance_assets.lib.lineage.openlineage import validate_event
from governance_assets_tests.conftest import (
    MMLU_ROOT,
    SAFETY_ROOT,
    copy_suite,
    governance_defs,
    governance_resources,
)


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(autouse=True)
def ingestion_only_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about ingestion: a policy without gates (gates have their own tests)."""
    path = tmp_path / "policy.yaml"
    path.write_text("evaluation_plan: {run_entries: [simple1], models: [simple/model1]}\n")
    monkeypatch.setenv("GOVERNANCE_POLICY", str(path))


@pytest.fixture
def roots(tmp_path: Path) -> str:
    """Two historical roots: the real safety suite, and part of the real MMLU suite with one bad run."""
    safety = tmp_path / "safety"
    copy_suite(SAFETY_ROOT / "runs" / "v3", safety, "v3")
    mmlu = tmp_path / "mmlu"
    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", mmlu, "v1", runs=6)
    bad = sorted(p for p in suite_dir.iterdir() if p.is_dir())[0]
    (bad / "per_instance_stats.json").write_text('[{"instance_id": "id1", "stats": [{"name": ')
    return f"{safety}:{mmlu}"


def _sensor_context(instance: dg.DagsterInstance, roots: str, cursor: str | None) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"state": GovernanceState(output_roots=roots)}
    )


def test_sensor_adds_each_suite_once_and_resumes_from_its_cursor(
    instance: dg.DagsterInstance, roots: str, tmp_path: Path
) -> None:
    first = helm_suite_discovery(_sensor_context(instance, roots, None))
    assert sorted(r.partition_key for r in first.run_requests) == ["v1", "v3"]
    assert {r.run_key for r in first.run_requests} == {"ingest:v1", "ingest:v3"}
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == ["v1", "v3"]
    # A restart resumes from the stored cursor: nothing is asked for twice.
    again = helm_suite_discovery(_sensor_context(instance, roots, first.cursor))
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    # A new suite appears: only it is added, and nothing is missed.
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "mmlu", "v2", runs=1)
    later = helm_suite_discovery(_sensor_context(instance, roots, again.cursor))
    assert [r.partition_key for r in later.run_requests] == ["v2"]
    assert json.loads(later.cursor) == ["v1", "v2", "v3"]


def test_sensor_skips_a_suite_found_in_two_roots(instance: dg.DagsterInstance, roots: str, tmp_path: Path) -> None:
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "safety", "v1", runs=1)
    result = helm_suite_discovery(_sensor_context(instance, roots, None))
    assert [r.partition_key for r in result.run_requests] == ["v3"]


def test_schedule_creates_the_dated_suite(instance: dg.DagsterInstance) -> None:
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 27, 2, tzinfo=UTC)
    )
    request = nightly_evaluation(context)
    assert request.partition_key == "2026-11-27" and request.run_key == "nightly:2026-11-27"
    assert request.tags == PLANNED_SUITE_TAGS  # a suite the platform creates: it runs the plan
    assert instance.get_dynamic_partitions(HELM_SUITES) == ["2026-11-27"]
    nightly_evaluation(context)  # evaluating the same tick again adds nothing
    assert instance.get_dynamic_partitions(HELM_SUITES) == ["2026-11-27"]


def _helm_and_lineage_succeeded(result: dg.ExecuteInProcessResult) -> None:
    """Ingestion and lineage ran; a gate that blocks the release may fail the run."""
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    assert failed <= {"gates__verdicts"}, failed


def test_backfill_ingests_many_suites_in_one_run(instance: dg.DagsterInstance, roots: str, tmp_path: Path) -> None:
    before = {root: _tree_state(Path(root)) for root in roots.split(":")}
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v1", "v3"])
    result = dg.materialize(
        governance_defs(load_policy()),
        instance=instance,
        resources=governance_resources(home, roots=roots),
        tags={"dagster/asset_partition_range_start": "v1", "dagster/asset_partition_range_end": "v3"},
        raise_on_error=False,  # v1's unreadable run: the blocking ingestion gate stops the release
    )
    _helm_and_lineage_succeeded(result)
    materialized = {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()}
    assert {("helm/run_stats", "v1"), ("helm/run_stats", "v3"), ("helm/runs", "v3")} <= materialized
    warehouse = Warehouse(home / "warehouse")
    safety = pd.read_parquet(warehouse.path(tidy.RUN_STATS.key, "v3"))
    assert safety["run_name"].nunique() == 36
    mmlu = pd.read_parquet(warehouse.path(tidy.INSTANCE_STATS.key, "v1"))
    assert mmlu["run_name"].nunique() == 5  # the bad run is left out, the other five ingest
    errors = warehouse.read_annotation(tidy.INSTANCE_STATS.key, "v1", "errors")
    assert len(errors) == 1 and "per_instance_stats.json: truncated JSON" in next(iter(errors.values()))
    assert {root: _tree_state(Path(root)) for root in roots.split(":")} == before  # never written to


def _runs_failure(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "helm__runs"
    return str(failure.step_failure_data.user_failure_data.description)


def test_an_ingested_suite_whose_root_is_missing_fails_naming_the_roots_and_runs_nothing(
    instance: dg.DagsterInstance, roots: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v3"])
    definitions, runs_only = governance_defs(load_policy()), [dg.AssetKey(["helm", "runs"])]
    first = dg.materialize(
        definitions,
        selection=runs_only,
        partition_key="v3",
        instance=instance,
        resources=governance_resources(home, roots),
    )
    assert first.success
    unmounted = tmp_path / "unmounted"  # HELM_OUTPUT_ROOTS now points at a folder that is not there
    again = dg.materialize(
        definitions,
        selection=runs_only,
        partition_key="v3",
        instance=instance,
        resources=governance_resources(home, str(unmounted)),
        raise_on_error=False,
        tags=PLANNED_SUITE_TAGS,  # even a run that may create suites does not re-run a known one
    )
    error = _runs_failure(again)
    assert "suite v3: found in no HELM output root, and it was ingested from" in error and str(unmounted) in error
    assert f"Missing (not mounted?): {home / 'helm' / 'benchmark_output'}, {unmounted}" in error
    assert not (home / "helm").exists()  # no helm-run, nothing written for HELM
    assert Warehouse(home / "warehouse").read(tidy.RUNS_KEY, "v3").num_rows == 36  # the last good table stays


def test_a_partition_added_by_hand_for_a_suite_that_exists_nowhere_fails_and_runs_nothing(
    instance: dg.DagsterInstance, roots: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v9"])
    result = dg.materialize(
        governance_defs(load_policy()),
        partition_key="v9",
        instance=instance,
        resources=governance_resources(home, roots),
        raise_on_error=False,
    )
    error = _runs_failure(result)
    assert "suite v9: found in no HELM output root, and not created by this platform" in error
    for root in [home / "helm" / "benchmark_output", *map(Path, roots.split(":"))]:
        assert str(root) in error
    assert not (home / "helm").exists()
    assert not any(e.is_successful_output for e in result.all_events if e.step_key != "helm__runs")


def test_checks_judge_each_suite(instance: dg.DagsterInstance, roots: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v1", "v3"])
    resources = governance_resources(home, roots=roots)
    results = {
        suite: dg.materialize(
            governance_defs(load_policy()),
            partition_key=suite,
            instance=instance,
            resources=resources,
            raise_on_error=False,  # v1's unreadable run: the blocking ingestion gate stops the release
        )
        for suite in ("v1", "v3")
    }
    for result in results.values():
        _helm_and_lineage_succeeded(result)
    checks = {
        (suite, e.asset_key.to_user_string(), e.check_name): e
        for suite, result in results.items()
        for e in result.get_asset_check_evaluations()
    }
    assert checks[("v3", "helm/run_stats", "agrees_with_helm_summary")].passed
    assert checks[("v3", "helm/run_stats", "agrees_with_helm_summary")].metadata["compared"].value == sum(
        len(run["stats"]) for run in json.loads((SAFETY_ROOT / "runs" / "v3" / "runs.json").read_text())
    )
    no_summary = checks[("v1", "helm/run_stats", "agrees_with_helm_summary")]
    assert not no_summary.passed and no_summary.severity == dg.AssetCheckSeverity.WARN
    bad = checks[("v1", "helm/instance_stats", "all_complete_runs_ingested")]
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
    assert "truncated JSON" in json.dumps(bad.metadata["evidence"].value)
    assert checks[("v1", "helm/run_stats", "all_complete_runs_ingested")].passed


class _Lineage(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str | None, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Lineage.received.append((self.path, self.headers.get("Authorization"), body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_historical_lineage_states_its_unknowns_and_is_exported_as_openlineage(
    instance: dg.DagsterInstance, roots: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    instance.add_dynamic_partitions(HELM_SUITES, ["v1"])
    definitions = governance_defs(load_policy())
    result = dg.materialize(
        definitions,
        partition_key="v1",
        instance=instance,
        resources=governance_resources(home, roots=roots),
        raise_on_error=False,  # v1's unreadable run: the blocking ingestion gate stops the release
    )
    _helm_and_lineage_succeeded(result)
    records = json.loads((home / "lineage" / "v1.json").read_text())["runs"]
    assert len(records) == 6
    for record in records:
        assert record["source"] == "historical output (files only)"
        assert {"helm_version", "python_version", "git_commit", "helm_command"} <= set(record["unknown_fields"])
        assert len(record["run_spec_hash"]) == 64 and len(record["instances_hash"]) == 64
    reproducibility = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "deterministic_runs_reproduce"
    )
    assert reproducibility.metadata["outcome"].value == "no data"
    report = (home / "reports" / "reproducibility-v1.md").read_text()
    assert "0 reproduced, 0 differs, 6 cannot be checked" in report and "no access to model deployment groq/" in report

    state = GovernanceState(home=str(home), output_roots=roots)
    code_location = dg.Definitions(
        assets=[d for d in definitions if isinstance(d, dg.AssetsDefinition)],
        resources=governance_resources(home, roots=roots),
    )
    context = dg.build_sensor_context(instance=instance, resources={"state": state}, definitions=code_location)
    openlineage_events(context)
    lines = (home / "lineage" / "openlineage.jsonl").read_text().splitlines()
    materializations = len(result.get_asset_materialization_events())
    assert len(lines) == 2 * materializations
    events = [json.loads(line) for line in lines]
    for event in events:
        validate_event(event)
    complete = next(e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == "helm/run_stats")
    assert {Path(d["name"]).name for d in complete["inputs"]} == {"v1.parquet"}
    assert complete["outputs"][0]["facets"]["version"]["datasetVersion"]
    openlineage_events(
        dg.build_sensor_context(
            instance=instance, resources={"state": state}, definitions=code_location, cursor=context.cursor
        )
    )
    assert len((home / "lineage" / "openlineage.jsonl").read_text().splitlines()) == len(lines)  # nothing twice

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Lineage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "token-123")
    try:
        openlineage_events(
            dg.build_sensor_context(instance=instance, resources={"state": state}, definitions=code_location)
        )
    finally:
        server.shutdown()
    assert len(_Lineage.received) == len(lines)
    assert {(path, auth) for path, auth, _ in _Lineage.received} == {("/api/v1/lineage", "Bearer token-123")}
    for _, _, body in _Lineage.received:
        validate_event(body)
