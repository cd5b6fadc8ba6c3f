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
