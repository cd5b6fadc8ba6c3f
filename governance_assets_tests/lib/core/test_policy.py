"""The policy file: the default loads, a bad one fails with the field path and the reason."""

from pathlib import Path

import pytest

from governance_assets.lib.core.policy import PolicyError, default_policy_text, load_policy, parse_policy

VALID_PLAN = "evaluation_plan:\n  run_entries: [simple1]\n  models: [simple/model1]\n"


def test_default_policy_loads_and_expands_entries() -> None:
    plan = load_policy().evaluation_plan
    entries = plan.run_entries_with_models()
    assert "simple1:model=simple/model1" in entries
    assert "synthetic_reasoning:mode=pattern_match,model=simple/model1" in entries
    assert len(entries) == len(plan.run_entries) * len(plan.models)


def test_policy_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(VALID_PLAN + "  max_eval_instances: 3\n")
    monkeypatch.setenv("GOVERNANCE_POLICY", str(path))
    assert load_policy().evaluation_plan.max_eval_instances == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            VALID_PLAN + "  max_eval_instances: -1\n",
            "evaluation_plan.max_eval_instances: Input should be greater than 0",
        ),
        (VALID_PLAN + "  colour: blue\n", "evaluation_plan.colour: Extra inputs are not permitted"),
        (
            "evaluation_plan:\n  run_entries: []\n  models: [m]\n",
            "evaluation_plan.run_entries: List should have at least 1 item",
        ),
        ("evaluation_plan:\n  run_entries: ['simple1:model=x']\n  models: [m]\n", "names a model"),
        (
            "evaluation_plan:\n  run_entries: ['bad entry']\n  models: [m]\n",
            "is not a HELM run entry",
        ),
        ("mlflow: {}\n", "evaluation_plan: Field required"),
        ("- a list\n", "expected a mapping at the top level"),
        ("evaluation_plan: [unclosed\n", "not valid YAML"),
        (
            VALID_PLAN + "monitoring: {drift: {share_threshold: 0.8, error_share: 0.5}}\n",
            "monitoring.drift: Value error, 'error_share' (0.5) is below 'share_threshold' (0.8)",
        ),
        (VALID_PLAN + "monitoring: {reference: {source: suite}}\n", "a 'suite' reference needs 'suite'"),
        (VALID_PLAN + "monitoring: {reference: {start: 2026-02-01}}\n", "give both 'start' and 'end'"),
        (
            VALID_PLAN + "monitoring: {reference: {start: 2026-02-01, end: 2026-01-01}}\n",
            "'start' (2026-02-01) is after 'end' (2026-01-01)",
        ),
        (VALID_PLAN + "monitoring: {drift: {methods: {latency_ms: anova}}}\n", "monitoring.drift.methods.latency_ms"),
        (VALID_PLAN + "monitoring: {trends: {method: arima}}\n", "monitoring.trends.method"),
        (
            VALID_PLAN + "monitoring: {traffic: {database: {url_env: DB, table: 'x; drop'}}}\n",
            "monitoring.traffic.database.table: String should match pattern",
        ),
        (VALID_PLAN + "monitoring: {start_date: yesterday}\n", "monitoring.start_date"),
        (
            VALID_PLAN + "gates: [{name: floor, kind: threshold, metrics: [exact_match], min: .nan}]\n",
            "gates.0.threshold.min: Input should be a finite number",
        ),
        (
            VALID_PLAN + "gates: [{name: r, kind: regression, metrics: [exact_match], tolerance: .inf}]\n",
            "gates.0.regression.tolerance: Input should be a finite number",
        ),
        (
            VALID_PLAN + "regression: {inconclusive: ignore}\n",
            "regression.inconclusive: Input should be 'block' or 'warn'",
        ),
        (
            VALID_PLAN + "gates: [{name: g, kind: vibes}]\n",
            "gates.0: Input tag 'vibes' found using 'kind' does not match",
        ),
    ],
)
def test_bad_policy_names_field_and_reason(text: str, expected: str) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(text, "my-policy.yaml")
    assert str(error.value).startswith("my-policy.yaml: ")
    assert expected in str(error.value)


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope\.yaml: cannot be read"):
        load_policy(tmp_path / "nope.yaml")


def test_default_policy_is_the_packaged_file() -> None:
    assert "evaluation_plan:" in default_policy_text()
