"""The policy's compliance section: defaults load, bad values name the field."""

import pytest

from governance_assets.lib.core.policy import PolicyError, load_policy, parse_policy

PLAN = "evaluation_plan: {run_entries: [simple1], models: [simple/model1]}\n"


def test_the_default_policy_has_a_compliance_section() -> None:
    settings = load_policy().compliance
    assert [limit.name for limit in settings.fairness_limits] == ["exact_match_group_gap"]
    assert settings.block_on_contamination == "strong" and settings.waivers_file == "waivers.yaml"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("compliance: {max_pii_rate: 1.5}", "compliance.max_pii_rate"),
        ("compliance: {block_on_contamination: medium}", "compliance.block_on_contamination"),
        ("compliance: {fairness_limits: [{name: Bad Name, max_group_gap: 0.1}]}", "compliance.fairness_limits.0.name"),
        ("compliance: {fairness_limits: [{name: a, max_group_gap: 0.1}, {name: a, max_group_gap: 0.2}]}", "repeated"),
        ("compliance: {slices: {min_support: 1}}", "compliance.slices.min_support"),
        ("compliance: {unknown: 1}", "compliance.unknown"),
    ],
)
def test_bad_compliance_settings_name_the_field(section: str, field: str) -> None:
    with pytest.raises(PolicyError, match=field.replace(".", r"\.")):
        parse_policy(PLAN + section, "policy.yaml")
