"""Gate verdicts amended by compliance: contamination, fairness checks, waivers."""

from datetime import UTC, datetime

import pandas as pd

from governance_assets.lib.compliance import evidence
from governance_assets.lib.compliance.contamination import ContaminationFlag
from governance_assets.lib.compliance.settings import ComplianceSettings, FairnessLimit
from governance_assets.lib.compliance.waivers import Waiver
from governance_assets.lib.gates.release import release_decisions

SETTINGS = ComplianceSettings(fairness_limits=[FairnessLimit(name="gap", max_group_gap=0.1, blocking=True)])


def _row(model: str, gate: str, status: str, blocks: bool) -> dict[str, object]:
    return {
        "suite": "v1", "model": model, "gate": gate, "kind": "threshold", "blocking": False, "severity": "error",
        "status": status, "blocks_release": blocks, "reason": f"{gate} {status}", "actual": "0.1", "threshold": ">= 0.5",
        "failing_runs": [], "evidence": "[]",
    }  # fmt: skip


def _waiver(gate: str, model: str) -> Waiver:
    return Waiver(gate=gate, model=model, suite="v1", reason="Accepted by the review board.", approved_by="A. Reviewer",
                  expires=datetime(2099, 1, 1, tzinfo=UTC))  # fmt: skip


def test_waivers_promote_and_contamination_blocks() -> None:
    rows = [_row("a", "floor", "fail", True), _row("b", "floor", "fail", True), _row("c", "floor", "pass", False)]
    strong = [ContaminationFlag("c", "mmlu", "strong", "trained on it", "helm")]
    amended = evidence.amend_verdicts(rows, {"a": [], "b": [], "c": strong}, None, SETTINGS, [_waiver("floor", "a")])
    decisions = {d["model"]: d for d in release_decisions(amended)}
    assert decisions["a"]["decision"] == "promote"
    assert any("promoted under waiver of floor for a" in w for w in decisions["a"]["warnings"])
    assert decisions["b"]["decision"] == "block"
    assert decisions["c"]["decision"] == "block" and decisions["c"]["reasons"][0].startswith(
        "contamination: mmlu: strong"
    )
    [flagged] = [r for r in amended if r["model"] == "c" and r["gate"] == "floor"]
    assert "claim rests on contaminated data: mmlu (strong)" in str(flagged["reason"])
    only_flag = ComplianceSettings(block_on_contamination=None)
    relaxed = evidence.amend_verdicts(rows, {"c": strong}, None, only_flag, [])
    assert {d["model"]: d["decision"] for d in release_decisions(relaxed)}["c"] == "promote"


def test_fairness_checks_feed_the_decision() -> None:
    checks = pd.DataFrame(
        [
            {"section": "fairness_check", "run_name": "r1", "model": "a", "group": "gap: f vs m", "gap": 0.3,
             "ci_low": 0.2, "ci_high": 0.4, "outcome": "fail"},
            {"section": "fairness_check", "run_name": "r1", "model": "b", "group": "gap: f vs m", "gap": 0.01,
             "ci_low": -0.05, "ci_high": 0.07, "outcome": "pass"},
            {"section": "group", "run_name": "r1", "model": "b", "group": "f", "gap": None, "ci_low": 0.1,
             "ci_high": 0.2, "outcome": None},
        ]
    )  # fmt: skip
    rows = [_row("a", "floor", "pass", False), _row("b", "floor", "pass", False)]
    amended = evidence.amend_verdicts(rows, {}, checks, SETTINGS, [])
    fairness_rows = {r["model"]: r for r in amended if r["gate"] == "gap"}
    assert fairness_rows["a"]["status"] == "fail" and fairness_rows["a"]["blocks_release"]
    assert fairness_rows["b"]["status"] == "pass"
    decisions = {d["model"]: d["decision"] for d in release_decisions(amended)}
    assert decisions == {"a": "block", "b": "promote"}
    waived = evidence.amend_verdicts(rows, {}, checks, SETTINGS, [_waiver("gap", "a")])
    assert {d["model"]: d["decision"] for d in release_decisions(waived)} == {"a": "promote", "b": "promote"}


def test_robustness_outcome_is_three_way() -> None:
    settings = ComplianceSettings(max_perturbation_drop=0.1, alpha=0.05)
    judge = evidence._robustness_outcome
    assert judge({"ci_low": -0.5, "ci_high": -0.2, "p_adjusted": 0.001}, settings) == "fail"
    assert judge({"ci_low": -0.05, "ci_high": 0.02, "p_adjusted": 0.9}, settings) == "pass"
    assert judge({"ci_low": -0.4, "ci_high": 0.1, "p_adjusted": 0.5}, settings) == "inconclusive"
    assert judge({"ci_low": -0.4, "ci_high": -0.15, "p_adjusted": 0.2}, settings) == "inconclusive"  # not significant
    assert (
        judge({"ci_low": -0.4, "ci_high": 0.1, "p_adjusted": 0.5}, ComplianceSettings(max_perturbation_drop=None))
        == "no data"
    )


def test_robustness_false_alarm_rate_at_the_limit_is_at_most_alpha() -> None:
    """A perturbation that drops exactly `limit` (paired 0/1 outcomes, one comparison) fails the
    rule in at most alpha of the repetitions, for the sample sizes HELM produces."""
    import numpy as np

    from governance_assets.lib.core.statistics import compare_paired

    settings = ComplianceSettings(max_perturbation_drop=0.1, alpha=0.05)
    rng = np.random.default_rng(11)
    for n in (20, 100, 400):
        repetitions, failures = 1000, 0
        for _ in range(repetitions):
            original = (rng.random(n) < 0.7).astype(float)
            perturbed = np.where((original == 1) & (rng.random(n) < 0.1 / 0.7), 0.0, original)
            result = compare_paired(original, perturbed, confidence=0.95)
            row = {"ci_low": result.ci_low, "ci_high": result.ci_high, "p_adjusted": result.p_value}
            failures += evidence._robustness_outcome(row, settings) == "fail"
        rate = failures / repetitions
        print(f"robustness rule false alarms at the limit, n={n}: {rate:.3f}")
        assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / repetitions)
