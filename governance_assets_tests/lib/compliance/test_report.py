"""The requirement mapping, its rules and the rendered report."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from governance_assets.lib.compliance import report
from governance_assets.lib.compliance.contamination import ContaminationFlag
from governance_assets.lib.compliance.waivers import Waiver

WAIVER = Waiver(
    gate="exact_match_floor", model="simple/model1", suite="v1", reason="Accepted for the demo model.",
    approved_by="A. Reviewer", expires=datetime(2027, 1, 1, tzinfo=UTC),
)  # fmt: skip


def _verdict(gate: str, status: str) -> dict[str, str]:
    return {"gate": gate, "status": status, "reason": f"{gate} is {status}"}


def _evidence(**changes: object) -> report.ModelEvidence:
    base: dict[str, object] = {
        "suite": "v1",
        "model": "simple/model1",
        "verdicts": [_verdict("runs_complete", "pass"), _verdict("exact_match_floor", "fail")],
        "waivers": [WAIVER],
        "fairness_checks": [
            {"name": "gap", "metric": "exact_match", "run_name": "r<1>", "outcome": "pass", "difference": 0.04,
             "ci_low": -0.1, "ci_high": 0.09, "limit": 0.2}
        ],
        "group_rows": [
            {"run_name": "r", "metric": "exact_match", "group": g, "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
            for g, v in (("female", 0.66), ("male", 0.7))
        ],
        "robustness": [
            {"run_name": "r", "metric": "exact_match", "perturbation": "typos", "n": 99, "gap": -0.37,
             "ci_low": -0.47, "ci_high": -0.27, "p_adjusted": 1e-6, "outcome": "fail"}
        ],
        "robustness_limit": 0.1,
        "pii": {"completions": 10, "with_pii": 0, "rate": 0.0, "limit": 0.0, "by_type": {}},
        "toxicity": {"source": "alt-profanity-check", "completions": 10, "flagged": 1, "rate": 0.1, "limit": 0.05},
        "audit_intact": True,
        "audit_entries": 4,
        "lineage_runs": 3,
        "slices": [
            {"metric": "exact_match", "feature": "perturbation", "value": "typos", "support": 99, "slice_mean": 0.28,
             "rest_mean": 0.52, "failures_explained": 23.5, "p_adjusted": 5e-4, "significant": True}
        ],
        "ids": {"dagster_run_id": "abc", "policy_hash": "f" * 64},
    }  # fmt: skip
    return report.ModelEvidence(**(base | changes))  # type: ignore[arg-type]


def _status(items: list[report.Item], item_id: str) -> report.Item:
    return next(i for i in items if i.requirement.id == item_id)


def test_rules_judge_the_evidence() -> None:
    mapping = report.load_mapping()
    assert {r.framework for r in mapping} == {"EU AI Act", "NIST AI RMF", "GDPR"}
    items = report.assess(mapping, _evidence())
    gates = _status(items, "EU-AIA-9")
    assert gates.status == "met" and "promoted under waiver of exact_match_floor" in gates.evidence
    assert _status(items, "EU-AIA-15-robustness").status == "not met"
    assert _status(items, "NIST-MEASURE-2.6").status == "not met"  # 0.1 flagged > 0.05
    assert _status(items, "GDPR-5-1-c").status == "met"
    assert _status(items, "EU-AIA-12").status == "met"
    assert (
        _status(items, "EU-AIA-14").status == "not assessed" and "A. Reviewer" in _status(items, "EU-AIA-14").evidence
    )
    assert _status(items, "EU-AIA-13").status == "not assessed" and _status(items, "EU-AIA-13").missing
    unwaived = report.assess(
        mapping,
        _evidence(waivers=[], verdicts=[_verdict("regression", "no data"), _verdict("exact_match_floor", "fail")]),
    )
    assert _status(unwaived, "EU-AIA-9").status == "not met"
    assert _status(unwaived, "EU-AIA-9").evidence.startswith("0/2 gates pass; exact_match_floor: fail")
    empty = report.assess(
        mapping, _evidence(verdicts=[], fairness_checks=[], robustness=[], pii=None, audit_intact=None)
    )
    assert {
        _status(empty, i).status for i in ("EU-AIA-9", "EU-AIA-10", "EU-AIA-15-robustness", "GDPR-5-1-c", "EU-AIA-12")
    } == {"not assessed"}


def test_fairness_without_groups_shows_helms_bias_metrics() -> None:
    bias = [
        {"metric": "bbq_metric_ambiguous_bias", "mean": -0.5, "instances": 2, "status": "ok"},
        {"metric": "bias_metric:mode=representation,demographic_category=gender", "mean": None, "instances": 2,
         "status": "no data"},
    ]  # fmt: skip
    [item] = [
        i for i in report.assess(report.load_mapping(), _evidence(fairness_checks=[], bias_rows=bias))
        if i.requirement.id == "NIST-MEASURE-2.11"
    ]  # fmt: skip
    assert item.status == "not assessed"
    assert "bbq_metric_ambiguous_bias -0.500 (2 instances); 1 with no data" in item.evidence
    assert item.missing.startswith("instances with a group field and a fairness limit in the policy; ")


def test_contamination_blocks_at_the_policy_level() -> None:
    strong = [ContaminationFlag("simple/model1", "simple1", "strong", "seen in training", "ours.yaml")]
    weak = [ContaminationFlag("simple/model1", "simple1", "weak", "maybe", "ours.yaml")]
    mapping = report.load_mapping()
    assert _status(report.assess(mapping, _evidence(contamination=strong)), "NIST-MEASURE-2.5").status == "not met"
    assert _status(report.assess(mapping, _evidence(contamination=weak)), "NIST-MEASURE-2.5").status == "met"
    flagged = report.assess(mapping, _evidence(contamination=weak, block_on_contamination="weak"))
    assert _status(flagged, "NIST-MEASURE-2.5").status == "not met"


def test_rendered_report_embeds_plots_and_escapes_html() -> None:
    evidence = _evidence()
    items = report.assess(report.load_mapping(), evidence)
    images = report.plots(evidence)
    assert set(images) == {"groups.png", "perturbations.png", "slices.png"}
    assert all(data.startswith(b"\x89PNG") for data in images.values())
    markdown, html = report.render(evidence, items, images, "2026-12-04T12:00:00+00:00")
    counts = report.summary(items)
    assert f"{counts['met']} met, {counts['not met']} not met, {counts['not assessed']} not assessed" in markdown
    assert "![slice ranking](slices.png)" in markdown and "r<1>" in markdown
    assert html.count("data:image/png;base64,") == 3 and "r&lt;1&gt;" in html and "r<1>" not in html


def test_a_bad_mapping_names_the_item_and_field(tmp_path: Path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text("requirements:\n  - {id: X, framework: F, article: A, title: T, rule: vibes}\n")
    with pytest.raises(report.MappingError, match=r"mapping.yaml: requirements.0.rule"):
        report.load_mapping(path)
