"""Gates on tidy tables, checked against independent references (scipy, statsmodels, arithmetic)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from governance_assets.lib.core.policy import (
    CompletenessGate,
    DataQualityGate,
    RegressionGate,
    RegressionSettings,
    ThresholdGate,
)
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates import evaluation as gates
from governance_assets.lib.gates.data_quality import data_quality_gate
from governance_assets.lib.helm import selection, tidy
from governance_assets_tests.conftest import MMLU_ROOT

SETTINGS = RegressionSettings(alpha=0.05, correction="holm", bootstrap_resamples=2000)


def _runs(names: list[str], model: str = "m/1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_name": names,
            "status": "complete",
            "model": model,
            "scenario": "s",
            "groups": [["g"]] * len(names),
            "max_eval_instances": 50,
            "error": None,
        }
    )


def _instances(run: str, metric: str, values: np.ndarray, model: str = "m/1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "suite": "x",
            "run_name": run,
            "model": model,
            "instance_id": [f"id{i}" for i in range(len(values))],
            "train_trial_index": 0,
            "perturbation": None,
            "metric": metric,
            "split": "test",
            "sub_split": None,
            "value": values.astype(float),
        }
    )


def test_threshold_gate_judges_each_run_and_reports_no_data() -> None:
    run_stats = pd.DataFrame(
        {
            "run_name": ["a", "b", "c", "a"],
            "model": "m/1",
            "metric": ["exact_match", "exact_match", "exact_match", "f1"],
            "split": "test",
            "sub_split": None,
            "perturbation": None,
            "count": [1, 1, 0, 1],
            "mean": [0.8, 0.2, None, 0.1],
        }
    )
    gate = ThresholdGate(name="em", kind="threshold", metrics=["exact_match"], min=0.5)
    result = gates.threshold_gate(gate, run_stats, _runs(["a", "b", "c"]))
    assert {row["run_name"]: row["status"] for row in result.rows} == {"a": "pass", "b": "fail", "c": "no data"}
    assert result.outcome == "fail"
    missing = gates.threshold_gate(
        ThresholdGate(name="x", kind="threshold", metrics=["bleu"], min=0), run_stats, _runs(["a"])
    )
    assert missing.outcome == "no data" and missing.rows == []  # a metric that never appears is never a pass


def test_regression_on_binary_metric_uses_exact_mcnemar_and_holm() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.random(200) < 0.8
    candidate = baseline.copy()
    candidate[:40] = False  # a real drop on run "a"
    steady = rng.random(200) < 0.7
    flipped = steady.copy()
    flipped[[1, 2]] = ~flipped[[1, 2]]  # noise on run "b"
    current = pd.concat([_instances("a", "exact_match", candidate), _instances("b", "exact_match", flipped)])
    earlier = pd.concat([_instances("a", "exact_match", baseline), _instances("b", "exact_match", steady)])
    gate = RegressionGate(name="no_drop", kind="regression", metrics=["exact_match"], tolerance=0.02)
    [result] = gates.regression_gates([gate], current, _runs(["a", "b"]), [("v1", earlier)], SETTINGS)
    rows = {row["run_name"]: row for row in result.rows}
    raw = []
    for run, (base, cand) in {"a": (baseline, candidate), "b": (steady, flipped)}.items():
        table = [[np.sum(base & cand), np.sum(base & ~cand)], [np.sum(~base & cand), np.sum(~base & ~cand)]]
        reference = mcnemar(table, exact=True).pvalue  # statsmodels' exact McNemar
        assert rows[run]["p_value"] == pytest.approx(reference, rel=1e-12)
        assert rows[run]["test"] == "mcnemar_exact" and rows[run]["baseline_suite"] == "v1"
        assert rows[run]["effect"] == pytest.approx(cand.mean() - base.mean())
        raw.append(reference)
    holm = multipletests(raw, method="holm")[1]  # statsmodels' Holm adjustment
    assert [rows["a"]["p_adjusted"], rows["b"]["p_adjusted"]] == pytest.approx(list(holm))
    assert rows["a"]["status"] == "fail" and rows["b"]["status"] == "pass" and result.outcome == "fail"


def test_regression_on_continuous_metric_uses_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(2)
    baseline = rng.normal(0.6, 0.1, 100)
    candidate = baseline - 0.1 + rng.normal(0, 0.01, 100)
    gate = RegressionGate(name="f1", kind="regression", metrics=["f1_score"], tolerance=0.05)
    [result] = gates.regression_gates(
        [gate],
        _instances("a", "f1_score", candidate),
        _runs(["a"]),
        [("v1", _instances("a", "f1_score", baseline))],
        SETTINGS,
    )
    [row] = result.rows
    reference = scipy_stats.bootstrap(
        (baseline, candidate),
        lambda x, y, axis: np.mean(y - x, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=2000,
        rng=np.random.default_rng(0),
    )
    assert row["test"] == "paired_bootstrap"
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (reference.confidence_interval.low, reference.confidence_interval.high), abs=1e-12
    )
    assert row["drop"] == pytest.approx(np.mean(baseline - candidate)) and row["status"] == "fail"


def test_regression_without_baseline_or_with_too_few_pairs_is_no_data() -> None:
    gate = RegressionGate(name="r", kind="regression", metrics=["exact_match"])
    current = _instances("a", "exact_match", np.ones(3))
    [none] = gates.regression_gates([gate], current, _runs(["a"]), [], SETTINGS)
    assert none.outcome == "no data" and none.rows[0]["detail"] == "no baseline suite has this run"
    [few] = gates.regression_gates(
        [gate], current, _runs(["a"]), [("v0", _instances("a", "exact_match", np.ones(3)))], SETTINGS
    )
    assert few.outcome == "no data" and few.rows[0]["n"] == 3


def test_baseline_is_the_most_recent_earlier_suite_with_the_run() -> None:
    older, newer = _instances("a", "m", np.ones(10)), _instances("b", "m", np.ones(10))
    earlier = [("v2", newer), ("v1", older)]
    assert selection.choose_baselines(["a", "b", "c"], earlier, None) == {"a": "v1", "b": "v2"}
    assert selection.choose_baselines(["a", "b"], earlier, "v1") == {"a": "v1"}


def test_completeness_gate() -> None:
    runs = pd.concat(
        [
            _runs(["a", "b"]),
            pd.DataFrame(
                {
                    "run_name": ["c"],
                    "status": ["failed"],
                    "model": ["m/1"],
                    "error": ["helm-run 'c' exited 1: ValueError: boom"],
                }
            ),
        ]
    )
    predictions = pd.DataFrame(
        {
            "run_name": ["a"] * 50 + ["b"] * 10,
            "instance_id": [f"i{i}" for i in range(60)],
            "perturbation": None,
            "success": [True] * 49 + [False] + [True] * 10,
        }
    )
    result = gates.completeness_gate(
        CompletenessGate(name="c", kind="completeness", max_failed_request_share=0.01),
        runs,
        predictions,
        {"a": 50, "b": 50},
    )
    rows = {row["run_name"]: row for row in result.rows}
    assert rows["a"]["status"] == "fail" and "2.0% of requests failed" in rows["a"]["detail"]
    assert rows["b"]["status"] == "fail" and "10 instances, 50 planned" in rows["b"]["detail"]
    assert rows["c"]["status"] == "fail" and "boom" in rows["c"]["detail"]


def test_data_quality_gate_runs_great_expectations(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path)
    tidy.ingest_suite("v1", MMLU_ROOT / "runs" / "v1", warehouse)
    tables = {spec.key[1]: pd.read_parquet(warehouse.path(spec.key, "v1")) for spec in tidy.TIDY_TABLES}
    gate = DataQualityGate(name="dq", kind="data_quality")
    assert data_quality_gate(gate, tables).outcome == "pass"
    broken = dict(tables)
    broken["run_stats"] = tables["run_stats"].assign(count=tables["run_stats"]["count"] * -1 - 1)
    broken["run_stats"].loc[0, "model"] = None
    result = data_quality_gate(gate, broken)
    failed = {(row["expectation"], row["column"]) for row in result.rows if row["status"] == "fail"}
    assert failed == {("expect_column_values_to_be_between", "count"), ("expect_column_values_to_not_be_null", "model")}


def test_release_blocks_on_error_failures_and_blocking_gates_without_data() -> None:
    verdicts = [
        {
            "model": "a",
            "gate": "em",
            "status": "fail",
            "severity": "warn",
            "blocking": False,
            "actual": "1 of 1 failed",
            "threshold": ">= 0.5",
        },
        {
            "model": "b",
            "gate": "em",
            "status": "fail",
            "severity": "error",
            "blocking": False,
            "actual": "1 of 1 failed",
            "threshold": ">= 0.5",
        },
        {
            "model": "*",
            "gate": "dq",
            "status": "pass",
            "severity": "error",
            "blocking": True,
            "actual": "0 of 9 failed",
            "threshold": "all",
        },
        {
            "model": "c",
            "gate": "reg",
            "status": "no data",
            "severity": "error",
            "blocking": True,
            "actual": "-",
            "threshold": "-",
        },
    ]
    decisions = {d["model"]: d for d in gates.release_decisions(verdicts)}
    assert decisions["a"]["decision"] == "promote" and decisions["a"]["warnings"]
    assert decisions["b"]["decision"] == "block" and decisions["b"]["reasons"][0].startswith("em: fail")
    assert decisions["c"]["decision"] == "block"


def test_gates_on_real_suites_one_model_against_another() -> None:
    """Real MMLU runs: Llama-3-8B (candidate) judged against Llama-3-70B (as baseline) on the same
    subjects, by renaming the 70B runs to the 8B names so they pair instance by instance."""
    suite = MMLU_ROOT / "runs" / "v1"
    instance_stats = pd.DataFrame(
        [
            {
                "run_name": run.name,
                "model": "",
                "instance_id": e["instance_id"],
                "train_trial_index": e["train_trial_index"],
                "perturbation": None,
                "metric": s["name"]["name"],
                "split": s["name"]["split"],
                "sub_split": None,
                "value": s["mean"],
            }
            for run in sorted(suite.iterdir())
            if run.is_dir() and "together_Llama-3" in run.name
            for e in json.loads((run / "per_instance_stats.json").read_text())
            for s in e["stats"]
            if "perturbation" not in s["name"] and s["name"]["name"] == "exact_match"
        ]
    )
    small = instance_stats[instance_stats["run_name"].str.contains("8b")]
    large = instance_stats[instance_stats["run_name"].str.contains("70b")].assign(
        run_name=lambda f: f["run_name"].str.replace("70b", "8b")
    )
    gate = RegressionGate(name="vs_70b", kind="regression", metrics=["exact_match"], tolerance=0.05)
    [result] = gates.regression_gates([gate], small, _runs(sorted(set(small["run_name"]))), [("70b", large)], SETTINGS)
    assert len(result.rows) == 6  # 3 subjects × 2 splits
    for row in result.rows:
        if row["split"] == "valid":  # 2-3 instances per subject: too few to test
            assert row["status"] == "no data"
            continue
        base = large[(large["run_name"] == row["run_name"]) & (large["split"] == row["split"])].set_index("instance_id")
        cand = small[(small["run_name"] == row["run_name"]) & (small["split"] == row["split"])].set_index("instance_id")
        assert row["baseline_mean"] == pytest.approx(base["value"].mean())
        assert row["candidate_mean"] == pytest.approx(cand["value"].mean())
        b = int(((base["value"] == 1) & (cand["value"] == 0)).sum())
        c = int(((base["value"] == 0) & (cand["value"] == 1)).sum())
        assert row["p_value"] == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0)
