"""The iteration plan from real gate verdicts (MMLU, one model degraded) and its ranking rule."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.evaluation import load_suite_tables, verdict_rows
from governance_assets.lib.gates.registry import GateInputs, evaluate_gates
from governance_assets.lib.gates.release import stops_release
from governance_assets.lib.helm import tidy
from governance_assets.lib.iteration.plan import (
    PlanContext,
    PlanItem,
    items_from_slices,
    items_from_verdicts,
    needed_evaluation_plan,
    rank,
)
from governance_assets.lib.iteration.sample_size import (
    designs_to_decide,
    instances_available,
    paired_trial_drops,
    variance_components,
)
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite

DEGRADED = "groq_llama3-8b-8192"


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The default policy's gates on MMLU v2 (the Groq 8B runs' test answers all turned wrong)
    judged against v1."""
    root = tmp_path_factory.mktemp("plan")
    warehouse = Warehouse(root / "warehouse")
    tidy.ingest_suite("v1", copy_suite(MMLU_ROOT / "runs" / "v1", root / "out", "v1"), warehouse)
    v2 = copy_suite(MMLU_ROOT / "runs" / "v1", root / "out", "v2")
    for run in v2.iterdir():
        if DEGRADED in run.name:
            entries = json.loads((run / "per_instance_stats.json").read_text())
            for entry in entries:
                for stat in entry["stats"]:
                    if stat["name"] == {"name": "exact_match", "split": "test"}:
                        stat.update(sum=0.0, mean=0.0, min=0.0, max=0.0, sum_squared=0.0)
            (run / "per_instance_stats.json").write_text(json.dumps(entries))
    tidy.ingest_suite("v2", v2, warehouse)
    policy = load_policy()
    current, earlier = load_suite_tables(warehouse, "v2"), load_suite_tables(warehouse, "v1")
    assert current is not None and earlier is not None
    results = evaluate_gates(policy.gates, GateInputs(current, [("v1", earlier.instance_stats)], policy.regression))
    rows = verdict_rows("v2", results, {g.name: g.severity for g in policy.gates})
    for row in rows:
        row["blocks_release"] = stops_release(row, "block")

    def designs(comparison: dict) -> list:
        assert comparison["baseline_suite"] == "v1"
        drops = paired_trial_drops(
            current.instance_stats,
            earlier.instance_stats,
            comparison["run_name"],
            comparison["metric"],
            comparison["split"],
        )
        return designs_to_decide(float(drops.mean()), variance_components(drops), 0.02, 0.05, 0.8)

    context = PlanContext(10, 1, 8, "gates/verdicts v2, MLflow run abc", designs)
    return {"rows": rows, "context": context, "current": current, "earlier": earlier}


def test_the_failed_blocking_regression_ranks_first_then_inconclusive_ones_with_their_sizes(judged: dict) -> None:
    ranked = rank(items_from_verdicts(judged["rows"], judged["context"]))
    first = ranked[0]
    assert first["rank"] == 1 and first["kind"] == "failed gate" and first["blocks_release"]
    assert first["model"] == "groq/llama3-8b-8192" and "iteration/sweep" in first["action"]
    assert first["gain_low"] is not None and first["gain_low"] > 0.3  # all test answers wrong: a large drop
    inconclusive = [row for row in ranked if row["kind"] == "inconclusive comparison"]
    assert inconclusive and all(row["evaluation_plan"]["max_eval_instances"] > 17 for row in inconclusive)
    assert all("MLflow run abc" in row["evidence"] for row in ranked)
    assert [row["rank"] for row in ranked] == list(range(1, len(ranked) + 1))
    kinds = [row["kind"] for row in ranked if row["blocks_release"]]
    assert kinds == sorted(kinds, key=["failed gate", "inconclusive comparison", "missing data"].index)
    plan = needed_evaluation_plan(ranked)
    assert plan["max_eval_instances"] == max(row["evaluation_plan"]["max_eval_instances"] for row in inconclusive)


def test_per_trial_drops_pair_instances_and_trials(judged: dict) -> None:
    run = next(r for r in judged["current"].runs["run_name"] if DEGRADED in r)
    drops = paired_trial_drops(
        judged["current"].instance_stats, judged["earlier"].instance_stats, run, "exact_match", "test"
    )
    earlier = judged["earlier"].instance_stats
    baseline = earlier[
        (earlier["run_name"] == run)
        & (earlier["metric"] == "exact_match")
        & (earlier["split"] == "test")
        & earlier["perturbation"].isna()
    ]
    assert drops.shape == (baseline["instance_id"].nunique(), 1)
    assert drops.mean() == pytest.approx(baseline["value"].astype(float).mean())  # every candidate value is 0


def _item(kind: str, blocks: bool, gain: float | None, calls: int) -> PlanItem:
    return PlanItem(kind, "m", blocks, kind, "", "", gain, gain, gain, calls, calls)


def test_ranking_rule_blocking_then_kind_then_gain_then_cost() -> None:
    items = [
        _item("failure slice", False, 0.3, 10),
        _item("inconclusive comparison", True, None, 500),
        _item("failed gate", True, 0.05, 100),
        _item("failed gate", True, 0.20, 900),
        _item("failed warning gate", False, 0.5, 1),
        _item("drift", False, None, 0),
        _item("failure slice", False, 0.3, 5),
    ]
    ranked = rank(items)
    assert [(r["kind"], r["gain_low"], r["model_calls"]) for r in ranked] == [
        ("failed gate", 0.20, 900),
        ("failed gate", 0.05, 100),
        ("inconclusive comparison", None, 500),
        ("failed warning gate", 0.5, 1),
        ("failure slice", 0.3, 5),
        ("failure slice", 0.3, 10),
        ("drift", None, 0),
    ]


def test_significant_slices_become_labelling_items() -> None:
    slices = pd.DataFrame(
        {
            "metric": ["exact_match", "exact_match"],
            "feature": ["input_length", "sub_split"],
            "value": ["long", "a"],
            "support": [40, 12],
            "slice_mean": [0.2, 0.5],
            "rest_mean": [0.7, 0.6],
            "p_adjusted": [0.001, 0.4],
            "significant": [True, False],
        }
    )
    context = PlanContext(10, 1, 8, "")
    [item] = items_from_slices(slices, context, "compliance/slices v2")
    assert item.kind == "failure slice" and item.expected_gain == pytest.approx(0.5) and item.instances == 40
    assert (
        items_from_slices(None, context, "") == []
        and items_from_slices(slices.drop(columns="significant"), context, "") == []
    )
    assert np.isclose(item.expected_gain or 0, 0.5)


def test_trials_are_planned_for_the_paired_t_test_and_tango_sizes_itself() -> None:
    from governance_assets.lib.iteration.sample_size import Design

    def verdict(test: str, needed: int) -> dict:
        row = {"run_name": "r", "metric": "exact_match", "split": "test", "status": "inconclusive", "drop": 0.01,
               "drop_lower": -0.05, "drop_upper": 0.07, "n": 30, "trials": 3, "baseline_suite": "v1", "tolerance": 0.02,
               "test": test, "instances_needed": needed}  # fmt: skip
        return {"model": "m", "gate": "g", "kind": "regression", "severity": "error", "status": "inconclusive",
                "blocks_release": True, "evidence": json.dumps([row])}  # fmt: skip

    context = PlanContext(10, 3, 8, "", lambda comparison: [Design(50, 2, 100), Design(40, 5, 200)])
    [with_trials] = items_from_verdicts([verdict("paired_t", 70)], context)
    assert dict(with_trials.evaluation_plan) == {"max_eval_instances": 50, "num_train_trials": 2}
    assert (with_trials.instances, with_trials.model_calls) == (20, 100 - 30 * 3)
    [tango] = items_from_verdicts([verdict("tango_score", 70)], context)
    assert dict(tango.evaluation_plan) == {"max_eval_instances": 70} and tango.instances == 40


def test_drift_trend_changes_and_guardrail_harm_become_items() -> None:
    from governance_assets.lib.iteration.plan import items_from_drift, items_from_feedback, items_from_trends

    context = PlanContext(10, 1, 8, "")
    drift = pd.DataFrame(
        {
            "day": ["d", "d"],
            "feature": ["latency_ms", "language"],
            "method": ["ks", "chisquare"],
            "statistic": [0.4, 0.01],
            "threshold": [0.05, 0.05],
            "drifted": [True, False],
        }
    )
    [drifted] = items_from_drift(drift, context, "monitoring/traffic_drift:d")
    assert drifted.kind == "drift" and "latency_ms" in drifted.problem and drifted.instances == 10
    trends = pd.DataFrame(
        {
            "series": ["kpi:latency", "kpi:latency"],
            "label": ["d1", "d2"],
            "value": [1.0, 9.0],
            "change_point": [False, True],
        }
    )
    [change] = items_from_trends(trends, context, "monitoring/trends")
    assert change.kind == "trend change" and "d2" in change.problem
    ab = pd.DataFrame(
        {
            "experiment": ["e", "e"],
            "metric": ["flagged", "positive_feedback"],
            "role": ["guardrail", "primary"],
            "variant": ["b", "b"],
            "estimate": [0.05, 0.1],
            "call": ["harm", "harm"],
        }
    )
    [harm] = items_from_feedback(ab, context, "feedback/ab_tests:d")
    assert harm.kind == "production feedback" and "flagged" in harm.problem
    ranked = rank([harm, change, drifted])
    assert [row["kind"] for row in ranked] == ["drift", "trend change", "production feedback"]


def test_sizes_are_capped_at_what_each_mmlu_subject_has(judged: dict) -> None:
    """With the pools HELM drew the MMLU instances from, no design asks for more instances than a
    subject has; a comparison that even all of them cannot decide says so, with no evaluation plan."""
    sizes = instances_available(judged["current"].runs, judged["current"].instance_stats)
    context = replace(judged["context"], available=lambda row: sizes.get((row["run_name"], row["split"])))
    inconclusive = [
        row for row in rank(items_from_verdicts(judged["rows"], context)) if row["kind"] == "inconclusive comparison"
    ]
    uncapped = {
        (row["model"], row["problem"]): row
        for row in rank(items_from_verdicts(judged["rows"], judged["context"]))
        if row["kind"] == "inconclusive comparison"
    }
    assert inconclusive and all(row["instances_available"] in (111, 345) for row in inconclusive)
    undecidable = [row for row in inconclusive if not row["evaluation_plan"]]
    assert undecidable, "the default tolerance 0.02 needs more than a 111-question subject has"
    for row in inconclusive:
        before = uncapped[(row["model"], row["problem"])]["evaluation_plan"]["max_eval_instances"]
        if row["evaluation_plan"]:
            assert row["evaluation_plan"]["max_eval_instances"] <= row["instances_available"]
        else:
            assert before > row["instances_available"]
            assert f"even all {row['instances_available']} instances" in row["action"]
            assert f"({before} needed" in row["action"] and "a tolerance of about" in row["action"]
            assert row["instances"] == row["instances_available"] - 17  # the rest of the pool, beyond the 17 judged
    plan = needed_evaluation_plan(rank(items_from_verdicts(judged["rows"], context)))
    assert not plan or plan["max_eval_instances"] <= 345
