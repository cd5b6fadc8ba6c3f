"""The compliance group on a real Dagster instance: a real HELM perturbation suite, real MLflow."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from governance_assets.defs.compliance.assets import (
    compliance_bias_fairness,
    compliance_pii,
    compliance_slices,
    compliance_toxicity,
)
from governance_assets.defs.compliance.report import compliance_audit_log, compliance_report, ledger_path
from governance_assets.lib.compliance import audit
from governance_assets_tests.conftest import governance_resources
from governance_assets_tests.lib.compliance.helm_probe import run_probe_suite

SUITE_ASSETS = [compliance_bias_fairness, compliance_pii, compliance_toxicity, compliance_slices, compliance_report]
REPORT_POLICY = """
evaluation_plan: {run_entries: [simple1], models: [simple/model1]}
compliance:
  fairness_limits: [{name: exact_match_group_gap, metric: exact_match, max_group_gap: 0.1}]
  max_perturbation_drop: 0.1
"""
WAIVERS = """
waivers:
  - {gate: exact_match_floor, model: simple/model1, suite: probe, reason: "Debug model, accepted for this test.",
     approved_by: T. Reviewer, expires: "2099-01-01T00:00:00Z"}
  - {gate: exact_match_floor, model: simple/model1, suite: probe, reason: "This one has run out already.",
     approved_by: Old Reviewer, expires: "2020-01-01T00:00:00Z"}
"""


@pytest.fixture
def policy_with_waivers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "policy.yaml").write_text(REPORT_POLICY)
    (folder / "waivers.yaml").write_text(WAIVERS)
    monkeypatch.setenv("GOVERNANCE_POLICY", str(folder / "policy.yaml"))
    return folder


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict[str, dg.MetadataValue]:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]  # type: ignore[union-attr]
    return dict(event.materialization.metadata)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def probe_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the real probe suite run by helm-run and ingested (shared by this module's tests)."""
    home = tmp_path_factory.mktemp("probe_home")
    run_probe_suite(home, "probe")
    return home


@pytest.mark.integration
def test_compliance_group_on_a_real_perturbation_suite(
    probe_home: Path, instance: dg.DagsterInstance, policy_with_waivers: Path
) -> None:
    home = probe_home
    instance.add_dynamic_partitions("helm_suites", ["probe"])
    resources = governance_resources(home)
    result = dg.materialize(SUITE_ASSETS, resources=resources, partition_key="probe", instance=instance)
    assert result.success
    checks = _checks(result)
    robustness = checks["robustness_within_limit"]
    assert not robustness.passed and robustness.severity == dg.AssetCheckSeverity.WARN  # typos: -0.37 worst case
    assert checks["exact_match_group_gap"].metadata["outcome"].value in {"pass", "inconclusive"}
    assert checks["pii_rate_within_limit"].passed
    bias = pd.read_parquet(home / "warehouse" / "compliance" / "bias_fairness" / "probe.parquet")
    assert set(bias["section"]) == {"helm_bias", "perturbation", "group", "fairness_check"}
    report_rows = pd.read_parquet(home / "warehouse" / "compliance" / "report" / "probe.parquet")
    assert set(report_rows["status"]) <= {"met", "not met", "not assessed"}
    statuses = dict(zip(report_rows["requirement"], report_rows["status"], strict=True))
    assert statuses["EU-AIA-15-robustness"] == "not met" and statuses["EU-AIA-13"] == "not assessed"
    oversight = report_rows[report_rows["requirement"] == "EU-AIA-14"]["evidence"].iloc[0]
    assert "T. Reviewer" in oversight and "Old Reviewer" not in oversight  # the expired waiver does not apply
    html = (home / "reports" / "compliance" / "probe" / "simple_model1.html").read_text()
    assert html.count("data:image/png;base64,") == 3
    markdown = str(_metadata(result, "compliance/report")["report"].value)
    for asset in SUITE_ASSETS:  # every compliance table shows its columns and rows in the UI
        key = asset.key.to_user_string()
        frame = pd.read_parquet(home / "warehouse" / key / "probe.parquet")
        metadata = _metadata(result, key)
        assert [c.name for c in metadata["dagster/column_schema"].value.columns] == list(frame.columns), key  # type: ignore[attr-defined]
        assert metadata["dagster/row_count"].value == len(frame) > 0, key
    assert "sha256 of compliance/bias_fairness" in markdown and "policy hash" in markdown
    print(markdown.split("## Requirements")[0])

    first = dg.materialize([compliance_audit_log], resources=resources, instance=instance)
    entries = audit.entries(ledger_path(resources["state"]))  # type: ignore[arg-type]
    kinds = {entry["kind"] for entry in entries}
    assert {"policy_change", "report", "waiver"} <= kinds
    assert _checks(first)["ledger_intact"].passed
    assert _metadata(first, "compliance/audit_log")["dagster/row_count"].value == len(entries)
    again = dg.materialize([compliance_audit_log], resources=resources, instance=instance)
    assert _metadata(again, "compliance/audit_log")["appended"].value == 0
    path = home / "compliance" / "audit_log.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))  # cut the last entry: only the recorded head shows it
    tampered = dg.materialize([compliance_audit_log], resources=resources, instance=instance, raise_on_error=False)
    check = _checks(tampered)["ledger_intact"]
    assert not check.passed and "expected head" in check.metadata["reason"].value


def test_sensors_request_the_report_of_the_evaluated_suite_then_the_audit(instance: dg.DagsterInstance) -> None:
    from governance_assets.defs.compliance.sensors import (
        audit_after_report,
        report_after_blocked_evaluation,
        report_after_evaluation,
    )

    @dg.op
    def step() -> None:
        pass

    @dg.job
    def finished() -> None:
        step()

    def context(sensor: str, tags: dict[str, str]) -> dg.RunStatusSensorContext:
        result = finished.execute_in_process(instance=instance, tags=tags)
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        return dg.build_run_status_sensor_context(
            sensor_name=sensor, dagster_event=result.get_run_success_event(), dagster_instance=instance, dagster_run=run
        )

    request = report_after_evaluation(context("report_after_evaluation", {"dagster/partition": "v7"}))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "v7"
    blocked = report_after_blocked_evaluation(context("report_after_blocked_evaluation", {"dagster/partition": "v8"}))
    assert isinstance(blocked, dg.RunRequest) and blocked.partition_key == "v8"
    assert isinstance(report_after_evaluation(context("report_after_evaluation", {})), dg.SkipReason)
    audit_request = audit_after_report(context("audit_after_report", {}))
    assert isinstance(audit_request, dg.RunRequest) and audit_request.run_key.startswith("audit:")


GATED_POLICY = """
evaluation_plan: {run_entries: [simple1], models: [simple/model1]}
gates:
  - {name: em_floor, kind: threshold, metrics: [exact_match], split: test, min: 0.9, severity: error}
compliance:
  fairness_limits: [{name: exact_match_group_gap, metric: exact_match, max_group_gap: 0.5, blocking: true}]
  contamination_files: [contamination.yaml]
  block_on_contamination: {level}
"""
CONTAMINATION = "points:\n  - {models: [simple/model1], groups: [simple_mcqa], level: weak, description: seen}\n"
WAIVER = """
waivers:
  - {gate: em_floor, model: simple/model1, suite: probe, reason: "Debug model, accepted for this test.",
     approved_by: T. Reviewer, expires: "2099-01-01T00:00:00Z"}
"""


@pytest.mark.integration
@pytest.mark.parametrize("level", ["strong", "weak"])
def test_waivers_contamination_and_fairness_reach_the_release_decision(
    probe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    from governance_assets.defs.gates.assets import build_verdicts_asset
    from governance_assets.defs.release.assets import release_decision
    from governance_assets.lib.core.policy import load_policy

    (tmp_path / "policy.yaml").write_text(GATED_POLICY.replace("{level}", level))
    (tmp_path / "contamination.yaml").write_text(CONTAMINATION)
    (tmp_path / "waivers.yaml").write_text(WAIVER)
    monkeypatch.setenv("GOVERNANCE_POLICY", str(tmp_path / "policy.yaml"))
    policy = load_policy()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("helm_suites", ["probe"])
        result = dg.materialize(
            [compliance_bias_fairness, build_verdicts_asset(policy), release_decision],
            resources=governance_resources(probe_home),
            partition_key="probe",
            instance=instance,
            raise_on_error=False,
        )
    floor = _checks(result)["em_floor"]
    assert not floor.passed and floor.severity == dg.AssetCheckSeverity.WARN  # failed, but waived
    verdicts = pd.read_parquet(probe_home / "warehouse" / "gates" / "verdicts" / "probe.parquet")
    rows = {row["gate"]: row for row in verdicts.to_dict("records")}
    assert rows["em_floor"]["status"] == "fail" and not rows["em_floor"]["blocks_release"]
    assert "promoted under waiver of em_floor" in rows["em_floor"]["reason"]
    assert "claim rests on contaminated data: simple_mcqa (weak)" in rows["em_floor"]["reason"]
    assert rows["contamination"]["status"] == "fail" and rows["contamination"]["blocks_release"] == (level == "weak")
    assert rows["exact_match_group_gap"]["kind"] == "fairness"
    [decision] = pd.read_parquet(probe_home / "warehouse" / "release" / "decision" / "probe.parquet").to_dict("records")
    if level == "weak":  # the policy blocks at weak: the weakly contaminated claim blocks
        assert decision["decision"] == "block" and any(r.startswith("contamination:") for r in decision["reasons"])
    else:
        assert decision["decision"] == "promote"
        assert any("promoted under waiver of em_floor" in w for w in decision["warnings"])
