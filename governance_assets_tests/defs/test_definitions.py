"""The real code location loads, with the keys, checks, schedules and sensors users rely on."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from governance_assets.definitions import defs
from governance_assets_tests.conftest import PROJECT_ROOT

EXPECTED_ASSETS = {
    "helm/runs",
    "helm/run_stats",
    "helm/instance_stats",
    "helm/predictions",
    "gates/verdicts",
    "release/decision",
    "monitoring/traffic",
    "monitoring/reference",
    "monitoring/traffic_drift",
    "monitoring/eval_drift",
    "monitoring/trends",
    "compliance/bias_fairness",
    "compliance/pii",
    "compliance/toxicity",
    "compliance/slices",
    "compliance/report",
    "compliance/audit_log",
    "iteration/plan",
    "iteration/sweep",
    "iteration/labeling_queue",
    "iteration/labeled_scenario",
    "feedback/events",
    "feedback/ab_tests",
    "feedback/online_eval",
    "feedback/scenario",
}
EXPECTED_CHECKS = {
    "helm/runs:all_runs_complete",
    "helm/run_stats:all_complete_runs_ingested",
    "helm/run_stats:agrees_with_helm_summary",
    "helm/instance_stats:all_complete_runs_ingested",
    "helm/predictions:all_complete_runs_ingested",
    # every suite's ingestion gate and the default policy's gates, judged once on gates/verdicts
    "gates/verdicts:all_runs_ingested",
    "gates/verdicts:runs_complete",
    "gates/verdicts:tables_valid",
    "gates/verdicts:no_accuracy_regression",
    "gates/verdicts:exact_match_floor",
    "gates/verdicts:output_length_ceiling",
    "lineage/reproducibility:deterministic_runs_reproduce",
    "monitoring/traffic_drift:traffic_drift_share",
    "monitoring/eval_drift:no_silent_model_change",
    "monitoring/trends:trends_in_control",
    "compliance/bias_fairness:exact_match_group_gap",
    "compliance/bias_fairness:robustness_within_limit",
    "compliance/pii:pii_rate_within_limit",
    "compliance/toxicity:toxic_rate_within_limit",
    "compliance/audit_log:ledger_intact",
    "feedback/ab_tests:no_sample_ratio_mismatch",
    "feedback/ab_tests:no_guardrail_harm",
    "feedback/online_eval:online_agrees_with_benchmark",
}
DAILY = {
    "monitoring/traffic",
    "monitoring/traffic_drift",
    "feedback/events",
    "feedback/ab_tests",
    "feedback/online_eval",
    "feedback/scenario",
}
UNPARTITIONED = {
    "monitoring/reference",
    "monitoring/trends",
    "compliance/audit_log",
    "iteration/sweep",
    "iteration/labeled_scenario",
}


def test_code_location_loads_everything() -> None:
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} >= EXPECTED_ASSETS
    assert {k.to_user_string() for k in graph.asset_check_keys} >= EXPECTED_CHECKS
    assert {s.name for s in definitions.sensors or []} >= {
        "helm_suite_discovery",
        "check_failure_alerts",
        "openlineage_events",
        "traffic_landing",
        "feedback_landing",
        "feedback_database",
        "model_registry",
        "registry_writeback",
    }
    assert {s.name for s in definitions.schedules or []} >= {
        "nightly_evaluation",
        "daily_traffic_monitoring",
        "daily_trends",
    }
    assert definitions.resolve_job_def("evaluate_suite").partitions_def is not None
    assert definitions.resolve_job_def("monitor_traffic").partitions_def is not None
    dg.Definitions.validate_loadable(definitions)


def test_code_versions_are_digests_of_the_code_each_asset_runs() -> None:
    """Not a constant: each asset's code version is the digest of its module and the project
    code it reaches, so a change to the gates' logic makes gates/verdicts (and only what reaches
    it) stale in the UI."""
    from governance_assets.lib.core.code_version import reachable_modules, source_digest

    graph = defs().resolve_asset_graph()
    verdicts = graph.get(dg.AssetKey(["gates", "verdicts"]))
    assert verdicts.code_version == source_digest("governance_assets.defs.gates.assets")
    assert "governance_assets.lib.gates.regression" in reachable_modules(
        "governance_assets.defs.gates.assets", "governance_assets"
    )
    versions = {key.to_user_string(): graph.get(key).code_version for key in graph.get_all_asset_keys()}
    assert all(version and version != "1" for version in versions.values()), versions
    assert versions["gates/verdicts"] != versions["helm/run_stats"]


def test_blocking_gates_are_blocking_checks() -> None:
    graph = defs().resolve_asset_graph()
    specs = {key.to_user_string(): graph.get_check_spec(key) for key in graph.asset_check_keys}
    assert specs["gates/verdicts:no_accuracy_regression"].blocking
    assert specs["gates/verdicts:runs_complete"].blocking
    assert specs["gates/verdicts:all_runs_ingested"].blocking
    assert not specs["gates/verdicts:exact_match_floor"].blocking


def test_every_asset_is_described_owned_and_grouped_by_its_folder() -> None:
    graph = defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name == key.path[0], key
        assert node.owners, key
        assert node.kinds, key
        assert node.description, key
        name = key.to_user_string()
        if name in DAILY:
            assert node.partitions_def is not None and node.partitions_def.name == "traffic_days", key
        elif name in UNPARTITIONED:
            assert node.partitions_def is None, key
        else:
            assert node.partitions_def is not None and node.partitions_def.name == "helm_suites", key


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "definitions",
        "validate",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
    ]
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
