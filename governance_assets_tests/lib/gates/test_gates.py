"""Gates on tidy tables, checked against independent references (scipy, statsmodels, arithmetic)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.completeness import CompletenessGate, completeness_gate
from governance_assets.lib.gates.data_quality import DataQualityGate, data_quality_gate
from governance_assets.lib.gates.evaluation import load_suite_tables, one_line_reason, verdict_rows
from governance_assets.lib.gates.ingestion import ingestion_gate
from governance_assets.lib.gates.registry import KINDS, GateInputs, evaluate_gates
from governance_assets.lib.gates.regression import RegressionGate, RegressionSettings, instance_values, regression_gates
from governance_assets.lib.gates.release import release_decisions, stops_release
from governance_assets.lib.gates.threshold import ThresholdGate, threshold_gate
from governance_assets.lib.helm import selection, tidy
from governance_assets_tests.conftest import MMLU_ROOT

SETTINGS = RegressionSettings(alpha=0.05, correction="holm")
EMPTY = pd.DataFrame(columns=["run_name", "model", "metric", "split", "sub_split", "perturbation", "count", "mean"])


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


def _instances(run: str, metric: str, values: np.ndarray, model: str = "m/1", trials: int = 1) -> pd.DataFrame:
    """Instance stats of one run: `values` has one row per instance and one column per trial."""
    values = (
        np.asarray(values, dtype=float).reshape(len(values), -1) if trials > 1 else np.asarray(values, float)[:, None]
    )
    n, t = values.shape
    return pd.DataFrame(
        {
            "suite": "x",
            "run_name": run,
            "model": model,
            "instance_id": np.repeat([f"id{i}" for i in range(n)], t),
            "train_trial_index": np.tile(np.arange(t), n),
            "perturbation": None,
            "metric": metric,
            "split": "test",
            "sub_split": None,
            "value": values.ravel(),
        }
    )


def _tables(
    runs: pd.DataFrame, instance_stats: pd.DataFrame | None = None, run_stats: pd.DataFrame | None = None
) -> SuiteTables:
    return SuiteTables(
        runs,
        EMPTY if run_stats is None else run_stats,
        instance_stats if instance_stats is not None else EMPTY,
        pd.DataFrame(),
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
    result = threshold_gate(gate, _tables(_runs(["a", "b", "c"]), run_stats=run_stats))
    assert {row["run_name"]: row["status"] for row in result.rows} == {"a": "pass", "b": "fail", "c": "no data"}
    assert result.outcome == "fail"
    assert one_line_reason("fail", result.rows, "") == "fail: exact_match 0.2 not >= 0.5 on 1 of 3 comparisons (b)"
    missing = threshold_gate(
        ThresholdGate(name="x", kind="threshold", metrics=["bleu"], min=0), _tables(_runs(["a"]), run_stats=run_stats)
    )
    assert missing.outcome == "no data" and missing.rows == []  # a metric that never appears is never a pass


def _judge(gate: RegressionGate, current: pd.DataFrame, earlier: pd.DataFrame, runs: list[str]) -> dict[str, dict]:
    [result] = regression_gates([gate], _tables(_runs(runs), current), [("v1", earlier)], SETTINGS)
    return {row["run_name"]: row for row in result.rows}


def test_regression_is_pass_fail_or_inconclusive_by_two_one_sided_tests() -> None:
    """A large drop fails, a large sample with no drop passes, a small sample with a real drop is
    inconclusive with the instances that would decide it; Tango's score p-values checked against
    the normal tail of the statistic computed by hand, Holm against statsmodels."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(1)
    big = rng.random(400) < 0.8
    dropped = big.copy()
    dropped[np.flatnonzero(big)[:80]] = False  # 80 of 400 turned wrong: a 20-point drop
    small = rng.random(17) < 0.7
    small_dropped = small.copy()
    small_dropped[np.flatnonzero(small)[:3]] = False  # a 3-of-17 drop: real, but 17 instances cannot tell
    current = pd.concat(
        [
            _instances("a", "exact_match", dropped),
            _instances("b", "exact_match", big),
            _instances("c", "exact_match", small_dropped),
        ]
    )
    earlier = pd.concat(
        [
            _instances("a", "exact_match", big),
            _instances("b", "exact_match", big),
            _instances("c", "exact_match", small),
        ]
    )
    gate = RegressionGate(name="no_drop", kind="regression", metrics=["exact_match"], tolerance=0.05)
    rows = _judge(gate, current, earlier, ["a", "b", "c"])
    assert {run: row["status"] for run, row in rows.items()} == {"a": "fail", "b": "pass", "c": "inconclusive"}
    # Run a: b = 80 discordant the candidate's way, c = 0; Tango's statistic by hand at delta = 0.05.
    q = (-(-80 + (800 - 80) * 0.05) + np.sqrt((-80 + 720 * 0.05) ** 2)) / 1600  # C = 0 because c = 0
    statistic = (80 - 400 * 0.05) / np.sqrt(400 * (2 * q + 0.05 * 0.95))
    assert rows["a"]["p_exceeds"] == pytest.approx(scipy_stats.norm.sf(statistic))
    holm = multipletests([rows[r]["p_exceeds"] for r in "abc"], method="holm")[1]
    assert [rows[r]["p_exceeds_adjusted"] for r in "abc"] == pytest.approx(list(holm))
    assert rows["c"]["drop"] == pytest.approx(3 / 17) and rows["c"]["instances_needed"] > 17
    assert rows["a"]["test"] == rows["c"]["test"] == "tango_score" and rows["a"]["baseline_suite"] == "v1"
    assert "instances would decide it" in rows["c"]["detail"]


def test_train_trials_of_one_instance_are_averaged_not_counted_as_instances() -> None:
    """Five trials of 30 instances: 30 paired values (their trial means), tested by the paired t-test."""
    rng = np.random.default_rng(4)
    base = (rng.random((30, 5)) < 0.6).astype(float)
    cand = (rng.random((30, 5)) < 0.6).astype(float)
    gate = RegressionGate(name="r", kind="regression", metrics=["exact_match"], tolerance=0.02)
    row = _judge(
        gate, _instances("a", "exact_match", cand, trials=5), _instances("a", "exact_match", base, trials=5), ["a"]
    )["a"]
    assert row["n"] == 30 and row["trials"] == 5 and row["test"] == "paired_t"
    drops = base.mean(axis=1) - cand.mean(axis=1)
    reference = scipy_stats.ttest_1samp(drops - 0.02, 0, alternative="greater").pvalue
    assert row["p_exceeds"] == pytest.approx(reference)
    values = instance_values(_instances("a", "exact_match", cand, trials=5))
    assert len(values) == 30 and not values["binary"].any() and (values["trials"] == 5).all()


def test_metric_variants_count_once_unless_the_policy_asks() -> None:
    rng = np.random.default_rng(5)
    values = (rng.random(50) < 0.5).astype(float)
    both = pd.concat([_instances("a", "exact_match", values), _instances("a", "quasi_exact_match", values)])
    gate = RegressionGate(name="r", kind="regression", metrics=["exact_match", "quasi_exact_match"])
    tables = _tables(_runs(["a"]), both)
    [primary] = regression_gates([gate], tables, [("v1", both)], SETTINGS)
    assert [row["metric"] for row in primary.rows] == ["exact_match"]
    [every] = regression_gates([gate], tables, [("v1", both)], SETTINGS.model_copy(update={"metric_variants": "all"}))
    assert sorted(row["metric"] for row in every.rows) == ["exact_match", "quasi_exact_match"]


def test_regression_without_baseline_or_with_too_few_pairs_is_no_data() -> None:
    gate = RegressionGate(name="r", kind="regression", metrics=["exact_match"])
    current = _instances("a", "exact_match", np.ones(3))
    [none] = regression_gates([gate], _tables(_runs(["a"]), current), [], SETTINGS)
    assert none.outcome == "no data" and none.rows[0]["detail"] == "no baseline suite has this run"
    [few] = regression_gates(
        [gate], _tables(_runs(["a"]), current), [("v0", _instances("a", "exact_match", np.ones(3)))], SETTINGS
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
    result = completeness_gate(
        CompletenessGate(name="c", kind="completeness", max_failed_request_share=0.01),
        SuiteTables(runs, EMPTY, EMPTY, predictions),
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
    suite = SuiteTables(pd.DataFrame(), tables["run_stats"], tables["instance_stats"], tables["predictions"])
    assert data_quality_gate(gate, suite).outcome == "pass"
    run_stats = tables["run_stats"].assign(count=tables["run_stats"]["count"] * -1 - 1)
    run_stats.loc[0, "model"] = None
    run_stats.loc[1, "mean"] = np.inf  # a non-finite mean
    run_stats.loc[2, ["min", "mean", "max"]] = [0.0, 0.9, 0.5]  # a mean above its max
    broken = SuiteTables(pd.DataFrame(), run_stats, tables["instance_stats"], tables["predictions"])
    result = data_quality_gate(gate, broken)
    failed = {(row["expectation"], row["column"]) for row in result.rows if row["status"] == "fail"}
    assert failed == {
        ("expect_column_values_to_be_between", "count"),
        ("expect_column_max_to_be_between", "mean"),
        ("expect_column_pair_values_a_to_be_greater_than_b", "max"),
        ("expect_column_values_to_not_be_null", "model"),
    }


def test_release_blocks_on_failures_inconclusive_comparisons_and_missing_data() -> None:
    def verdict(model: str, gate: str, status: str, severity: str = "error", blocking: bool = False) -> dict:
        row = {
            "model": model,
            "gate": gate,
            "status": status,
            "severity": severity,
            "blocking": blocking,
            "reason": f"{status}: why",
        }
        return row | {"blocks_release": stops_release(row, "block")}

    verdicts = [
        verdict("a", "em", "fail", severity="warn"),
        verdict("b", "em", "fail"),
        verdict("*", "dq", "pass", blocking=True),
        verdict("c", "reg", "no data", blocking=True),
        verdict("d", "reg", "inconclusive"),
        verdict("e", "reg", "inconclusive", severity="warn"),
    ]
    decisions = {d["model"]: d for d in release_decisions(verdicts)}
    assert decisions["a"]["decision"] == "promote" and decisions["a"]["warnings"] == ["em: fail: why"]
    assert decisions["b"]["decision"] == "block" and decisions["b"]["reasons"] == ["em: fail: why"]
    assert decisions["c"]["decision"] == "block"
    assert decisions["d"]["decision"] == "block" and decisions["d"]["reasons"] == ["reg: inconclusive: why"]
    assert decisions["e"]["decision"] == "promote"
    assert not stops_release(verdicts[4], "warn")


def test_a_model_with_an_unreadable_run_is_never_promoted(tmp_path: Path) -> None:
    """Truncate one run's stats.json: the ingestion gate fails for that model, names the file,
    and its decision is block although every policy gate passes on the runs that could be read."""
    from governance_assets_tests.conftest import copy_suite

    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1")
    broken = next(run for run in sorted(suite_dir.iterdir()) if "groq_llama3-8b" in run.name)
    stats_file = broken / "stats.json"
    stats_file.write_bytes(stats_file.read_bytes()[:200])
    warehouse = Warehouse(tmp_path / "warehouse")
    tidy.ingest_suite("v1", suite_dir, warehouse)
    tables = load_suite_tables(warehouse, "v1")
    assert tables is not None and broken.name in tables.unreadable
    gate = ThresholdGate(name="floor", kind="threshold", metrics=["exact_match"], min=0.0)
    results = evaluate_gates([gate], GateInputs(tables, [], SETTINGS))
    assert [r.gate for r in results] == ["all_runs_ingested", "floor"]
    # The floor cannot judge the unreadable run either: "no data" naming the file, not a pass.
    missing = [row for row in results[1].rows if row["status"] != "pass"]
    assert missing and all(row["run_name"] == broken.name and "stats.json" in row["detail"] for row in missing)
    rows = verdict_rows("v1", results, {"floor": "error"})
    for row in rows:
        row["blocks_release"] = stops_release(row, "block")
    decisions = {d["model"]: d for d in release_decisions(rows)}
    assert decisions["groq/llama3-8b-8192"]["decision"] == "block"
    assert "stats.json" in decisions["groq/llama3-8b-8192"]["reasons"][0]
    assert decisions["groq/llama3-70b-8192"]["decision"] == "promote"
    assert ingestion_gate(tables).outcome == "fail"


def test_a_gated_stat_missing_from_one_run_blocks_its_model(tmp_path: Path) -> None:
    """A stats.json that parses but leaves out exact_match (which the other models' runs of the
    same scenario have): the model is blocked with the file named, not promoted on the rest."""
    from governance_assets_tests.conftest import copy_suite

    suite_dir = copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "out", "v1")
    edited = next(run for run in sorted(suite_dir.iterdir()) if "groq_llama3-8b" in run.name)
    stats = [s for s in json.loads((edited / "stats.json").read_text()) if s["name"]["name"] != "exact_match"]
    (edited / "stats.json").write_text(json.dumps(stats))
    warehouse = Warehouse(tmp_path / "warehouse")
    tidy.ingest_suite("v1", suite_dir, warehouse)
    tables = load_suite_tables(warehouse, "v1")
    assert tables is not None and not tables.unreadable
    gate = ThresholdGate(name="floor", kind="threshold", metrics=["exact_match"], min=0.0)
    results = evaluate_gates([gate], GateInputs(tables, [], SETTINGS))
    rows = verdict_rows("v1", results, {"floor": "error"})
    for row in rows:
        row["blocks_release"] = stops_release(row, "block")
    decisions = {d["model"]: d for d in release_decisions(rows)}
    blocked = decisions["groq/llama3-8b-8192"]
    assert blocked["decision"] == "block" and f"missing from {edited.name}/stats.json" in blocked["reasons"][0]
    assert decisions["groq/llama3-70b-8192"]["decision"] == "promote"


def test_every_gate_kind_is_registered_once_with_its_policy_model() -> None:
    assert [kind.name for kind in KINDS] == ["threshold", "regression", "completeness", "data_quality"]
    for kind in KINDS:
        assert kind.model.model_fields["kind"].annotation.__args__ == (kind.name,)  # type: ignore[union-attr]


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
    [result] = regression_gates(
        [gate], _tables(_runs(sorted(set(small["run_name"]))), small), [("70b", large)], SETTINGS
    )
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
        assert row["drop"] == pytest.approx((b - c) / len(base))
        # The defect this replaces: a 17-instance drop of 0.17-0.29 was read as "no regression".
        assert row["status"] != "pass"
        if row["status"] == "inconclusive":
            assert row["drop_upper"] > 0.05 and row["instances_needed"] > len(base)
